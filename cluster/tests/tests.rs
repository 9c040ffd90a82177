//! Integration tests of the shared schemas, checked with the real tools
//! (`openssl`, `fsck.vfat`, mtools).

#[path = "tests/cidata.rs"]
mod cidata;
#[path = "tests/pki.rs"]
mod pki;

use std::path::Path;

use globular_cluster::secrets::{self, ClusterSecrets, NewCluster, SeedOptions};
use globular_cluster::seed::Ports;
use globular_cluster::Role;

fn bundle(dir: &Path) -> ClusterSecrets {
    secrets::create(&NewCluster {
        name: "demo".into(),
        out: dir.join("cluster"),
        endpoints: vec!["127.0.0.1:10016".into()],
        token_ttl: time::Duration::hours(1),
        policy: Default::default(),
    })
    .unwrap()
}

fn seed_options(node: &str, role: Role, bootstrap: bool) -> SeedOptions {
    SeedOptions {
        node: node.into(),
        role,
        addresses: vec!["127.0.0.1/8".into()],
        gateway: None,
        bootstrap,
        endpoints: vec![],
        ports: Ports::default(),
        token: None,
        ticket_ttl: secrets::TICKET_TTL,
        packages: None,
    }
}
