//! Service start and registration: the substrate API of a control-plane
//! node, started and waited for, and this node's `globular.SubstrateApi` and
//! `globular.Etcd` records in the registry.

use std::time::Duration;

use anyhow::anyhow;
use globular_cluster::registry::{self, ServiceRecord, API_SERVICE, ETCD_SERVICE};
use globular_cluster::seed::{self, Seed};
use globular_substrate::retry::{Attempt, Retry};
use globular_substrate::Client;

use super::Agent;
use crate::services::Service;

impl Agent {
    /// Start the substrate API, wait for it, and register this node's
    /// control-plane services.
    pub(super) async fn api_started(&self, seed: &Seed) -> anyhow::Result<()> {
        // A joining control-plane talks to its own etcd first from now on.
        let mut config = self.layout.load_node_config()?;
        let local = Self::client_url(seed);
        config.etcd_endpoints.retain(|e| *e != local);
        config.etcd_endpoints.insert(0, local);
        let listen = seed::host_port(seed.primary_ip(), seed.node.ports.api);
        // ... and its own API (the CLI on this node asks it first).
        config.api_endpoints.retain(|e| *e != listen);
        config.api_endpoints.insert(0, listen.clone());
        config.api_listen = Some(listen.clone());
        self.write_public(
            &self.layout.node_config(),
            &serde_json::to_string_pretty(&config)?,
        )?;

        let etcd = self.local_etcd(seed, &config.etcd_endpoints)?;
        for (key, record) in control_plane_records(seed) {
            etcd.put(&key, &serde_json::to_vec(&record)?).await?;
        }

        self.opts.services.start(&self.layout, Service::Api)?;
        let l = &self.layout;
        let client = &Client::with_ca(vec![listen.clone()], &l.read(&l.ca_cert())?, None)?;
        Retry::every(Duration::from_millis(100), self.opts.timeout)
            .run(move || async move {
                match client.healthz().await {
                    Ok(()) => Attempt::Done(()),
                    Err(e) => {
                        tracing::debug!("{e}");
                        Attempt::Again(e)
                    }
                }
            })
            .await
            .map_err(|_| anyhow!("the substrate API at https://{listen}/healthz did not come up"))
    }
}

/// This control plane's `globular.SubstrateApi` and `globular.Etcd`
/// records, with their registry keys: written at enrollment, and again by
/// the health loop when one is missing.
pub fn control_plane_records(seed: &Seed) -> Vec<(String, ServiceRecord)> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    [
        (API_SERVICE, seed.node.ports.api),
        (ETCD_SERVICE, seed.node.ports.etcd_client),
    ]
    .into_iter()
    .map(|(name, port)| {
        let record = ServiceRecord {
            name: name.into(),
            id: seed.node.name.clone(),
            node: seed.node.name.clone(),
            address: seed.primary_ip().to_string(),
            port,
            protocol: "https".into(),
            tags: vec!["control-plane".into()],
            metadata: Default::default(),
            registered_at: now,
        };
        (registry::service_key(name, &seed.node.name), record)
    })
    .collect()
}
