//! The package stage: a distribution tree installed by `mmdebstrap`, cached by
//! the digest of everything that affects it.

pub mod cache;
pub mod clean;
pub mod finalize;
pub mod libraries;
pub mod mirror;
pub mod modules;
pub mod worktree;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use globular_task::Task;

use mirror::Source;

/// Bumped whenever the way the package stage builds a tree changes, so older
/// cache entries are not reused.
pub const STAGE_VERSION: u32 = 2;

/// Everything that decides the package-stage tree. Its JSON digest is the
/// cache key, so every field here is an input and nothing else is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PackageStage {
    pub stage_version: u32,
    pub distribution: String,
    pub release: String,
    /// dpkg architecture (`amd64`).
    pub architecture: String,
    pub sources: Vec<Source>,
    /// Packages (`name` or `name=version`) in profile order.
    pub packages: Vec<String>,
    pub remove_packages: Vec<String>,
    pub with_recommends: bool,
    pub with_docs: bool,
    /// Content digests of the skeleton trees, in order.
    pub skeleton_trees: Vec<String>,
    pub source_date_epoch: u64,
    /// `mmdebstrap --version`: a different tool may build a different tree.
    pub mmdebstrap: String,
    /// `KernelModulesCompression=` other than `none` (absent from the key
    /// otherwise, so stages without it keep the keys they had).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_modules_compression: Option<String>,
    /// `ExtractPackages=yes`: the packages and their dependencies unpacked
    /// (mmdebstrap's `extract` variant), not installed (absent from the key
    /// when false).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub extract_packages: bool,
}

impl PackageStage {
    pub fn key(&self) -> String {
        crate::digest::json(self)
    }
}

/// An installed package, read back from the tree's dpkg database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// Source package name (for the SBOM).
    pub source: String,
}

/// dpkg's name for an mkosi architecture.
pub fn dpkg_architecture(mkosi: &str) -> anyhow::Result<&'static str> {
    Ok(match mkosi {
        "x86-64" => "amd64",
        "x86" => "i386",
        "arm64" => "arm64",
        "arm" => "armhf",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "ppc64-le" => "ppc64el",
        "loongarch64" => "loong64",
        "mips64-le" => "mips64el",
        other => bail!("Architecture={other} has no Debian port"),
    })
}

/// `mmdebstrap --version`, which also proves the tool is installed.
pub fn mmdebstrap_version() -> anyhow::Result<String> {
    // Asked once per process: every package stage of a build (the image's,
    // its initrd's, its container images') needs it, and mmdebstrap takes
    // a tenth of a second to say it.
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(version) = VERSION.get() {
        return Ok(version.clone());
    }
    let out = Task::new("checking mmdebstrap", "mmdebstrap")
        .package("mmdebstrap")
        .arg("--version")
        .read_string()?;
    Ok(VERSION.get_or_init(|| out.trim().to_owned()).clone())
}

/// Installs the package stage into `dest` (which must not exist yet).
pub fn install(
    stage: &PackageStage,
    skeletons: &[PathBuf],
    dest: &Path,
    progress: &crate::progress::Progress,
) -> anyhow::Result<()> {
    if !matches!(stage.distribution.as_str(), "debian" | "ubuntu" | "kali") {
        bail!(
            "Distribution={} is not supported by the package stage (debian, ubuntu)",
            stage.distribution
        );
    }
    let (verb, variant) = if stage.extract_packages {
        ("extracting", "--variant=extract")
    } else {
        ("installing", "--variant=minbase")
    };
    let mut task = Task::new(
        format!("{verb} {} packages with mmdebstrap", stage.packages.len()),
        "mmdebstrap",
    )
    .package("mmdebstrap")
    .env("SOURCE_DATE_EPOCH", stage.source_date_epoch.to_string())
    .env("LC_ALL", "C.UTF-8")
    // The kernel packages' hooks (initramfs-tools' postinst.d hook and its
    // trigger) build no initramfs, as mkosi tells them to: the builder
    // makes a bootable image's initrd from its own profile and never ships
    // the distribution's. On the worker's package set that was two
    // `update-initramfs` runs, about 22 s each, of an 83 s mmdebstrap.
    .env("INITRD", "No")
    .args(["--mode=root", variant, "--format=directory"])
    // dpkg without an fsync per file, as mkosi runs it: the tree is a
    // cache entry under construction, synced once before it is published
    // (below), and thrown away if the build fails.
    .arg("--dpkgopt=force-unsafe-io")
    .arg(format!("--architectures={}", stage.architecture));
    let recommends = if stage.with_recommends {
        "true"
    } else {
        "false"
    };
    task = task.arg(format!("--aptopt=APT::Install-Recommends \"{recommends}\""));
    if !stage.with_docs {
        for opt in [
            "path-exclude=/usr/share/doc/*",
            "path-include=/usr/share/doc/*/copyright",
            "path-exclude=/usr/share/man/*",
            "path-exclude=/usr/share/info/*",
        ] {
            task = task.arg(format!("--dpkgopt={opt}"));
        }
    }
    if !stage.packages.is_empty() {
        task = task.arg(format!("--include={}", stage.packages.join(",")));
    }
    for skeleton in skeletons {
        task = task.arg(format!(
            "--setup-hook=sync-in '{}' /",
            skeleton.display().to_string().replace('\'', "'\\''")
        ));
    }
    let extracted = dest.join("extracted.tsv");
    if stage.extract_packages {
        // No dpkg database records what the extract variant unpacked: the
        // archives say, read while they are still in apt's cache.
        task = task.arg(format!(
            "--extract-hook=for deb in \"$1\"/var/cache/apt/archives/*.deb; do \
             dpkg-deb --show --showformat='{PACKAGE_FORMAT}' \"$deb\" || exit 1; done > '{}'",
            extracted.display().to_string().replace('\'', "'\\''")
        ));
    }
    if !stage.remove_packages.is_empty() {
        task = task.arg(format!(
            "--customize-hook=chroot \"$1\" apt-get -y purge {}",
            stage.remove_packages.join(" ")
        ));
    }
    let tree = dest.join("tree");
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    task = task.arg(&stage.release).arg(&tree);
    for source in &stage.sources {
        task = task.arg(source.line());
    }
    let step = progress.step("mmdebstrap");
    task.run()?;
    step.done();
    let step = progress.step("cleaning the package tree");
    clean::after_packages(&tree)?;
    clean::scrub(&tree)?;
    step.done();
    if let Some(algorithm) = &stage.kernel_modules_compression {
        let step = progress.step("compressing the kernel modules");
        let count = modules::compress(&tree, algorithm)?;
        tracing::info!("{count} kernel modules compressed with {algorithm}");
        step.done();
    }
    let step = progress.step("listing the installed packages");
    let packages = if stage.extract_packages {
        extracted_packages(&extracted)?
    } else {
        installed_packages(&tree)?
    };
    step.done();
    std::fs::write(
        dest.join("packages.json"),
        serde_json::to_vec_pretty(&packages)?,
    )?;
    std::fs::write(dest.join("stage.json"), serde_json::to_vec_pretty(stage)?)?;
    std::fs::write(
        dest.join("description"),
        format!(
            "{} {} {}, {} packages",
            stage.distribution,
            stage.release,
            stage.architecture,
            packages.len()
        ),
    )?;
    // Everything on disk before the cache renames the entry into place: a
    // crash never leaves an entry with files dpkg wrote but nobody synced.
    let step = progress.step("syncing the package tree");
    Task::new("syncing the package tree", "sync")
        .package("coreutils")
        .arg("--file-system")
        .arg(dest)
        .run()?;
    step.done();
    Ok(())
}

/// What is read of a package, by dpkg-query (installed) and dpkg-deb
/// (extracted) alike: a tab-separated line per package.
const PACKAGE_FORMAT: &str = "${Package}\\t${Version}\\t${Architecture}\\t${source:Package}\\n";

/// Reads the installed packages from a tree's dpkg database.
pub fn installed_packages(tree: &Path) -> anyhow::Result<Vec<Package>> {
    let out = Task::new("listing installed packages", "dpkg-query")
        .package("dpkg")
        .arg(format!(
            "--admindir={}",
            tree.join("var/lib/dpkg").display()
        ))
        .args([
            "-W",
            &format!("-f=${{db:Status-Abbrev}}\\t{PACKAGE_FORMAT}"),
        ])
        .read_string()?;
    // Only packages installed in full ("ii"): not removed ones whose
    // configuration files are left.
    let installed = out.lines().filter_map(|line| {
        let (status, rest) = line.split_once('\t')?;
        status.starts_with("ii").then_some(rest)
    });
    parse_packages(installed, "dpkg-query")
}

/// Reads the packages the extract variant unpacked, as its hook listed them.
fn extracted_packages(list: &Path) -> anyhow::Result<Vec<Package>> {
    let text =
        std::fs::read_to_string(list).with_context(|| format!("reading {}", list.display()))?;
    let packages = parse_packages(text.lines(), &list.display().to_string())?;
    if packages.is_empty() {
        bail!("{}: mmdebstrap extracted no package", list.display());
    }
    Ok(packages)
}

fn parse_packages<'a>(
    lines: impl Iterator<Item = &'a str>,
    origin: &str,
) -> anyhow::Result<Vec<Package>> {
    let mut packages = Vec::new();
    for (number, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, version, architecture, source] = fields[..] else {
            bail!("{origin}: line {} is not a package: {line:?}", number + 1);
        };
        packages.push(Package {
            name: name.to_owned(),
            version: version.to_owned(),
            architecture: architecture.to_owned(),
            source: source.to_owned(),
        });
    }
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(packages)
}

/// The packages recorded in a cache entry.
pub fn recorded_packages(entry: &Path) -> anyhow::Result<Vec<Package>> {
    let path = entry.join("packages.json");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}
