//! The `dns` check of a control plane: the DNS authority that runs in the
//! substrate API's process answers, on each of the node's addresses, the
//! SOA of the cluster's zone. One that has not answered for
//! [`DNS_GRACE`] is put right by restarting the API (at most every
//! [`DNS_RESTART_EVERY`]): the process binds its DNS sockets when it
//! starts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use globular_cluster::registry;
use globular_substrate::dns::probe;

use super::checks::Loop;
use super::units::Unit;
use super::{Check, Status};
use crate::services::Service;

/// How long one question may wait for its answer.
const ANSWER: Duration = Duration::from_secs(2);
/// How long `globular health` asks again before it calls the DNS failing.
const ONE_SHOT: Duration = Duration::from_secs(5);
/// How long the authority may not answer before the API is restarted
/// (the API binds its DNS sockets again every 5 s after a failure).
const DNS_GRACE: Duration = Duration::from_secs(30);
/// The fewest seconds between two restarts for the DNS.
const DNS_RESTART_EVERY: Duration = Duration::from_secs(120);

/// What the check asks and where.
#[derive(Debug, Clone)]
pub(super) struct Target {
    origin: String,
    servers: Vec<SocketAddr>,
}

/// The state of the check between rounds.
#[derive(Debug, Default)]
pub(super) struct DnsState {
    target: Option<Target>,
    /// Since when no answer came (`None`: the last round had them all).
    failing_since: Option<Instant>,
    restarted: Option<Instant>,
}

impl Loop {
    fn dns_target(&mut self) -> anyhow::Result<Target> {
        if let Some(target) = &self.dns.target {
            return Ok(target.clone());
        }
        let path = self.layout.seed();
        let seed = globular_cluster::seed::Seed::parse(
            &self.layout.read(&path)?,
            &path.display().to_string(),
        )?;
        let origin = format!(
            "{}.",
            registry::zone_name(&seed.cluster.name, &seed.cluster.domain)
        );
        let config = self.layout.load_node_config()?;
        let mut servers = Vec::new();
        for address in &config.addresses {
            let ip = address.split('/').next().unwrap_or_default();
            let ip: std::net::IpAddr = ip
                .parse()
                .map_err(|_| anyhow::anyhow!("node.json: address {address:?} is no IP"))?;
            servers.push(SocketAddr::new(ip, globular_cluster::DNS_PORT));
        }
        let target = Target { origin, servers };
        self.dns.target = Some(target.clone());
        Ok(target)
    }

    /// The authority answers on every address of the node.
    pub(super) async fn dns(&mut self, correct: bool) -> Check {
        let check = |status, detail: String| Check {
            name: "dns".to_owned(),
            status,
            detail,
        };
        let target = match self.dns_target() {
            Ok(target) => target,
            Err(err) => return check(Status::Failing, format!("{err:#}")),
        };
        // The loop asks once a round; `globular health` (one round) gives
        // an authority that is starting a few seconds.
        let patience = if correct { Duration::ZERO } else { ONE_SHOT };
        let asked = Instant::now();
        let (answered, failures) = loop {
            let mut answered = Vec::new();
            let mut failures = Vec::new();
            for server in &target.servers {
                match probe::soa_serial(*server, &target.origin, ANSWER).await {
                    Ok(serial) => answered.push(format!("{server} (serial {serial})")),
                    Err(err) => failures.push(format!("{err:#}")),
                }
            }
            if failures.is_empty() || asked.elapsed() >= patience {
                break (answered, failures);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        if failures.is_empty() {
            self.dns.failing_since = None;
            return check(
                Status::Ok,
                format!("{} answers on {}", target.origin, answered.join(", ")),
            );
        }
        let since = *self.dns.failing_since.get_or_insert_with(Instant::now);
        let failures = failures.join("; ");
        // An API that is not running is the `api` check's to start.
        let api_running = Unit::Service(Service::Api)
            .observe(self)
            .is_ok_and(|o| o.running);
        let restart_allowed = self
            .dns
            .restarted
            .is_none_or(|t| t.elapsed() >= DNS_RESTART_EVERY);
        if !correct || since.elapsed() < DNS_GRACE || !restart_allowed || !api_running {
            return check(
                Status::Failing,
                format!("{failures} (for {} s)", since.elapsed().as_secs()),
            );
        }
        let what = format!(
            "{failures} for {} s; restarting the substrate API (it serves the DNS)",
            since.elapsed().as_secs()
        );
        self.incident("dns", what.clone());
        self.count("restart api for dns");
        self.dns.restarted = Some(Instant::now());
        self.dns.failing_since = None;
        let restarted = self
            .manager
            .stop(&self.layout, Service::Api)
            .and_then(|()| self.manager.start(&self.layout, Service::Api));
        // The new process is the loop's doing, not a restart behind its back.
        self.note_started(&Unit::Service(Service::Api));
        match restarted {
            Ok(()) => check(Status::Corrected, what),
            Err(err) => check(Status::Failing, format!("{what}: {err:#}")),
        }
    }
}
