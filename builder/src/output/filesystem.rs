//! Read-only filesystem images of a tree: erofs and squashfs, written from a
//! directory by their own tools (no mounts).

use std::path::Path;

use globular_task::Task;

/// `mkfs.erofs` with a fixed UUID and timestamp.
pub fn write_erofs(
    tree: &Path,
    dest: &Path,
    compression: &str,
    epoch: u64,
    uuid: &str,
) -> anyhow::Result<()> {
    let mut task = Task::new("writing the erofs image", "mkfs.erofs")
        .package("erofs-utils")
        .arg(format!("-T{epoch}"))
        .arg(format!("-U{uuid}"))
        .arg("--quiet");
    if compression != "none" {
        task = task.arg(format!("-z{compression}"));
    }
    task.arg(dest).arg(tree).run()?;
    Ok(())
}

/// `mksquashfs` with fixed timestamps; squashfs-tools sorts entries itself.
pub fn write_squashfs(
    tree: &Path,
    dest: &Path,
    compression: &str,
    epoch: u64,
) -> anyhow::Result<()> {
    let mut task = Task::new("writing the squashfs image", "mksquashfs")
        .package("squashfs-tools")
        .arg(tree)
        .arg(dest)
        .args(["-noappend", "-no-progress", "-quiet", "-no-hardlinks"])
        .args([
            "-mkfs-time",
            &epoch.to_string(),
            "-all-time",
            &epoch.to_string(),
        ]);
    task = match compression {
        "none" => task.args(["-noI", "-noD", "-noF", "-noX"]),
        // mksquashfs's default zstd level (15) writes the worker tree ~20x
        // slower for ~12% less size; level 3 is the measured sweet spot.
        "zstd" => task.args(["-comp", "zstd", "-Xcompression-level", "3"]),
        other => task.args(["-comp", other]),
    };
    task.run()?;
    Ok(())
}
