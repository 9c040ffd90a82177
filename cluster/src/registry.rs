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
//! | `/globular/addresses/<ip>` | the name of the node that owns the address |

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

/// The owner of an address: written with the node record that lists it, so
/// two nodes never hold the same address.
pub fn address_key(ip: &std::net::IpAddr) -> String {
    format!("{PREFIX}addresses/{ip}")
}

pub fn addresses_prefix() -> String {
    format!("{PREFIX}addresses/")
}

/// The last scheduled backup and its copies (`globular backup run`).
pub fn backup_status_key() -> String {
    format!("{PREFIX}backups/latest")
}

/// A cluster-wide lock (a key bound to its holder's lease), such as
/// `packages/NAME`: control planes start a package one at a time.
pub fn lock_key(name: &str) -> String {
    format!("{PREFIX}locks/{name}")
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
    /// How enrollment treats addresses; the defaults are the strict rules.
    #[serde(default)]
    pub policy: EnrollmentPolicy,
    /// The DNS domain the cluster's zone is under ([`zone_name`]).
    #[serde(default = "default_domain")]
    pub domain: String,
    /// How long the certificates the cluster issues are valid, in seconds.
    #[serde(default = "crate::pki::default_lifetime_seconds")]
    pub certificate_lifetime: u64,
}

impl ClusterRecord {
    pub fn certificate_lifetime(&self) -> time::Duration {
        crate::seed::lifetime_of(self.certificate_lifetime)
    }
}

/// The domain a cluster's DNS zone is under unless `builder cluster new
/// --domain` says otherwise: the zone is `<cluster>.<domain>`. `.internal`
/// is reserved for private use (ICANN, 2024): it never resolves publicly.
pub const DEFAULT_DOMAIN: &str = "globular.internal";

pub fn default_domain() -> String {
    DEFAULT_DOMAIN.to_owned()
}

pub fn is_default_domain(domain: &str) -> bool {
    domain == DEFAULT_DOMAIN
}

/// Whether `domain` can hold cluster zones: lowercase DNS labels joined by
/// dots, no trailing dot, short enough that `<cluster>.<domain>` and the
/// names under it fit in 253 characters.
pub fn valid_domain(domain: &str) -> bool {
    !domain.is_empty() && domain.len() <= 120 && domain.split('.').all(crate::valid_node_name)
}

/// The cluster's DNS zone: `<cluster>.<domain>` (no trailing dot).
pub fn zone_name(cluster: &str, domain: &str) -> String {
    format!("{cluster}.{domain}")
}

/// How the substrate API checks the addresses a joiner asks for. Chosen at
/// `builder cluster new`, carried by the seeds into the cluster record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollmentPolicy {
    /// The enrollment connection must come from one of the addresses the
    /// node asks for. Off for clusters whose joiners reach the API through
    /// NAT or a proxy.
    pub require_source_address: bool,
    /// Loopback addresses may be enrolled: only for clusters whose nodes all
    /// run on one host (the project's own integration tests).
    pub allow_loopback: bool,
    /// At most this many addresses per node.
    pub max_addresses: usize,
}

/// The most addresses a policy may allow per node.
pub const MAX_ADDRESSES: usize = 16;

impl Default for EnrollmentPolicy {
    fn default() -> EnrollmentPolicy {
        EnrollmentPolicy {
            require_source_address: true,
            allow_loopback: false,
            max_addresses: 4,
        }
    }
}

impl EnrollmentPolicy {
    pub fn is_default(&self) -> bool {
        *self == EnrollmentPolicy::default()
    }

    /// Why `ip` cannot be a node address under this policy, if it cannot.
    pub fn refuses(&self, ip: std::net::IpAddr) -> Option<&'static str> {
        use std::net::IpAddr;
        if ip.is_unspecified() {
            return Some("unspecified");
        }
        if ip.is_multicast() {
            return Some("multicast");
        }
        if ip.is_loopback() && !self.allow_loopback {
            return Some("loopback");
        }
        match ip {
            IpAddr::V4(v4) if v4.is_link_local() => Some("link-local"),
            IpAddr::V4(v4) if v4.is_broadcast() => Some("broadcast"),
            IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("link-local"),
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => Some("IPv4-mapped"),
            _ => None,
        }
    }
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
    /// The keys this name had before (a re-enrollment of a wiped or
    /// reimaged node, or a renewal with a new key), each kept until the last
    /// certificate of that key expires: an old key cannot enroll again while
    /// a certificate of it could still be presented. The API authenticates
    /// only the current key (`key_id`), so these are refused either way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<Superseded>,
    /// Unix time of the last rotation asked of this node (`globular cert
    /// rotate --all`): the node renews every certificate once it sees a
    /// request later than its `renewed_at`, which the renewal then moves
    /// past it. 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rotate_requested: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// A key of a node that was replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Superseded {
    /// Serial (hex) of the replaced certificate.
    pub cert_serial: String,
    /// `sha256:` of its public key.
    pub key_id: String,
    /// Unix time of the replacement.
    pub superseded_at: i64,
    /// Unix time after which no certificate of this key is valid (the
    /// replaced certificate's not-after); the entry is dropped after it.
    #[serde(default)]
    pub expires: i64,
}

impl NodeRecord {
    /// Records that the current key is replaced by `key_id` at `now`, the
    /// current certificate being valid until `not_after`; drops entries
    /// that expired.
    pub fn supersede_current(&mut self, now: i64, not_after: i64) {
        self.superseded.retain(|s| s.expires >= now);
        self.superseded.push(Superseded {
            cert_serial: self.cert_serial.clone(),
            key_id: self.key_id.clone(),
            superseded_at: now,
            expires: not_after,
        });
    }

    /// This record after the node enrolled again as `new` (a new key): `new`,
    /// with this record's history and its current key superseded.
    pub fn reenrolled(self, mut new: NodeRecord, old_not_after: i64) -> NodeRecord {
        let mut old = self;
        old.supersede_current(new.enrolled_at, old_not_after);
        new.superseded = old.superseded;
        new
    }

    /// Whether `key_id` was replaced and a certificate of it may still be valid.
    pub fn is_superseded(&self, key_id: &str, now: i64) -> bool {
        self.superseded
            .iter()
            .any(|s| s.key_id == key_id && s.expires >= now)
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

impl ServiceRecord {
    /// Whether the record says its instance is down (`health: failed`,
    /// written by the node's health loop or a package's checks): discovery
    /// (the API's service lookups, DNS) leaves it out.
    pub fn failed(&self) -> bool {
        self.metadata.get("health").is_some_and(|h| h == "failed")
    }

    /// How long ago, at `now` (Unix seconds), the node's health loop last
    /// checked the instance, when that is longer than [`STALE_AFTER`]: its
    /// node is off or its loop stopped, so `health` says what it was, not
    /// what it is. Records without `checked_at` are never stale.
    pub fn stale(&self, now: i64) -> Option<i64> {
        let checked: i64 = self.metadata.get("checked_at")?.parse().ok()?;
        let age = now - checked;
        (age > STALE_AFTER).then_some(age)
    }
}

/// A health loop rewrites its records at least once a minute: one not
/// rewritten for three is stale ([`ServiceRecord::stale`]).
pub const STALE_AFTER: i64 = 180;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_stale_when_its_health_loop_stopped_rewriting_it() {
        let mut record = ServiceRecord {
            name: API_SERVICE.into(),
            id: "cp-1".into(),
            node: "cp-1".into(),
            address: "10.0.0.1".into(),
            port: 8443,
            protocol: String::new(),
            tags: vec![],
            metadata: Default::default(),
            registered_at: 1_000,
        };
        // Registered by something without a loop: never stale.
        assert_eq!(record.stale(1_000_000), None);
        record.metadata.insert("checked_at".into(), "1000".into());
        assert_eq!(record.stale(1_000 + STALE_AFTER), None);
        assert_eq!(record.stale(1_001 + STALE_AFTER), Some(STALE_AFTER + 1));
        // A value that is no time is no claim.
        record.metadata.insert("checked_at".into(), "soon".into());
        assert_eq!(record.stale(1_000_000), None);
    }
}
