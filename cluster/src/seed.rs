//! The per-node seed: everything a generic image needs to become a member.
//!
//! Schema (version 1), documented in `docs/enrollment.md`:
//!
//! ```yaml
//! version: 1
//! cluster:
//!   name: demo
//!   id: 5f0c...                 # 32 hex digits
//!   ca_cert_hash: sha256:...    # pin of the CA public key
//!   endpoints: [10.0.0.1:10016] # substrate API of control-plane nodes
//!   etcd_heartbeat_ms: 500      # optional: etcd's Raft heartbeat (100)
//! node:
//!   name: cp1
//!   role: control-plane         # or worker
//!   addresses: [10.0.0.1/24]
//!   gateway: 10.0.0.254         # optional
//!   ports: {api: 10016, etcd_client: 2379, etcd_peer: 2380}  # optional
//! bootstrap: false              # true on the first control-plane only
//! token: abcdef.0123456789abcdef   # absent on the bootstrap seed
//! ticket: gt1....                  # the node's enrollment ticket (signed by the CA)
//! joined: false                    # true once enrolled: token and ticket dropped
//! ca: {certificate: PEM, key: PEM} # control-plane seeds only
//! etcd_ca: {certificate: PEM, key: PEM} # control-plane seeds only
//! kubernetes:                      # control-plane seeds only
//!   ca: {certificate: PEM, key: PEM}            # Kubernetes' client CA (under `ca`)
//!   front_proxy_ca: {certificate: PEM, key: PEM} # its front-proxy CA (under `ca`)
//!   service_account_key: PEM                    # the same on every control plane
//! tokens: [TokenRecord...]         # bootstrap seed only: hashes to install
//! backup: {interval: 1h, ...}     # control-plane seeds only: the bundle's backup.yaml
//! restore:                         # bootstrap seed of a restored cluster only
//!   manifest: '{...}'              # the backup's manifest.json, as signed
//!   signature: base64              # the cluster CA's signature of it
//!   snapshot: globular-restore.db  # the etcd snapshot beside the seed
//! ```

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::registry::{self, EnrollmentPolicy};
use crate::token::{BootstrapToken, TokenRecord};
use crate::{pki, Role};

pub const VERSION: u32 = 1;

/// A seed that failed to parse or validate; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct SeedError {
    pub origin: String,
    pub message: String,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub version: u32,
    pub cluster: ClusterRef,
    pub node: NodeSpec,
    #[serde(default)]
    pub bootstrap: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The node's enrollment ticket ([`crate::ticket`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// The node enrolled with this seed, and the stored copy dropped its
    /// token and ticket.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub joined: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaBundle>,
    /// The etcd CA (control-plane seeds only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_ca: Option<CaBundle>,
    /// What Kubernetes' control plane shares (control-plane seeds only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesSecrets>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenRecord>,
    /// The first control plane of a cluster restored from a backup starts
    /// etcd from its snapshot (`builder seed --restore-from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<Restore>,
    /// When this control plane takes backups and where it copies them
    /// (the bundle's `backup.yaml`; control-plane seeds only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::backup::policy::Policy>,
}

/// A restore from a backup: the archive's signed manifest and where the
/// etcd snapshot it describes is (a file beside the seed: on its config
/// drive, or in the directory of a seed file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restore {
    /// `manifest.json` of the archive, exactly as the cluster CA signed it.
    pub manifest: String,
    /// The CA's signature of `manifest` (base64).
    pub signature: String,
    /// The snapshot's file name beside the seed.
    pub snapshot: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterRef {
    pub name: String,
    pub id: String,
    pub ca_cert_hash: String,
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// The cluster's enrollment policy (written to the cluster record by
    /// the bootstrap node).
    #[serde(default, skip_serializing_if = "EnrollmentPolicy::is_default")]
    pub policy: EnrollmentPolicy,
    /// The DNS domain of the cluster's zone, `<name>.<domain>` (written to
    /// the cluster record; nodes send that zone to the control planes).
    #[serde(
        default = "registry::default_domain",
        skip_serializing_if = "registry::is_default_domain"
    )]
    pub domain: String,
    /// Operators' age public keys: a control plane's backups are encrypted
    /// to them (docs/backup.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backup_recipients: Vec<String>,
    /// How long the certificates the cluster issues are valid, in seconds
    /// (`builder cluster new --certificate-lifetime`; docs/operations.md).
    #[serde(
        default = "crate::pki::default_lifetime_seconds",
        skip_serializing_if = "crate::pki::is_default_lifetime"
    )]
    pub certificate_lifetime: u64,
    /// etcd's Raft heartbeat interval in milliseconds; the election
    /// timeout is ten of them (`builder cluster new --etcd-heartbeat`;
    /// docs/operations.md).
    #[serde(
        default = "crate::etcd_timing::default_heartbeat_ms",
        skip_serializing_if = "crate::etcd_timing::is_default_heartbeat"
    )]
    pub etcd_heartbeat_ms: u64,
}

impl ClusterRef {
    /// [`ClusterRef::certificate_lifetime`] as a duration.
    pub fn certificate_lifetime(&self) -> time::Duration {
        lifetime_of(self.certificate_lifetime)
    }
}

/// A lifetime in seconds as a duration (saturating: checked elsewhere).
pub fn lifetime_of(seconds: u64) -> time::Duration {
    time::Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    pub role: Role,
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default)]
    pub ports: Ports,
    /// The image's packages this node applies once enrolled (`globular
    /// apply --installed`, by name): unset, every one the image ships for
    /// the node's role; a list, only those (`[]`: none, a substrate-only
    /// node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ports {
    pub api: u16,
    pub etcd_client: u16,
    pub etcd_peer: u16,
}

impl Default for Ports {
    fn default() -> Ports {
        Ports {
            api: crate::API_PORT,
            etcd_client: crate::ETCD_CLIENT_PORT,
            etcd_peer: crate::ETCD_PEER_PORT,
        }
    }
}

/// The cluster CA (control-plane seeds only).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaBundle {
    pub certificate: String,
    pub key: String,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaBundle { .. }")
    }
}

/// The secrets every Kubernetes control plane shares: intermediate CAs
/// signed by the cluster CA for Kubernetes' clients and its front proxy,
/// and the service-account signing key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSecrets {
    pub ca: CaBundle,
    pub front_proxy_ca: CaBundle,
    pub service_account_key: String,
}

impl std::fmt::Debug for KubernetesSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubernetesSecrets { .. }")
    }
}

/// Redacts the token secret and the CA key.
impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seed")
            .field("version", &self.version)
            .field("cluster", &self.cluster)
            .field("node", &self.node)
            .field("bootstrap", &self.bootstrap)
            .field(
                "token",
                &self
                    .token
                    .as_ref()
                    .map(|t| format!("{}.<redacted>", t.split('.').next().unwrap_or_default())),
            )
            .field("ticket", &self.ticket.as_ref().map(|_| "<ticket>"))
            .field("joined", &self.joined)
            .field("ca", &self.ca)
            .field("etcd_ca", &self.etcd_ca)
            .field("kubernetes", &self.kubernetes)
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl Seed {
    /// Parses and validates a seed; `origin` names where it came from.
    pub fn parse(text: &str, origin: &str) -> Result<Seed, SeedError> {
        let err = |message: String| SeedError {
            origin: origin.to_owned(),
            message,
        };
        let seed: Seed = serde_yaml_ng::from_str(text).map_err(|e| err(e.to_string()))?;
        seed.validate().map_err(err)?;
        Ok(seed)
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("a seed serializes")
    }

    /// Checks the fields that serde cannot; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.version != VERSION {
            return Err(format!(
                "field `version`: unsupported seed version {} (expected {VERSION})",
                self.version
            ));
        }
        if !crate::valid_node_name(&self.cluster.name) {
            return Err(format!(
                "field `cluster.name`: {:?} is not a lowercase DNS label",
                self.cluster.name
            ));
        }
        if self.cluster.id.len() != 32 || !self.cluster.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("field `cluster.id`: expected 32 hex digits".into());
        }
        if !pki::valid_pin(&self.cluster.ca_cert_hash) {
            return Err(format!(
                "field `cluster.ca_cert_hash`: {:?} is not `sha256:` and 64 hex digits",
                self.cluster.ca_cert_hash
            ));
        }
        if !registry::valid_domain(&self.cluster.domain) {
            return Err(format!(
                "field `cluster.domain`: {:?} is not lowercase DNS labels joined by dots",
                self.cluster.domain
            ));
        }
        pki::check_lifetime(self.cluster.certificate_lifetime())
            .map_err(|e| format!("field `cluster.certificate_lifetime`: {e}"))?;
        crate::etcd_timing::check_heartbeat(self.cluster.etcd_heartbeat_ms)
            .map_err(|e| format!("field `cluster.etcd_heartbeat_ms`: {e}"))?;
        for (i, recipient) in self.cluster.backup_recipients.iter().enumerate() {
            crate::backup::parse_recipient(recipient)
                .map_err(|e| format!("field `cluster.backup_recipients[{i}]`: {e}"))?;
        }
        for (i, ep) in self.cluster.endpoints.iter().enumerate() {
            if ep.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!(
                    "field `cluster.endpoints[{i}]`: {ep:?} is not IP:PORT"
                ));
            }
        }
        if !crate::valid_node_name(&self.node.name) {
            return Err(format!(
                "field `node.name`: {:?} is not a lowercase DNS label",
                self.node.name
            ));
        }
        for (i, p) in self.node.packages.iter().flatten().enumerate() {
            if !crate::valid_node_name(p) {
                return Err(format!(
                    "field `node.packages[{i}]`: {p:?} is not a package name (a lowercase DNS label)"
                ));
            }
        }
        if self.node.addresses.is_empty() {
            return Err("field `node.addresses`: at least one address is required".into());
        }
        for (i, a) in self.node.addresses.iter().enumerate() {
            parse_cidr(a).map_err(|e| format!("field `node.addresses[{i}]`: {e}"))?;
        }
        if let Some(gw) = &self.node.gateway {
            gw.parse::<IpAddr>()
                .map_err(|_| format!("field `node.gateway`: {gw:?} is not an IP address"))?;
        }
        let p = self.node.ports;
        for (field, port) in [
            ("api", p.api),
            ("etcd_client", p.etcd_client),
            ("etcd_peer", p.etcd_peer),
        ] {
            if port == 0 {
                return Err(format!("field `node.ports.{field}`: must not be 0"));
            }
        }
        match (self.node.role, &self.ca) {
            (Role::Worker, Some(_)) => {
                return Err("field `ca`: only control-plane seeds carry the CA".into())
            }
            (Role::ControlPlane, None) => {
                return Err("field `ca`: a control-plane seed needs the CA".into())
            }
            (Role::ControlPlane, Some(ca)) => {
                let ca = pki::Ca::from_pem(&ca.certificate, &ca.key)
                    .map_err(|e| format!("field `ca`: {e}"))?;
                if ca.pin() != self.cluster.ca_cert_hash {
                    return Err(
                        "field `ca.certificate`: does not match `cluster.ca_cert_hash`".into(),
                    );
                }
            }
            (Role::Worker, None) => {}
        }
        match (self.node.role, &self.etcd_ca) {
            (Role::Worker, Some(_)) => {
                return Err("field `etcd_ca`: only control-plane seeds carry the etcd CA".into())
            }
            (Role::ControlPlane, None) => {
                return Err("field `etcd_ca`: a control-plane seed needs the etcd CA".into())
            }
            (Role::ControlPlane, Some(ca)) => {
                pki::Ca::from_pem(&ca.certificate, &ca.key)
                    .map_err(|e| format!("field `etcd_ca`: {e}"))?;
            }
            (Role::Worker, None) => {}
        }
        match (self.node.role, &self.kubernetes) {
            (Role::Worker, Some(_)) => {
                return Err(
                    "field `kubernetes`: only control-plane seeds carry Kubernetes' CAs".into(),
                )
            }
            (Role::ControlPlane, Some(k)) => {
                let cluster_ca = self.ca.as_ref().map(|c| c.certificate.as_str());
                for (field, bundle) in [("ca", &k.ca), ("front_proxy_ca", &k.front_proxy_ca)] {
                    pki::Ca::from_pem(&bundle.certificate, &bundle.key)
                        .map_err(|e| format!("field `kubernetes.{field}`: {e}"))?;
                    if let Some(cluster_ca) = cluster_ca {
                        pki::verify_issued(&bundle.certificate, cluster_ca)
                            .map_err(|e| format!("field `kubernetes.{field}.certificate`: {e}"))?;
                    }
                }
                pki::public_key_of_key_pem(&k.service_account_key)
                    .map_err(|e| format!("field `kubernetes.service_account_key`: {e}"))?;
            }
            // Seeds made from a bundle older than Kubernetes have none; the
            // Kubernetes package says so when it is applied.
            (_, None) => {}
        }
        if self.node.addresses.len() > registry::MAX_ADDRESSES {
            return Err(format!(
                "field `node.addresses`: at most {} addresses",
                registry::MAX_ADDRESSES
            ));
        }
        if let Some(t) = &self.ticket {
            if !crate::ticket::is_well_formed(t) {
                return Err("field `ticket`: not an enrollment ticket (gt1.…)".into());
            }
        }
        if let Some(policy) = &self.backup {
            if self.node.role != Role::ControlPlane {
                return Err(
                    "field `backup`: only control-plane seeds carry the backup policy".into(),
                );
            }
            policy
                .validate()
                .map_err(|e| e.replacen("field `", "field `backup.", 1))?;
        }
        if let Some(restore) = &self.restore {
            if !self.bootstrap {
                return Err("field `restore`: only the bootstrap seed restores a cluster".into());
            }
            if !crate::fsutil::is_plain_file_name(&restore.snapshot) {
                return Err(format!(
                    "field `restore.snapshot`: {:?} is not a plain file name",
                    restore.snapshot
                ));
            }
            let manifest: crate::backup::Manifest = serde_json::from_str(&restore.manifest)
                .map_err(|e| format!("field `restore.manifest`: {e}"))?;
            if manifest.cluster.id != self.cluster.id {
                return Err(format!(
                    "field `restore.manifest`: a backup of cluster {} ({}), not of {}",
                    manifest.cluster.name, manifest.cluster.id, self.cluster.id
                ));
            }
        }
        if self.bootstrap {
            if self.node.role != Role::ControlPlane {
                return Err("field `bootstrap`: only a control-plane node can bootstrap".into());
            }
        } else {
            match &self.token {
                None if self.ticket.is_none() && !self.joined => {
                    return Err("field `token`: a joining node needs a token or a ticket".into())
                }
                None => {}
                Some(t) => {
                    BootstrapToken::parse(t).map_err(|e| format!("field `token`: {e}"))?;
                }
            }
            if self.cluster.endpoints.is_empty() {
                return Err("field `cluster.endpoints`: a joining node needs an endpoint".into());
            }
            if !self.tokens.is_empty() {
                return Err("field `tokens`: only the bootstrap seed carries token records".into());
            }
        }
        Ok(())
    }

    /// This seed as stored once the node is enrolled: the token and the
    /// ticket dropped (a stolen disk does not carry them).
    pub fn joined(&self) -> Seed {
        Seed {
            token: None,
            ticket: None,
            joined: true,
            ..self.clone()
        }
    }

    /// The node's IP addresses (without prefix lengths).
    pub fn ips(&self) -> Vec<IpAddr> {
        self.node
            .addresses
            .iter()
            .filter_map(|a| parse_cidr(a).ok().map(|(ip, _)| ip))
            .collect()
    }

    /// The address the node listens on and advertises: its first address.
    pub fn primary_ip(&self) -> IpAddr {
        self.ips()[0]
    }
}

/// Parses `ip/prefix`.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (ip, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not CIDR (IP/PREFIX)"))?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("{s:?}: {ip:?} is not an IP address"))?;
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| format!("{s:?}: bad prefix length"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(format!("{s:?}: prefix length over {max}"));
    }
    Ok((ip, prefix))
}

/// Formats an address and port for URLs (`[v6]:port`).
pub fn host_port(ip: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKER: &str = "version: 1
cluster:
  name: demo
  id: 0123456789abcdef0123456789abcdef
  ca_cert_hash: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
  endpoints: [10.0.0.1:10016]
node:
  name: w1
  role: worker
  addresses: [10.0.0.5/24]
token: abcdef.0123456789abcdef
";

    fn err_of(text: &str) -> String {
        Seed::parse(text, "seed.yaml").unwrap_err().to_string()
    }

    #[test]
    fn parses_worker_seed() {
        let seed = Seed::parse(WORKER, "seed.yaml").unwrap();
        let debug = format!("{seed:?}");
        assert!(
            debug.contains("abcdef.<redacted>") && !debug.contains("abcdef.0123456789abcdef"),
            "{debug}"
        );
        assert_eq!(seed.node.role, Role::Worker);
        assert_eq!(seed.node.ports, Ports::default());
        assert_eq!(seed.cluster.etcd_heartbeat_ms, 100);
        assert_eq!(seed.primary_ip().to_string(), "10.0.0.5");
        // No `node.packages`: every package of the image for the role.
        assert_eq!(seed.node.packages, None);
        let none = WORKER.replace("  role: worker\n", "  role: worker\n  packages: []\n");
        let seed = Seed::parse(&none, "seed.yaml").unwrap();
        assert_eq!(seed.node.packages, Some(vec![]));
        // Kept through a round trip (the stored copy).
        let again = Seed::parse(&seed.to_yaml(), "seed.yaml").unwrap();
        assert_eq!(again.node.packages, Some(vec![]));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (WORKER.replace("role: worker", "role: boss"), "node.role"),
            (
                WORKER.replace("10.0.0.5/24", "10.0.0.5"),
                "node.addresses[0]",
            ),
            (WORKER.replace("version: 1", "version: 7"), "version"),
            (WORKER.replace("name: w1", "name: W_1"), "node.name"),
            (
                WORKER.replace(
                    "  role: worker\n",
                    "  role: worker\n  packages: [ok, ../x]\n",
                ),
                "node.packages[1]",
            ),
            (
                WORKER.replace("token: abcdef.0123456789abcdef", "token: nope"),
                "token",
            ),
            (
                WORKER.replace(
                    "  endpoints: [10.0.0.1:10016]\n",
                    "  endpoints: [somewhere]\n",
                ),
                "cluster.endpoints[0]",
            ),
            (
                WORKER.replace("ca_cert_hash: sha256:0", "ca_cert_hash: md5:0"),
                "cluster.ca_cert_hash",
            ),
            (
                WORKER.replace(
                    "  endpoints: [10.0.0.1:10016]\n",
                    "  endpoints: [10.0.0.1:10016]\n  etcd_heartbeat_ms: 0\n",
                ),
                "cluster.etcd_heartbeat_ms",
            ),
            (
                WORKER.replace("  addresses:", "  colour: blue\n  addresses:"),
                "colour",
            ),
            (WORKER.replace("  name: w1\n", ""), "name"),
            (format!("{WORKER}ca:\n  certificate: x\n  key: y\n"), "ca"),
        ];
        for (text, field) in cases {
            let err = err_of(&text);
            assert!(err.starts_with("seed.yaml: "), "{err}");
            assert!(err.contains(field), "expected {field:?} in {err:?}");
        }
        let err = err_of("version: [");
        assert!(err.contains("seed.yaml"), "{err}");
    }
}

#[cfg(test)]
mod robustness {
    use super::*;

    /// Every prefix of a valid seed, and every line dropped, parses or fails
    /// with an error; none panics.
    #[test]
    fn truncated_seeds_never_panic() {
        let ca = pki::Ca::generate("demo").unwrap();
        let seed = Seed {
            version: VERSION,
            cluster: ClusterRef {
                name: "demo".into(),
                id: "0".repeat(32),
                ca_cert_hash: ca.pin(),
                endpoints: vec![],
                policy: EnrollmentPolicy::default(),
                domain: registry::default_domain(),
                backup_recipients: Vec::new(),
                certificate_lifetime: pki::default_lifetime_seconds(),
                etcd_heartbeat_ms: crate::etcd_timing::DEFAULT_HEARTBEAT_MS,
            },
            node: NodeSpec {
                name: "cp1".into(),
                role: Role::ControlPlane,
                addresses: vec!["10.0.0.1/24".into()],
                gateway: None,
                ports: Ports::default(),
                packages: None,
            },
            bootstrap: true,
            token: None,
            ticket: None,
            joined: false,
            ca: Some(CaBundle {
                certificate: ca.cert_pem().into(),
                key: ca.key_pem().into(),
            }),
            etcd_ca: Some(CaBundle {
                certificate: ca.cert_pem().into(),
                key: ca.key_pem().into(),
            }),
            kubernetes: None,
            tokens: vec![],
            restore: None,
            backup: None,
        };
        let text = seed.to_yaml();
        assert_eq!(Seed::parse(&text, "seed").unwrap(), seed);
        for end in (0..text.len()).filter(|&i| text.is_char_boundary(i)) {
            let _ = Seed::parse(&text[..end], "seed");
        }
        let lines: Vec<&str> = text.lines().collect();
        for skip in 0..lines.len() {
            let mut kept = lines.clone();
            kept.remove(skip);
            let _ = Seed::parse(&kept.join("\n"), "seed");
        }
    }
}
