//! The five-node cluster: one bootstrap control-plane, two joining
//! control-planes, two workers.

use globular_cluster::etcd_auth::SUBSTRATE_USER;
use globular_cluster::protocol::RegisterRequest;
use globular_cluster::Role;
use globular_firstboot::node_cli;
use globular_substrate::Client;
use globular_task::Task;

use crate::harness::{etcdctl, etcdctl_as, openssl_verify, runtime, Cluster, AGENT};

#[test]
fn five_node_cluster() {
    let cluster = Cluster::new();
    let cp1 = cluster.node("cp1", Role::ControlPlane, true, &[]);
    cluster.run_agent(&cp1).unwrap();
    let join = vec![cp1.api()];
    let cp2 = cluster.node("cp2", Role::ControlPlane, false, &join);
    let cp3 = cluster.node("cp3", Role::ControlPlane, false, &join);
    let w1 = cluster.node("w1", Role::Worker, false, &join);
    // w2 boots with its seed on a config drive, as under QEMU.
    let w2 = cluster.node_with_drive("w2", Role::Worker, &join);
    // The control-plane joiners run at the same time: etcd allows one learner
    // at a time and the agent waits its turn.
    std::thread::scope(|s| {
        let handles: Vec<_> = [&cp2, &cp3, &w1, &w2]
            .into_iter()
            .map(|n| s.spawn(|| cluster.run_agent(n)))
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    });

    // etcd: three voting members, all healthy.
    let members: serde_json::Value = serde_json::from_str(&etcdctl(
        &cp1,
        &cp1.etcd_url(),
        &["member", "list", "-w", "json"],
    ))
    .unwrap();
    let members = members["members"].as_array().unwrap();
    let mut names: Vec<&str> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["cp1", "cp2", "cp3"]);
    assert!(
        members
            .iter()
            .all(|m| m.get("isLearner").is_none_or(|l| l == false)),
        "{members:?}"
    );
    let endpoints = [&cp1, &cp2, &cp3].map(|n| n.etcd_url()).join(",");
    let health = etcdctl(&cp2, &endpoints, &["endpoint", "health", "-w", "json"]);
    assert_eq!(health.matches("\"health\":true").count(), 3, "{health}");

    // Issue 11: a worker's credentials are no etcd client, even given the
    // etcd CA to trust; a control plane's node certificate is none either.
    for (node, ca) in [
        (&w1, w1.layout().ca_cert()),
        (&w1, cp1.layout().etcd_ca_cert()),
        (&cp2, cp2.layout().ca_cert()),
    ] {
        let l = node.layout();
        for args in [
            &["get", "--prefix", "/globular/"][..],
            &["put", "/globular/x", "y"],
            &["member", "list"],
        ] {
            let out = etcdctl_as((&ca, &l.node_cert(), &l.node_key()), &cp1.etcd_url(), args);
            assert!(
                out.is_err(),
                "{} read etcd with its node certificate: {out:?}",
                node.name
            );
        }
    }
    let keys = etcdctl(
        &cp1,
        &cp1.etcd_url(),
        &["get", "--prefix", "/globular/x", "--keys-only"],
    );
    assert!(keys.trim().is_empty(), "{keys}");
    // etcd's auth is on: even the substrate's etcd-CA certificate opens
    // nothing without its user's password, by gRPC or through the gateway.
    let status = etcdctl(&cp1, &cp1.etcd_url(), &["auth", "status"]);
    assert!(status.contains("Authentication Status: true"), "{status}");
    let l1 = cp1.layout();
    let substrate_cert = (
        l1.etcd_ca_cert(),
        l1.etcd_cert("client"),
        l1.etcd_key("client"),
    );
    let files = (
        substrate_cert.0.as_path(),
        substrate_cert.1.as_path(),
        substrate_cert.2.as_path(),
    );
    let out = etcdctl_as(files, &cp1.etcd_url(), &["get", "--prefix", "/globular/"]);
    assert!(out.is_err(), "the certificate alone read etcd: {out:?}");
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap();
    let anonymous = globular_substrate::etcd::Etcd::new(
        vec![cp1.etcd_url()],
        &read(&l1.etcd_ca_cert()),
        &read(&l1.etcd_cert("client")),
        &read(&l1.etcd_key("client")),
    )
    .unwrap();
    let rt = runtime();
    assert!(rt.block_on(anonymous.list("/globular/")).is_err());
    let wrong = anonymous
        .clone()
        .with_user(SUBSTRATE_USER, "not-the-password");
    assert!(rt.block_on(wrong.list("/globular/")).is_err());
    let substrate = anonymous.with_user(SUBSTRATE_USER, read(&l1.etcd_password()).trim());
    assert!(!rt
        .block_on(substrate.list("/globular/nodes/"))
        .unwrap()
        .is_empty());
    assert!(!w1.layout().etcd_ca_cert().exists() && !w1.layout().etcd_cert("client").exists());

    // Every issued certificate verifies against its CA.
    let ca = cluster.bundle_dir().join("ca.crt");
    let etcd_ca = cluster.bundle_dir().join("etcd-ca.crt");
    for node in [&cp1, &cp2, &cp3, &w1, &w2] {
        let l = node.layout();
        openssl_verify(&ca, &l.node_cert());
        if node.seed.node.role == Role::ControlPlane {
            for kind in ["server", "peer", "client"] {
                openssl_verify(&etcd_ca, &l.etcd_cert(kind));
            }
        }
    }

    // The registry lists all five, seen from a worker through the CLI.
    let out = Task::new("listing nodes", AGENT)
        .args(["node", "list", "--root"])
        .arg(&w2.root)
        .read_string()
        .unwrap();
    for name in ["cp1", "cp2", "cp3", "w1", "w2"] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} missing:\n{out}"
        );
    }
    let rt = runtime();
    let nodes = rt
        .block_on(node_cli::client(&cp3.layout()).unwrap().nodes())
        .unwrap()
        .nodes;
    assert_eq!(nodes.len(), 5);
    for n in &nodes {
        assert_eq!(n.image_version, "test-1");
        let node = [&cp1, &cp2, &cp3, &w1, &w2]
            .into_iter()
            .find(|x| x.name == n.name)
            .unwrap();
        let cert = std::fs::read_to_string(node.layout().node_cert()).unwrap();
        assert_eq!(n.certificate, cert, "{}", n.name);
        assert_eq!(n.role, node.seed.node.role);
    }

    // Any service can register, e.g. Kubernetes; every control-plane sees it.
    let registered = rt
        .block_on(
            node_cli::client(&w1.layout())
                .unwrap()
                .register(&RegisterRequest {
                    name: "kubernetes.KubernetesService".into(),
                    id: None,
                    address: "127.0.0.1".into(),
                    port: 6443,
                    protocol: "https".into(),
                    tags: vec!["apiserver".into()],
                    metadata: Default::default(),
                }),
        )
        .unwrap();
    assert_eq!(registered.node, "w1");
    // A worker cannot pose as the substrate or take over another node's entry.
    let w2_client = node_cli::client(&w2.layout()).unwrap();
    let register = |client: &Client, name: &str, id: Option<&str>| {
        rt.block_on(client.register(&RegisterRequest {
            name: name.into(),
            id: id.map(str::to_owned),
            address: "127.0.0.1".into(),
            port: 1,
            protocol: String::new(),
            tags: vec![],
            metadata: Default::default(),
        }))
        .map_err(|e| format!("{e:#}"))
    };
    let err = register(&w2_client, "globular.SubstrateApi", None).unwrap_err();
    assert!(err.contains("control-plane nodes only"), "{err}");
    let err = register(&w2_client, "kubernetes.KubernetesService", Some("w1")).unwrap_err();
    assert!(err.contains("belongs to node w1"), "{err}");
    let out = Task::new("listing services", AGENT)
        .args([
            "service",
            "list",
            "--name",
            "kubernetes.KubernetesService",
            "--root",
        ])
        .arg(&cp2.root)
        .read_string()
        .unwrap();
    assert!(
        out.contains("kubernetes.KubernetesService") && out.contains("127.0.0.1:6443"),
        "{out}"
    );
    let all = Task::new("listing services", AGENT)
        .args(["service", "list", "--root"])
        .arg(&w2.root)
        .read_string()
        .unwrap();
    assert_eq!(all.matches("globular.SubstrateApi").count(), 3, "{all}");
    // The DNS zone as the authority serves it, seen from a worker (dns.md).
    let zone = Task::new("showing the DNS zone", AGENT)
        .args(["dns", "--root"])
        .arg(&w2.root)
        .read_string()
        .unwrap();
    assert!(
        zone.lines().nth(1).is_some_and(|l| l.contains(" IN SOA ")),
        "{zone}"
    );
    assert_eq!(zone.matches(" IN NS ").count(), 3, "{zone}");
    assert!(zone.contains(" IN SRV 0 0 6443 "), "{zone}");

    // Tokens: control-plane only, and the new token enrolls a node.
    let denied = Task::new("creating a token from a worker", AGENT)
        .args([
            "token", "create", "--role", "worker", "--ttl", "1h", "--root",
        ])
        .arg(&w1.root)
        .run()
        .unwrap_err()
        .to_string();
    assert!(denied.contains("only control-plane"), "{denied}");
    let token = Task::new("creating a token", AGENT)
        .args([
            "token", "create", "--role", "worker", "--ttl", "1h", "--root",
        ])
        .arg(&cp2.root)
        .read_string()
        .unwrap();
    assert!(
        globular_cluster::token::BootstrapToken::parse(token.trim()).is_ok(),
        "{token}"
    );

    // Each node's network configuration comes from its seed.
    let network = std::fs::read_to_string(w1.network_dir().join("10-globular.network")).unwrap();
    assert!(
        network.contains(&format!("[Network]\nAddress={}\n", w1.address())),
        "{network}"
    );

    // The agent says where it found w2's seed.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w2.layout().state()).unwrap()).unwrap();
    let source = state["seed_source"].as_str().unwrap();
    assert!(
        source.starts_with("config drive") && source.ends_with("by-label/cidata"),
        "{source}"
    );

    // Renewal: mTLS identity, a CSR for its own name (here with a new key).
    let w1_client = node_cli::client(&w1.layout()).unwrap();
    let key = globular_cluster::pki::generate_key_pem().unwrap();
    let other = globular_cluster::pki::create_csr(&key, "w2").unwrap();
    let err = format!("{:#}", rt.block_on(w1_client.renew(&other)).unwrap_err());
    assert!(
        err.contains("403") && err.contains("caller is \"w1\""),
        "{err}"
    );
    let csr = globular_cluster::pki::create_csr(&key, "w1").unwrap();
    let renewed = rt.block_on(w1_client.renew(&csr)).unwrap();
    let id = globular_cluster::pki::identity_of_pem(&renewed.certificate).unwrap();
    assert_eq!(id.common_name, "w1");
    assert_eq!(id.role, Some(Role::Worker));
    let renewed_path = cluster.dir.path().join("w1-renewed.crt");
    std::fs::write(&renewed_path, &renewed.certificate).unwrap();
    openssl_verify(&ca, &renewed_path);
    // Issue 11: the renewed key is the only one the API accepts for w1.
    let err = format!("{:#}", rt.block_on(w1_client.nodes()).unwrap_err());
    assert!(err.contains("403") && err.contains("current key"), "{err}");
    let new_client = Client::with_ca(
        w1_client.endpoints().to_vec(),
        &std::fs::read_to_string(w1.layout().ca_cert()).unwrap(),
        Some((&renewed.certificate, &key)),
    )
    .unwrap();
    let nodes = rt.block_on(new_client.nodes()).unwrap().nodes;
    let record = nodes.iter().find(|n| n.name == "w1").unwrap();
    assert_eq!(record.cert_serial, id.serial);
    std::fs::write(w1.layout().node_key(), &key).unwrap();
    std::fs::write(w1.layout().node_cert(), &renewed.certificate).unwrap();

    // The CLI renews with the node's own key when asked early enough.
    let kept = Task::new("renewal not due", AGENT)
        .args(["cert", "renew", "--root"])
        .arg(&w2.root)
        .read_string()
        .unwrap();
    assert!(kept.contains("not renewed"), "{kept}");
    let old = globular_cluster::pki::identity_of_pem(
        &std::fs::read_to_string(w2.layout().node_cert()).unwrap(),
    )
    .unwrap();
    let out = Task::new("renewing", AGENT)
        .args(["cert", "renew", "--before", "400d", "--root"])
        .arg(&w2.root)
        .read_string()
        .unwrap();
    let new = globular_cluster::pki::identity_of_pem(
        &std::fs::read_to_string(w2.layout().node_cert()).unwrap(),
    )
    .unwrap();
    assert!(out.contains(&new.serial), "{out}");
    assert_ne!(new.serial, old.serial);
    assert_eq!(new.public_key_der, old.public_key_der);
    openssl_verify(&ca, &w2.layout().node_cert());
    let nodes = rt
        .block_on(node_cli::client(&w2.layout()).unwrap().nodes())
        .unwrap()
        .nodes;
    assert_eq!(
        nodes.iter().find(|n| n.name == "w2").unwrap().cert_serial,
        new.serial
    );

    // On a control-plane node, renewal covers etcd's certificates; etcd and
    // the API serve the new files on the next handshake.
    let cert_serial = |path: &std::path::Path| {
        globular_cluster::pki::identity_of_pem(&std::fs::read_to_string(path).unwrap())
            .unwrap()
            .serial
    };
    let l3 = cp3.layout();
    let files = [
        l3.node_cert(),
        l3.etcd_cert("server"),
        l3.etcd_cert("peer"),
        l3.etcd_cert("client"),
    ];
    let before = files.clone().map(|p| cert_serial(&p));
    let out = Task::new("renewing a control-plane node", AGENT)
        .args(["cert", "renew", "--before", "400d", "--root"])
        .arg(&cp3.root)
        .read_string()
        .unwrap();
    let after = files.clone().map(|p| cert_serial(&p));
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(old, new, "{out}");
        assert!(out.contains(new.as_str()), "{out}");
    }
    for kind in ["server", "peer", "client"] {
        openssl_verify(&etcd_ca, &l3.etcd_cert(kind));
    }
    let served = |addr: &str, (cert, key): (std::path::PathBuf, std::path::PathBuf)| {
        let text = Task::new("reading a served certificate", "openssl")
            .args(["s_client", "-connect", addr, "-cert"])
            .arg(cert)
            .arg("-key")
            .arg(key)
            .stdin("")
            .read_string()
            .unwrap();
        let pem = &text[text.find("-----BEGIN CERTIFICATE-----").unwrap()
            ..text.find("-----END CERTIFICATE-----").unwrap() + 25];
        globular_cluster::pki::identity_of_pem(pem).unwrap().serial
    };
    let w1_id = (w1.layout().node_cert(), w1.layout().node_key());
    assert_eq!(served(&cp3.api(), w1_id), after[0]);
    let etcd_addr = cp3.etcd_url().trim_start_matches("https://").to_owned();
    let cp3_etcd = (l3.etcd_cert("client"), l3.etcd_key("client"));
    assert_eq!(served(&etcd_addr, cp3_etcd), after[1]);
    let health = etcdctl(&cp3, &cp3.etcd_url(), &["endpoint", "health", "-w", "json"]);
    assert!(health.contains("\"health\":true"), "{health}");

    // Running the agent on an enrolled node changes nothing.
    let before = std::fs::read(cp2.layout().state()).unwrap();
    let cert = std::fs::read(cp2.layout().node_cert()).unwrap();
    cluster.run_agent(&cp2).unwrap();
    assert_eq!(std::fs::read(cp2.layout().state()).unwrap(), before);
    assert_eq!(std::fs::read(cp2.layout().node_cert()).unwrap(), cert);
}

/// A cluster made with a longer etcd heartbeat (`builder cluster new
/// --etcd-heartbeat`): the bootstrap member and a joining one both run
/// real etcd with it and its election timeout, ten heartbeats.
#[test]
fn etcd_members_run_with_the_clusters_raft_timing() {
    let cluster = Cluster::new_with(&globular_cluster::secrets::ClusterExtras {
        etcd_heartbeat_ms: 300,
        ..globular_cluster::secrets::ClusterExtras::default()
    });
    let cp1 = cluster.node("cp1", Role::ControlPlane, true, &[]);
    cluster.run_agent(&cp1).unwrap();
    let cp2 = cluster.node("cp2", Role::ControlPlane, false, &[cp1.api()]);
    cluster.run_agent(&cp2).unwrap();
    for node in [&cp1, &cp2] {
        let config = std::fs::read_to_string(node.layout().etcd_config()).unwrap();
        assert!(config.contains("heartbeat-interval: 300\n"), "{config}");
        assert!(config.contains("election-timeout: 3000\n"), "{config}");
        // What etcd itself says it runs with, in its start-up line.
        let log = node.layout().log_dir().join("etcd.log");
        let log = std::fs::read_to_string(&log).unwrap();
        assert!(
            log.contains(r#""heartbeat-interval":"300ms""#)
                && log.contains(r#""election-timeout":"3s""#),
            "{}: {log}",
            node.layout().log_dir().display()
        );
    }
}
