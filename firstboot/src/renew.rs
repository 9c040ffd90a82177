//! Certificate renewal (`globular cert renew`): the node certificate over
//! the API, and on control-plane nodes the etcd certificates with the local
//! CA. Returns what it did, one line each.

use anyhow::{bail, Context as _};
use globular_cluster::fsutil;
use globular_cluster::pki::{self, Ca};
use globular_cluster::seed::Seed;
use globular_substrate::Client;

use crate::agent;
use crate::layout::Layout;

/// Renews the node certificate with the node's own key; only the certificate
/// file changes (atomically), so a crash leaves the old or the new one. On a
/// control-plane node the etcd server, peer and client certificates are
/// renewed too (same keys, signed with the local etcd CA); etcd and the substrate API pick up
/// the new files on their next TLS handshake.
pub async fn renew(
    layout: &Layout,
    client: &Client,
    before: time::Duration,
) -> anyhow::Result<String> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let due = |id: &pki::CertIdentity| id.not_after - now <= before.whole_seconds();
    let mut out = String::new();

    let cert_path = layout.node_cert();
    let current = pki::identity_of_pem(&layout.read(&cert_path)?)
        .with_context(|| format!("reading {}", cert_path.display()))?;
    if due(&current) {
        let key = layout.read(&layout.node_key())?;
        let csr = pki::create_csr(&key, &current.common_name)?;
        let response = client.renew(&csr).await?;
        let renewed =
            pki::identity_of_pem(&response.certificate).context("the renewed certificate")?;
        if renewed.public_key_der != current.public_key_der
            || renewed.common_name != current.common_name
        {
            bail!("the server renewed a certificate for another key or name");
        }
        fsutil::write_atomic(&cert_path, response.certificate.as_bytes(), fsutil::PUBLIC)
            .with_context(|| format!("writing {}", cert_path.display()))?;
        out += &format!("renewed: node certificate {}\n", renewed.serial);
    } else {
        out += &format!(
            "node certificate {} is valid for {} more days; not renewed\n",
            current.serial,
            (current.not_after - now) / 86_400
        );
    }

    if layout.etcd_ca_key().exists() && layout.etcd_cert("server").exists() {
        let ca = Ca::from_pem(
            &layout.read(&layout.etcd_ca_cert())?,
            &layout.read(&layout.etcd_ca_key())?,
        )
        .context("loading the etcd CA")?;
        let seed_path = layout.seed();
        let seed = Seed::parse(&layout.read(&seed_path)?, &seed_path.display().to_string())?;
        for kind in agent::ETCD_CERT_KINDS {
            let path = layout.etcd_cert(kind);
            let id = pki::identity_of_pem(&layout.read(&path)?)
                .with_context(|| format!("reading {}", path.display()))?;
            if !due(&id) {
                continue;
            }
            let issued = ca.issue(&id.public_key_der, &agent::etcd_leaf_spec(&seed, kind))?;
            fsutil::write_atomic(&path, issued.cert_pem.as_bytes(), fsutil::PUBLIC)
                .with_context(|| format!("writing {}", path.display()))?;
            out += &format!("renewed: etcd {kind} certificate {}\n", issued.serial);
        }
    }
    Ok(out)
}
