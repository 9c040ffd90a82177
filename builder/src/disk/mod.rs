//! The bootable disk image: GPT with an ESP (systemd-boot + a unified kernel
//! image), OS slot A (read-only erofs/squashfs + dm-verity), an empty slot B of
//! the same size, and no state partition (repart creates it on first boot).
//!
//! Everything is assembled offline into plain files (no mounts, no loop
//! devices) with the real tools through [`globular_task::Task`]: `veritysetup`
//! ([`verity`]), mtools ([`esp`]), `objcopy` ([`uki`]), `qemu-img`
//! ([`qcow2`]); the partition table is written by [`gpt`]. Every identifier comes
//! from the inputs digest ([`ids`]), so the same inputs give a bit-identical
//! image. See `docs/disk-layout.md`.
//!
//! ```text
//!  LBA 0..34    protective MBR, GPT header, 128 entries
//!  1 MiB        p1 ESP (FAT32)          /EFI/BOOT/BOOTX64.EFI, /EFI/Linux/ID_VER+3.efi
//!               p2 root-x86-64          slot A: ID_VER, erofs, UUID = roothash[0..16]
//!               p3 root-x86-64-verity   slot A: ID_VER_verity, UUID = roothash[16..32]
//!               p4 root-x86-64          slot B: _empty, same size as p2
//!               p5 root-x86-64-verity   slot B: _empty, same size as p3
//!  end - 33 LBA backup entries + header (state partition is added on first boot)
//! ```

pub mod esp;
pub mod gpt;
pub mod ids;
pub mod qcow2;
pub mod repart;
pub mod uki;
pub mod verity;

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context as _};
use serde::Serialize;

use ids::{Ids, Uuid};

/// Discoverable Partitions Specification type GUIDs (x86-64).
pub mod types {
    pub const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    pub const ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
    pub const ROOT_X86_64_VERITY: &str = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5";
    pub const USR_X86_64: &str = "8484680c-9521-48c6-9c11-b0720656f69e";
    pub const USR_X86_64_VERITY: &str = "77ff5f63-e7b6-4633-acf4-1565b864c0e6";
    pub const VAR: &str = "4d21b016-b534-45c2-a9fb-5c16e091fd2d";

    /// A short name for a type GUID (`esp`, `root-x86-64`, ...), as systemd names them.
    pub fn name(guid: &str) -> &'static str {
        match guid.to_ascii_lowercase().as_str() {
            ESP => "esp",
            ROOT_X86_64 => "root-x86-64",
            ROOT_X86_64_VERITY => "root-x86-64-verity",
            USR_X86_64 => "usr-x86-64",
            USR_X86_64_VERITY => "usr-x86-64-verity",
            VAR => "var",
            _ => "unknown",
        }
    }
}

/// Label of an inactive A/B slot.
pub const EMPTY_LABEL: &str = "_empty";
/// Boot counting: a new UKI gets this many tries before systemd-boot falls back.
pub const DEFAULT_BOOT_TRIES: u32 = 3;

/// The filesystem of the OS image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OsFilesystem {
    Erofs,
    Squashfs,
}

impl OsFilesystem {
    pub fn as_str(self) -> &'static str {
        match self {
            OsFilesystem::Erofs => "erofs",
            OsFilesystem::Squashfs => "squashfs",
        }
    }
}

/// Everything [`assemble`] needs: already-built inputs only.
#[derive(Debug, Clone)]
pub struct DiskInput {
    /// The read-only OS filesystem image (the whole root tree).
    pub os_image: PathBuf,
    pub os_filesystem: OsFilesystem,
    /// The kernel (`vmlinuz`) of the OS tree.
    pub kernel: PathBuf,
    /// `uname -r` of that kernel (goes into the UKI's `.uname`), if known.
    pub kernel_version: Option<String>,
    /// The initrd (cpio, optionally zstd/gzip compressed).
    pub initrd: PathBuf,
    /// `KernelCommandLine=` of the profile; `roothash=` and the root device
    /// options are appended.
    pub cmdline: String,
    /// `/usr/lib/os-release` of the OS tree; `IMAGE_ID=`/`IMAGE_VERSION=` are
    /// added if missing (systemd-boot orders entries by them).
    pub os_release: String,
    pub image_id: String,
    pub image_version: String,
    /// Digest of every input of the build; all UUIDs and salts derive from it.
    pub inputs_digest: [u8; 32],
    /// Timestamps on the ESP.
    pub source_date_epoch: u64,
    /// Size of each OS slot; default: 1.5 x the OS image, whole MiB.
    pub slot_size: Option<u64>,
    /// Size of the ESP; default: room for two UKIs plus 16 MiB, at least 128 MiB.
    pub esp_size: Option<u64>,
    /// Boot counting tries in the UKI name (`+3`); 0 disables boot counting.
    pub boot_tries: u32,
    /// systemd's EFI stub; default [`uki::DEFAULT_STUB`].
    pub stub: Option<PathBuf>,
    /// systemd-boot; default [`uki::DEFAULT_SYSTEMD_BOOT`].
    pub systemd_boot: Option<PathBuf>,
    /// Where the raw disk is written (a temp path the caller renames).
    pub output: PathBuf,
    /// Scratch space (a private temp directory is made inside it).
    pub work_dir: PathBuf,
}

/// One partition as the manifest records it.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionInfo {
    pub number: u32,
    /// `esp`, `root-a`, `root-a-verity`, `root-b`, `root-b-verity`.
    pub role: String,
    pub type_guid: Uuid,
    /// `esp`, `root-x86-64`, ... (systemd's names).
    pub type_name: String,
    pub uuid: Uuid,
    pub label: String,
    pub offset: u64,
    pub size: u64,
    /// SHA-256 of the whole partition as written.
    pub sha256: String,
}

/// The unified kernel image on the ESP.
#[derive(Debug, Clone, Serialize)]
pub struct UkiInfo {
    /// File name in `/EFI/Linux/`, with the boot counting suffix.
    pub name: String,
    pub path: String,
    pub cmdline: String,
    pub sha256: String,
    pub size: u64,
}

/// What [`assemble`] wrote, for the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct DiskLayout {
    pub size: u64,
    pub disk_guid: Uuid,
    pub partitions: Vec<PartitionInfo>,
    /// dm-verity root hash of slot A (hex).
    pub root_hash: String,
    pub verity_salt: String,
    pub os_filesystem: OsFilesystem,
    pub image_id: String,
    pub image_version: String,
    pub uki: UkiInfo,
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(hex::encode(ctx.finish()))
}

/// Copies `source` into `disk` at `offset`, leaving all-zero blocks as holes,
/// and returns the SHA-256 of the partition (`source` padded with zeros to
/// `size`).
fn copy_into(
    disk: &mut File,
    offset: u64,
    size: u64,
    source: Option<&Path>,
) -> anyhow::Result<String> {
    const CHUNK: usize = 1 << 20;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut written = 0u64;
    if let Some(source) = source {
        let mut file =
            File::open(source).with_context(|| format!("opening {}", source.display()))?;
        let len = file.metadata()?.len();
        ensure!(
            len <= size,
            "{} ({len} bytes) does not fit its {size}-byte partition",
            source.display()
        );
        loop {
            let n = read_full(&mut file, &mut buf)
                .with_context(|| format!("reading {}", source.display()))?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
            if buf[..n].iter().any(|b| *b != 0) {
                disk.seek(SeekFrom::Start(offset + written))?;
                disk.write_all(&buf[..n])?;
            }
            written += n as u64;
        }
    }
    buf.fill(0);
    while written < size {
        let n = (size - written).min(CHUNK as u64) as usize;
        ctx.update(&buf[..n]);
        written += n as u64;
    }
    Ok(hex::encode(ctx.finish()))
}

fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Adds `IMAGE_ID=` and `IMAGE_VERSION=` to os-release text unless present.
pub fn stamp_os_release(os_release: &str, image_id: &str, image_version: &str) -> String {
    let mut text = os_release.trim_end().to_owned();
    text.push('\n');
    if !os_release.lines().any(|l| l.starts_with("IMAGE_ID=")) {
        text.push_str(&format!("IMAGE_ID={image_id}\n"));
    }
    if !os_release.lines().any(|l| l.starts_with("IMAGE_VERSION=")) {
        text.push_str(&format!("IMAGE_VERSION={image_version}\n"));
    }
    text
}

/// The kernel command line of the UKI: the profile's, then the verity root.
pub fn full_cmdline(input: &DiskInput, root_hash: &[u8; 32]) -> String {
    let (data, hash) = ids::uuids_from_root_hash(root_hash);
    let mut words: Vec<String> = input
        .cmdline
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    words.extend([
        format!("roothash={}", hex::encode(root_hash)),
        format!("systemd.verity_root_data=PARTUUID={data}"),
        format!("systemd.verity_root_hash=PARTUUID={hash}"),
        "root=/dev/mapper/root".to_owned(),
        format!("rootfstype={}", input.os_filesystem.as_str()),
        "ro".to_owned(),
    ]);
    words.join(" ")
}

/// The UKI file name: `ID_VERSION+TRIES.efi` (or without `+TRIES`).
pub fn uki_name(image_id: &str, image_version: &str, tries: u32) -> String {
    if tries == 0 {
        format!("{image_id}_{image_version}.efi")
    } else {
        format!("{image_id}_{image_version}+{tries}.efi")
    }
}

fn check_name(what: &str, value: &str) -> anyhow::Result<()> {
    ensure!(
        !value.is_empty()
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '~' | '^')),
        "{what} `{value}` may only hold ASCII letters, digits and . - ~ ^"
    );
    Ok(())
}

/// Builds the raw disk image at `input.output` and describes it.
pub fn assemble(input: &DiskInput) -> anyhow::Result<DiskLayout> {
    check_name("image id", &input.image_id)?;
    check_name("image version", &input.image_version)?;
    std::fs::create_dir_all(&input.work_dir)
        .with_context(|| format!("creating {}", input.work_dir.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("disk-")
        .tempdir_in(&input.work_dir)
        .with_context(|| format!("creating a directory in {}", input.work_dir.display()))?;
    let scratch = scratch.path();
    let ids = Ids::derive(&input.inputs_digest);

    // OS slot A: the image, padded to whole verity blocks.
    let os_len = std::fs::metadata(&input.os_image)
        .with_context(|| format!("reading {}", input.os_image.display()))?
        .len();
    ensure!(os_len > 0, "{} is empty", input.os_image.display());
    let os_data = if os_len % verity::BLOCK == 0 {
        input.os_image.clone()
    } else {
        let padded = scratch.join("os.img");
        std::fs::copy(&input.os_image, &padded)
            .with_context(|| format!("copying {}", input.os_image.display()))?;
        File::options()
            .write(true)
            .open(&padded)?
            .set_len(os_len.next_multiple_of(verity::BLOCK))?;
        padded
    };
    let slot_size = input
        .slot_size
        .unwrap_or_else(|| (os_len + os_len / 2).next_multiple_of(gpt::ALIGN));
    ensure!(
        slot_size.is_multiple_of(gpt::ALIGN) && slot_size >= os_len,
        "slot size {slot_size} must be whole MiB and hold the OS image ({os_len} bytes)"
    );
    let verity_size = verity::hash_partition_size(slot_size);
    let hash_file = scratch.join("os.verity");
    let root_hash = verity::format(&os_data, &hash_file, &ids.verity_salt, ids.verity_uuid)
        .with_context(|| format!("dm-verity for {}", input.os_image.display()))?;
    let (slot_a_uuid, slot_a_verity_uuid) = ids::uuids_from_root_hash(&root_hash);

    // The UKI.
    let cmdline = full_cmdline(input, &root_hash);
    let os_release = stamp_os_release(&input.os_release, &input.image_id, &input.image_version);
    let uki_file = scratch.join("uki.efi");
    let stub = input
        .stub
        .clone()
        .unwrap_or_else(|| uki::DEFAULT_STUB.into());
    uki::build(
        &uki::UkiInput {
            stub: &stub,
            kernel: &input.kernel,
            initrd: &input.initrd,
            cmdline: &cmdline,
            os_release: &os_release,
            uname: input.kernel_version.as_deref(),
            source_date_epoch: input.source_date_epoch,
        },
        &uki_file,
        scratch,
    )?;
    let uki_len = std::fs::metadata(&uki_file)?.len();
    let uki_name = uki_name(&input.image_id, &input.image_version, input.boot_tries);
    let uki_path = format!("EFI/Linux/{uki_name}");

    // The ESP.
    let esp_size = input.esp_size.unwrap_or_else(|| {
        (2 * uki_len + (16 << 20))
            .next_multiple_of(gpt::ALIGN)
            .max(128 << 20)
    });
    ensure!(
        esp_size >= uki_len + (1 << 20),
        "ESP size {esp_size} cannot hold the {uki_len}-byte UKI"
    );
    let systemd_boot = input
        .systemd_boot
        .clone()
        .unwrap_or_else(|| uki::DEFAULT_SYSTEMD_BOOT.into());
    let esp_file = scratch.join("esp.img");
    esp::write(
        &esp_file,
        esp_size,
        ids.esp_serial,
        input.source_date_epoch,
        &[
            (
                "EFI/BOOT/BOOTX64.EFI".to_owned(),
                esp::Content::File(systemd_boot.clone()),
            ),
            (
                "EFI/systemd/systemd-bootx64.efi".to_owned(),
                esp::Content::File(systemd_boot),
            ),
            (uki_path.clone(), esp::Content::File(uki_file.clone())),
            (
                "loader/loader.conf".to_owned(),
                esp::Content::Bytes(b"timeout 0\neditor no\n".to_vec()),
            ),
        ],
        scratch,
    )
    .context("writing the ESP")?;

    // The partition table.
    let label = format!("{}_{}", input.image_id, input.image_version);
    let verity_label = format!("{label}_verity");
    let mut offset = gpt::first_usable_offset();
    let mut entries = Vec::new();
    let mut place = |role: &str, type_guid: &str, uuid: Uuid, label: &str, size: u64, attrs| {
        entries.push((
            role.to_owned(),
            gpt::Entry {
                type_guid: Uuid::parse(type_guid).expect("valid constant"),
                uuid,
                label: label.to_owned(),
                offset,
                size,
                attributes: attrs,
            },
        ));
        offset += size;
    };
    place("esp", types::ESP, ids.esp_partition, "esp", esp_size, 0);
    place(
        "root-a",
        types::ROOT_X86_64,
        slot_a_uuid,
        &label,
        slot_size,
        gpt::FLAG_READ_ONLY,
    );
    place(
        "root-a-verity",
        types::ROOT_X86_64_VERITY,
        slot_a_verity_uuid,
        &verity_label,
        verity_size,
        gpt::FLAG_READ_ONLY,
    );
    place(
        "root-b",
        types::ROOT_X86_64,
        ids.slot_b,
        EMPTY_LABEL,
        slot_size,
        gpt::FLAG_READ_ONLY | gpt::FLAG_NO_AUTO,
    );
    place(
        "root-b-verity",
        types::ROOT_X86_64_VERITY,
        ids.slot_b_verity,
        EMPTY_LABEL,
        verity_size,
        gpt::FLAG_READ_ONLY | gpt::FLAG_NO_AUTO,
    );
    let table = gpt::Table {
        disk_guid: ids.disk,
        disk_size: gpt::disk_size_for(offset),
        entries: entries.iter().map(|(_, e)| e.clone()).collect(),
    };

    // Write the disk.
    let out = &input.output;
    let mut disk = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    disk.set_len(table.disk_size)?;
    let sources: [Option<&Path>; 5] = [
        Some(&esp_file),
        Some(&os_data),
        Some(&hash_file),
        None,
        None,
    ];
    let mut partitions = Vec::new();
    for (i, ((role, entry), source)) in entries.iter().zip(sources).enumerate() {
        let sha256 = copy_into(&mut disk, entry.offset, entry.size, source)
            .with_context(|| format!("writing partition `{}` of {}", entry.label, out.display()))?;
        partitions.push(PartitionInfo {
            number: i as u32 + 1,
            role: role.clone(),
            type_guid: entry.type_guid,
            type_name: types::name(&entry.type_guid.to_string()).to_owned(),
            uuid: entry.uuid,
            label: entry.label.clone(),
            offset: entry.offset,
            size: entry.size,
            sha256,
        });
    }
    table
        .write_to(&mut disk)
        .with_context(|| format!("writing the partition table of {}", out.display()))?;
    disk.sync_all()?;
    tracing::info!(
        "wrote {} ({} MiB, root hash {})",
        out.display(),
        table.disk_size >> 20,
        hex::encode(root_hash)
    );

    Ok(DiskLayout {
        size: table.disk_size,
        disk_guid: ids.disk,
        partitions,
        root_hash: hex::encode(root_hash),
        verity_salt: ids.verity_salt.clone(),
        os_filesystem: input.os_filesystem,
        image_id: input.image_id.clone(),
        image_version: input.image_version.clone(),
        uki: UkiInfo {
            name: uki_name,
            path: format!("/{uki_path}"),
            cmdline,
            sha256: sha256_file(&uki_file)?,
            size: uki_len,
        },
    })
}

#[cfg(test)]
mod tests;
