//! The build cache: package-stage trees and components built from source, keyed
//! by the digest of their inputs, and downloaded artifacts keyed by their sha256.
//!
//! An entry appears under its final name only when it is complete (built in a
//! `KEY.tmp-PID` directory, then renamed), so an interrupted or failed build
//! never leaves an entry a later build would trust. A lock file per key
//! serializes builders of the same key (exclusive) and keeps readers
//! (shared) safe from `cache prune`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use globular_task::Task;

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// Keyed entries: (kind shown by `cache list`, subdirectory, the file or
/// directory a complete entry holds).
const KEYED: [(&str, &str, &str); 2] = [
    ("rootfs", "rootfs", "tree"),
    ("component", "components", "component.json"),
];

/// A complete keyed entry, held under a shared lock while in use.
#[derive(Debug)]
pub struct Entry {
    pub dir: PathBuf,
    /// Whether this build created the entry (false: reused).
    pub built: bool,
    _lock: File,
}

impl Entry {
    pub fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }
}

/// One line of `builder cache list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listing {
    pub kind: &'static str,
    pub key: String,
    pub bytes: u64,
    pub last_used: Option<u64>,
    pub description: String,
}

impl Cache {
    pub fn open(root: &Path) -> anyhow::Result<Cache> {
        for sub in ["rootfs", "components", "artifacts", "work"] {
            std::fs::create_dir_all(root.join(sub)).with_context(|| {
                format!("creating cache directory {}", root.join(sub).display())
            })?;
        }
        Ok(Cache {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Returns the entry for `key`, calling `build(tmp_dir)` to create it when it
    /// is missing (or when `force` is set). `build` must create `tmp_dir/tree`.
    pub fn rootfs(
        &self,
        key: &str,
        force: bool,
        build: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Entry> {
        self.keyed(KEYED[0], key, force, build)
    }

    /// The entry of a component built from source, made by `build(tmp_dir)`
    /// when missing; `build` must write `tmp_dir/component.json` last.
    pub fn component(
        &self,
        key: &str,
        build: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Entry> {
        self.keyed(KEYED[1], key, false, build)
    }

    fn keyed(
        &self,
        (kind, sub, complete): (&str, &str, &str),
        key: &str,
        force: bool,
        build: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Entry> {
        let dir = self.root.join(sub).join(key);
        let lock_path = self.root.join(sub).join(format!("{key}.lock"));
        let lock = open_lock(&lock_path)?;
        // A complete entry is used under the shared lock alone: builds that
        // reuse it run side by side.
        if !force {
            lock.lock_shared()
                .with_context(|| format!("locking {}", lock_path.display()))?;
            if dir.join(complete).exists() {
                touch(&dir.join("last-used"))?;
                return Ok(Entry {
                    dir,
                    built: false,
                    _lock: lock,
                });
            }
            lock.unlock().ok();
        }
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        remove_leftovers(&self.root.join(sub), key)?;
        let mut built = false;
        if force && dir.exists() {
            tracing::info!("--force: rebuilding cached {kind} {}", short(key));
            remove_dir(&dir)?;
        }
        if !dir.join(complete).exists() {
            if dir.exists() {
                remove_dir(&dir)?;
            }
            let tmp = self
                .root
                .join(sub)
                .join(format!("{key}.tmp-{}", std::process::id()));
            let result = build(&tmp).and_then(|()| {
                std::fs::rename(&tmp, &dir)
                    .with_context(|| format!("publishing cache entry {}", dir.display()))
            });
            if let Err(err) = result {
                let _ = remove_dir(&tmp);
                return Err(err);
            }
            built = true;
        }
        touch(&dir.join("last-used"))?;
        // Readers hold the lock shared: concurrent builds may reuse the entry,
        // `cache prune` (exclusive) waits.
        lock.unlock().ok();
        lock.lock_shared()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        if !dir.join(complete).exists() {
            anyhow::bail!(
                "cache entry {} vanished (pruned concurrently?); retry",
                dir.display()
            );
        }
        Ok(Entry {
            dir,
            built,
            _lock: lock,
        })
    }

    /// Path of a verified artifact in the cache, by sha256.
    pub fn artifact(&self, sha256: &str) -> PathBuf {
        self.root.join("artifacts").join(sha256)
    }

    /// A fresh work directory, removed when the returned guard drops.
    pub fn work_dir(&self) -> anyhow::Result<WorkDir> {
        let work = self.root.join("work");
        // Work directories of builds that died (kill -9) are removed here.
        if let Ok(read) = std::fs::read_dir(&work) {
            for entry in read.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().into_owned();
                let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                    let _ = remove_dir(&entry.path());
                }
            }
        }
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dir = work.join(format!("{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(WorkDir { path: dir })
    }

    pub fn list(&self) -> anyhow::Result<Vec<Listing>> {
        let mut out = Vec::new();
        let kinds = KEYED
            .iter()
            .map(|&(kind, sub, _)| (kind, sub))
            .chain([("artifact", "artifacts")]);
        for (kind, sub) in kinds {
            let mut entries: Vec<_> = std::fs::read_dir(self.root.join(sub))
                .with_context(|| format!("reading {}", self.root.join(sub).display()))?
                .filter_map(Result::ok)
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.contains('.') {
                    continue; // locks and leftovers
                }
                let path = entry.path();
                let description = std::fs::read_to_string(path.join("description"))
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                let last_used = std::fs::metadata(path.join("last-used"))
                    .or_else(|_| std::fs::metadata(&path))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs());
                out.push(Listing {
                    kind,
                    key: name,
                    bytes: disk_usage(&path),
                    last_used,
                    description,
                });
            }
        }
        Ok(out)
    }

    /// Removes entries not used for `older_than` (all with `None`), leftovers of
    /// interrupted builds, and downloads. Returns what was removed.
    pub fn prune(&self, older_than: Option<Duration>) -> anyhow::Result<Vec<String>> {
        let mut removed = Vec::new();
        let now = SystemTime::now();
        for listing in self.list()? {
            let stale = match (older_than, listing.last_used) {
                (None, _) => true,
                (Some(age), Some(used)) => {
                    let used = SystemTime::UNIX_EPOCH + Duration::from_secs(used);
                    now.duration_since(used).unwrap_or_default() > age
                }
                (Some(_), None) => true,
            };
            if !stale {
                continue;
            }
            if let Some(&(_, sub, _)) = KEYED.iter().find(|k| k.0 == listing.kind) {
                let lock_path = self.root.join(sub).join(format!("{}.lock", listing.key));
                let lock = open_lock(&lock_path)?;
                lock.lock()
                    .with_context(|| format!("locking {}", lock_path.display()))?;
                remove_dir(&self.root.join(sub).join(&listing.key))?;
                remove_leftovers(&self.root.join(sub), &listing.key)?;
            } else {
                std::fs::remove_file(self.root.join("artifacts").join(&listing.key))?;
            }
            removed.push(format!("{} {}", listing.kind, listing.key));
        }
        Ok(removed)
    }
}

/// A build's scratch directory, deleted on drop.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = remove_dir(&self.path);
    }
}

fn open_lock(path: &Path) -> anyhow::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening lock {}", path.display()))
}

/// Removes `KEY.tmp-*` directories (only called with the key's lock held).
fn remove_leftovers(dir: &Path, key: &str) -> anyhow::Result<()> {
    let prefix = format!("{key}.tmp-");
    for entry in std::fs::read_dir(dir)?.filter_map(Result::ok) {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            tracing::info!(
                "removing leftover of an interrupted build: {}",
                entry.path().display()
            );
            remove_dir(&entry.path())?;
        }
    }
    Ok(())
}

/// Removes a directory tree. A package-stage tree whose mmdebstrap was killed
/// can still have `proc`, `sys` and `dev/pts` mounted inside: those are
/// unmounted first, and nothing is deleted while a mount remains below `path`.
fn remove_dir(path: &Path) -> anyhow::Result<()> {
    let mounts = mounts_below(path);
    for mount in &mounts {
        Task::new("unmounting a leftover of an interrupted build", "umount")
            .package("mount")
            .arg("--lazy")
            .arg(mount)
            .run()?;
    }
    if let Some(mount) = mounts_below(path).first() {
        anyhow::bail!(
            "refusing to remove {}: {} is still mounted",
            path.display(),
            mount.display()
        );
    }
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Mount points at or below `path`, deepest first.
fn mounts_below(path: &Path) -> Vec<PathBuf> {
    let Ok(base) = std::fs::canonicalize(path) else {
        return Vec::new();
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mount(m)))
        .filter(|m| m.starts_with(&base))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    mounts.dedup();
    mounts
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            if let Ok(byte) = u8::from_str_radix(&code, 8) {
                out.push(byte as char);
                continue;
            }
            out.push(c);
            out.push_str(&code);
        } else {
            out.push(c);
        }
    }
    out
}

fn touch(path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, b"").with_context(|| format!("writing {}", path.display()))
}

/// Bytes in the regular files under `path`.
pub fn disk_usage(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.path().symlink_metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

pub fn short(key: &str) -> &str {
    &key[..key.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_build_leaves_no_entry_and_reuse_skips_build() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let err = cache
            .rootfs("k1", false, |tmp| {
                std::fs::create_dir_all(tmp.join("tree")).unwrap();
                anyhow::bail!("boom")
            })
            .unwrap_err();
        assert!(err.to_string().contains("boom"));
        assert!(!dir.path().join("rootfs/k1").exists());
        let entry = cache
            .rootfs("k1", false, |tmp| {
                std::fs::create_dir_all(tmp.join("tree")).map_err(Into::into)
            })
            .unwrap();
        assert!(entry.built);
        drop(entry);
        let entry = cache
            .rootfs("k1", false, |_| anyhow::bail!("must not rebuild"))
            .unwrap();
        assert!(!entry.built);
        drop(entry);
        // A leftover from a killed build is not trusted and is cleaned up.
        std::fs::create_dir_all(dir.path().join("rootfs/k2.tmp-99999/tree")).unwrap();
        let entry = cache
            .rootfs("k2", false, |tmp| {
                std::fs::create_dir_all(tmp.join("tree")).map_err(Into::into)
            })
            .unwrap();
        assert!(entry.built);
        assert!(!dir.path().join("rootfs/k2.tmp-99999").exists());
        drop(entry);
        assert_eq!(cache.list().unwrap().len(), 2);
        assert_eq!(cache.prune(None).unwrap().len(), 2);
        assert!(cache.list().unwrap().is_empty());
    }
}
