//! The `qcow2` output: the raw disk converted by `qemu-img`.

use std::path::Path;

use globular_task::Task;

/// Converts the raw disk `raw` into a qcow2 image at `out` (a temp path the
/// caller renames). qemu-img writes no timestamps, so the result is as
/// reproducible as the raw image.
pub fn convert(raw: &Path, out: &Path) -> anyhow::Result<()> {
    Task::new("converting the disk image to qcow2", "qemu-img")
        .package("qemu-utils")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(out)
        .run()?;
    Ok(())
}

/// Converts a qcow2 (or any qemu-img format) image back to raw, for `inspect`.
pub fn to_raw(image: &Path, out: &Path) -> anyhow::Result<()> {
    Task::new("converting the disk image to raw", "qemu-img")
        .package("qemu-utils")
        .args(["convert", "-O", "raw"])
        .arg(image)
        .arg(out)
        .run()?;
    Ok(())
}

/// The format qemu-img detects (`raw`, `qcow2`, ...).
pub fn detect_format(image: &Path) -> anyhow::Result<String> {
    let out = Task::new("probing the disk image format", "qemu-img")
        .package("qemu-utils")
        .args(["info", "--output=json"])
        .arg(image)
        .read_string()?;
    let info: serde_json::Value = serde_json::from_str(&out)?;
    Ok(info["format"].as_str().unwrap_or("raw").to_owned())
}
