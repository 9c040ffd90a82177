//! The node names of the zone, `<node>.<zone>` with the node's addresses,
//! in a persistent map: the follower changes it one address at a time and
//! every published zone shares it (a clone is a pointer copy), so a crowd of
//! enrollments costs the DNS one insert each, not one rebuild of every
//! node's records per published zone.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::{Name, Record};

use super::zone::{address, Entry};

/// What the zone needs of a node: its name and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneNode {
    pub name: String,
    /// `IP/PREFIX`, as the node record has them.
    pub addresses: Vec<String>,
}

/// `<node>.<zone>` → its A/AAAA records, for the nodes that have an
/// address.
#[derive(Debug, Clone)]
pub struct NodeNames {
    origin: Name,
    entries: imbl::HashMap<Name, Arc<Entry>>,
}

impl NodeNames {
    /// No nodes yet, in the zone `origin`.
    pub fn new(origin: Name) -> NodeNames {
        NodeNames {
            origin,
            entries: imbl::HashMap::new(),
        }
    }

    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// `<node>.<zone>`, if the node's name is a DNS label.
    pub fn name_of(&self, node: &str) -> Option<Name> {
        Name::from_labels([node.as_bytes()])
            .and_then(|n| n.append_domain(&self.origin))
            .ok()
    }

    /// Sets the records of `node`'s name to its addresses.
    pub fn put(&mut self, node: &ZoneNode) {
        self.set(&node.name, node.addresses.iter().filter_map(|a| node_ip(a)));
    }

    /// Sets the records of the name of the node called `node` to `ips` (a
    /// node with no address, or whose name is no DNS label, has no name in
    /// the zone).
    pub fn set(&mut self, node: &str, ips: impl IntoIterator<Item = IpAddr>) {
        let Some(name) = self.name_of(node) else {
            tracing::debug!("node {node:?} has no DNS name");
            return;
        };
        let mut entry = Entry::default();
        for ip in ips {
            entry.add(address(&name, ip));
        }
        if entry.is_empty() {
            self.entries.remove(&name);
        } else {
            self.entries.insert(name, Arc::new(entry));
        }
    }

    pub(super) fn get(&self, name: &Name) -> Option<&Entry> {
        self.entries.get(name).map(|e| &**e)
    }

    pub(super) fn contains(&self, name: &Name) -> bool {
        self.entries.contains_key(name)
    }

    /// The A and AAAA records of `name`.
    pub(super) fn addresses(&self, name: &Name) -> Vec<Record> {
        self.get(name)
            .map(|e| e.records().cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().map(|e| &**e)
    }
}

/// The IP of a node record's `IP/PREFIX` address.
fn node_ip(cidr: &str) -> Option<IpAddr> {
    cidr.split('/').next()?.parse().ok()
}
