//! Files and directories mkosi picks up by name in each configuration
//! directory (`path_suffixes` and `recursive_path_suffixes` in mkosi's settings
//! table), and the setting each one feeds.

/// How a default path becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The path itself.
    Path,
    /// The file's contents, trimmed (`mkosi.version`).
    Text,
    /// Every file in the directory, in lexical order, whose name ends with
    /// the given suffix (`mkosi.build.d/*`, `mkosi.uki-profiles/*.conf`).
    Entries(&'static str),
    /// Only reported: the value is a secret the summary must not show.
    Secret,
}

use Source::{Path, Secret, Text};

/// `mkosi.NAME` paths other than scripts: (NAME, setting, source).
const PATHS: &[(&str, &str, Source)] = &[
    ("snapshot", "Snapshot", Text),
    ("output", "OutputDirectory", Path),
    ("version", "ImageVersion", Text),
    ("repart", "RepartDirectories", Path),
    ("seed", "Seed", Text),
    ("packages", "PackageDirectories", Path),
    ("skeleton", "SkeletonTrees", Path),
    ("skeleton.tar", "SkeletonTrees", Path),
    ("extra", "ExtraTrees", Path),
    ("extra.tar", "ExtraTrees", Path),
    (
        "uki-profiles",
        "UnifiedKernelImageProfiles",
        Source::Entries(".conf"),
    ),
    ("rootpw", "RootPassword", Secret),
    ("machine-id", "MachineId", Text),
    ("key", "SecureBootKey", Path),
    ("crt", "SecureBootCertificate", Path),
    ("key", "VerityKey", Path),
    ("crt", "VerityCertificate", Path),
    ("key", "SignExpectedPcrKey", Path),
    ("crt", "SignExpectedPcrCertificate", Path),
    ("passphrase", "Passphrase", Path),
    ("tools", "ToolsTree", Path),
    ("sandbox", "SandboxTrees", Path),
    ("sandbox.tar", "SandboxTrees", Path),
    ("pkgmngr", "SandboxTrees", Path),
    ("pkgmngr.tar", "SandboxTrees", Path),
    ("cache", "CacheDirectory", Path),
    ("pkgcache", "PackageCacheDirectory", Path),
    ("builddir", "BuildDirectory", Path),
    ("env", "EnvironmentFiles", Path),
    ("nspawn", "NSpawnSettings", Path),
    ("credentials", "Credentials", Path),
    ("key", "SshKey", Path),
    ("crt", "SshCertificate", Path),
    ("sysupdate", "SysupdateDirectory", Path),
];

/// Scripts: `mkosi.NAME`, then `mkosi.NAME.chroot` for the scripts in
/// [`CHROOT`], then every file in `mkosi.NAME.d/` (not for configure scripts).
const SCRIPTS: &[(&str, &str)] = &[
    ("configure", "ConfigureScripts"),
    ("clean", "CleanScripts"),
    ("sync", "SyncScripts"),
    ("prepare", "PrepareScripts"),
    ("build", "BuildScripts"),
    ("postinst", "PostInstallationScripts"),
    ("finalize", "FinalizeScripts"),
    ("postoutput", "PostOutputScripts"),
];

const CHROOT: &[&str] = &["prepare", "build", "postinst", "finalize"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultPath {
    /// The file or directory name, `mkosi.` included.
    pub name: String,
    pub setting: &'static str,
    pub source: Source,
}

/// Every default path, grouped by setting in mkosi's order for each setting.
pub fn default_paths() -> Vec<DefaultPath> {
    let mut out = Vec::new();
    let mut add = |name: String, setting: &'static str, source: Source| {
        out.push(DefaultPath {
            name,
            setting,
            source,
        })
    };
    for (name, setting) in SCRIPTS {
        add(format!("mkosi.{name}"), setting, Path);
        if CHROOT.contains(name) {
            add(format!("mkosi.{name}.chroot"), setting, Path);
        }
        if *name != "configure" {
            add(format!("mkosi.{name}.d"), setting, Source::Entries(""));
        }
    }
    for (name, setting, source) in PATHS {
        add(format!("mkosi.{name}"), setting, *source);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::settings::lookup;

    #[test]
    fn default_paths_name_settings() {
        let all = default_paths();
        for p in &all {
            assert!(lookup(p.setting).is_some(), "{}", p.setting);
        }
        let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
        assert!(names.contains(&"mkosi.postinst.chroot"));
        assert!(names.contains(&"mkosi.build.d"));
        assert!(!names.contains(&"mkosi.configure.d"));
    }
}
