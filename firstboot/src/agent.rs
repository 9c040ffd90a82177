//! The firstboot agent: a state machine with durable checkpoints.
//!
//! Each step's work is idempotent and its completion is recorded in
//! `state.json` (written atomically) before the next step starts, so a node
//! that loses power at any point converges when the agent runs again. The
//! last step writes `enrolled`; on an enrolled node the agent changes no
//! durable state.
//!
//! The image's `/etc` is read-only, so what the seed says about the running
//! system is applied on every boot, enrolled or not, from the stored seed
//! (see [`Agent::apply_boot_config`]): the systemd-networkd configuration in
//! `/run/systemd/network` and the transient hostname.
//!
//! | path | steps |
//! |---|---|
//! | bootstrap control-plane | seed, key, node-cert (signed locally), etcd-certs, etcd-started (new cluster), cluster-init, api-started, enrolled |
//! | joining control-plane | seed, key, node-cert (enrolled over the API), etcd-certs, etcd-member (learner added), etcd-started (existing cluster), etcd-promoted, api-started, enrolled |
//! | worker | seed, key, node-cert (enrolled over the API), enrolled |

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use globular_cluster::fsutil::{self, PUBLIC, SECRET};
use globular_cluster::pki::{self, Ca, LeafSpec};
use globular_cluster::protocol::EnrollRequest;
use globular_cluster::registry::{
    self, ClusterRecord, NodeRecord, ServiceRecord, API_SERVICE, ETCD_SERVICE,
};
use globular_cluster::seed::{self, Seed};
use globular_cluster::Role;
use serde::{Deserialize, Serialize};

use globular_substrate::client::enroll_with;
use globular_substrate::etcd::Etcd;
use globular_substrate::tls;

use crate::datasource::{self, Datasource};
use crate::layout::{Layout, NodeConfig};
use crate::services::{Manager, Service};

/// Environment variable of the crash tests: the agent stops (sleeps, waiting
/// to be killed) after doing the work of this step but before recording it.
pub const PAUSE_ENV: &str = "GLOBULAR_TEST_PAUSE_BEFORE";

/// Options of `globular firstboot`.
#[derive(Debug, Clone)]
pub struct Options {
    pub root: PathBuf,
    /// Where device, firmware and `/proc` paths are looked up (`/`).
    pub sysroot: PathBuf,
    /// A seed file to use instead of the datasources.
    pub seed: Option<PathBuf>,
    pub services: Manager,
    /// Image version recorded in the registry (default: `IMAGE_VERSION` of os-release).
    pub image_version: Option<String>,
    /// How long to keep trying to reach the cluster.
    pub timeout: Duration,
    /// Where to write the systemd-networkd configuration made from the
    /// seed's addresses, on every run (`/run/systemd/network`: `/etc` is
    /// read-only on images); `None` leaves the network alone.
    pub network_dir: Option<PathBuf>,
    /// Where to write the node name as the transient hostname, on every run
    /// (`/proc/sys/kernel/hostname`); `None` leaves the hostname alone.
    pub hostname_file: Option<PathBuf>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Enrolled { node: String, role: Role },
    AlreadyEnrolled { node: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Seed,
    Key,
    NodeCert,
    EtcdCerts,
    EtcdMember,
    EtcdStarted,
    EtcdPromoted,
    ClusterInit,
    ApiStarted,
    Enrolled,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Seed => "seed",
            Step::Key => "key",
            Step::NodeCert => "node-cert",
            Step::EtcdCerts => "etcd-certs",
            Step::EtcdMember => "etcd-member",
            Step::EtcdStarted => "etcd-started",
            Step::EtcdPromoted => "etcd-promoted",
            Step::ClusterInit => "cluster-init",
            Step::ApiStarted => "api-started",
            Step::Enrolled => "enrolled",
        }
    }

    /// The steps of a node with this seed, in order.
    pub fn plan(seed: &Seed) -> Vec<Step> {
        use Step::*;
        match (seed.node.role, seed.bootstrap) {
            (Role::ControlPlane, true) => vec![
                Seed,
                Key,
                NodeCert,
                EtcdCerts,
                EtcdStarted,
                ClusterInit,
                ApiStarted,
                Enrolled,
            ],
            (Role::ControlPlane, false) => vec![
                Seed,
                Key,
                NodeCert,
                EtcdCerts,
                EtcdMember,
                EtcdStarted,
                EtcdPromoted,
                ApiStarted,
                Enrolled,
            ],
            (Role::Worker, _) => vec![Seed, Key, NodeCert, Enrolled],
        }
    }
}

/// `state.json`: completed steps and what they learned.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub done: Vec<Step>,
    #[serde(default)]
    pub seed_source: Option<String>,
    #[serde(default)]
    pub member_id: Option<u64>,
}

impl State {
    fn load(layout: &Layout) -> anyhow::Result<State> {
        let path = layout.state();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn record(&mut self, layout: &Layout, step: Step) -> anyhow::Result<()> {
        if std::env::var(PAUSE_ENV).is_ok_and(|s| s == step.name()) {
            pause(layout, step);
        }
        if !self.done.contains(&step) {
            self.done.push(step);
        }
        let path = layout.state();
        fsutil::write_atomic(
            &path,
            serde_json::to_string_pretty(self)?.as_bytes(),
            PUBLIC,
        )
        .with_context(|| format!("writing {}", path.display()))?;
        tracing::info!("checkpoint {}", step.name());
        Ok(())
    }
}

/// The crash-test hook: announce the pause and wait to be killed.
fn pause(layout: &Layout, step: Step) -> ! {
    let _ = std::fs::write(layout.root().join("paused"), step.name());
    tracing::warn!("{PAUSE_ENV}: pausing before checkpoint {}", step.name());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The etcd certificates of a control-plane node (`kind`: `server` or
/// `peer`): the node's IPs and 127.0.0.1, client and server use.
pub fn etcd_leaf_spec(seed: &Seed, kind: &str) -> LeafSpec {
    let mut ips: Vec<IpAddr> = seed.ips();
    let loopback = IpAddr::from([127, 0, 0, 1]);
    if !ips.contains(&loopback) {
        ips.push(loopback);
    }
    LeafSpec {
        common_name: format!("{}-etcd-{kind}", seed.node.name),
        role: None,
        dns_names: vec![seed.node.name.clone()],
        ips,
        server: true,
        client: true,
    }
}

/// File name of the network configuration the agent writes.
pub const NETWORK_FILE: &str = "10-globular.network";

/// A systemd-networkd `.network` file for the seed's addresses.
pub fn network_config(seed: &Seed) -> String {
    let mut text = format!(
        "# Written by globular firstboot from the seed of {}.\n[Match]\nType=ether\nName=en* eth*\n\n[Network]\n",
        seed.node.name
    );
    for address in &seed.node.addresses {
        text += &format!("Address={address}\n");
    }
    if let Some(gateway) = &seed.node.gateway {
        text += &format!("Gateway={gateway}\n");
    }
    text
}

/// Runs the agent to completion.
pub fn run(opts: &Options) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(Agent::new(opts)?.run())
}

struct Agent {
    opts: Options,
    layout: Layout,
    state: State,
}

impl Agent {
    fn new(opts: &Options) -> anyhow::Result<Agent> {
        fsutil::create_dir(&opts.root, 0o700)
            .with_context(|| format!("creating {}", opts.root.display()))?;
        // Services get absolute paths in their configuration.
        let root = std::fs::canonicalize(&opts.root)
            .with_context(|| format!("resolving {}", opts.root.display()))?;
        let layout = Layout::new(root);
        fsutil::create_dir(&layout.pki(), 0o700)
            .with_context(|| format!("creating {}", layout.pki().display()))?;
        let state = State::load(&layout)?;
        Ok(Agent {
            opts: opts.clone(),
            layout,
            state,
        })
    }

    async fn run(mut self) -> anyhow::Result<Outcome> {
        let seed = self.seed()?;
        self.apply_boot_config(&seed)?;
        if self.layout.enrolled().exists() {
            let node = seed.node.name.clone();
            tracing::info!("node {node} is already enrolled; nothing else to do");
            return Ok(Outcome::AlreadyEnrolled { node });
        }
        // After a power loss etcd may be down although its step is done; the
        // steps after it need it (systemd would restart it; spawned, it is not).
        if self.state.done.contains(&Step::EtcdStarted) {
            self.ensure_etcd(&seed)
                .await
                .context("restarting etcd after an interruption")?;
        }
        for step in Step::plan(&seed) {
            if self.state.done.contains(&step) {
                tracing::debug!("step {} already done", step.name());
                continue;
            }
            tracing::info!("step {}", step.name());
            self.step(step, &seed)
                .await
                .with_context(|| format!("step {}", step.name()))?;
            self.state.record(&self.layout, step)?;
        }
        Ok(Outcome::Enrolled {
            node: seed.node.name.clone(),
            role: seed.node.role,
        })
    }

    /// The seed: the stored copy once there is one, else the datasources.
    fn seed(&mut self) -> anyhow::Result<Seed> {
        let stored = self.layout.seed();
        if self.state.done.contains(&Step::Seed) {
            let text = self.layout.read(&stored)?;
            return Ok(Seed::parse(&text, &stored.display().to_string())?);
        }
        let sources: Vec<Box<dyn Datasource>> = match &self.opts.seed {
            Some(path) => vec![Box::new(datasource::File(path.clone()))],
            None => datasource::all(&self.opts.sysroot),
        };
        let (source, text) = datasource::find(&sources)?.ok_or_else(|| {
            anyhow!(
                "no seed found (tried: {})",
                sources
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
        let seed = Seed::parse(&text, &source)?;
        fsutil::write_atomic(&stored, text.as_bytes(), SECRET)
            .with_context(|| format!("writing {}", stored.display()))?;
        self.state.seed_source = Some(source);
        self.state.record(&self.layout, Step::Seed)?;
        Ok(seed)
    }

    async fn step(&mut self, step: Step, seed: &Seed) -> anyhow::Result<()> {
        match step {
            Step::Seed => Ok(()),
            Step::Key => self.key(),
            Step::NodeCert if seed.bootstrap => self.local_node_cert(seed),
            Step::NodeCert => self.enroll(seed).await,
            Step::EtcdCerts => self.etcd_certs(seed),
            Step::EtcdMember => self.etcd_member(seed).await,
            Step::EtcdStarted => self.etcd_started(seed).await,
            Step::EtcdPromoted => self.etcd_promoted(seed).await,
            Step::ClusterInit => self.cluster_init(seed).await,
            Step::ApiStarted => self.api_started(seed).await,
            Step::Enrolled => fsutil::write_atomic(
                &self.layout.enrolled(),
                format!("{}\n", time::OffsetDateTime::now_utc().unix_timestamp()).as_bytes(),
                PUBLIC,
            )
            .context("writing the enrolled marker"),
        }
    }

    fn write_secret(&self, path: &std::path::Path, data: &str) -> anyhow::Result<()> {
        fsutil::write_atomic(path, data.as_bytes(), SECRET)
            .with_context(|| format!("writing {}", path.display()))
    }

    fn write_public(&self, path: &std::path::Path, data: &str) -> anyhow::Result<()> {
        fsutil::write_atomic(path, data.as_bytes(), PUBLIC)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// What the seed says about the running system, applied on every run
    /// (every boot): `/etc` is read-only and `/run` starts empty. Both are
    /// left as they are when they already say the same.
    fn apply_boot_config(&self, seed: &Seed) -> anyhow::Result<()> {
        self.network(seed)?;
        self.hostname(seed)
    }

    /// The seed's addresses and gateway as a systemd-networkd configuration
    /// for the node's Ethernet links, then `networkctl reload` (with systemd)
    /// if the file changed.
    fn network(&self, seed: &Seed) -> anyhow::Result<()> {
        let Some(dir) = &self.opts.network_dir else {
            return Ok(());
        };
        let path = dir.join(NETWORK_FILE);
        let config = network_config(seed);
        if std::fs::read_to_string(&path).is_ok_and(|old| old == config) {
            tracing::debug!("{} is up to date", path.display());
            return Ok(());
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        self.write_public(&path, &config)?;
        tracing::info!("network configuration written to {}", path.display());
        if self.opts.services == Manager::Systemd {
            globular_task::Task::new("applying the network configuration", "networkctl")
                .package("systemd")
                .arg("reload")
                .run()?;
        }
        Ok(())
    }

    /// The node name as the transient hostname (the kernel's; the static
    /// one in `/etc/hostname` is the image's and read-only).
    fn hostname(&self, seed: &Seed) -> anyhow::Result<()> {
        let Some(path) = &self.opts.hostname_file else {
            return Ok(());
        };
        let name = &seed.node.name;
        if std::fs::read_to_string(path).is_ok_and(|old| old.trim_end() == name) {
            return Ok(());
        }
        // procfs: written in place, no temporary file.
        std::fs::write(path, format!("{name}\n"))
            .with_context(|| format!("setting the hostname: writing {}", path.display()))?;
        tracing::info!("hostname set to {name}");
        Ok(())
    }

    /// The node key, made here once; it never leaves the node.
    fn key(&self) -> anyhow::Result<()> {
        let path = self.layout.node_key();
        if let Ok(existing) = std::fs::read_to_string(&path) {
            if pki::public_key_of_key_pem(&existing).is_ok() {
                return Ok(());
            }
        }
        self.write_secret(&path, &pki::generate_key_pem()?)
    }

    fn node_key(&self) -> anyhow::Result<String> {
        self.layout.read(&self.layout.node_key())
    }

    fn ca(&self, seed: &Seed) -> anyhow::Result<Ca> {
        let bundle = seed.ca.as_ref().context("the seed has no CA")?;
        Ok(Ca::from_pem(&bundle.certificate, &bundle.key)?)
    }

    /// Whether `node.crt` exists and certifies the node key.
    fn have_node_cert(&self) -> anyhow::Result<bool> {
        let Ok(cert) = std::fs::read_to_string(self.layout.node_cert()) else {
            return Ok(false);
        };
        let key = pki::public_key_of_key_pem(&self.node_key()?)?;
        Ok(pki::identity_of_pem(&cert).is_ok_and(|id| id.public_key_der == key))
    }

    fn image_version(&self) -> String {
        if let Some(v) = &self.opts.image_version {
            return v.clone();
        }
        let os_release = self.opts.sysroot.join("etc/os-release");
        std::fs::read_to_string(os_release)
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    l.strip_prefix("IMAGE_VERSION=")
                        .map(|v| v.trim_matches('"').to_owned())
                })
            })
            .unwrap_or_else(|| "unknown".into())
    }

    /// Bootstrap: the CA is here, so the node signs its own certificate.
    fn local_node_cert(&self, seed: &Seed) -> anyhow::Result<()> {
        let ca = self.ca(seed)?;
        self.write_public(&self.layout.ca_cert(), ca.cert_pem())?;
        self.write_secret(&self.layout.ca_key(), ca.key_pem())?;
        if self.have_node_cert()? {
            return Ok(());
        }
        let public = pki::public_key_of_key_pem(&self.node_key()?)?;
        let issued = ca.issue(
            &public,
            &LeafSpec::node(&seed.node.name, Role::ControlPlane, &seed.ips()),
        )?;
        self.write_public(&self.layout.node_cert(), &issued.cert_pem)
    }

    /// Join: enroll over the API, checking the server against the CA pin.
    async fn enroll(&self, seed: &Seed) -> anyhow::Result<()> {
        if let Some(ca) = &seed.ca {
            self.write_public(&self.layout.ca_cert(), &ca.certificate)?;
            self.write_secret(&self.layout.ca_key(), &ca.key)?;
        }
        let key = self.node_key()?;
        let request = EnrollRequest {
            token: seed.token.clone().context("the seed has no token")?,
            csr: pki::create_csr(&key, &seed.node.name)?,
            node: seed.node.name.clone(),
            role: seed.node.role,
            addresses: seed.node.addresses.clone(),
            image_version: self.image_version(),
        };
        tracing::info!(
            "enrolling {} as {}: sending the CSR to {}",
            seed.node.name,
            seed.node.role,
            seed.cluster.endpoints.join(", ")
        );
        let response = enroll_with(
            &seed.cluster.endpoints,
            &seed.cluster.ca_cert_hash,
            &request,
            self.opts.timeout,
        )
        .await?;
        let id = pki::identity_of_pem(&response.certificate).context("the issued certificate")?;
        if id.public_key_der != pki::public_key_of_key_pem(&key)?
            || id.common_name != seed.node.name
        {
            bail!("the server issued a certificate for another key or name");
        }
        if pki::ca_pin_of_pem(&response.ca_bundle)? != seed.cluster.ca_cert_hash {
            bail!("the server's CA bundle does not match the pinned hash");
        }
        self.write_public(&self.layout.ca_cert(), &response.ca_bundle)?;
        self.write_public(&self.layout.node_cert(), &response.certificate)?;
        let api_endpoints = if response.api_endpoints.is_empty() {
            seed.cluster.endpoints.clone()
        } else {
            response.api_endpoints.clone()
        };
        self.write_node_config(seed, response.etcd_endpoints.clone(), api_endpoints)
    }

    fn write_node_config(
        &self,
        seed: &Seed,
        etcd: Vec<String>,
        api: Vec<String>,
    ) -> anyhow::Result<()> {
        let config = NodeConfig {
            name: seed.node.name.clone(),
            role: seed.node.role,
            cluster_name: seed.cluster.name.clone(),
            addresses: seed.node.addresses.clone(),
            api_listen: (seed.node.role == Role::ControlPlane)
                .then(|| seed::host_port(seed.primary_ip(), seed.node.ports.api)),
            etcd_endpoints: etcd,
            api_endpoints: api,
            image_version: self.image_version(),
        };
        self.write_public(
            &self.layout.node_config(),
            &serde_json::to_string_pretty(&config)?,
        )
    }

    fn peer_url(seed: &Seed) -> String {
        format!(
            "https://{}",
            seed::host_port(seed.primary_ip(), seed.node.ports.etcd_peer)
        )
    }

    fn client_url(seed: &Seed) -> String {
        format!(
            "https://{}",
            seed::host_port(seed.primary_ip(), seed.node.ports.etcd_client)
        )
    }

    /// etcd server and peer certificates, signed here with the CA.
    fn etcd_certs(&self, seed: &Seed) -> anyhow::Result<()> {
        let ca = self.ca(seed)?;
        for kind in ["server", "peer"] {
            let (cert_path, key_path) = (self.layout.etcd_cert(kind), self.layout.etcd_key(kind));
            let valid = match (
                std::fs::read_to_string(&cert_path),
                std::fs::read_to_string(&key_path),
            ) {
                (Ok(cert), Ok(key)) => pki::identity_of_pem(&cert)
                    .ok()
                    .zip(pki::public_key_of_key_pem(&key).ok())
                    .is_some_and(|(id, public)| id.public_key_der == public),
                _ => false,
            };
            if valid {
                continue;
            }
            let (issued, key) = ca.issue_with_new_key(&etcd_leaf_spec(seed, kind))?;
            self.write_secret(&key_path, &key)?;
            self.write_public(&cert_path, &issued.cert_pem)?;
        }
        self.write_public(&self.layout.ca_cert(), ca.cert_pem())
    }

    fn write_etcd_config(
        &self,
        seed: &Seed,
        initial_cluster: &str,
        state: &str,
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.layout.etcd_dir()).context("creating the etcd directory")?;
        let l = &self.layout;
        let security = |kind: &str| {
            serde_json::json!({
                "cert-file": l.etcd_cert(kind),
                "key-file": l.etcd_key(kind),
                "client-cert-auth": true,
                "trusted-ca-file": l.ca_cert(),
            })
        };
        let config = serde_json::json!({
            "name": seed.node.name,
            "data-dir": l.etcd_data(),
            "listen-peer-urls": Self::peer_url(seed),
            "listen-client-urls": Self::client_url(seed),
            "initial-advertise-peer-urls": Self::peer_url(seed),
            "advertise-client-urls": Self::client_url(seed),
            "initial-cluster": initial_cluster,
            "initial-cluster-state": state,
            "initial-cluster-token": seed.cluster.id,
            "client-transport-security": security("server"),
            "peer-transport-security": security("peer"),
            // Defaults of etcd's flags do not apply to a config file.
            "enable-grpc-gateway": true,
            "logger": "zap",
            "log-outputs": ["stderr"],
        });
        let yaml = serde_yaml_ng::to_string(&config)?;
        self.write_public(&l.etcd_config(), &yaml)
    }

    fn local_etcd(&self, seed: &Seed, others: &[String]) -> anyhow::Result<Etcd> {
        let local = Self::client_url(seed);
        let mut endpoints: Vec<String> = others.iter().filter(|e| **e != local).cloned().collect();
        endpoints.insert(0, local);
        self.etcd(endpoints)
    }

    fn etcd(&self, endpoints: Vec<String>) -> anyhow::Result<Etcd> {
        let l = &self.layout;
        Etcd::new(
            endpoints,
            &l.read(&l.ca_cert())?,
            &l.read(&l.node_cert())?,
            &self.node_key()?,
        )
    }

    /// The cluster's etcd without this node's own endpoint: a joining node's
    /// etcd is a learner, which answers no membership calls; and a reimaged
    /// node's endpoint is still listed for the member it replaces.
    fn other_members(&self, seed: &Seed) -> anyhow::Result<Etcd> {
        let own = Self::client_url(seed);
        let mut endpoints = self.layout.load_node_config()?.etcd_endpoints;
        endpoints.retain(|e| *e != own);
        if endpoints.is_empty() {
            bail!("no etcd endpoint of another control-plane node is known");
        }
        self.etcd(endpoints)
    }

    /// Join as a control-plane: add this node to etcd as a learner (removing
    /// a stale member with the same name or peer URL first).
    async fn etcd_member(&mut self, seed: &Seed) -> anyhow::Result<()> {
        if self.layout.etcd_data().join("member").exists() {
            tracing::info!("etcd data directory exists; this member joined before");
            return Ok(());
        }
        let etcd = self.other_members(seed)?;
        let peer = Self::peer_url(seed);
        let deadline = tokio::time::Instant::now() + self.opts.timeout;
        let (id, members) = loop {
            for m in etcd.members().await? {
                if m.name == seed.node.name || m.peer_urls.contains(&peer) {
                    tracing::info!("removing stale etcd member {:x} ({:?})", m.id, m.name);
                    etcd.member_remove(m.id).await?;
                }
            }
            match etcd.member_add(std::slice::from_ref(&peer), true).await {
                Ok(added) => break added,
                // etcd takes one learner at a time and refuses changes while a
                // new member is still starting ("unhealthy cluster"): wait.
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::info!("cannot add the etcd member yet ({e:#}); waiting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let initial: Vec<String> = members
            .iter()
            .flat_map(|m| {
                let name = if m.id == id {
                    seed.node.name.clone()
                } else {
                    m.name.clone()
                };
                m.peer_urls
                    .iter()
                    .map(move |u| format!("{name}={u}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        self.write_etcd_config(seed, &initial.join(","), "existing")?;
        self.state.member_id = Some(id);
        Ok(())
    }

    async fn etcd_started(&self, seed: &Seed) -> anyhow::Result<()> {
        if seed.bootstrap {
            let initial = format!("{}={}", seed.node.name, Self::peer_url(seed));
            self.write_etcd_config(seed, &initial, "new")?;
        }
        self.ensure_etcd(seed).await
    }

    /// Starts etcd if it is not running and waits until it is healthy.
    async fn ensure_etcd(&self, seed: &Seed) -> anyhow::Result<()> {
        self.opts.services.start(&self.layout, Service::Etcd)?;
        let etcd = self.local_etcd(seed, &[])?;
        let deadline = tokio::time::Instant::now() + self.opts.timeout;
        while !etcd.healthy().await {
            if tokio::time::Instant::now() > deadline {
                bail!("etcd at {} did not become healthy", Self::client_url(seed));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    async fn etcd_promoted(&self, seed: &Seed) -> anyhow::Result<()> {
        let config = self.layout.load_node_config()?;
        let etcd = self.other_members(seed)?;
        let members = etcd.members().await?;
        let id = match self.state.member_id {
            Some(id) => id,
            None => members
                .iter()
                .find(|m| m.name == config.name)
                .map(|m| m.id)
                .context("this node is not an etcd member")?,
        };
        let deadline = tokio::time::Instant::now() + self.opts.timeout;
        loop {
            let members = etcd.members().await?;
            match members.iter().find(|m| m.id == id) {
                None => bail!("etcd member {id:x} is gone"),
                Some(m) if !m.is_learner => return Ok(()),
                Some(_) => {}
            }
            match etcd.member_promote(id).await {
                Ok(()) => {
                    tracing::info!("etcd member {id:x} promoted");
                    return Ok(());
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!("promotion not possible yet: {e:#}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Bootstrap: cluster record, bootstrap token records, this node's record.
    async fn cluster_init(&self, seed: &Seed) -> anyhow::Result<()> {
        let etcd = self.local_etcd(seed, &[])?;
        let cluster = ClusterRecord {
            name: seed.cluster.name.clone(),
            id: seed.cluster.id.clone(),
            ca_cert_hash: seed.cluster.ca_cert_hash.clone(),
        };
        etcd.create(&registry::cluster_key(), &serde_json::to_vec(&cluster)?)
            .await?;
        for token in &seed.tokens {
            etcd.create(&registry::token_key(&token.id), &serde_json::to_vec(token)?)
                .await?;
        }
        let cert = self.layout.read(&self.layout.node_cert())?;
        let id = pki::identity_of_pem(&cert)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let record = NodeRecord {
            name: seed.node.name.clone(),
            role: seed.node.role,
            addresses: seed.node.addresses.clone(),
            image_version: self.image_version(),
            cert_serial: id.serial,
            key_id: pki::spki_pin(&id.public_key_der),
            certificate: cert,
            enrolled_at: now,
            renewed_at: now,
            superseded: Vec::new(),
        };
        etcd.create(
            &registry::node_key(&seed.node.name),
            &serde_json::to_vec(&record)?,
        )
        .await?;
        let api = vec![seed::host_port(seed.primary_ip(), seed.node.ports.api)];
        self.write_node_config(seed, vec![Self::client_url(seed)], api)
    }

    /// Start the substrate API, wait for it, and register this node's
    /// control-plane services.
    async fn api_started(&self, seed: &Seed) -> anyhow::Result<()> {
        // A joining control-plane talks to its own etcd first from now on.
        let mut config = self.layout.load_node_config()?;
        let local = Self::client_url(seed);
        config.etcd_endpoints.retain(|e| *e != local);
        config.etcd_endpoints.insert(0, local);
        let listen = seed::host_port(seed.primary_ip(), seed.node.ports.api);
        // ... and its own API (the CLI on this node asks it first).
        config.api_endpoints.retain(|e| *e != listen);
        config.api_endpoints.insert(0, listen.clone());
        config.api_listen = Some(listen.clone());
        self.write_public(
            &self.layout.node_config(),
            &serde_json::to_string_pretty(&config)?,
        )?;

        let etcd = self.local_etcd(seed, &config.etcd_endpoints)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for (name, port) in [
            (API_SERVICE, seed.node.ports.api),
            (ETCD_SERVICE, seed.node.ports.etcd_client),
        ] {
            let record = ServiceRecord {
                name: name.into(),
                id: seed.node.name.clone(),
                node: seed.node.name.clone(),
                address: seed.primary_ip().to_string(),
                port,
                protocol: "https".into(),
                tags: vec!["control-plane".into()],
                metadata: Default::default(),
                registered_at: now,
            };
            etcd.put(
                &registry::service_key(name, &seed.node.name),
                &serde_json::to_vec(&record)?,
            )
            .await?;
        }

        self.opts.services.start(&self.layout, Service::Api)?;
        let l = &self.layout;
        let client = tls::http_client(tls::client_config(&l.read(&l.ca_cert())?, None)?)?;
        let url = format!("https://{listen}/healthz");
        let deadline = tokio::time::Instant::now() + self.opts.timeout;
        loop {
            match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => tracing::debug!("{url}: {}", r.status()),
                Err(e) => tracing::debug!("{url}: {e}"),
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the substrate API at {url} did not come up");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_config_from_seed() {
        let yaml = "version: 1
cluster:
  name: demo
  id: 0123456789abcdef0123456789abcdef
  ca_cert_hash: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
  endpoints: [10.0.0.1:10016]
node:
  name: w1
  role: worker
  addresses: [10.0.0.5/24, fd00::5/64]
  gateway: 10.0.0.254
token: abcdef.0123456789abcdef
";
        let seed = Seed::parse(yaml, "test").unwrap();
        let text = network_config(&seed);
        assert!(
            text.contains("[Match]\nType=ether\nName=en* eth*\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "[Network]\nAddress=10.0.0.5/24\nAddress=fd00::5/64\nGateway=10.0.0.254\n"
            ),
            "{text}"
        );
        assert_eq!(
            Step::plan(&seed),
            [Step::Seed, Step::Key, Step::NodeCert, Step::Enrolled]
        );
    }
}
