//! Every boot of an image: `/etc` is read-only and `/run` and the kernel's
//! hostname start empty, so the agent applies the seed's network
//! configuration and hostname on every run, from the seed it stored at first
//! boot, and changes nothing else on an enrolled node.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use globular_cluster::Role;

use crate::harness::{Cluster, Node};

/// Every file under `root` with its content and mode, except what the
/// services own (etcd's data, spawned services' logs and pid files).
fn durable_files(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, (Vec<u8>, u32)>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_owned();
            if ["etcd/data", "log", "run"]
                .iter()
                .any(|p| rel == Path::new(p))
            {
                continue;
            }
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                walk(&path, root, out);
            } else {
                let mode = meta.permissions().mode() & 0o7777;
                out.insert(rel, (std::fs::read(&path).unwrap(), mode));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn network_file(node: &Node) -> PathBuf {
    node.network_dir()
        .join(globular_firstboot::agent::NETWORK_FILE)
}

fn assert_applied(node: &Node) {
    assert_eq!(
        node.hostname().as_deref(),
        Some(format!("{}\n", node.name).as_str())
    );
    let network = std::fs::read_to_string(network_file(node)).unwrap();
    assert!(
        network.contains(&format!("[Network]\nAddress={}\n", node.address())),
        "{network}"
    );
}

/// A reboot as the agent sees it: `/run` (the network directory) and the
/// kernel hostname are gone, and the seed drive or file is no longer there.
fn reboot(node: &Node) {
    std::fs::remove_dir_all(node.network_dir()).unwrap();
    std::fs::remove_file(node.sysroot.join("proc/sys/kernel/hostname")).unwrap();
    if node.seed_on_drive {
        std::fs::remove_dir_all(node.sysroot.join("dev")).unwrap();
    } else {
        std::fs::remove_file(&node.seed_path).unwrap();
    }
}

#[test]
fn every_boot_applies_network_and_hostname_from_the_stored_seed() {
    let cluster = Cluster::new();
    let cp1 = cluster.node("cp1", Role::ControlPlane, true, &[]);
    cluster.run_agent(&cp1).unwrap();
    let w1 = cluster.node_with_drive("w1", Role::Worker, &[cp1.api()]);
    cluster.run_agent(&w1).unwrap();

    for node in [&cp1, &w1] {
        assert_applied(node);
        // The stored seed holds on control-plane nodes the CA keys: 0600.
        // Once enrolled it no longer holds the token or the ticket (issue 11).
        let mode = std::fs::metadata(node.layout().seed())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", node.name);
        let stored = std::fs::read_to_string(node.layout().seed()).unwrap();
        let stored = globular_cluster::seed::Seed::parse(&stored, "stored seed").unwrap();
        assert!(stored.joined, "{}", node.name);
        assert!(
            stored.token.is_none() && stored.ticket.is_none(),
            "{}",
            node.name
        );
        if node.name == "w1" {
            let given = globular_cluster::seed::Seed::parse(
                &std::fs::read_to_string(&node.seed_path).unwrap_or_else(|_| node.seed.to_yaml()),
                "seed",
            )
            .unwrap();
            assert!(given.token.is_some() && given.ticket.is_some());
        }

        let before = durable_files(&node.root);
        reboot(node);
        cluster.run_agent(node).unwrap();
        assert_applied(node);
        assert_eq!(
            durable_files(&node.root),
            before,
            "{}: a later boot changed durable state",
            node.name
        );
        // Run again in the same boot: nothing to do, nothing rewritten.
        let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let network_mtime = mtime(&network_file(node));
        cluster.run_agent(node).unwrap();
        assert_eq!(mtime(&network_file(node)), network_mtime);
    }
}
