//! The disk image boots under UEFI (OVMF + systemd-boot + UKI) to
//! multi-user.target, reports its version, keeps its state partition across a
//! reboot, and refuses a tampered OS slot. The direct kernel boot of the same
//! kernel, initrd and command line is the baseline for the boot-time target.

use std::path::Path;
use std::time::Duration;

use qemu_tests::{overlay, Firmware, VmBuilder};

use crate::fixture::{self, boot_image, vm_lock, IMAGE_VERSION};

/// TCG on a busy two-core machine: generous, but bounded.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// systemd colours the unit name in status lines; the description is plain.
const MULTI_USER: &str = "Multi-User System.";
/// The disk the VMs see: the fixture plus room for the state partition.
const DISK_SIZE: u64 = 4 << 30;

/// Records a measured boot time next to the fixture (for docs/benchmarks.md).
fn record(name: &str, elapsed: Duration) {
    let file = boot_image().dir.join("../boot-times.txt");
    let line = format!("{name}: {:.1} s\n", elapsed.as_secs_f64());
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
}

fn record_text(text: &str) {
    let file = boot_image().dir.join("../boot-times.txt");
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{text}\n").as_bytes()));
}

fn fresh_disk(dir: &Path) -> std::path::PathBuf {
    let image = boot_image();
    let disk = dir.join("disk.qcow2");
    overlay(&image.disk, "raw", &disk, DISK_SIZE).unwrap();
    disk
}

#[test]
fn direct_kernel_boot_reaches_multi_user() {
    let image = boot_image();
    let _vm = vm_lock();
    let dir = fixture::run_dir();
    let disk = fresh_disk(dir.path());
    let mut vm = VmBuilder::new("direct")
        .firmware(Firmware::Bios)
        .direct_kernel(&image.kernel, Some(image.initrd.clone()), &image.cmdline)
        .disk(&disk, "qcow2")
        .work_dir(dir.path())
        .start()
        .unwrap();
    vm.wait_for(&format!("image-version={IMAGE_VERSION}"), BOOT_TIMEOUT)
        .unwrap();
    let elapsed = vm.wait_for(MULTI_USER, BOOT_TIMEOUT).unwrap();
    record("direct kernel boot to multi-user", elapsed);
}

#[test]
fn disk_boots_reports_version_and_keeps_state_across_reboot() {
    let _image = boot_image();
    let _vm = vm_lock();
    let dir = fixture::run_dir();
    let disk = fresh_disk(dir.path());
    let start = |dir: &Path| {
        VmBuilder::new("worker")
            .disk(&disk, "qcow2")
            .work_dir(dir)
            .start()
            .unwrap()
    };

    let mut vm = start(dir.path());
    vm.wait_for(
        &format!("globular-test: image-version={IMAGE_VERSION} var=/dev/vda6 boots=1"),
        BOOT_TIMEOUT,
    )
    .unwrap();
    let elapsed = vm.wait_for(MULTI_USER, BOOT_TIMEOUT).unwrap();
    record(
        "UEFI disk boot (OVMF + systemd-boot + UKI) to multi-user, first boot",
        elapsed,
    );
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
    assert_eq!(ukis.len(), 1, "{ukis:?}");
    assert_eq!(
        ukis[0], "/EFI/Linux/globular-test_0.1.0.efi",
        "the good boot was not blessed"
    );
    record_text(&format!("UKI name after the first boot: {}", ukis[0]));

    // Second boot: the state partition (vda6) and its boot counter survived.
    let mut vm = start(dir.path());
    vm.wait_for(
        &format!("globular-test: image-version={IMAGE_VERSION} var=/dev/vda6 boots=2"),
        BOOT_TIMEOUT,
    )
    .unwrap();
    let elapsed = vm.wait_for(MULTI_USER, BOOT_TIMEOUT).unwrap();
    record("UEFI disk boot to multi-user, second boot", elapsed);
}

#[test]
fn tampered_os_slot_does_not_boot() {
    let image = boot_image();
    let _vm = vm_lock();
    let dir = fixture::run_dir();
    let slot_a = &image.layout["partitions"][1];
    assert_eq!(slot_a["role"], "root-a");
    let offset = slot_a["offset"].as_u64().unwrap();

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
    let hit = vm
        .wait_for_any(&["is corrupted", MULTI_USER], BOOT_TIMEOUT)
        .unwrap();
    assert_eq!(hit, 0, "a tampered slot reached multi-user\n{}", vm.tail());
    // And the root never gets mounted.
    let outcome = vm.wait_for_any(&["Failed to mount", "emergency", MULTI_USER], BOOT_TIMEOUT);
    match outcome {
        Ok(2) => panic!("a tampered slot reached multi-user\n{}", vm.tail()),
        Ok(_) => {}
        Err(err) => panic!("{err:#}"),
    }
}
