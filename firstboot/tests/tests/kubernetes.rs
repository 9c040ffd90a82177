//! Issue 13 on the host: the Kubernetes control-plane package applied by
//! the real `globular apply` on a control plane of a real substrate (the
//! agent, etcd with auth on), running the real kube-apiserver,
//! kube-controller-manager and kube-scheduler (built from
//! `components/kubernetes`, installed in /usr/local/bin by
//! `scripts/install-deps.sh`) on loopback ports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use globular_cluster::{pki, Role};
use globular_firstboot::health::State;
use globular_task::Task;

use crate::harness::{etcdctl, etcdctl_as, free_port, openssl_verify, Cluster, Node, AGENT};

/// The control-plane package spec as the image carries it.
fn spec(dir: &Path) -> PathBuf {
    overlay_spec(dir, "control-plane", "kubernetes-control-plane")
}

/// A package spec as an image of `role` carries it: the overlay template
/// with the pinned version filled in by tera, as the builder renders
/// overlays.
fn overlay_spec(dir: &Path, role: &str, name: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let template = std::fs::read_to_string(repo.join(format!(
        "overlays/{role}/usr/share/globular/packages/{name}.yaml.tera"
    )))
    .unwrap();
    let mut context = tera::Context::new();
    context.insert(
        "pins",
        &serde_json::json!({"kubernetes": {"version": "test"}}),
    );
    let text = tera::Tera::one_off(&template, &context, false).unwrap();
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

struct Apply {
    spec: PathBuf,
    settings: Vec<String>,
}

impl Apply {
    /// `globular apply SPEC`.
    fn run(&self, node: &Node, extra: &[&str]) -> Result<String, globular_task::TaskError> {
        self.task(
            node,
            Task::new("applying the Kubernetes package", AGENT)
                .arg("apply")
                .arg(&self.spec),
            extra,
        )
    }

    /// `globular apply --installed`, what the images' globular-packages.service runs.
    fn installed(&self, node: &Node, dir: &Path) -> Result<String, globular_task::TaskError> {
        let task = Task::new("applying the installed packages", AGENT)
            .args(["apply", "--installed", "--packages-dir"])
            .arg(dir);
        self.task(node, task, &[])
    }

    fn task(
        &self,
        node: &Node,
        task: Task,
        extra: &[&str],
    ) -> Result<String, globular_task::TaskError> {
        let mut task = task
            .arg("--root")
            .arg(&node.root)
            .args(["--services", "spawn", "--wait", "300"])
            .args(extra);
        for s in &self.settings {
            task = task.args(["--set", s]);
        }
        task.read_string()
    }
}

/// This node's `kubernetes.KubernetesService` record, as `globular service
/// list --json` prints it.
fn kubernetes_record(node: &Node) -> serde_json::Value {
    let listed = Task::new("globular service list", AGENT)
        .args([
            "service",
            "list",
            "--name",
            "kubernetes.KubernetesService",
            "--json",
            "--root",
        ])
        .arg(&node.root)
        .read_string()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    listed["services"][0].clone()
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    Task::new("kubectl", "/usr/local/bin/kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .read_string()
        .unwrap()
}

#[test]
fn kubernetes_control_plane_package_on_the_substrate() {
    let cluster = Cluster::new();
    let cp1 = cluster.node("cp1", Role::ControlPlane, true, &[]);
    cluster.run_agent(&cp1).unwrap();
    let apiserver_port = free_port();
    let apply = Apply {
        spec: spec(cluster.dir.path()),
        settings: vec![
            "bin_dir=/usr/local/bin".into(),
            // The test nodes' addresses are loopback ones.
            "endpoint_reconciler=none".into(),
            format!("secure_port={apiserver_port}"),
            format!("controller_manager_port={}", free_port()),
            format!("scheduler_port={}", free_port()),
        ],
    };
    let dir = cp1.root.join("packages/kubernetes-control-plane");

    // The plan of a node without the package: everything, nothing done.
    let plan = apply.run(&cp1, &["--plan"]).unwrap();
    assert!(
        plan.contains("would issue certificate apiserver (missing)"),
        "{plan}"
    );
    assert!(plan.contains("would start kube-apiserver"), "{plan}");
    assert!(!dir.exists(), "the plan wrote {}", dir.display());

    // First run, as the image runs it: every package of the image's
    // directory that is for this node's role (a worker's package there is
    // left alone). Certificates, files, etcd user, components, health,
    // registry.
    let installed = cluster.dir.path().join("packages");
    std::fs::create_dir(&installed).unwrap();
    std::fs::copy(&apply.spec, installed.join("kubernetes-control-plane.yaml")).unwrap();
    std::fs::write(
        installed.join("a-worker-package.yaml"),
        "apiVersion: globular/v1\nkind: Package\nname: a-worker-package\nversion: '1'\nrole: worker\n",
    )
    .unwrap();
    let out = apply.installed(&cp1, &installed).unwrap();
    assert!(
        out.starts_with("package kubernetes-control-plane:\n"),
        "{out}"
    );
    assert!(!out.contains("a-worker-package"), "{out}");
    assert!(!cp1.root.join("packages/a-worker-package").exists());
    for line in [
        "issue certificate apiserver (missing)",
        "set etcd user kube-apiserver-etcd-client and its role",
        "start kube-apiserver",
        "start kube-controller-manager",
        "start kube-scheduler",
        "healthy: kube-apiserver",
        "healthy: kube-controller-manager",
        "healthy: kube-scheduler",
        "register kubernetes.KubernetesService",
        "apply manifest apiserver-kubelet-client",
    ] {
        assert!(out.lines().any(|l| l == line), "no {line:?} in:\n{out}");
    }
    // Its certificates chain to the cluster CA through Kubernetes' CA.
    let pki = cp1.layout().pki();
    let chain = cluster.dir.path().join("chain.pem");
    std::fs::write(
        &chain,
        std::fs::read_to_string(pki.join("ca.crt")).unwrap()
            + &std::fs::read_to_string(pki.join("kubernetes-ca.crt")).unwrap(),
    )
    .unwrap();
    openssl_verify(&chain, &dir.join("apiserver.crt"));
    // Keys are the node's own, 0600.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.join("apiserver.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Second run: nothing to change.
    let again = apply.run(&cp1, &[]).unwrap();
    assert!(again.starts_with("no changes\n"), "{again}");

    // The firewall opens the port the package registered (to anyone: the
    // apiserver authenticates its clients), and nothing else of it.
    let rules = Task::new("globular firewall --print", AGENT)
        .args(["firewall", "--print", "--root"])
        .arg(&cp1.root)
        .read_string()
        .unwrap();
    assert!(
        rules.contains(&format!(
            "tcp dport {apiserver_port} accept comment \"kubernetes.KubernetesService\""
        )),
        "{rules}"
    );

    // kubectl with the administrator kubeconfig: a namespace, a ConfigMap
    // and a Deployment, read back.
    let admin = cluster.dir.path().join("admin.kubeconfig");
    let text = Task::new("globular kubeconfig", AGENT)
        .args(["kubeconfig", "--ttl", "10m", "--root"])
        .arg(&cp1.root)
        .read_string()
        .unwrap();
    assert!(text.contains(&format!(":{apiserver_port}")), "{text}");
    std::fs::write(&admin, text).unwrap();
    assert_eq!(kubectl(&admin, &["get", "--raw", "/readyz"]).trim(), "ok");
    // The package's manifest: the apiserver's kubelet client may use the
    // kubelets' API (logs, exec), and nothing else it did not have.
    let can = kubectl(
        &admin,
        &[
            "auth",
            "can-i",
            "create",
            "nodes",
            "--subresource=proxy",
            "--as",
            "kube-apiserver-kubelet-client",
        ],
    );
    assert_eq!(can.trim(), "yes");
    let denied = Task::new("kubectl auth can-i", "/usr/local/bin/kubectl")
        .arg("--kubeconfig")
        .arg(&admin)
        .args([
            "auth",
            "can-i",
            "list",
            "secrets",
            "--as",
            "kube-apiserver-kubelet-client",
        ])
        .read_string();
    assert!(denied.is_err(), "{denied:?}");
    let colour = || {
        let jsonpath = "jsonpath={.data.colour}";
        kubectl(
            &admin,
            &["-n", "demo", "get", "configmap", "settings", "-o", jsonpath],
        )
    };
    kubectl(&admin, &["create", "namespace", "demo"]);
    kubectl(
        &admin,
        &[
            "-n",
            "demo",
            "create",
            "configmap",
            "settings",
            "--from-literal=colour=blue",
        ],
    );
    kubectl(
        &admin,
        &[
            "-n",
            "demo",
            "create",
            "deployment",
            "web",
            "--image=example.invalid/web:1",
        ],
    );
    assert_eq!(colour(), "blue");
    let deployment = kubectl(
        &admin,
        &["-n", "demo", "get", "deployment", "web", "-o", "name"],
    );
    assert_eq!(deployment.trim(), "deployment.apps/web");
    // The controller manager works: the Deployment got a ReplicaSet.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sets = kubectl(&admin, &["-n", "demo", "get", "replicasets", "-o", "name"]);
        if sets.contains("replicaset.apps/web-") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ReplicaSet for the Deployment"
        );
        std::thread::sleep(Duration::from_secs(2));
    }

    // The objects are under the apiserver's prefix in the substrate's etcd.
    let keys = etcdctl(
        &cp1,
        &cp1.etcd_url(),
        &["get", "--prefix", "/registry/", "--keys-only"],
    );
    for key in [
        "/registry/namespaces/demo",
        "/registry/configmaps/demo/settings",
        "/registry/deployments/demo/web",
    ] {
        assert!(keys.lines().any(|l| l == key), "no {key} in etcd");
    }
    // The apiserver's etcd identity reaches its prefix and nothing else.
    let identity = (
        pki.join("etcd-ca.crt"),
        dir.join("apiserver-etcd-client.crt"),
        dir.join("apiserver-etcd-client.key"),
    );
    let files = (
        identity.0.as_path(),
        identity.1.as_path(),
        identity.2.as_path(),
    );
    let own = etcdctl_as(
        files,
        &cp1.etcd_url(),
        &["get", "/registry/namespaces/demo", "--keys-only"],
    )
    .unwrap();
    assert!(own.contains("/registry/namespaces/demo"), "{own}");
    for args in [
        &["get", "--prefix", "/globular/"][..],
        &["get", "/globular/cluster"],
        &["put", "/globular/x", "y"],
        &["put", "/other", "y"],
        &["user", "list"],
        // (etcd shows its member list to every client it lets in.)
        &[
            "member",
            "add",
            "intruder",
            "--peer-urls=https://127.0.0.99:2380",
        ],
    ] {
        let out = etcdctl_as(files, &cp1.etcd_url(), args);
        assert!(
            out.is_err(),
            "the apiserver's etcd identity ran {args:?}: {out:?}"
        );
    }

    // Kubernetes is in discovery.
    let record = kubernetes_record(&cp1);
    assert_eq!(record["node"], "cp1");
    assert_eq!(record["port"], apiserver_port);
    assert_eq!(record["metadata"]["health"], "running");
    let table = Task::new("globular service list", AGENT)
        .args(["service", "list", "--root"])
        .arg(&cp1.root)
        .read_string()
        .unwrap();
    let row = table
        .lines()
        .find(|l| l.starts_with("kubernetes.KubernetesService"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.ends_with(" running") && row.contains(&format!(":{apiserver_port}")),
        "{row}"
    );

    // The apiserver's etcd user is refused nothing: its compactor (which
    // etcd allows only to root) is off, etcd compacts by itself.
    let log = std::fs::read_to_string(cp1.root.join("log/kube-apiserver.log")).unwrap();
    assert!(!log.contains("permission denied"), "{log}");

    // Drift is put back: a deleted certificate, an edited kubeconfig, a
    // stopped component.
    std::fs::remove_file(dir.join("apiserver.crt")).unwrap();
    let kubeconfig = dir.join("scheduler.kubeconfig");
    std::fs::write(&kubeconfig, "edited by hand\n").unwrap();
    let scheduler_pid =
        std::fs::read_to_string(cp1.root.join("run/component-kube-scheduler.pid")).unwrap();
    Task::new("stopping kube-scheduler", "sh")
        .args(["-c", "kill -9 \"$1\"", "sh", scheduler_pid.trim()])
        .run()
        .unwrap();
    let plan = apply.run(&cp1, &["--plan"]).unwrap();
    assert!(
        plan.contains("would issue certificate apiserver (missing)"),
        "{plan}"
    );
    assert!(
        !dir.join("apiserver.crt").exists(),
        "the plan issued the certificate"
    );
    let fixed = apply.run(&cp1, &[]).unwrap();
    for line in [
        "issue certificate apiserver (missing)".to_owned(),
        format!("write {}", kubeconfig.display()),
        "start kube-scheduler".to_owned(),
        "restart kube-apiserver".to_owned(),
        "healthy: kube-scheduler".to_owned(),
    ] {
        assert!(fixed.lines().any(|l| l == line), "no {line:?} in:\n{fixed}");
    }
    openssl_verify(&chain, &dir.join("apiserver.crt"));
    assert_ne!(
        std::fs::read_to_string(&kubeconfig).unwrap(),
        "edited by hand\n"
    );
    assert!(apply.run(&cp1, &[]).unwrap().starts_with("no changes\n"));
    // And the objects survived the restart.
    assert_eq!(colour(), "blue");

    // Issue 16: the health loop keeps the package's components running.
    // kube-scheduler killed is started again by the loop (there is no
    // service manager here to do it), counted and recorded.
    let _health = cluster.start_health_loop(&cp1);
    let pid_file = cp1.root.join("run/component-kube-scheduler.pid");
    let killed = std::fs::read_to_string(&pid_file).unwrap();
    Task::new("killing kube-scheduler", "sh")
        .args(["-c", "kill -9 \"$1\"", "sh", killed.trim()])
        .run()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = State::load(&cp1.layout()).unwrap();
        let started = state
            .as_ref()
            .and_then(|s| s.actions.get("start kube-scheduler"))
            .copied();
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        if started.is_some() && pid != killed {
            let state = state.unwrap();
            assert!(
                state.incidents.iter().any(|i| i.check == "kube-scheduler"),
                "{state:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the health loop did not start kube-scheduler again: {state:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The loop keeps the package's record current (`apply` wrote it once):
    // its `checked_at` comes from the loop, and `apply` does not count the
    // loop's metadata as drift (the last apply below prints no changes).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let record = kubernetes_record(&cp1);
        let metadata = &record["metadata"];
        let checked = metadata["checked_at"]
            .as_str()
            .and_then(|t| t.parse::<i64>().ok());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if checked.is_some_and(|t| now - t < 120) && metadata["health"] == "running" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the loop did not refresh the package's record: {metadata}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // A rotation covers the package's certificates: `globular cert
    // rotate` renews the node's and marks the package's, and the next
    // apply issues every one of them again (new keys, new serials) and
    // restarts the components, which serve on.
    let serials = |dir: &Path| -> Vec<(String, String)> {
        let mut out: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "crt"))
            .map(|p| {
                let pem = std::fs::read_to_string(&p).unwrap();
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                (name, pki::identity_of_pem(&pem).unwrap().serial)
            })
            .collect();
        out.sort();
        out
    };
    let before = serials(&dir);
    assert!(before.len() >= 5, "{before:?}");
    let rotated = Task::new("globular cert rotate", AGENT)
        .args(["cert", "rotate", "--root"])
        .arg(&cp1.root)
        .read_string()
        .unwrap();
    assert!(
        rotated.contains(&format!("packages' certificates ({})", before.len())),
        "{rotated}"
    );
    let out = apply.run(&cp1, &[]).unwrap();
    for (name, _) in &before {
        let line = format!("issue certificate {name} (issued before the rotation asked at ");
        assert!(
            out.lines().any(|l| l.starts_with(&line)),
            "no {line:?} in:\n{out}"
        );
    }
    assert!(out.lines().any(|l| l == "healthy: kube-apiserver"), "{out}");
    let after = serials(&dir);
    for ((name, old), (_, new)) in before.iter().zip(&after) {
        assert_ne!(old, new, "{name} was not issued again");
    }
    assert!(apply.run(&cp1, &[]).unwrap().starts_with("no changes\n"));
    assert_eq!(colour(), "blue");

    worker_identity(&cluster, &cp1, apiserver_port, &admin);
}

/// Issue 14: a worker (no Kubernetes CA key) gets its kubelet's client and
/// serving certificates from the substrate API through `globular apply`,
/// and the real apiserver takes the client one for the node it names and
/// nothing else (Node authorization, NodeRestriction).
fn worker_identity(cluster: &Cluster, cp1: &Node, apiserver_port: u16, admin: &Path) {
    let w1 = cluster.node("w1", Role::Worker, false, &[cp1.api()]);
    cluster.run_agent(&w1).unwrap();
    let pki = w1.layout().pki();
    assert!(!pki.join("kubernetes-ca.key").exists());
    assert!(!pki.join("kubernetes-ca.crt").exists());
    // The worker package as the image carries it: its plan renders
    // everything (the kubelet's configuration, the components' command
    // lines with the API servers' DNS name).
    let worker = overlay_spec(cluster.dir.path(), "worker", "kubernetes-worker-node");
    let whole = Apply {
        spec: worker.clone(),
        settings: vec![format!("apiserver_port={apiserver_port}")],
    };
    let plan = whole.run(&w1, &["--plan"]).unwrap();
    for line in [
        "would issue certificate kubelet (missing)",
        "would issue certificate kubelet-serving (missing)",
        "would issue certificate kube-proxy (missing)",
        "would start kubelet",
        "would start kube-proxy",
    ] {
        assert!(plan.lines().any(|l| l == line), "no {line:?} in:\n{plan}");
    }
    // This host runs no kubelet (it would take over the host's cgroups
    // and network): the package's identities only, applied for real.
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&worker).unwrap()).unwrap();
    let map = doc.as_mapping_mut().unwrap();
    for key in ["files", "components", "health", "register"] {
        map.remove(key).unwrap();
    }
    map.insert("name".into(), "kubelet-identity".into());
    let spec = cluster.dir.path().join("kubelet-identity.yaml");
    std::fs::write(&spec, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    let apply = Apply {
        spec,
        settings: vec![format!("apiserver_port={apiserver_port}")],
    };
    let plan = apply.run(&w1, &["--plan"]).unwrap();
    assert!(
        plan.contains("would issue certificate kubelet (missing)"),
        "{plan}"
    );
    assert!(!pki.join("kubernetes-ca.crt").exists(), "the plan wrote");
    let out = apply.run(&w1, &[]).unwrap();
    for line in [
        "issue certificate kubelet (missing)",
        "issue certificate kubelet-serving (missing)",
        "issue certificate kube-proxy (missing)",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "no {line:?} in:
{out}"
        );
    }
    assert!(apply.run(&w1, &[]).unwrap().starts_with("no changes\n"));
    // Both chain to the cluster CA through Kubernetes' CA, which the node
    // learned from the API; the keys are the node's, 0600.
    let dir = w1.root.join("packages/kubelet-identity");
    let chain = cluster.dir.path().join("w1-chain.pem");
    std::fs::write(
        &chain,
        std::fs::read_to_string(w1.layout().ca_cert()).unwrap()
            + &std::fs::read_to_string(pki.join("kubernetes-ca.crt")).unwrap(),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    for name in ["kubelet", "kubelet-serving", "kube-proxy"] {
        openssl_verify(&chain, &dir.join(format!("{name}.crt")));
        let mode = std::fs::metadata(dir.join(format!("{name}.key")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}.key");
    }
    let serving =
        pki::identity_of_pem(&std::fs::read_to_string(dir.join("kubelet-serving.crt")).unwrap())
            .unwrap();
    assert_eq!(serving.common_name, "system:node:w1");
    assert_eq!(serving.dns_names, ["w1"]);
    assert_eq!(
        serving.ips,
        [w1.address()
            .split('/')
            .next()
            .unwrap()
            .parse::<std::net::IpAddr>()
            .unwrap()]
    );

    // The kubeconfigs name the API servers by their name in the
    // substrate's DNS, which the apiserver's certificate carries; this
    // host does not resolve the cluster's zone, so kubectl is sent to the
    // apiserver's address under that name.
    let kubelet = dir.join("kubelet.kubeconfig");
    let name = "kubernetes-kubernetesservice.test.globular.internal";
    let text = std::fs::read_to_string(&kubelet).unwrap();
    assert!(
        text.contains(&format!("server: https://{name}:{apiserver_port}")),
        "{text}"
    );
    let as_node = |what: &str, args: &[&str]| {
        Task::new(
            format!("kubectl {what} as the node"),
            "/usr/local/bin/kubectl",
        )
        .arg("--kubeconfig")
        .arg(&kubelet)
        .arg(format!("--server=https://127.0.0.1:{apiserver_port}"))
        .arg(format!("--tls-server-name={name}"))
        .args(args)
        .read_string()
    };
    // The apiserver knows the client certificate as node w1: it may
    // register its own Node, not another's, and read no ConfigMap.
    let node = |name: &str| {
        let path = cluster.dir.path().join(format!("node-{name}.json"));
        std::fs::write(
            &path,
            format!(r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}"}}}}"#),
        )
        .unwrap();
        as_node("create node", &["create", "-f", path.to_str().unwrap()])
    };
    let who = as_node(
        "auth whoami",
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo}"],
    )
    .unwrap();
    assert!(
        who.contains(r#""username":"system:node:w1""#) && who.contains("system:nodes"),
        "{who}"
    );
    node("w1").unwrap();
    let listed = kubectl(admin, &["get", "node", "w1", "-o", "name"]);
    assert_eq!(listed.trim(), "node/w1");
    let err = node("w2").unwrap_err().to_string();
    assert!(
        err.contains("Forbidden") || err.contains("forbidden"),
        "{err}"
    );
    let err = as_node(
        "get configmap",
        &["-n", "demo", "get", "configmap", "settings"],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("forbidden"), "{err}");
    // kube-proxy's identity reads what kube-proxy needs (Kubernetes'
    // default binding to system:node-proxier), and writes no Node.
    let proxy = |args: &[&str]| {
        Task::new("kubectl as kube-proxy", "/usr/local/bin/kubectl")
            .arg("--kubeconfig")
            .arg(dir.join("kube-proxy.kubeconfig"))
            .arg(format!("--server=https://127.0.0.1:{apiserver_port}"))
            .arg(format!("--tls-server-name={name}"))
            .args(args)
            .read_string()
    };
    proxy(&["get", "endpointslices", "-A", "-o", "name"]).unwrap();
    assert!(proxy(&["delete", "node", "w1"]).is_err());

    // A deleted certificate comes back from the substrate on the next run.
    std::fs::remove_file(dir.join("kubelet.crt")).unwrap();
    let out = apply.run(&w1, &[]).unwrap();
    assert!(
        out.lines()
            .any(|l| l == "issue certificate kubelet (missing)"),
        "{out}"
    );
    assert!(as_node("get node", &["get", "node", "w1", "-o", "name"])
        .unwrap()
        .contains("node/w1"));

    kubelet_serving_is_checked(cluster, &dir, admin);
}

/// The apiserver checks a kubelet's serving certificate against
/// Kubernetes' CA (`--kubelet-certificate-authority`) before it sends it
/// anything or trusts what comes back (logs, exec). Node w1 says its
/// kubelet is at its address and a free port, where a TLS server answers
/// with w1's substrate-issued serving certificate: the apiserver reads the
/// pod's "logs" there. Then the same server with a certificate for the same
/// name and address from another CA: the apiserver refuses it.
fn kubelet_serving_is_checked(cluster: &Cluster, dir: &Path, admin: &Path) {
    let serving =
        pki::identity_of_pem(&std::fs::read_to_string(dir.join("kubelet-serving.crt")).unwrap())
            .unwrap();
    let ip = serving.ips[0].to_string();
    let port = free_port();
    let status = format!(
        r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"{ip}"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#
    );
    // What a kubelet writes in its Node's status (this host runs none).
    kubectl(
        admin,
        &[
            "patch",
            "node",
            "w1",
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ],
    );
    let pod = cluster.dir.path().join("pod-on-w1.json");
    std::fs::write(
        &pod,
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"on-w1","namespace":"demo"},
            "spec":{"nodeName":"w1","containers":[{"name":"c","image":"localhost/none:0"}]}}"#,
    )
    .unwrap();
    kubectl(admin, &["create", "-f", pod.to_str().unwrap()]);

    let kubelet = |cert: &Path, key: &Path, log: &str| -> crate::harness::KillOnDrop {
        let server = Task::new("a TLS server in the kubelet's place", "openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("{ip}:{port}"))
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .spawn_logged(&cluster.dir.path().join(log))
            .unwrap();
        crate::harness::wait_listening((ip.as_str(), port), "openssl s_server");
        server.into()
    };
    let logs = || {
        Task::new(
            "kubectl logs through the apiserver",
            "/usr/local/bin/kubectl",
        )
        .arg("--kubeconfig")
        .arg(admin)
        .args(["-n", "demo", "logs", "on-w1"])
        .read_string()
    };
    {
        let _kubelet = kubelet(
            &dir.join("kubelet-serving.crt"),
            &dir.join("kubelet-serving.key"),
            "kubelet-serving.log",
        );
        let page = logs().unwrap();
        assert!(page.contains("s_server"), "{page}");
    }
    // The same name and address, another CA.
    let other = cluster.dir.path().join("other-ca");
    std::fs::create_dir_all(&other).unwrap();
    let (cert, key) = (other.join("serving.crt"), other.join("serving.key"));
    Task::new("a serving certificate from another CA", "openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/O=system:nodes/CN=system:node:w1",
        ])
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:w1,IP:{ip}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .run()
        .unwrap();
    let _kubelet = kubelet(&cert, &key, "kubelet-other-ca.log");
    let err = logs().unwrap_err().to_string();
    assert!(
        err.contains("certificate signed by unknown authority"),
        "the apiserver took a kubelet certificate from another CA: {err}"
    );
}
