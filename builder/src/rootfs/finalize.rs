//! The last changes to a tree before it is written out: settings that become
//! files (`Hostname=`, `Locale=`, `Timezone=`), unit presets, `RemoveFiles=`,
//! removal of build-host traces, and, for a directory output, timestamps
//! clamped to SOURCE_DATE_EPOCH (every other output's writer sets or clamps
//! them itself: `mkfs.erofs -T`, `mksquashfs -all-time`, the archive writers).

use std::path::Path;

use anyhow::Context as _;
use filetime::FileTime;
use globular_task::Task;

use super::clean;
use crate::overlay;

/// What finalizing needs from the profile.
#[derive(Debug, Clone, Default)]
pub struct Finalize {
    pub hostname: Option<String>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
    pub remove_files: Vec<String>,
    pub source_date_epoch: u64,
    /// Clamp every timestamp of the tree (a directory output). Other
    /// outputs leave it to their writers: walking the tree costs a fraction
    /// of a second for the worker image, and through an overlay it would
    /// copy up every file it changes.
    pub clamp_mtimes: bool,
}

pub fn finalize(tree: &Path, f: &Finalize) -> anyhow::Result<()> {
    if let Some(hostname) = &f.hostname {
        overlay::write_file(
            tree,
            Path::new("/etc/hostname"),
            format!("{hostname}\n").as_bytes(),
            0o644,
        )?;
    }
    if let Some(locale) = &f.locale {
        overlay::write_file(
            tree,
            Path::new("/etc/locale.conf"),
            format!("LANG={locale}\n").as_bytes(),
            0o644,
        )?;
        overlay::write_file(
            tree,
            Path::new("/etc/default/locale"),
            format!("LANG={locale}\n").as_bytes(),
            0o644,
        )?;
    }
    if let Some(zone) = &f.timezone {
        let zoneinfo = tree.join("usr/share/zoneinfo").join(zone);
        if !zoneinfo.exists() {
            anyhow::bail!(
                "Timezone={zone}: /usr/share/zoneinfo/{zone} is not in the image (install tzdata)"
            );
        }
        let localtime = overlay::resolve_in_root(tree, Path::new("/etc/localtime"), false)?;
        if localtime.symlink_metadata().is_ok() {
            std::fs::remove_file(&localtime)?;
        }
        std::os::unix::fs::symlink(format!("../usr/share/zoneinfo/{zone}"), &localtime)
            .with_context(|| format!("linking {}", localtime.display()))?;
        overlay::write_file(
            tree,
            Path::new("/etc/timezone"),
            format!("{zone}\n").as_bytes(),
            0o644,
        )?;
    }
    apply_presets(tree)?;
    for pattern in &f.remove_files {
        clean::remove_glob(tree, pattern).with_context(|| format!("RemoveFiles={pattern}"))?;
    }
    clean::scrub(tree)?;
    if f.clamp_mtimes {
        clamp_mtimes(tree, f.source_date_epoch)?;
    }
    Ok(())
}

/// Enables or disables the units named in the image's preset files
/// (`systemctl --root preset`), so overlays decide unit enablement through
/// presets rather than hand-made symlinks.
fn apply_presets(tree: &Path) -> anyhow::Result<()> {
    let mut units = Vec::new();
    for dir in ["usr/lib/systemd/system-preset", "etc/systemd/system-preset"] {
        let Ok(read) = std::fs::read_dir(tree.join(dir)) else {
            continue;
        };
        let mut files: Vec<_> = read.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for file in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "preset"))
        {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            for line in text.lines() {
                let mut words = line.split_whitespace();
                if let (Some("enable" | "disable"), Some(unit)) = (words.next(), words.next()) {
                    if !unit.contains(['*', '?', '[']) && !units.iter().any(|u| u == unit) {
                        units.push(unit.to_owned());
                    }
                }
            }
        }
    }
    if units.is_empty() {
        return Ok(());
    }
    let present: Vec<&String> = units
        .iter()
        .filter(|u| {
            [
                "usr/lib/systemd/system",
                "lib/systemd/system",
                "etc/systemd/system",
            ]
            .iter()
            .any(|d| tree.join(d).join(u).symlink_metadata().is_ok())
        })
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    Task::new("applying systemd presets", "systemctl")
        .package("systemd")
        .arg(format!("--root={}", tree.display()))
        .arg("preset")
        .args(present)
        .run()?;
    Ok(())
}

/// Sets every timestamp newer than `epoch` to `epoch` (symlinks included).
pub fn clamp_mtimes(tree: &Path, epoch: u64) -> anyhow::Result<()> {
    let time = FileTime::from_unix_time(epoch as i64, 0);
    for entry in walkdir::WalkDir::new(tree)
        .follow_links(false)
        .contents_first(true)
    {
        let entry = entry.with_context(|| format!("walking {}", tree.display()))?;
        let meta = entry.path().symlink_metadata()?;
        let mtime = FileTime::from_last_modification_time(&meta);
        if mtime.unix_seconds() > epoch as i64 || mtime.nanoseconds() != 0 {
            let clamped = if mtime.unix_seconds() >= epoch as i64 {
                time
            } else {
                FileTime::from_unix_time(mtime.unix_seconds(), 0)
            };
            filetime::set_symlink_file_times(entry.path(), clamped, clamped)
                .with_context(|| format!("setting the time of {}", entry.path().display()))?;
        }
    }
    Ok(())
}
