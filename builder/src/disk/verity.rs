//! dm-verity hash trees, made and checked by `veritysetup` on plain files.
//!
//! Format: version 1, SHA-256, 4096-byte data and hash blocks, salt and
//! superblock UUID from the inputs digest (see [`super::ids`]). The superblock
//! records the number of data blocks, so a data partition larger than its
//! filesystem image is fine: only the image's blocks are covered.

use std::path::Path;

use anyhow::{bail, Context as _};
use globular_task::{Task, TaskError};

use super::ids::Uuid;

pub const BLOCK: u64 = 4096;

/// The hash partition size that covers a data partition of `data_size` bytes:
/// superblock plus every tree level, rounded up to whole MiB.
pub fn hash_partition_size(data_size: u64) -> u64 {
    let per_block = BLOCK / 32;
    let mut blocks = data_size.div_ceil(BLOCK);
    let mut total = 1; // superblock
    while blocks > 1 {
        blocks = blocks.div_ceil(per_block);
        total += blocks;
    }
    (total.max(2) * BLOCK).next_multiple_of(super::gpt::ALIGN)
}

/// Writes the hash tree of `data` into `hash` and returns the root hash.
pub fn format(data: &Path, hash: &Path, salt_hex: &str, uuid: Uuid) -> anyhow::Result<[u8; 32]> {
    let out = Task::new("computing the dm-verity hash tree", "veritysetup")
        .package("cryptsetup-bin")
        .arg("format")
        .arg(data)
        .arg(hash)
        .args([
            "--hash=sha256",
            "--format=1",
            "--data-block-size=4096",
            "--hash-block-size=4096",
        ])
        .arg(format!("--salt={salt_hex}"))
        .arg(format!("--uuid={uuid}"))
        .read_string()?;
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .with_context(|| format!("veritysetup printed no root hash for {}", data.display()))?;
    parse_root_hash(line.trim())
}

/// Parses 64 hex digits.
pub fn parse_root_hash(text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(text).with_context(|| format!("root hash `{text}` is not hex"))?;
    match <[u8; 32]>::try_from(bytes) {
        Ok(hash) => Ok(hash),
        Err(_) => bail!("root hash `{text}` is not 32 bytes"),
    }
}

/// Checks `data` against `hash` and `root_hash` in userspace. `Ok(false)` when
/// the data (or tree) does not match; `Err` when veritysetup cannot run.
pub fn verify(data: &Path, hash: &Path, root_hash: &[u8; 32]) -> anyhow::Result<bool> {
    match Task::new("verifying the dm-verity hash tree", "veritysetup")
        .package("cryptsetup-bin")
        .arg("verify")
        .arg(data)
        .arg(hash)
        .arg(hex::encode(root_hash))
        .run()
    {
        Ok(()) => Ok(true),
        Err(TaskError::Failed { .. }) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_partition_holds_the_tree() {
        // 1 GiB of data: 262144 blocks -> 2048 + 16 + 1 hash blocks + superblock.
        let size = hash_partition_size(1 << 30);
        assert!(size >= (2048 + 16 + 1 + 1) * BLOCK);
        assert_eq!(size % super::super::gpt::ALIGN, 0);
        assert_eq!(hash_partition_size(BLOCK), super::super::gpt::ALIGN);
    }
}
