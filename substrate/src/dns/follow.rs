//! The zone follows the registry: read it whole at one revision, build the
//! zone, publish it; then watch etcd from the next revision, apply each
//! change the watch carries (key and new value) to the records held here,
//! and publish again. The registry is read whole only at the start of each
//! watch session: a crowd of enrollments costs etcd one stream, not one
//! full read per change (each node record carries its certificate).
//!
//! A controller in the project's sense: it reads `/globular/cluster`,
//! `/globular/nodes/`, `/globular/services/`, owns the published zone, and
//! runs on every change (the watch) and at the end of every watch session
//! ([`WATCH_SESSION`]), which also moves a watch off an etcd member that
//! went away. While etcd does not answer, the last zone stays published.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use globular_cluster::registry::{self, ClusterRecord};
use tokio::sync::watch;

use crate::etcd::{Etcd, WatchEvent};

use super::zone::{Registry, Zone};

/// The registry as the follower holds it: records by etcd key.
#[derive(Debug, Clone)]
struct Held {
    cluster: ClusterRecord,
    nodes: BTreeMap<String, registry::NodeRecord>,
    services: BTreeMap<String, registry::ServiceRecord>,
    revision: i64,
}

impl Held {
    /// Applies one change; a value that does not parse removes the record
    /// (and is logged), as a full read would leave it out.
    fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        fn put<T: serde::de::DeserializeOwned>(
            map: &mut BTreeMap<String, T>,
            key: &str,
            value: Option<&[u8]>,
        ) {
            match value.map(serde_json::from_slice::<T>) {
                Some(Ok(record)) => {
                    map.insert(key.to_owned(), record);
                }
                Some(Err(e)) => {
                    tracing::warn!("dns: skipping {key}: {e}");
                    map.remove(key);
                }
                None => {
                    map.remove(key);
                }
            }
        }
        if key.starts_with(&registry::nodes_prefix()) {
            put(&mut self.nodes, key, value);
        } else if key.starts_with(&registry::services_prefix()) {
            put(&mut self.services, key, value);
        } else if key == registry::cluster_key() {
            if let Some(Ok(cluster)) = value.map(serde_json::from_slice::<ClusterRecord>) {
                self.cluster = cluster;
            }
        }
    }

    fn registry(&self) -> Registry {
        Registry {
            cluster: self.cluster.clone(),
            nodes: self.nodes.values().cloned().collect(),
            services: self.services.values().cloned().collect(),
            revision: self.revision,
        }
    }
}

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
    Ok(read_held(etcd).await?.registry())
}

/// Reads the registry at one revision, records by key.
async fn read_held(etcd: &Etcd) -> anyhow::Result<Held> {
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
    let cluster = serde_json::from_slice::<ClusterRecord>(&cluster.1)
        .context("parsing the cluster record")?;
    let mut held = Held {
        cluster,
        nodes: BTreeMap::new(),
        services: BTreeMap::new(),
        revision,
    };
    for (key, value) in nodes.iter().chain(&services) {
        held.apply(key, Some(value));
    }
    Ok(held)
}

/// The zone of the registry as it is now.
pub async fn load(etcd: &Etcd) -> anyhow::Result<Zone> {
    Zone::build(&read(etcd).await?)
}

impl Held {
    /// Applies the changes of one watch message at `revision`; whether any
    /// of them touches the zone.
    fn take(&mut self, revision: i64, changes: Vec<(String, Option<Vec<u8>>)>) -> bool {
        let mut touched = false;
        for (key, value) in changes {
            if relevant(&key) {
                self.apply(&key, value.as_deref());
                touched = true;
            }
        }
        self.revision = self.revision.max(revision);
        touched
    }
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
        let held = match read_held(etcd).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!("dns: reading the registry: {e:#}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if let Err(e) = publish(&held, zone) {
            tracing::warn!("dns: building the zone: {e:#}");
        }
        match watch_session(etcd, zone, held).await {
            Ok(()) => backoff = BACKOFF,
            Err(e) => {
                tracing::warn!("dns: watching the registry: {e:#}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Publishes the zone of `held` if it is newer than the published one.
fn publish(held: &Held, zone: &watch::Sender<Option<Arc<Zone>>>) -> anyhow::Result<()> {
    let new = Zone::build(&held.registry())?;
    let revision = new.revision();
    zone.send_if_modified(|current| {
        if current.as_ref().is_some_and(|z| z.revision() >= revision) {
            return false;
        }
        tracing::debug!("dns: zone {} serial {}", new.origin(), new.serial());
        *current = Some(Arc::new(new));
        true
    });
    Ok(())
}

/// One watch stream: every relevant change is applied to `held` and the
/// zone published again.
async fn watch_session(
    etcd: &Etcd,
    zone: &watch::Sender<Option<Arc<Zone>>>,
    mut held: Held,
) -> anyhow::Result<()> {
    let mut watch = etcd
        .watch(registry::PREFIX, held.revision + 1, WATCH_SESSION)
        .await?;
    while let Some(event) = watch.next().await? {
        match event {
            WatchEvent::Created => {}
            WatchEvent::Compacted => return Ok(()),
            WatchEvent::Changed { revision, changes } => {
                if !held.take(revision, changes) {
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
                        Ok(Ok(Some(WatchEvent::Changed { revision, changes }))) => {
                            held.take(revision, changes);
                        }
                        Ok(Ok(Some(WatchEvent::Created))) => {}
                        Ok(Err(e)) => return Err(e),
                    }
                };
                publish(&held, zone)?;
                if ended {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}
