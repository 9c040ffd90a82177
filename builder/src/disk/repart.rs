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

/// The initrd's drop-in for `systemd-repart.service`.
const INITRD_REPART_DROP_IN: &str = "\
# Written by the Globular builder. The initrd makes the state partition (the
# OS tree's /usr/lib/repart.d/50-state.conf; in the initrd systemd-repart
# reads its definitions from /sysroot and finds the disk behind the verity
# root mounted there). systemd 252 orders the unit only before
# initrd-root-fs.target, not after the root it needs: this waits for it.
# sysroot-var.mount (required by initrd-fs.target) is ordered after this
# unit, so it starts once the partition exists, and the switch to the real
# root waits for that mount: repart is never cut off half-way through
# writing the table.
[Unit]
Requires=sysroot.mount
After=sysroot.mount
";

/// The initrd's udev rule that keeps its records of the state partition
/// and the ESP across the switch to the real root.
const INITRD_PERSIST_RULE: &str = "\
# Written by the Globular builder. The initrd mounts the state partition on
# /var and the booted system mounts the ESP on /efi. The switch to the real
# root drops udev's records of every device except those marked db_persist,
# so without this the booted system's var.mount and efi.mount wait for
# udev's coldplug to announce the partitions again (on a TCG VM that took
# 8-12 s, all of it on the path to local-fs.target). Kept, PID 1 knows them
# as plugged from its first moment, as it knows the verity root.
SUBSYSTEM==\"block\", ENV{DEVTYPE}==\"partition\", ENV{ID_PART_ENTRY_NAME}==\"state|esp\", OPTIONS+=\"db_persist\"
";

/// Where [`INITRD_MOUNT_UNIT`] goes in the initrd, and the link that makes
/// `initrd-fs.target` require it.
const INITRD_MOUNT_PATH: &str = "etc/systemd/system/sysroot-var.mount";
const INITRD_MOUNT_LINK: &str = "etc/systemd/system/initrd-fs.target.requires/sysroot-var.mount";

/// The files of the initrd's part in the state partition, relative to its
/// root.
fn initrd_files() -> [(&'static str, &'static str); 3] {
    [
        (INITRD_MOUNT_PATH, INITRD_MOUNT_UNIT),
        (
            "etc/systemd/system/systemd-repart.service.d/50-globular-after-sysroot.conf",
            INITRD_REPART_DROP_IN,
        ),
        (
            "etc/udev/rules.d/90-globular-state-persist.rules",
            INITRD_PERSIST_RULE,
        ),
    ]
}

/// Installs the initrd's part in the state partition into the initrd tree
/// at `root`: systemd-repart ordered after the real root, the mount of
/// `/sysroot/var`, and udev's records of the partitions kept for the booted
/// system.
pub fn install_initrd(root: &Path) -> anyhow::Result<()> {
    write_files(root, initrd_files())?;
    let link = root.join(INITRD_MOUNT_LINK);
    let dir = link.parent().expect("the link is in a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(&link).with_context(|| format!("replacing {}", link.display()))?;
    }
    std::os::unix::fs::symlink("../sysroot-var.mount", &link)
        .with_context(|| format!("linking {}", link.display()))?;
    Ok(())
}

/// Writes `files` (paths relative to `root`, and their contents) under
/// `root`, with their directories.
fn write_files<'a>(
    root: &Path,
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> anyhow::Result<()> {
    for (path, contents) in files {
        let dest = root.join(path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        crate::overlay::replace_file(&dest, contents.as_bytes())?;
    }
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
    write_files(root, tree_files())?;
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
        for (path, _) in initrd_files() {
            assert!(dir.path().join(path).is_file(), "{path}");
        }
        let rule = std::fs::read_to_string(
            dir.path()
                .join("etc/udev/rules.d/90-globular-state-persist.rules"),
        )
        .unwrap();
        assert!(rule.contains(&format!("==\"{STATE_LABEL}|esp\", OPTIONS+=\"db_persist\"")));
        // The booted system finds /var mounted and checks nothing.
        assert!(FSTAB_LINE.ends_with(" 0 0") && !FSTAB_LINE.contains("x-initrd.mount"));
    }
}
