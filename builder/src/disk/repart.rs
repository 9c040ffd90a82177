//! First-boot state: files the OS tree carries so that `systemd-repart`
//! creates (or grows) the writable `/var` partition on first boot.
//!
//! The disk image has no state partition. On every boot the initrd's
//! `systemd-repart.service` reads `/sysroot/usr/lib/repart.d/`, finds the disk
//! behind the verity root, and adds the `state` partition (DPS type `var`,
//! ext4) in the free space after the OS slots if it is missing. `/etc/fstab`
//! names it as `/var`; the initrd checks it and mounts it on `/sysroot/var`
//! ([`install_initrd`]) before the switch to the real root, so the booted
//! system starts with its state in place. Re-imaging the OS slots never
//! touches it; `systemd-repart --factory-reset=yes` (or the
//! `FactoryReset` EFI variable) wipes it.
//!
//! The ESP is mounted on `/efi`, for boot counting.
//!
//! `/etc` stays the factory default from the read-only OS slot; programs keep
//! their mutable state under `/var` (the firstboot agent uses
//! `/var/lib/globular`) and `/run`. See `docs/disk-layout.md`.

use std::path::Path;

use anyhow::Context as _;

/// Partition label of the state partition.
pub const STATE_LABEL: &str = "state";

/// The repart definition of the state partition.
pub const STATE_DEFINITION: &str = "\
# Written by the Globular builder: the writable state partition for /var,
# created on first boot in the free space after the OS slots.
[Partition]
Type=var
Label=state
Format=ext4
SizeMinBytes=256M
FactoryReset=yes
";

/// The `/etc/fstab` line of the state partition. The initrd has already
/// checked it and mounted it ([`INITRD_MOUNT_UNIT`]), so the booted system
/// finds `/var` mounted and checks nothing (pass 0). Not `x-initrd.mount`:
/// that makes the initrd's `initrd-parse-etc.service` reload PID 1 to
/// generate the mount, 1.2-2 s of every boot under TCG.
/// The device timeout is generous: on first boot the partition appears only
/// after systemd-repart made it, and a VM host under load (the qemu-tests run
/// four VMs on two cores) makes that take minutes.
pub const FSTAB_LINE: &str = "PARTLABEL=state /var ext4 defaults,x-systemd.device-timeout=300s 0 0";

/// The initrd's mount of the state partition on the real root's `/var`,
/// checked first (as systemd-fstab-generator writes a mount with fsck pass
/// 2), after the initrd's systemd-repart made or grew the partition, and
/// required by `initrd-fs.target`: the switch to the real root waits for it.
/// The initrd gives every device five minutes to appear
/// (`profiles/initrd`).
pub const INITRD_MOUNT_UNIT: &str = "\
# Written by the Globular builder: the state partition, checked and mounted
# on the real root's /var before the switch to it.
[Unit]
Description=State partition on /sysroot/var
Before=initrd-fs.target
After=systemd-repart.service
Requires=systemd-fsck@dev-disk-by\\x2dpartlabel-state.service
After=systemd-fsck@dev-disk-by\\x2dpartlabel-state.service

[Mount]
What=/dev/disk/by-partlabel/state
Where=/sysroot/var
Type=ext4
";

/// Where [`INITRD_MOUNT_UNIT`] goes in the initrd, and the link that makes
/// `initrd-fs.target` require it.
const INITRD_MOUNT_PATH: &str = "etc/systemd/system/sysroot-var.mount";
const INITRD_MOUNT_LINK: &str = "etc/systemd/system/initrd-fs.target.requires/sysroot-var.mount";

/// Installs the state partition's mount into the initrd tree at `root`.
pub fn install_initrd(root: &Path) -> anyhow::Result<()> {
    let unit = root.join(INITRD_MOUNT_PATH);
    let link = root.join(INITRD_MOUNT_LINK);
    for dir in [unit.parent(), link.parent()].into_iter().flatten() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::overlay::replace_file(&unit, INITRD_MOUNT_UNIT.as_bytes())?;
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(&link).with_context(|| format!("replacing {}", link.display()))?;
    }
    std::os::unix::fs::symlink("../sysroot-var.mount", &link)
        .with_context(|| format!("linking {}", link.display()))?;
    Ok(())
}

/// The `/etc/fstab` line that mounts the ESP on `/efi`, so
/// `systemd-bless-boot` can drop the boot counter of a good boot.
/// (systemd-gpt-auto-generator does not find the ESP behind a verity root here.)
/// A plain mount, not an automount: in the qemu-tests an automount triggered
/// by `e2scrub_reap` (which scans mount points) intermittently kept
/// multi-user.target from being reached.
pub const ESP_FSTAB_LINE: &str =
    "PARTLABEL=esp /efi vfat umask=0077,nofail,x-systemd.device-timeout=120s 0 0";

/// Files to add to the OS tree, relative to its root.
pub fn tree_files() -> Vec<(&'static str, &'static str)> {
    vec![("usr/lib/repart.d/50-state.conf", STATE_DEFINITION)]
}

/// Installs the repart definitions into the OS tree at `root` and adds the
/// `/var` mount to its `/etc/fstab` (kept if already there).
pub fn install(root: &Path) -> anyhow::Result<()> {
    for (path, contents) in tree_files() {
        let dest = root.join(path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        crate::overlay::replace_file(&dest, contents.as_bytes())?;
    }
    let fstab = root.join("etc/fstab");
    let mut text = match std::fs::read_to_string(&fstab) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err).with_context(|| format!("reading {}", fstab.display())),
    };
    let before = text.clone();
    for line in [FSTAB_LINE, ESP_FSTAB_LINE] {
        if !text.lines().any(|l| l.trim() == line) {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(line);
            text.push('\n');
        }
    }
    if text != before {
        std::fs::create_dir_all(root.join("etc"))?;
        crate::overlay::replace_file(&fstab, text.as_bytes())?;
    }
    // The ESP's mount point: the root is read-only at run time.
    let efi = root.join("efi");
    std::fs::create_dir_all(&efi).with_context(|| format!("creating {}", efi.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/fstab"), "# static\n").unwrap();
        install(dir.path()).unwrap();
        install(dir.path()).unwrap();
        let fstab = std::fs::read_to_string(dir.path().join("etc/fstab")).unwrap();
        assert_eq!(fstab, format!("# static\n{FSTAB_LINE}\n{ESP_FSTAB_LINE}\n"));
        assert!(dir.path().join("efi").is_dir());
        let def =
            std::fs::read_to_string(dir.path().join("usr/lib/repart.d/50-state.conf")).unwrap();
        assert!(def.contains("Type=var"));
    }

    /// The initrd's mount and the OS tree's fstab line name the same
    /// partition, and the mount is required by the target the switch to
    /// the real root waits for.
    #[test]
    fn the_initrd_mounts_what_fstab_names() {
        let dir = tempfile::tempdir().unwrap();
        install_initrd(dir.path()).unwrap();
        install_initrd(dir.path()).unwrap();
        let unit = std::fs::read_to_string(dir.path().join(INITRD_MOUNT_PATH)).unwrap();
        assert!(unit.contains(&format!("What=/dev/disk/by-partlabel/{STATE_LABEL}\n")));
        assert!(FSTAB_LINE.starts_with(&format!("PARTLABEL={STATE_LABEL} /var ext4 ")));
        assert!(unit.contains("Where=/sysroot/var\nType=ext4\n"), "{unit}");
        assert!(unit.contains(r"Requires=systemd-fsck@dev-disk-by\x2dpartlabel-state.service"));
        let link = dir.path().join(INITRD_MOUNT_LINK);
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("../sysroot-var.mount")
        );
        assert!(link.exists(), "the link resolves");
        // The booted system finds /var mounted and checks nothing.
        assert!(FSTAB_LINE.ends_with(" 0 0") && !FSTAB_LINE.contains("x-initrd.mount"));
    }
}
