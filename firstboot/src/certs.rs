//! The certificates on a node and when they expire (`globular cert
//! status`): every `*.crt` under the state directory (the node's, etcd's,
//! the CAs, the packages'), soonest expiry first.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use globular_cluster::pki;
use serde::Serialize;
use time::OffsetDateTime;

/// One certificate file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertStatus {
    pub path: PathBuf,
    pub common_name: String,
    /// Unix seconds.
    pub not_before: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Seconds until it expires (negative: expired).
    pub remaining_seconds: i64,
}

/// Every certificate under `root`, soonest expiry first. A `.crt` file that
/// is not a certificate is an error naming it.
pub fn status(root: &Path, now: OffsetDateTime) -> anyhow::Result<Vec<CertStatus>> {
    let mut files = Vec::new();
    collect(root, &mut files)?;
    let mut out = Vec::new();
    for path in files {
        let pem = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let id = pki::identity_of_pem(&pem).with_context(|| format!("{}", path.display()))?;
        let not_after = OffsetDateTime::from_unix_timestamp(id.not_after)
            .with_context(|| format!("{}: expiry out of range", path.display()))?;
        out.push(CertStatus {
            path,
            common_name: id.common_name,
            not_before: id.not_before,
            not_after,
            remaining_seconds: id.not_after - now.unix_timestamp(),
        });
    }
    out.sort_by(|a, b| a.not_after.cmp(&b.not_after).then(a.path.cmp(&b.path)));
    Ok(out)
}

/// The `*.crt` files under `dir` (symbolic links and etcd's data are not
/// followed).
fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .with_context(|| format!("reading {}", path.display()))?;
        if kind.is_dir() && entry.file_name() != "data" {
            collect(&path, out)?;
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "crt") {
            out.push(path);
        }
    }
    Ok(())
}

/// The table `globular cert status` prints.
pub fn table(certs: &[CertStatus]) -> String {
    let mut out = format!(
        "{:<20} {:>10}  {:<32} {}\n",
        "EXPIRES", "REMAINING", "COMMON NAME", "FILE"
    );
    for c in certs {
        let remaining = if c.remaining_seconds < 0 {
            "expired".to_owned()
        } else if c.remaining_seconds >= 2 * 86_400 {
            format!("{}d", c.remaining_seconds / 86_400)
        } else if c.remaining_seconds >= 3_600 {
            format!("{}h", c.remaining_seconds / 3_600)
        } else {
            format!("{}m", c.remaining_seconds / 60)
        };
        let expires = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            c.not_after.year(),
            u8::from(c.not_after.month()),
            c.not_after.day(),
            c.not_after.hour(),
            c.not_after.minute()
        );
        out += &format!(
            "{expires:<20} {remaining:>10}  {:<32} {}\n",
            c.common_name,
            c.path.display()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use globular_cluster::pki::{Ca, LeafSpec};
    use globular_cluster::Role;

    #[test]
    fn lists_every_certificate_soonest_first_and_names_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("demo").unwrap();
        let pki_dir = dir.path().join("pki");
        let package = dir.path().join("packages/k/pki");
        let etcd_data = dir.path().join("etcd/data");
        for d in [&pki_dir, &package, &etcd_data] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(pki_dir.join("ca.crt"), ca.cert_pem()).unwrap();
        let mut spec = LeafSpec::node("n1", Role::Worker, &[]);
        spec.validity = Some(time::Duration::hours(5));
        let (short, _) = ca.issue_with_new_key(&spec).unwrap();
        std::fs::write(package.join("short.crt"), &short.cert_pem).unwrap();
        let (node, _) = ca
            .issue_with_new_key(&LeafSpec::node("n1", Role::Worker, &[]))
            .unwrap();
        std::fs::write(pki_dir.join("node.crt"), &node.cert_pem).unwrap();
        // Not a certificate file, or not where certificates are.
        std::fs::write(pki_dir.join("node.key"), "key").unwrap();
        std::fs::write(etcd_data.join("x.crt"), "not read").unwrap();

        let now = OffsetDateTime::now_utc();
        let certs = status(dir.path(), now).unwrap();
        let names: Vec<&str> = certs
            .iter()
            .map(|c| c.path.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["short.crt", "node.crt", "ca.crt"]);
        assert!((4 * 3600..=5 * 3600).contains(&certs[0].remaining_seconds));
        let text = table(&certs);
        assert!(text.contains(" 4h ") || text.contains(" 5h "), "{text}");

        std::fs::write(pki_dir.join("broken.crt"), "garbage").unwrap();
        let err = format!("{:#}", status(dir.path(), now).unwrap_err());
        assert!(err.contains("broken.crt"), "{err}");
    }
}
