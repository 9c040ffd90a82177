//! Where the node keeps its state (`/var/lib/globular`, or `--root`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use globular_cluster::Role;
use serde::{Deserialize, Serialize};

/// Default state directory of a node.
pub const DEFAULT_ROOT: &str = "/var/lib/globular";

/// Paths under the state directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The seed this node was made from (0600).
    pub fn seed(&self) -> PathBuf {
        self.root.join("seed.yaml")
    }
    /// Agent checkpoints.
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// Written last: the node is enrolled.
    pub fn enrolled(&self) -> PathBuf {
        self.root.join("enrolled")
    }
    /// What the node's services and CLI need to know ([`NodeConfig`]).
    pub fn node_config(&self) -> PathBuf {
        self.root.join("node.json")
    }
    pub fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }
    pub fn node_key(&self) -> PathBuf {
        self.pki().join("node.key")
    }
    pub fn node_cert(&self) -> PathBuf {
        self.pki().join("node.crt")
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.pki().join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.pki().join("ca.key")
    }
    /// The etcd CA (control-plane nodes only): etcd trusts it alone.
    pub fn etcd_ca_cert(&self) -> PathBuf {
        self.pki().join("etcd-ca.crt")
    }
    pub fn etcd_ca_key(&self) -> PathBuf {
        self.pki().join("etcd-ca.key")
    }
    /// etcd certificates by kind: `server`, `peer`, and `client` (the
    /// substrate's own services reaching etcd).
    pub fn etcd_cert(&self, kind: &str) -> PathBuf {
        self.pki().join(format!("etcd-{kind}.crt"))
    }
    pub fn etcd_key(&self, kind: &str) -> PathBuf {
        self.pki().join(format!("etcd-{kind}.key"))
    }
    /// The substrate's etcd password (derived from the etcd CA key, kept
    /// here for the API, which does not read that key).
    pub fn etcd_password(&self) -> PathBuf {
        self.pki().join("etcd-client.password")
    }
    /// Kubernetes' CAs by name (`kubernetes-ca`, `front-proxy-ca`) and the
    /// service-account key (control planes, from the seed).
    pub fn kubernetes_secret(&self, name: &str, ext: &str) -> PathBuf {
        self.pki().join(format!("{name}.{ext}"))
    }
    /// Where an applied package keeps its files (`packages/NAME/`).
    pub fn package_dir(&self, name: &str) -> PathBuf {
        self.root.join("packages").join(name)
    }
    /// When a rotation of every certificate was last asked of this node
    /// (`globular cert rotate`, or the cluster's `cert rotate --all`), in
    /// Unix seconds: packages' certificates issued before it are issued
    /// again by the next `globular apply`.
    pub fn rotation_requested(&self) -> PathBuf {
        self.root.join("rotation-requested")
    }
    pub fn etcd_dir(&self) -> PathBuf {
        self.root.join("etcd")
    }
    pub fn etcd_config(&self) -> PathBuf {
        self.etcd_dir().join("etcd.conf.yml")
    }
    pub fn etcd_data(&self) -> PathBuf {
        self.etcd_dir().join("data")
    }
    /// The etcd snapshot a restore seed came with, kept until the cluster
    /// is restored from it.
    pub fn restore_snapshot(&self) -> PathBuf {
        self.root.join("restore").join("snapshot.db")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }

    pub fn read(&self, path: &Path) -> anyhow::Result<String> {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }

    pub fn load_node_config(&self) -> anyhow::Result<NodeConfig> {
        let path = self.node_config();
        let text = self.read(&path)?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// `node.json`: the enrolled node's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    pub name: String,
    pub role: Role,
    pub cluster_name: String,
    pub addresses: Vec<String>,
    /// Where this node's substrate API listens (control-plane only).
    pub api_listen: Option<String>,
    /// etcd client URLs.
    pub etcd_endpoints: Vec<String>,
    /// Substrate API endpoints (`ip:port`) of the control plane.
    pub api_endpoints: Vec<String>,
    pub image_version: String,
    /// How long the cluster's certificates are valid, in seconds (the
    /// seed's `cluster.certificate_lifetime`).
    #[serde(default = "globular_cluster::pki::default_lifetime_seconds")]
    pub certificate_lifetime: u64,
}

impl NodeConfig {
    pub fn certificate_lifetime(&self) -> time::Duration {
        globular_cluster::seed::lifetime_of(self.certificate_lifetime)
    }
}
