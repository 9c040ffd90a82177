//! Outputs a build keeps: a container image the build carries (`[[image]]`
//! in the lock file) is built again only when one of its inputs changed.
//! Its outputs live in the cache (`images/NAME/`) beside a stamp of what
//! made them: the inputs digest, the builder program and the writing tools.
//! Every output is checked against its `SHA256SUMS` before it is used.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::output::{self, manifest::Manifest, Format};

/// The stamp of `name`'s outputs, in their directory (which may hold other
/// versions' outputs, with their own stamps).
fn stamp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.built-by.json"))
}

/// What made a directory's outputs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    inputs_digest: String,
    /// The program that built them: this builder, or a program linking it
    /// (its size, time and inode: another build of the builder may write
    /// other bytes from the same inputs).
    builder: String,
    /// The versions of the tools that wrote them.
    tools: BTreeMap<String, String>,
}

impl Stamp {
    pub fn new(inputs_digest: &str, format: Format) -> anyhow::Result<Stamp> {
        let exe = std::env::current_exe().context("finding the builder's program")?;
        let meta = std::fs::metadata(&exe)
            .with_context(|| format!("reading the metadata of {}", exe.display()))?;
        Ok(Stamp {
            inputs_digest: inputs_digest.to_owned(),
            builder: format!(
                "{} {} {} {}.{}",
                exe.display(),
                meta.len(),
                meta.ino(),
                meta.mtime(),
                meta.mtime_nsec()
            ),
            tools: output::tool_versions(format)?,
        })
    }

    pub fn inputs_digest(&self) -> &str {
        &self.inputs_digest
    }

    /// Records that `name`'s outputs in `dir` are this stamp's (after they
    /// were published).
    pub fn record(&self, dir: &Path, name: &str) -> anyhow::Result<()> {
        let path = stamp_path(dir, name);
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Forgets what made `name`'s outputs in `dir` (before they are replaced).
pub fn forget(dir: &Path, name: &str) -> anyhow::Result<()> {
    let path = stamp_path(dir, name);
    match std::fs::remove_file(&path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// `name`'s outputs in `dir` when `stamp` made them and every file still
/// has its recorded digest: the published files (as a build returns them)
/// and the manifest. Anything else, a missing or unreadable file included,
/// means building again.
pub fn reusable(dir: &Path, name: &str, stamp: &Stamp) -> Option<(Vec<PathBuf>, Manifest)> {
    let recorded: Stamp =
        serde_json::from_slice(&std::fs::read(stamp_path(dir, name)).ok()?).ok()?;
    if &recorded != stamp {
        return None;
    }
    let manifest_file = format!("{name}.manifest.json");
    let sbom_file = format!("{name}.spdx.json");
    let sums_file = format!("{name}.SHA256SUMS");
    let sums = std::fs::read_to_string(dir.join(&sums_file)).ok()?;
    let mut listed = Vec::new();
    for line in sums.lines() {
        let (sha256, file) = line.split_once("  ")?;
        if file.contains('/') || crate::digest::file(&dir.join(file)).ok()? != sha256 {
            return None;
        }
        listed.push(file.to_owned());
    }
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(dir.join(&manifest_file)).ok()?).ok()?;
    if manifest.inputs_digest != stamp.inputs_digest {
        return None;
    }
    let image_file = manifest.outputs.first()?.file.clone();
    let files = [image_file, manifest_file, sbom_file];
    if !files.iter().all(|f| listed.contains(f)) {
        return None;
    }
    let outputs = files
        .iter()
        .chain(std::iter::once(&sums_file))
        .map(|f| dir.join(f))
        .collect();
    Some((outputs, manifest))
}
