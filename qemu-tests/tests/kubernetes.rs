//! Issue 13 on a booted image: what a bootstrap control plane, seeded like
//! any other (`builder cluster new`, `builder seed --format cidata`, no
//! package selection), shows once it enrolled and applied Kubernetes'
//! control plane by itself (`globular-packages.service`: `globular apply
//! --installed` after enrollment). No step of the tests acts on the node
//! before these checks. They run on the control plane of
//! `cluster::kubernetes_worker_node_turns_ready` (one booted cluster for
//! the control plane and its workers); three control planes running
//! Kubernetes are `cluster::three_control_planes_run_kubernetes`.

use std::time::{Duration, Instant};

use qemu_tests::Vm;
use serde_json::Value;

/// One command in the guest; the Kubernetes program's start alone takes
/// tens of seconds emulated.
const EXEC: Duration = Duration::from_secs(300);
const KUBECONFIG: &str = "/run/test-admin.kubeconfig";

fn exec(vm: &mut Vm, program: &str, args: &[&str]) -> String {
    let what = format!("{program} {}", args.join(" "));
    match vm.exec(program, args, EXEC).and_then(|o| o.success(&what)) {
        Ok(out) => out.stdout,
        Err(err) => panic!("{err:#}\n{}", vm.tail()),
    }
}

fn kubectl(vm: &mut Vm, args: &[&str]) -> String {
    let mut argv = vec!["--kubeconfig", KUBECONFIG, "--request-timeout=60s"];
    argv.extend_from_slice(args);
    exec(vm, "/usr/bin/kubectl", &argv)
}

/// `globular health --json` on the node (its exit status says whether a
/// check fails; the JSON says which).
fn health(vm: &mut Vm) -> Value {
    match vm.exec("/usr/bin/globular", &["health", "--json"], EXEC) {
        Ok(out) => serde_json::from_str(&out.stdout).unwrap_or(Value::Null),
        Err(err) => panic!("globular health: {err:#}\n{}", vm.tail()),
    }
}

fn check_ok(health: &Value, name: &str) -> bool {
    health["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["name"] == name && c["status"] == "ok")
}

fn incidents(health: &Value, check: &str) -> usize {
    health["incidents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["check"] == check)
        .count()
}

/// Polls `globular health` until `ready` holds (at most 5 minutes).
fn wait_health(vm: &mut Vm, what: &str, ready: impl Fn(&Value) -> bool) {
    let started = Instant::now();
    loop {
        let h = health(vm);
        if ready(&h) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "health loop, {what}: {h:#}\n{}",
            vm.tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What a control plane that applied Kubernetes by itself must show, in
/// the guest (`ip` is its address): the apiserver through its address, an
/// object written and read, its registry record, its firewall, a converged
/// package, and the health loop bringing back a killed etcd and a stopped
/// substrate API. Runs on `cluster::kubernetes_worker_node_turns_ready`'s
/// cp-1 (one booted cluster for both); returns when etcd was healthy after
/// its SIGKILL and when the API was back after its stop.
pub fn control_plane_checks(vm: &mut Vm, ip: &str) -> (Duration, Duration) {
    // The apiserver through the node's address, with an administrator
    // kubeconfig made on the node as an operator would.
    let make = format!(
        "umask 077; /usr/bin/globular kubeconfig --ttl 1h --server https://{ip}:6443 > {KUBECONFIG}"
    );
    exec(vm, "/bin/sh", &["-c", &make]);
    let readyz = kubectl(vm, &["get", "--raw", "/readyz"]);
    assert_eq!(readyz.trim(), "ok");
    kubectl(
        vm,
        &["create", "configmap", "booted", "--from-literal=by=cp-1"],
    );
    let read = kubectl(
        vm,
        &["get", "configmap", "booted", "-o", "jsonpath={.data.by}"],
    );
    assert_eq!(read.trim(), "cp-1");

    // In discovery, running, at the pinned version.
    let listed = exec(
        vm,
        "/usr/bin/globular",
        &[
            "service",
            "list",
            "--name",
            "kubernetes.KubernetesService",
            "--json",
        ],
    );
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let services = listed["services"].as_array().cloned().unwrap_or_default();
    assert_eq!(services.len(), 1, "{listed}");
    let pinned = crate::images::pinned("kubernetes");
    let s = &services[0];
    assert_eq!(
        (&s["address"], &s["port"], &s["metadata"]["health"]),
        (
            &Value::from(ip),
            &Value::from(6443),
            &Value::from("running")
        ),
        "{s}"
    );
    assert_eq!(s["metadata"]["version"], pinned, "{s}");

    // The firewall loaded the port the package registered.
    let table = exec(vm, "/usr/sbin/nft", &["list", "table", "inet", "globular"]);
    assert!(
        table.contains("tcp dport 6443 accept comment \"kubernetes.KubernetesService\""),
        "{table}"
    );

    // Converged: the unit stays active, and a plan finds nothing to do.
    let active = exec(
        vm,
        "/usr/bin/systemctl",
        &["is-active", "globular-packages.service"],
    );
    assert_eq!(active.trim(), "active");
    let plan = exec(vm, "/usr/bin/globular", &["apply", "--installed", "--plan"]);
    assert!(
        plan.contains("package kubernetes-control-plane:\nno changes\n"),
        "{plan}"
    );
    // Issue 16: the health loop (globular-health.service). etcd killed
    // with SIGKILL comes back (systemd's Restart=) and the loop records
    // the incident; the substrate API stopped by hand is started again by
    // the loop within its period (5 s) plus the API's start.
    let killed = Instant::now();
    exec(
        vm,
        "/usr/bin/systemctl",
        &["kill", "--signal=KILL", "globular-etcd.service"],
    );
    wait_health(vm, "etcd killed", |h| {
        check_ok(h, "etcd") && check_ok(h, "etcd-alarms") && incidents(h, "etcd") >= 1
    });
    let etcd_back = killed.elapsed();
    exec(vm, "/usr/bin/systemctl", &["stop", "globular-api.service"]);
    let stopped = Instant::now();
    wait_health(vm, "API stopped", |h| {
        check_ok(h, "api") && h["actions"]["start api"].as_u64() >= Some(1)
    });
    let api_back = stopped.elapsed();
    let active = exec(
        vm,
        "/usr/bin/systemctl",
        &["is-active", "globular-api.service"],
    );
    assert_eq!(active.trim(), "active");
    // Under TCG the API's start takes seconds of its own.
    assert!(
        api_back < Duration::from_secs(60),
        "the API was back {:.0} s after it was stopped",
        api_back.as_secs_f64()
    );
    // The registry record of etcd shows the incident.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let listed = exec(
            vm,
            "/usr/bin/globular",
            &["service", "list", "--name", "globular.Etcd", "--json"],
        );
        let listed: Value = serde_json::from_str(&listed).unwrap();
        let meta = &listed["services"][0]["metadata"];
        let count: u64 = meta["incidents"]
            .as_str()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if meta["health"] == "running" && count >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the etcd record: {listed}");
        std::thread::sleep(Duration::from_secs(2));
    }

    (etcd_back, api_back)
}
