//! How settings pass between the main image and the sub-images of
//! `mkosi.images/` (mkosi(1), "BUILDING MULTIPLE IMAGES"; `SettingScope` in
//! mkosi's settings table).

use super::settings::{Section, Setting};

/// Set once for the main image and every sub-image; a sub-image may not set them.
const UNIVERSAL: &[&str] = &[
    "Architecture",
    "BuildDirectory",
    "CacheDirectory",
    "Distribution",
    "ExtraSearchPaths",
    "Incremental",
    "LocalMirror",
    "Mirror",
    "OutputDirectory",
    "OutputMode",
    "PackageDirectories",
    "Release",
    "RepartOffline",
    "Repositories",
    "RepositoryKeyFetch",
    "SandboxTrees",
    "ToolsTree",
    "ToolsTreeCertificates",
    "UseSubvolumes",
    "SecureBootCertificate",
    "SecureBootCertificateSource",
    "SecureBootKey",
    "SecureBootKeySource",
    "VerityCertificate",
    "VerityCertificateSource",
    "VerityKey",
    "VerityKeySource",
    "VolatilePackageDirectories",
    "WithNetwork",
    "WithTests",
];

/// Shared by the main image, the tools tree and every sub-image.
const MULTIVERSAL: &[&str] = &[
    "RepositoryKeyCheck",
    "SourceDateEpoch",
    "CacheOnly",
    "WorkspaceDirectory",
    "PackageCacheDirectory",
    "BuildSources",
    "BuildSourcesEphemeral",
    "ProxyClientCertificate",
    "ProxyClientKey",
    "ProxyExclude",
    "ProxyPeerCertificate",
    "ProxyUrl",
];

/// Passed down to sub-images, which may override them.
const INHERIT: &[&str] = &[
    "Profiles",
    "ImageId",
    "ImageVersion",
    "SectorSize",
    "CacheKey",
    "BuildKey",
    "CompressLevel",
    "SignExpectedPcrKey",
    "SignExpectedPcrKeySource",
    "SignExpectedPcrCertificate",
    "SignExpectedPcrCertificateSource",
];

/// Only the main image sets these (with every `[Runtime]` setting).
const MAIN_ONLY: &[&str] = &[
    "MinimumVersion",
    "PassEnvironment",
    "ToolsTreeDistribution",
    "ToolsTreeRelease",
    "ToolsTreeProfiles",
    "ToolsTreeMirror",
    "ToolsTreeRepositories",
    "ToolsTreeSandboxTrees",
    "ToolsTreePackages",
    "ToolsTreePackageDirectories",
    "History",
];

/// The main image's value is forced on every sub-image.
pub fn is_universal(setting: &Setting) -> bool {
    UNIVERSAL.contains(&setting.name) || MULTIVERSAL.contains(&setting.name)
}

/// The main image's value is where a sub-image starts.
pub fn is_inherited(setting: &Setting) -> bool {
    INHERIT.contains(&setting.name)
}

/// A sub-image may not set it.
pub fn main_only(setting: &Setting) -> bool {
    setting.section == Section::Runtime
        || MAIN_ONLY.contains(&setting.name)
        || is_universal(setting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::settings::lookup;

    #[test]
    fn scopes_name_settings() {
        for name in UNIVERSAL
            .iter()
            .chain(MULTIVERSAL)
            .chain(INHERIT)
            .chain(MAIN_ONLY)
        {
            assert!(lookup(name).is_some(), "{name}");
        }
    }
}
