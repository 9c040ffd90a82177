//! The table of mkosi settings: name, section, value type, and whether the
//! builder implements it.
//!
//! Names and sections follow mkosi(1). A setting that is known but not
//! implemented is accepted and reported with a warning; a name not in this table
//! is an error, as it is in mkosi.

use std::fmt;

/// The sections that hold settings (match-like sections are handled apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    Config,
    Distribution,
    Output,
    Content,
    Validation,
    Build,
    Runtime,
}

impl Section {
    pub const ALL: [Section; 7] = [
        Section::Config,
        Section::Distribution,
        Section::Output,
        Section::Content,
        Section::Validation,
        Section::Build,
        Section::Runtime,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Section::Config => "Config",
            Section::Distribution => "Distribution",
            Section::Output => "Output",
            Section::Content => "Content",
            Section::Validation => "Validation",
            Section::Build => "Build",
            Section::Runtime => "Runtime",
        }
    }

    pub fn from_name(name: &str) -> Option<Section> {
        Section::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a list value is split into items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Whitespace and newlines (kernel command lines keep their commas).
    Words,
    /// Whitespace, newlines and commas (package names, globs, paths).
    WordsAndCommas,
}

/// The type of a setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text; last assignment wins, empty resets.
    Text,
    Bool,
    Int,
    /// One of a fixed set of words.
    Enum(&'static [&'static str]),
    /// A boolean or a compression algorithm (`CompressOutput=`).
    Compression,
    /// A path, resolved against the directory of the file that sets it.
    Path {
        must_exist: bool,
    },
    /// A list; assignments append, an empty assignment clears.
    List(Split),
    /// A list of paths (`SOURCE[:TARGET]` for trees), resolved like [`Kind::Path`].
    PathList {
        must_exist: bool,
    },
}

impl Kind {
    pub fn is_list(self) -> bool {
        matches!(self, Kind::List(_) | Kind::PathList { .. })
    }
}

/// One mkosi setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The name configuration files use, as mkosi(1) spells it today.
    pub name: &'static str,
    /// The key of the value in the resolved configuration and the JSON
    /// summary: mkosi's `dest` capitalised, which is `name` for nearly all.
    pub key: &'static str,
    pub section: Section,
    pub kind: Kind,
    /// Whether the builder acts on this setting (see docs/profile-format.md).
    pub implemented: bool,
}

pub const DISTRIBUTIONS: &[&str] = &[
    "fedora",
    "debian",
    "kali",
    "ubuntu",
    "arch",
    "opensuse",
    "mageia",
    "centos",
    "rhel",
    "rhel-ubi",
    "openmandriva",
    "rocky",
    "alma",
    "azure",
    "postmarketos",
    "custom",
];

pub const ARCHITECTURES: &[&str] = &[
    "alpha",
    "arc",
    "arm",
    "arm64",
    "ia64",
    "loongarch64",
    "mips-le",
    "mips64-le",
    "parisc",
    "ppc",
    "ppc64",
    "ppc64-le",
    "riscv32",
    "riscv64",
    "s390",
    "s390x",
    "tilegx",
    "x86",
    "x86-64",
];

pub const FORMATS: &[&str] = &[
    "directory",
    "tar",
    "cpio",
    "disk",
    "uki",
    "esp",
    "oci",
    "sysext",
    "confext",
    "portable",
    "addon",
    "none",
    // Globular extensions: the OS tree as a bare filesystem image, and a qcow2 disk.
    "erofs",
    "squashfs",
    "qcow2",
];

pub const COMPRESSIONS: &[&str] = &["none", "zstd", "zlib", "gzip", "xz", "lz4", "lz4hc", "lzma"];

const BOOTLOADERS: &[&str] = &[
    "none",
    "uki",
    "systemd-boot",
    "grub",
    "uki-signed",
    "systemd-boot-signed",
    "grub-signed",
];
const FEATURE: &[&str] = &[
    "auto", "yes", "no", "enabled", "disabled", "true", "false", "1", "0",
];
const UKIS: &[&str] = &[
    "none", "auto", "signed", "unsigned", "yes", "no", "true", "false", "1", "0",
];
const SSH: &[&str] = &[
    "always", "auto", "runtime", "never", "yes", "no", "true", "false", "1", "0",
];

macro_rules! key {
    ($name:ident) => {
        stringify!($name)
    };
    ($name:ident $key:ident) => {
        stringify!($key)
    };
}

macro_rules! settings {
    ($($section:ident { $($name:ident $(as $key:ident)? : $kind:expr, $implemented:expr;)* })*) => {
        /// Every setting the builder knows, in mkosi's section order.
        pub const SETTINGS: &[Setting] = &[
            $($(Setting {
                name: stringify!($name),
                key: key!($name $($key)?),
                section: Section::$section,
                kind: $kind,
                implemented: $implemented,
            },)*)*
        ];
    };
}

const TEXT: Kind = Kind::Text;
const BOOL: Kind = Kind::Bool;
const INT: Kind = Kind::Int;
const WORDS: Kind = Kind::List(Split::Words);
const NAMES: Kind = Kind::List(Split::WordsAndCommas);
const PATH: Kind = Kind::Path { must_exist: true };
const OUT_PATH: Kind = Kind::Path { must_exist: false };
const PATHS: Kind = Kind::PathList { must_exist: true };
const OUT_PATHS: Kind = Kind::PathList { must_exist: false };
const YES: bool = true;
const NO: bool = false;

// The table follows mkosi's own (`SETTINGS` in mkosi/config.py, v26): one row
// per setting, named as mkosi(1) spells it today (in mkosi's order, except that
// `Checksum=`, `Verity=` and `Environment=` keep the places they had in the
// builder's summaries). `Name as Key` is a setting
// whose JSON summary key (mkosi's `dest`) differs from its name. Older
// spellings and retired settings live in `compat.rs`.
settings! {
    Config {
        Profiles: NAMES, YES;
        Include: PATHS, YES;
        Dependencies: NAMES, NO;
        MinimumVersion: TEXT, NO;
        ConfigureScripts: PATHS, NO;
        PassEnvironment: WORDS, NO;
    }
    Distribution {
        Distribution: Kind::Enum(DISTRIBUTIONS), YES;
        Release: TEXT, YES;
        Architecture: Kind::Enum(ARCHITECTURES), YES;
        Mirror: TEXT, YES;
        Snapshot: TEXT, YES;
        LocalMirror: TEXT, NO;
        RepositoryKeyCheck: BOOL, NO;
        RepositoryKeyFetch: BOOL, NO;
        Repositories: NAMES, YES;
    }
    Output {
        Format: Kind::Enum(FORMATS), YES;
        ManifestFormat: NAMES, YES;
        Output: TEXT, YES;
        OutputExtension: TEXT, NO;
        CompressOutput: Kind::Compression, YES;
        CompressLevel: INT, YES;
        OutputDirectory: OUT_PATH, YES;
        OutputMode: TEXT, NO;
        ImageVersion: TEXT, YES;
        ImageId: TEXT, YES;
        SplitArtifacts: NAMES, NO;
        // Globular extension: the OCI image's Entrypoint (Format=oci).
        OciEntrypoint: NAMES, YES;
        RepartDirectories: PATHS, NO;
        SectorSize: INT, NO;
        Overlay: BOOL, NO;
        Seed: TEXT, NO;
        CleanScripts: PATHS, NO;
    }
    Content {
        Packages: NAMES, YES;
        BuildPackages: NAMES, NO;
        VolatilePackages: NAMES, NO;
        PackageDirectories: PATHS, NO;
        VolatilePackageDirectories: PATHS, NO;
        WithRecommends: BOOL, YES;
        WithDocs: BOOL, YES;
        BaseTrees: OUT_PATHS, NO;
        SkeletonTrees: PATHS, YES;
        ExtraTrees: PATHS, YES;
        RemovePackages: NAMES, YES;
        RemoveFiles: NAMES, YES;
        CleanPackageMetadata: Kind::Enum(FEATURE), NO;
        SourceDateEpoch: INT, YES;
        SyncScripts: PATHS, NO;
        PrepareScripts: PATHS, NO;
        BuildScripts: PATHS, YES;
        PostInstallationScripts: PATHS, YES;
        FinalizeScripts: PATHS, NO;
        PostOutputScripts: PATHS, NO;
        Bootable: Kind::Enum(FEATURE), YES;
        Bootloader: Kind::Enum(BOOTLOADERS), YES;
        BiosBootloader: Kind::Enum(&["none", "grub"]), NO;
        ShimBootloader: Kind::Enum(&["none", "signed", "unsigned"]), NO;
        UnifiedKernelImages: Kind::Enum(UKIS), YES;
        UnifiedKernelImageFormat: TEXT, NO;
        UnifiedKernelImageProfiles: PATHS, NO;
        Initrds: OUT_PATHS, YES;
        MicrocodeHost: BOOL, NO;
        InitrdProfiles: NAMES, NO;
        InitrdPackages: NAMES, YES;
        InitrdVolatilePackages: NAMES, NO;
        Devicetrees: NAMES, NO;
        Splash: TEXT, NO;
        KernelCommandLine: WORDS, YES;
        KernelModules as KernelModulesInclude: NAMES, YES;
        KernelModulesExclude: NAMES, NO;
        KernelModulesIncludeHost: BOOL, NO;
        KernelModulesInitrd: BOOL, YES;
        KernelInitrdModules as KernelModulesInitrdInclude: NAMES, YES;
        KernelModulesInitrdExclude: NAMES, NO;
        KernelModulesInitrdIncludeHost: BOOL, NO;
        // Globular extension: the OS tree's kernel modules stored compressed
        // (`zstd`; `none`, the default, leaves them as packaged).
        KernelModulesCompression: Kind::Enum(crate::rootfs::modules::ALGORITHMS), YES;
        // Globular extension: the packages and their dependencies unpacked,
        // not installed (no maintainer scripts, no dpkg database, no
        // essential set), for images of static programs.
        ExtractPackages: BOOL, YES;
        FirmwareFiles as FirmwareInclude: NAMES, NO;
        FirmwareExclude: NAMES, NO;
        Locale: TEXT, YES;
        LocaleMessages: TEXT, NO;
        Keymap: TEXT, NO;
        Timezone: TEXT, YES;
        Hostname: TEXT, YES;
        RootPassword: TEXT, NO;
        RootShell: TEXT, NO;
        MachineId: TEXT, NO;
        Autologin: BOOL, NO;
        MakeInitrd: BOOL, NO;
        Ssh: Kind::Enum(SSH), NO;
        SELinuxRelabel: Kind::Enum(FEATURE), NO;
    }
    Validation {
        Checksum: BOOL, YES;
        Verity: Kind::Enum(&["signed", "hash", "defer", "auto", "yes", "no", "enabled", "disabled", "true", "false", "1", "0"]), YES;
        SecureBoot: BOOL, NO;
        SecureBootAutoEnroll: BOOL, NO;
        SecureBootKey: TEXT, NO;
        SecureBootKeySource: TEXT, NO;
        SecureBootCertificate: TEXT, NO;
        SecureBootCertificateSource: TEXT, NO;
        SecureBootSignTool: Kind::Enum(&["auto", "sbsign", "systemd-sbsign"]), NO;
        VerityKey: TEXT, NO;
        VerityKeySource: TEXT, NO;
        VerityCertificate: TEXT, NO;
        VerityCertificateSource: TEXT, NO;
        SignExpectedPcr: Kind::Enum(FEATURE), NO;
        SignExpectedPcrKey: TEXT, NO;
        SignExpectedPcrKeySource: TEXT, NO;
        SignExpectedPcrCertificate: TEXT, NO;
        SignExpectedPcrCertificateSource: TEXT, NO;
        Passphrase: OUT_PATH, NO;
        Sign: BOOL, NO;
        Key: TEXT, NO;
        OpenPGPTool: TEXT, NO;
    }
    Build {
        Environment: WORDS, YES;
        ToolsTree: TEXT, NO;
        ToolsTreeDistribution: Kind::Enum(DISTRIBUTIONS), NO;
        ToolsTreeRelease: TEXT, NO;
        ToolsTreeProfiles: NAMES, NO;
        ToolsTreeMirror: TEXT, NO;
        ToolsTreeRepositories: NAMES, NO;
        ToolsTreeSandboxTrees: PATHS, NO;
        ToolsTreePackages: NAMES, NO;
        ToolsTreePackageDirectories: PATHS, NO;
        ToolsTreeCertificates: BOOL, NO;
        ExtraSearchPaths: PATHS, NO;
        Incremental: Kind::Enum(&["yes", "no", "strict", "true", "false", "1", "0"]), NO;
        CacheOnly: Kind::Enum(&["always", "auto", "none", "metadata", "never", "yes", "no", "true", "false", "1", "0"]), NO;
        SandboxTrees: PATHS, NO;
        WorkspaceDirectory: OUT_PATH, NO;
        CacheDirectory: OUT_PATH, YES;
        CacheKey: TEXT, NO;
        PackageCacheDirectory: OUT_PATH, NO;
        BuildDirectory: OUT_PATH, YES;
        BuildKey: TEXT, NO;
        UseSubvolumes: Kind::Enum(FEATURE), NO;
        RepartOffline: BOOL, NO;
        History: BOOL, NO;
        BuildSources: PATHS, YES;
        BuildSourcesEphemeral: Kind::Enum(&["yes", "no", "buildcache", "true", "false", "1", "0"]), NO;
        EnvironmentFiles: PATHS, NO;
        WithTests: BOOL, NO;
        WithNetwork: BOOL, NO;
        ProxyUrl: TEXT, NO;
        ProxyExclude: NAMES, NO;
        ProxyPeerCertificate: TEXT, NO;
        ProxyClientCertificate: TEXT, NO;
        ProxyClientKey: TEXT, NO;
    }
    Runtime {
        NSpawnSettings: PATH, NO;
        Ephemeral: BOOL, NO;
        Credentials: WORDS, NO;
        KernelCommandLineExtra: WORDS, NO;
        RuntimeTrees: PATHS, NO;
        RuntimeSize: TEXT, NO;
        RuntimeNetwork: Kind::Enum(&["interface", "user", "none"]), NO;
        RuntimeBuildSources: BOOL, NO;
        BindUser: BOOL, NO;
        UnitProperties: WORDS, NO;
        SshKey: TEXT, NO;
        SshCertificate: TEXT, NO;
        VirtualMachineMonitor: Kind::Enum(&["qemu", "vmspawn"]), NO;
        Machine: TEXT, NO;
        ForwardJournal: TEXT, NO;
        SysupdateDirectory: PATH, NO;
        Console: Kind::Enum(&["interactive", "read-only", "native", "gui"]), NO;
        CPUs: INT, NO;
        RAM: TEXT, NO;
        MaxMem: TEXT, NO;
        KVM: Kind::Enum(FEATURE), NO;
        CXL: BOOL, NO;
        VSock: Kind::Enum(FEATURE), NO;
        VSockCID: TEXT, NO;
        TPM: Kind::Enum(FEATURE), NO;
        Removable: BOOL, NO;
        Firmware: Kind::Enum(&["auto", "linux", "linux-noinitrd", "uefi", "uefi-secure-boot", "bios"]), NO;
        FirmwareVariables: TEXT, NO;
        Linux: TEXT, NO;
        Drives: WORDS, NO;
        QemuArgs: WORDS, NO;
        Register: Kind::Enum(FEATURE), NO;
        StorageTargetMode: Kind::Enum(FEATURE), NO;
    }
}

/// Looks a setting up by its mkosi name.
pub fn lookup(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// Looks a setting up by its key in the resolved configuration.
pub fn by_key(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique() {
        let mut seen = HashSet::new();
        for s in SETTINGS {
            assert!(seen.insert(s.name), "duplicate setting {}", s.name);
        }
        let mut keys = HashSet::new();
        for s in SETTINGS {
            assert!(keys.insert(s.key), "duplicate key {}", s.key);
            assert!(
                s.key == s.name || lookup(s.key).is_none(),
                "{} is a key and a name",
                s.key
            );
        }
    }

    /// The generated blocks of docs/profile-format.md, by marker.
    fn doc_blocks() -> Vec<(&'static str, String)> {
        use crate::profile::compat::{DEPRECATED, RETIRED, SAME_VALUE};
        let list = |implemented: bool| -> String {
            let mut out = String::new();
            for section in Section::ALL {
                let names: Vec<String> = SETTINGS
                    .iter()
                    .filter(|s| s.section == section && s.implemented == implemented)
                    .map(|s| format!("`{}=`", s.name))
                    .collect();
                if !names.is_empty() {
                    out.push_str(&format!("- `[{section}]`: {}\n", names.join(", ")));
                }
            }
            out
        };
        let mut keys = String::from("| setting | JSON key |\n|---|---|\n");
        for s in SETTINGS.iter().filter(|s| s.key != s.name) {
            keys.push_str(&format!("| `{}=` | `{}` |\n", s.name, s.key));
        }
        let mut aliases = String::from("| older name | read as | warned |\n|---|---|---|\n");
        for (table, warned) in [(DEPRECATED, "yes"), (SAME_VALUE, "no")] {
            for (old, new) in table {
                aliases.push_str(&format!("| `{old}=` | `{new}=` | {warned} |\n"));
            }
        }
        let mut retired = String::new();
        for (name, note) in RETIRED {
            retired.push_str(&format!("- `{name}=`: {note}\n"));
        }
        vec![
            ("implemented", list(true)),
            ("not-implemented", list(false)),
            ("keys", keys),
            ("aliases", aliases),
            ("retired", retired),
        ]
    }

    /// docs/profile-format.md shows the table as it is: its generated blocks
    /// are rendered from SETTINGS and compat.rs (the failure prints them).
    #[test]
    fn documented_lists_match_the_table() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/profile-format.md"
        ))
        .unwrap();
        let mut updated = doc.clone();
        for (marker, expected) in doc_blocks() {
            let open = format!("<!-- {marker} -->\n");
            let start = doc.find(&open).map(|i| i + open.len());
            let end = doc.find(&format!("<!-- /{marker} -->"));
            let (start, end) = match (start, end) {
                (Some(start), Some(end)) if start <= end => (start, end),
                _ => panic!("docs/profile-format.md has no {open} block"),
            };
            updated = updated.replace(
                &format!("{open}{}", &doc[start..end]),
                &format!("{open}{expected}"),
            );
            if std::env::var_os("UPDATE_DOCS").is_none() {
                assert_eq!(
                    &doc[start..end],
                    expected,
                    "block {marker} (UPDATE_DOCS=1 rewrites it)"
                );
            }
        }
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(
                concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/profile-format.md"),
                updated,
            )
            .unwrap();
        }
    }
}
