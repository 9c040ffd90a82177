//! Writing a finished tree into output formats, and publishing outputs
//! atomically next to their manifest, SBOM and checksums.

pub mod archive;
pub mod filesystem;
pub mod manifest;
pub mod oci;
pub mod sbom;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context as _};

/// The output formats `builder build` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Directory,
    Tar,
    Cpio,
    Erofs,
    Squashfs,
    /// A bootable GPT disk image (raw).
    Disk,
    /// The same disk as qcow2.
    Qcow2,
    /// A one-layer OCI image in an OCI-layout tar archive.
    Oci,
}

impl Format {
    pub fn parse(name: &str) -> anyhow::Result<Format> {
        Ok(match name {
            "directory" => Format::Directory,
            "tar" => Format::Tar,
            "cpio" => Format::Cpio,
            "erofs" => Format::Erofs,
            "squashfs" => Format::Squashfs,
            "disk" => Format::Disk,
            "qcow2" => Format::Qcow2,
            "oci" => Format::Oci,
            other => bail!(
                "Format={other} is not supported by builder build (directory, tar, cpio, erofs, squashfs, disk, qcow2, oci)"
            ),
        })
    }

    /// Compression algorithms this format accepts, the default first.
    pub fn compressions(self) -> &'static [&'static str] {
        match self {
            Format::Directory | Format::Disk | Format::Qcow2 => &["none"],
            Format::Tar | Format::Cpio => &["zstd", "gzip", "none"],
            // lz4hc is ~10% smaller but ~7x slower to write (docs/benchmarks.md).
            Format::Erofs => &["lz4", "lz4hc", "none"],
            Format::Squashfs => &["zstd", "xz", "gzip", "lz4", "none"],
            // Of the layer; every OCI runtime reads gzip.
            Format::Oci => &["gzip", "zstd", "none"],
        }
    }

    /// Validates `CompressOutput=` for this format (`None`: the default).
    pub fn compression(self, requested: Option<&str>) -> anyhow::Result<&'static str> {
        let requested = match requested {
            None => return Ok(self.compressions()[0]),
            Some("zlib") => "gzip",
            Some(other) => other,
        };
        self.compressions()
            .iter()
            .find(|c| **c == requested)
            .copied()
            .with_context(|| {
                format!(
                    "CompressOutput={requested} is not available for {self:?} outputs (choose one of: {})",
                    self.compressions().join(", ")
                )
            })
    }

    /// The file name suffix for this format and compression.
    pub fn extension(self, compression: &str) -> String {
        let base = match self {
            Format::Directory => return String::new(),
            Format::Tar => "tar",
            Format::Cpio => "cpio",
            Format::Erofs => return ".erofs".to_owned(),
            Format::Squashfs => return ".squashfs".to_owned(),
            Format::Disk => return ".raw".to_owned(),
            Format::Qcow2 => return ".qcow2".to_owned(),
            // The layer's compression is inside.
            Format::Oci => return ".oci.tar".to_owned(),
        };
        match compression {
            "zstd" => format!(".{base}.zst"),
            "gzip" => format!(".{base}.gz"),
            _ => format!(".{base}"),
        }
    }

    /// Host tools the format needs, with their Debian packages.
    pub fn tools(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Format::Erofs => &[("mkfs.erofs", "erofs-utils")],
            Format::Squashfs => &[("mksquashfs", "squashfs-tools")],
            Format::Disk => DISK_TOOLS,
            Format::Qcow2 => &[
                ("mkfs.erofs", "erofs-utils"),
                ("veritysetup", "cryptsetup-bin"),
                ("mformat", "mtools"),
                ("objcopy", "binutils"),
                ("qemu-img", "qemu-utils"),
            ],
            _ => &[],
        }
    }
}

/// The first line each of `format`'s host tools prints of its version.
pub fn tool_versions(format: Format) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for (tool, package) in format.tools() {
        let flag = if *tool == "mksquashfs" {
            "-version"
        } else {
            "--version"
        };
        let text = globular_task::Task::new(format!("asking {tool} its version"), tool)
            .package(package)
            .arg(flag)
            .read_string()?;
        let line = text.lines().next().unwrap_or_default().trim();
        out.insert((*tool).to_owned(), line.to_owned());
    }
    Ok(out)
}

const DISK_TOOLS: &[(&str, &str)] = &[
    ("mkfs.erofs", "erofs-utils"),
    ("veritysetup", "cryptsetup-bin"),
    ("mformat", "mtools"),
    ("objcopy", "binutils"),
];

/// One published output, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutputFile {
    pub file: String,
    pub format: String,
    pub compression: String,
    /// Size in bytes (for a directory: the sum of its files).
    pub size: u64,
    /// sha256 of the file; for a directory, the tree digest.
    pub sha256: String,
}

/// A temporary directory next to the final outputs. Files written here are
/// moved under their final names by [`Staging::publish`]; if the build fails
/// or is interrupted nothing appears under a final name, and the staging
/// directory is removed (on drop, or by the next build if the process died).
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    output_dir: PathBuf,
}

const STAGING_PREFIX: &str = ".builder-staging-";

impl Staging {
    pub fn new(output_dir: &Path) -> anyhow::Result<Staging> {
        std::fs::create_dir_all(output_dir)
            .with_context(|| format!("creating output directory {}", output_dir.display()))?;
        for entry in std::fs::read_dir(output_dir)?.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(STAGING_PREFIX) else {
                continue;
            };
            let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                tracing::info!(
                    "removing leftover of an interrupted build: {}",
                    entry.path().display()
                );
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dir = output_dir.join(format!("{STAGING_PREFIX}{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Staging {
            dir,
            output_dir: output_dir.to_path_buf(),
        })
    }

    /// Where to write the output named `name` before it is published.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Moves each staged name to its final place, in the order given (so the
    /// checksum file, last, only appears once everything it lists is there).
    pub fn publish(self, names: &[String]) -> anyhow::Result<Vec<PathBuf>> {
        let mut published = Vec::new();
        for name in names {
            let from = self.dir.join(name);
            let to = self.output_dir.join(name);
            // The previous output is moved aside (and removed with the
            // staging directory) rather than renamed over: a directory cannot
            // be, and ext4 starts writing out a file renamed over another one
            // at once (`auto_da_alloc`), which made rebuilds of the worker
            // image 0.6-1.5 s slower.
            if to.symlink_metadata().is_ok_and(|m| !m.is_symlink()) {
                let old = self.dir.join(format!("{name}.old"));
                std::fs::rename(&to, &old)
                    .with_context(|| format!("moving aside {}", to.display()))?;
            }
            std::fs::rename(&from, &to).with_context(|| format!("publishing {}", to.display()))?;
            published.push(to);
        }
        Ok(published)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `SHA256SUMS` contents for files in `dir` (as `sha256sum -c` reads them).
pub fn checksums(files: &[(String, String)]) -> String {
    let mut sorted = files.to_vec();
    sorted.sort();
    sorted
        .iter()
        .map(|(name, sha)| format!("{sha}  {name}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_per_format() {
        assert_eq!(Format::Tar.compression(None).unwrap(), "zstd");
        assert_eq!(Format::Tar.compression(Some("zlib")).unwrap(), "gzip");
        assert!(Format::Erofs.compression(Some("zstd")).is_err());
        assert_eq!(Format::Cpio.extension("zstd"), ".cpio.zst");
        assert_eq!(Format::Tar.extension("none"), ".tar");
        assert_eq!(Format::parse("disk").unwrap(), Format::Disk);
        assert!(Format::parse("vhd").is_err());
    }

    #[test]
    fn staging_publishes_atomically_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::new(dir.path()).unwrap();
        std::fs::write(staging.path("a"), "1").unwrap();
        drop(staging);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let staging = Staging::new(dir.path()).unwrap();
        std::fs::write(staging.path("a"), "1").unwrap();
        std::fs::create_dir(staging.path("d")).unwrap();
        staging.publish(&["a".into(), "d".into()]).unwrap();
        let staging = Staging::new(dir.path()).unwrap();
        std::fs::create_dir(staging.path("d")).unwrap();
        std::fs::write(staging.path("d/new"), "").unwrap();
        staging.publish(&["d".into()]).unwrap();
        assert!(dir.path().join("d/new").exists());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
