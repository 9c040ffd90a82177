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
    pub name: &'static str,
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

macro_rules! settings {
    ($($section:ident { $($name:ident : $kind:expr, $implemented:expr;)* })*) => {
        /// Every setting the builder knows, in mkosi's section order.
        pub const SETTINGS: &[Setting] = &[
            $($(Setting {
                name: stringify!($name),
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
const YES: bool = true;
const NO: bool = false;

settings! {
    Config {
        Profiles: NAMES, YES;
        Include: PATHS, YES;
        Dependencies: NAMES, NO;
        MinimumVersion: TEXT, NO;
        ConfigureScripts: PATHS, NO;
        PassEnvironment: NAMES, NO;
        Images: NAMES, NO;
    }
    Distribution {
        Distribution: Kind::Enum(DISTRIBUTIONS), YES;
        Release: TEXT, YES;
        Architecture: Kind::Enum(ARCHITECTURES), YES;
        Mirror: TEXT, YES;
        Snapshot: TEXT, YES;
        Repositories: NAMES, YES;
        LocalMirror: TEXT, NO;
        RepositoryKeyCheck: BOOL, NO;
        RepositoryKeyFetch: BOOL, NO;
        PackageManagerTrees: PATHS, NO;
    }
    Output {
        Format: Kind::Enum(FORMATS), YES;
        ManifestFormat: NAMES, YES;
        Output: TEXT, YES;
        CompressOutput: Kind::Compression, YES;
        CompressLevel: INT, YES;
        OutputDirectory: OUT_PATH, YES;
        ImageVersion: TEXT, YES;
        ImageId: TEXT, YES;
        SplitArtifacts: NAMES, NO;
        RepartDirectories: PATHS, NO;
        SectorSize: INT, NO;
        Overlay: BOOL, NO;
        Seed: TEXT, NO;
        CleanScripts: PATHS, NO;
        OutputExtension: TEXT, NO;
        OutputMode: TEXT, NO;
        UseSubvolumes: Kind::Enum(FEATURE), NO;
        RepartOffline: BOOL, NO;
    }
    Content {
        Packages: NAMES, YES;
        BuildPackages: NAMES, NO;
        VolatilePackages: NAMES, NO;
        PackageDirectories: PATHS, NO;
        VolatilePackageDirectories: PATHS, NO;
        WithRecommends: BOOL, YES;
        WithDocs: BOOL, YES;
        BaseTrees: PATHS, NO;
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
        BiosBootloader: TEXT, NO;
        ShimBootloader: TEXT, NO;
        UnifiedKernelImages: Kind::Enum(FEATURE), YES;
        UnifiedKernelImageFormat: TEXT, NO;
        UnifiedKernelImageProfiles: PATHS, NO;
        Initrds: PATHS, YES;
        InitrdProfiles: NAMES, NO;
        InitrdPackages: NAMES, YES;
        InitrdVolatilePackages: NAMES, NO;
        Devicetree: TEXT, NO;
        Splash: PATH, NO;
        MicrocodeHost: BOOL, NO;
        KernelCommandLine: WORDS, YES;
        KernelModulesInclude: NAMES, YES;
        KernelModulesExclude: NAMES, YES;
        KernelModulesIncludeHost: BOOL, NO;
        KernelModulesInitrd: BOOL, YES;
        KernelModulesInitrdInclude: NAMES, YES;
        KernelModulesInitrdExclude: NAMES, YES;
        KernelModulesInitrdIncludeHost: BOOL, NO;
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
        Ssh: Kind::Enum(FEATURE), NO;
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
        SecureBootSignTool: TEXT, NO;
        VerityKey: TEXT, NO;
        VerityKeySource: TEXT, NO;
        VerityCertificate: TEXT, NO;
        VerityCertificateSource: TEXT, NO;
        SignExpectedPcr: Kind::Enum(FEATURE), NO;
        SignExpectedPcrKey: TEXT, NO;
        SignExpectedPcrKeySource: TEXT, NO;
        SignExpectedPcrCertificate: TEXT, NO;
        SignExpectedPcrCertificateSource: TEXT, NO;
        Passphrase: PATH, NO;
        Sign: BOOL, NO;
        OpenPGPTool: TEXT, NO;
        Key: TEXT, NO;
    }
    Build {
        Environment: WORDS, YES;
        EnvironmentFiles: PATHS, NO;
        CacheDirectory: OUT_PATH, YES;
        ToolsTree: TEXT, NO;
        ToolsTreeDistribution: TEXT, NO;
        ToolsTreeRelease: TEXT, NO;
        ToolsTreeMirror: TEXT, NO;
        ToolsTreeRepositories: NAMES, NO;
        ToolsTreePackages: NAMES, NO;
        ToolsTreeCertificates: BOOL, NO;
        ExtraSearchPaths: PATHS, NO;
        Incremental: Kind::Enum(&["yes", "no", "strict", "relaxed", "true", "false", "1", "0"]), NO;
        CacheOnly: TEXT, NO;
        CacheKey: TEXT, NO;
        SandboxTrees: PATHS, NO;
        WorkspaceDirectory: OUT_PATH, NO;
        PackageCacheDirectory: OUT_PATH, NO;
        BuildDirectory: OUT_PATH, YES;
        History: BOOL, NO;
        BuildSources: PATHS, YES;
        BuildSourcesEphemeral: TEXT, NO;
        WithTests: BOOL, NO;
        WithNetwork: BOOL, NO;
        ProxyUrl: TEXT, NO;
        ProxyPeerCertificate: TEXT, NO;
        ProxyClientCertificate: TEXT, NO;
        ProxyClientKey: TEXT, NO;
        ProxyExclude: NAMES, NO;
    }
    Runtime {
        NSpawnSettings: PATH, NO;
        VirtualMachineMonitor: TEXT, NO;
        Console: TEXT, NO;
        CPUs: INT, NO;
        RAM: TEXT, NO;
        KVM: Kind::Enum(FEATURE), NO;
        VSock: Kind::Enum(FEATURE), NO;
        VSockCID: TEXT, NO;
        TPM: Kind::Enum(FEATURE), NO;
        CDROM: BOOL, NO;
        Removable: BOOL, NO;
        Firmware: TEXT, NO;
        FirmwareVariables: TEXT, NO;
        Linux: TEXT, NO;
        Drives: WORDS, NO;
        QemuArgs: WORDS, NO;
        Ephemeral: BOOL, NO;
        Credentials: WORDS, NO;
        KernelCommandLineExtra: WORDS, NO;
        RuntimeTrees: PATHS, NO;
        RuntimeSize: TEXT, NO;
        RuntimeNetwork: TEXT, NO;
        RuntimeBuildSources: BOOL, NO;
        BindUser: BOOL, NO;
        UnitProperties: WORDS, NO;
        SshKey: TEXT, NO;
        SshCertificate: TEXT, NO;
        Machine: TEXT, NO;
        ForwardJournal: TEXT, NO;
        StorageTargetMode: TEXT, NO;
        SysupdateDirectory: PATH, NO;
        Register: Kind::Enum(FEATURE), NO;
    }
}

/// Looks a setting up by its mkosi name.
pub fn lookup(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// Files and directories that mkosi picks up by name in each configuration
/// directory, and the setting each one feeds.
pub const DEFAULT_PATHS: &[(&str, &str)] = &[
    ("mkosi.skeleton", "SkeletonTrees"),
    ("mkosi.extra", "ExtraTrees"),
    ("mkosi.postinst", "PostInstallationScripts"),
    ("mkosi.postinst.chroot", "PostInstallationScripts"),
    ("mkosi.sync", "SyncScripts"),
    ("mkosi.prepare", "PrepareScripts"),
    ("mkosi.prepare.chroot", "PrepareScripts"),
    ("mkosi.build", "BuildScripts"),
    ("mkosi.build.chroot", "BuildScripts"),
    ("mkosi.finalize", "FinalizeScripts"),
    ("mkosi.finalize.chroot", "FinalizeScripts"),
    ("mkosi.postoutput", "PostOutputScripts"),
    ("mkosi.clean", "CleanScripts"),
    ("mkosi.repart", "RepartDirectories"),
    ("mkosi.packages", "PackageDirectories"),
];

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
        for (_, name) in DEFAULT_PATHS {
            assert!(lookup(name).is_some(), "{name}");
        }
    }

    /// docs/profile-format.md lists exactly the implemented and the accepted-only settings.
    #[test]
    fn documented_lists_match_the_table() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/profile-format.md"
        ))
        .unwrap();
        let block = |marker: &str| -> HashSet<String> {
            let start = doc.find(&format!("<!-- {marker} -->")).unwrap();
            let end = doc.find(&format!("<!-- /{marker} -->")).unwrap();
            doc[start..end]
                .split('`')
                .filter_map(|w| w.strip_suffix('='))
                .map(str::to_owned)
                .collect()
        };
        let names = |implemented: bool| -> HashSet<String> {
            SETTINGS
                .iter()
                .filter(|s| s.implemented == implemented)
                .map(|s| s.name.to_owned())
                .collect()
        };
        assert_eq!(block("implemented"), names(true));
        assert_eq!(block("not-implemented"), names(false));
    }
}
