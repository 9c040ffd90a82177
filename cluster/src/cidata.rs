//! The NoCloud-style config drive that carries a seed: a FAT filesystem
//! labelled `cidata` holding `meta-data`, `user-data` and the seed itself as
//! `globular-seed.yaml`. Written and read with the `fatfs` crate, so neither
//! the builder nor the agent needs a mount or a loop device.

use std::io::{Cursor, Read as _, Seek, Write as _};
use std::path::Path;

use crate::seed::Seed;

/// Name of the seed file on the drive.
pub const SEED_FILE: &str = "globular-seed.yaml";
/// Filesystem label of the drive.
pub const LABEL: &str = "cidata";
/// Smallest image: FAT12, far more than a seed needs.
const MIN_IMAGE_SIZE: u64 = 2 * 1024 * 1024;
/// Room for the filesystem's own structures beside the files.
const SLACK: u64 = 1024 * 1024;

/// Makes the drive image for `seed`. The same seed gives the same bytes
/// (volume id from the seed's digest, DOS epoch timestamps).
pub fn image(seed: &Seed) -> std::io::Result<Vec<u8>> {
    image_with(seed, &[])
}

/// Like [`image`], with more files on the drive beside the seed: (name on
/// the drive, file to copy). The image grows to hold them.
pub fn image_with(seed: &Seed, extra: &[(&str, &Path)]) -> std::io::Result<Vec<u8>> {
    let yaml = seed.to_yaml();
    let digest = ring::digest::digest(&ring::digest::SHA256, yaml.as_bytes());
    let d = digest.as_ref();
    let volume_id = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
    let mut label = [b' '; 11];
    label[..LABEL.len()].copy_from_slice(LABEL.as_bytes());
    let mut extra_bytes = 0u64;
    for (name, path) in extra {
        if !crate::fsutil::is_plain_file_name(name)
            || [SEED_FILE, "meta-data", "user-data"].contains(name)
        {
            return Err(std::io::Error::other(format!(
                "{name:?} cannot be a file of the config drive"
            )));
        }
        extra_bytes += std::fs::metadata(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?
            .len();
    }
    // Files take whole clusters (at most 64 KiB each): round up generously.
    let wanted = yaml.len() as u64 + extra_bytes + extra_bytes / 32 + SLACK;
    let size = wanted.max(MIN_IMAGE_SIZE).div_ceil(SLACK) * SLACK;
    let size = usize::try_from(size).map_err(std::io::Error::other)?;
    let mut disk = Cursor::new(vec![0u8; size]);
    fatfs::format_volume(
        &mut disk,
        fatfs::FormatVolumeOptions::new()
            .volume_label(label)
            .volume_id(volume_id),
    )?;
    {
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new())?;
        let meta = format!(
            "instance-id: {}-{}\nlocal-hostname: {}\n",
            seed.cluster.id, seed.node.name, seed.node.name
        );
        for (name, contents) in [
            ("meta-data", meta.as_str()),
            ("user-data", "#cloud-config\n{}\n"),
            (SEED_FILE, yaml.as_str()),
        ] {
            let mut file = fs.root_dir().create_file(name)?;
            file.truncate()?;
            file.write_all(contents.as_bytes())?;
            file.flush()?;
        }
        for (name, path) in extra {
            let mut file = fs.root_dir().create_file(name)?;
            file.truncate()?;
            let mut source = std::fs::File::open(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            std::io::copy(&mut source, &mut file)?;
            file.flush()?;
        }
        fs.unmount()?;
    }
    Ok(disk.into_inner())
}

/// Reads the seed file from a drive image or block device.
pub fn read_seed<T: std::io::Read + std::io::Write + Seek>(
    disk: T,
) -> std::io::Result<Option<String>> {
    let mut bytes = Vec::new();
    if copy_file(disk, SEED_FILE, &mut bytes, MAX_SEED)?.is_none() {
        return Ok(None);
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| std::io::Error::other(format!("{SEED_FILE} is not UTF-8")))
}

/// Most bytes of a seed file.
const MAX_SEED: u64 = 16 * 1024 * 1024;

/// Copies the drive's file `name` into `out`, at most `limit` bytes (more
/// is an error); `None` if the drive has no such file. Reads only: `disk`
/// may be a [`ReadOnly`] device.
pub fn copy_file<T: std::io::Read + std::io::Write + Seek>(
    disk: T,
    name: &str,
    out: &mut impl std::io::Write,
    limit: u64,
) -> std::io::Result<Option<u64>> {
    let fs = fatfs::FileSystem::new(disk, fatfs::FsOptions::new())?;
    let root = fs.root_dir();
    let file = match root.open_file(name) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let copied = std::io::copy(&mut file.take(limit + 1), out)?;
    if copied > limit {
        return Err(std::io::Error::other(format!(
            "{name} is larger than {limit} bytes"
        )));
    }
    Ok(Some(copied))
}

/// A device or file read through the filesystem without ever writing to
/// it: writes fail (reading a FAT volume never writes).
#[derive(Debug)]
pub struct ReadOnly<T>(pub T);

impl<T: std::io::Read> std::io::Read for ReadOnly<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<T: Seek> Seek for ReadOnly<T> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.0.seek(pos)
    }
}

impl<T> std::io::Write for ReadOnly<T> {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("the config drive is read only"))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads the volume label of a FAT image.
pub fn label<T: std::io::Read + std::io::Write + Seek>(disk: T) -> std::io::Result<String> {
    let fs = fatfs::FileSystem::new(disk, fatfs::FsOptions::new())?;
    Ok(fs.volume_label())
}
