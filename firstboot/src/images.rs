//! `globular image import`: OCI archives (the builder's `Format=oci`) into
//! the node's containerd, in the namespace Kubernetes' CRI uses, so pods
//! run them with no registry. An image directory
//! (`/usr/share/globular/images`, [`IMAGES_DIR`]) is imported at every boot
//! by `globular-images.service`.
//!
//! Each archive is read before containerd sees it: an OCI layout whose
//! `index.json` names the image (`io.containerd.image.name`), or an error
//! that names the file and what is wrong. containerd then checks every
//! blob's digest as it imports.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use globular_task::Task;

/// Where images carry OCI archives to import at boot.
pub const IMAGES_DIR: &str = "/usr/share/globular/images";
/// containerd's socket on a node.
pub const CONTAINERD_ADDRESS: &str = "/run/containerd/containerd.sock";
/// The containerd namespace of Kubernetes' CRI.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// The largest `index.json` read from an archive.
const INDEX_LIMIT: u64 = 1 << 20;

/// Where containerd listens and which namespace gets the images.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: PathBuf,
    pub namespace: String,
}

/// The image name an OCI archive's index gives (`localhost/NAME:VERSION`).
pub fn name_of(archive: &Path) -> anyhow::Result<String> {
    let file =
        std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    let mut index = None;
    let mut layout = false;
    let entries = tar
        .entries()
        .with_context(|| format!("{}: not a tar archive", archive.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("{}: not a tar archive", archive.display()))?;
        let path = entry
            .path()
            .with_context(|| format!("{}: an entry's name", archive.display()))?
            .to_path_buf();
        let path = path.strip_prefix("./").unwrap_or(&path).to_path_buf();
        if path == Path::new("oci-layout") {
            layout = true;
        } else if path == Path::new("index.json") {
            if entry.size() > INDEX_LIMIT {
                bail!(
                    "{}: index.json is {} bytes, more than {INDEX_LIMIT}",
                    archive.display(),
                    entry.size()
                );
            }
            let value: serde_json::Value = serde_json::from_reader(entry)
                .with_context(|| format!("{}: index.json is not JSON", archive.display()))?;
            index = Some(value);
        }
    }
    if !layout {
        bail!(
            "{}: no oci-layout file: not an OCI archive (the builder's Format=oci writes one)",
            archive.display()
        );
    }
    let index = index
        .with_context(|| format!("{}: no index.json: not an OCI archive", archive.display()))?;
    let manifests = index["manifests"]
        .as_array()
        .with_context(|| format!("{}: index.json has no manifests list", archive.display()))?;
    let names: Vec<&str> = manifests
        .iter()
        .filter_map(|m| m["annotations"]["io.containerd.image.name"].as_str())
        .collect();
    match names.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => bail!(
            "{}: index.json: no manifest has an io.containerd.image.name annotation",
            archive.display()
        ),
        _ => bail!(
            "{}: index.json names {} images; one archive, one image",
            archive.display(),
            names.len()
        ),
    }
}

/// The `*.oci.tar` files of `dir` in name order (none when it is missing).
pub fn archives_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.to_string_lossy().ends_with(".oci.tar") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Imports each archive into containerd; the names, one line each. Every
/// archive is checked before the first is imported.
pub fn import(archives: &[PathBuf], target: &Target) -> anyhow::Result<String> {
    let mut named = Vec::new();
    for archive in archives {
        named.push((archive, name_of(archive)?));
    }
    let mut out = String::new();
    for (archive, name) in named {
        Task::new(
            format!("importing {} into containerd", archive.display()),
            "ctr",
        )
        .package("containerd")
        .arg("--address")
        .arg(&target.address)
        .args(["--namespace", &target.namespace, "images", "import"])
        .arg(archive)
        .read_string()
        .with_context(|| format!("importing {}", archive.display()))?;
        tracing::info!("imported {name} from {}", archive.display());
        out += &format!("imported {name} ({})\n", archive.display());
    }
    if out.is_empty() {
        out = "no images to import\n".into();
    }
    Ok(out)
}
