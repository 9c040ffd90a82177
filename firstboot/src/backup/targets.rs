//! Copies of an archive off the node: to a directory (a mounted USB disk,
//! an NFS export) or to an S3-compatible bucket. Each copy is read back
//! and its SHA-256 compared with the archive's before it counts, and the
//! target keeps as many archives as the node does (`keep`, `max_age`).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use globular_cluster::backup::policy::{CopyStatus, Place, Policy, Target};
use globular_cluster::backup::{self, EXTENSION};
use globular_cluster::fsutil::{AtomicFile, SECRET};
use globular_substrate::retry::{Attempt, Retry};
use time::OffsetDateTime;

use super::s3::Bucket;

/// How long a failing copy is tried again: attempts 2 s, 4 s, 8 s, 8 s
/// apart.
const RETRY: Retry = Retry {
    deadline: Duration::from_secs(20),
    initial: Duration::from_secs(2),
    max: Duration::from_secs(8),
};

/// Copies `archive` (and its checksum file) to `target`, verifies the
/// copy and prunes the target; tried again while it fails.
pub async fn copy(archive: &Path, sha256: &str, target: &Target, policy: &Policy) -> CopyStatus {
    let mut attempts = 0;
    let result = RETRY
        .run(|| {
            attempts += 1;
            async move {
                match copy_once(archive, sha256, target, policy).await {
                    Ok(()) => Attempt::Done(()),
                    Err(e) => {
                        tracing::warn!("copying to {}: {e:#}", target.describe());
                        Attempt::Again(e)
                    }
                }
            }
        })
        .await;
    CopyStatus {
        target: target.describe(),
        ok: result.is_ok(),
        attempts,
        error: result.err().map(|e| format!("{e:#}")),
    }
}

async fn copy_once(
    archive: &Path,
    sha256: &str,
    target: &Target,
    policy: &Policy,
) -> anyhow::Result<()> {
    let name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .context("the archive has no file name")?;
    match target.place().map_err(anyhow::Error::msg)? {
        Place::Directory(dir) => {
            let dir = Path::new(dir);
            let copy = dir.join(name);
            copy_file(archive, &copy)?;
            copy_file(
                &backup::checksum_path(archive),
                &backup::checksum_path(&copy),
            )?;
            let (copied, _) = backup::hash_file(&copy)?;
            if copied != sha256 {
                bail!(
                    "{}: SHA-256 {copied} after the copy, not {sha256}",
                    copy.display()
                );
            }
            super::prune(dir, policy.keep, policy.max_age())?;
        }
        Place::S3(s3) => {
            let bucket = Bucket::new(s3)?;
            let key = format!("{}{name}", s3.prefix);
            bucket.put_file(&key, archive, sha256).await?;
            let sums = backup::checksum_path(archive);
            let (sums_sha256, _) = backup::hash_file(&sums)?;
            bucket
                .put_file(&format!("{key}.sha256"), &sums, &sums_sha256)
                .await?;
            let (copied, _) = bucket.hash_object(&key).await?;
            if copied != sha256 {
                bail!("{key}: SHA-256 {copied} read back, not {sha256}");
            }
            prune_bucket(&bucket, &s3.prefix, policy).await?;
        }
    }
    tracing::info!("copied {name} to {}", target.describe());
    Ok(())
}

/// Copies a file into place atomically (0600).
fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    let mut source =
        std::fs::File::open(from).with_context(|| format!("reading {}", from.display()))?;
    let mut out =
        AtomicFile::create(to, SECRET).with_context(|| format!("creating {}", to.display()))?;
    std::io::copy(&mut source, &mut out)
        .and_then(|_| out.commit())
        .with_context(|| format!("writing {}", to.display()))
}

/// The bucket's rule is the node's: the newest `keep` archives under the
/// prefix, none older than `max_age`, never the newest.
async fn prune_bucket(bucket: &Bucket, prefix: &str, policy: &Policy) -> anyhow::Result<()> {
    let suffix = format!(".{EXTENSION}");
    let mut archives: Vec<_> = bucket
        .list(prefix)
        .await?
        .into_iter()
        .filter(|o| o.key.ends_with(&suffix))
        .collect();
    archives.sort_by(|a, b| {
        b.last_modified
            .cmp(&a.last_modified)
            .then(b.key.cmp(&a.key))
    });
    let now = OffsetDateTime::now_utc();
    for (i, object) in archives.iter().enumerate() {
        if super::kept(i, now - object.last_modified, policy.keep, policy.max_age()) {
            continue;
        }
        bucket.delete(&format!("{}.sha256", object.key)).await?;
        bucket.delete(&object.key).await?;
        tracing::info!("removed {} from the bucket", object.key);
    }
    Ok(())
}
