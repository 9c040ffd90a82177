//! kill -9 of the agent at every checkpoint, then a restart: the node
//! converges to the same enrolled state, with no duplicate etcd member and no
//! second certificate for the same key.

use globular_cluster::Role;
use globular_firstboot::agent::Step;
use globular_firstboot::node_cli;

use crate::harness::{etcdctl, kill_spawned, runtime, Cluster, Node};

/// Runs the agent of `node` once per step, killing it (SIGKILL) after the
/// step's work and before its checkpoint; then lets it finish. At
/// `power_loss`, the node's etcd and API are killed too.
fn crash_through(cluster: &mut Cluster, node: &Node, power_loss: Option<Step>) {
    let mut first_cert: Option<Vec<u8>> = None;
    let mut paused = 0;
    for step in Step::plan(&node.seed) {
        let agent = cluster.start_paused(node, step.name());
        if cluster.wait_paused(node, agent) {
            cluster.kill_agent(agent);
            paused += 1;
            if power_loss == Some(step) {
                kill_spawned(&node.root);
            }
        }
        if let (None, Ok(cert)) = (&first_cert, std::fs::read(node.layout().node_cert())) {
            first_cert = Some(cert);
        }
    }
    assert!(
        paused >= Step::plan(&node.seed).len() - 1,
        "{} paused only {paused} times",
        node.name
    );
    cluster.run_agent(node).unwrap();
    assert!(node.layout().enrolled().exists());
    assert_eq!(
        std::fs::read(node.layout().node_cert()).ok(),
        first_cert,
        "{} got a second certificate",
        node.name
    );
}

#[test]
fn kill_at_every_checkpoint_converges() {
    let mut cluster = Cluster::new();
    let cp1 = cluster.node("cp1", Role::ControlPlane, true, &[]);
    crash_through(&mut cluster, &cp1, Some(Step::ApiStarted));
    let join = vec![cp1.api()];
    let cp2 = cluster.node("cp2", Role::ControlPlane, false, &join);
    crash_through(&mut cluster, &cp2, Some(Step::EtcdPromoted));
    let w1 = cluster.node("w1", Role::Worker, false, &join);
    crash_through(&mut cluster, &w1, None);

    // One etcd member per control-plane node, all started and voting.
    let members: serde_json::Value = serde_json::from_str(&etcdctl(
        &cp1,
        &cp1.etcd_url(),
        &["member", "list", "-w", "json"],
    ))
    .unwrap();
    let members = members["members"].as_array().unwrap();
    let mut names: Vec<&str> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap_or(""))
        .collect();
    names.sort();
    assert_eq!(names, ["cp1", "cp2"], "{members:?}");
    assert!(
        members
            .iter()
            .all(|m| m.get("isLearner").is_none_or(|l| l == false)),
        "{members:?}"
    );

    // The registry holds each node once, with the certificate it has on disk.
    let rt = runtime();
    let nodes = rt
        .block_on(node_cli::client(&w1.layout()).unwrap().nodes())
        .unwrap()
        .nodes;
    assert_eq!(nodes.len(), 3);
    for node in [&cp1, &cp2, &w1] {
        let record = nodes.iter().find(|n| n.name == node.name).unwrap();
        let cert = std::fs::read_to_string(node.layout().node_cert()).unwrap();
        assert_eq!(record.certificate, cert, "{}", node.name);
    }

    // Once more on an enrolled node: nothing changes.
    let state = std::fs::read(cp2.layout().state()).unwrap();
    cluster.run_agent(&cp2).unwrap();
    assert_eq!(std::fs::read(cp2.layout().state()).unwrap(), state);
}
