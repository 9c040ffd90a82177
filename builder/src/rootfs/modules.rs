//! Kernel modules stored compressed (`KernelModulesCompression=zstd`, a
//! Globular extension): every `.ko` under `usr/lib/modules/` becomes a
//! `.ko.zst`, as a kernel built with `CONFIG_MODULE_COMPRESS_ZSTD` installs
//! them (Fedora's and RHEL's kernels ship them so), and the module indexes
//! are made again. kmod (28 and later, built with zstd: Debian's since 12)
//! decompresses a module as it loads it. Done once, in the cached package
//! stage: the tree is about half kernel modules, which the image writer
//! then no longer compresses on every build.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use globular_task::Task;

/// The values `KernelModulesCompression=` takes.
pub const ALGORITHMS: &[&str] = &["none", "zstd"];

/// zstd's default level, the one the kernel's `modules_install` uses.
const LEVEL: i32 = 3;

/// Compresses every module file of `tree` with `algorithm` (`zstd`) and
/// indexes the modules again with the tree's own `depmod`; returns how many
/// were compressed. A tree without kernel modules is left alone.
pub fn compress(tree: &Path, algorithm: &str) -> anyhow::Result<usize> {
    if algorithm != "zstd" {
        bail!("KernelModulesCompression={algorithm}: one of {ALGORITHMS:?} is expected");
    }
    let root = tree.join("usr/lib/modules");
    if !root.is_dir() {
        return Ok(0);
    }
    let mut kernels = Vec::new();
    for entry in std::fs::read_dir(&root).with_context(|| format!("reading {}", root.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            kernels.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    kernels.sort();
    let files = module_files(&root)?;
    compress_files(&files)?;
    for kernel in &kernels {
        // The tree's own kmod writes the indexes its modprobe reads.
        Task::new(format!("indexing the modules of kernel {kernel}"), "chroot")
            .package("coreutils")
            .arg(tree)
            .args(["depmod", kernel])
            .run()?;
    }
    Ok(files.len())
}

/// Every regular `*.ko` file under `root`, sorted.
fn module_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry.with_context(|| format!("walking {}", root.display()))?;
        if entry.file_type().is_file() && entry.path().extension().is_some_and(|e| e == "ko") {
            files.push(entry.into_path());
        }
    }
    Ok(files)
}

/// `X.ko` → `X.ko.zst` (same permissions), on every core; each file's bytes
/// depend on its contents alone.
fn compress_files(files: &[PathBuf]) -> anyhow::Result<()> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = files.len().div_ceil(workers).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().try_for_each(|f| compress_file(f))))
            .collect();
        for handle in handles {
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        }
        Ok(())
    })
}

fn compress_file(path: &Path) -> anyhow::Result<()> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let packed = zstd::bulk::compress(&data, LEVEL)
        .with_context(|| format!("compressing {}", path.display()))?;
    let mut name = path.as_os_str().to_owned();
    name.push(".zst");
    let dest = PathBuf::from(name);
    std::fs::write(&dest, packed).with_context(|| format!("writing {}", dest.display()))?;
    let permissions = std::fs::metadata(path)?.permissions();
    std::fs::set_permissions(&dest, permissions)
        .with_context(|| format!("setting the mode of {}", dest.display()))?;
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    Ok(())
}

/// A module file of a tree made with [`compress`], as it is on disk
/// uncompressed: `X.ko.zst` read and decompressed, `X.ko` read.
pub fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "zst") {
        return zstd::decode_all(&data[..])
            .with_context(|| format!("decompressing {}", path.display()));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn module_tree() -> tempfile::TempDir {
        let tree = tempfile::tempdir().unwrap();
        let dir = tree
            .path()
            .join("usr/lib/modules/6.1.0-test/kernel/drivers/net");
        std::fs::create_dir_all(&dir).unwrap();
        for (i, name) in ["dummy.ko", "veth.ko", "bridge.ko"].iter().enumerate() {
            let body: Vec<u8> = (0..20_000u32).map(|n| (n % (7 + i as u32)) as u8).collect();
            std::fs::write(dir.join(name), body).unwrap();
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        std::fs::write(dir.join("notes.txt"), "not a module").unwrap();
        std::os::unix::fs::symlink("dummy.ko", dir.join("alias.ko")).unwrap();
        tree
    }

    #[test]
    fn modules_become_zst_files_with_the_same_contents() {
        let tree = module_tree();
        let root = tree.path().join("usr/lib/modules");
        let files = module_files(&root).unwrap();
        assert_eq!(files.len(), 3, "{files:?}");
        let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
        compress_files(&files).unwrap();
        for (file, original) in files.iter().zip(&before) {
            assert!(!file.exists(), "{} is still there", file.display());
            let packed = PathBuf::from(format!("{}.zst", file.display()));
            assert!(std::fs::metadata(&packed).unwrap().len() < original.len() as u64);
            assert_eq!(
                std::fs::metadata(&packed).unwrap().permissions().mode() & 0o7777,
                0o644
            );
            assert_eq!(&read_module(&packed).unwrap(), original);
        }
        let dir = root.join("6.1.0-test/kernel/drivers/net");
        assert!(dir.join("notes.txt").is_file());
        // A link is not a module file: left as it was.
        assert!(dir
            .join("alias.ko")
            .symlink_metadata()
            .unwrap()
            .is_symlink());
    }

    #[test]
    fn the_same_modules_give_the_same_bytes() {
        let (a, b) = (module_tree(), module_tree());
        let digest = |tree: &tempfile::TempDir| {
            let root = tree.path().join("usr/lib/modules");
            compress_files(&module_files(&root).unwrap()).unwrap();
            crate::digest::tree(&root).unwrap()
        };
        assert_eq!(digest(&a), digest(&b));
    }

    #[test]
    fn an_unknown_algorithm_is_refused_by_name() {
        let tree = module_tree();
        let err = compress(tree.path(), "xz").unwrap_err().to_string();
        assert!(err.contains("KernelModulesCompression=xz"), "{err}");
    }
}
