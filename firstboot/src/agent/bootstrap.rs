//! Bootstrap of a new cluster (the first control-plane node): etcd's auth,
//! the cluster record, the seed's bootstrap tokens and this node's record
//! in etcd.

use globular_cluster::pki;
use globular_cluster::registry::{self, ClusterRecord, NodeRecord};
use globular_cluster::seed::{self, Seed};

use super::Agent;

impl Agent {
    /// Bootstrap: cluster record, bootstrap token records, this node's record.
    pub(super) async fn cluster_init(&self, seed: &Seed) -> anyhow::Result<()> {
        let etcd = self.local_etcd(seed, &[])?;
        // Auth first: nothing is written while every etcd-CA certificate
        // could still read and write everything.
        let password = self.layout.read(&self.layout.etcd_password())?;
        crate::etcd_client::turn_on_auth(&etcd, password.trim()).await?;
        let cluster = ClusterRecord {
            name: seed.cluster.name.clone(),
            id: seed.cluster.id.clone(),
            ca_cert_hash: seed.cluster.ca_cert_hash.clone(),
            policy: seed.cluster.policy,
            domain: seed.cluster.domain.clone(),
            certificate_lifetime: seed.cluster.certificate_lifetime,
        };
        etcd.create(&registry::cluster_key(), &serde_json::to_vec(&cluster)?)
            .await?;
        for token in &seed.tokens {
            etcd.create(&registry::token_key(&token.id), &serde_json::to_vec(token)?)
                .await?;
        }
        let record = self.own_record(seed)?;
        etcd.create(
            &registry::node_key(&seed.node.name),
            &serde_json::to_vec(&record)?,
        )
        .await?;
        // This node owns its addresses like every enrolled node.
        for ip in seed.ips() {
            etcd.create(&registry::address_key(&ip), seed.node.name.as_bytes())
                .await?;
        }
        self.write_bootstrap_config(seed)
    }

    /// The node configuration of the one control plane of a new cluster.
    pub(super) fn write_bootstrap_config(&self, seed: &Seed) -> anyhow::Result<()> {
        let api = vec![seed::host_port(seed.primary_ip(), seed.node.ports.api)];
        self.write_node_config(seed, vec![Self::client_url(seed)], api)
    }

    /// This node's registry record, with its locally signed certificate.
    pub(super) fn own_record(&self, seed: &Seed) -> anyhow::Result<NodeRecord> {
        let cert = self.layout.read(&self.layout.node_cert())?;
        let id = pki::identity_of_pem(&cert)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Ok(NodeRecord {
            name: seed.node.name.clone(),
            role: seed.node.role,
            addresses: seed.node.addresses.clone(),
            image_version: self.image_version(),
            cert_serial: id.serial,
            key_id: pki::spki_pin(&id.public_key_der),
            certificate: cert,
            enrolled_at: now,
            renewed_at: now,
            superseded: Vec::new(),
            rotate_requested: 0,
        })
    }
}
