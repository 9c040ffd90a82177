//! The zone follows the registry: read it whole at one revision, build the
//! zone, publish it; then watch etcd from the next revision and do it again
//! on every change to the cluster record, a node or a service.
//!
//! A controller in the project's sense: it reads `/globular/cluster`,
//! `/globular/nodes/`, `/globular/services/`, owns the published zone, and
//! runs on every change (the watch) and at the end of every watch session
//! ([`WATCH_SESSION`]), which also moves a watch off an etcd member that
//! went away. While etcd does not answer, the last zone stays published.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use globular_cluster::registry::{self, ClusterRecord};
use tokio::sync::watch;

use crate::etcd::{Etcd, WatchEvent};

use super::zone::{Registry, Zone};

/// How long one watch stream is kept before it is made again.
pub const WATCH_SESSION: Duration = Duration::from_secs(30);
/// A change is published once the watch has been quiet this long (or
/// [`MAX_COALESCE`] after the first change): a burst of registrations is one
/// read of the registry, not one per event.
const COALESCE: Duration = Duration::from_millis(10);
const MAX_COALESCE: Duration = Duration::from_millis(100);
/// The wait after a failed read or watch, doubled up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Reads the registry at one revision.
pub async fn read(etcd: &Etcd) -> anyhow::Result<Registry> {
    let (nodes, revision) = etcd.list_at(&registry::nodes_prefix(), None).await?;
    let (services, _) = etcd
        .list_at(&registry::services_prefix(), Some(revision))
        .await?;
    let (cluster, _) = etcd
        .list_at(&registry::cluster_key(), Some(revision))
        .await?;
    let cluster = cluster
        .iter()
        .find(|(k, _)| *k == registry::cluster_key())
        .context("the cluster record is missing")?;
    Ok(Registry {
        cluster: serde_json::from_slice::<ClusterRecord>(&cluster.1)
            .context("parsing the cluster record")?,
        nodes: parse_all(nodes, "node record"),
        services: parse_all(services, "service record"),
        revision,
    })
}

/// The records that parse; the others are logged and left out (one bad
/// record does not take the zone down).
fn parse_all<T: serde::de::DeserializeOwned>(kvs: Vec<(String, Vec<u8>)>, what: &str) -> Vec<T> {
    kvs.into_iter()
        .filter_map(|(key, value)| match serde_json::from_slice(&value) {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::warn!("dns: skipping {what} {key}: {e}");
                None
            }
        })
        .collect()
}

/// The zone of the registry as it is now.
pub async fn load(etcd: &Etcd) -> anyhow::Result<Zone> {
    Zone::build(&read(etcd).await?)
}

/// Whether a change to `key` changes the zone.
fn relevant(key: &str) -> bool {
    key == registry::cluster_key()
        || key.starts_with(&registry::nodes_prefix())
        || key.starts_with(&registry::services_prefix())
}

/// Keeps `zone` equal to the registry's until `shutdown` completes.
pub async fn follow(
    etcd: Etcd,
    zone: watch::Sender<Option<Arc<Zone>>>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::select! {
        _ = shutdown => {}
        _ = follow_forever(&etcd, &zone) => {}
    }
}

async fn follow_forever(etcd: &Etcd, zone: &watch::Sender<Option<Arc<Zone>>>) {
    let mut backoff = BACKOFF;
    loop {
        let revision = match publish(etcd, zone).await {
            Ok(revision) => revision,
            Err(e) => {
                tracing::warn!("dns: reading the registry: {e:#}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        match watch_session(etcd, zone, revision).await {
            Ok(()) => backoff = BACKOFF,
            Err(e) => {
                tracing::warn!("dns: watching the registry: {e:#}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Reads the registry, publishes its zone if it differs, returns its revision.
async fn publish(etcd: &Etcd, zone: &watch::Sender<Option<Arc<Zone>>>) -> anyhow::Result<i64> {
    let new = load(etcd).await?;
    let revision = new.revision();
    zone.send_if_modified(|current| {
        if current.as_ref().is_some_and(|z| z.revision() >= revision) {
            return false;
        }
        tracing::debug!("dns: zone {} serial {}", new.origin(), new.serial());
        *current = Some(Arc::new(new));
        true
    });
    Ok(revision)
}

/// One watch stream: every relevant change republishes the zone.
async fn watch_session(
    etcd: &Etcd,
    zone: &watch::Sender<Option<Arc<Zone>>>,
    revision: i64,
) -> anyhow::Result<()> {
    let mut watch = etcd
        .watch(registry::PREFIX, revision + 1, WATCH_SESSION)
        .await?;
    while let Some(event) = watch.next().await? {
        match event {
            WatchEvent::Created => {}
            WatchEvent::Compacted => return Ok(()),
            WatchEvent::Changed { keys, .. } => {
                if !keys.iter().any(|k| relevant(k)) {
                    continue;
                }
                // Reading a watch message is cancel-safe: the bytes of a
                // chunk are kept once it arrived.
                let last = tokio::time::Instant::now() + MAX_COALESCE;
                let ended = loop {
                    let until = last.min(tokio::time::Instant::now() + COALESCE);
                    match tokio::time::timeout_at(until, watch.next()).await {
                        Err(_quiet) => break false,
                        Ok(Ok(Some(WatchEvent::Compacted) | None)) => break true,
                        Ok(Ok(Some(_))) => {}
                        Ok(Err(e)) => return Err(e),
                    }
                };
                publish(etcd, zone).await?;
                if ended {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}
