//! Issue 6, "reimage": a control-plane node whose disk was replaced boots
//! with the same seed and enrolls again under its own name. Its stale etcd
//! member is removed and it joins as a learner and is promoted; its old
//! certificate is superseded in the registry and refused by the API.

use globular_cluster::pki;
use globular_cluster::Role;
use globular_firstboot::node_cli;

use crate::harness::{etcdctl, kill_spawned, openssl_verify, runtime, Cluster, Node};

/// The etcd members as (name, id, is learner), sorted by name.
fn members(via: &Node) -> Vec<(String, u64, bool)> {
    let out: serde_json::Value = serde_json::from_str(&etcdctl(
        via,
        &via.etcd_url(),
        &["member", "list", "-w", "json"],
    ))
    .unwrap();
    let mut members: Vec<(String, u64, bool)> = out["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_owned(),
                m["ID"].as_u64().unwrap(),
                m.get("isLearner").is_some_and(|l| l == true),
            )
        })
        .collect();
    members.sort();
    members
}

#[test]
fn reimaged_control_plane_rejoins_under_its_name() {
    let cluster = Cluster::new();
    let cp1 = cluster.node("cp1", Role::ControlPlane, true, &[]);
    cluster.run_agent(&cp1).unwrap();
    let join = vec![cp1.api()];
    let cp2 = cluster.node("cp2", Role::ControlPlane, false, &join);
    let cp3 = cluster.node("cp3", Role::ControlPlane, false, &join);
    cluster.run_agent(&cp2).unwrap();
    cluster.run_agent(&cp3).unwrap();
    let before = members(&cp1);
    assert_eq!(before.len(), 3, "{before:?}");
    let old_cp3_id = before.iter().find(|m| m.0 == "cp3").unwrap().1;

    // Keep the old disk's identity aside, to try it once it is superseded.
    let old = cluster.dir.path().join("cp3-old.root");
    std::fs::create_dir_all(old.join("pki")).unwrap();
    for file in ["node.json", "pki/ca.crt", "pki/node.crt", "pki/node.key"] {
        std::fs::copy(cp3.root.join(file), old.join(file)).unwrap();
    }
    let old_serial =
        pki::identity_of_pem(&std::fs::read_to_string(old.join("pki/node.crt")).unwrap())
            .unwrap()
            .serial;

    // A new disk: etcd and the API die with the old one, the state is gone.
    kill_spawned(&cp3.root);
    std::fs::remove_dir_all(&cp3.root).unwrap();
    std::fs::remove_dir_all(cp3.network_dir()).unwrap();
    let cp3 = Node {
        image_version: "test-2".into(),
        ..cp3
    };
    cluster.run_agent(&cp3).unwrap();

    // etcd: three healthy voting members, cp3 once, with a new member id.
    let after = members(&cp1);
    let names: Vec<&str> = after.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(names, ["cp1", "cp2", "cp3"], "{after:?}");
    assert!(after.iter().all(|m| !m.2), "a learner is left: {after:?}");
    assert_ne!(after[2].1, old_cp3_id, "cp3 kept its stale member");
    let endpoints = [&cp1, &cp2, &cp3].map(|n| n.etcd_url()).join(",");
    let health = etcdctl(&cp3, &endpoints, &["endpoint", "health", "-w", "json"]);
    assert_eq!(health.matches("\"health\":true").count(), 3, "{health}");

    // The registry: one record for cp3, with the new image and certificate,
    // and the old certificate recorded as superseded.
    let rt = runtime();
    let nodes = rt
        .block_on(node_cli::client(&cp3.layout()).unwrap().nodes())
        .unwrap()
        .nodes;
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["cp1", "cp2", "cp3"]);
    let record = nodes.iter().find(|n| n.name == "cp3").unwrap();
    let cert = std::fs::read_to_string(cp3.layout().node_cert()).unwrap();
    assert_eq!(record.certificate, cert);
    assert_eq!(record.image_version, "test-2");
    assert_eq!(record.superseded.len(), 1);
    assert_eq!(record.superseded[0].cert_serial, old_serial);
    assert_ne!(record.cert_serial, old_serial);
    openssl_verify(
        &cluster.bundle_dir().join("ca.crt"),
        &cp3.layout().node_cert(),
    );

    // The old disk's certificate no longer works against the API.
    let err = format!(
        "{:#}",
        rt.block_on(
            node_cli::client(&globular_firstboot::layout::Layout::new(&old))
                .unwrap()
                .nodes()
        )
        .unwrap_err()
    );
    assert!(
        err.contains("403") && err.contains("not of its current key"),
        "{err}"
    );

    // The rejoined node serves the API again (the registry above was read
    // through it: its own endpoint comes first) and registered it once.
    let config = cp3.layout().load_node_config().unwrap();
    assert_eq!(config.api_endpoints[0], cp3.api());
    let apis = rt
        .block_on(
            node_cli::client(&cp1.layout())
                .unwrap()
                .services(Some(globular_cluster::registry::API_SERVICE)),
        )
        .unwrap()
        .services;
    let ids: Vec<&str> = apis.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["cp1", "cp2", "cp3"]);
}
