//! The one atomic-write helper of the workspace: files (and directories)
//! appear whole under their name or not at all.
//!
//! It lives here, in `globular-cluster`, because every crate that writes
//! durable files depends on this crate already: the builder (image trees,
//! caches, secrets bundles, seeds) and the node agent (keys, certificates,
//! checkpoints). `globular-task` stays the subprocess wrapper only.
//!
//! The temporary sibling is created exclusively (`O_CREAT | O_EXCL`,
//! [`std::fs::OpenOptions::create_new`]) in the target's directory: an
//! existing file or symlink with that name is never opened, followed or
//! truncated; another name is tried instead. Its mode is set on the open
//! file (`fchmod`, not subject to the umask) before any byte is written, so
//! a secret is never readable by others, not even while it is written.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of files that hold secrets (keys, tokens).
pub const SECRET: u32 = 0o600;
/// Mode of public files (certificates, cluster info).
pub const PUBLIC: u32 = 0o644;

/// How many names are tried before giving up on a directory full of
/// leftovers (each name is unique to this process and call already).
const ATTEMPTS: u64 = 64;

/// The directory and file name of `path`.
fn split(path: &Path) -> std::io::Result<(PathBuf, String)> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} has no file name", path.display())))?;
    Ok((dir.to_owned(), name.to_string_lossy().into_owned()))
}

/// Creates a new, hidden sibling of `path` with `create`, which must fail
/// with `AlreadyExists` if the name is taken; returns the name it made.
fn create_sibling<T>(
    path: &Path,
    mut create: impl FnMut(&Path) -> std::io::Result<T>,
) -> std::io::Result<(PathBuf, T)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (dir, name) = split(path)?;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp.{}.{n}", std::process::id()));
        match create(&tmp) {
            Ok(made) => return Ok((tmp, made)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no temporary name is free")))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A file being written next to its target; [`AtomicFile::commit`] syncs it
/// and renames it over the target. Dropped without a commit, it is removed
/// and the target is untouched.
#[derive(Debug)]
pub struct AtomicFile {
    file: std::fs::File,
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Starts writing `path` with `mode` (for example [`SECRET`]).
    pub fn create(path: &Path, mode: u32) -> std::io::Result<AtomicFile> {
        let (tmp, file) = create_sibling(path, |tmp| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(tmp)
        })?;
        let file = AtomicFile {
            file,
            tmp,
            target: path.to_owned(),
            committed: false,
        };
        file.file
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
        Ok(file)
    }

    /// Syncs the data, renames it over the target and syncs the directory.
    pub fn commit(mut self) -> std::io::Result<()> {
        self.file.sync_all()?;
        std::fs::rename(&self.tmp, &self.target)?;
        self.committed = true;
        sync_dir(&split(&self.target)?.0);
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Creates `dir` (and its parents) and makes it 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes `contents` to `path` with `mode`: readers see the old file or the
/// whole new one, never a part (see the module documentation).
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = AtomicFile::create(path, mode)?;
    file.write_all(contents)?;
    file.commit()
}

/// The permission bits of the regular file at `path` (not following a
/// symlink), to keep them when the file is replaced.
pub fn existing_mode(path: &Path) -> Option<u32> {
    path.symlink_metadata()
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.permissions().mode() & 0o7777)
}

/// A directory being filled next to its target; [`AtomicDir::commit`]
/// renames it into place. Dropped without a commit, it is removed.
#[derive(Debug)]
pub struct AtomicDir {
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl AtomicDir {
    /// Creates the (empty, new) temporary directory with `mode`.
    pub fn create(path: &Path, mode: u32) -> std::io::Result<AtomicDir> {
        use std::os::unix::fs::DirBuilderExt as _;
        let (tmp, ()) = create_sibling(path, |tmp| {
            std::fs::DirBuilder::new().mode(mode).create(tmp)
        })?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        Ok(AtomicDir {
            tmp,
            target: path.to_owned(),
            committed: false,
        })
    }

    /// Where to write the directory's contents.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Renames the directory into place (fails if the target is a
    /// non-empty directory).
    pub fn commit(mut self) -> std::io::Result<()> {
        std::fs::rename(&self.tmp, &self.target)?;
        self.committed = true;
        sync_dir(&split(&self.target)?.0);
        Ok(())
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Creates a directory (and parents) with `mode` for the last component.
pub fn create_dir(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
}

/// A file name with no directory part: not empty, not `.` or `..`, no `/`
/// and no NUL.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_atomic(&path, b"secret", SECRET).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Dropped without a commit: the old file stays, nothing is left over.
        let mut unfinished = AtomicFile::create(&path, SECRET).unwrap();
        unfinished.write_all(b"half").unwrap();
        drop(unfinished);
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn never_follows_an_existing_temporary_path() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        // Plant symlinks at the names this process would try next.
        let next = {
            let probe = AtomicFile::create(&dir.path().join("probe"), PUBLIC).unwrap();
            let n: u64 = probe
                .tmp
                .to_string_lossy()
                .rsplit('.')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            n + 1
        };
        for n in next..next + 8 {
            let name = format!(".key.tmp.{}.{n}", std::process::id());
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        }
        write_atomic(&dir.path().join("key"), b"new", SECRET).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(dir.path().join("key")).unwrap(), b"new");
    }

    #[test]
    fn mode_is_not_subject_to_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tool");
        write_atomic(&path, b"#!/bin/sh\n", 0o755).unwrap();
        assert_eq!(existing_mode(&path), Some(0o755));
    }

    #[test]
    fn directories_appear_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("bundle");
        let staged = AtomicDir::create(&target, 0o700).unwrap();
        write_atomic(&staged.path().join("a"), b"a", PUBLIC).unwrap();
        assert!(!target.exists());
        staged.commit().unwrap();
        assert_eq!(std::fs::read(target.join("a")).unwrap(), b"a");
        let dropped = AtomicDir::create(&dir.path().join("other"), 0o700).unwrap();
        drop(dropped);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
