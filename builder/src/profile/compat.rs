//! Names mkosi still reads but no longer documents, and settings it retired.
//!
//! From mkosi's settings table (`compat_names` in mkosi/config.py, v26) and the
//! settings it dropped. An older name assigns the setting it names; mkosi warns
//! that its own compat names are deprecated, and so does the builder. A retired
//! setting is ignored with a warning, as mkosi ignores unknown settings.

use super::settings::{self, Setting};

/// Compat names: older spellings mkosi reads as the setting named second and
/// warns about ("Setting X is deprecated, please use Y instead").
pub const DEPRECATED: &[(&str, &str)] = &[
    ("Profile", "Profiles"),
    ("PrepareScript", "PrepareScripts"),
    ("BuildScript", "BuildScripts"),
    ("PostInstallationScript", "PostInstallationScripts"),
    ("FinalizeScript", "FinalizeScripts"),
    ("Devicetree", "Devicetrees"),
    ("PackageManagerTrees", "SandboxTrees"),
    ("ToolsTreePackageManagerTrees", "ToolsTreeSandboxTrees"),
    ("QemuSmp", "CPUs"),
    ("QemuMem", "RAM"),
    ("QemuKvm", "KVM"),
    ("QemuVsock", "VSock"),
    ("QemuVsockConnectionId", "VSockCID"),
    ("QemuSwtpm", "TPM"),
    ("QemuRemovable", "Removable"),
    ("QemuFirmware", "Firmware"),
    ("QemuFirmwareVariables", "FirmwareVariables"),
    ("QemuKernel", "Linux"),
    ("QemuDrives", "Drives"),
];

/// Older names mkosi keeps as settings of their own filling the same value
/// (module and firmware lists); read without a warning.
pub const SAME_VALUE: &[(&str, &str)] = &[
    ("KernelModulesInclude", "KernelModules"),
    ("KernelModulesInitrdInclude", "KernelInitrdModules"),
    ("FirmwareInclude", "FirmwareFiles"),
];

/// Settings mkosi removed, and what to say about them.
pub const RETIRED: &[(&str, &str)] = &[
    (
        "CDROM",
        "mkosi no longer attaches images as a CD-ROM; the setting is ignored",
    ),
    (
        "Images",
        "mkosi selects sub-images with Dependencies= now; the setting is ignored",
    ),
    (
        "RuntimeScratch",
        "mkosi no longer mounts scratch space; the setting is ignored",
    ),
];

/// Section names mkosi still reads under another name.
pub const SECTIONS: &[(&str, &str)] = &[("Host", "Runtime")];

/// A setting name as found in a file, resolved.
#[derive(Debug, Clone, Copy)]
pub enum Name {
    /// The current name or an older one; `true` if mkosi warns about it.
    Setting(&'static Setting, bool),
    /// A setting mkosi retired.
    Retired(&'static str),
    Unknown,
}

/// Resolves a name from a configuration file (without any `@` prefix).
pub fn resolve(name: &str) -> Name {
    if let Some(setting) = settings::lookup(name) {
        return Name::Setting(setting, false);
    }
    for (table, deprecated) in [(DEPRECATED, true), (SAME_VALUE, false)] {
        if let Some((_, new)) = table.iter().find(|(old, _)| *old == name) {
            let setting = settings::lookup(new).expect("older names name settings");
            return Name::Setting(setting, deprecated);
        }
    }
    match RETIRED.iter().find(|(old, _)| *old == name) {
        Some((_, note)) => Name::Retired(note),
        None => Name::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_retired_names_are_not_settings() {
        for (old, new) in DEPRECATED.iter().chain(SAME_VALUE) {
            assert!(settings::lookup(new).is_some(), "{new}");
            assert!(settings::lookup(old).is_none(), "{old}");
        }
        for (name, _) in RETIRED {
            assert!(matches!(resolve(name), Name::Retired(_)), "{name}");
        }
        assert!(matches!(
            resolve("KernelModulesInitrdInclude"),
            Name::Setting(s, false) if s.key == "KernelModulesInitrdInclude"
        ));
    }
}
