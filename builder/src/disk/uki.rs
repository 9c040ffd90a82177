//! Unified kernel images: systemd's EFI stub plus `.osrel`, `.cmdline`,
//! `.uname`, `.initrd` and `.linux` sections, added with `objcopy`.
//!
//! Bookworm has no `ukify` (systemd 252), so this is the recipe from the
//! systemd-stub documentation: each new section gets a virtual address past
//! the stub's last section, aligned to the stub's section alignment
//! (`--change-section-vma`), with `.linux` last.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use globular_task::Task;

/// Where Debian's systemd-boot-efi installs the stub and the boot loader.
pub const DEFAULT_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
pub const DEFAULT_SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// What goes into one UKI.
#[derive(Debug, Clone)]
pub struct UkiInput<'a> {
    pub stub: &'a Path,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub cmdline: &'a str,
    pub os_release: &'a str,
    /// `uname -r` of the kernel, if known (`.uname` section).
    pub uname: Option<&'a str>,
    /// The PE header's timestamp (objcopy would write the current time).
    pub source_date_epoch: u64,
}

/// The end (highest VMA + size) and section alignment of a PE file.
fn stub_layout(stub: &Path) -> anyhow::Result<(u64, u64)> {
    let sections = Task::new("reading the EFI stub's sections", "objdump")
        .package("binutils")
        .arg("-h")
        .arg(stub)
        .read_string()?;
    let mut end = 0u64;
    for line in sections.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() == 7 && fields[0].parse::<u32>().is_ok() {
            let size = u64::from_str_radix(fields[2], 16)
                .with_context(|| format!("{}: section size `{}`", stub.display(), fields[2]))?;
            let vma = u64::from_str_radix(fields[3], 16)
                .with_context(|| format!("{}: section VMA `{}`", stub.display(), fields[3]))?;
            end = end.max(vma + size);
        }
    }
    let headers = Task::new("reading the EFI stub's headers", "objdump")
        .package("binutils")
        .arg("-p")
        .arg(stub)
        .read_string()?;
    let align = headers
        .lines()
        .find_map(|l| l.strip_prefix("SectionAlignment"))
        .map(|v| u64::from_str_radix(v.trim(), 16))
        .transpose()
        .with_context(|| format!("{}: SectionAlignment", stub.display()))?
        .unwrap_or(0x1000)
        .max(0x1000);
    if end == 0 {
        bail!("{}: no sections (not a PE file?)", stub.display());
    }
    Ok((end, align))
}

/// Builds the UKI at `out`. `scratch` holds the small section files.
pub fn build(input: &UkiInput<'_>, out: &Path, scratch: &Path) -> anyhow::Result<()> {
    if !input.stub.is_file() {
        bail!(
            "EFI stub {} not found (install the Debian package `systemd-boot-efi`)",
            input.stub.display()
        );
    }
    let (mut end, align) = stub_layout(input.stub)?;
    let write = |name: &str, bytes: &[u8]| -> anyhow::Result<PathBuf> {
        let path = scratch.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    let mut cmdline = input.cmdline.trim().to_owned();
    cmdline.push('\n');
    let mut sections: Vec<(&str, PathBuf)> = vec![
        (".osrel", write("uki-osrel", input.os_release.as_bytes())?),
        (".cmdline", write("uki-cmdline", cmdline.as_bytes())?),
    ];
    if let Some(uname) = input.uname {
        sections.push((".uname", write("uki-uname", uname.as_bytes())?));
    }
    sections.push((".initrd", input.initrd.to_owned()));
    sections.push((".linux", input.kernel.to_owned()));

    let mut task = Task::new("building the unified kernel image", "objcopy").package("binutils");
    for (name, path) in &sections {
        let size = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        let vma = end.next_multiple_of(align);
        end = vma + size;
        task = task
            .arg("--add-section")
            .arg(format!("{name}={}", path.display()))
            .arg("--change-section-vma")
            .arg(format!("{name}={vma:#x}"));
    }
    task.arg(input.stub).arg(out).run()?;
    set_pe_timestamp(out, input.source_date_epoch)
}

/// Sets the COFF header's TimeDateStamp and recomputes the PE checksum, so the
/// UKI does not depend on when it was built.
fn set_pe_timestamp(pe: &Path, epoch: u64) -> anyhow::Result<()> {
    let mut bytes = std::fs::read(pe).with_context(|| format!("reading {}", pe.display()))?;
    let field = |bytes: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let lfanew = field(&bytes, 0x3c).context("short DOS header")? as usize;
    if bytes.get(lfanew..lfanew + 4) != Some(b"PE\0\0".as_slice()) {
        bail!("{}: no PE signature", pe.display());
    }
    let timestamp = lfanew + 8;
    let checksum = lfanew + 24 + 64;
    if bytes.len() < checksum + 4 {
        bail!("{}: truncated PE header", pe.display());
    }
    let epoch = u32::try_from(epoch).unwrap_or(u32::MAX);
    bytes[timestamp..timestamp + 4].copy_from_slice(&epoch.to_le_bytes());
    bytes[checksum..checksum + 4].fill(0);
    let sum = pe_checksum(&bytes);
    bytes[checksum..checksum + 4].copy_from_slice(&sum.to_le_bytes());
    std::fs::write(pe, bytes).with_context(|| format!("writing {}", pe.display()))
}

/// The PE image checksum (as `CheckSumMappedFile` computes it), with the
/// checksum field already zeroed.
fn pe_checksum(bytes: &[u8]) -> u32 {
    let mut sum: u64 = 0;
    for chunk in bytes.chunks(2) {
        let word = u64::from(chunk[0]) | u64::from(chunk.get(1).copied().unwrap_or(0)) << 8;
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    (sum + bytes.len() as u64) as u32
}

/// Reads one section of a PE file (e.g. `.cmdline` of a UKI).
pub fn read_section(pe: &Path, section: &str, scratch: &Path) -> anyhow::Result<Vec<u8>> {
    let out = scratch.join(format!("section{section}"));
    Task::new(format!("reading section {section}"), "objcopy")
        .package("binutils")
        .args(["-O", "binary", "--only-section"])
        .arg(section)
        .arg(pe)
        .arg(&out)
        .run()?;
    let bytes = std::fs::read(&out).with_context(|| format!("reading {}", out.display()))?;
    std::fs::remove_file(&out).ok();
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pe_checksum_matches_the_stub() {
        // The stub's header checksum is what objdump reports for it.
        let stub = Path::new(DEFAULT_STUB);
        let Ok(mut bytes) = std::fs::read(stub) else {
            return; // systemd-boot-efi not installed: covered by the disk tests
        };
        let lfanew = u32::from_le_bytes(bytes[0x3c..0x40].try_into().unwrap()) as usize;
        let at = lfanew + 24 + 64;
        let stored = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        bytes[at..at + 4].fill(0);
        assert_eq!(pe_checksum(&bytes), stored);
    }
}
