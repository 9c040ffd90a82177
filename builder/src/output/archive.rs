//! Deterministic archives of a tree: tar (with xattrs) and cpio (newc, as the
//! kernel reads an initrd). Entries are sorted by path, ownership and
//! permissions come from the tree, timestamps are clamped to SOURCE_DATE_EPOCH.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// One entry of a tree, in archive order.
struct Entry {
    /// Path relative to the tree root (empty for the root itself).
    rel: PathBuf,
    path: PathBuf,
    meta: std::fs::Metadata,
}

/// Every entry under `root` sorted by path, parents before children.
fn entries(root: &Path) -> anyhow::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.with_context(|| format!("walking {}", root.display()))?;
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("walkdir stays under its root")
            .to_path_buf();
        let meta = entry
            .path()
            .symlink_metadata()
            .with_context(|| format!("reading {}", entry.path().display()))?;
        out.push(Entry {
            rel,
            path: entry.path().to_path_buf(),
            meta,
        });
    }
    Ok(out)
}

fn mtime(meta: &std::fs::Metadata, epoch: u64) -> u64 {
    (meta.mtime().max(0) as u64).min(epoch)
}

/// A writer wrapped in the requested compression.
pub fn compressor<'a, W: Write + 'a>(
    out: W,
    compression: &str,
) -> anyhow::Result<Box<dyn FinishWrite + 'a>> {
    Ok(match compression {
        "zstd" => Box::new(zstd::Encoder::new(out, 3).context("starting zstd")?),
        "gzip" => Box::new(flate2::write::GzEncoder::new(
            out,
            flate2::Compression::default(),
        )),
        "none" => Box::new(Plain(out)),
        other => anyhow::bail!("unsupported compression {other}"),
    })
}

/// A writer that must be finished (flushes compressor trailers).
pub trait FinishWrite: Write {
    fn finish_write(self: Box<Self>) -> io::Result<()>;
}

struct Plain<W: Write>(W);

impl<W: Write> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> FinishWrite for Plain<W> {
    fn finish_write(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> FinishWrite for zstd::Encoder<'_, W> {
    fn finish_write(self: Box<Self>) -> io::Result<()> {
        self.finish()?.flush()
    }
}

impl<W: Write> FinishWrite for flate2::write::GzEncoder<W> {
    fn finish_write(self: Box<Self>) -> io::Result<()> {
        self.finish()?.flush()
    }
}

/// Writes `root` as a tar archive to `dest`.
pub fn write_tar(root: &Path, dest: &Path, compression: &str, epoch: u64) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut out = compressor(io::BufWriter::new(file), compression)?;
    tar_stream(root, &mut out, epoch)?;
    out.finish_write()
        .with_context(|| format!("writing {}", dest.display()))
}

/// Writes `root` as an uncompressed tar stream to `out` (sorted, ownership
/// and modes from the tree, timestamps clamped to `epoch`, xattrs as PAX
/// records, hard links as links).
pub fn tar_stream<W: Write>(root: &Path, out: &mut W, epoch: u64) -> anyhow::Result<()> {
    {
        let mut builder = tar::Builder::new(&mut *out);
        builder.follow_symlinks(false);
        let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
        for entry in entries(root)? {
            let name = if entry.rel.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                entry.rel.clone()
            };
            let meta = &entry.meta;
            let kind = meta.file_type();
            let mut header = tar::Header::new_gnu();
            header.set_mode(meta.mode() & 0o7777);
            header.set_uid(meta.uid().into());
            header.set_gid(meta.gid().into());
            header.set_mtime(mtime(meta, epoch));
            header.set_size(0);
            let xattrs = read_xattrs(&entry.path)?;
            if !xattrs.is_empty() {
                builder
                    .append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                    .context("writing xattrs")?;
            }
            if kind.is_dir() {
                header.set_entry_type(tar::EntryType::Directory);
                builder.append_data(&mut header, &name, io::empty())?;
            } else if kind.is_symlink() {
                header.set_entry_type(tar::EntryType::Symlink);
                let target = std::fs::read_link(&entry.path)?;
                builder.append_link(&mut header, &name, &target)?;
            } else if kind.is_file() {
                let id = (meta.dev(), meta.ino());
                if meta.nlink() > 1 {
                    if let Some(first) = links.get(&id) {
                        header.set_entry_type(tar::EntryType::Link);
                        builder.append_link(&mut header, &name, first)?;
                        continue;
                    }
                    links.insert(id, name.clone());
                }
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(meta.len());
                let file = std::fs::File::open(&entry.path)
                    .with_context(|| format!("reading {}", entry.path.display()))?;
                builder.append_data(&mut header, &name, file)?;
            } else {
                let kind_type = if kind.is_char_device() {
                    tar::EntryType::Char
                } else if kind.is_block_device() {
                    tar::EntryType::Block
                } else if kind.is_fifo() {
                    tar::EntryType::Fifo
                } else {
                    continue; // sockets are not archived
                };
                header.set_entry_type(kind_type);
                header.set_device_major(major(meta.rdev()))?;
                header.set_device_minor(minor(meta.rdev()))?;
                builder.append_data(&mut header, &name, io::empty())?;
            }
        }
        builder.finish().context("finishing tar archive")?;
    }
    Ok(())
}

fn read_xattrs(path: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(_) => return Ok(out), // filesystem without xattr support
    };
    let mut names: Vec<_> = names.collect();
    names.sort();
    for name in names {
        if let Ok(Some(value)) = xattr::get(path, &name) {
            out.push((format!("SCHILY.xattr.{}", name.to_string_lossy()), value));
        }
    }
    Ok(out)
}

fn major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)) as u32
}

fn minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)) as u32
}

/// Writes `root` as a newc cpio archive (the initrd format) to `dest`.
/// Hard links are stored as separate files, which the kernel accepts.
pub fn write_cpio(root: &Path, dest: &Path, compression: &str, epoch: u64) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut out = compressor(io::BufWriter::new(file), compression)?;
    let mut ino = 1u32;
    for entry in entries(root)? {
        let meta = &entry.meta;
        let kind = meta.file_type();
        let name = if entry.rel.as_os_str().is_empty() {
            ".".to_owned()
        } else {
            entry.rel.to_string_lossy().into_owned()
        };
        let data: Vec<u8> = if kind.is_symlink() {
            std::fs::read_link(&entry.path)?
                .as_os_str()
                .as_encoded_bytes()
                .to_vec()
        } else if kind.is_file() {
            std::fs::read(&entry.path)
                .with_context(|| format!("reading {}", entry.path.display()))?
        } else if kind.is_socket() {
            continue;
        } else {
            Vec::new()
        };
        let rdev = meta.rdev();
        let (rmajor, rminor) = if kind.is_char_device() || kind.is_block_device() {
            (major(rdev), minor(rdev))
        } else {
            (0, 0)
        };
        let nlink = if kind.is_dir() { 2 } else { 1 };
        cpio_record(
            &mut out,
            &name,
            CpioHeader {
                ino,
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
                nlink,
                mtime: mtime(meta, epoch) as u32,
                rmajor,
                rminor,
            },
            &data,
        )?;
        ino += 1;
    }
    cpio_record(
        &mut out,
        "TRAILER!!!",
        CpioHeader {
            ino: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 0,
            rmajor: 0,
            rminor: 0,
        },
        &[],
    )?;
    out.finish_write()
        .with_context(|| format!("writing {}", dest.display()))
}

struct CpioHeader {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    rmajor: u32,
    rminor: u32,
}

fn cpio_record(out: &mut dyn Write, name: &str, h: CpioHeader, data: &[u8]) -> io::Result<()> {
    let namesize = name.len() + 1;
    let header = format!(
        "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        h.ino,
        h.mode,
        h.uid,
        h.gid,
        h.nlink,
        h.mtime,
        data.len(),
        0,
        0,
        h.rmajor,
        h.rminor,
        namesize,
        0
    );
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    out.write_all(&[0; 3][..pad4(header.len() + namesize)])?;
    out.write_all(data)?;
    out.write_all(&[0; 3][..pad4(data.len())])?;
    Ok(())
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use globular_task::Task;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/sub")).unwrap();
        std::fs::write(dir.path().join("etc/hostname"), "node\n").unwrap();
        std::fs::write(dir.path().join("etc/sub/odd"), "12345").unwrap();
        std::os::unix::fs::symlink("hostname", dir.path().join("etc/link")).unwrap();
        std::fs::hard_link(dir.path().join("etc/hostname"), dir.path().join("etc/hard")).unwrap();
        dir
    }

    #[test]
    fn cpio_lists_with_real_cpio_and_is_deterministic() {
        let t = tree();
        let out = tempfile::tempdir().unwrap();
        let a = out.path().join("a.cpio");
        let b = out.path().join("b.cpio");
        write_cpio(t.path(), &a, "none", 1_000).unwrap();
        write_cpio(t.path(), &b, "none", 1_000).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let listing = Task::new("listing cpio", "cpio")
            .args(["-it", "--quiet", "-F"])
            .arg(&a)
            .read_string()
            .unwrap();
        let names: Vec<&str> = listing.lines().collect();
        assert_eq!(
            names,
            [
                ".",
                "etc",
                "etc/hard",
                "etc/hostname",
                "etc/link",
                "etc/sub",
                "etc/sub/odd"
            ]
        );
    }

    #[test]
    fn tar_lists_with_real_tar_and_clamps_times() {
        let t = tree();
        let out = tempfile::tempdir().unwrap();
        let a = out.path().join("a.tar.zst");
        write_tar(t.path(), &a, "zstd", 1_000).unwrap();
        let listing = Task::new("listing tar", "tar")
            .args(["--zstd", "--full-time", "-tvf"])
            .arg(&a)
            .read_string()
            .unwrap();
        assert!(
            listing.contains("etc/hostname link to etc/hard"),
            "{listing}"
        );
        assert!(listing.contains("etc/link -> hostname"), "{listing}");
        assert!(listing.contains("1970-01-01 00:16:40"), "{listing}");
    }
}
