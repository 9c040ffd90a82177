//! Identity: the node key (made here, never sent), the CSR and the node
//! certificate: signed locally on the bootstrap node, enrolled over the API
//! (CA-pinned) everywhere else.

use anyhow::{bail, Context as _};
use globular_cluster::pki::{self, Ca, LeafSpec};
use globular_cluster::protocol::EnrollRequest;
use globular_cluster::seed::{self, Seed};
use globular_cluster::Role;
use globular_substrate::client::enroll_with;

use super::Agent;
use crate::layout::NodeConfig;

impl Agent {
    /// The node key, made here once; it never leaves the node.
    pub(super) fn key(&self) -> anyhow::Result<()> {
        let path = self.layout.node_key();
        if let Ok(existing) = std::fs::read_to_string(&path) {
            if pki::public_key_of_key_pem(&existing).is_ok() {
                return Ok(());
            }
        }
        self.write_secret(&path, &pki::generate_key_pem()?)
    }

    pub(super) fn node_key(&self) -> anyhow::Result<String> {
        self.layout.read(&self.layout.node_key())
    }

    pub(super) fn ca(&self, seed: &Seed) -> anyhow::Result<Ca> {
        let bundle = seed.ca.as_ref().context("the seed has no CA")?;
        Ok(Ca::from_pem(&bundle.certificate, &bundle.key)?)
    }

    /// Whether `node.crt` exists and certifies the node key.
    pub(super) fn have_node_cert(&self) -> anyhow::Result<bool> {
        let Ok(cert) = std::fs::read_to_string(self.layout.node_cert()) else {
            return Ok(false);
        };
        let key = pki::public_key_of_key_pem(&self.node_key()?)?;
        Ok(pki::identity_of_pem(&cert).is_ok_and(|id| id.public_key_der == key))
    }

    /// Bootstrap: the CA is here, so the node signs its own certificate.
    pub(super) fn local_node_cert(&self, seed: &Seed) -> anyhow::Result<()> {
        let ca = self.ca(seed)?;
        self.write_public(&self.layout.ca_cert(), ca.cert_pem())?;
        self.write_secret(&self.layout.ca_key(), ca.key_pem())?;
        if self.have_node_cert()? {
            return Ok(());
        }
        let public = pki::public_key_of_key_pem(&self.node_key()?)?;
        let issued = ca.issue(
            &public,
            &LeafSpec {
                validity: Some(seed.cluster.certificate_lifetime()),
                ..LeafSpec::node(&seed.node.name, Role::ControlPlane, &seed.ips())
            },
        )?;
        self.write_public(&self.layout.node_cert(), &issued.cert_pem)
    }

    /// Join: enroll over the API, checking the server against the CA pin.
    pub(super) async fn enroll(&self, seed: &Seed) -> anyhow::Result<()> {
        if let Some(ca) = &seed.ca {
            self.write_public(&self.layout.ca_cert(), &ca.certificate)?;
            self.write_secret(&self.layout.ca_key(), &ca.key)?;
        }
        let key = self.node_key()?;
        if seed.token.is_none() && seed.ticket.is_none() {
            bail!("the seed has neither a token nor a ticket to enroll with");
        }
        let request = EnrollRequest {
            token: seed.token.clone(),
            ticket: seed.ticket.clone(),
            csr: pki::create_csr(&key, &seed.node.name)?,
            node: seed.node.name.clone(),
            role: seed.node.role,
            addresses: seed.node.addresses.clone(),
            image_version: self.image_version(),
        };
        tracing::info!(
            "enrolling {} as {}: sending the CSR to {}",
            seed.node.name,
            seed.node.role,
            seed.cluster.endpoints.join(", ")
        );
        let response = enroll_with(
            &seed.cluster.endpoints,
            &seed.cluster.ca_cert_hash,
            &request,
            self.opts.timeout,
        )
        .await?;
        // Exactly the pinned CA, and a certificate it signed for this key,
        // name and role.
        let bundle = pki::pem_blocks(&response.ca_bundle, "CERTIFICATE")
            .map_err(|e| anyhow::anyhow!("the server's CA bundle: {e}"))?;
        if bundle.len() != 1
            || pki::ca_pin_of_pem(&response.ca_bundle)? != seed.cluster.ca_cert_hash
        {
            bail!("the server's CA bundle is not exactly the pinned CA");
        }
        let id = pki::verify_issued(&response.certificate, &response.ca_bundle)
            .context("the issued certificate")?;
        if id.public_key_der != pki::public_key_of_key_pem(&key)?
            || id.common_name != seed.node.name
            || id.role != Some(seed.node.role)
        {
            bail!("the server issued a certificate for another key, name or role");
        }
        self.write_public(&self.layout.ca_cert(), &response.ca_bundle)?;
        self.write_public(&self.layout.node_cert(), &response.certificate)?;
        let api_endpoints = if response.api_endpoints.is_empty() {
            seed.cluster.endpoints.clone()
        } else {
            response.api_endpoints.clone()
        };
        self.write_node_config(seed, response.etcd_endpoints.clone(), api_endpoints)
    }

    pub(super) fn write_node_config(
        &self,
        seed: &Seed,
        etcd: Vec<String>,
        api: Vec<String>,
    ) -> anyhow::Result<()> {
        let config = NodeConfig {
            name: seed.node.name.clone(),
            role: seed.node.role,
            cluster_name: seed.cluster.name.clone(),
            addresses: seed.node.addresses.clone(),
            api_listen: (seed.node.role == Role::ControlPlane)
                .then(|| seed::host_port(seed.primary_ip(), seed.node.ports.api)),
            etcd_endpoints: etcd,
            api_endpoints: api,
            image_version: self.image_version(),
            certificate_lifetime: seed.cluster.certificate_lifetime,
        };
        self.write_public(
            &self.layout.node_config(),
            &serde_json::to_string_pretty(&config)?,
        )
    }
}
