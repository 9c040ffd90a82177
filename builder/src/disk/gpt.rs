//! The GUID partition table: a small writer and reader of our own.
//!
//! Layout written (512-byte sectors): protective MBR in LBA 0, primary header in
//! LBA 1, 128 entries of 128 bytes in LBA 2..34, partitions aligned to 1 MiB,
//! backup entries and header in the last 33 sectors. CRC32 (IEEE) over header
//! and entries as UEFI 2.10 §5.3 says.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;

use anyhow::{bail, ensure, Context as _};

use super::ids::Uuid;

pub const SECTOR: u64 = 512;
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
const ENTRY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;
const HEADER_SIZE: u32 = 92;
/// The first partition starts at 1 MiB; every partition is aligned to 1 MiB.
pub const ALIGN: u64 = 1 << 20;

/// GPT attribute bit 60: mount read-only (Discoverable Partitions Specification).
pub const FLAG_READ_ONLY: u64 = 1 << 60;
/// GPT attribute bit 63: do not mount automatically.
pub const FLAG_NO_AUTO: u64 = 1 << 63;

/// One partition of the table. Offsets and sizes are in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub type_guid: Uuid,
    pub uuid: Uuid,
    pub label: String,
    pub offset: u64,
    pub size: u64,
    pub attributes: u64,
}

/// A whole table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub disk_guid: Uuid,
    /// Size of the whole disk in bytes.
    pub disk_size: u64,
    pub entries: Vec<Entry>,
}

/// The smallest disk size that holds partitions up to `end` bytes plus the
/// backup table, rounded to whole MiB.
pub fn disk_size_for(end: u64) -> u64 {
    end.next_multiple_of(ALIGN) + ALIGN
}

/// The first byte a partition may start at.
pub fn first_usable_offset() -> u64 {
    ALIGN
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(bytes);
    hasher.finalize()
}

fn encode_label(label: &str) -> anyhow::Result<[u8; 72]> {
    let units: Vec<u16> = label.encode_utf16().collect();
    ensure!(
        units.len() <= 36,
        "partition label `{label}` is longer than 36 UTF-16 units"
    );
    let mut out = [0u8; 72];
    for (i, u) in units.iter().enumerate() {
        out[i * 2..i * 2 + 2].copy_from_slice(&u.to_le_bytes());
    }
    Ok(out)
}

fn decode_label(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

impl Table {
    fn entries_bytes(&self) -> anyhow::Result<Vec<u8>> {
        ensure!(
            self.entries.len() as u64 <= ENTRIES,
            "too many partitions ({})",
            self.entries.len()
        );
        let mut out = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
        for (i, e) in self.entries.iter().enumerate() {
            ensure!(
                e.offset % SECTOR == 0 && e.size % SECTOR == 0 && e.size > 0,
                "partition `{}` is not sector aligned",
                e.label
            );
            let b = &mut out[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
            b[0..16].copy_from_slice(&e.type_guid.to_gpt_bytes());
            b[16..32].copy_from_slice(&e.uuid.to_gpt_bytes());
            b[32..40].copy_from_slice(&(e.offset / SECTOR).to_le_bytes());
            b[40..48].copy_from_slice(&((e.offset + e.size) / SECTOR - 1).to_le_bytes());
            b[48..56].copy_from_slice(&e.attributes.to_le_bytes());
            b[56..128].copy_from_slice(&encode_label(&e.label)?);
        }
        Ok(out)
    }

    fn header(&self, primary: bool, entries_crc: u32) -> Vec<u8> {
        let last_lba = self.disk_size / SECTOR - 1;
        let (my_lba, alternate_lba, entries_lba) = if primary {
            (1, last_lba, 2)
        } else {
            (last_lba, 1, last_lba - ENTRY_SECTORS)
        };
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + ENTRY_SECTORS).to_le_bytes());
        h[48..56].copy_from_slice(&(last_lba - ENTRY_SECTORS - 1).to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_gpt_bytes());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    fn protective_mbr(&self) -> Vec<u8> {
        let mut m = vec![0u8; SECTOR as usize];
        let p = &mut m[446..462];
        p[0] = 0x00;
        p[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        p[4] = 0xee;
        p[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        p[8..12].copy_from_slice(&1u32.to_le_bytes());
        let sectors = (self.disk_size / SECTOR - 1).min(u64::from(u32::MAX)) as u32;
        p[12..16].copy_from_slice(&sectors.to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xaa;
        m
    }

    /// Checks that partitions lie inside the usable area and do not overlap.
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.disk_size.is_multiple_of(SECTOR),
            "disk size is not a multiple of 512"
        );
        let last_usable = self.disk_size - (ENTRY_SECTORS + 1) * SECTOR;
        let mut sorted: Vec<&Entry> = self.entries.iter().collect();
        sorted.sort_by_key(|e| e.offset);
        let mut end = (2 + ENTRY_SECTORS) * SECTOR;
        for e in sorted {
            ensure!(
                e.offset >= end,
                "partition `{}` overlaps the one before it",
                e.label
            );
            end = e.offset + e.size;
            ensure!(
                end <= last_usable,
                "partition `{}` ends beyond the usable area",
                e.label
            );
        }
        Ok(())
    }

    /// Writes the protective MBR, both headers and both entry arrays into
    /// `file`, which must already be `disk_size` bytes long.
    pub fn write_to(&self, file: &mut File) -> anyhow::Result<()> {
        self.validate()?;
        let entries = self.entries_bytes()?;
        let entries_crc = crc32(&entries);
        let last_lba = self.disk_size / SECTOR - 1;
        let writes = [
            (0, self.protective_mbr()),
            (SECTOR, self.header(true, entries_crc)),
            (2 * SECTOR, entries.clone()),
            ((last_lba - ENTRY_SECTORS) * SECTOR, entries),
            (last_lba * SECTOR, self.header(false, entries_crc)),
        ];
        for (offset, bytes) in writes {
            file.seek(SeekFrom::Start(offset))?;
            file.write_all(&bytes)?;
        }
        Ok(())
    }

    /// Reads the primary table of a raw disk image and checks its CRCs.
    pub fn read(path: &Path) -> anyhow::Result<Table> {
        let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let disk_size = file.metadata()?.len();
        let mut head = vec![0u8; ((2 + ENTRY_SECTORS) * SECTOR) as usize];
        file.read_exact(&mut head)
            .with_context(|| format!("{}: too small for a GPT", path.display()))?;
        let h = &head[SECTOR as usize..2 * SECTOR as usize];
        if &h[0..8] != b"EFI PART" {
            bail!("{}: no GPT header in LBA 1", path.display());
        }
        let header_size = u32::from_le_bytes(h[12..16].try_into()?) as usize;
        ensure!(
            (92..=512).contains(&header_size),
            "{}: bad GPT header size",
            path.display()
        );
        let mut check = h[..header_size].to_vec();
        check[16..20].fill(0);
        let stored_crc = u32::from_le_bytes(h[16..20].try_into()?);
        ensure!(
            crc32(&check) == stored_crc,
            "{}: GPT header CRC mismatch",
            path.display()
        );
        let disk_guid = Uuid::from_gpt_bytes(h[56..72].try_into()?);
        let entries_lba = u64::from_le_bytes(h[72..80].try_into()?);
        let count = u64::from(u32::from_le_bytes(h[80..84].try_into()?));
        let entry_size = u64::from(u32::from_le_bytes(h[84..88].try_into()?));
        let entries_crc = u32::from_le_bytes(h[88..92].try_into()?);
        ensure!(
            entry_size >= 128 && count <= 1024,
            "{}: unsupported GPT entry array ({count} x {entry_size})",
            path.display()
        );
        let mut raw = vec![0u8; (count * entry_size) as usize];
        file.seek(SeekFrom::Start(entries_lba * SECTOR))?;
        file.read_exact(&mut raw)?;
        ensure!(
            crc32(&raw) == entries_crc,
            "{}: GPT entry array CRC mismatch",
            path.display()
        );
        let mut entries = Vec::new();
        for b in raw.chunks_exact(entry_size as usize) {
            let type_guid = Uuid::from_gpt_bytes(b[0..16].try_into()?);
            if type_guid.0 == [0; 16] {
                continue;
            }
            let first = u64::from_le_bytes(b[32..40].try_into()?);
            let last = u64::from_le_bytes(b[40..48].try_into()?);
            entries.push(Entry {
                type_guid,
                uuid: Uuid::from_gpt_bytes(b[16..32].try_into()?),
                label: decode_label(&b[56..128]),
                offset: first * SECTOR,
                size: (last + 1 - first) * SECTOR,
                attributes: u64::from_le_bytes(b[48..56].try_into()?),
            });
        }
        Ok(Table {
            disk_guid,
            disk_size,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_ieee_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let table = Table {
            disk_guid: Uuid([1; 16]),
            disk_size: disk_size_for(3 * ALIGN),
            entries: vec![
                Entry {
                    type_guid: Uuid([2; 16]),
                    uuid: Uuid([3; 16]),
                    label: "esp".into(),
                    offset: ALIGN,
                    size: ALIGN,
                    attributes: 0,
                },
                Entry {
                    type_guid: Uuid([4; 16]),
                    uuid: Uuid([5; 16]),
                    label: "_empty".into(),
                    offset: 2 * ALIGN,
                    size: ALIGN,
                    attributes: FLAG_READ_ONLY,
                },
            ],
        };
        let mut file = File::create(&path).unwrap();
        file.set_len(table.disk_size).unwrap();
        table.write_to(&mut file).unwrap();
        drop(file);
        assert_eq!(Table::read(&path).unwrap(), table);
    }

    #[test]
    fn overlapping_partitions_are_refused() {
        let entry = Entry {
            type_guid: Uuid([2; 16]),
            uuid: Uuid([3; 16]),
            label: "a".into(),
            offset: ALIGN,
            size: 2 * ALIGN,
            attributes: 0,
        };
        let mut second = entry.clone();
        second.offset = 2 * ALIGN;
        second.label = "b".into();
        let table = Table {
            disk_guid: Uuid([1; 16]),
            disk_size: disk_size_for(4 * ALIGN),
            entries: vec![entry, second],
        };
        let err = table.validate().unwrap_err().to_string();
        assert!(err.contains("`b` overlaps"), "{err}");
    }

    #[test]
    fn long_labels_are_refused() {
        let err = encode_label(&"x".repeat(37)).unwrap_err().to_string();
        assert!(err.contains("36"), "{err}");
    }
}
