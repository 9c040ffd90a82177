//! The units the loop keeps running: the substrate's services on a control
//! plane, and the components of every package applied on the node (the
//! Kubernetes control plane's apiserver, controller manager and
//! scheduler). A unit that is not running is started, with backoff while
//! starts keep failing; one that was started again behind the loop's back
//! (systemd's `Restart=` after a crash) is an incident.

use std::time::{Duration, Instant};

use super::checks::Loop;
use super::{Check, Status};
use crate::package::units as components;
use crate::services::{self, Manager, Observed, Service};

/// The longest wait between two starts of a unit that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A unit the loop keeps running.
#[derive(Debug, Clone)]
pub(super) enum Unit {
    Service(Service),
    /// A package's component, by name.
    Component(String),
}

impl Unit {
    /// The check's name: `etcd`, `api`, `kube-apiserver`.
    pub(super) fn name(&self) -> String {
        match self {
            Unit::Service(service) => service.name().to_owned(),
            Unit::Component(name) => name.clone(),
        }
    }

    /// What the round's look at systemd saw of it, or asked now.
    pub(super) fn observe(&self, health: &Loop) -> anyhow::Result<Observed> {
        match health.seen.get(&self.systemd_unit()) {
            Some(seen) => Ok(seen.clone()),
            None => self.observe_now(health),
        }
    }

    /// The unit's systemd name.
    fn systemd_unit(&self) -> String {
        match self {
            Unit::Service(s) => s.unit().to_owned(),
            Unit::Component(c) => components::unit(c),
        }
    }

    /// Asks the service manager now.
    fn observe_now(&self, health: &Loop) -> anyhow::Result<Observed> {
        match self {
            Unit::Service(s) => health.manager.observe(&health.layout, *s),
            Unit::Component(c) => components::observe(&health.layout, health.manager, c),
        }
    }

    fn start(&self, health: &Loop) -> anyhow::Result<()> {
        match self {
            Unit::Service(s) => health.manager.start(&health.layout, *s),
            Unit::Component(c) => components::start(&health.layout, health.manager, c),
        }
    }
}

/// What the loop knows of a unit it keeps running.
#[derive(Debug, Default)]
pub(super) struct Tracked {
    /// What the service manager last reported (a change: it was restarted).
    generation: Option<String>,
    /// Starts that failed in a row.
    failures: u32,
    /// No start before this (backoff).
    next_try: Option<Instant>,
    /// Rounds in a row that found it stopped or restarted: a unit that
    /// keeps dying.
    pub(super) unstable: u32,
}

impl Loop {
    /// The unit runs; if not, it is started (with backoff while starts
    /// fail).
    pub(super) fn keep_running(&mut self, unit: Unit, correct: bool) -> Check {
        let name = unit.name();
        let check = |status, detail: String| Check {
            name: name.clone(),
            status,
            detail,
        };
        let observed = match unit.observe(self) {
            Ok(observed) => observed,
            Err(err) => return check(Status::Failing, format!("{err:#}")),
        };
        let tracked = self.units.entry(name.clone()).or_default();
        if observed.running {
            let previous = tracked.generation.replace(observed.generation.clone());
            tracked.failures = 0;
            tracked.next_try = None;
            let restarted = previous.filter(|p| *p != observed.generation);
            if restarted.is_some() {
                tracked.unstable += 1;
            } else {
                tracked.unstable = 0;
            }
            if let Some(previous) = restarted {
                self.incident(
                    &name,
                    format!(
                        "started again outside the loop ({previous} -> {}): a crash, or a restart by its service manager or `globular apply`",
                        observed.generation
                    ),
                );
            }
            return check(Status::Ok, "running".into());
        }
        tracked.unstable += 1;
        if !correct {
            return check(Status::Failing, "not running".into());
        }
        if let Some(wait) = tracked
            .next_try
            .and_then(|t| t.checked_duration_since(Instant::now()))
        {
            return check(
                Status::Failing,
                format!("not running; next start in {} s", wait.as_secs()),
            );
        }
        self.incident(&name, "not running; starting it".into());
        self.count(&format!("start {name}"));
        let started = unit.start(self).and_then(|()| unit.observe_now(self));
        let tracked = self.units.entry(name.clone()).or_default();
        match started {
            Ok(observed) if observed.running => {
                tracked.generation = Some(observed.generation);
                tracked.failures = 0;
                tracked.next_try = None;
                check(Status::Corrected, "was not running; started".into())
            }
            result => {
                tracked.failures += 1;
                let backoff = Duration::from_secs(1 << tracked.failures.min(8)).min(MAX_BACKOFF);
                tracked.next_try = Some(Instant::now() + backoff);
                let why = match result {
                    Ok(_) => "it stopped again".to_owned(),
                    Err(err) => format!("{err:#}"),
                };
                check(
                    Status::Failing,
                    format!(
                        "not running; start {} failed ({why}); next in {} s",
                        tracked.failures,
                        backoff.as_secs()
                    ),
                )
            }
        }
    }

    /// Records the unit's current generation: the loop started it, so its
    /// next round sees no restart behind its back.
    pub(super) fn note_started(&mut self, unit: &Unit) {
        if let Ok(observed) = unit.observe_now(self) {
            let tracked = self.units.entry(unit.name()).or_default();
            tracked.generation = Some(observed.generation);
        }
    }

    /// Asks systemd about every unit this round keeps running, at once
    /// (spawned services are looked at one by one: a pid file each).
    pub(super) fn look(&mut self, control_plane: bool, components: &[String]) {
        self.seen.clear();
        if self.manager != Manager::Systemd {
            return;
        }
        let services: &[Service] = if control_plane {
            &[Service::Etcd, Service::Api]
        } else {
            &[]
        };
        let units: Vec<String> = services
            .iter()
            .map(|s| s.unit().to_owned())
            .chain(components.iter().map(|c| components::unit(c)))
            .collect();
        // Unanswered, each check asks for itself (and reports the error).
        match services::observe_units(&units) {
            Ok(seen) => self.seen = seen,
            Err(err) => tracing::debug!("{err:#}"),
        }
    }

    /// Every applied package's components run (`components`, from
    /// [`components::applied_components`]).
    pub(super) fn components(&mut self, components: Vec<String>, correct: bool) -> Vec<Check> {
        components
            .into_iter()
            .map(|c| self.keep_running(Unit::Component(c), correct))
            .collect()
    }
}
