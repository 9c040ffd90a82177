//! The build's private image tree over a cached package stage.
//!
//! Everything after the package stage (build-script output, extra trees,
//! post-installation scripts, finalize) writes into a tree that must not
//! change the cache entry it came from. Three ways, cheapest first:
//! - **overlay** (the default): an overlayfs mount with the cached tree as
//!   its read-only lower layer and an upper layer in the build's work
//!   directory. Nothing is copied: a file is copied up when something writes
//!   it, in place or not, so post-installation scripts may write anywhere
//!   (mkosi builds the same way). `index=on` keeps a hard-linked file's names
//!   together when one of them is written, as a copy would.
//! - **hard links** (`cp -al`), when overlayfs cannot be mounted and nothing
//!   writes in place: every writer of the builder replaces files through a
//!   new inode (overlay::replace_file), and there are no post-installation
//!   scripts.
//! - **copy** (`cp -a`): a directory output (handed to the user, so it must
//!   be a real tree), or post-installation scripts without overlayfs.
//!
//! All three give the same tree, so the same image (a test builds one
//! profile each way and compares the bytes).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use globular_task::Task;

use super::cache::Entry;

/// How the work tree may be made (`builder build --work-tree`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// overlayfs where it can be mounted, else a copy.
    #[default]
    Overlay,
    /// Always a copy: hard links when that is safe, else `cp -a`.
    Copy,
}

impl Mode {
    pub fn parse(text: &str) -> anyhow::Result<Mode> {
        match text {
            "overlay" => Ok(Mode::Overlay),
            "copy" => Ok(Mode::Copy),
            other => bail!("--work-tree {other:?}: expected overlay or copy"),
        }
    }
}

/// What the work tree is used for.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// The tree becomes the output itself (`Format=directory`).
    pub real_tree: bool,
    /// Scripts that may write files in place run on it.
    pub writes_in_place: bool,
}

/// A work tree; dropping it unmounts an overlay, then releases the cache
/// entry it was made from.
#[derive(Debug)]
pub struct WorkTree {
    path: PathBuf,
    how: &'static str,
    mounted: bool,
    /// Held (shared lock) while the overlay uses the entry as its lower
    /// layer: `cache prune` waits.
    _entry: Entry,
}

impl WorkTree {
    /// Makes `work/tree` from `entry`'s tree.
    pub fn new(entry: Entry, work: &Path, mode: Mode, needs: Needs) -> anyhow::Result<WorkTree> {
        let path = work.join("tree");
        if mode == Mode::Overlay && !needs.real_tree {
            match mount_overlay(&entry, work, &path) {
                Ok(()) => {
                    return Ok(WorkTree {
                        path,
                        how: "overlay",
                        mounted: true,
                        _entry: entry,
                    })
                }
                Err(err) => {
                    tracing::warn!(
                        "overlayfs is not usable here ({err:#}); copying the package tree instead"
                    );
                    let _ = std::fs::remove_dir(&path);
                }
            }
        }
        let (how, args) = if needs.real_tree || needs.writes_in_place {
            ("copy", &["-a", "--reflink=auto"][..])
        } else {
            ("hard links", &["-al"][..])
        };
        Task::new("copying the cached package tree", "cp")
            .package("coreutils")
            .args(args)
            .arg(entry.tree())
            .arg(&path)
            .run()?;
        Ok(WorkTree {
            path,
            how,
            mounted: false,
            _entry: entry,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// "overlay", "hard links" or "copy".
    pub fn how(&self) -> &'static str {
        self.how
    }
}

impl Drop for WorkTree {
    fn drop(&mut self) {
        if self.mounted {
            // The work directory's removal unmounts (lazily) what is left.
            if let Err(err) = Task::new("unmounting the work tree", "umount")
                .package("mount")
                .arg(&self.path)
                .run()
            {
                tracing::warn!("{err:#}");
            }
        }
    }
}

fn mount_overlay(entry: &Entry, work: &Path, merged: &Path) -> anyhow::Result<()> {
    let lower = entry.tree();
    let upper = work.join("upper");
    let scratch = work.join("overlay-work");
    for dir in [&upper, &scratch, &merged.to_path_buf()] {
        std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // overlayfs' option list separates with `,` and `:` and escapes with
    // `\`: such paths are not passed.
    for dir in [&lower, &upper, &scratch] {
        let text = dir.to_string_lossy();
        if text.contains([',', ':', '\\']) {
            bail!("{text} contains `,`, `:` or `\\`, which overlayfs options cannot hold");
        }
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={},index=on",
        lower.display(),
        upper.display(),
        scratch.display()
    );
    // `volatile` (Linux 5.10+): the upper layer is thrown away with the
    // build, so nothing needs it on disk. Without it, unmounting syncs the
    // whole filesystem under the work directory, the image just written
    // included (about a second for the worker image).
    let mount = |options: &str| {
        Task::new("mounting the work tree (overlayfs)", "mount")
            .package("mount")
            .args(["-t", "overlay", "overlay", "-o", options])
            .arg(merged)
            .run()
    };
    if let Err(err) = mount(&format!("{options},volatile")) {
        tracing::debug!("overlayfs without `volatile` ({err})");
        mount(&options)?;
    }
    Ok(())
}
