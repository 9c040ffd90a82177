//! `builder inspect IMAGE`: what a disk image holds, read offline.
//!
//! Partition table (our own GPT reader, CRCs checked), A/B slots with their
//! versions (from the partition labels), dm-verity superblocks, the UKIs on
//! the ESP with their command lines and root hashes, and a summary of the
//! build manifest next to the image if there is one. qcow2 images are
//! converted to a temporary raw file first.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::disk::{self, esp, gpt, ids::Uuid, qcow2, types, uki};

#[derive(Debug, Clone, Serialize)]
pub struct Partition {
    pub number: u32,
    pub type_guid: Uuid,
    pub type_name: String,
    pub uuid: Uuid,
    pub label: String,
    pub offset: u64,
    pub size: u64,
    pub attributes: u64,
}

/// A dm-verity superblock as found at the start of a hash partition.
#[derive(Debug, Clone, Serialize)]
pub struct VeritySuperblock {
    pub partition: u32,
    pub uuid: Uuid,
    pub algorithm: String,
    pub data_blocks: u64,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub salt: String,
}

/// One OS slot: a root partition and its verity partition.
#[derive(Debug, Clone, Serialize)]
pub struct Slot {
    pub name: String,
    pub label: String,
    /// `None` for an empty slot (`_empty`).
    pub version: Option<String>,
    pub data_partition: u32,
    pub verity_partition: Option<u32>,
    /// The root hash of a UKI whose `roothash=` matches this slot's UUIDs.
    pub root_hash: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Uki {
    pub path: String,
    pub size: u64,
    pub cmdline: String,
    pub root_hash: Option<String>,
    pub os_release: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub image: PathBuf,
    pub format: String,
    pub disk_size: u64,
    pub disk_guid: Uuid,
    pub partitions: Vec<Partition>,
    pub slots: Vec<Slot>,
    pub verity: Vec<VeritySuperblock>,
    pub esp_files: Vec<String>,
    pub ukis: Vec<Uki>,
    /// The manifest next to the image, if found: its path and top-level summary.
    pub manifest: Option<(PathBuf, serde_json::Value)>,
    /// Components built from source, from the manifest.
    pub components: Vec<ComponentSummary>,
}

/// A component built from source, as `builder inspect` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentSummary {
    pub name: String,
    pub version: String,
    /// `module@version`.
    pub module: String,
    /// go.sum hash of the module.
    pub module_sum: String,
    pub go_version: String,
    /// Install path and size of each program.
    pub binaries: Vec<(String, u64)>,
    /// How many Go modules are linked into the programs.
    pub linked_modules: usize,
}

impl From<crate::components::Info> for ComponentSummary {
    fn from(c: crate::components::Info) -> Self {
        ComponentSummary {
            name: c.name,
            version: c.version,
            module: format!("{}@{}", c.module, c.module_version),
            module_sum: c.module_sum,
            go_version: c.go_version,
            binaries: c
                .binaries
                .into_iter()
                .map(|b| (b.install, b.size))
                .collect(),
            linked_modules: c.modules.len(),
        }
    }
}

fn read_superblock(disk: &Path, partition: &gpt::Entry, number: u32) -> Option<VeritySuperblock> {
    let mut file = File::open(disk).ok()?;
    file.seek(SeekFrom::Start(partition.offset)).ok()?;
    let mut sb = [0u8; 512];
    file.read_exact(&mut sb).ok()?;
    if &sb[0..8] != b"verity\0\0" {
        return None;
    }
    let algorithm = String::from_utf8_lossy(&sb[32..64])
        .trim_end_matches('\0')
        .to_owned();
    let salt_size = u16::from_le_bytes([sb[80], sb[81]]) as usize;
    Some(VeritySuperblock {
        partition: number,
        uuid: Uuid(sb[16..32].try_into().ok()?),
        algorithm,
        data_block_size: u32::from_le_bytes(sb[64..68].try_into().ok()?),
        hash_block_size: u32::from_le_bytes(sb[68..72].try_into().ok()?),
        data_blocks: u64::from_le_bytes(sb[72..80].try_into().ok()?),
        salt: hex::encode(&sb[88..88 + salt_size.min(256)]),
    })
}

fn find_manifest(image: &Path) -> Option<PathBuf> {
    let dir = image.parent()?;
    let name = image.file_name()?.to_string_lossy().into_owned();
    let stem = name
        .trim_end_matches(".qcow2")
        .trim_end_matches(".raw")
        .trim_end_matches(".img");
    [
        format!("{stem}.manifest.json"),
        format!("{stem}.manifest"),
        "manifest.json".to_owned(),
    ]
    .into_iter()
    .map(|n| dir.join(n))
    .find(|p| p.is_file())
}

fn summarize_manifest(value: &serde_json::Value) -> serde_json::Value {
    let Some(map) = value.as_object() else {
        return serde_json::Value::Null;
    };
    let mut out = serde_json::Map::new();
    for (key, value) in map {
        let summary = match value {
            serde_json::Value::Array(items) => {
                serde_json::json!(format!("{} entries", items.len()))
            }
            serde_json::Value::Object(fields) => {
                serde_json::json!(format!("{} fields", fields.len()))
            }
            other => other.clone(),
        };
        out.insert(key.clone(), summary);
    }
    serde_json::Value::Object(out)
}

/// Reads everything `builder inspect` shows from `image` (raw or qcow2).
pub fn inspect(image: &Path) -> anyhow::Result<Inspection> {
    let scratch = tempfile::Builder::new()
        .prefix("globular-inspect-")
        .tempdir()
        .context("creating a temporary directory")?;
    let format =
        qcow2::detect_format(image).with_context(|| format!("probing {}", image.display()))?;
    let raw = if format == "raw" {
        image.to_owned()
    } else {
        let raw = scratch.path().join("disk.raw");
        qcow2::to_raw(image, &raw)?;
        raw
    };
    let table = gpt::Table::read(&raw).with_context(|| format!("reading {}", image.display()))?;

    let partitions: Vec<Partition> = table
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| Partition {
            number: i as u32 + 1,
            type_guid: e.type_guid,
            type_name: types::name(&e.type_guid.to_string()).to_owned(),
            uuid: e.uuid,
            label: e.label.clone(),
            offset: e.offset,
            size: e.size,
            attributes: e.attributes,
        })
        .collect();

    let verity: Vec<VeritySuperblock> = table
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| types::name(&e.type_guid.to_string()).ends_with("-verity"))
        .filter_map(|(i, e)| read_superblock(&raw, e, i as u32 + 1))
        .collect();

    let mut esp_files = Vec::new();
    let mut ukis = Vec::new();
    if let Some(esp_entry) = table
        .entries
        .iter()
        .find(|e| e.type_guid.to_string() == types::ESP)
    {
        esp_files = esp::list(&raw, esp_entry.offset)?;
        for path in esp_files.iter().filter(|p| {
            p.to_ascii_lowercase().starts_with("/efi/linux/")
                && p.to_ascii_lowercase().ends_with(".efi")
        }) {
            let local = scratch.path().join("uki.efi");
            esp::extract(&raw, esp_entry.offset, path, &local)?;
            let size = std::fs::metadata(&local)?.len();
            let cmdline =
                String::from_utf8_lossy(&uki::read_section(&local, ".cmdline", scratch.path())?)
                    .trim_end_matches(['\0', '\n'])
                    .to_owned();
            let os_release =
                String::from_utf8_lossy(&uki::read_section(&local, ".osrel", scratch.path())?)
                    .into_owned();
            let root_hash = cmdline
                .split_whitespace()
                .find_map(|w| w.strip_prefix("roothash="))
                .map(str::to_owned);
            ukis.push(Uki {
                path: path.clone(),
                size,
                cmdline,
                root_hash,
                os_release,
            });
            std::fs::remove_file(&local).ok();
        }
    }

    // Slots: root partitions in table order, each followed by its verity partition.
    let mut slots = Vec::new();
    for (i, p) in partitions.iter().enumerate() {
        if !(p.type_name.starts_with("root-") || p.type_name.starts_with("usr-"))
            || p.type_name.ends_with("-verity")
        {
            continue;
        }
        let verity_partition = partitions
            .get(i + 1)
            .filter(|v| v.type_name == format!("{}-verity", p.type_name))
            .map(|v| v.number);
        let root_hash = ukis.iter().filter_map(|u| u.root_hash.as_ref()).find(|h| {
            disk::verity::parse_root_hash(h)
                .map(|hash| disk::ids::uuids_from_root_hash(&hash).0 == p.uuid)
                .unwrap_or(false)
        });
        let version = (p.label != disk::EMPTY_LABEL).then(|| {
            p.label
                .rsplit_once('_')
                .map(|(_, v)| v.to_owned())
                .unwrap_or_else(|| p.label.clone())
        });
        slots.push(Slot {
            name: char::from(b'a' + slots.len() as u8).to_string(),
            label: p.label.clone(),
            version,
            data_partition: p.number,
            verity_partition,
            root_hash: root_hash.cloned(),
        });
    }

    let mut components = Vec::new();
    let manifest = match find_manifest(image) {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            if let Some(list) = value.get("components") {
                let infos: Vec<crate::components::Info> = serde_json::from_value(list.clone())
                    .with_context(|| format!("{}: `components`", path.display()))?;
                components = infos.into_iter().map(ComponentSummary::from).collect();
            }
            Some((path, summarize_manifest(&value)))
        }
        None => None,
    };

    Ok(Inspection {
        image: image.to_owned(),
        format,
        disk_size: table.disk_size,
        disk_guid: table.disk_guid,
        partitions,
        slots,
        verity,
        esp_files,
        ukis,
        manifest,
        components,
    })
}

fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} B")
    }
}

/// The human-readable report.
pub fn render(i: &Inspection) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "image:      {} ({})", i.image.display(), i.format);
    let _ = writeln!(out, "disk size:  {}", mib(i.disk_size));
    let _ = writeln!(out, "disk guid:  {}", i.disk_guid);
    let _ = writeln!(out, "\npartitions:");
    for p in &i.partitions {
        let _ = writeln!(
            out,
            "  {}  {:<20} {:>10} at {:>10}  {}  {}",
            p.number,
            p.type_name,
            mib(p.size),
            mib(p.offset),
            p.uuid,
            p.label
        );
    }
    let _ = writeln!(out, "\nslots:");
    for s in &i.slots {
        let _ = writeln!(
            out,
            "  {}: {} (partition {}, verity {}){}",
            s.name,
            s.version.as_deref().unwrap_or("empty"),
            s.data_partition,
            s.verity_partition
                .map(|n| n.to_string())
                .unwrap_or_else(|| "none".into()),
            s.root_hash
                .as_ref()
                .map(|h| format!(", root hash {h}"))
                .unwrap_or_default()
        );
    }
    if !i.verity.is_empty() {
        let _ = writeln!(out, "\nverity superblocks:");
        for v in &i.verity {
            let _ = writeln!(
                out,
                "  partition {}: {} {} blocks of {} B, salt {}",
                v.partition, v.algorithm, v.data_blocks, v.data_block_size, v.salt
            );
        }
    }
    let _ = writeln!(out, "\nESP files:");
    for f in &i.esp_files {
        let _ = writeln!(out, "  {f}");
    }
    for u in &i.ukis {
        let _ = writeln!(out, "\nUKI {} ({} bytes)", u.path, u.size);
        let _ = writeln!(out, "  cmdline: {}", u.cmdline);
        for line in u.os_release.lines().filter(|l| {
            ["PRETTY_NAME=", "IMAGE_ID=", "IMAGE_VERSION="]
                .iter()
                .any(|k| l.starts_with(k))
        }) {
            let _ = writeln!(out, "  {line}");
        }
    }
    if !i.components.is_empty() {
        let _ = writeln!(out, "\ncomponents built from source:");
        for c in &i.components {
            let _ = writeln!(
                out,
                "  {} {}: {} {} ({}, {} Go modules linked)",
                c.name, c.version, c.module, c.module_sum, c.go_version, c.linked_modules
            );
            for (install, size) in &c.binaries {
                let _ = writeln!(out, "    {install} ({} MiB)", size >> 20);
            }
        }
    }
    match &i.manifest {
        Some((path, summary)) => {
            let _ = writeln!(out, "\nmanifest {}:", path.display());
            if let Some(map) = summary.as_object() {
                for (k, v) in map {
                    let _ = writeln!(
                        out,
                        "  {k}: {}",
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                    );
                }
            }
        }
        None => {
            let _ = writeln!(out, "\nmanifest: none next to the image");
        }
    }
    out
}

/// `builder inspect`: the report as text, or as JSON with `json`.
pub fn report(image: &Path, json: bool) -> anyhow::Result<String> {
    let inspection = inspect(image)?;
    let mut text = if json {
        serde_json::to_string_pretty(&inspection)?
    } else {
        render(&inspection)
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}
