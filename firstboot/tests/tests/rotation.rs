//! Certificate rotation under load (issue 16): a cluster whose
//! certificates live one minute (two control planes and a worker, real
//! etcd, the real `globular` for the agent, the API and the health loops),
//! every node writing and reading the registry through the API without a
//! pause while the health loops renew every certificate several times and
//! `globular cert rotate --all` renews them all once more: no request
//! fails.
//!
//! `GLOBULAR_SOAK_LIFETIME` (default `60s`) and `GLOBULAR_SOAK_SECS`
//! (default 200) set the lifetime and how long the load runs: issue 16's
//! soak is `GLOBULAR_SOAK_LIFETIME=3m GLOBULAR_SOAK_SECS=720`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use globular_cluster::protocol::RegisterRequest;
use globular_cluster::{pki, secrets, Role};
use globular_firstboot::health::State;
use globular_firstboot::node_cli;

use crate::harness::{runtime, Cluster, Node, AGENT};

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The certificates of a node and their files.
fn cert_files(node: &Node) -> Vec<(String, std::path::PathBuf)> {
    let l = node.layout();
    let mut out = vec![("node".to_owned(), l.node_cert())];
    if l.etcd_cert("server").exists() {
        for kind in ["server", "peer", "client"] {
            out.push((format!("etcd {kind}"), l.etcd_cert(kind)));
        }
    }
    out
}

/// One request of a node's load: register its instance with a new
/// counter, then read it back through the list.
fn write_and_read(node: &Node, n: u64) -> Result<(), String> {
    let rt = runtime();
    // As the node CLI does: the client is made from the files on disk, so
    // it presents the node's current certificate.
    let client = node_cli::client(&node.layout()).map_err(|e| format!("{e:#}"))?;
    let mut metadata = BTreeMap::new();
    metadata.insert("n".to_owned(), n.to_string());
    rt.block_on(client.register(&RegisterRequest {
        name: "soak.Writer".into(),
        id: Some(node.name.clone()),
        address: "127.0.0.1".into(),
        port: 1,
        protocol: String::new(),
        tags: vec![],
        metadata: metadata.into_iter().collect(),
    }))
    .map_err(|e| format!("register: {e:#}"))?;
    let list = rt
        .block_on(client.services(Some("soak.Writer")))
        .map_err(|e| format!("list: {e:#}"))?;
    let ours = list
        .services
        .iter()
        .find(|s| s.id == node.name)
        .ok_or("list: our instance is missing")?;
    if ours.metadata.get("n") != Some(&n.to_string()) {
        return Err(format!(
            "list: read {:?}, wrote {n}",
            ours.metadata.get("n")
        ));
    }
    Ok(())
}

#[test]
fn certificates_rotate_under_load_without_a_failed_request() {
    let lifetime = pki::check_lifetime(
        globular_cluster::token::parse_ttl(&setting("GLOBULAR_SOAK_LIFETIME", "60s")).unwrap(),
    )
    .unwrap();
    let soak = Duration::from_secs(setting("GLOBULAR_SOAK_SECS", "180").parse().unwrap());
    let cluster = Cluster::new_with(&secrets::ClusterExtras {
        certificate_lifetime: lifetime,
        ..secrets::ClusterExtras::default()
    });
    let cp1 = cluster.node("cp1", Role::ControlPlane, true, &[]);
    cluster.run_agent(&cp1).unwrap();
    let join = vec![cp1.api()];
    let cp2 = cluster.node("cp2", Role::ControlPlane, false, &join);
    cluster.run_agent(&cp2).unwrap();
    let w1 = cluster.node("w1", Role::Worker, false, &join);
    cluster.run_agent(&w1).unwrap();
    let nodes = [&cp1, &cp2, &w1];

    // Issued for the cluster's lifetime.
    for node in nodes {
        for (name, path) in cert_files(node) {
            let id = pki::identity_of_pem(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let span = id.not_after - id.not_before;
            let want = lifetime + pki::backdate(lifetime);
            assert_eq!(span, want.whole_seconds(), "{} {name}", node.name);
        }
    }

    let mut loops: Vec<_> = nodes.iter().map(|n| cluster.start_health_loop(n)).collect();
    let stop = AtomicBool::new(false);
    let ok = AtomicU64::new(0);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let serials: Mutex<BTreeMap<String, BTreeSet<String>>> = Mutex::new(BTreeMap::new());
    let started = Instant::now();
    let mut rotate_all = None;
    std::thread::scope(|s| {
        for node in nodes {
            let (stop, ok, failures) = (&stop, &ok, &failures);
            s.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    match write_and_read(node, n) {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.lock().unwrap().push(format!(
                            "{} at {:.1} s: {e}",
                            node.name,
                            started.elapsed().as_secs_f64()
                        )),
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                for node in nodes {
                    for (name, path) in cert_files(node) {
                        // A file being replaced is read on the next pass.
                        if let Some(id) = std::fs::read_to_string(&path)
                            .ok()
                            .and_then(|pem| pki::identity_of_pem(&pem).ok())
                        {
                            serials
                                .lock()
                                .unwrap()
                                .entry(format!("{} {name}", node.name))
                                .or_default()
                                .insert(id.serial);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        // Half-way, the operator's rotation of the whole cluster.
        std::thread::sleep(soak / 2);
        let out = std::process::Command::new(AGENT)
            .args(["cert", "rotate", "--all", "--root"])
            .arg(&cp1.root)
            .output()
            .unwrap();
        rotate_all = Some(out);
        std::thread::sleep(soak.saturating_sub(started.elapsed()));
        stop.store(true, Ordering::Relaxed);
    });
    for l in &mut loops {
        let _ = l.kill();
        let _ = l.wait();
    }

    let out = rotate_all.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cert rotate --all: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["cp1", "cp2", "w1"] {
        assert!(text.contains(&format!("rotated {name} ")), "{text}");
    }
    assert!(text.contains("every node rotated (3)"), "{text}");

    let failures = failures.into_inner().unwrap();
    let ok = ok.into_inner();
    let serials = serials.into_inner().unwrap();
    let rotations: BTreeMap<&String, usize> =
        serials.iter().map(|(k, v)| (k, v.len() - 1)).collect();
    let report = format!(
        "rotation soak: lifetime {} s, {} s of load, {ok} requests ok, {} failed; \
         rotations per certificate: {rotations:?}\n",
        lifetime.whole_seconds(),
        soak.as_secs(),
        failures.len()
    );
    std::io::Write::write_all(&mut std::io::stderr(), report.as_bytes()).unwrap();
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(ok > 100, "only {ok} requests");
    assert_eq!(rotations.len(), 9, "{rotations:?}");
    for (cert, n) in &rotations {
        assert!(*n >= 3, "{cert}: {n} rotations: {rotations:?}");
    }
    // The loops counted what they did.
    for node in nodes {
        let state = State::load(&node.layout()).unwrap().unwrap();
        let renewed = state.actions.get("renew certificate").copied().unwrap_or(0);
        assert!(renewed >= 3, "{}: {:?}", node.name, state.actions);
    }
}
