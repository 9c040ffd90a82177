//! The seed of a restored cluster's first control plane (`builder seed
//! --restore-from`, docs/backup.md): an ordinary bootstrap seed made from
//! the cluster's bundle, plus the backup's signed manifest, with the etcd
//! snapshot beside it (on the config drive, or next to a seed file). The
//! archive is opened here, on the operator's machine, with the operator's
//! key: nodes never hold a key that reads backups.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use base64::Engine as _;

use crate::backup::{self, Manifest, MANIFEST, SIGNATURE, SNAPSHOT};
use crate::fsutil::{self, AtomicDir, AtomicFile, SECRET};
use crate::secrets::{ClusterSecrets, SeedFormat, SeedOptions};
use crate::seed::{Restore, Seed};
use crate::Role;

/// The snapshot's name on a config drive.
pub const DRIVE_SNAPSHOT: &str = "globular-restore.db";

/// Which backup to restore, and the key that opens it.
#[derive(Debug, Clone)]
pub struct RestoreFrom {
    pub archive: PathBuf,
    /// An age identity file of one of the archive's recipients.
    pub identity: PathBuf,
}

/// Opens the archive (decrypted with the operator's key, its signature
/// checked against the bundle's CA, every part's hash checked), then
/// writes the seed and the snapshot: a `cidata` drive holding both, or the
/// YAML seed at `out` and the snapshot beside it (`OUT.snapshot.db`).
/// Nothing is written unless every check passed.
pub fn write_restore_seed(
    cluster_dir: &Path,
    opts: &SeedOptions,
    from: &RestoreFrom,
    format: SeedFormat,
    out: &Path,
) -> anyhow::Result<(Seed, Manifest)> {
    if !opts.bootstrap || opts.role != Role::ControlPlane {
        bail!(
            "--restore-from makes the seed of the restored cluster's first control plane: \
             it needs --role control-plane --bootstrap (the other nodes keep their seeds)"
        );
    }
    let secrets = ClusterSecrets::load(cluster_dir)?;
    let identities = backup::read_identities(&from.identity)?;
    let out_name = out
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: not a file name", out.display()))?;
    let out_dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // The archive is unpacked into a private scratch directory beside the
    // output, removed whatever happens.
    let scratch = AtomicDir::create(&out_dir.join(format!(".{out_name}.restore")), 0o700)
        .with_context(|| format!("creating a scratch directory in {}", out_dir.display()))?;
    let unpacked = scratch.path().join("open");
    let manifest = backup::open(&from.archive, &identities, secrets.ca.cert_pem(), &unpacked)?;
    if manifest.cluster.id != secrets.info.id {
        bail!(
            "{}: a backup of cluster {} ({}), but {} is cluster {} ({})",
            from.archive.display(),
            manifest.cluster.name,
            manifest.cluster.id,
            cluster_dir.display(),
            secrets.info.name,
            secrets.info.id
        );
    }
    let read = |name: &str| {
        let path = unpacked.join(name);
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    };
    let manifest_json = String::from_utf8(read(MANIFEST)?).context("the manifest is not UTF-8")?;
    let signature = base64::engine::general_purpose::STANDARD.encode(read(SIGNATURE)?);
    let snapshot_name = match format {
        SeedFormat::Cidata => DRIVE_SNAPSHOT.to_owned(),
        SeedFormat::Yaml => format!("{out_name}.snapshot.db"),
    };
    let mut seed = secrets.seed(opts)?;
    seed.restore = Some(Restore {
        manifest: manifest_json,
        signature,
        snapshot: snapshot_name.clone(),
    });
    seed.validate()
        .map_err(|e| anyhow::anyhow!("seed for {}: {e}", opts.node))?;
    let snapshot = unpacked.join(SNAPSHOT);
    match format {
        SeedFormat::Cidata => {
            let image = crate::cidata::image_with(&seed, &[(DRIVE_SNAPSHOT, &snapshot)])
                .context("making the cidata image")?;
            fsutil::write_atomic(out, &image, SECRET)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        SeedFormat::Yaml => {
            let beside = out_dir.join(&snapshot_name);
            let mut file = AtomicFile::create(&beside, SECRET)
                .with_context(|| format!("creating {}", beside.display()))?;
            let mut source = std::fs::File::open(&snapshot)
                .with_context(|| format!("reading {}", snapshot.display()))?;
            std::io::copy(&mut source, &mut file)
                .and_then(|_| file.commit())
                .with_context(|| format!("writing {}", beside.display()))?;
            fsutil::write_atomic(out, seed.to_yaml().as_bytes(), SECRET)
                .with_context(|| format!("writing {}", out.display()))?;
        }
    }
    Ok((seed, manifest))
}
