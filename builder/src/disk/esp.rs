//! The EFI system partition, written offline with mtools into a plain file.
//!
//! FAT32, volume label `ESP`, serial from the inputs digest, every timestamp
//! from `SOURCE_DATE_EPOCH` (mtools honours it), directories and files created
//! in sorted order: the same inputs give the same bytes.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context as _};
use globular_task::Task;

/// The smallest ESP we write: FAT32 needs at least 65525 clusters.
pub const MIN_SIZE: u64 = 64 << 20;

/// A file to place on the ESP.
#[derive(Debug, Clone)]
pub enum Content {
    /// Copy this host file.
    File(PathBuf),
    /// Write these bytes.
    Bytes(Vec<u8>),
}

/// Creates `image` of `size` bytes holding `files` (ESP path such as
/// `EFI/BOOT/BOOTX64.EFI` -> content).
pub fn write(
    image: &Path,
    size: u64,
    serial: u32,
    source_date_epoch: u64,
    files: &[(String, Content)],
    scratch: &Path,
) -> anyhow::Result<()> {
    ensure!(
        size >= MIN_SIZE && size.is_multiple_of(1 << 20),
        "ESP size {size} must be whole MiB and at least {MIN_SIZE} bytes"
    );
    let file = File::create(image).with_context(|| format!("creating {}", image.display()))?;
    file.set_len(size)?;
    drop(file);
    let epoch = source_date_epoch.to_string();
    let mtool = |description: &str, program: &str| {
        Task::new(description, program)
            .package("mtools")
            .env("SOURCE_DATE_EPOCH", &epoch)
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(image)
    };
    mtool("formatting the ESP", "mformat")
        .args(["-F", "-v", "ESP", "-h", "64", "-s", "32"])
        .arg("-N")
        .arg(format!("{serial:08x}"))
        .arg("-T")
        .arg((size / 512).to_string())
        .arg("::")
        .run()?;

    let mut dirs = BTreeSet::new();
    for (path, _) in files {
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
    }
    // BTreeSet order puts a parent before its children.
    for dir in &dirs {
        mtool("creating a directory on the ESP", "mmd")
            .arg(format!("::/{dir}"))
            .run()?;
    }
    let mut sorted: Vec<&(String, Content)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (path, content)) in sorted.into_iter().enumerate() {
        let source = match content {
            Content::File(source) => source.clone(),
            Content::Bytes(bytes) => {
                let tmp = scratch.join(format!("esp-file-{i}"));
                std::fs::write(&tmp, bytes)
                    .with_context(|| format!("writing {}", tmp.display()))?;
                tmp
            }
        };
        ensure!(
            source.is_file(),
            "ESP file {path}: {} does not exist",
            source.display()
        );
        mtool("copying a file to the ESP", "mcopy")
            .arg(&source)
            .arg(format!("::/{path}"))
            .run()?;
    }
    Ok(())
}

/// Lists the files of the ESP at byte `offset` of `disk` (recursive `mdir -b`).
pub fn list(disk: &Path, offset: u64) -> anyhow::Result<Vec<String>> {
    let out = Task::new("listing the ESP", "mdir")
        .package("mtools")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{offset}", disk.display()))
        .args(["-/", "-b", "::/"])
        .read_string()?;
    Ok(out
        .lines()
        .map(|l| l.trim().trim_start_matches("::").to_owned())
        .filter(|l| !l.is_empty() && !l.ends_with('/'))
        .collect())
}

/// Copies one file out of the ESP at byte `offset` of `disk` to `dest`.
pub fn extract(disk: &Path, offset: u64, path: &str, dest: &Path) -> anyhow::Result<()> {
    Task::new("reading a file from the ESP", "mcopy")
        .package("mtools")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-n")
        .arg("-i")
        .arg(format!("{}@@{offset}", disk.display()))
        .arg(format!("::/{}", path.trim_start_matches('/')))
        .arg(dest)
        .run()?;
    Ok(())
}
