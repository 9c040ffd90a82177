//! A package's certificates: each issued on this node by the CA the spec
//! names (the node holds it: these packages are for control planes), its
//! key made here, and issued again whenever the files on disk are not
//! what the spec asks for (missing, another subject or names, another
//! CA, expired or due for renewal, a key that does not match, issued
//! before the rotation last asked of the node). They are valid for the
//! cluster's certificate lifetime.

use std::net::IpAddr;
use std::path::Path;

use anyhow::Context as _;
use globular_cluster::fsutil;
use globular_cluster::pki::{self, Ca, LeafSpec};

use super::render::Facts;
use super::spec::{Spec, Usage};
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
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (i, c) in spec.certificates.iter().enumerate() {
        let what = format!("certificates[{i}]");
        let leaf = LeafSpec {
            common_name: c.common_name.clone(),
            role: None,
            group: c.group.clone(),
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
        let ca_pem = std::fs::read_to_string(&ca_cert).with_context(|| {
            format!(
                "{what}: reading {} (a control plane gets Kubernetes' CAs from its seed; \
                 a bundle made before Kubernetes has none: make a new one)",
                ca_cert.display()
            )
        })?;
        let (cert_path, key_path) = (
            dir.join(format!("{}.crt", c.name)),
            dir.join(format!("{}.key", c.name)),
        );
        let why = match (
            std::fs::read_to_string(&cert_path),
            std::fs::read_to_string(&key_path),
        ) {
            (Ok(cert), Ok(key)) => match pki::check_issued(&cert, &key, &ca_pem, &leaf) {
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
            },
            _ => "missing".to_owned(),
        };
        if !plan {
            let ca = Ca::from_pem(&ca_pem, &layout.read(&ca_key)?)
                .with_context(|| format!("loading {}", ca_cert.display()))?;
            let (issued, key) = ca.issue_with_new_key(&leaf)?;
            fsutil::write_atomic(&key_path, key.as_bytes(), fsutil::SECRET)
                .with_context(|| format!("writing {}", key_path.display()))?;
            fsutil::write_atomic(&cert_path, issued.cert_pem.as_bytes(), fsutil::PUBLIC)
                .with_context(|| format!("writing {}", cert_path.display()))?;
        }
        changes.push(Change::Certificate {
            name: c.name.clone(),
            why,
        });
    }
    Ok(changes)
}
