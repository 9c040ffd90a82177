//! A package's certificates: each signed by the CA the spec names, its key
//! made here, and issued again whenever the files on disk are not what the
//! spec asks for (missing, another subject or names, another CA, expired
//! or due for renewal, a key that does not match, issued before the
//! rotation last asked of the node). They are valid for the cluster's
//! certificate lifetime.
//!
//! Who signs (`issuer`): this node, with the CA key its seed gave it
//! (control planes), or the substrate API, for a node's own Kubernetes
//! identity on a node without the CA key (workers; the API checks the
//! request against the node's certificate, substrate/src/api/kubernetes.rs).
//! The API's answer carries Kubernetes' CA certificate; it is kept in
//! `pki/` only once it verifies against the cluster CA, and the
//! certificate only once it is what was asked, for the key made here.

use std::net::IpAddr;
use std::path::Path;

use anyhow::Context as _;
use globular_cluster::fsutil;
use globular_cluster::pki::{self, Ca, LeafSpec};
use globular_cluster::protocol::KubernetesCertRequest;

use super::render::Facts;
use super::spec::{Issuer, Spec, Usage};
use super::Change;
use crate::layout::Layout;

/// Checks every certificate of the spec and (unless `plan`) issues the
/// ones that fail; the changes.
pub(super) fn converge(
    layout: &Layout,
    spec: &Spec,
    facts: &Facts,
    dir: &Path,
    lifetime: time::Duration,
    plan: bool,
) -> anyhow::Result<Vec<Change>> {
    let mut changes = Vec::new();
    let requested = crate::renew::rotation_requested(layout)?;
    // The substrate API's client, made once for the run's first certificate
    // it signs.
    let mut substrate = None;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (i, c) in spec.certificates.iter().enumerate() {
        let what = format!("certificates[{i}]");
        let leaf = LeafSpec {
            common_name: facts.render(&c.common_name, &format!("{what}.common_name"))?,
            role: None,
            group: c
                .group
                .as_ref()
                .map(|g| facts.render(g, &format!("{what}.group")))
                .transpose()?,
            dns_names: facts.render_list(&c.dns, &format!("{what}.dns"))?,
            ips: facts
                .render_list(&c.ips, &format!("{what}.ips"))?
                .iter()
                .map(|ip| {
                    ip.parse::<IpAddr>()
                        .with_context(|| format!("{what}.ips: {ip:?} is not an IP address"))
                })
                .collect::<anyhow::Result<_>>()?,
            server: c.usage.contains(&Usage::Server),
            client: c.usage.contains(&Usage::Client),
            validity: Some(lifetime),
        };
        let ca_cert = layout.kubernetes_secret(c.ca.file(), "crt");
        let ca_key = layout.kubernetes_secret(c.ca.file(), "key");
        // A node the substrate signs for learns the CA with its first
        // certificate.
        let ca_pem = match (std::fs::read_to_string(&ca_cert), c.issuer) {
            (Ok(pem), _) => Some(pem),
            (Err(e), Issuer::Substrate) if e.kind() == std::io::ErrorKind::NotFound => None,
            (Err(e), _) => {
                return Err(e).with_context(|| {
                    format!(
                        "{what}: reading {} (a control plane gets Kubernetes' CAs from its seed; \
                         a bundle made before Kubernetes has none: make a new one)",
                        ca_cert.display()
                    )
                })
            }
        };
        let (cert_path, key_path) = (
            dir.join(format!("{}.crt", c.name)),
            dir.join(format!("{}.key", c.name)),
        );
        let why = match (
            std::fs::read_to_string(&cert_path),
            std::fs::read_to_string(&key_path),
            &ca_pem,
        ) {
            (Ok(cert), Ok(key), Some(ca_pem)) => {
                match pki::check_issued(&cert, &key, ca_pem, &leaf) {
                    // Sound, and not issued before a rotation asked of the node.
                    Ok(()) => {
                        let id = pki::identity_of_pem(&cert)
                            .with_context(|| format!("reading {}", cert_path.display()))?;
                        let due = crate::renew::package_certificate_due(
                            id.not_before,
                            id.not_after,
                            lifetime,
                            requested,
                            now,
                        );
                        match due {
                            Some(why) => why,
                            None => continue,
                        }
                    }
                    Err(why) => why,
                }
            }
            (Ok(_), Ok(_), None) => "its CA is not on this node yet".to_owned(),
            _ => "missing".to_owned(),
        };
        if !plan {
            let (cert, key) = match (c.issuer, &ca_pem) {
                (Issuer::Node, Some(ca_pem)) => {
                    let ca = Ca::from_pem(ca_pem, &layout.read(&ca_key)?)
                        .with_context(|| format!("loading {}", ca_cert.display()))?;
                    let (issued, key) = ca.issue_with_new_key(&leaf)?;
                    (issued.cert_pem, key)
                }
                _ => {
                    let substrate = match &mut substrate {
                        Some(s) => s,
                        None => substrate.insert(Substrate::new(layout)?),
                    };
                    let (cert, key, ca) = substrate
                        .issue(layout, &leaf)
                        .with_context(|| format!("{what}: {} from the substrate API", c.name))?;
                    if ca_pem.as_deref() != Some(ca.as_str()) {
                        fsutil::write_atomic(&ca_cert, ca.as_bytes(), fsutil::PUBLIC)
                            .with_context(|| format!("writing {}", ca_cert.display()))?;
                    }
                    (cert, key)
                }
            };
            fsutil::write_atomic(&key_path, key.as_bytes(), fsutil::SECRET)
                .with_context(|| format!("writing {}", key_path.display()))?;
            fsutil::write_atomic(&cert_path, cert.as_bytes(), fsutil::PUBLIC)
                .with_context(|| format!("writing {}", cert_path.display()))?;
        }
        changes.push(Change::Certificate {
            name: c.name.clone(),
            why,
        });
    }
    Ok(changes)
}

/// The substrate API's client of a run, with its runtime.
struct Substrate {
    client: globular_substrate::Client,
    runtime: tokio::runtime::Runtime,
}

impl Substrate {
    fn new(layout: &Layout) -> anyhow::Result<Substrate> {
        Ok(Substrate {
            client: crate::node_cli::client(layout)?,
            runtime: crate::runtime::build(crate::runtime::Threads::One)?,
        })
    }

    /// `leaf` signed by the substrate API for a key made here: the
    /// certificate, its key and Kubernetes' CA certificate, each checked.
    fn issue(&self, layout: &Layout, leaf: &LeafSpec) -> anyhow::Result<(String, String, String)> {
        let key = pki::generate_key_pem()?;
        let req = KubernetesCertRequest {
            csr: pki::create_csr(&key, &leaf.common_name)?,
            common_name: leaf.common_name.clone(),
            group: leaf.group.clone().unwrap_or_default(),
            client: leaf.client,
            server: leaf.server,
            dns_names: leaf.dns_names.clone(),
            ips: leaf.ips.clone(),
        };
        let answer = self
            .runtime
            .block_on(self.client.kubernetes_node_certificate(&req))?;
        let cluster_ca = layout.read(&layout.ca_cert())?;
        pki::verify_issued(&answer.ca_certificate, &cluster_ca)
            .context("the Kubernetes CA of the answer does not chain to the cluster CA")?;
        pki::check_issued(&answer.certificate, &key, &answer.ca_certificate, leaf)
            .map_err(|why| anyhow::anyhow!("the answer is not what was asked: {why}"))?;
        Ok((answer.certificate, key, answer.ca_certificate))
    }
}
