//! Scheduled backups (`globular backup run`, from `globular-backup.timer`
//! on control planes every few minutes): the control plane whose etcd
//! member leads the cluster takes a backup when the last one in the
//! registry is older than the policy's interval, prunes its own, copies
//! the new one to every target of the policy, and records what happened in
//! the registry (`/globular/backups/latest`). One backup per interval for
//! the whole cluster, whichever control plane leads.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use globular_cluster::backup::policy::Status;
use globular_cluster::backup::{self, EXTENSION};
use globular_cluster::registry;
use globular_cluster::seed;
use time::OffsetDateTime;

use crate::etcd_client;
use crate::layout::Layout;
use crate::runtime::{self, Threads};

/// `globular backup run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub dir: PathBuf,
    /// Take one now, leader or not, due or not (before an upgrade).
    pub force: bool,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do, and why.
    Skipped(String),
    Taken(Status),
}

/// Takes the cluster's backup if it is this node's turn (see the module).
/// A copy that failed every attempt is recorded, then reported as an error.
pub fn run(layout: &Layout, opts: &RunOptions) -> anyhow::Result<Outcome> {
    let (config, seed) = super::control_plane(layout)?;
    let policy = seed.backup.clone().unwrap_or_default();
    if seed.cluster.backup_recipients.is_empty() {
        return Ok(Outcome::Skipped(
            "the cluster has no backup recipients (builder cluster new --backup-recipient): \
             no scheduled backups"
                .into(),
        ));
    }
    let own = format!(
        "https://{}",
        seed::host_port(seed.primary_ip(), seed.node.ports.etcd_client)
    );
    let local = etcd_client::substrate(layout, vec![own])?;
    let cluster = etcd_client::substrate(layout, config.etcd_endpoints.clone())?;
    let (leader, latest) = runtime::block_on(Threads::One, async {
        let leader = local.is_leader().await?;
        let latest = match cluster.get(&registry::backup_status_key()).await? {
            Some((value, _)) => serde_json::from_slice::<Status>(&value).ok(),
            None => None,
        };
        anyhow::Ok((leader, latest))
    })?;
    let now = OffsetDateTime::now_utc();
    if !opts.force {
        if !leader {
            return Ok(Outcome::Skipped(
                "this node's etcd member is not the leader: the leader takes the backups".into(),
            ));
        }
        if let Some(latest) = &latest {
            let due = latest.created + policy.interval();
            if due > now {
                return Ok(Outcome::Skipped(format!(
                    "the last backup ({}) is recent: the next is due at {due}",
                    latest.name
                )));
            }
        }
    }
    let manifest = super::create(
        layout,
        &super::CreateOptions {
            dir: opts.dir.clone(),
            name: None,
            recipients: Vec::new(),
        },
    )?;
    let archive = opts.dir.join(format!("{}.{EXTENSION}", manifest.name));
    let removed = super::prune(&opts.dir, policy.keep, policy.max_age())?;
    if !removed.is_empty() {
        tracing::info!("removed {} old backups here", removed.len());
    }
    // Hashed while it was written: its checksum file has it.
    let sha256 = backup::recorded_sum(&archive)?;
    let size = std::fs::metadata(&archive)
        .with_context(|| format!("reading {}", archive.display()))?
        .len();
    let status = runtime::block_on(Threads::One, async {
        let mut copies = Vec::new();
        for target in &policy.targets {
            copies.push(super::targets::copy(&archive, &sha256, target, &policy).await);
        }
        let status = Status {
            name: manifest.name.clone(),
            created: manifest.created,
            node: manifest.node.clone(),
            sha256: sha256.clone(),
            size,
            revision: manifest.etcd.revision,
            copies,
        };
        cluster
            .put(
                &registry::backup_status_key(),
                &serde_json::to_vec(&status)?,
            )
            .await
            .context("recording the backup in the registry")?;
        anyhow::Ok(status)
    })?;
    let failed: Vec<String> = status
        .copies
        .iter()
        .filter(|c| !c.ok)
        .map(|c| {
            format!(
                "{} ({} attempts): {}",
                c.target,
                c.attempts,
                c.error.as_deref().unwrap_or("failed")
            )
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "backup {} was taken, but copies failed: {}",
            status.name,
            failed.join("; ")
        );
    }
    Ok(Outcome::Taken(status))
}

/// The registry's record of the last scheduled backup, if there is one.
pub fn status(layout: &Layout) -> anyhow::Result<Option<Status>> {
    let config = layout.load_node_config()?;
    let etcd = etcd_client::substrate(layout, config.etcd_endpoints)?;
    runtime::block_on(Threads::One, async {
        match etcd.get(&registry::backup_status_key()).await? {
            Some((value, _)) => Ok(Some(
                serde_json::from_slice(&value).context("the backup status record")?,
            )),
            None => Ok(None),
        }
    })
}
