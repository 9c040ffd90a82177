//! The step machine's steps and their checkpoints (`state.json`).

use std::time::Duration;

use anyhow::Context as _;
use globular_cluster::fsutil::{self, PUBLIC};
use globular_cluster::seed::Seed;
use globular_cluster::Role;
use serde::{Deserialize, Serialize};

use crate::layout::Layout;

/// Environment variable of the crash tests: the agent stops (sleeps, waiting
/// to be killed) after doing the work of this step but before recording it.
pub const PAUSE_ENV: &str = "GLOBULAR_TEST_PAUSE_BEFORE";

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
    EtcdRestored,
    ClusterRestored,
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
            Step::EtcdRestored => "etcd-restored",
            Step::ClusterRestored => "cluster-restored",
            Step::ApiStarted => "api-started",
            Step::Enrolled => "enrolled",
        }
    }

    /// The steps of a node with this seed, in order.
    pub fn plan(seed: &Seed) -> Vec<Step> {
        use Step::*;
        match (seed.node.role, seed.bootstrap) {
            (Role::ControlPlane, true) if seed.restore.is_some() => vec![
                Seed,
                Key,
                NodeCert,
                EtcdCerts,
                EtcdRestored,
                EtcdStarted,
                ClusterRestored,
                ApiStarted,
                Enrolled,
            ],
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
    pub(super) fn load(layout: &Layout) -> anyhow::Result<State> {
        let path = layout.state();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub(super) fn record(&mut self, layout: &Layout, step: Step) -> anyhow::Result<()> {
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
