//! The offline cluster secrets bundle made by `builder cluster new`, and the
//! per-node seeds made from it by `builder seed`.
//!
//! Layout of the bundle directory:
//!
//! | file | mode | holds |
//! |---|---|---|
//! | `cluster.yaml` | 0644 | name, id, CA pin, default join endpoints |
//! | `ca.crt` | 0644 | CA certificate |
//! | `ca.key` | 0600 | CA private key |
//! | `etcd-ca.crt` | 0644 | etcd CA certificate (trusted by etcd only) |
//! | `etcd-ca.key` | 0600 | etcd CA private key |
//! | `kubernetes-ca.crt`, `.key` | 0644, 0600 | Kubernetes' client CA, an intermediate of the CA |
//! | `front-proxy-ca.crt`, `.key` | 0644, 0600 | Kubernetes' front-proxy CA, an intermediate of the CA |
//! | `service-account.key` | 0600 | Kubernetes' service-account signing key |
//! | `tokens.yaml` | 0600 | bootstrap tokens (one per role) with expiry |

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use ring::rand::SecureRandom as _;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::backup::policy::{self, Policy};
use crate::fsutil::{self, PUBLIC, SECRET};
use crate::pki::Ca;
use crate::registry::{self, EnrollmentPolicy, MAX_ADDRESSES};
use crate::seed::{CaBundle, ClusterRef, KubernetesSecrets, NodeSpec, Ports, Seed};
use crate::token::{BootstrapToken, TokenRecord};
use crate::{ticket, Role};

/// `cluster.yaml`: the public facts of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterInfo {
    pub version: u32,
    pub name: String,
    pub id: String,
    pub ca_cert_hash: String,
    #[serde(default)]
    pub endpoints: Vec<String>,
    #[serde(default, skip_serializing_if = "EnrollmentPolicy::is_default")]
    pub policy: EnrollmentPolicy,
    /// The DNS domain of the cluster's zone (`<name>.<domain>`).
    #[serde(
        default = "registry::default_domain",
        skip_serializing_if = "registry::is_default_domain"
    )]
    pub domain: String,
    /// Operators' age public keys (`age1...`): backups are encrypted to
    /// them (docs/backup.md).
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

/// One entry of `tokens.yaml`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub token: String,
    pub roles: Vec<Role>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEntry")
            .field("roles", &self.roles)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl TokenEntry {
    /// The record the cluster stores (hash of the secret only).
    pub fn record(&self) -> anyhow::Result<TokenRecord> {
        let token = BootstrapToken::parse(&self.token)?;
        let mut record = TokenRecord::new(&token, self.roles.clone(), Duration::ZERO)?;
        record.expires = self.expires;
        record.description = format!(
            "created by builder cluster new for {}",
            roles_text(&self.roles)
        );
        Ok(record)
    }
}

fn roles_text(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A loaded cluster secrets bundle.
#[derive(Debug, Clone)]
pub struct ClusterSecrets {
    pub info: ClusterInfo,
    pub ca: Ca,
    pub etcd_ca: Ca,
    /// Kubernetes' CAs and service-account key; `None` in a bundle made
    /// before Kubernetes was a package.
    pub kubernetes: Option<Kubernetes>,
    pub tokens: Vec<TokenEntry>,
    /// When control planes take backups and where they copy them
    /// (`backup.yaml`, 0600: it holds the targets' credentials).
    pub backup: Option<Policy>,
}

/// Kubernetes' part of the bundle.
#[derive(Debug, Clone)]
pub struct Kubernetes {
    pub ca: Ca,
    pub front_proxy_ca: Ca,
    pub service_account_key: String,
}

impl Kubernetes {
    fn generate(ca: &Ca, cluster: &str) -> anyhow::Result<Kubernetes> {
        Ok(Kubernetes {
            ca: ca
                .generate_intermediate(&format!("globular-kubernetes-ca {cluster}"))
                .context("creating Kubernetes' CA")?,
            front_proxy_ca: ca
                .generate_intermediate(&format!("globular-front-proxy-ca {cluster}"))
                .context("creating Kubernetes' front-proxy CA")?,
            service_account_key: crate::pki::generate_key_pem()?,
        })
    }
}

/// Options of `builder cluster new`.
#[derive(Debug, Clone)]
pub struct NewCluster {
    pub name: String,
    pub out: PathBuf,
    pub endpoints: Vec<String>,
    pub token_ttl: Duration,
    pub policy: EnrollmentPolicy,
}

/// What `builder cluster new` may set beyond [`NewCluster`] (a separate
/// type rather than fields of it, whose literals the VM tests build).
#[derive(Debug, Clone)]
pub struct ClusterExtras {
    /// The DNS zone's parent (`builder cluster new --domain`).
    pub domain: String,
    /// Operators' age public keys (`--backup-recipient`).
    pub backup_recipients: Vec<String>,
    /// The backup policy (`--backup-policy`).
    pub backup_policy: Option<Policy>,
    /// How long certificates are valid (`--certificate-lifetime`).
    pub certificate_lifetime: Duration,
    /// etcd's heartbeat interval in milliseconds (`--etcd-heartbeat`).
    pub etcd_heartbeat_ms: u64,
}

impl Default for ClusterExtras {
    fn default() -> ClusterExtras {
        ClusterExtras {
            domain: registry::DEFAULT_DOMAIN.to_owned(),
            backup_recipients: Vec::new(),
            backup_policy: None,
            certificate_lifetime: crate::pki::LEAF_VALIDITY,
            etcd_heartbeat_ms: crate::etcd_timing::DEFAULT_HEARTBEAT_MS,
        }
    }
}

/// Creates a new cluster secrets bundle in `opts.out` (which must not exist),
/// its zone under [`registry::DEFAULT_DOMAIN`]. The bundle appears whole or
/// not at all.
pub fn create(opts: &NewCluster) -> anyhow::Result<ClusterSecrets> {
    create_with(opts, &ClusterExtras::default())
}

/// [`create`] with the cluster's DNS zone under `domain`.
pub fn create_in_domain(opts: &NewCluster, domain: &str) -> anyhow::Result<ClusterSecrets> {
    create_with(
        opts,
        &ClusterExtras {
            domain: domain.to_owned(),
            ..ClusterExtras::default()
        },
    )
}

/// [`create`] with [`ClusterExtras`].
pub fn create_with(opts: &NewCluster, extras: &ClusterExtras) -> anyhow::Result<ClusterSecrets> {
    let domain = extras.domain.as_str();
    for recipient in &extras.backup_recipients {
        crate::backup::parse_recipient(recipient)?;
    }
    if !crate::valid_node_name(&opts.name) {
        bail!("cluster name {:?} is not a lowercase DNS label", opts.name);
    }
    if !registry::valid_domain(domain) {
        bail!(
            "domain {domain:?} is not lowercase DNS labels joined by dots (at most 120 characters)"
        );
    }
    crate::pki::check_lifetime(extras.certificate_lifetime)
        .map_err(|e| anyhow::anyhow!("--certificate-lifetime: {e}"))?;
    crate::etcd_timing::check_heartbeat(extras.etcd_heartbeat_ms)
        .map_err(|e| anyhow::anyhow!("--etcd-heartbeat: {e}"))?;
    for ep in &opts.endpoints {
        ep.parse::<std::net::SocketAddr>()
            .map_err(|_| anyhow::anyhow!("endpoint {ep:?} is not IP:PORT"))?;
    }
    if opts.out.exists() {
        bail!(
            "{} already exists; refusing to overwrite cluster secrets",
            opts.out.display()
        );
    }
    if opts.policy.max_addresses == 0 || opts.policy.max_addresses > MAX_ADDRESSES {
        bail!("addresses per node must be between 1 and {MAX_ADDRESSES}");
    }
    let ca = Ca::generate(&opts.name).context("creating the cluster CA")?;
    let etcd_ca = Ca::generate_etcd(&opts.name).context("creating the etcd CA")?;
    let kubernetes = Kubernetes::generate(&ca, &opts.name)?;
    let mut id = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut id)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    let expires =
        crate::token::expiry(OffsetDateTime::now_utc(), opts.token_ttl).context("--token-ttl")?;
    let secrets = ClusterSecrets {
        info: ClusterInfo {
            version: 1,
            name: opts.name.clone(),
            id: hex::encode(id),
            ca_cert_hash: ca.pin(),
            endpoints: opts.endpoints.clone(),
            policy: opts.policy,
            domain: domain.to_owned(),
            backup_recipients: extras.backup_recipients.clone(),
            certificate_lifetime: extras.certificate_lifetime.whole_seconds().unsigned_abs(),
            etcd_heartbeat_ms: extras.etcd_heartbeat_ms,
        },
        tokens: [Role::ControlPlane, Role::Worker]
            .into_iter()
            .map(|role| TokenEntry {
                token: BootstrapToken::generate().expose(),
                roles: vec![role],
                expires,
            })
            .collect(),
        ca,
        etcd_ca,
        kubernetes: Some(kubernetes),
        backup: extras.backup_policy.clone(),
    };
    if let Some(parent) = opts.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let staged = fsutil::AtomicDir::create(&opts.out, 0o700)
        .with_context(|| format!("creating a directory next to {}", opts.out.display()))?;
    secrets.write_to(staged.path())?;
    staged
        .commit()
        .with_context(|| format!("moving the bundle to {}", opts.out.display()))?;
    Ok(secrets)
}

impl ClusterSecrets {
    fn write_to(&self, dir: &Path) -> anyhow::Result<()> {
        let write = |name: &str, data: &[u8], mode: u32| {
            let path = dir.join(name);
            fsutil::write_atomic(&path, data, mode)
                .with_context(|| format!("writing {}", path.display()))
        };
        write(
            "cluster.yaml",
            serde_yaml_ng::to_string(&self.info)?.as_bytes(),
            PUBLIC,
        )?;
        write("ca.crt", self.ca.cert_pem().as_bytes(), PUBLIC)?;
        write("ca.key", self.ca.key_pem().as_bytes(), SECRET)?;
        write("etcd-ca.crt", self.etcd_ca.cert_pem().as_bytes(), PUBLIC)?;
        write("etcd-ca.key", self.etcd_ca.key_pem().as_bytes(), SECRET)?;
        if let Some(k) = &self.kubernetes {
            write("kubernetes-ca.crt", k.ca.cert_pem().as_bytes(), PUBLIC)?;
            write("kubernetes-ca.key", k.ca.key_pem().as_bytes(), SECRET)?;
            write(
                "front-proxy-ca.crt",
                k.front_proxy_ca.cert_pem().as_bytes(),
                PUBLIC,
            )?;
            write(
                "front-proxy-ca.key",
                k.front_proxy_ca.key_pem().as_bytes(),
                SECRET,
            )?;
            write(
                "service-account.key",
                k.service_account_key.as_bytes(),
                SECRET,
            )?;
        }
        write(
            "tokens.yaml",
            serde_yaml_ng::to_string(&self.tokens)?.as_bytes(),
            SECRET,
        )?;
        if let Some(policy) = &self.backup {
            write(
                policy::FILE,
                serde_yaml_ng::to_string(policy)?.as_bytes(),
                SECRET,
            )?;
        }
        Ok(())
    }

    /// Loads a bundle made by [`create`].
    pub fn load(dir: &Path) -> anyhow::Result<ClusterSecrets> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        let info: ClusterInfo = serde_yaml_ng::from_str(&read("cluster.yaml")?)
            .with_context(|| format!("parsing {}", dir.join("cluster.yaml").display()))?;
        let tokens: Vec<TokenEntry> = serde_yaml_ng::from_str(&read("tokens.yaml")?)
            .with_context(|| format!("parsing {}", dir.join("tokens.yaml").display()))?;
        let ca = Ca::from_pem(&read("ca.crt")?, &read("ca.key")?)
            .with_context(|| format!("loading the CA from {}", dir.display()))?;
        if ca.pin() != info.ca_cert_hash {
            bail!(
                "{}: ca.crt does not match ca_cert_hash in cluster.yaml",
                dir.display()
            );
        }
        let etcd_ca = Ca::from_pem(&read("etcd-ca.crt")?, &read("etcd-ca.key")?)
            .with_context(|| format!("loading the etcd CA from {}", dir.display()))?;
        let kubernetes = if dir.join("kubernetes-ca.crt").exists() {
            let load = |name: &str| {
                let crt = read(&format!("{name}.crt"))?;
                let intermediate = Ca::from_pem(&crt, &read(&format!("{name}.key"))?)
                    .with_context(|| format!("loading {name} from {}", dir.display()))?;
                crate::pki::verify_issued(&crt, ca.cert_pem())
                    .with_context(|| format!("{}: {name}.crt is not the CA's", dir.display()))?;
                anyhow::Ok(intermediate)
            };
            let service_account_key = read("service-account.key")?;
            crate::pki::public_key_of_key_pem(&service_account_key)
                .with_context(|| format!("{}: service-account.key", dir.display()))?;
            Some(Kubernetes {
                ca: load("kubernetes-ca")?,
                front_proxy_ca: load("front-proxy-ca")?,
                service_account_key,
            })
        } else {
            None
        };
        Ok(ClusterSecrets {
            info,
            ca,
            etcd_ca,
            kubernetes,
            tokens,
            backup: Policy::load(dir)?,
        })
    }

    /// Builds the seed of one node.
    pub fn seed(&self, opts: &SeedOptions) -> anyhow::Result<Seed> {
        let mut endpoints = opts.endpoints.clone();
        if endpoints.is_empty() {
            endpoints = self.info.endpoints.clone();
        }
        let token = if opts.bootstrap {
            if opts.token.is_some() {
                anyhow::bail!("seed for {}: a bootstrap seed takes no token", opts.node);
            }
            None
        } else if let Some(token) = &opts.token {
            // A token made later on the cluster (`globular token create`):
            // checked for its form here, for its role by the cluster.
            BootstrapToken::parse(token).map_err(|e| anyhow::anyhow!("--token: {e}"))?;
            Some(token.clone())
        } else {
            let entry = self
                .tokens
                .iter()
                .find(|t| t.roles.contains(&opts.role))
                .with_context(|| format!("the bundle has no token for role {}", opts.role))?;
            Some(entry.token.clone())
        };
        let ticket = if opts.bootstrap {
            None
        } else {
            let claims = ticket::claims(
                &self.info.id,
                &opts.node,
                opts.role,
                &opts.addresses,
                opts.ticket_ttl,
            )
            .map_err(|e| anyhow::anyhow!("--ticket-ttl: {e}"))?;
            Some(ticket::sign(&self.ca, &claims).context("signing the enrollment ticket")?)
        };
        let bundle = |ca: &Ca| CaBundle {
            certificate: ca.cert_pem().to_owned(),
            key: ca.key_pem().to_owned(),
        };
        let control_plane = opts.role == Role::ControlPlane;
        let seed = Seed {
            version: crate::seed::VERSION,
            cluster: ClusterRef {
                name: self.info.name.clone(),
                id: self.info.id.clone(),
                ca_cert_hash: self.info.ca_cert_hash.clone(),
                endpoints,
                policy: self.info.policy,
                domain: self.info.domain.clone(),
                backup_recipients: self.info.backup_recipients.clone(),
                certificate_lifetime: self.info.certificate_lifetime,
                etcd_heartbeat_ms: self.info.etcd_heartbeat_ms,
            },
            node: NodeSpec {
                name: opts.node.clone(),
                role: opts.role,
                addresses: opts.addresses.clone(),
                gateway: opts.gateway.clone(),
                ports: opts.ports,
                packages: opts.packages.clone(),
            },
            bootstrap: opts.bootstrap,
            token,
            ticket,
            joined: false,
            ca: control_plane.then(|| bundle(&self.ca)),
            etcd_ca: control_plane.then(|| bundle(&self.etcd_ca)),
            kubernetes: self.kubernetes.as_ref().filter(|_| control_plane).map(|k| {
                KubernetesSecrets {
                    ca: bundle(&k.ca),
                    front_proxy_ca: bundle(&k.front_proxy_ca),
                    service_account_key: k.service_account_key.clone(),
                }
            }),
            tokens: if opts.bootstrap {
                self.tokens
                    .iter()
                    .map(TokenEntry::record)
                    .collect::<anyhow::Result<_>>()?
            } else {
                Vec::new()
            },
            restore: None,
            backup: self.backup.clone().filter(|_| control_plane),
        };
        seed.validate()
            .map_err(|e| anyhow::anyhow!("seed for {}: {e}", opts.node))?;
        Ok(seed)
    }
}

/// Options of `builder seed`.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    pub node: String,
    pub role: Role,
    pub addresses: Vec<String>,
    pub gateway: Option<String>,
    pub bootstrap: bool,
    /// Join endpoints (`IP:PORT`); default: those of `cluster.yaml`.
    pub endpoints: Vec<String>,
    pub ports: Ports,
    /// A bootstrap token to use instead of the bundle's token for the role
    /// (one created on the cluster with `globular token create`).
    pub token: Option<String>,
    /// How long the node's enrollment ticket is valid.
    pub ticket_ttl: Duration,
    /// The image's packages the node applies (`node.packages`); `None`:
    /// every one for its role.
    pub packages: Option<Vec<String>>,
}

/// Default lifetime of an enrollment ticket: a seed reimages its node for a
/// year; `builder seed` makes a new one any time.
pub const TICKET_TTL: Duration = Duration::days(365);

/// How `builder seed` writes the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedFormat {
    Yaml,
    Cidata,
}

/// `builder seed`: loads the bundle, builds the seed and writes it (0600,
/// atomically) as YAML or as a `cidata` config drive image.
pub fn write_seed(
    cluster_dir: &Path,
    opts: &SeedOptions,
    format: SeedFormat,
    out: &Path,
) -> anyhow::Result<Seed> {
    let secrets = ClusterSecrets::load(cluster_dir)?;
    let seed = secrets.seed(opts)?;
    let bytes = match format {
        SeedFormat::Yaml => seed.to_yaml().into_bytes(),
        SeedFormat::Cidata => crate::cidata::image(&seed).context("making the cidata image")?,
    };
    fsutil::write_atomic(out, &bytes, SECRET)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn bundle(dir: &Path) -> ClusterSecrets {
        create(&NewCluster {
            name: "demo".into(),
            out: dir.join("c"),
            endpoints: vec!["10.0.0.1:10016".into()],
            token_ttl: Duration::hours(24),
            policy: EnrollmentPolicy::default(),
        })
        .unwrap()
    }

    #[test]
    fn bundle_roundtrips_with_secret_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let made = bundle(tmp.path());
        let dir = tmp.path().join("c");
        for (f, mode) in [
            ("ca.key", 0o600),
            ("etcd-ca.key", 0o600),
            ("etcd-ca.crt", 0o644),
            ("kubernetes-ca.key", 0o600),
            ("kubernetes-ca.crt", 0o644),
            ("front-proxy-ca.key", 0o600),
            ("service-account.key", 0o600),
            ("tokens.yaml", 0o600),
            ("ca.crt", 0o644),
            ("cluster.yaml", 0o644),
        ] {
            let m = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, mode, "{f}");
        }
        let loaded = ClusterSecrets::load(&dir).unwrap();
        assert_eq!(loaded.info, made.info);
        assert_eq!(loaded.tokens, made.tokens);
        let again = create(&NewCluster {
            name: "demo".into(),
            out: dir.clone(),
            endpoints: vec![],
            token_ttl: Duration::hours(1),
            policy: EnrollmentPolicy::default(),
        });
        assert!(again.unwrap_err().to_string().contains("already exists"));
    }

    #[test]
    fn a_token_ttl_out_of_range_is_refused_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let err = create(&NewCluster {
            name: "demo".into(),
            out: tmp.path().join("c"),
            endpoints: vec![],
            token_ttl: Duration::seconds(i64::MAX),
            policy: EnrollmentPolicy::default(),
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("--token-ttl"), "{err:#}");
        assert!(!tmp.path().join("c").exists());
    }

    #[test]
    fn the_dns_domain_goes_from_the_bundle_into_seeds() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = NewCluster {
            name: "demo".into(),
            out: tmp.path().join("c"),
            endpoints: vec!["10.0.0.1:10016".into()],
            token_ttl: Duration::hours(1),
            policy: EnrollmentPolicy::default(),
        };
        let err = create_in_domain(&opts, "Bad_Domain.").unwrap_err();
        assert!(err.to_string().contains("domain"), "{err}");
        create_in_domain(&opts, "corp.example").unwrap();
        let text = std::fs::read_to_string(opts.out.join("cluster.yaml")).unwrap();
        assert!(text.contains("domain: corp.example"), "{text}");
        let loaded = ClusterSecrets::load(&opts.out).unwrap();
        let seed = loaded
            .seed(&joiner("w1", Role::Worker, "10.0.0.5/24"))
            .unwrap();
        assert_eq!(seed.cluster.domain, "corp.example");
        assert_eq!(Seed::parse(&seed.to_yaml(), "seed").unwrap(), seed);
        // The default domain is not written: older readers see no new field.
        let other = tempfile::tempdir().unwrap();
        let default = bundle(other.path());
        assert_eq!(default.info.domain, registry::DEFAULT_DOMAIN);
        let text = std::fs::read_to_string(other.path().join("c/cluster.yaml")).unwrap();
        assert!(!text.contains("domain"), "{text}");
    }

    /// The options of a joining node's seed.
    fn joiner(node: &str, role: Role, address: &str) -> SeedOptions {
        SeedOptions {
            node: node.into(),
            role,
            addresses: vec![address.into()],
            gateway: None,
            bootstrap: false,
            endpoints: vec![],
            ports: Ports::default(),
            token: None,
            ticket_ttl: TICKET_TTL,
            packages: None,
        }
    }

    #[test]
    fn worker_seed_has_no_ca_and_a_worker_token() {
        let tmp = tempfile::tempdir().unwrap();
        let secrets = bundle(tmp.path());
        let seed = secrets
            .seed(&joiner("w1", Role::Worker, "10.0.0.5/24"))
            .unwrap();
        assert!(seed.ca.is_none() && seed.etcd_ca.is_none() && seed.kubernetes.is_none());
        // A worker seed given Kubernetes' CAs by hand is refused.
        let mut forged = seed.clone();
        let cp = secrets
            .seed(&joiner("cp9", Role::ControlPlane, "10.0.0.9/24"))
            .unwrap();
        let kubernetes = cp
            .kubernetes
            .clone()
            .expect("a control-plane seed has Kubernetes' CAs");
        // Kubernetes' CAs are the cluster CA's intermediates.
        for bundle in [&kubernetes.ca, &kubernetes.front_proxy_ca] {
            crate::pki::verify_issued(&bundle.certificate, secrets.ca.cert_pem()).unwrap();
        }
        forged.kubernetes = Some(kubernetes);
        let err = Seed::parse(&forged.to_yaml(), "seed")
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `kubernetes`"), "{err}");
        let entry = secrets
            .tokens
            .iter()
            .find(|t| t.token == *seed.token.as_ref().unwrap())
            .unwrap();
        assert_eq!(entry.roles, vec![Role::Worker]);
        assert_eq!(seed.cluster.endpoints, vec!["10.0.0.1:10016".to_string()]);
        let parsed = Seed::parse(&seed.to_yaml(), "seed").unwrap();
        assert_eq!(parsed, seed);
    }

    #[test]
    fn seed_takes_a_token_made_later_and_checks_its_form() {
        let tmp = tempfile::tempdir().unwrap();
        let secrets = bundle(tmp.path());
        let opts = |token: &str, bootstrap: bool| SeedOptions {
            node: "w2".into(),
            role: Role::Worker,
            addresses: vec!["10.0.0.6/24".into()],
            gateway: None,
            bootstrap,
            endpoints: vec![],
            ports: Ports::default(),
            token: Some(token.into()),
            ticket_ttl: TICKET_TTL,
            packages: None,
        };
        let made_later = BootstrapToken::generate().expose();
        let seed = secrets.seed(&opts(&made_later, false)).unwrap();
        assert_eq!(seed.token.as_deref(), Some(made_later.as_str()));
        let err = secrets.seed(&opts("not-a-token", false)).unwrap_err();
        assert!(format!("{err:#}").contains("--token"), "{err:#}");
        let err = secrets.seed(&opts(&made_later, true)).unwrap_err();
        assert!(format!("{err:#}").contains("takes no token"), "{err:#}");
    }

    #[test]
    fn bootstrap_seed_carries_ca_and_token_hashes() {
        let tmp = tempfile::tempdir().unwrap();
        let secrets = bundle(tmp.path());
        let seed = secrets
            .seed(&SeedOptions {
                node: "cp1".into(),
                role: Role::ControlPlane,
                addresses: vec!["10.0.0.1/24".into()],
                gateway: Some("10.0.0.254".into()),
                bootstrap: true,
                endpoints: vec![],
                ports: Ports::default(),
                token: None,
                ticket_ttl: TICKET_TTL,
                packages: None,
            })
            .unwrap();
        assert!(seed.ca.is_some());
        assert!(seed.token.is_none());
        assert_eq!(seed.tokens.len(), 2);
        let yaml = seed.to_yaml();
        for t in &secrets.tokens {
            assert!(
                !yaml.contains(&t.token),
                "token secret leaked into bootstrap seed"
            );
        }
        let err = secrets
            .seed(&SeedOptions {
                node: "w9".into(),
                role: Role::Worker,
                addresses: vec!["10.0.0.9/24".into()],
                gateway: None,
                bootstrap: true,
                endpoints: vec![],
                ports: Ports::default(),
                token: None,
                ticket_ttl: TICKET_TTL,
                packages: None,
            })
            .unwrap_err();
        assert!(format!("{err:#}").contains("bootstrap"), "{err:#}");
    }
}
