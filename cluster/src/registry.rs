//! Registry records and their etcd key layout.
//!
//! Every control-plane node serves the same truth because all of it lives in
//! etcd, as JSON values under these keys:
//!
//! | key | value |
//! |---|---|
//! | `/globular/cluster` | [`ClusterRecord`] |
//! | `/globular/nodes/<node>` | [`NodeRecord`] |
//! | `/globular/tokens/<token id>` | [`crate::token::TokenRecord`] |
//! | `/globular/services/<service name>/<instance id>` | [`ServiceRecord`] |

use serde::{Deserialize, Serialize};

use crate::Role;

/// Prefix of every key the substrate writes.
pub const PREFIX: &str = "/globular/";

/// Service name under which each control-plane node registers its API.
pub const API_SERVICE: &str = "globular.SubstrateApi";
/// Service name under which each control-plane node registers its etcd.
pub const ETCD_SERVICE: &str = "globular.Etcd";
/// Service names only control-plane nodes may register: joiners and the
/// node CLI find the substrate through them.
pub const RESERVED_PREFIX: &str = "globular.";

pub fn cluster_key() -> String {
    format!("{PREFIX}cluster")
}

pub fn node_key(name: &str) -> String {
    format!("{PREFIX}nodes/{name}")
}

pub fn nodes_prefix() -> String {
    format!("{PREFIX}nodes/")
}

pub fn token_key(id: &str) -> String {
    format!("{PREFIX}tokens/{id}")
}

pub fn service_key(name: &str, instance: &str) -> String {
    format!("{PREFIX}services/{name}/{instance}")
}

pub fn services_prefix() -> String {
    format!("{PREFIX}services/")
}

/// Facts about the cluster, written once at bootstrap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub name: String,
    pub id: String,
    pub ca_cert_hash: String,
}

/// An enrolled node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub role: Role,
    /// CIDR addresses from the seed.
    pub addresses: Vec<String>,
    pub image_version: String,
    /// Serial (hex) of the node's current certificate.
    pub cert_serial: String,
    /// `sha256:` of the node's public key: one certificate per key.
    pub key_id: String,
    /// The current certificate (PEM), returned again if the same key enrolls twice.
    pub certificate: String,
    /// Unix time of enrollment.
    pub enrolled_at: i64,
    /// Unix time of the last certificate (enrollment or renewal).
    pub renewed_at: i64,
    /// The certificates (keys) this name had before it was enrolled again
    /// with a new key (a wiped or reimaged node), oldest first, at most
    /// [`MAX_SUPERSEDED`]. The substrate API refuses them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<Superseded>,
}

/// How many superseded certificates a node record remembers.
pub const MAX_SUPERSEDED: usize = 16;

/// A certificate of a node that was replaced by a re-enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Superseded {
    /// Serial (hex) of the replaced certificate.
    pub cert_serial: String,
    /// `sha256:` of its public key: every certificate of that key is refused.
    pub key_id: String,
    /// Unix time of the re-enrollment.
    pub superseded_at: i64,
}

impl NodeRecord {
    /// This record after the node enrolled again as `new`: `new`, with the
    /// history of this one and this one's certificate marked superseded.
    pub fn reenrolled(self, mut new: NodeRecord) -> NodeRecord {
        new.superseded = self.superseded;
        new.superseded.push(Superseded {
            cert_serial: self.cert_serial,
            key_id: self.key_id,
            superseded_at: new.enrolled_at,
        });
        let excess = new.superseded.len().saturating_sub(MAX_SUPERSEDED);
        new.superseded.drain(..excess);
        new
    }

    /// Whether a certificate for the key `key_id` was superseded.
    pub fn is_superseded(&self, key_id: &str) -> bool {
        self.superseded.iter().any(|s| s.key_id == key_id)
    }
}

/// A registered service instance, e.g. `kubernetes.KubernetesService`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Fully qualified service name (`kubernetes.KubernetesService`).
    pub name: String,
    /// Instance id, unique per service (defaults to the node name).
    pub id: String,
    /// Node that registered it (from the caller's certificate).
    pub node: String,
    pub address: String,
    pub port: u16,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Unix time of the registration.
    pub registered_at: i64,
}
