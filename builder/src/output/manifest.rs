//! `NAME.manifest.json`: what went into an image and what came out.
//! The schema is documented in docs/build.md.

use super::OutputFile;
use crate::artifacts::Artifact;
use crate::rootfs::Package;

/// Manifest schema version; bumped on incompatible changes.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub schema: u32,
    pub builder_version: String,
    pub image: Image,
    /// Digest of every input: profile, package stage, trees, scripts, artifacts.
    pub inputs_digest: String,
    pub source_date_epoch: u64,
    pub package_stage: PackageStageInfo,
    /// The resolved profile (mkosi names), paths relative to the source root.
    pub profile: serde_json::Value,
    pub packages: Vec<Package>,
    pub artifacts: Vec<ArtifactInfo>,
    /// Programs built from source (etcd, Kubernetes) and the Go modules in them.
    #[serde(default)]
    pub components: Vec<crate::components::Info>,
    pub outputs: Vec<OutputFile>,
    /// The host programs that wrote the outputs and their versions
    /// (`mkfs.erofs (erofs-utils) 1.8.6`): another version may write other
    /// bytes from the same inputs. Empty for the formats the builder writes
    /// itself (tar, cpio, oci, directory).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tools: std::collections::BTreeMap<String, String>,
    /// For `disk`/`qcow2`: the partition table, verity root hash and UKI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<serde_json::Value>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Image {
    pub name: String,
    pub id: Option<String>,
    pub role: Option<String>,
    pub version: String,
    pub distribution: String,
    pub release: String,
    pub architecture: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PackageStageInfo {
    /// Cache key of the package stage.
    pub key: String,
    pub mmdebstrap: String,
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ArtifactInfo {
    pub name: String,
    pub sha256: String,
    pub install: String,
    pub mode: String,
    /// The URL, or the path relative to the lock file.
    pub source: String,
}

impl From<&Artifact> for ArtifactInfo {
    fn from(a: &Artifact) -> Self {
        ArtifactInfo {
            name: a.name.clone(),
            sha256: a.sha256.clone(),
            install: a.install.display().to_string(),
            mode: a.mode.clone(),
            source: a
                .url
                .clone()
                .or_else(|| a.path.as_ref().map(|p| p.display().to_string()))
                .unwrap_or_default(),
        }
    }
}
