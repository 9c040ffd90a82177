//! The zone follows the registry: read it whole at one revision, build the
//! zone, publish it; then watch etcd from the next revision, apply each
//! change the watch carries (key and new value) to the records held here,
//! and publish again. The registry is read whole only at the start of each
//! watch session: a crowd of enrollments costs etcd one stream, not one
//! full read per change.
//!
//! A controller in the project's sense: it reads `/globular/cluster`, the
//! address index `/globular/addresses/` (IP → node name, written with the
//! node records) and `/globular/services/`, owns the published zone, and
//! runs on every change (the watch) and at the end of every watch session
//! ([`WATCH_SESSION`]), which also moves a watch off an etcd member that
//! went away. While etcd does not answer, the last zone stays published.
//! Node records themselves are not read: they carry certificates, which
//! etcd would stream for every enrollment.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use globular_cluster::registry::{self, ClusterRecord};
use tokio::sync::watch;

use crate::etcd::{Etcd, WatchEvent};

use super::nodes::NodeNames;
use super::zone::{self, Zone};

/// The registry as the follower holds it.
#[derive(Debug, Clone)]
struct Held {
    cluster: ClusterRecord,
    /// The address index: each address and its node.
    addresses: BTreeMap<IpAddr, String>,
    /// The same by node.
    nodes: BTreeMap<String, BTreeSet<IpAddr>>,
    /// The zone's node names, changed with `nodes`.
    names: NodeNames,
    /// Service records by key.
    services: BTreeMap<String, registry::ServiceRecord>,
    revision: i64,
}

impl Held {
    fn new(cluster: ClusterRecord, revision: i64) -> anyhow::Result<Held> {
        Ok(Held {
            names: NodeNames::new(zone::origin_of(&cluster)?),
            cluster,
            addresses: BTreeMap::new(),
            nodes: BTreeMap::new(),
            services: BTreeMap::new(),
            revision,
        })
    }

    /// Applies one change; a value that does not parse removes the record
    /// (and is logged), as a full read would leave it out.
    fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        if let Some(ip) = key.strip_prefix(&registry::addresses_prefix()) {
            let Ok(ip) = ip.parse::<IpAddr>() else {
                tracing::warn!("dns: skipping {key}: not an IP address");
                return;
            };
            let node = value.and_then(|v| match std::str::from_utf8(v) {
                Ok(node) => Some(node.to_owned()),
                Err(_) => {
                    tracing::warn!("dns: skipping {key}: the node name is not UTF-8");
                    None
                }
            });
            self.set_owner(ip, node);
        } else if key.starts_with(&registry::services_prefix()) {
            match value.map(serde_json::from_slice::<registry::ServiceRecord>) {
                Some(Ok(record)) => {
                    self.services.insert(key.to_owned(), record);
                }
                Some(Err(e)) => {
                    tracing::warn!("dns: skipping {key}: {e}");
                    self.services.remove(key);
                }
                None => {
                    self.services.remove(key);
                }
            }
        } else if key == registry::cluster_key() {
            let Some(Ok(cluster)) = value.map(serde_json::from_slice::<ClusterRecord>) else {
                return;
            };
            match zone::origin_of(&cluster) {
                Ok(origin) if origin != *self.names.origin() => {
                    self.names = NodeNames::new(origin);
                    for (node, ips) in &self.nodes {
                        self.names.set(node, ips.iter().copied());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("dns: {e:#}");
                    return;
                }
            }
            self.cluster = cluster;
        }
    }

    /// `ip` now belongs to `owner` (none: to no node); the names of the
    /// nodes it leaves and joins change.
    fn set_owner(&mut self, ip: IpAddr, owner: Option<String>) {
        let old = match &owner {
            Some(node) => self.addresses.insert(ip, node.clone()),
            None => self.addresses.remove(&ip),
        };
        if old == owner {
            return;
        }
        for (node, add) in [(old, false), (owner, true)] {
            let Some(node) = node else { continue };
            let ips = self.nodes.entry(node.clone()).or_default();
            if add {
                ips.insert(ip);
            } else {
                ips.remove(&ip);
            }
            self.names.set(&node, ips.iter().copied());
            if ips.is_empty() {
                self.nodes.remove(&node);
            }
        }
    }

    /// The zone of what is held.
    fn zone(&self) -> Zone {
        Zone::assemble(self.names.clone(), self.services.values(), self.revision)
    }
}

/// How long one watch stream is kept before it is made again.
pub const WATCH_SESSION: Duration = Duration::from_secs(30);
/// A change is published once the watch has been quiet this long (or
/// [`MAX_COALESCE`] after the first change): a burst of registrations is one
/// read of the registry, not one per event.
const COALESCE: Duration = Duration::from_millis(10);
const MAX_COALESCE: Duration = Duration::from_millis(100);
/// While changes keep coming, building the zone takes at most a tenth of
/// the follower's time: after a build that took `t`, the next waits up to
/// `9 t` for more changes (up to [`MAX_PAUSE`], so answers still follow
/// within a second). A crowd of enrollments into a large zone costs a
/// bounded share of a core.
const BUILD_SHARE: u32 = 9;
const MAX_PAUSE: Duration = Duration::from_millis(600);
/// The wait after a failed read or watch, doubled up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the follower reads and watches.
fn watched() -> [String; 3] {
    [
        registry::addresses_prefix(),
        registry::services_prefix(),
        registry::cluster_key(),
    ]
}

/// Reads the registry at one revision.
async fn read_held(etcd: &Etcd) -> anyhow::Result<Held> {
    let [addresses, services, cluster] = watched();
    let (addresses, revision) = etcd.list_at(&addresses, None).await?;
    let (services, _) = etcd.list_at(&services, Some(revision)).await?;
    let (cluster, _) = etcd.list_at(&cluster, Some(revision)).await?;
    let cluster = cluster
        .iter()
        .find(|(k, _)| *k == registry::cluster_key())
        .context("the cluster record is missing")?;
    let cluster = serde_json::from_slice::<ClusterRecord>(&cluster.1)
        .context("parsing the cluster record")?;
    let mut held = Held::new(cluster, revision)?;
    for (key, value) in addresses.iter().chain(&services) {
        held.apply(key, Some(value));
    }
    Ok(held)
}

/// The zone of the registry as it is now.
pub async fn load(etcd: &Etcd) -> anyhow::Result<Zone> {
    Ok(read_held(etcd).await?.zone())
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
        || key.starts_with(&registry::addresses_prefix())
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
        publish(&held, zone);
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

/// Publishes the zone of `held` if it is newer than the published one;
/// how long building it took.
fn publish(held: &Held, zone: &watch::Sender<Option<Arc<Zone>>>) -> Duration {
    let started = std::time::Instant::now();
    let new = held.zone();
    let spent = started.elapsed();
    let revision = new.revision();
    zone.send_if_modified(|current| {
        if current.as_ref().is_some_and(|z| z.revision() >= revision) {
            return false;
        }
        tracing::debug!("dns: zone {} serial {}", new.origin(), new.serial());
        *current = Some(Arc::new(new));
        true
    });
    spent
}

/// One watch stream: every relevant change is applied to `held` and the
/// zone published again.
async fn watch_session(
    etcd: &Etcd,
    zone: &watch::Sender<Option<Arc<Zone>>>,
    mut held: Held,
) -> anyhow::Result<()> {
    let mut watch = etcd
        .watch(
            &watched().each_ref().map(String::as_str),
            held.revision + 1,
            WATCH_SESSION,
        )
        .await?;
    let mut pause = MAX_COALESCE;
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
                let last = tokio::time::Instant::now() + pause;
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
                let spent = publish(&held, zone);
                pause = (spent * BUILD_SHARE).clamp(MAX_COALESCE, MAX_PAUSE);
                if ended {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::zone::tests_support::registry;
    use crate::dns::{Registry, ZoneNode};

    fn own(held: &mut Held, ip: &str, node: Option<&str>) {
        let key = registry::address_key(&ip.parse().unwrap());
        held.apply(&key, node.map(str::as_bytes));
    }

    /// The zone kept change by change is the zone a full read builds.
    #[test]
    fn changes_give_the_zone_of_a_full_read() {
        let start = registry();
        let mut held = Held::new(start.cluster.clone(), start.revision).unwrap();
        for node in &start.nodes {
            for cidr in &node.addresses {
                own(&mut held, cidr.split('/').next().unwrap(), Some(&node.name));
            }
        }
        for service in &start.services {
            let key = registry::service_key(&service.name, &service.id);
            held.apply(&key, Some(&serde_json::to_vec(service).unwrap()));
        }
        // A node changes its addresses, a control plane leaves (its address
        // and its API instance), a key that is no address, an address that
        // moves to another node, a new worker.
        own(&mut held, "10.0.0.21", None);
        own(&mut held, "10.0.0.22", Some("w1"));
        own(&mut held, "fd00::22", Some("w1"));
        own(&mut held, "10.0.0.2", None);
        held.apply(&registry::service_key("globular.SubstrateApi", "cp2"), None);
        held.apply(
            &format!("{}not-an-ip", registry::addresses_prefix()),
            Some(b"w9"),
        );
        own(&mut held, "10.0.0.23", Some("w3"));
        own(&mut held, "10.0.0.23", Some("w4"));
        own(&mut held, "10.0.0.25", Some("w5"));
        let kept = held.zone().to_master_file();
        let node = |name: &str, addresses: &[&str]| ZoneNode {
            name: name.into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
        };
        let mut expected = Registry {
            nodes: vec![
                node("cp1", &["10.0.0.1/24", "fd00::1/64"]),
                node("w1", &["10.0.0.22/24", "fd00::22/64"]),
                node("w4", &["10.0.0.23/24"]),
                node("w5", &["10.0.0.25/24"]),
            ],
            services: start
                .services
                .iter()
                .filter(|s| s.id != "cp2")
                .cloned()
                .collect(),
            ..start.clone()
        };
        let full = Zone::build(&expected).unwrap().to_master_file();
        assert_eq!(kept, full);
        assert!(!kept.contains("NS cp2."), "{kept}");
        assert!(!kept.lines().any(|l| l.starts_with("cp2.prod.")), "{kept}");
        assert!(!kept.contains("w3.prod"), "{kept}");
        assert!(
            kept.contains("w4.prod.globular.internal. 5 IN A 10.0.0.23"),
            "{kept}"
        );
        assert!(
            kept.contains("w1.prod.globular.internal. 5 IN AAAA fd00::22"),
            "{kept}"
        );
        assert!(!kept.contains("10.0.0.21"), "{kept}");
        // A new domain renames every node.
        let mut cluster = held.cluster.clone();
        cluster.domain = "example.internal".into();
        held.apply(
            &registry::cluster_key(),
            Some(&serde_json::to_vec(&cluster).unwrap()),
        );
        expected.cluster = cluster;
        assert_eq!(
            held.zone().to_master_file(),
            Zone::build(&expected).unwrap().to_master_file()
        );
    }
}
