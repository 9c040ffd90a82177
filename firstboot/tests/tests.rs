//! Integration tests of the node agent: real etcd (3.6, built from
//! `components/etcd` by `scripts/install-deps.sh`) and the real `globular` binary on loopback ports, each node with its own
//! temporary state directory.

#[path = "tests/harness.rs"]
mod harness;
#[path = "../../substrate/tests/tests/ports.rs"]
mod ports;

#[path = "tests/backup.rs"]
mod backup;
#[path = "tests/bench.rs"]
mod bench;
#[path = "tests/boot.rs"]
mod boot;
#[path = "tests/cluster.rs"]
mod cluster;
#[path = "tests/crash.rs"]
mod crash;
#[path = "tests/health.rs"]
mod health;
#[path = "tests/images.rs"]
mod images;
#[path = "tests/kubernetes.rs"]
mod kubernetes;
#[path = "tests/packages.rs"]
mod packages;
#[path = "tests/refusals.rs"]
mod refusals;
#[path = "tests/reimage.rs"]
mod reimage;
#[path = "tests/rotation.rs"]
mod rotation;
#[path = "tests/upgrade.rs"]
mod upgrade;
