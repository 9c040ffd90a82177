//! The node's health loop (`globular health --watch`, run by
//! `globular-health.service`) and its one-shot view (`globular health`).
//!
//! Each round compares the node with what it should be and corrects what
//! it can, counting every action:
//! - on every enrolled node, no certificate is due for renewal: one that is
//!   (a third of its validity left) is renewed ([`crate::renew`]), all of
//!   them when the cluster asked this node for a rotation;
//! - on a control plane, etcd and the substrate API run: a service that is
//!   not running is started again (with backoff while starts keep failing);
//!   one that was restarted behind the loop's back (systemd's `Restart=`
//!   after a crash) is recorded as an incident;
//! - etcd answers and raises no alarm: `NOSPACE` is cleared by compacting,
//!   defragmenting and disarming ([`Etcd::recover_space`]); `CORRUPT`
//!   naming this node's member gets the member replaced from the others
//!   and the alarm disarmed; another member's `CORRUPT` is reported;
//! - etcd that keeps dying is stopped and its backend checked: one that
//!   does not open is replaced from the other members
//!   ([`crate::agent::replace_etcd_member`]);
//! - on a control plane, the DNS authority answers the zone's SOA on every
//!   address of the node: one silent for 30 s gets the substrate API (its
//!   process) restarted;
//! - this node's `globular.Etcd` and `globular.SubstrateApi` records exist
//!   (registered again if not);
//! - the components of every package applied on the node (Kubernetes'
//!   apiserver, controller manager and scheduler) run once the package's
//!   checks passed: one that does not is started, like the services.
//!
//! What a round saw is written to `run/health.json` (the state `globular
//! health` prints) and, on a control plane, into this node's
//! `globular.Etcd` and `globular.SubstrateApi` records (`health`,
//! `checked_at`, `incidents`, `last_incident`), so `globular service list`
//! shows it.

mod checks;
mod dns;
mod units;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::layout::Layout;
use crate::services::Manager;

pub use checks::Loop;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As expected.
    Ok,
    /// Was not, and the loop put it right this round.
    Corrected,
    /// Is not, and the loop could not (yet) put it right.
    Failing,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Corrected => "corrected",
            Status::Failing => "failing",
        }
    }
}

/// One check of a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// `etcd`, `api`, `etcd-alarms`.
    pub name: String,
    pub status: Status,
    pub detail: String,
}

/// Something that went wrong and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Unix seconds.
    pub at: i64,
    pub check: String,
    pub what: String,
}

/// `run/health.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Unix seconds of the last round.
    pub checked_at: i64,
    pub rounds: u64,
    pub checks: Vec<Check>,
    /// Corrective actions taken, by kind (`restart etcd`, `recover space`).
    pub actions: BTreeMap<String, u64>,
    /// The latest incidents, oldest first (at most [`KEPT_INCIDENTS`]).
    pub incidents: Vec<Incident>,
    /// On a control plane: the client URLs of the other etcd members, as
    /// etcd last listed them (where a member whose data is corrupt is
    /// rebuilt from).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub etcd_peers: Vec<String>,
}

/// How many incidents `run/health.json` keeps.
pub const KEPT_INCIDENTS: usize = 50;

impl State {
    pub fn path(layout: &Layout) -> std::path::PathBuf {
        layout.run_dir().join("health.json")
    }

    /// The loop's last state, if it has run on this node.
    pub fn load(layout: &Layout) -> anyhow::Result<Option<State>> {
        let path = State::path(layout);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display()))
                .map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save(&self, layout: &Layout) -> anyhow::Result<()> {
        let path = State::path(layout);
        std::fs::create_dir_all(layout.run_dir())
            .with_context(|| format!("creating {}", layout.run_dir().display()))?;
        globular_cluster::fsutil::write_atomic(
            &path,
            (serde_json::to_string_pretty(self)? + "\n").as_bytes(),
            globular_cluster::fsutil::PUBLIC,
        )
        .with_context(|| format!("writing {}", path.display()))
    }

    /// Whether every check is ok or was corrected.
    pub fn healthy(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Failing)
    }

    /// What `globular health` prints.
    pub fn table(&self) -> String {
        if self.checks.is_empty() {
            return "no checks for this node: the loop checks an enrolled node's certificates \
                    and a control plane's etcd and substrate API (docs/operations.md)\n"
                .to_owned();
        }
        let mut out = format!("{:<14} {:<10} {}\n", "CHECK", "STATUS", "DETAIL");
        for c in &self.checks {
            out += &format!("{:<14} {:<10} {}\n", c.name, c.status.word(), c.detail);
        }
        if !self.actions.is_empty() {
            let actions: Vec<String> = self
                .actions
                .iter()
                .map(|(what, n)| format!("{what}: {n}"))
                .collect();
            out += &format!("actions since the loop started: {}\n", actions.join(", "));
        }
        for i in self.incidents.iter().rev().take(5) {
            out += &format!("incident at {}: {}: {}\n", i.at, i.check, i.what);
        }
        out
    }
}

/// `globular health`: one round without corrections, printed with the
/// loop's counters and incidents. Returns the state (unhealthy: the caller
/// exits non-zero).
pub fn check_now(layout: &Layout, manager: Manager) -> anyhow::Result<State> {
    let mut health = Loop::new(layout.clone(), manager);
    if let Some(previous) = State::load(layout)? {
        health.state.actions = previous.actions;
        health.state.incidents = previous.incidents;
    }
    crate::runtime::block_on(crate::runtime::Threads::One, async {
        health.round(false).await;
        Ok(health.state)
    })
}

/// `globular health --watch`: a round every `interval`, forever.
pub fn watch(layout: &Layout, manager: Manager, interval: Duration) -> anyhow::Result<()> {
    let mut health = Loop::new(layout.clone(), manager);
    if let Some(previous) = State::load(layout)? {
        // A restarted loop keeps counting.
        health.state.actions = previous.actions;
        health.state.incidents = previous.incidents;
        health.state.rounds = previous.rounds;
        health.state.etcd_peers = previous.etcd_peers;
    }
    crate::runtime::block_on(crate::runtime::Threads::One, async {
        // The file is on the state partition: written when what the loop
        // saw changed, else once a minute (its `checked_at`).
        let mut saved: Option<(State, std::time::Instant)> = None;
        loop {
            health.round(true).await;
            let s = &health.state;
            let changed = saved.as_ref().is_none_or(|(last, at)| {
                (
                    &last.checks,
                    &last.actions,
                    &last.incidents,
                    &last.etcd_peers,
                ) != (&s.checks, &s.actions, &s.incidents, &s.etcd_peers)
                    || at.elapsed() >= SAVE_AT_LEAST
            });
            if changed {
                match s.save(layout) {
                    Ok(()) => saved = Some((s.clone(), std::time::Instant::now())),
                    Err(err) => tracing::warn!("{err:#}"),
                }
            }
            tokio::time::sleep(interval).await;
        }
    })
}

/// `run/health.json` is rewritten at least this often.
const SAVE_AT_LEAST: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, status: Status, detail: &str) -> Check {
        Check {
            name: name.into(),
            status,
            detail: detail.into(),
        }
    }

    #[test]
    fn the_table_shows_checks_actions_and_the_latest_incidents() {
        let mut state = State {
            checks: vec![
                check("etcd", Status::Corrected, "was not running; started"),
                check("api", Status::Ok, "running"),
            ],
            ..State::default()
        };
        state.actions.insert("start etcd".into(), 2);
        for at in 0..7 {
            state.incidents.push(Incident {
                at,
                check: "etcd".into(),
                what: format!("incident {at}"),
            });
        }
        assert!(state.healthy());
        let table = state.table();
        assert!(
            table.contains("etcd           corrected  was not running; started"),
            "{table}"
        );
        assert!(
            table.contains("actions since the loop started: start etcd: 2"),
            "{table}"
        );
        // The five latest, newest first.
        assert!(table.contains("incident at 6: etcd: incident 6"), "{table}");
        assert!(table.contains("incident 2"), "{table}");
        assert!(!table.contains("incident 1"), "{table}");

        state
            .checks
            .push(check("etcd-alarms", Status::Failing, "alarms: CORRUPT"));
        assert!(!state.healthy());
        assert!(State::default()
            .table()
            .starts_with("no checks for this node"));
    }
}
