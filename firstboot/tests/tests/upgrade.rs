//! Issue 14, the gate of an upgrade by reimaging: `globular node wait`
//! against a real substrate (etcd, the API, the health loop) says a control
//! plane is back only once it runs the image version asked for and its
//! health loop checked its services since it enrolled, and otherwise fails
//! with a non-zero exit naming what is missing.

use std::process::Output;

use globular_cluster::Role;

use crate::harness::{Cluster, Node, AGENT};

fn wait(via: &Node, node: &str, version: &str, timeout: &str) -> Output {
    std::process::Command::new(AGENT)
        .args(["node", "wait", node, "--image-version", version])
        .args(["--timeout", timeout, "--root"])
        .arg(&via.root)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn node_wait_passes_only_for_the_image_asked_and_a_checked_node() {
    let cluster = Cluster::new();
    let cp1 = cluster.node("cp1", Role::ControlPlane, true, &[]);
    cluster.run_agent(&cp1).unwrap();

    // Another image than the node's: the upgrade stops here.
    let out = wait(&cp1, "cp1", "9.9.9", "2s");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "cp1 is not back at 9.9.9 after 2 s: cp1 runs image {}, not 9.9.9",
            cp1.image_version
        )),
        "{}",
        text(&out)
    );
    // A name that never enrolled.
    let out = wait(&cp1, "cp9", &cp1.image_version, "1s");
    assert!(!out.status.success());
    assert!(text(&out).contains("cp9 is not enrolled"), "{}", text(&out));

    // Enrolled from that image, but no round of the health loop yet.
    let out = wait(&cp1, "cp1", &cp1.image_version, "2s");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("globular.Etcd not checked since the enrollment"),
        "{}",
        text(&out)
    );

    // The loop checks and records both services: back.
    let _watch = cluster.start_health_loop(&cp1);
    let out = wait(&cp1, "cp1", &cp1.image_version, "60s");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("cp1 is back at {}", cp1.image_version)),
        "{}",
        text(&out)
    );
}
