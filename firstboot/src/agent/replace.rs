//! Replacing this control plane's etcd member whose data is corrupt (the
//! health loop does it when etcd keeps dying and its backend does not
//! open): etcd stopped, the data moved aside, the old member removed and
//! this node added again as a learner through the other members, etcd
//! started with an empty data directory (it copies everything from the
//! leader), promoted, and the old data deleted. The cluster must have
//! quorum without this member.
//!
//! The same replacement puts right a member that etcd's corruption checks
//! named in a `CORRUPT` alarm (its data diverged from the others'): the
//! alarm is disarmed once that member is out of the cluster, before the
//! new one starts (etcd answers `/health` false while an alarm is
//! active, and refuses every read and write of the cluster).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use globular_cluster::seed::Seed;
use globular_substrate::etcd::Alarm;
use globular_task::Task;

use super::{Agent, Options};
use crate::layout::Layout;
use crate::services::{Manager, Service};

/// Whether this node's etcd backend opens (`etcdutl snapshot status` of
/// `member/snap/db`, which reads every page's header and hashes the
/// content); run while etcd is stopped. `Err` says why not.
pub fn etcd_data_sound(layout: &Layout) -> Result<(), String> {
    let db = layout.etcd_data().join("member/snap/db");
    if !db.exists() {
        return Err(format!("{} is missing", db.display()));
    }
    Task::new("checking etcd's backend", "timeout")
        .args(["60", "etcdutl", "snapshot", "status", "-w", "json"])
        .arg(&db)
        .read_string()
        .map(|_| ())
        .map_err(|e| format!("{} does not open: {e}", db.display()))
}

/// Replaces this node's etcd member (see the module docs); `peers` are
/// client URLs of other members; `corrupt`, the `CORRUPT` alarm that named
/// it. Returns what it did.
pub async fn replace_etcd_member(
    root: &Path,
    manager: Manager,
    peers: Vec<String>,
    timeout: Duration,
    corrupt: Option<&Alarm>,
) -> anyhow::Result<String> {
    let opts = Options {
        root: root.to_owned(),
        sysroot: "/".into(),
        seed: None,
        services: manager,
        image_version: None,
        timeout,
        network_dir: None,
        hostname_file: None,
    };
    let mut agent = Agent::new(&opts)?;
    agent.peers = peers;
    let layout = agent.layout.clone();
    let seed_path = layout.seed();
    let seed = Seed::parse(&layout.read(&seed_path)?, &seed_path.display().to_string())?;

    manager.stop(&layout, Service::Etcd)?;
    let data = layout.etcd_data();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let aside = data.with_file_name(format!("data.replaced-{now}"));
    std::fs::rename(&data, &aside)
        .with_context(|| format!("moving {} to {}", data.display(), aside.display()))?;
    tracing::warn!(
        "etcd: replacing this member; its data is in {}",
        aside.display()
    );
    agent.etcd_member(&seed).await?;
    if let Some(alarm) = corrupt {
        // The diverged member is out of the cluster: the others agree.
        agent
            .other_members(&seed)?
            .disarm(alarm)
            .await
            .context("disarming the CORRUPT alarm")?;
        tracing::warn!(
            "etcd: disarmed CORRUPT on the removed member {:x}",
            alarm.member
        );
    }
    agent.ensure_etcd(&seed).await?;
    agent.etcd_promoted(&seed).await?;
    let id = agent.state.member_id.unwrap_or_default();
    // etcd's files are its user's: root takes them back to delete them.
    crate::ownership::reclaim(&aside)?;
    std::fs::remove_dir_all(&aside).with_context(|| format!("removing {}", aside.display()))?;
    Ok(format!(
        "replaced the etcd member: now member {id:x}, a voter with the cluster's data"
    ))
}
