//! etcd membership and configuration: the etcd certificates, the etcd
//! configuration file, adding this node as a learner and promoting it,
//! starting etcd and waiting until it is healthy.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use globular_cluster::etcd_auth::SUBSTRATE_USER;
use globular_cluster::etcd_timing;
use globular_cluster::pki::{self, LeafSpec};
use globular_cluster::seed::Seed;
use globular_substrate::etcd::Etcd;
use globular_substrate::retry::{Attempt, Retry};

use super::Agent;
use crate::services::{Manager, Service};

/// The kinds of etcd certificate a control-plane node holds, all signed by
/// the etcd CA.
pub const ETCD_CERT_KINDS: [&str; 3] = ["server", "peer", "client"];

/// The etcd certificates of a control-plane node (`kind`: `server` or
/// `peer`: the node's IPs and 127.0.0.1, client and server use; `client`:
/// the substrate's services as etcd clients, with no common name: etcd's
/// gateway refuses one once auth is on, and the substrate signs in with
/// its password there).
pub fn etcd_leaf_spec(seed: &Seed, kind: &str) -> LeafSpec {
    if kind == "client" {
        return LeafSpec {
            common_name: String::new(),
            role: None,
            group: Some(SUBSTRATE_USER.into()),
            dns_names: Vec::new(),
            ips: Vec::new(),
            server: false,
            client: true,
            validity: Some(seed.cluster.certificate_lifetime()),
        };
    }
    let mut ips: Vec<IpAddr> = seed.ips();
    let loopback = IpAddr::from([127, 0, 0, 1]);
    if !ips.contains(&loopback) {
        ips.push(loopback);
    }
    LeafSpec {
        common_name: format!("{}-etcd-{kind}", seed.node.name),
        role: None,
        group: None,
        dns_names: vec![seed.node.name.clone()],
        ips,
        server: true,
        client: true,
        validity: Some(seed.cluster.certificate_lifetime()),
    }
}

/// Removes the members that stand for this node from an earlier life: the
/// same name or the same peer URL.
async fn remove_stale(etcd: &Etcd, name: &str, peer: &str) -> anyhow::Result<()> {
    for m in etcd.members().await? {
        if m.name == name || m.peer_urls.iter().any(|u| u == peer) {
            tracing::info!("removing stale etcd member {:x} ({:?})", m.id, m.name);
            etcd.member_remove(m.id).await?;
        }
    }
    Ok(())
}

impl Agent {
    /// The etcd CA from the seed, and etcd's server, peer and client
    /// certificates signed here with it.
    pub(super) fn etcd_certs(&self, seed: &Seed) -> anyhow::Result<()> {
        let bundle = seed.etcd_ca.as_ref().context("the seed has no etcd CA")?;
        let ca = pki::Ca::from_pem(&bundle.certificate, &bundle.key).context("the etcd CA")?;
        self.write_secret(&self.layout.etcd_ca_key(), ca.key_pem())?;
        self.write_public(&self.layout.etcd_ca_cert(), ca.cert_pem())?;
        for kind in ETCD_CERT_KINDS {
            let (cert_path, key_path) = (self.layout.etcd_cert(kind), self.layout.etcd_key(kind));
            let spec = etcd_leaf_spec(seed, kind);
            let valid = match (
                std::fs::read_to_string(&cert_path),
                std::fs::read_to_string(&key_path),
            ) {
                (Ok(cert), Ok(key)) => pki::check_issued(&cert, &key, ca.cert_pem(), &spec).is_ok(),
                _ => false,
            };
            if valid {
                continue;
            }
            let (issued, key) = ca.issue_with_new_key(&spec)?;
            self.write_secret(&key_path, &key)?;
            self.write_public(&cert_path, &issued.cert_pem)?;
        }
        // Written when it differs only: a rewrite would take the API's read
        // access away (ownership.rs hands it over before the API starts).
        let password = crate::etcd_client::substrate_password(ca.key_pem())?;
        let path = self.layout.etcd_password();
        if std::fs::read_to_string(&path).ok().as_deref() != Some(password.as_str()) {
            self.write_secret(&path, &password)?;
        }
        self.kubernetes_secrets(seed)
    }

    /// Kubernetes' CAs and service-account key from the seed, for the
    /// Kubernetes control-plane package (`globular apply`).
    fn kubernetes_secrets(&self, seed: &Seed) -> anyhow::Result<()> {
        let Some(k) = &seed.kubernetes else {
            return Ok(());
        };
        let l = &self.layout;
        for (name, bundle) in [
            ("kubernetes-ca", &k.ca),
            ("front-proxy-ca", &k.front_proxy_ca),
        ] {
            self.write_public(&l.kubernetes_secret(name, "crt"), &bundle.certificate)?;
            self.write_secret(&l.kubernetes_secret(name, "key"), &bundle.key)?;
        }
        let public = pki::public_key_of_key_pem(&k.service_account_key)?;
        self.write_secret(
            &l.kubernetes_secret("service-account", "key"),
            &k.service_account_key,
        )?;
        self.write_public(
            &l.kubernetes_secret("service-account", "pub"),
            &pki::pem("PUBLIC KEY", &public),
        )?;
        Ok(())
    }

    pub(super) fn write_etcd_config(
        &self,
        seed: &Seed,
        initial_cluster: &str,
        state: &str,
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.layout.etcd_dir()).context("creating the etcd directory")?;
        let l = &self.layout;
        let security = |kind: &str| {
            serde_json::json!({
                "cert-file": l.etcd_cert(kind),
                "key-file": l.etcd_key(kind),
                "client-cert-auth": true,
                "trusted-ca-file": l.etcd_ca_cert(),
            })
        };
        let config = serde_json::json!({
            "name": seed.node.name,
            "data-dir": l.etcd_data(),
            "listen-peer-urls": Self::peer_url(seed),
            "listen-client-urls": Self::client_url(seed),
            "initial-advertise-peer-urls": Self::peer_url(seed),
            "advertise-client-urls": Self::client_url(seed),
            "initial-cluster": initial_cluster,
            "initial-cluster-state": state,
            "initial-cluster-token": seed.cluster.id,
            "client-transport-security": security("server"),
            "peer-transport-security": security("peer"),
            // Defaults of etcd's flags do not apply to a config file.
            "enable-grpc-gateway": true,
            // etcd's users sign in with bcrypt-hashed passwords. The
            // substrate's is 256 random bits, so the hash's cost adds no
            // strength; at etcd's default (10) one sign-in took over 10 s
            // on a TCG VM and timed out. 4 is bcrypt's minimum.
            "bcrypt-cost": 4,
            // etcd compacts its own history: only root may compact, and
            // no client of it is root (Kubernetes' apiserver has a user
            // limited to /registry/ and its compactor is off). Ten
            // minutes of history is what watchers need to resume.
            "auto-compaction-mode": "periodic",
            "auto-compaction-retention": "10m",
            // The cluster's Raft timing (`builder cluster new
            // --etcd-heartbeat`): every member the same.
            "heartbeat-interval": seed.cluster.etcd_heartbeat_ms,
            "election-timeout": etcd_timing::election_timeout_ms(seed.cluster.etcd_heartbeat_ms),
            "logger": "zap",
            "log-outputs": ["stderr"],
        });
        let yaml = serde_yaml_ng::to_string(&config)?;
        self.write_public(&l.etcd_config(), &yaml)
    }

    pub(super) fn local_etcd(&self, seed: &Seed, others: &[String]) -> anyhow::Result<Etcd> {
        let local = Self::client_url(seed);
        let mut endpoints: Vec<String> = others.iter().filter(|e| **e != local).cloned().collect();
        endpoints.insert(0, local);
        self.etcd(endpoints)
    }

    pub(super) fn etcd(&self, endpoints: Vec<String>) -> anyhow::Result<Etcd> {
        crate::etcd_client::substrate(&self.layout, endpoints)
    }

    /// The cluster's etcd without this node's own endpoint: a joining node's
    /// etcd is a learner, which answers no membership calls; and a reimaged
    /// node's endpoint is still listed for the member it replaces.
    pub(super) fn other_members(&self, seed: &Seed) -> anyhow::Result<Etcd> {
        let own = Self::client_url(seed);
        let mut endpoints = self.layout.load_node_config()?.etcd_endpoints;
        for peer in &self.peers {
            if !endpoints.contains(peer) {
                endpoints.push(peer.clone());
            }
        }
        endpoints.retain(|e| *e != own);
        if endpoints.is_empty() {
            bail!("no etcd endpoint of another control-plane node is known");
        }
        self.etcd(endpoints)
    }

    /// Join as a control-plane: add this node to etcd as a learner (removing
    /// a stale member with the same name or peer URL first).
    pub(super) async fn etcd_member(&mut self, seed: &Seed) -> anyhow::Result<()> {
        if self.layout.etcd_data().join("member").exists() {
            tracing::info!("etcd data directory exists; this member joined before");
            return Ok(());
        }
        let etcd = &self.other_members(seed)?;
        let peer = &Self::peer_url(seed);
        // etcd takes one learner at a time and refuses changes while a new
        // member is still starting ("unhealthy cluster"): wait.
        let (id, members) = Retry::every(Duration::from_millis(500), self.opts.timeout)
            .run(move || async move {
                if let Err(e) = remove_stale(etcd, &seed.node.name, peer).await {
                    return Attempt::Fail(e);
                }
                match etcd.member_add(std::slice::from_ref(peer), true).await {
                    Ok(added) => Attempt::Done(added),
                    Err(e) => {
                        tracing::info!("cannot add the etcd member yet ({e:#}); waiting");
                        Attempt::Again(e)
                    }
                }
            })
            .await?;
        let initial: Vec<String> = members
            .iter()
            .flat_map(|m| {
                let name = if m.id == id {
                    seed.node.name.clone()
                } else {
                    m.name.clone()
                };
                m.peer_urls
                    .iter()
                    .map(move |u| format!("{name}={u}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        self.write_etcd_config(seed, &initial.join(","), "existing")?;
        self.state.member_id = Some(id);
        Ok(())
    }

    pub(super) async fn etcd_started(&self, seed: &Seed) -> anyhow::Result<()> {
        if seed.bootstrap {
            let initial = format!("{}={}", seed.node.name, Self::peer_url(seed));
            self.write_etcd_config(seed, &initial, "new")?;
        }
        self.ensure_etcd(seed).await
    }

    /// Starts etcd if it is not running and waits until it is healthy.
    ///
    /// A start that fails is not the end: a joining member is ready only
    /// once it has the cluster from its peers and has published itself
    /// through the leader, and on a loaded host that can outlast the unit's
    /// start timeout or etcd's own wait for its peers (a VM cluster on two
    /// emulated cores, 2026-12-03: both, then the third start worked). The
    /// unit restarts etcd (`Restart=always`); the agent waits for health
    /// until its own timeout.
    pub(super) async fn ensure_etcd(&self, seed: &Seed) -> anyhow::Result<()> {
        let started = self.opts.services.start(&self.layout, Service::Etcd);
        match (&started, self.opts.services) {
            (Ok(()), _) => {}
            // Nothing restarts a spawned etcd (host tests).
            (Err(_), Manager::Spawn) => return started,
            (Err(err), Manager::Systemd) => {
                tracing::warn!("{err:#}; waiting for etcd to become healthy as it restarts");
            }
        }
        let etcd = self.local_etcd(seed, &[])?;
        let retry = Retry::every(Duration::from_millis(200), self.opts.timeout);
        if !etcd.wait_healthy(retry).await {
            let why = started
                .err()
                .map(|e| format!(" ({e:#})"))
                .unwrap_or_default();
            bail!(
                "etcd at {} did not become healthy{why}",
                Self::client_url(seed)
            );
        }
        Ok(())
    }

    pub(super) async fn etcd_promoted(&self, seed: &Seed) -> anyhow::Result<()> {
        let config = self.layout.load_node_config()?;
        let etcd = self.other_members(seed)?;
        let members = etcd.members().await?;
        let id = match self.state.member_id {
            Some(id) => id,
            None => members
                .iter()
                .find(|m| m.name == config.name)
                .map(|m| m.id)
                .context("this node is not an etcd member")?,
        };
        let etcd = &etcd;
        Retry::every(Duration::from_millis(300), self.opts.timeout)
            .run(move || async move {
                let members = match etcd.members().await {
                    Ok(members) => members,
                    Err(e) => return Attempt::Fail(e),
                };
                match members.iter().find(|m| m.id == id) {
                    None => return Attempt::Fail(anyhow!("etcd member {id:x} is gone")),
                    Some(m) if !m.is_learner => return Attempt::Done(()),
                    Some(_) => {}
                }
                match etcd.member_promote(id).await {
                    Ok(()) => {
                        tracing::info!("etcd member {id:x} promoted");
                        Attempt::Done(())
                    }
                    Err(e) => {
                        tracing::debug!("promotion not possible yet: {e:#}");
                        Attempt::Again(e)
                    }
                }
            })
            .await
    }
}
