//! The disk writers checked with the real tools: `sfdisk --json`,
//! `veritysetup verify`, `fsck.vfat -n`, `objdump -h`, `qemu-img info`.
//! The OS image is a small erofs made from a temporary tree; the "kernel" and
//! "initrd" are placeholder files (no boot here; qemu-tests boots real images).

use std::path::{Path, PathBuf};

use globular_task::Task;

use super::*;

pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub input: DiskInput,
}

pub(crate) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::fs::write(root.join("usr/lib/os-release"), "ID=debian\n").unwrap();
    for i in 0..64 {
        std::fs::write(root.join(format!("usr/lib/file{i}")), vec![i as u8; 40_000]).unwrap();
    }
    let os_image = dir.path().join("os.erofs");
    Task::new("making a test erofs", "mkfs.erofs")
        .package("erofs-utils")
        .args(["-T", "0", "--all-root", "-U"])
        .arg(Ids::derive(&[9; 32]).filesystem.to_string())
        .arg(&os_image)
        .arg(&root)
        .run()
        .unwrap();
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, vec![0x4d; 300_000]).unwrap();
    let initrd = dir.path().join("initrd.cpio.zst");
    std::fs::write(&initrd, vec![0x28; 100_000]).unwrap();
    let input = DiskInput {
        os_image,
        os_filesystem: OsFilesystem::Erofs,
        kernel,
        kernel_version: Some("6.1.0-test-amd64".into()),
        initrd,
        cmdline: "console=ttyS0,115200 systemd.firstboot=no".into(),
        os_release: "ID=debian\nVERSION_ID=12\n".into(),
        image_id: "globular-worker".into(),
        image_version: "1.2.3".into(),
        inputs_digest: [9; 32],
        source_date_epoch: 1_700_000_000,
        slot_size: None,
        esp_size: None,
        boot_tries: DEFAULT_BOOT_TRIES,
        stub: None,
        systemd_boot: None,
        output: dir.path().join("disk.raw"),
        work_dir: dir.path().join("work"),
    };
    Fixture { dir, input }
}

fn sha256(path: &Path) -> String {
    sha256_file(path).unwrap()
}

/// Copies `size` bytes at `offset` of `disk` into a new file.
fn extract(disk: &Path, offset: u64, size: u64, out: &Path) -> PathBuf {
    let bytes = std::fs::read(disk).unwrap();
    std::fs::write(out, &bytes[offset as usize..(offset + size) as usize]).unwrap();
    out.to_owned()
}

#[test]
fn sfdisk_shows_the_dps_layout() {
    let f = fixture();
    let layout = assemble(&f.input).unwrap();
    let json = Task::new("reading the table", "sfdisk")
        .arg("--json")
        .arg(&f.input.output)
        .read_string()
        .unwrap();
    let table: serde_json::Value = serde_json::from_str(&json).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(table["partitiontable"]["label"], "gpt");
    let types: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
            "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5",
            "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
            "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5",
        ]
    );
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "esp",
            "globular-worker_1.2.3",
            "globular-worker_1.2.3_verity",
            "_empty",
            "_empty"
        ]
    );
    let sizes: Vec<u64> = parts.iter().map(|p| p["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes[1], sizes[3], "slot B is as large as slot A");
    assert_eq!(sizes[2], sizes[4], "slot B verity is as large as slot A's");
    for (p, info) in parts.iter().zip(&layout.partitions) {
        assert_eq!(p["start"].as_u64().unwrap() * 512, info.offset);
        assert_eq!(p["size"].as_u64().unwrap() * 512, info.size);
        assert_eq!(
            p["uuid"].as_str().unwrap().to_ascii_lowercase(),
            info.uuid.to_string()
        );
    }
    // Slot A's UUIDs are the halves of the root hash.
    assert!(layout
        .root_hash
        .starts_with(&layout.partitions[1].uuid.to_string().replace('-', "")));
    assert!(layout
        .root_hash
        .ends_with(&layout.partitions[2].uuid.to_string().replace('-', "")));
    // sfdisk --verify finds nothing to complain about.
    let verify = Task::new("verifying the table", "sfdisk")
        .arg("--verify")
        .arg(&f.input.output)
        .read_string()
        .unwrap();
    assert!(verify.contains("No errors detected"), "{verify}");
}

#[test]
fn rebuilds_are_bit_identical() {
    let a = fixture();
    let b = fixture();
    let layout_a = assemble(&a.input).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let layout_b = assemble(&b.input).unwrap();
    assert_eq!(
        serde_json::to_string_pretty(&layout_a).unwrap(),
        serde_json::to_string_pretty(&layout_b).unwrap()
    );
    assert_eq!(sha256(&a.input.output), sha256(&b.input.output));
    let qa = a.dir.path().join("disk.qcow2");
    let qb = b.dir.path().join("disk.qcow2");
    qcow2::convert(&a.input.output, &qa).unwrap();
    qcow2::convert(&b.input.output, &qb).unwrap();
    assert_eq!(sha256(&qa), sha256(&qb));

    // Another digest changes every identifier.
    let mut c = fixture();
    c.input.inputs_digest = [10; 32];
    let layout_c = assemble(&c.input).unwrap();
    assert_ne!(layout_c.disk_guid, layout_a.disk_guid);
    assert_ne!(layout_c.root_hash, layout_a.root_hash, "the salt changed");
}

#[test]
fn verity_passes_clean_and_fails_tampered() {
    let f = fixture();
    let layout = assemble(&f.input).unwrap();
    let root_hash = verity::parse_root_hash(&layout.root_hash).unwrap();
    let data_part = &layout.partitions[1];
    let hash_part = &layout.partitions[2];
    let data = extract(
        &f.input.output,
        data_part.offset,
        data_part.size,
        &f.dir.path().join("a.img"),
    );
    let hash = extract(
        &f.input.output,
        hash_part.offset,
        hash_part.size,
        &f.dir.path().join("a.verity"),
    );
    assert!(
        verity::verify(&data, &hash, &root_hash).unwrap(),
        "clean image verifies"
    );

    // Flip one byte in the middle of the filesystem image.
    let mut bytes = std::fs::read(&data).unwrap();
    let at = std::fs::metadata(&f.input.os_image).unwrap().len() as usize / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&data, &bytes).unwrap();
    assert!(
        !verity::verify(&data, &hash, &root_hash).unwrap(),
        "tampered image fails"
    );
}

#[test]
fn esp_passes_fsck_and_holds_the_uki() {
    let f = fixture();
    let layout = assemble(&f.input).unwrap();
    let esp_part = &layout.partitions[0];
    let esp_img = extract(
        &f.input.output,
        esp_part.offset,
        esp_part.size,
        &f.dir.path().join("esp.img"),
    );
    Task::new("checking the ESP", "fsck.vfat")
        .args(["-n"])
        .arg(&esp_img)
        .run()
        .unwrap();
    let files = esp::list(&f.input.output, esp_part.offset).unwrap();
    for want in [
        "/EFI/BOOT/BOOTX64.EFI",
        "/EFI/systemd/systemd-bootx64.efi",
        "/EFI/Linux/globular-worker_1.2.3+3.efi",
        "/loader/loader.conf",
    ] {
        assert!(
            files.iter().any(|f| f == want),
            "{want} missing from {files:?}"
        );
    }
    assert_eq!(layout.uki.path, "/EFI/Linux/globular-worker_1.2.3+3.efi");

    let uki_file = f.dir.path().join("uki.efi");
    esp::extract(
        &f.input.output,
        esp_part.offset,
        &layout.uki.path,
        &uki_file,
    )
    .unwrap();
    let sections = Task::new("listing UKI sections", "objdump")
        .arg("-h")
        .arg(&uki_file)
        .read_string()
        .unwrap();
    for s in [".osrel", ".cmdline", ".uname", ".initrd", ".linux"] {
        assert!(sections.contains(s), "{s} missing:\n{sections}");
    }
    let scratch = f.dir.path();
    let cmdline = uki::read_section(&uki_file, ".cmdline", scratch).unwrap();
    let cmdline = String::from_utf8(cmdline).unwrap();
    assert!(
        cmdline.starts_with("console=ttyS0,115200 systemd.firstboot=no roothash="),
        "{cmdline}"
    );
    assert_eq!(cmdline.trim_end(), layout.uki.cmdline);
    let osrel =
        String::from_utf8(uki::read_section(&uki_file, ".osrel", scratch).unwrap()).unwrap();
    assert!(osrel.contains("IMAGE_VERSION=1.2.3"), "{osrel}");
    let linux = uki::read_section(&uki_file, ".linux", scratch).unwrap();
    assert_eq!(linux.len(), 300_000);
}

#[test]
fn qcow2_has_the_raw_size() {
    let f = fixture();
    let layout = assemble(&f.input).unwrap();
    let qcow = f.dir.path().join("disk.qcow2");
    qcow2::convert(&f.input.output, &qcow).unwrap();
    let info = Task::new("qemu-img info", "qemu-img")
        .args(["info", "--output=json"])
        .arg(&qcow)
        .read_string()
        .unwrap();
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"].as_u64().unwrap(), layout.size);
}

#[test]
fn inspect_reports_slots_and_cmdline() {
    let f = fixture();
    let layout = assemble(&f.input).unwrap();
    let qcow = f.dir.path().join("disk.qcow2");
    qcow2::convert(&f.input.output, &qcow).unwrap();
    for image in [&f.input.output, &qcow] {
        let report = crate::inspect::inspect(image).unwrap();
        assert_eq!(report.partitions.len(), 5);
        assert_eq!(report.slots.len(), 2);
        assert_eq!(report.slots[0].version.as_deref(), Some("1.2.3"));
        assert_eq!(
            report.slots[0].root_hash.as_deref(),
            Some(layout.root_hash.as_str())
        );
        assert_eq!(report.slots[1].version, None);
        assert_eq!(report.ukis.len(), 1);
        assert_eq!(report.ukis[0].cmdline, layout.uki.cmdline);
        assert_eq!(report.verity.len(), 1, "slot B's verity partition is empty");
        assert_eq!(report.verity[0].salt, layout.verity_salt);
        let text = crate::inspect::render(&report);
        assert!(text.contains("a: 1.2.3"), "{text}");
        assert!(text.contains("b: empty"), "{text}");
    }
}

#[test]
fn bad_names_are_refused() {
    let mut f = fixture();
    f.input.image_version = "1 2".into();
    let err = assemble(&f.input).unwrap_err().to_string();
    assert!(err.contains("image version `1 2`"), "{err}");
    assert!(!f.input.output.exists());
}
