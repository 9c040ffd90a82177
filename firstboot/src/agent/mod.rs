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
//! | restoring control-plane (a bootstrap seed with `restore`) | seed (and the snapshot, checked), key, node-cert (signed locally), etcd-certs, etcd-restored (the snapshot as a one-member cluster), etcd-started, cluster-restored, api-started, enrolled |
//! | joining control-plane | seed, key, node-cert (enrolled over the API), etcd-certs, etcd-member (learner added), etcd-started (existing cluster), etcd-promoted, api-started, enrolled |
//! | worker | seed, key, node-cert (enrolled over the API), enrolled |
//!
//! One module per concept: [`steps`] (the step machine and its checkpoints),
//! [`boot_config`] (network, hostname), [`identity`] (key, CSR, node
//! certificate), [`etcd_membership`] (etcd certificates, configuration,
//! learner add and promotion), [`bootstrap`] (a new cluster's records),
//! [`restore`] (a cluster restored from a backup),
//! [`services`] (the API started, the node's services registered).

mod boot_config;
mod bootstrap;
mod etcd_membership;
mod identity;
mod replace;
mod restore;
mod services;
mod steps;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use globular_cluster::fsutil::{self, PUBLIC, SECRET};
use globular_cluster::seed::{self, Seed};
use globular_cluster::Role;
use globular_task::Task;

use crate::datasource::{self, Datasource};
use crate::layout::Layout;
use crate::runtime::{self, Threads};
use crate::services::Manager;
pub use boot_config::{network_config, NETWORK_FILE};
pub use etcd_membership::{etcd_leaf_spec, ETCD_CERT_KINDS};
pub use replace::{etcd_data_sound, replace_etcd_member};
pub use services::control_plane_records;
pub use steps::{State, Step, PAUSE_ENV};

/// The unit that applies the image's packages (`globular apply --installed`).
pub const PACKAGES_UNIT: &str = "globular-packages.service";
/// The health loop (`globular health --watch`).
pub const HEALTH_UNIT: &str = "globular-health.service";

/// Runs the packages' unit (`globular apply --installed`) again unless its
/// run is going on now, without waiting: the health loop's way to renew
/// packages' certificates. `false`: a run is going on (it is left alone;
/// restarting it would kill an apply that may hold the package lock). The
/// unit stays active after its run (`RemainAfterExit=`): a finished one is
/// restarted.
pub fn start_packages_unit() -> anyhow::Result<bool> {
    let state = Task::new(format!("asking systemd about {PACKAGES_UNIT}"), "systemctl")
        .package("systemd")
        .args(["show", "--property=ActiveState,SubState", PACKAGES_UNIT])
        .read_string()?;
    let field = |name: &str| {
        state
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or("")
            .to_owned()
    };
    let verb = match (field("ActiveState").as_str(), field("SubState").as_str()) {
        ("activating" | "reloading" | "deactivating", _) | (_, "running" | "start") => {
            return Ok(false)
        }
        ("active", _) => "restart",
        _ => "start",
    };
    Task::new(format!("{verb}ing {PACKAGES_UNIT}"), "systemctl")
        .package("systemd")
        .args([verb, "--no-block", PACKAGES_UNIT])
        .run()?;
    Ok(true)
}

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

/// Runs the agent to completion.
pub fn run(opts: &Options) -> anyhow::Result<Outcome> {
    runtime::block_on(Threads::Workers(2), Agent::new(opts)?.run())
}

struct Agent {
    opts: Options,
    layout: Layout,
    state: State,
    /// etcd client URLs of other members known from elsewhere than
    /// `node.json` (the health loop's record of the cluster's members).
    peers: Vec<String>,
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
            peers: Vec::new(),
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
        if self.opts.services == Manager::Systemd {
            // The image's packages for this role (Kubernetes on a control
            // plane) and the health loop: from now on the units start on
            // every boot by themselves (ConditionPathExists= on the
            // enrolled marker).
            Task::new("starting the node's packages and health loop", "systemctl")
                .package("systemd")
                .args(["start", "--no-block", PACKAGES_UNIT, HEALTH_UNIT])
                .run()?;
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
        let seed = Seed::parse(&text, &source.name())?;
        if let Some(restore) = &seed.restore {
            self.take_snapshot(&seed, restore, source)?;
        }
        fsutil::write_atomic(&stored, text.as_bytes(), SECRET)
            .with_context(|| format!("writing {}", stored.display()))?;
        self.state.seed_source = Some(source.name());
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
            Step::EtcdRestored => self.etcd_restored(seed),
            Step::ClusterRestored => self.cluster_restored(seed).await,
            Step::ApiStarted => self.api_started(seed).await,
            Step::Enrolled => {
                // The stored seed no longer needs the token and the ticket:
                // a stolen disk of an enrolled node does not carry them.
                if !seed.joined {
                    self.write_secret(&self.layout.seed(), &seed.joined().to_yaml())?;
                }
                fsutil::write_atomic(
                    &self.layout.enrolled(),
                    format!("{}\n", time::OffsetDateTime::now_utc().unix_timestamp()).as_bytes(),
                    PUBLIC,
                )
                .context("writing the enrolled marker")
            }
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
}
