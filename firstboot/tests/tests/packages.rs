//! Packages whose new version drops a component: `globular apply` retires
//! it (stops it, removes its command line) so that neither the run nor the
//! health loop starts it again, and keeps the components that stay.

use std::path::Path;

use globular_cluster::Role;
use globular_task::Task;

use crate::harness::{Cluster, Node, AGENT};

/// A control-plane package whose components wait forever: `tail -f` of a
/// file under the node's root (the agent knows its spawned processes by
/// their pid file and a command line naming the root).
fn spec(dir: &Path, node: &Node, components: &[&str]) -> std::path::PathBuf {
    let file = node.root.join("sleepers.log");
    std::fs::write(&file, "").unwrap();
    let mut text = String::from(
        "apiVersion: globular/v1\nkind: Package\nname: sleepers\nversion: '1'\nrole: control-plane\ncomponents:\n",
    );
    if components.is_empty() {
        text = text.replace("components:\n", "components: []\n");
    }
    for c in components {
        text.push_str(&format!(
            "  - name: {c}\n    program: /usr/bin/tail\n    args: ['-f', '{}']\n",
            file.display()
        ));
    }
    let path = dir.join(format!("sleepers-{}.yaml", components.join("-")));
    std::fs::write(&path, text).unwrap();
    path
}

fn apply(node: &Node, spec: &Path, extra: &[&str]) -> String {
    Task::new("applying the sleepers package", AGENT)
        .arg("apply")
        .arg(spec)
        .arg("--root")
        .arg(&node.root)
        .args(["--services", "spawn", "--wait", "30"])
        .args(extra)
        .read_string()
        .unwrap()
}

/// The pid of a spawned component that runs (not a zombie), from its pid
/// file.
fn running(node: &Node, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(node.root.join(format!("run/component-{name}.pid"))).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Whether `pid` is gone within 10 s: a stopped component may still be
/// exiting for a moment after `apply` returns (the agent counts it gone
/// once its memory is released, before it is a zombie).
fn gone(pid: u32) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while alive(pid) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    true
}

#[test]
fn a_component_dropped_by_a_new_version_is_retired() {
    let cluster = Cluster::new();
    let cp1 = cluster.node("cp1", Role::ControlPlane, true, &[]);
    cluster.run_agent(&cp1).unwrap();
    let dir = cluster.dir.path();
    let commands = cp1.root.join("packages/sleepers/components");

    let out = apply(&cp1, &spec(dir, &cp1, &["keeper", "dropped"]), &[]);
    assert!(
        out.contains("start keeper") && out.contains("start dropped"),
        "{out}"
    );
    let dropped = running(&cp1, "dropped").expect("dropped runs");
    assert!(running(&cp1, "keeper").is_some(), "keeper does not run");

    // The plan says what the new version would do, and does nothing.
    let smaller = spec(dir, &cp1, &["keeper"]);
    let plan = apply(&cp1, &smaller, &["--plan"]);
    assert!(plan.contains("would retire dropped"), "{plan}");
    assert!(!plan.contains("keeper"), "{plan}");
    assert_eq!(running(&cp1, "dropped"), Some(dropped));
    assert!(commands.join("dropped.json").is_file());

    let out = apply(&cp1, &smaller, &[]);
    assert!(out.contains("retire dropped"), "{out}");
    assert!(!out.contains("keeper"), "{out}");
    assert!(gone(dropped), "dropped (pid {dropped}) still runs");
    assert!(running(&cp1, "dropped").is_none());
    assert!(!commands.join("dropped.json").exists());
    assert!(running(&cp1, "keeper").is_some(), "keeper was stopped");

    // Applying it again changes nothing; nothing starts the retired one.
    let out = apply(&cp1, &smaller, &[]);
    assert!(out.starts_with("no changes"), "{out}");
    assert!(running(&cp1, "dropped").is_none());

    // A version without components retires the last one.
    let keeper = running(&cp1, "keeper").expect("keeper runs");
    let out = apply(&cp1, &spec(dir, &cp1, &[]), &[]);
    assert!(out.contains("retire keeper"), "{out}");
    assert!(gone(keeper), "keeper (pid {keeper}) still runs");
}
