//! Issue 4: the worker disk image made by `builder build --role worker` boots
//! under UEFI (OVMF + systemd-boot + UKI + systemd initrd + verity root) to
//! multi-user.target, reports its version (a unit ordered after the target
//! prints the boot report: the tests' "boot complete" marker), creates its state partition on
//! first boot and keeps it across a reboot, and refuses a tampered OS slot.
//! The direct kernel boot of the same kernel, initrd and command line, the
//! baseline of the boot-time figures, is in the `boot_time` benchmark.

use std::path::{Path, PathBuf};
use std::time::Duration;

use qemu_tests::{overlay, Firmware, Output, Vm, VmBuilder};

use crate::images::{image, record, repo_root, run_dir, vm_lock, Image, VERSION};

/// TCG on a busy two-core machine: generous, but bounded.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// PID 1's status line for multi-user.target (systemd colours the unit name
/// in status lines; the description is plain). Only evidence that a boot
/// went too far: PID 1 does not always print it (see the boot report).
pub const MULTI_USER: &str = "Multi-User System.";
/// The start of the boot report, printed only by a booted system.
pub const REPORTED: &str = "globular: image=";
/// The disk the VMs see: the image plus room for the state partition.
pub const DISK_SIZE: u64 = 4 << 30;

fn worker() -> Image {
    image("worker", VERSION)
}

fn fresh_disk(image: &Image, dir: &Path) -> PathBuf {
    let disk = dir.join("disk.qcow2");
    overlay(&image.disk, "raw", &disk, DISK_SIZE).unwrap();
    disk
}

#[test]
fn disk_boots_reports_version_and_keeps_state_across_reboot() {
    let image = worker();
    let _vm = vm_lock();
    let dir = run_dir();
    let disk = fresh_disk(&image, dir.path());
    let start = |dir: &Path| {
        VmBuilder::new("worker")
            .disk(&disk, "qcow2")
            .guest_agent()
            .work_dir(dir)
            .start()
            .unwrap()
    };

    let mut vm = start(dir.path());
    // The report's unit is ordered after multi-user.target and after
    // systemd-bless-boot.service: once it is on the console the boot is
    // complete and blessed, and the power-off cannot cancel the blessing.
    let elapsed = vm
        .wait_for(&image.boot_report("/dev/vda6", 1), BOOT_TIMEOUT)
        .unwrap();
    record(&format!(
        "worker {VERSION}: UEFI disk boot (OVMF + systemd-boot + UKI) to multi-user (the boot report), first boot: {:.1} s",
        elapsed.as_secs_f64()
    ));
    vm.powerdown(Duration::from_secs(120)).unwrap();
    drop(vm);

    // Offline, on the VM's disk: repart added the state partition, and the
    // boot was counted (systemd-boot renamed +3 to +2-1) and then blessed
    // (systemd-bless-boot after boot-complete.target dropped the counter).
    let after = builder::inspect::inspect(&disk).unwrap();
    let state = after.partitions.get(5).expect("a sixth partition");
    assert_eq!(
        (state.label.as_str(), state.type_name.as_str()),
        ("state", "var")
    );
    let ukis: Vec<&str> = after.ukis.iter().map(|u| u.path.as_str()).collect();
    assert_eq!(
        ukis,
        [format!("/EFI/Linux/{}_{VERSION}.efi", image.image_id)],
        "the good boot was not blessed"
    );

    // Second boot: the state partition (vda6) and its boot counter survived.
    let mut vm = start(dir.path());
    let elapsed = vm
        .wait_for(&image.boot_report("/dev/vda6", 2), BOOT_TIMEOUT)
        .unwrap();
    record(&format!(
        "worker {VERSION}: UEFI disk boot to multi-user (the boot report), second boot: {:.1} s",
        elapsed.as_secs_f64()
    ));
    // The initrd checked and mounted the state partition before the switch
    // to the real root (sysroot-var.mount), and the booted system ran no
    // second systemd-repart: the booted system starts with /var in place
    // instead of waiting for udev's coldplug to find the partition again.
    let initrd = sh(&mut vm, "journalctl -b -o cat _PID=1 | grep -c -e '^Mounted sysroot-var.mount' -e '^Finished systemd-repart.service'; \
                 systemctl is-active systemd-repart.service; findmnt -no SOURCE /var");
    assert_eq!(initrd.stdout, "2\ninactive\n/dev/vda6\n", "{initrd:?}");
    // Drivers a node never uses stay unloaded (usr/lib/modprobe.d/50-globular.conf):
    // the coldplug would load KVM for the CPU's virtualisation feature and
    // networkd's wireless query cfg80211, seconds of CPU under TCG.
    let unused = sh(
        &mut vm,
        "grep -c -E '^(cfg80211|kvm|kvm_amd|kvm_intel|pcspkr|psmouse) ' /proc/modules",
    );
    assert_eq!(unused.stdout.trim(), "0", "{unused:?}");
    // What the boot does not start: containerd, on a node that carries no
    // container images and runs no Kubernetes (it cost 4-7 s of every boot
    // under TCG), and the DRM core for graphical seats (masked).
    for unit in ["containerd.service", "modprobe@drm.service"] {
        let state = sh(&mut vm, &format!("/usr/bin/systemctl is-active {unit}"));
        assert_eq!(state.stdout.trim(), "inactive", "{unit}");
    }
    // The package stage built no initramfs of the distribution's
    // (`INITRD=No`): the UKI's initrd is the builder's, and neither an
    // initrd nor a link to one is in the OS tree.
    let initrds = sh(
        &mut vm,
        "ls -d /boot/initrd.img* /initrd.img* 2>/dev/null; true",
    );
    assert_eq!(initrds.stdout.trim(), "", "{initrds:?}");
    // The OS tree's kernel modules are stored compressed
    // (`KernelModulesCompression=zstd`) and kmod loads them as they are.
    let loaded = sh(&mut vm, "/usr/sbin/modprobe dummy && /usr/sbin/modinfo -n dummy && test -d /sys/module/dummy && echo loaded");
    assert!(
        loaded
            .stdout
            .contains("/kernel/drivers/net/dummy.ko.zst\nloaded"),
        "{loaded:?}"
    );
}

/// `script` run by `/bin/sh -c` in the guest, with a minute to finish.
fn sh(vm: &mut Vm, script: &str) -> Output {
    vm.exec("/bin/sh", &["-c", script], Duration::from_secs(60))
        .unwrap()
}

#[test]
fn tampered_os_slot_does_not_boot() {
    let image = worker();
    let _vm = vm_lock();
    let dir = run_dir();
    let slot_a = &image.inspection.slots[0];
    assert!(slot_a.version.is_some(), "slot A is empty: {slot_a:?}");
    let offset = image.inspection.partitions[slot_a.data_partition as usize - 1].offset;

    // A private copy of the disk with one byte flipped in the erofs superblock
    // (block 0 of slot A, read when the root is mounted).
    let tampered = dir.path().join("tampered.raw");
    globular_task::Task::new("copying the disk", "cp")
        .arg("--sparse=always")
        .arg(&image.disk)
        .arg(&tampered)
        .run()
        .unwrap();
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&tampered)
            .unwrap();
        let at = offset + 1024 + 8;
        let mut byte = [0u8];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut byte).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[byte[0] ^ 0x01]).unwrap();
    }
    let disk = dir.path().join("disk.qcow2");
    overlay(&tampered, "raw", &disk, DISK_SIZE).unwrap();
    let mut vm = VmBuilder::new("tampered")
        .disk(&disk, "qcow2")
        .work_dir(dir.path())
        .start()
        .unwrap();
    // dm-verity's report comes from the kernel, the failed mount or
    // emergency mode from PID 1 (in the initrd): each is looked for in the
    // whole console, and a booted system ends either wait early.
    for markers in [
        &["is corrupted", MULTI_USER, REPORTED][..],
        &["Failed to mount", "emergency", MULTI_USER, REPORTED][..],
    ] {
        if let Err(err) = vm.wait_for_any(markers, BOOT_TIMEOUT) {
            panic!("{err:#}");
        }
        assert!(
            !vm.printed(MULTI_USER) && !vm.printed(REPORTED),
            "a tampered slot booted\n{}",
            vm.tail()
        );
    }
}

/// How long the late disk stays away: past systemd 252's 90 s default
/// timeout of a device job.
const LATE_DISK: Duration = Duration::from_secs(150);

/// The initrd waits for a disk that shows up late (a loaded host: cluster
/// VMs of 2026-12-03 found theirs 115-160 s into the boot) instead of
/// giving up on the verity root's partitions after 90 s
/// (`profiles/initrd/mkosi.extra/etc/systemd/system/dev-.device.d/`). The
/// disk is hot-plugged 150 s after the kernel starts. Run on demand (it
/// costs a whole boot plus the wait): `cargo test -p qemu-tests --test
/// tests -- --ignored late_disk`.
#[test]
#[ignore = "on demand: a boot plus a 150 s wait"]
fn a_late_disk_still_boots() {
    let image = worker();
    let _vm = vm_lock();
    let dir = run_dir();
    let disk = fresh_disk(&image, dir.path());
    let (kernel, initrd, cmdline) = image.direct_kernel(dir.path()).unwrap();
    let mut vm = VmBuilder::new("late-disk")
        .firmware(Firmware::Bios)
        .direct_kernel(&kernel, Some(initrd), &cmdline)
        // A PCIe slot to plug the disk into later (q35's root bus takes no
        // hot-plugged devices).
        .arg("-device")
        .arg("pcie-root-port,id=late,chassis=1,slot=1")
        .work_dir(dir.path())
        .start()
        .unwrap();
    vm.wait_for("Expecting device", BOOT_TIMEOUT).unwrap();
    std::thread::sleep(LATE_DISK);
    assert!(
        !vm.printed("Timed out waiting for device"),
        "the initrd gave up before the disk came\n{}",
        vm.tail()
    );
    vm.qmp_args(
        "blockdev-add",
        &format!(
            r#"{{"driver":"qcow2","node-name":"late","file":{{"driver":"file","filename":"{}"}}}}"#,
            disk.display()
        ),
    )
    .unwrap();
    vm.qmp_args(
        "device_add",
        r#"{"driver":"virtio-blk-pci","drive":"late","bus":"late","id":"late-disk"}"#,
    )
    .unwrap();
    // Booted from the late disk: the verity root was set up and mounted.
    vm.wait_for(&image.boot_report("/dev/vda6", 1), BOOT_TIMEOUT)
        .unwrap();
}

/// The names in a newc cpio archive (the initrd's format).
fn cpio_names(data: &[u8]) -> Vec<String> {
    let field = |at: usize| {
        std::str::from_utf8(&data[at..at + 8])
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .expect("a cpio header field")
    };
    let mut names = Vec::new();
    let mut at = 0;
    while at + 110 <= data.len() && &data[at..at + 6] == b"070701" {
        let size = field(at + 54);
        let name_len = field(at + 94);
        let name = String::from_utf8_lossy(&data[at + 110..at + 110 + name_len - 1]).into_owned();
        if name == "TRAILER!!!" {
            break;
        }
        let data_at = (at + 110 + name_len).next_multiple_of(4);
        at = (data_at + size).next_multiple_of(4);
        names.push(name);
    }
    names
}

/// The initrd carries its profile's extra files
/// (`profiles/initrd/mkosi.extra/`): for two sessions it did not, and the
/// device timeout they set never reached a boot. No VM: the initrd is read
/// out of the image's UKI.
#[test]
fn the_initrd_carries_its_profiles_extra_files() {
    let names = initrd_names(&worker());
    assert!(names.len() > 100, "{} entries: {names:?}", names.len());
    let extra = repo_root().join("profiles/initrd/mkosi.extra");
    for entry in walkdir::WalkDir::new(&extra).min_depth(1) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let rel = entry.path().strip_prefix(&extra).unwrap();
            let rel = rel.to_string_lossy();
            assert!(
                names.iter().any(|n| n.trim_start_matches("./") == rel),
                "{rel} is not in the initrd"
            );
        }
    }
}

/// The initrd opens the root disk on hardware, not only in a VM: its
/// controller's driver (NVMe, AHCI, SAS/SCSI disks, USB and SD/eMMC
/// storage), and dm-verity and erofs for the root itself. Until
/// 2026-12-06 it carried the virtio drivers alone, and the images booted
/// nowhere but a VM. No VM: the initrd is read out of the image's UKI.
#[test]
fn the_initrd_opens_disks_on_hardware() {
    let names = initrd_names(&worker());
    let modules = [
        "virtio_blk",
        "nvme",
        "ahci",
        "sd_mod",
        "mpt3sas",
        "megaraid_sas",
        "xhci-pci",
        "usb-storage",
        "uas",
        "mmc_block",
        "dm-verity",
        "erofs",
    ]
    .map(|m| format!("/{m}.ko"));
    assert_all_in_initrd(&names, modules);
}

/// The initrd makes, checks and mounts the state partition: systemd-repart
/// wanted by its root file system target, mkfs.ext4 and e2fsck, the loop
/// driver repart formats through, and the builder's files: the mount unit,
/// required by the target the switch to the real root waits for, repart's
/// drop-in and the udev rule that keeps the partitions' records.
#[test]
fn the_initrd_makes_the_state_partition() {
    let names = initrd_names(&worker());
    let files = [
        "usr/lib/systemd/system/initrd-root-fs.target.wants/systemd-repart.service",
        "usr/bin/systemd-repart",
        "usr/sbin/mkfs.ext4",
        "usr/sbin/e2fsck",
        "/loop.ko",
        "etc/systemd/system/sysroot-var.mount",
        "etc/systemd/system/initrd-fs.target.requires/sysroot-var.mount",
        "etc/systemd/system/systemd-repart.service.d/50-globular-after-sysroot.conf",
        "etc/udev/rules.d/90-globular-state-persist.rules",
    ];
    assert_all_in_initrd(&names, files.map(String::from));
}

/// Fails naming every one of `suffixes` that no entry of the initrd ends with.
fn assert_all_in_initrd(names: &[String], suffixes: impl IntoIterator<Item = String>) {
    let missing: Vec<String> = suffixes
        .into_iter()
        .filter(|s| !names.iter().any(|n| n.ends_with(s.as_str())))
        .collect();
    assert!(missing.is_empty(), "not in the initrd: {missing:?}");
}

/// The names of the entries in the initrd of `image`'s UKI.
fn initrd_names(image: &Image) -> Vec<String> {
    let dir = run_dir();
    let (_, initrd, _) = image.direct_kernel(dir.path()).unwrap();
    let compressed = std::fs::read(&initrd).unwrap();
    let cpio = zstd::decode_all(&compressed[..]).expect("a zstd initrd");
    cpio_names(&cpio)
}
