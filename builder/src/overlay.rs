//! Copying trees into an image root: `ExtraTrees=`, `mkosi.extra/`, `overlays/`.
//!
//! Paths are resolved the way they resolve inside the image: a symlinked parent
//! in the image (Debian's `/lib -> usr/lib`) is followed inside the image root,
//! and anything that would lead outside the root is refused with the offending
//! path named. Symlinks in a source tree are copied as symlinks, never followed;
//! files ending in `.tera` are rendered and lose the suffix. Copied entries are
//! owned by root and keep their permission bits.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _};

use globular_cluster::fsutil;

use crate::template;

/// Longest chain of symlinks followed while resolving one path.
const MAX_SYMLINK_HOPS: usize = 40;

/// A path that would leave the image root.
#[derive(Debug, thiserror::Error)]
#[error("{path} escapes the image root ({reason})")]
pub struct EscapeError {
    pub path: String,
    pub reason: String,
}

/// Resolves `image_path` (absolute or relative, inside the image) to a host path
/// under `root`. Symlinks met on the way are followed inside the image; with
/// `follow_last` false the final component is not followed (so it can be
/// replaced).
pub fn resolve_in_root(
    root: &Path,
    image_path: &Path,
    follow_last: bool,
) -> Result<PathBuf, EscapeError> {
    let escape = |reason: String| EscapeError {
        path: image_path.display().to_string(),
        reason,
    };
    let mut pending: VecDeque<(OsString, bool)> = VecDeque::new();
    let components: Vec<_> = image_path.components().collect();
    for (i, c) in components.iter().enumerate() {
        let last = i + 1 == components.len();
        match c {
            Component::Normal(name) => pending.push_back((name.to_os_string(), last)),
            Component::ParentDir => pending.push_back(("..".into(), last)),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let mut resolved: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some((name, last)) = pending.pop_front() {
        if name == ".." {
            if resolved.pop().is_none() {
                return Err(escape("'..' climbs above the root".into()));
            }
            continue;
        }
        let candidate: PathBuf = root.join(resolved.iter().collect::<PathBuf>()).join(&name);
        let is_link = candidate
            .symlink_metadata()
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if !is_link || (last && !follow_last) {
            resolved.push(name);
            continue;
        }
        hops += 1;
        if hops > MAX_SYMLINK_HOPS {
            return Err(escape("too many levels of symbolic links".into()));
        }
        let target = std::fs::read_link(&candidate).map_err(|e| escape(e.to_string()))?;
        // Relative targets resolve against the link's directory, which is
        // where `resolved` stands now; absolute ones against the image root.
        if target.is_absolute() {
            resolved.clear();
        }
        let mut inserted: Vec<(OsString, bool)> = Vec::new();
        let target_components: Vec<_> = target.components().collect();
        for (i, c) in target_components.iter().enumerate() {
            let target_last = last && i + 1 == target_components.len();
            match c {
                Component::Normal(n) => inserted.push((n.to_os_string(), target_last)),
                Component::ParentDir => inserted.push(("..".into(), target_last)),
                _ => {}
            }
        }
        for item in inserted.into_iter().rev() {
            pending.push_front(item);
        }
    }
    Ok(root.join(resolved.iter().collect::<PathBuf>()))
}

/// Copies `source` (a directory tree) into the image at `target` (an image path,
/// `/` by default), rendering `.tera` files with `context` (with a context;
/// without one every file is copied as it is).
pub fn copy_tree(
    source: &Path,
    root: &Path,
    target: &Path,
    context: Option<&tera::Context>,
) -> anyhow::Result<()> {
    if !source.is_dir() {
        bail!("{}: not a directory", source.display());
    }
    for entry in walkdir::WalkDir::new(source)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let entry = entry.with_context(|| format!("walking {}", source.display()))?;
        let rel = entry
            .path()
            .strip_prefix(source)
            .expect("walkdir stays under its root");
        let meta = entry
            .path()
            .symlink_metadata()
            .with_context(|| format!("reading {}", entry.path().display()))?;
        let kind = meta.file_type();
        let mode = meta.permissions().mode() & 0o7777;
        let mut image_path = target.join(rel);
        let rendered =
            if let Some(context) = context.filter(|_| kind.is_file() && has_template_suffix(rel)) {
                let text = std::fs::read_to_string(entry.path())
                    .with_context(|| format!("reading template {}", entry.path().display()))?;
                let out = template::render(&entry.path().to_string_lossy(), &text, context)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "{}:{}: template error: {}",
                            entry.path().display(),
                            e.line,
                            e.message
                        )
                    })?;
                image_path = strip_template_suffix(&image_path);
                Some(out)
            } else {
                None
            };
        if kind.is_dir() {
            let dest = resolve_in_root(root, &image_path, true)?;
            if dest.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
                std::fs::remove_file(&dest)
                    .with_context(|| format!("replacing {}", dest.display()))?;
            }
            if !dest.exists() {
                std::fs::create_dir(&dest)
                    .with_context(|| format!("creating {}", dest.display()))?;
                set_owner_mode(&dest, Some(mode))?;
            }
            continue;
        }
        let dest = resolve_in_root(root, &image_path, false)?;
        replace_existing(&dest)?;
        if kind.is_symlink() {
            let link_target = std::fs::read_link(entry.path())?;
            check_link_target(root, &image_path, &link_target)
                .with_context(|| format!("refusing symlink {}", entry.path().display()))?;
            symlink(&link_target, &dest)
                .with_context(|| format!("creating symlink {}", dest.display()))?;
            set_owner_mode(&dest, None)?;
        } else if kind.is_file() {
            match rendered {
                Some(text) => std::fs::write(&dest, text),
                None => std::fs::copy(entry.path(), &dest).map(drop),
            }
            .with_context(|| format!("writing {}", dest.display()))?;
            set_owner_mode(&dest, Some(mode))?;
        } else {
            bail!(
                "{}: only files, directories and symlinks can be copied into an image",
                entry.path().display()
            );
        }
    }
    Ok(())
}

/// Writes `contents` at `image_path` inside the image with `mode`, refusing
/// paths that leave the root.
pub fn write_file(
    root: &Path,
    image_path: &Path,
    contents: &[u8],
    mode: u32,
) -> anyhow::Result<()> {
    if !image_path.is_absolute() {
        bail!("{}: install paths must be absolute", image_path.display());
    }
    let dest = resolve_in_root(root, image_path, false)?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    replace_existing(&dest)?;
    std::fs::write(&dest, contents).with_context(|| format!("writing {}", dest.display()))?;
    set_owner_mode(&dest, Some(mode))
}

/// Copies the host file `source` to `image_path` inside the image with
/// `mode` (a new inode: the tree may share files with the cache), refusing
/// paths that leave the root.
pub fn install_file(
    root: &Path,
    image_path: &Path,
    source: &Path,
    mode: u32,
) -> anyhow::Result<()> {
    let dest = resolve_in_root(root, image_path, false)?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    replace_existing(&dest)?;
    std::fs::copy(source, &dest)
        .with_context(|| format!("copying {} to {}", source.display(), dest.display()))?;
    set_owner_mode(&dest, Some(mode))
}

/// Makes `link` inside the image a symlink to `target` (an image path).
pub fn install_symlink(root: &Path, link: &Path, target: &Path) -> anyhow::Result<()> {
    let dest = resolve_in_root(root, link, false)?;
    check_link_target(root, link, target)?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    replace_existing(&dest)?;
    symlink(target, &dest).with_context(|| format!("linking {}", dest.display()))?;
    let _ = std::os::unix::fs::lchown(&dest, Some(0), Some(0));
    Ok(())
}

/// Replaces the file at `path` (a host path inside an image tree) with
/// `contents` through a new inode ([`fsutil::write_atomic`]): the work tree
/// shares unchanged files with the package-stage cache by hard links, so
/// nothing may write into an existing file in place. Keeps the old mode (or
/// uses 0644).
pub fn replace_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mode = fsutil::existing_mode(path).unwrap_or(fsutil::PUBLIC);
    fsutil::write_atomic(path, contents, mode)
        .with_context(|| format!("replacing {}", path.display()))
}

/// A relative symlink whose target climbs above the image root is refused.
fn check_link_target(root: &Path, link: &Path, target: &Path) -> anyhow::Result<()> {
    if target.is_absolute() {
        return Ok(());
    }
    let mut depth: isize = link.parent().map_or(0, |p| {
        p.components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .count() as isize
    });
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            bail!(EscapeError {
                path: format!("{} -> {}", link.display(), target.display()),
                reason: format!("the target leaves {}", root.display()),
            });
        }
    }
    Ok(())
}

fn replace_existing(dest: &Path) -> anyhow::Result<()> {
    match dest.symlink_metadata() {
        Ok(m) if m.is_dir() => bail!("{}: a directory is in the way", dest.display()),
        Ok(_) => {
            std::fs::remove_file(dest).with_context(|| format!("replacing {}", dest.display()))
        }
        Err(_) => Ok(()),
    }
}

fn set_owner_mode(path: &Path, mode: Option<u32>) -> anyhow::Result<()> {
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    // Only root can give files away; an unprivileged build keeps the caller's ids.
    let _ = std::os::unix::fs::lchown(path, Some(0), Some(0));
    Ok(())
}

fn has_template_suffix(path: &Path) -> bool {
    path.to_string_lossy().ends_with(template::SUFFIX)
}

fn strip_template_suffix(path: &Path) -> PathBuf {
    let s = path.to_string_lossy();
    PathBuf::from(s.strip_suffix(template::SUFFIX).unwrap_or(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("usr/lib")).unwrap();
        symlink("usr/lib", dir.path().join("lib")).unwrap();
        symlink("/usr/lib", dir.path().join("abs")).unwrap();
        symlink("../../../..", dir.path().join("usr/up")).unwrap();
        dir
    }

    #[test]
    fn resolves_symlinked_parents_inside_the_root() {
        let r = root();
        let p = resolve_in_root(r.path(), Path::new("/lib/systemd/x"), false).unwrap();
        assert_eq!(p, r.path().join("usr/lib/systemd/x"));
        let p = resolve_in_root(r.path(), Path::new("/abs/x"), false).unwrap();
        assert_eq!(p, r.path().join("usr/lib/x"));
        let err = resolve_in_root(r.path(), Path::new("/usr/up/etc/passwd"), false).unwrap_err();
        assert!(err.to_string().contains("/usr/up/etc/passwd"), "{err}");
        assert!(resolve_in_root(r.path(), Path::new("../x"), false).is_err());
    }

    #[test]
    fn copies_renders_and_refuses_escapes() {
        let r = root();
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("lib/systemd")).unwrap();
        std::fs::write(src.path().join("lib/systemd/a.conf"), "x").unwrap();
        std::fs::write(src.path().join("hello.tera"), "hi {{ who }}").unwrap();
        symlink("/run/resolv.conf", src.path().join("resolv.conf")).unwrap();
        let mut context = tera::Context::new();
        context.insert("who", "there");
        copy_tree(src.path(), r.path(), Path::new("/"), Some(&context)).unwrap();
        assert_eq!(
            std::fs::read_to_string(r.path().join("usr/lib/systemd/a.conf")).unwrap(),
            "x"
        );
        assert_eq!(
            std::fs::read_to_string(r.path().join("hello")).unwrap(),
            "hi there"
        );
        assert_eq!(
            std::fs::read_link(r.path().join("resolv.conf")).unwrap(),
            PathBuf::from("/run/resolv.conf")
        );

        let bad = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(bad.path().join("etc")).unwrap();
        symlink("../../../../etc/shadow", bad.path().join("etc/leak")).unwrap();
        let err = copy_tree(bad.path(), r.path(), Path::new("/"), Some(&context)).unwrap_err();
        assert!(format!("{err:#}").contains("etc/leak"), "{err:#}");
    }
}
