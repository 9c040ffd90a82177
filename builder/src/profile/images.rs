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

/// The sub-images the main image's `Dependencies=` names, with the ones they
/// depend on in turn (`deps`), in the order they were read; `Err` names one
/// that does not exist.
pub fn select<C>(
    subimages: Vec<(String, C)>,
    wanted: &[String],
    deps: impl Fn(&C) -> &[String],
) -> Result<Vec<(String, C)>, String> {
    let mut selected: Vec<String> = Vec::new();
    let mut queue: Vec<String> = wanted.to_vec();
    while let Some(name) = queue.pop() {
        if selected.contains(&name) {
            continue;
        }
        let (_, image) = subimages
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| name.clone())?;
        queue.extend(deps(image).iter().cloned());
        selected.push(name);
    }
    Ok(subimages
        .into_iter()
        .filter(|(name, _)| selected.contains(name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::settings::lookup;

    struct Image(Vec<String>);

    #[test]
    fn dependencies_select_sub_images() {
        let image = |deps: &[&str]| Image(deps.iter().map(|d| d.to_string()).collect());
        let all = || {
            vec![
                ("a".to_owned(), image(&[])),
                ("b".to_owned(), image(&["a"])),
                ("c".to_owned(), image(&[])),
            ]
        };
        let names = |v: Vec<(String, Image)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(
            names(select(all(), &["b".into()], |i| &i.0).unwrap()),
            ["a", "b"]
        );
        assert_eq!(
            names(select(all(), &[], |i| &i.0).unwrap()),
            Vec::<String>::new()
        );
        assert_eq!(
            select(all(), &["x".into()], |i| &i.0).err(),
            Some("x".to_owned())
        );
    }

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
