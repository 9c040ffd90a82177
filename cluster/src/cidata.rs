//! The NoCloud-style config drive that carries a seed: a FAT filesystem
//! labelled `cidata` holding `meta-data`, `user-data` and the seed itself as
//! `globular-seed.yaml`. Written and read with the `fatfs` crate, so neither
//! the builder nor the agent needs a mount or a loop device.

use std::io::{Cursor, Read as _, Seek, Write as _};

use crate::seed::Seed;

/// Name of the seed file on the drive.
pub const SEED_FILE: &str = "globular-seed.yaml";
/// Filesystem label of the drive.
pub const LABEL: &str = "cidata";
/// Size of the image: FAT12, far more than a seed needs.
const IMAGE_SIZE: usize = 2 * 1024 * 1024;

/// Makes the drive image for `seed`. The same seed gives the same bytes
/// (volume id from the seed's digest, DOS epoch timestamps).
pub fn image(seed: &Seed) -> std::io::Result<Vec<u8>> {
    let yaml = seed.to_yaml();
    let digest = ring::digest::digest(&ring::digest::SHA256, yaml.as_bytes());
    let d = digest.as_ref();
    let volume_id = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
    let mut label = [b' '; 11];
    label[..LABEL.len()].copy_from_slice(LABEL.as_bytes());
    let mut disk = Cursor::new(vec![0u8; IMAGE_SIZE]);
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
        fs.unmount()?;
    }
    Ok(disk.into_inner())
}

/// Reads the seed file from a drive image or block device.
pub fn read_seed<T: std::io::Read + std::io::Write + Seek>(
    disk: T,
) -> std::io::Result<Option<String>> {
    let fs = fatfs::FileSystem::new(disk, fatfs::FsOptions::new())?;
    let root = fs.root_dir();
    let mut file = match root.open_file(SEED_FILE) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(Some(text))
}

/// Reads the volume label of a FAT image.
pub fn label<T: std::io::Read + std::io::Write + Seek>(disk: T) -> std::io::Result<String> {
    let fs = fatfs::FileSystem::new(disk, fatfs::FsOptions::new())?;
    Ok(fs.volume_label())
}
