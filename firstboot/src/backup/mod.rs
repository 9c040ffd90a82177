//! Backups on a control-plane node: `globular backup create`, `list`,
//! `verify`, `prune` and `restore` here, `run` and `status` in
//! [`schedule`] (scheduled backups), copies off the node in [`targets`]
//! (through [`s3`] for object stores). docs/backup.md. The archive
//! format, its encryption and its checks are `globular_cluster::backup`.

mod s3;
pub mod schedule;
mod targets;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context as _};
use globular_cluster::backup::{self, ClusterId, EtcdFacts, Manifest, FORMAT, SEED, SNAPSHOT};
use globular_cluster::etcd_auth::KUBERNETES_PREFIX;
use globular_cluster::fsutil::{self, AtomicDir};
use globular_cluster::pki::Ca;
use globular_cluster::registry::PREFIX as SUBSTRATE_PREFIX;
use globular_cluster::seed::Seed;
use globular_cluster::Role;
use globular_task::Task;
use serde::Serialize;
use time::OffsetDateTime;

use crate::etcd_client;
use crate::layout::Layout;
use crate::runtime::{self, Threads};

/// Where a control plane keeps its backups unless told otherwise.
pub const DEFAULT_DIR: &str = "/var/lib/globular/backups";
/// The prefixes whose keys a manifest counts.
const COUNTED: [&str; 2] = [SUBSTRATE_PREFIX, KUBERNETES_PREFIX];

/// `globular backup create`.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub dir: PathBuf,
    pub name: Option<String>,
    /// Operators' age public keys, beside the seed's.
    pub recipients: Vec<String>,
}

/// Takes a backup: an etcd snapshot from this node's member and the seed,
/// signed with the cluster CA and encrypted to the operators' keys.
pub fn create(layout: &Layout, opts: &CreateOptions) -> anyhow::Result<Manifest> {
    let (config, seed) = control_plane(layout)?;
    let seed_path = layout.seed();
    let mut recipients = Vec::new();
    for text in seed
        .cluster
        .backup_recipients
        .iter()
        .chain(&opts.recipients)
    {
        recipients.push(backup::parse_recipient(text)?);
    }
    let ca = Ca::from_pem(
        &layout.read(&layout.ca_cert())?,
        &layout.read(&layout.ca_key())?,
    )
    .context("loading the cluster CA")?;
    let created = OffsetDateTime::now_utc();
    let name = match &opts.name {
        Some(name) => check_name(name)?,
        None => default_name(&seed.cluster.name, created),
    };
    fsutil::create_private_dir(&opts.dir)
        .with_context(|| format!("creating {}", opts.dir.display()))?;
    let archive = archive_path(&opts.dir, &name);
    if archive.exists() {
        bail!("{} exists already", archive.display());
    }
    // The snapshot is staged beside the archive, never left behind.
    let staging = AtomicDir::create(&opts.dir.join(format!(".{name}.staging")), 0o700)
        .context("creating the staging directory")?;
    let snapshot = staging.path().join("snapshot.db");
    let etcd = etcd_client::substrate(layout, config.etcd_endpoints.clone())?;
    let etcd_facts = runtime::block_on(Threads::One, async {
        let mut file = std::fs::File::create(&snapshot)
            .with_context(|| format!("creating {}", snapshot.display()))?;
        let bytes = etcd.snapshot(&mut file).await?;
        file.sync_all()?;
        let (revision, total_keys) = snapshot_status(&snapshot)?;
        let mut keys = std::collections::BTreeMap::new();
        for prefix in COUNTED {
            keys.insert(prefix.to_owned(), etcd.count_at(prefix, revision).await?);
        }
        tracing::info!("etcd snapshot: {bytes} bytes at revision {revision}, {total_keys} keys");
        anyhow::Ok(EtcdFacts {
            revision,
            keys,
            total_keys,
        })
    })?;
    let manifest = Manifest {
        format: FORMAT,
        name,
        created,
        cluster: ClusterId {
            name: seed.cluster.name.clone(),
            id: seed.cluster.id.clone(),
        },
        node: config.name,
        etcd: etcd_facts,
        parts: Vec::new(),
    };
    let files = [
        (SNAPSHOT.to_owned(), snapshot),
        (SEED.to_owned(), seed_path),
    ];
    let manifest = backup::write(&archive, manifest, &files, &ca, &recipients)?;
    tracing::info!("backup written to {}", archive.display());
    Ok(manifest)
}

/// This control plane's configuration and stored seed; an error on a
/// worker.
fn control_plane(layout: &Layout) -> anyhow::Result<(crate::layout::NodeConfig, Seed)> {
    let config = layout.load_node_config()?;
    if config.role != Role::ControlPlane {
        bail!(
            "backups are taken on control-plane nodes (this node is a {})",
            config.role
        );
    }
    let seed_path = layout.seed();
    let seed = Seed::parse(&layout.read(&seed_path)?, &seed_path.display().to_string())?;
    Ok((config, seed))
}

/// The revision and key count of a snapshot file (`etcdutl snapshot status`).
fn snapshot_status(snapshot: &Path) -> anyhow::Result<(i64, u64)> {
    let out = Task::new("reading the etcd snapshot", "etcdutl")
        .args(["snapshot", "status", "-w", "json"])
        .arg(snapshot)
        .read_string()?;
    let status: serde_json::Value =
        serde_json::from_str(&out).context("etcdutl snapshot status: bad JSON")?;
    let revision = status["revision"]
        .as_i64()
        .context("no revision in the snapshot status")?;
    let total = status["totalKey"]
        .as_u64()
        .context("no totalKey in the snapshot status")?;
    Ok((revision, total))
}

/// `CLUSTER-YYYYMMDDTHHMMSSZ`.
fn default_name(cluster: &str, at: OffsetDateTime) -> String {
    format!(
        "{cluster}-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

fn check_name(name: &str) -> anyhow::Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        bail!(
            "backup name {name:?}: letters, digits, '-', '_' and '.' only, not starting with '.'"
        );
    }
    Ok(name.to_owned())
}

fn archive_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.{}", backup::EXTENSION))
}

/// An archive in a backup directory.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub modified: OffsetDateTime,
}

/// The archives in `dir`, newest first.
pub fn list(dir: &Path) -> anyhow::Result<Vec<Listed>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(&format!(".{}", backup::EXTENSION)))
        else {
            continue;
        };
        let meta = entry
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?;
        out.push(Listed {
            name: name.to_owned(),
            size: meta.len(),
            modified: meta
                .modified()
                .map(OffsetDateTime::from)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            path,
        });
    }
    out.sort_by(|a, b| b.modified.cmp(&a.modified).then(b.name.cmp(&a.name)));
    Ok(out)
}

/// Removes the archives beyond the newest `keep` and those older than
/// `max_age`, never the newest one; returns the names removed.
pub fn prune(dir: &Path, keep: usize, max_age: time::Duration) -> anyhow::Result<Vec<String>> {
    let now = OffsetDateTime::from(SystemTime::now());
    let mut removed = Vec::new();
    for (i, listed) in list(dir)?.into_iter().enumerate() {
        if kept(i, now - listed.modified, keep, max_age) {
            continue;
        }
        for path in [backup::checksum_path(&listed.path), listed.path.clone()] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
            }
        }
        tracing::info!("removed backup {}", listed.name);
        removed.push(listed.name);
    }
    Ok(removed)
}

/// The retention rule of every place backups are kept: the newest
/// (`rank` 0) always stays, the others while they are among the newest
/// `keep` and no older than `max_age`.
fn kept(rank: usize, age: time::Duration, keep: usize, max_age: time::Duration) -> bool {
    rank == 0 || (rank < keep && age <= max_age)
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub archive: PathBuf,
    pub sha256: String,
    /// The manifest, when a key was given to open the archive.
    pub manifest: Option<Manifest>,
}

/// Checks an archive against its checksum file and, with `identity`,
/// opens it (into a directory removed again): signature against
/// `trusted_ca`, every part's hash.
pub fn verify(
    archive: &Path,
    identity: Option<&Path>,
    trusted_ca: &Path,
) -> anyhow::Result<Verified> {
    let sha256 = backup::check_sum(archive)?;
    let manifest = match identity {
        None => None,
        Some(identity) => {
            let scratch = scratch_dir(archive)?;
            Some(open(
                archive,
                identity,
                trusted_ca,
                &scratch.path().join("open"),
            )?)
        }
    };
    Ok(Verified {
        archive: archive.to_owned(),
        sha256,
        manifest,
    })
}

fn open(
    archive: &Path,
    identity: &Path,
    trusted_ca: &Path,
    dest: &Path,
) -> anyhow::Result<Manifest> {
    let identities = backup::read_identities(identity)?;
    let ca = std::fs::read_to_string(trusted_ca)
        .with_context(|| format!("reading {}", trusted_ca.display()))?;
    Ok(backup::open(archive, &identities, &ca, dest)?)
}

/// A private directory beside `near`, removed when dropped.
fn scratch_dir(near: &Path) -> anyhow::Result<AtomicDir> {
    let parent = near
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = format!(".globular-backup-{}", std::process::id());
    AtomicDir::create(&parent.join(name), 0o700)
        .with_context(|| format!("creating a scratch directory in {}", parent.display()))
}

/// `globular backup restore`: etcd's data directory of a new member made
/// from an archive.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub archive: PathBuf,
    pub identity: PathBuf,
    pub trusted_ca: PathBuf,
    /// The new data directory (must not exist).
    pub data_dir: PathBuf,
    /// The new member's name and peer URL: the restored etcd is a
    /// one-member cluster that others join.
    pub name: String,
    pub peer_url: String,
}

/// Verifies the archive completely, then restores its snapshot into a new
/// data directory (keys and revisions kept, a new cluster and member
/// identity). Nothing is written to `data_dir` unless every check passed.
pub fn restore(opts: &RestoreOptions) -> anyhow::Result<Manifest> {
    if opts.data_dir.exists() {
        bail!(
            "{}: already exists (etcd restores into a new data directory)",
            opts.data_dir.display()
        );
    }
    let scratch = scratch_dir(&opts.data_dir)?;
    let unpacked = scratch.path().join("open");
    let manifest = open(&opts.archive, &opts.identity, &opts.trusted_ca, &unpacked)?;
    restore_snapshot(
        &unpacked.join(SNAPSHOT),
        &opts.data_dir,
        &opts.name,
        &opts.peer_url,
        &format!("{}-restored", manifest.cluster.id),
    )?;
    tracing::info!(
        "restored {} (revision {}, {} keys) into {}",
        manifest.name,
        manifest.etcd.revision,
        manifest.etcd.total_keys,
        opts.data_dir.display()
    );
    Ok(manifest)
}

/// `etcdutl snapshot restore`: a one-member etcd cluster in `data_dir`
/// (new) with the snapshot's keys and revisions and a new member identity
/// (`name` at `peer_url`), which others join. etcdutl checks the hash the
/// snapshot ends with first.
pub fn restore_snapshot(
    snapshot: &Path,
    data_dir: &Path,
    name: &str,
    peer_url: &str,
    cluster_token: &str,
) -> anyhow::Result<()> {
    Task::new("restoring the etcd snapshot", "etcdutl")
        .args(["snapshot", "restore"])
        .arg(snapshot)
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            format!("--name={name}"),
            format!("--initial-cluster={name}={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster-token={cluster_token}"),
        ])
        .run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let at = time::macros::datetime!(2026-12-03 07:08:09 UTC);
        assert_eq!(default_name("prod", at), "prod-20261203T070809Z");
        for bad in ["", ".hidden", "a/b", "../x", "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("daily-backup-1.2_x").unwrap();
    }

    #[test]
    fn prune_keeps_the_newest_and_the_recent() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        for (i, age_hours) in [0u64, 1, 2, 30, 40].iter().enumerate() {
            let path = archive_path(dir.path(), &format!("b{i}"));
            std::fs::write(&path, "x").unwrap();
            std::fs::write(backup::checksum_path(&path), "y").unwrap();
            let at = now - std::time::Duration::from_secs(age_hours * 3600);
            filetime_set(&path, at);
        }
        // Keep 2, at most a day old: b2 is third, b3 and b4 too old.
        let mut removed = prune(dir.path(), 2, time::Duration::days(1)).unwrap();
        removed.sort();
        assert_eq!(removed, ["b2", "b3", "b4"]);
        let left: Vec<String> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(left, ["b0", "b1"]);
        assert!(!backup::checksum_path(&archive_path(dir.path(), "b4")).exists());
        // The newest stays even when it is too old.
        let removed = prune(dir.path(), 0, time::Duration::ZERO).unwrap();
        assert_eq!(removed, ["b1"]);
        assert_eq!(list(dir.path()).unwrap().len(), 1);
    }

    fn filetime_set(path: &Path, at: SystemTime) {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(at).unwrap();
    }
}
