//! A small bootable image, built once and cached, standing in for the worker
//! image until `builder build` produces it (issue #3): a Debian bookworm tree
//! (systemd, udev, linux-image-amd64) and a systemd initrd, both made with
//! `mmdebstrap`, turned into a disk with the real `builder::disk::assemble`.
//!
//! The tree carries a test unit that prints
//! `globular-test: image-version=V var=DEVICE boots=N` on the console once
//! `local-fs.target` is reached, counting boots in `/var`.
//!
//! Cached under `target/qemu-fixtures/<key>/` (or `$GLOBULAR_QEMU_FIXTURES`);
//! a half-built fixture is never used (built in a temp dir, then renamed).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::{bail, Context as _};
use builder::disk::{self, DiskInput, DiskLayout, OsFilesystem};
use globular_task::Task;

/// Bump when the recipe changes.
const KEY: &str = "boot-fixture-v6";
pub const IMAGE_ID: &str = "globular-test";
pub const IMAGE_VERSION: &str = "0.1.0";
pub const SOURCE_DATE_EPOCH: u64 = 1_700_000_000;
pub const CMDLINE: &str = "console=ttyS0,115200 systemd.firstboot=no panic=-1";

/// `systemd-boot` carries systemd-bless-boot (boot counting) in bookworm.
const OS_PACKAGES: &str =
    "systemd,systemd-sysv,systemd-boot,udev,kmod,dbus,e2fsprogs,linux-image-amd64";
const INITRD_PACKAGES: &str = "systemd,udev,kmod,libcryptsetup12";
/// Kernel modules the initrd needs to find and mount a verity erofs root on virtio.
const INITRD_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "dm_mod",
    "dm_verity",
    "erofs",
    "squashfs",
    "ext4",
    "overlay",
];

const REPORT_UNIT: &str = "\
[Unit]
Description=Report the image version and state partition (qemu-tests)
After=local-fs.target
Wants=local-fs.target

[Service]
Type=oneshot
StandardOutput=journal+console
ExecStart=/usr/local/sbin/globular-test-report

[Install]
WantedBy=multi-user.target
";

const REPORT_SCRIPT: &str = "\
#!/bin/sh
. /usr/lib/os-release
mkdir -p /var/lib/globular-test
n=$(cat /var/lib/globular-test/boots 2>/dev/null || echo 0)
n=$((n + 1))
echo $n > /var/lib/globular-test/boots
sync
echo \"globular-test: image-version=$IMAGE_VERSION var=$(findmnt -no SOURCE /var) boots=$n\"
";

/// The built fixture.
#[derive(Debug, Clone)]
pub struct BootImage {
    pub dir: PathBuf,
    /// The raw disk image (never written by tests: they use overlays).
    pub disk: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The UKI's full command line (with roothash=), for direct kernel boots.
    pub cmdline: String,
    pub layout: serde_json::Value,
}

fn cache_root() -> PathBuf {
    std::env::var_os("GLOBULAR_QEMU_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/qemu-fixtures"))
}

/// A private directory for one test's VM files, under the cache directory
/// rather than /tmp (other suites on this machine clean /tmp/.tmp* while VMs
/// still write there).
pub fn run_dir() -> tempfile::TempDir {
    let runs = cache_root().join("runs");
    std::fs::create_dir_all(&runs).expect("creating the runs directory");
    // GLOBULAR_QEMU_KEEP=1 keeps the console logs and disks for a post-mortem.
    tempfile::Builder::new()
        .prefix("vm-")
        .disable_cleanup(std::env::var_os("GLOBULAR_QEMU_KEEP").is_some())
        .tempdir_in(runs)
        .expect("creating a run directory")
}

/// One VM at a time: the machine has two cores, and boot times are measured.
pub fn vm_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Builds the fixture once per process (and once per cache directory).
pub fn boot_image() -> &'static BootImage {
    static IMAGE: OnceLock<BootImage> = OnceLock::new();
    IMAGE.get_or_init(|| match load_or_build() {
        Ok(image) => image,
        Err(err) => panic!("building the boot fixture: {err:#}"),
    })
}

fn load_or_build() -> anyhow::Result<BootImage> {
    let root = cache_root();
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let dir = root.join(KEY);
    if !dir.join("layout.json").is_file() {
        // Built in KEY.work (bootstrapped trees survive a failed attempt),
        // renamed into place when complete.
        let work = root.join(format!("{KEY}.work"));
        std::fs::create_dir_all(&work)?;
        build(&work)?;
        std::fs::rename(&work, &dir)
            .with_context(|| format!("renaming {} to {}", work.display(), dir.display()))?;
    }
    let layout: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("layout.json"))?)?;
    Ok(BootImage {
        disk: dir.join("disk.raw"),
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.cpio.zst"),
        cmdline: layout["uki"]["cmdline"]
            .as_str()
            .context("layout.json has no uki.cmdline")?
            .to_owned(),
        layout,
        dir,
    })
}

fn mmdebstrap(what: &str, packages: &str, dest: &Path) -> anyhow::Result<()> {
    let done = dest.with_extension("done");
    if done.is_file() {
        return Ok(());
    }
    if dest.exists() {
        std::fs::remove_dir_all(dest)?;
    }
    Task::new(format!("bootstrapping the {what} tree"), "mmdebstrap")
        .package("mmdebstrap")
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH.to_string())
        .args(["--variant=minbase", "--quiet", "--mode=root"])
        .arg(format!("--include={packages}"))
        .args([
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/info/*",
            "bookworm",
        ])
        .arg(dest)
        .run()?;
    std::fs::write(done, "")?;
    Ok(())
}

fn sh(description: &str, script: &str) -> anyhow::Result<String> {
    Ok(Task::new(description, "sh")
        .args(["-euc", script])
        .read_string()?)
}

/// Steps after bootstrapping may run again on a cached tree.
fn symlink_force(target: &str, link: &Path) -> anyhow::Result<()> {
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(link)?;
    }
    std::os::unix::fs::symlink(target, link).with_context(|| format!("linking {}", link.display()))
}

fn kernel_version(tree: &Path) -> anyhow::Result<String> {
    let mut versions: Vec<String> = std::fs::read_dir(tree.join("usr/lib/modules"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    versions
        .pop()
        .with_context(|| format!("no kernel in {}/usr/lib/modules", tree.display()))
}

fn build(out: &Path) -> anyhow::Result<()> {
    let os = out.join("os-tree");
    let initrd = out.join("initrd-tree");
    mmdebstrap("OS", OS_PACKAGES, &os)?;
    mmdebstrap("initrd", INITRD_PACKAGES, &initrd)?;
    let kver = kernel_version(&os)?;
    std::fs::copy(os.join(format!("boot/vmlinuz-{kver}")), out.join("vmlinuz"))?;

    // The initrd: systemd as /init, the boot modules of the OS kernel, no bulk.
    symlink_force("usr/lib/systemd/systemd", &initrd.join("init"))?;
    std::fs::write(
        initrd.join("etc/initrd-release"),
        "NAME=\"Globular test initrd\"\nID=debian\nVERSION_ID=12\n",
    )?;
    std::fs::write(initrd.join("etc/machine-id"), "")?;
    let mut modules = Vec::new();
    for module in INITRD_MODULES {
        // The tree's own kmod (the host may have none), through chroot: no mounts needed.
        let deps = Task::new("resolving module dependencies", "chroot")
            .arg(&os)
            .args(["modprobe", "-S", &kver, "--show-depends", module])
            .read_string()?;
        for line in deps.lines() {
            if let Some(path) = line.strip_prefix("insmod ") {
                let path = path.split_whitespace().next().unwrap_or_default();
                modules.push(PathBuf::from(path));
            }
        }
    }
    let moddir = format!("usr/lib/modules/{kver}");
    for module in &modules {
        let rel = module
            .strip_prefix("/")
            .with_context(|| format!("module path {} is relative", module.display()))?;
        let from = os.join(rel);
        // Both trees are merged-/usr: `lib` is a symlink to `usr/lib`.
        let dest = initrd.join(rel);
        std::fs::create_dir_all(dest.parent().expect("module path has a parent"))?;
        std::fs::copy(&from, &dest).with_context(|| format!("copying {}", from.display()))?;
    }
    for file in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        let from = os.join(&moddir).join(file);
        if from.exists() {
            std::fs::copy(&from, initrd.join(&moddir).join(file))?;
        }
    }
    Task::new("indexing initrd modules", "chroot")
        .arg(&initrd)
        .args(["depmod", &kver])
        .run()?;
    sh(
        "slimming the initrd tree",
        &format!(
            "cd '{}' && rm -rf usr/share/perl usr/share/perl5 usr/lib/x86_64-linux-gnu/perl* \
             usr/share/zoneinfo usr/share/bash-completion usr/lib/udev/hwdb.bin \
             usr/lib/udev/hwdb.d var/cache/apt/* var/lib/apt/lists/* var/log/*",
            initrd.display()
        ),
    )?;
    sh(
        "packing the initrd",
        &format!(
            "cd '{}' && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc --reproducible \
             | zstd -q -T0 -12 -o '{}'",
            initrd.display(),
            out.join("initrd.cpio.zst").display()
        ),
    )?;

    // The OS tree: os-release with the image version, empty machine-id,
    // the state partition (repart.d + fstab), the report unit, fewer modules.
    let osrel_path = os.join("usr/lib/os-release");
    let osrel = std::fs::read_to_string(&osrel_path)?;
    let osrel = disk::stamp_os_release(&osrel, IMAGE_ID, IMAGE_VERSION);
    std::fs::write(&osrel_path, &osrel)?;
    std::fs::write(os.join("etc/machine-id"), "")?;
    std::fs::write(os.join("etc/hostname"), "globular-test\n")?;
    std::fs::write(os.join("etc/hosts"), "127.0.0.1 localhost\n")?;
    disk::repart::install(&os)?;
    std::fs::create_dir_all(os.join("usr/local/sbin"))?;
    let script = os.join("usr/local/sbin/globular-test-report");
    std::fs::write(&script, REPORT_SCRIPT)?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    std::fs::write(
        os.join("etc/systemd/system/globular-test-report.service"),
        REPORT_UNIT,
    )?;
    std::fs::create_dir_all(os.join("etc/systemd/system/multi-user.target.wants"))?;
    symlink_force(
        "../globular-test-report.service",
        &os.join("etc/systemd/system/multi-user.target.wants/globular-test-report.service"),
    )?;
    sh(
        "slimming the OS tree",
        &format!(
            "cd '{root}' && rm -f boot/initrd.img* && \
             cd '{root}/{moddir}/kernel' && rm -rf sound drivers/gpu drivers/media \
             drivers/net/wireless drivers/infiniband drivers/staging drivers/bluetooth net/wireless",
            root = os.display()
        ),
    )?;
    Task::new("indexing OS modules", "chroot")
        .arg(&os)
        .args(["depmod", &kver])
        .run()?;

    let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, KEY.as_bytes())
        .as_ref()
        .try_into()?;
    let ids = disk::ids::Ids::derive(&digest);
    let erofs = out.join("os.erofs");
    Task::new("making the OS erofs", "mkfs.erofs")
        .package("erofs-utils")
        .args(["-T", &SOURCE_DATE_EPOCH.to_string(), "--all-root", "-U"])
        .arg(ids.filesystem.to_string())
        .arg(&erofs)
        .arg(&os)
        .run()?;

    let layout = disk::assemble(&DiskInput {
        os_image: erofs.clone(),
        os_filesystem: OsFilesystem::Erofs,
        kernel: out.join("vmlinuz"),
        kernel_version: Some(kver),
        initrd: out.join("initrd.cpio.zst"),
        cmdline: CMDLINE.into(),
        os_release: osrel,
        image_id: IMAGE_ID.into(),
        image_version: IMAGE_VERSION.into(),
        inputs_digest: digest,
        source_date_epoch: SOURCE_DATE_EPOCH,
        slot_size: None,
        esp_size: None,
        boot_tries: disk::DEFAULT_BOOT_TRIES,
        stub: None,
        systemd_boot: None,
        output: out.join("disk.raw"),
        work_dir: out.join("work"),
    })?;
    check_layout(&layout)?;
    std::fs::write(
        out.join("layout.json"),
        serde_json::to_string_pretty(&layout)?,
    )?;
    // Keep the cache small: the trees and the erofs live on in disk.raw.
    for tmp in [os, initrd, erofs, out.join("work")] {
        if tmp.is_dir() {
            std::fs::remove_dir_all(&tmp)?;
        } else {
            std::fs::remove_file(&tmp)?;
        }
    }
    Ok(())
}

fn check_layout(layout: &DiskLayout) -> anyhow::Result<()> {
    if layout.partitions.len() != 5 {
        bail!("expected 5 partitions, got {}", layout.partitions.len());
    }
    Ok(())
}
