//! The health loop on a control plane whose etcd and API are spawned
//! processes (real etcd, the real `globular`): `globular health` fails
//! while etcd is down; with the loop running, etcd and the API killed with
//! SIGKILL are healthy again within 10 s; every kill is an incident and a
//! counted action in `run/health.json` and in the node's registry records;
//! a record deleted from the registry is registered again.

use std::time::{Duration, Instant};

use globular_cluster::etcd_auth::SUBSTRATE_USER;
use globular_cluster::registry::ServiceRecord;
use globular_cluster::Role;
use globular_firstboot::health::State;
use globular_firstboot::services::{self, Service};
use globular_task::Task;

use crate::harness::{etcdctl, runtime, Cluster, Node, AGENT};

/// Back within this long of a SIGKILL (issue 16).
const BACK_WITHIN: Duration = Duration::from_secs(10);

fn health(node: &Node) -> std::process::Output {
    std::process::Command::new(AGENT)
        .args(["health", "--services", "spawn", "--root"])
        .arg(&node.root)
        .output()
        .unwrap()
}

fn kill(node: &Node, service: Service) {
    let pid = services::running_pid(&node.layout(), service)
        .unwrap_or_else(|| panic!("{} is not running", service.name()));
    Task::new("killing a service", "sh")
        .args(["-c", "kill -9 \"$1\"", "sh", &pid.to_string()])
        .run()
        .unwrap();
}

/// Waits until `ready` holds; how long it took.
fn until(what: &str, mut ready: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: not within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

fn etcd_healthy(node: &Node) -> bool {
    let etcd =
        globular_firstboot::etcd_client::substrate(&node.layout(), vec![node.etcd_url()]).unwrap();
    runtime().block_on(etcd.healthy())
}

fn api_healthy(node: &Node) -> bool {
    let l = node.layout();
    let ca = std::fs::read_to_string(l.ca_cert()).unwrap();
    let client = globular_substrate::Client::with_ca(vec![node.api()], &ca, None).unwrap();
    runtime().block_on(client.healthz()).is_ok()
}

fn state(node: &Node) -> State {
    State::load(&node.layout()).unwrap().unwrap_or_default()
}

fn etcd_record(node: &Node) -> Option<ServiceRecord> {
    let out = std::process::Command::new(AGENT)
        .args([
            "service",
            "list",
            "--name",
            "globular.Etcd",
            "--json",
            "--root",
        ])
        .arg(&node.root)
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    serde_json::from_value::<Vec<ServiceRecord>>(list["services"].clone())
        .ok()?
        .into_iter()
        .find(|r| r.node == node.name)
}

#[test]
fn killed_etcd_and_api_come_back_and_are_recorded() {
    let cluster = Cluster::new();
    let cp1 = cluster.node("cp1", Role::ControlPlane, true, &[]);
    cluster.run_agent(&cp1).unwrap();

    let out = health(&cp1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("etcd-alarms"), "{text}");

    // Without the loop nothing comes back, and the check says so.
    kill(&cp1, Service::Etcd);
    until("etcd gone", || {
        services::running_pid(&cp1.layout(), Service::Etcd).is_none()
    });
    let out = health(&cp1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("etcd ") && l.contains("failing")),
        "{text}"
    );

    let mut watch = cluster.start_health_loop(&cp1);
    let back = until("etcd back", || etcd_healthy(&cp1));
    assert!(back < BACK_WITHIN, "etcd back after {back:?}");

    // Killed while the loop runs.
    for (service, healthy) in [
        (Service::Etcd, etcd_healthy as fn(&Node) -> bool),
        (Service::Api, api_healthy),
    ] {
        until("the loop saw it running", || {
            state(&cp1)
                .checks
                .iter()
                .any(|c| c.name == service.name() && c.detail == "running")
        });
        kill(&cp1, service);
        let killed = Instant::now();
        until("it died", || {
            services::running_pid(&cp1.layout(), service).is_none()
        });
        until("back", || healthy(&cp1));
        let back = killed.elapsed();
        assert!(back < BACK_WITHIN, "{} back after {back:?}", service.name());
    }

    let incidents = |s: &State, check: &str| {
        s.incidents
            .iter()
            .filter(|i| i.check == check && i.what.contains("not running"))
            .count()
    };
    // The round that started a service saves its state after the service
    // is back.
    until("the loop recorded every kill", || {
        let s = state(&cp1);
        incidents(&s, "etcd") >= 2 && incidents(&s, "api") >= 1
    });
    let s = state(&cp1);
    assert!(s.actions["start etcd"] >= 2, "{s:#?}");
    assert!(s.actions["start api"] >= 1, "{s:#?}");

    // The registry record shows the incidents and the health.
    until("the etcd record shows the incidents", || {
        etcd_record(&cp1).is_some_and(|r| {
            r.metadata.get("health").map(String::as_str) == Some("running")
                && r.metadata
                    .get("incidents")
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n >= 2)
        })
    });
    let record = etcd_record(&cp1).unwrap();
    assert!(
        record.metadata["last_incident"].contains("not running"),
        "{record:?}"
    );

    // A record deleted from the registry is registered again, counted.
    let key = globular_cluster::registry::service_key("globular.Etcd", "cp1");
    let deleted = etcdctl(&cp1, &cp1.etcd_url(), &["del", &key]);
    assert_eq!(deleted.trim(), "1", "{deleted}");
    let back = until("the record registered again", || {
        etcd_record(&cp1).is_some_and(|r| {
            r.metadata
                .get("last_incident")
                .is_some_and(|i| i.contains("was missing; registered again"))
        })
    });
    assert!(back < BACK_WITHIN, "the record back after {back:?}");
    let record = etcd_record(&cp1).unwrap();
    assert_eq!(
        (record.address.as_str(), record.port),
        (
            cp1.address().split('/').next().unwrap(),
            cp1.seed.node.ports.etcd_client
        ),
        "{record:?}"
    );
    assert_eq!(record.metadata["health"], "running", "{record:?}");
    until("the re-registration counted", || {
        state(&cp1)
            .actions
            .get("re-register globular.Etcd")
            .is_some_and(|n| *n >= 1)
    });
    let _ = watch.kill();
    let _ = watch.wait();
}

/// etcd's `NOSPACE` (an 8 MiB quota, filled by rewriting one key) is
/// cleared by the loop (compaction, defragmentation, disarm): writes
/// resume and every key keeps its latest value.
#[test]
fn a_full_etcd_is_recovered_by_the_loop() {
    let cluster = Cluster::new();
    let cp1 = cluster.node("cp1", Role::ControlPlane, true, &[]);
    cluster.run_agent(&cp1).unwrap();
    let layout = cp1.layout();
    let config = layout.etcd_config();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("quota-backend-bytes: 8388608\n");
    std::fs::write(&config, text).unwrap();
    kill(&cp1, Service::Etcd);
    until("etcd gone", || {
        services::running_pid(&layout, Service::Etcd).is_none()
    });

    let mut watch = cluster.start_health_loop(&cp1);
    until("etcd back with its quota", || etcd_healthy(&cp1));

    let etcd = globular_firstboot::etcd_client::substrate(&layout, vec![cp1.etcd_url()]).unwrap();
    let value = vec![b'x'; 256 * 1024];
    let err = runtime().block_on(async {
        etcd.put("/globular/test/kept", b"kept").await.unwrap();
        for _ in 0..200 {
            if let Err(e) = etcd.put("/globular/test/big", &value).await {
                return format!("{e:#}");
            }
        }
        panic!("the 8 MiB quota was never reached");
    });
    assert!(err.contains("space exceeded"), "{err}");

    until("writes accepted again", || {
        runtime()
            .block_on(etcd.put("/globular/test/small", b"s"))
            .is_ok()
    });
    until("the loop counted the recovery", || {
        state(&cp1)
            .actions
            .get("recover etcd space")
            .is_some_and(|n| *n >= 1)
    });
    runtime().block_on(async {
        assert_eq!(
            etcd.get("/globular/test/kept").await.unwrap().unwrap().0,
            b"kept"
        );
        assert!(etcd.alarms().await.unwrap().is_empty());
    });
    let s = state(&cp1);
    assert!(
        s.incidents
            .iter()
            .any(|i| i.check == "etcd-alarms" && i.what.contains("NOSPACE")),
        "{s:#?}"
    );
    let _ = watch.kill();
    let _ = watch.wait();
}

/// A control plane's etcd data corrupted on disk (its backend's first
/// pages overwritten) keeps etcd from starting; the loop sees it dying,
/// finds the backend does not open, and replaces the member from the two
/// others: a new member id, a voter again, every key of the cluster in its
/// own data.
#[test]
fn a_corrupt_etcd_member_is_replaced_from_its_peers() {
    replaced_from_its_peers("etcd-data", "does not open", |_, cp2| {
        kill(cp2, Service::Etcd);
        until("etcd gone", || {
            services::running_pid(&cp2.layout(), Service::Etcd).is_none()
        });
        let db = cp2.layout().etcd_data().join("member/snap/db");
        let mut file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        std::io::Write::write_all(&mut file, &[0u8; 16384]).unwrap();
    });
}

/// etcd's `CORRUPT` alarm naming cp2's member (raised through etcd's own
/// alarm API, as its corruption checks raise it): the cluster refuses
/// writes; cp2's loop replaces its member from the two others and the
/// alarm is disarmed: writes resume, every key is on cp2.
#[test]
fn an_etcd_member_named_corrupt_is_replaced_from_its_peers() {
    replaced_from_its_peers("etcd-alarms", "CORRUPT on this member", |cp1, _cp2| {
        let id = members(cp1)["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "cp2")
            .map(|m| m["ID"].as_u64().unwrap())
            .unwrap();
        let l = cp1.layout();
        let password = std::fs::read_to_string(l.etcd_password()).unwrap();
        let curl = |path: &str, body: &str, token: Option<&str>| {
            let mut task = Task::new("asking etcd's gateway", "curl")
                .args(["-sS", "--fail-with-body", "--cacert"])
                .arg(l.etcd_ca_cert())
                .arg("--cert")
                .arg(l.etcd_cert("client"))
                .arg("--key")
                .arg(l.etcd_key("client"))
                .args(["-d", body]);
            if let Some(token) = token {
                task = task.args(["-H", &format!("Authorization: {token}")]);
            }
            task.arg(format!("{}{path}", cp1.etcd_url()))
                .read_string()
                .unwrap()
        };
        let auth = curl(
            "/v3/auth/authenticate",
            &serde_json::json!({"name": SUBSTRATE_USER, "password": password.trim()}).to_string(),
            None,
        );
        let auth: serde_json::Value = serde_json::from_str(&auth).unwrap();
        let token = auth["token"].as_str().unwrap();
        curl(
            "/v3/maintenance/alarm",
            &serde_json::json!({"action": "ACTIVATE", "memberID": id.to_string(), "alarm": "CORRUPT"})
                .to_string(),
            Some(token),
        );
        // The alarm is real: the cluster takes no write.
        let etcd = globular_firstboot::etcd_client::substrate(&cp1.layout(), vec![cp1.etcd_url()])
            .unwrap();
        let refused = runtime().block_on(etcd.put("/globular/test/refused", b"x"));
        assert!(refused.is_err(), "a write went through a CORRUPT alarm");
    });
}

fn members(via: &Node) -> serde_json::Value {
    serde_json::from_str(&etcdctl(
        via,
        &via.etcd_url(),
        &["member", "list", "-w", "json"],
    ))
    .unwrap()
}

/// Three control planes with 50 keys, the health loop on cp2; `break_it`
/// (given cp1 and cp2) damages cp2's member. The loop must replace it
/// from the others (a new member id, a voter, every key in its data),
/// counted once, with an incident of `check` that says `why`, and leave
/// no old data behind; the cluster then takes writes.
fn replaced_from_its_peers(check: &str, why: &str, break_it: impl FnOnce(&Node, &Node)) {
    let cluster = Cluster::new();
    let cp1 = cluster.node("cp1", Role::ControlPlane, true, &[]);
    cluster.run_agent(&cp1).unwrap();
    let join = vec![cp1.api()];
    let cp2 = cluster.node("cp2", Role::ControlPlane, false, &join);
    cluster.run_agent(&cp2).unwrap();
    let cp3 = cluster.node("cp3", Role::ControlPlane, false, &join);
    cluster.run_agent(&cp3).unwrap();
    let etcd =
        globular_firstboot::etcd_client::substrate(&cp1.layout(), vec![cp1.etcd_url()]).unwrap();
    runtime().block_on(async {
        for i in 0..50 {
            etcd.put(&format!("/globular/test/{i}"), format!("v{i}").as_bytes())
                .await
                .unwrap();
        }
    });
    let member_id = |list: &serde_json::Value, name: &str| {
        list["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .map(|m| {
                (
                    m["ID"].as_u64().unwrap(),
                    m.get("isLearner") == Some(&true.into()),
                )
            })
    };
    let old_id = member_id(&members(&cp1), "cp2").unwrap().0;
    let keys = |node: &Node| {
        etcdctl(
            node,
            &node.etcd_url(),
            &[
                "get",
                "--prefix",
                "/globular/",
                "--keys-only",
                "--consistency=s",
            ],
        )
    };
    let before: std::collections::BTreeSet<String> = keys(&cp1)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();

    let _watch = cluster.start_health_loop(&cp2);
    until("the loop recorded the other members", || {
        state(&cp2).etcd_peers.len() == 2
    });
    break_it(&cp1, &cp2);

    let started = Instant::now();
    while !state(&cp2)
        .incidents
        .iter()
        .any(|i| i.what.starts_with("replaced the etcd member"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "not replaced within 180 s: {:#?}",
            state(&cp2)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let list = members(&cp1);
    let (new_id, learner) = member_id(&list, "cp2").unwrap();
    assert_ne!(new_id, old_id, "{list}");
    assert!(!learner, "{list}");
    assert_eq!(list["members"].as_array().unwrap().len(), 3, "{list}");
    assert!(etcd_healthy(&cp2));
    let after: std::collections::BTreeSet<String> = keys(&cp2)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let missing: Vec<&String> = before.difference(&after).collect();
    assert!(missing.is_empty(), "keys missing on cp2: {missing:?}");
    let s = state(&cp2);
    assert_eq!(s.actions.get("replace etcd member"), Some(&1), "{s:#?}");
    assert!(
        s.incidents
            .iter()
            .any(|i| i.check == check && i.what.contains(why)),
        "{s:#?}"
    );
    // Nothing of the old data is left.
    let leftovers: Vec<_> = std::fs::read_dir(cp2.layout().etcd_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("data.replaced"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // No alarm is left; the cluster takes writes, through the new member too.
    let etcd =
        globular_firstboot::etcd_client::substrate(&cp2.layout(), vec![cp2.etcd_url()]).unwrap();
    runtime().block_on(async {
        assert_eq!(etcd.alarms().await.unwrap(), vec![]);
        etcd.put("/globular/test/after", b"y").await.unwrap();
    });
}

/// The DNS authority (in the API's process) is checked on the node's
/// address: answering, the `dns` check passes; silent (its packets
/// dropped by an nftables rule of the test's own) for 30 s, the loop
/// restarts the API, counted and recorded; answering again, the check
/// passes again.
#[test]
fn a_silent_dns_authority_gets_the_api_restarted() {
    let cluster = Cluster::new();
    // An address no other test's node has: the rule below drops packets
    // to it alone.
    while cluster.fresh_address() != "127.0.0.229/8" {}
    let cp1 = cluster.node("cp1", Role::ControlPlane, true, &[]);
    cluster.run_agent(&cp1).unwrap();
    let ip = cp1.address().split('/').next().unwrap().to_owned();

    let out = health(&cp1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let dns_line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("dns "))
            .unwrap_or_else(|| panic!("no dns check in:\n{text}"))
            .to_owned()
    };
    let line = dns_line(&text);
    assert!(
        line.contains(" ok ") && line.contains(&format!("{ip}:53 (serial ")),
        "{line}"
    );

    let mut watch = cluster.start_health_loop(&cp1);
    let table = format!("globular_test_dns_{}", std::process::id());
    let nft = |script: &str| {
        Task::new("nft", "nft")
            .args(["-f", "-"])
            .stdin(script.as_bytes().to_vec())
            .run()
            .unwrap()
    };
    nft(&format!(
        "table ip {table} {{\n chain out {{\n  type filter hook output priority 0;\n  ip daddr {ip} udp dport 53 drop\n }}\n}}\n"
    ));
    let silenced = Instant::now();
    let api_pid = services::running_pid(&cp1.layout(), Service::Api).unwrap();
    let restarted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        until("the loop restarted the API for the DNS", || {
            state(&cp1)
                .actions
                .get("restart api for dns")
                .is_some_and(|n| *n >= 1)
        })
    }));
    nft(&format!("delete table ip {table}"));
    restarted.unwrap();
    assert!(
        silenced.elapsed() >= Duration::from_secs(30),
        "{:?}",
        silenced.elapsed()
    );
    until("a new API process", || {
        services::running_pid(&cp1.layout(), Service::Api).is_some_and(|p| p != api_pid)
    });
    let s = state(&cp1);
    assert!(
        s.incidents
            .iter()
            .any(|i| i.check == "dns" && i.what.contains("restarting the substrate API")),
        "{s:#?}"
    );
    until("the dns check passes again", || {
        state(&cp1)
            .checks
            .iter()
            .any(|c| c.name == "dns" && c.status == globular_firstboot::health::Status::Ok)
    });
    let out = health(&cp1);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = watch.kill();
    let _ = watch.wait();
}
