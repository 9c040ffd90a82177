//! Schemas shared by the Globular builder and the node agent, defined once:
//!
//! - [`pki`]: the cluster CA, node keys, CSRs and the certificates the CA issues;
//! - [`token`]: kubeadm-style bootstrap tokens and the records that validate them;
//! - [`secrets`]: the offline cluster secrets bundle (`builder cluster new`);
//! - [`seed`]: the per-node seed YAML (`builder seed`) and [`cidata`], the
//!   NoCloud-style config drive that carries it;
//! - [`ticket`]: enrollment tickets, signed by the CA holder per node;
//! - [`registry`]: node and service records and their etcd key layout;
//! - [`protocol`]: the enrollment API's requests, responses and routes;
//! - [`etcd_auth`]: etcd's users and roles, and the substrate's etcd password;
//! - [`fsutil`]: the one atomic-write helper; [`logging`]: the binaries'
//!   logging setup.

pub mod backup;
pub mod cidata;
pub mod etcd_auth;
pub mod etcd_timing;
pub mod fsutil;
pub mod logging;
pub mod pki;
pub mod protocol;
pub mod registry;
pub mod restore;
pub mod secrets;
pub mod seed;
pub mod ticket;
pub mod token;

use serde::{Deserialize, Serialize};

/// The role of a node in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Runs etcd, the substrate API and holds the CA key.
    ControlPlane,
    /// An etcd client only.
    Worker,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::ControlPlane, Role::Worker];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "control-plane" => Ok(Role::ControlPlane),
            "worker" => Ok(Role::Worker),
            _ => Err(format!(
                "unknown role {s:?} (expected control-plane or worker)"
            )),
        }
    }
}

/// Whether `name` is a valid node name: a lowercase DNS label.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Port of the DNS authority on control-plane nodes (UDP and TCP).
pub const DNS_PORT: u16 = 53;

/// Default TCP port of the substrate API.
pub const API_PORT: u16 = 10016;
/// Default etcd client port.
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// Default etcd peer port.
pub const ETCD_PEER_PORT: u16 = 2380;
