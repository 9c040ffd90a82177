//! Certificate renewal: the node certificate over the API (on a control
//! plane, with the local CA when the API cannot: an expired certificate),
//! and on control planes etcd's server, peer and client certificates with
//! the local etcd CA. Keys stay: a renewal certifies the same key again, so
//! no private key is written or moved. Every file changes atomically (a
//! crash leaves the old or the new certificate), and the services using
//! them (etcd, the substrate API, the substrate's etcd clients) read a
//! changed file on their next TLS handshake.
//!
//! What is renewed when ([`When`]): `globular cert renew` and the health
//! loop renew what is due (a third of its validity left, or valid longer
//! than the cluster's lifetime: [`pki::renewal_due`]); `globular cert
//! rotate` and a rotation the cluster asked for (`cert rotate --all`)
//! renew everything now.

use anyhow::{bail, Context as _};
use globular_cluster::fsutil;
use globular_cluster::pki::{self, Ca, CertIdentity, LeafSpec};
use globular_cluster::seed::Seed;

use crate::agent;
use crate::layout::Layout;

/// Which certificates to renew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Those [`pki::renewal_due`] names (the health loop).
    Due,
    /// Those that expire within this long (`cert renew --before`).
    Before(time::Duration),
    /// All of them (`cert rotate`).
    Now,
}

/// What a renewal did, a line per certificate.
#[derive(Debug, Default)]
pub struct Outcome {
    /// `node`, `etcd server`, ...: the certificates renewed.
    pub renewed: Vec<String>,
    pub lines: String,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Why `id` is to be renewed now under `when`, if it is.
fn reason(when: When, id: &CertIdentity, lifetime: time::Duration) -> Option<String> {
    let now = now();
    match when {
        When::Due => id.renewal_due(lifetime, now),
        When::Before(before) => (id.not_after - now <= before.whole_seconds())
            .then(|| format!("expires within {} s", before.whole_seconds())),
        When::Now => Some("rotation".into()),
    }
}

/// The certificates of this node that `when` would renew, named as in
/// [`Outcome::renewed`], with why.
pub fn due(layout: &Layout, when: When) -> anyhow::Result<Vec<(String, String)>> {
    let lifetime = layout.load_node_config()?.certificate_lifetime();
    let mut out = Vec::new();
    for (name, path) in certificates(layout) {
        let id = pki::identity_of_pem(&layout.read(&path)?)
            .with_context(|| format!("reading {}", path.display()))?;
        if let Some(why) = reason(when, &id, lifetime) {
            out.push((name, why));
        }
    }
    Ok(out)
}

/// The node certificate and, on a control plane, etcd's.
fn certificates(layout: &Layout) -> Vec<(String, std::path::PathBuf)> {
    let mut out = vec![("node".to_owned(), layout.node_cert())];
    if layout.etcd_ca_key().exists() && layout.etcd_cert("server").exists() {
        for kind in agent::ETCD_CERT_KINDS {
            out.push((format!("etcd {kind}"), layout.etcd_cert(kind)));
        }
    }
    out
}

/// Records that every certificate of this node is to be issued again now
/// ([`Layout::rotation_requested`]): packages' certificates, which
/// `globular apply` issues, are then due ([`package_certificate_due`]).
pub fn request_rotation(layout: &Layout) -> anyhow::Result<()> {
    let path = layout.rotation_requested();
    fsutil::write_atomic(&path, format!("{}\n", now()).as_bytes(), fsutil::PUBLIC)
        .with_context(|| format!("writing {}", path.display()))
}

/// `globular cert rotate` for the packages: marks their certificates
/// ([`request_rotation`]) and says how many there are (a file that cannot
/// be read is left to `globular apply` to report).
pub fn rotate_packages(layout: &Layout) -> anyhow::Result<String> {
    request_rotation(layout)?;
    let now = time::OffsetDateTime::now_utc();
    Ok(match crate::certs::status(&layout.package_dir(""), now) {
        Ok(certs) if certs.is_empty() => String::new(),
        Ok(certs) => format!(
            "packages' certificates ({}): to be issued again by the next `globular apply` \
             (the health loop runs {} for them)\n",
            certs.len(),
            agent::PACKAGES_UNIT
        ),
        Err(err) => format!("packages' certificates: marked for rotation ({err:#})\n"),
    })
}

/// When a rotation was last asked of this node, if ever.
pub fn rotation_requested(layout: &Layout) -> anyhow::Result<Option<i64>> {
    let path = layout.rotation_requested();
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{}: not a Unix time", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Why a package's certificate is to be issued again, if it is: due for
/// renewal ([`pki::renewal_due`]), or issued before the rotation asked at
/// `requested` (certificates are valid for the lifetime from their issue,
/// whole seconds: the issue time is `not_after` less the lifetime; a
/// request in the future counts from now).
pub fn package_certificate_due(
    not_before: i64,
    not_after: i64,
    lifetime: time::Duration,
    requested: Option<i64>,
    now: i64,
) -> Option<String> {
    if let Some(why) = pki::renewal_due(not_before, not_after, lifetime, now) {
        return Some(why);
    }
    let issued = not_after - lifetime.whole_seconds();
    requested
        .map(|at| at.min(now))
        .filter(|&at| issued < at)
        .map(|at| format!("issued before the rotation asked at {at}"))
}

/// Renews this node's certificates that `when` names.
pub async fn renew(layout: &Layout, when: When) -> anyhow::Result<Outcome> {
    let lifetime = layout.load_node_config()?.certificate_lifetime();
    let mut out = Outcome::default();

    // etcd's first: a rotation is done when the node certificate is (the
    // registry's `renewed_at`).
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
            let Some(why) = reason(when, &id, lifetime) else {
                continue;
            };
            let mut spec = agent::etcd_leaf_spec(&seed, kind);
            spec.validity = Some(lifetime);
            let issued = ca.issue(&id.public_key_der, &spec)?;
            fsutil::write_atomic(&path, issued.cert_pem.as_bytes(), fsutil::PUBLIC)
                .with_context(|| format!("writing {}", path.display()))?;
            out.renewed.push(format!("etcd {kind}"));
            out.lines += &format!(
                "renewed: etcd {kind} certificate {} ({why})\n",
                issued.serial
            );
        }
    }

    let cert_path = layout.node_cert();
    let current = pki::identity_of_pem(&layout.read(&cert_path)?)
        .with_context(|| format!("reading {}", cert_path.display()))?;
    match reason(when, &current, lifetime) {
        Some(why) => {
            let (pem, how) = renew_node(layout, &current, lifetime).await?;
            let renewed = pki::identity_of_pem(&pem).context("the renewed certificate")?;
            if renewed.public_key_der != current.public_key_der
                || renewed.common_name != current.common_name
            {
                bail!("the server renewed a certificate for another key or name");
            }
            fsutil::write_atomic(&cert_path, pem.as_bytes(), fsutil::PUBLIC)
                .with_context(|| format!("writing {}", cert_path.display()))?;
            out.renewed.push("node".into());
            out.lines += &format!(
                "renewed: node certificate {} ({why}; {how})\n",
                renewed.serial
            );
        }
        None => {
            out.lines += &format!(
                "node certificate {} is valid for {} more s; not renewed\n",
                current.serial,
                current.not_after - now()
            );
        }
    }
    Ok(out)
}

/// A new certificate for the node's key: from the API, or on a control
/// plane whose certificate the API no longer accepts (it expired while the
/// node was off), from the CA this node holds.
async fn renew_node(
    layout: &Layout,
    current: &CertIdentity,
    lifetime: time::Duration,
) -> anyhow::Result<(String, &'static str)> {
    let key = layout.read(&layout.node_key())?;
    let over_api = async {
        let client = crate::node_cli::client(layout)?;
        let csr = pki::create_csr(&key, &current.common_name)?;
        anyhow::Ok(client.renew(&csr).await?.certificate)
    };
    let err = match over_api.await {
        Ok(pem) => return Ok((pem, "by the API")),
        Err(err) => err,
    };
    let expired = current.not_after <= now();
    if !(expired && layout.ca_key().exists()) {
        return Err(err.context("renewing the node certificate over the API"));
    }
    tracing::warn!("the API refused the expired node certificate ({err:#}); using the local CA");
    let ca = Ca::from_pem(
        &layout.read(&layout.ca_cert())?,
        &layout.read(&layout.ca_key())?,
    )
    .context("loading the cluster CA")?;
    let spec = LeafSpec::renewal_of(current, lifetime);
    Ok((
        ca.issue(&current.public_key_der, &spec)?.cert_pem,
        "by the local CA",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_certificate_is_due_when_issued_before_the_rotation() {
        let lifetime = time::Duration::minutes(3);
        // Issued at 1000: valid from 1000 - backdate to 1180.
        let backdate = pki::backdate(lifetime).whole_seconds();
        let (not_before, not_after) = (1000 - backdate, 1180);
        let due = |requested, now| {
            package_certificate_due(not_before, not_after, lifetime, requested, now)
        };
        assert_eq!(due(None, 1010), None);
        // A rotation asked before or in the second it was issued: done.
        assert_eq!(due(Some(999), 1010), None);
        assert_eq!(due(Some(1000), 1010), None);
        // Asked after: due.
        assert!(due(Some(1001), 1010)
            .unwrap()
            .contains("rotation asked at 1001"));
        // A request from the future counts from now.
        assert_eq!(due(Some(5000), 1000), None);
        assert!(due(Some(5000), 1005).is_some());
        // Due by age whatever the rotation.
        assert!(due(None, 1150).is_some());
    }
}
