//! One round of the health loop: the checks, their corrections, and what
//! the registry records of this node say about them.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use globular_cluster::registry::{self, ServiceRecord, API_SERVICE, ETCD_SERVICE};

use super::units::{Tracked, Unit};
use super::{Check, Incident, State, Status, KEPT_INCIDENTS};
use crate::layout::Layout;
use crate::renew;
use crate::services::{Manager, Observed, Service};

/// How long etcd may take to answer a check.
const ETCD_ANSWER: Duration = Duration::from_secs(5);
/// A registry record is rewritten when its health changes, and at least
/// this often (its `checked_at`).
const REPUBLISH: i64 = 60;

/// After this many rounds in a row with etcd stopped or restarted, the
/// loop stops it and checks whether its data opens.
const UNSTABLE_ROUNDS: u32 = 3;
/// How often the loop reads etcd's member list (the peers it records).
const PEERS_EVERY: Duration = Duration::from_secs(60);
/// The shortest wait between two replacements for a `CORRUPT` alarm.
const CORRUPT_RETRY: Duration = Duration::from_secs(300);
/// How long replacing a member may take.
const REPLACE_TIMEOUT: Duration = Duration::from_secs(300);

/// The health loop of one node.
#[derive(Debug)]
pub struct Loop {
    pub(super) layout: Layout,
    pub(super) manager: Manager,
    pub(super) state: State,
    /// Per unit name (`etcd`, `kube-apiserver`): what the loop knows of it.
    pub(super) units: BTreeMap<String, Tracked>,
    /// Per systemd unit: what systemd said of it at the start of this
    /// round (one `systemctl show` for all of them).
    pub(super) seen: HashMap<String, Observed>,
    /// Per registry key: the health and incident count last written, and
    /// when.
    published: BTreeMap<String, (String, usize, i64)>,
    /// The etcd client of the last rounds (it keeps its sign-in token) and
    /// when it was made: remade after an error and every [`FRESH_CLIENT`],
    /// so renewed certificates are read.
    etcd: Option<(globular_substrate::etcd::Etcd, Instant)>,
    /// This node's name (`node.json`), read once.
    node: Option<String>,
    /// When the loop next asks the API whether a rotation was asked of
    /// this node.
    next_rotation_poll: Option<Instant>,
    /// When the loop last replaced this node's member for a `CORRUPT`
    /// alarm.
    corrupt_tried: Option<Instant>,
    /// The `dns` check's state.
    pub(super) dns: super::dns::DnsState,
    /// The cluster's rotation request (its time) the loop last marked the
    /// packages' certificates for ([`renew::request_rotation`]).
    rotation_marked: Option<i64>,
    /// When the loop last read etcd's member list.
    peers_read: Option<Instant>,
    /// When the loop last ran the packages' unit for their certificates,
    /// and the rotation asked of the node then ([`renew::rotation_requested`]).
    packages_run: Option<(Instant, Option<i64>)>,
}

/// The loop runs the packages' unit for due certificates at most this
/// often (a run that cannot issue them is not repeated every round), and
/// at once for a new rotation.
const PACKAGES_EVERY: Duration = Duration::from_secs(600);

/// How often the loop asks the API for a rotation request.
const ROTATION_POLL: Duration = Duration::from_secs(10);

/// How long the loop keeps one etcd client.
const FRESH_CLIENT: Duration = Duration::from_secs(600);

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Loop {
    pub fn new(layout: Layout, manager: Manager) -> Loop {
        Loop {
            layout,
            manager,
            state: State::default(),
            units: BTreeMap::new(),
            seen: HashMap::new(),
            published: BTreeMap::new(),
            etcd: None,
            node: None,
            next_rotation_poll: None,
            peers_read: None,
            rotation_marked: None,
            corrupt_tried: None,
            dns: Default::default(),
            packages_run: None,
        }
    }

    pub(super) fn incident(&mut self, check: &str, what: String) {
        tracing::warn!("health: {check}: {what}");
        self.state.incidents.push(Incident {
            at: now(),
            check: check.to_owned(),
            what,
        });
        let excess = self.state.incidents.len().saturating_sub(KEPT_INCIDENTS);
        self.state.incidents.drain(..excess);
    }

    pub(super) fn count(&mut self, action: &str) {
        *self.state.actions.entry(action.to_owned()).or_default() += 1;
    }

    /// Runs every check of this node once; with `correct`, puts right what
    /// it can and updates the registry.
    pub async fn round(&mut self, correct: bool) {
        let mut checks = Vec::new();
        if self.layout.node_config().exists() {
            checks.push(self.certificates(correct).await);
        }
        // Control planes hold etcd's configuration; workers run neither.
        let control_plane = self.layout.etcd_config().exists();
        let components = crate::package::units::applied_components(&self.layout);
        self.look(control_plane, &components);
        if control_plane {
            for service in [Service::Etcd, Service::Api] {
                checks.push(self.keep_running(Unit::Service(service), correct));
            }
            if correct {
                if let Some(check) = self.etcd_data().await {
                    checks.push(check);
                }
            }
            checks.push(self.etcd(correct).await);
            checks.push(self.dns(correct).await);
        }
        checks.extend(self.components(components, correct));
        self.state.checks = checks;
        self.state.checked_at = now();
        self.state.rounds += 1;
        if correct && control_plane {
            if let Err(err) = self.publish().await {
                tracing::warn!("health: updating the registry: {err:#}");
            }
        }
    }

    /// This node's etcd member answers and the cluster has no alarm;
    /// `NOSPACE` is cleared.
    async fn etcd(&mut self, correct: bool) -> Check {
        let check = |status, detail: String| Check {
            name: "etcd-alarms".to_owned(),
            status,
            detail,
        };
        let etcd = match self.local_etcd() {
            Ok(etcd) => etcd,
            Err(err) => return check(Status::Failing, format!("{err:#}")),
        };
        let alarms = match tokio::time::timeout(ETCD_ANSWER, etcd.alarms()).await {
            Err(_) => {
                self.etcd = None;
                return check(
                    Status::Failing,
                    format!("etcd did not answer within {} s", ETCD_ANSWER.as_secs()),
                );
            }
            Ok(Err(err)) => {
                self.etcd = None;
                return check(Status::Failing, format!("etcd: {err:#}"));
            }
            Ok(Ok(alarms)) => alarms,
        };
        if self.peers_read.is_none_or(|t| t.elapsed() >= PEERS_EVERY) {
            self.peers_read = Some(Instant::now());
            self.record_peers(&etcd).await;
        }
        if alarms.is_empty() {
            return check(Status::Ok, "answers; no alarms".into());
        }
        let names: Vec<String> = alarms
            .iter()
            .map(|a| format!("{} on member {:x}", a.kind, a.member))
            .collect();
        let names = names.join(", ");
        // A CORRUPT alarm naming this member: its data diverged from the
        // others'; it is replaced from them, and the alarm disarmed.
        if correct && alarms.iter().any(|a| a.kind == "CORRUPT") {
            if let Some(check) = self.corrupt(&etcd, &alarms).await {
                return check;
            }
        }
        let others = alarms.iter().any(|a| a.kind != "NOSPACE");
        if !correct || others {
            return check(Status::Failing, format!("alarms: {names}"));
        }
        self.incident("etcd-alarms", format!("{names}; recovering space"));
        self.count("recover etcd space");
        match etcd.recover_space().await {
            Ok(r) => check(
                Status::Corrected,
                format!(
                    "{names}: compacted to revision {}, defragmented {}, disarmed {}",
                    r.compacted_to,
                    r.defragmented.join(" "),
                    r.disarmed.len()
                ),
            ),
            Err(err) => check(Status::Failing, format!("{names}: recovering: {err:#}")),
        }
    }

    /// The node's certificates (and, on a control plane, etcd's): renewed
    /// when due, all of them when the cluster asked this node for a
    /// rotation; packages' certificates that are due (or older than the
    /// rotation) make the loop run
    /// `globular-packages.service`, which issues them again and restarts
    /// their components behind healthy peers.
    async fn certificates(&mut self, correct: bool) -> Check {
        let check = |status, detail: String| Check {
            name: "certificates".to_owned(),
            status,
            detail,
        };
        let mut when = renew::When::Due;
        if correct && self.next_rotation_poll.is_none_or(|t| Instant::now() >= t) {
            self.next_rotation_poll = Some(Instant::now() + ROTATION_POLL);
            match self.rotation_requested().await {
                Ok(Some(asked)) => {
                    when = renew::When::Now;
                    // A rotation covers the packages' certificates too:
                    // marked once per request, however many rounds the
                    // node's own renewal takes.
                    if self.rotation_marked != Some(asked) {
                        if let Err(err) = renew::request_rotation(&self.layout) {
                            return check(Status::Failing, format!("{err:#}"));
                        }
                        self.rotation_marked = Some(asked);
                    }
                }
                Ok(None) => {}
                Err(err) => tracing::debug!("health: asking for a rotation: {err:#}"),
            }
        }
        let due = match renew::due(&self.layout, when) {
            Ok(due) => due,
            Err(err) => return check(Status::Failing, format!("{err:#}")),
        };
        let packages = self.package_certificates_due();
        if due.is_empty() && packages.is_empty() {
            return check(Status::Ok, "none due".into());
        }
        let listed: Vec<String> = due
            .iter()
            .map(|(name, why)| format!("{name} ({why})"))
            .chain(packages.iter().map(|p| format!("{p} (due)")))
            .collect();
        let listed = listed.join(", ");
        if !correct {
            let expired = due.iter().any(|(_, why)| why == "expired");
            let status = if expired { Status::Failing } else { Status::Ok };
            return check(status, format!("due for renewal: {listed}"));
        }
        let mut detail = Vec::new();
        let mut failed = None;
        if !due.is_empty() {
            match renew::renew(&self.layout, when).await {
                Ok(outcome) => {
                    for name in &outcome.renewed {
                        self.count("renew certificate");
                        tracing::info!("health: renewed the {name} certificate");
                    }
                    detail.push(format!("renewed {}", outcome.renewed.join(", ")));
                }
                Err(err) => failed = Some(format!("renewing: {err:#}")),
            }
        }
        let requested = renew::rotation_requested(&self.layout).unwrap_or_default();
        let packages_due = self
            .packages_run
            .is_none_or(|(at, asked)| at.elapsed() >= PACKAGES_EVERY || asked != requested);
        if !packages.is_empty() && self.manager == Manager::Systemd && packages_due {
            match crate::agent::start_packages_unit() {
                Ok(true) => {
                    self.packages_run = Some((Instant::now(), requested));
                    self.count("renew package certificates");
                    detail.push(format!("started {}", crate::agent::PACKAGES_UNIT));
                }
                // Tried again next round.
                Ok(false) => detail.push(format!(
                    "{} is running; its run may issue them",
                    crate::agent::PACKAGES_UNIT
                )),
                Err(err) => failed = Some(format!("{err:#}")),
            }
        } else if !packages.is_empty() {
            detail.push(format!(
                "packages' certificates left to {} (run at most every {} s)",
                crate::agent::PACKAGES_UNIT,
                PACKAGES_EVERY.as_secs()
            ));
        }
        match failed {
            Some(why) => {
                self.incident("certificates", format!("{listed}: {why}"));
                check(Status::Failing, format!("{listed}: {why}"))
            }
            None => check(
                Status::Corrected,
                format!("{listed}: {}", detail.join("; ")),
            ),
        }
    }

    /// When the registry asked this node to renew every certificate
    /// (`globular cert rotate --all`), if it has not since.
    async fn rotation_requested(&self) -> anyhow::Result<Option<i64>> {
        let client = crate::node_cli::client(&self.layout)?;
        let record = tokio::time::timeout(ETCD_ANSWER, client.own_record()).await??;
        Ok((record.rotate_requested > record.renewed_at).then_some(record.rotate_requested))
    }

    /// The packages' certificate files that are due for renewal, were
    /// issued before the rotation last asked of this node, or are missing
    /// beside their key.
    fn package_certificates_due(&self) -> Vec<String> {
        let lifetime = match self.layout.load_node_config() {
            Ok(config) => config.certificate_lifetime(),
            Err(_) => return Vec::new(),
        };
        let packages = self.layout.package_dir("");
        let read = crate::certs::status(&packages, time::OffsetDateTime::now_utc())
            .and_then(|certs| Ok((certs, renew::rotation_requested(&self.layout)?)));
        let (certs, requested) = match read {
            Ok(read) => read,
            Err(err) => {
                tracing::warn!("health: reading the packages' certificates: {err:#}");
                return Vec::new();
            }
        };
        let now = now();
        let mut out: Vec<String> = certs
            .into_iter()
            .filter(|c| {
                let not_after = c.not_after.unix_timestamp();
                renew::package_certificate_due(c.not_before, not_after, lifetime, requested, now)
                    .is_some()
            })
            .map(|c| {
                c.path
                    .strip_prefix(&packages)
                    .unwrap_or(&c.path)
                    .display()
                    .to_string()
            })
            .collect();
        out.extend(missing_certificates(&packages));
        out
    }

    /// Records the other etcd members' client URLs (`etcd_peers`).
    async fn record_peers(&mut self, etcd: &globular_substrate::etcd::Etcd) {
        let own = etcd.endpoints().first().cloned().unwrap_or_default();
        match tokio::time::timeout(ETCD_ANSWER, etcd.members()).await {
            Ok(Ok(members)) => {
                let mut peers: Vec<String> = members
                    .into_iter()
                    .filter(|m| !m.client_urls.contains(&own))
                    .flat_map(|m| m.client_urls)
                    .collect();
                peers.sort();
                self.state.etcd_peers = peers;
            }
            Ok(Err(err)) => tracing::debug!("health: listing etcd's members: {err:#}"),
            Err(_) => tracing::debug!("health: listing etcd's members: no answer"),
        }
    }

    /// etcd keeps dying: stopped, and its data checked; data that does not
    /// open is replaced from the other members
    /// ([`crate::agent::replace_etcd_member`]). `None`: etcd is not
    /// dying.
    async fn etcd_data(&mut self) -> Option<Check> {
        let tracked = self.units.get_mut(Service::Etcd.name())?;
        if tracked.unstable < UNSTABLE_ROUNDS {
            return None;
        }
        tracked.unstable = 0;
        let check = |status, detail: String| {
            Some(Check {
                name: "etcd-data".to_owned(),
                status,
                detail,
            })
        };
        if let Err(err) = self.manager.stop(&self.layout, Service::Etcd) {
            return check(Status::Failing, format!("{err:#}"));
        }
        let why = match crate::agent::etcd_data_sound(&self.layout) {
            Ok(()) => {
                let detail = format!(
                    "etcd stopped or restarted {UNSTABLE_ROUNDS} rounds in a row; its data opens, \
                     so it is started again, not replaced"
                );
                self.incident("etcd-data", detail.clone());
                if let Err(err) = self.manager.start(&self.layout, Service::Etcd) {
                    return check(Status::Failing, format!("{detail}; starting: {err:#}"));
                }
                return check(Status::Failing, detail);
            }
            Err(why) => why,
        };
        Some(self.replace_member("etcd-data", why, None).await)
    }

    /// Replaces this node's etcd member from the others
    /// ([`crate::agent::replace_etcd_member`]), because of `why`; the
    /// result as the check `name`.
    async fn replace_member(
        &mut self,
        name: &str,
        why: String,
        corrupt: Option<&globular_substrate::etcd::Alarm>,
    ) -> Check {
        let check = |status, detail: String| Check {
            name: name.to_owned(),
            status,
            detail,
        };
        self.incident(name, format!("{why}; replacing this etcd member"));
        self.count("replace etcd member");
        let peers = self.state.etcd_peers.clone();
        if peers.is_empty() {
            let detail = format!("{why}; no other etcd member is known to rebuild from");
            return check(Status::Failing, detail);
        }
        let replaced = crate::agent::replace_etcd_member(
            self.layout.root(),
            self.manager,
            peers,
            REPLACE_TIMEOUT,
            corrupt,
        )
        .await;
        self.etcd = None;
        match replaced {
            Ok(done) => {
                self.incident(name, done.clone());
                check(Status::Corrected, format!("{why}: {done}"))
            }
            Err(err) => {
                let detail = format!("{why}; replacing: {err:#}");
                self.incident(name, detail.clone());
                check(Status::Failing, detail)
            }
        }
    }

    /// `CORRUPT` alarms: one naming a member that is gone (replaced
    /// before its alarm was disarmed) is disarmed; one naming this node's
    /// member gets it replaced from the others, when the members the
    /// alarms leave alone keep a quorum, and at most every
    /// [`CORRUPT_RETRY`]. `None`: nothing for this node to do.
    async fn corrupt(
        &mut self,
        etcd: &globular_substrate::etcd::Etcd,
        alarms: &[globular_substrate::etcd::Alarm],
    ) -> Option<Check> {
        let own = etcd.endpoints().first().cloned()?;
        let members = tokio::time::timeout(ETCD_ANSWER, etcd.members())
            .await
            .ok()?
            .ok()?;
        let corrupt: Vec<_> = alarms.iter().filter(|a| a.kind == "CORRUPT").collect();
        for alarm in &corrupt {
            if !members.iter().any(|m| m.id == alarm.member) {
                match etcd.disarm(alarm).await {
                    Ok(()) => self.incident(
                        "etcd-alarms",
                        format!(
                            "disarmed CORRUPT on member {:x}, which is gone",
                            alarm.member
                        ),
                    ),
                    Err(err) => tracing::warn!("health: disarming CORRUPT: {err:#}"),
                }
            }
        }
        let this = members.iter().find(|m| m.client_urls.contains(&own))?.id;
        let alarm = corrupt.iter().find(|a| a.member == this)?;
        let named = members
            .iter()
            .filter(|m| corrupt.iter().any(|a| a.member == m.id))
            .count();
        let check = |status, detail: String| Check {
            name: "etcd-alarms".to_owned(),
            status,
            detail,
        };
        if (members.len() - named) * 2 <= members.len() {
            return Some(check(
                Status::Failing,
                format!(
                    "CORRUPT names {named} of {} members: the others hold no quorum to \
                     rebuild from; not replacing (see docs/operations.md)",
                    members.len()
                ),
            ));
        }
        if self
            .corrupt_tried
            .is_some_and(|t| t.elapsed() < CORRUPT_RETRY)
        {
            return Some(check(
                Status::Failing,
                format!(
                    "CORRUPT on this member ({this:x}); replacing it failed, tried again later"
                ),
            ));
        }
        self.corrupt_tried = Some(Instant::now());
        let why = format!("etcd raised CORRUPT on this member ({this:x})");
        let alarm = (*alarm).clone();
        Some(self.replace_member("etcd-alarms", why, Some(&alarm)).await)
    }

    /// The substrate's etcd client to this node's member only.
    fn local_etcd(&mut self) -> anyhow::Result<globular_substrate::etcd::Etcd> {
        if let Some((etcd, made)) = &self.etcd {
            if made.elapsed() < FRESH_CLIENT {
                return Ok(etcd.clone());
            }
        }
        let config = self.layout.load_node_config()?;
        let local = config
            .etcd_endpoints
            .first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("node.json lists no etcd endpoint"))?;
        let etcd = crate::etcd_client::substrate(&self.layout, vec![local])?;
        self.etcd = Some((etcd.clone(), Instant::now()));
        Ok(etcd)
    }

    /// This node's record under `key` as the agent registers it (from the
    /// stored seed).
    fn own_record(&self, key: &str) -> anyhow::Result<Option<ServiceRecord>> {
        let path = self.layout.seed();
        let seed = globular_cluster::seed::Seed::parse(
            &self.layout.read(&path)?,
            &path.display().to_string(),
        )?;
        Ok(crate::agent::control_plane_records(&seed)
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, record)| record))
    }

    /// What the checks say about this node's etcd and API records.
    fn health_of(&self, name: &str) -> &'static str {
        let checks: &[&str] = if name == ETCD_SERVICE {
            &["etcd", "etcd-alarms"]
        } else {
            &["api", "dns"]
        };
        let failing = |n: &str| {
            self.state
                .checks
                .iter()
                .any(|c| c.name == n && c.status == Status::Failing)
        };
        if failing(checks[0]) {
            "failed"
        } else if checks.iter().any(|n| failing(n)) {
            "degraded"
        } else {
            "running"
        }
    }

    /// Writes `health`, `checked_at`, `incidents` and `last_incident` into
    /// this node's control-plane records when the health or the incidents
    /// changed, or [`REPUBLISH`] passed.
    async fn publish(&mut self) -> anyhow::Result<()> {
        let node = match &self.node {
            Some(node) => node.clone(),
            None => {
                let node = self.layout.load_node_config()?.name;
                self.node = Some(node.clone());
                node
            }
        };
        let etcd = self.local_etcd()?;
        for name in [ETCD_SERVICE, API_SERVICE] {
            let key = registry::service_key(name, &node);
            let health = self.health_of(name);
            let at = self.state.checked_at;
            let short = if name == ETCD_SERVICE { "etcd" } else { "api" };
            let incidents: Vec<&Incident> = self
                .state
                .incidents
                .iter()
                .filter(|i| i.check.starts_with(short))
                .collect();
            let existing = tokio::time::timeout(ETCD_ANSWER, etcd.get(&key)).await??;
            let unchanged = self.published.get(&key).is_some_and(|(last, count, when)| {
                last == health && *count == incidents.len() && at - when < REPUBLISH
            });
            let (mut record, revision) = match existing {
                Some(_) if unchanged => continue,
                Some((bytes, revision)) => (
                    serde_json::from_slice::<ServiceRecord>(&bytes)?,
                    Some(revision),
                ),
                // Deleted (by hand, or lost): registered again as the
                // agent registered it at enrollment.
                None => match self.own_record(&key)? {
                    Some(record) => (record, None),
                    None => continue,
                },
            };
            let meta = &mut record.metadata;
            meta.insert("health".into(), health.into());
            meta.insert("checked_at".into(), at.to_string());
            meta.insert("incidents".into(), incidents.len().to_string());
            if let Some(last) = incidents.last() {
                meta.insert("last_incident".into(), format!("{} {}", last.at, last.what));
            }
            let value = serde_json::to_vec(&record)?;
            let count = incidents.len();
            let written = match revision {
                Some(revision) => {
                    tokio::time::timeout(ETCD_ANSWER, etcd.replace(&key, &value, revision))
                        .await??
                }
                None => {
                    let created =
                        tokio::time::timeout(ETCD_ANSWER, etcd.create(&key, &value)).await??;
                    if created {
                        self.count(&format!("re-register {name}"));
                        self.incident(short, format!("record {key} was missing; registered again"));
                    }
                    created
                }
            };
            if written {
                self.published.insert(key, (health.to_owned(), count, at));
            }
        }
        self.publish_packages(&node).await
    }

    /// Writes `health` and `checked_at` into the records this node's
    /// applied packages registered (`globular apply` writes them once, when
    /// the package's checks pass): `degraded` while one of the package's
    /// components fails its check, else `running`. Never `failed`, which
    /// takes the instance out of discovery: a spec does not say which
    /// component serves which record (Kubernetes' apiserver serves without
    /// its scheduler). A missing record is left to the next `globular
    /// apply`, which registers it.
    async fn publish_packages(&mut self, node: &str) -> anyhow::Result<()> {
        let etcd = self.local_etcd()?;
        let at = self.state.checked_at;
        for package in crate::package::units::applied_packages(&self.layout) {
            let failing = package.components.iter().any(|c| {
                self.state
                    .checks
                    .iter()
                    .any(|check| &check.name == c && check.status == Status::Failing)
            });
            let health = if failing { "degraded" } else { "running" };
            for service in &package.services {
                let key = registry::service_key(service, node);
                let unchanged = self
                    .published
                    .get(&key)
                    .is_some_and(|(last, _, when)| last == health && at - when < REPUBLISH);
                if unchanged {
                    continue;
                }
                let Some((bytes, revision)) =
                    tokio::time::timeout(ETCD_ANSWER, etcd.get(&key)).await??
                else {
                    continue;
                };
                let mut record: ServiceRecord = serde_json::from_slice(&bytes)?;
                record.metadata.insert("health".into(), health.into());
                record.metadata.insert("checked_at".into(), at.to_string());
                let value = serde_json::to_vec(&record)?;
                if tokio::time::timeout(ETCD_ANSWER, etcd.replace(&key, &value, revision)).await?? {
                    self.published.insert(key, (health.to_owned(), 0, at));
                }
            }
        }
        Ok(())
    }
}

/// The certificates of applied packages whose key is there and whose
/// certificate is not (deleted: `globular apply` issues it again), as
/// `PACKAGE/NAME.crt`.
fn missing_certificates(packages: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(packages) else {
        return out;
    };
    for package in dirs.flatten().map(|d| d.path()) {
        if !package.join(crate::package::units::APPLIED).is_file() {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&package) else {
            continue;
        };
        for path in entries.flatten().map(|e| e.path()) {
            let crt = path.with_extension("crt");
            if path.extension().is_some_and(|e| e == "key") && !crt.exists() {
                out.push(
                    crt.strip_prefix(packages)
                        .unwrap_or(&crt)
                        .display()
                        .to_string(),
                );
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    /// A deleted certificate of an applied package is found by its key;
    /// packages not applied yet, and pairs that are whole, are not listed.
    #[test]
    fn a_deleted_package_certificate_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str| {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        };
        write("worker/applied");
        write("worker/kubelet.key");
        write("worker/kube-proxy.key");
        write("worker/kube-proxy.crt");
        write("worker/kubelet.kubeconfig");
        write("new/kubelet.key");
        assert_eq!(
            super::missing_certificates(dir.path()),
            ["worker/kubelet.crt"]
        );
        assert!(super::missing_certificates(&dir.path().join("none")).is_empty());
    }
}
