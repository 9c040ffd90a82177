//! What a `disk` (or `qcow2`) output needs beyond the OS tree: the tree made
//! bootable (repart definitions for the state partition, os-release stamped
//! with the image id and version), its kernel, and an initrd built from the
//! `initrd` profile with the boot modules of that kernel.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use globular_task::Task;

use crate::disk;
use crate::output::archive;
use crate::profile::Config;
use crate::rootfs::{self, cache::Cache, finalize};

/// The kernel found in an OS tree.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub version: String,
    /// Path of `vmlinuz` inside the tree.
    pub image: PathBuf,
}

/// Finds the (newest) kernel of the tree.
pub fn kernel(tree: &Path) -> anyhow::Result<Kernel> {
    let modules = tree.join("usr/lib/modules");
    let mut versions: Vec<String> = std::fs::read_dir(&modules)
        .with_context(|| {
            format!(
                "a disk image needs a kernel: {} is missing (add linux-image-amd64 to Packages=)",
                modules.display()
            )
        })?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|v| tree.join(format!("boot/vmlinuz-{v}")).is_file())
        .collect();
    versions.sort_by(|a, b| crate::profile::conditions::compare_versions(a, b));
    let version = versions
        .pop()
        .context("a disk image needs a kernel: no /boot/vmlinuz-* with modules in the tree")?;
    Ok(Kernel {
        image: tree.join(format!("boot/vmlinuz-{version}")),
        version,
    })
}

/// Prepares the OS tree for a disk image; returns its stamped os-release.
pub fn prepare_os_tree(tree: &Path, image_id: &str, version: &str) -> anyhow::Result<String> {
    disk::repart::install(tree)?;
    let path = tree.join("usr/lib/os-release");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let stamped = disk::stamp_os_release(&text, image_id, version);
    crate::overlay::replace_file(&path, stamped.as_bytes())?;
    // The distribution's own initrds are not used (the UKI carries ours).
    rootfs::clean::remove_glob(tree, "boot/initrd.img*")?;
    Ok(stamped)
}

/// Everything [`build_initrd`] needs.
#[derive(Debug)]
pub struct InitrdInput<'a> {
    /// The resolved `initrd` profile.
    pub config: &'a Config,
    /// What its `.tera` extra files are rendered with.
    pub template_context: &'a tera::Context,
    /// Its package stage, already in the cache.
    pub entry_tree: &'a Path,
    /// The finished OS tree (source of the kernel modules).
    pub os_tree: &'a Path,
    pub kernel_version: &'a str,
    /// Module names to include, with their dependencies.
    pub modules: Vec<String>,
    pub epoch: u64,
    pub work: &'a Path,
    pub output: &'a Path,
}

/// Builds the initrd: the initrd profile's tree with systemd as `/init`,
/// `/etc/initrd-release`, the OS kernel's boot modules and the profile's
/// `ExtraTrees=` (its `mkosi.extra/`), written as cpio.zst.
pub fn build_initrd(input: &InitrdInput<'_>) -> anyhow::Result<()> {
    let tree = input.work.join("initrd-tree");
    Task::new("copying the cached initrd tree", "cp")
        .package("coreutils")
        .args(["-a", "--reflink=auto"])
        .arg(input.entry_tree)
        .arg(&tree)
        .run()?;
    replace_symlink("usr/lib/systemd/systemd", &tree.join("init"))?;
    let release = format!(
        "NAME=\"Globular initrd\"\nID={}\nVERSION_ID={}\n",
        input.config.text("Distribution").unwrap_or("debian"),
        input.config.text("Release").unwrap_or_default()
    );
    std::fs::write(tree.join("etc/initrd-release"), release)?;
    disk::repart::install_initrd(&tree)?;
    let kver = input.kernel_version;
    let mut files = Vec::new();
    for module in &input.modules {
        // The OS tree's own kmod resolves dependencies (chroot, no mounts).
        let deps = Task::new(
            format!("resolving the dependencies of module {module}"),
            "chroot",
        )
        .package("coreutils")
        .arg(input.os_tree)
        .args(["modprobe", "-S", kver, "--show-depends", module])
        .read_string()?;
        for line in deps.lines() {
            if let Some(rest) = line.strip_prefix("insmod ") {
                let path = rest.split_whitespace().next().unwrap_or_default();
                if !files.iter().any(|f| f == path) {
                    files.push(path.to_owned());
                }
            }
        }
    }
    let moddir = format!("usr/lib/modules/{kver}");
    for file in &files {
        let rel = file.trim_start_matches('/');
        // Merged /usr: lib/modules is usr/lib/modules.
        let rel = rel
            .strip_prefix("lib/")
            .map_or(rel.to_owned(), |r| format!("usr/lib/{r}"));
        // A module the OS tree stores compressed (`KernelModulesCompression=`)
        // goes in as it was packaged: the initrd is compressed as a whole.
        let source = input.os_tree.join(&rel);
        let dest = tree.join(rel.strip_suffix(".zst").unwrap_or(&rel));
        std::fs::create_dir_all(dest.parent().expect("module path has a parent"))?;
        let bytes = rootfs::modules::read_module(&source)
            .with_context(|| format!("copying module {rel}"))?;
        std::fs::write(&dest, bytes).with_context(|| format!("writing {}", dest.display()))?;
        std::fs::set_permissions(&dest, std::fs::metadata(&source)?.permissions())?;
    }
    std::fs::create_dir_all(tree.join(&moddir))?;
    for file in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        let from = input.os_tree.join(&moddir).join(file);
        if from.exists() {
            std::fs::copy(&from, tree.join(&moddir).join(file))?;
        }
    }
    Task::new("indexing the initrd's modules", "chroot")
        .package("coreutils")
        .arg(&tree)
        .args(["depmod", kver])
        .run()?;
    for item in input.config.list("ExtraTrees") {
        let (source, target) = item.split_once(':').unwrap_or((item.as_str(), "/"));
        crate::overlay::copy_tree(
            Path::new(source),
            &tree,
            Path::new(target),
            Some(input.template_context),
        )
        .with_context(|| format!("the initrd's ExtraTrees={source}"))?;
    }
    finalize::finalize(
        &tree,
        &finalize::Finalize {
            remove_files: input.config.list("RemoveFiles").to_vec(),
            source_date_epoch: input.epoch,
            ..finalize::Finalize::default()
        },
    )?;
    let missing = rootfs::libraries::check(&tree)?;
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|m| format!("{} needs {}", m.file, m.library))
            .collect();
        bail!(
            "the initrd from {} lacks libraries its programs need (removed by RemoveFiles=?): {}",
            input.config.directory.join("mkosi.conf").display(),
            list.join("; ")
        );
    }
    std::fs::write(tree.join("etc/machine-id"), b"")?;
    finalize::clamp_mtimes(&tree, input.epoch)?;
    archive::write_cpio(&tree, input.output, "zstd", input.epoch)?;
    std::fs::remove_dir_all(&tree).ok();
    Ok(())
}

fn replace_symlink(target: &str, link: &Path) -> anyhow::Result<()> {
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(link)?;
    }
    std::os::unix::fs::symlink(target, link).with_context(|| format!("linking {}", link.display()))
}

/// What decides the initrd beyond the OS tree's kernel: the initrd
/// profile's package stage (`stage_key`) and the contents of its extra
/// trees. It goes into the image's input digest, so a changed initrd file
/// makes a new image.
pub fn initrd_key(stage_key: &str, config: &Config) -> anyhow::Result<String> {
    let mut trees = Vec::new();
    for item in config.list("ExtraTrees") {
        let source = item.split_once(':').map_or(item.as_str(), |(s, _)| s);
        trees.push((item.clone(), crate::digest::tree(Path::new(source))?));
    }
    if trees.is_empty() {
        return Ok(stage_key.to_owned());
    }
    Ok(crate::digest::json(&serde_json::json!({
        "package_stage": stage_key,
        "extra_trees": trees,
    })))
}

/// The `initrd` profile next to a role profile (`profiles/initrd/`).
pub fn initrd_profile(config: &Config) -> anyhow::Result<PathBuf> {
    let candidate = config.directory.join("../initrd");
    let candidate = crate::profile::value::normalize(&candidate);
    if !candidate.join("mkosi.conf").is_file() {
        bail!(
            "a disk image needs an initrd profile: {} has no mkosi.conf",
            candidate.display()
        );
    }
    Ok(candidate)
}

/// Ensures the package stage of the initrd profile is in the cache.
pub fn initrd_entry(
    cache: &Cache,
    stage: &rootfs::PackageStage,
    force: bool,
    progress: &crate::progress::Progress,
) -> anyhow::Result<rootfs::cache::Entry> {
    cache.rootfs(&stage.key(), force, |tmp| {
        rootfs::install(stage, &[], tmp, progress)
    })
}
