//! Components from source: upstream Go programs (etcd, Kubernetes) built from
//! their published modules at the versions pinned in `profiles/versions.toml`.
//!
//! A component is a directory holding a small Go module whose `go.mod`
//! requires the upstream module at the pinned version and whose `go.sum` is
//! the integrity lock, plus a `component.toml` ([`spec`]) saying what to build
//! and where it goes. The artifacts lock file names the components a role
//! carries:
//!
//! ```toml
//! [[component]]
//! name = "etcd"
//! path = "../components/etcd"   # relative to the lock file
//! roles = ["control-plane"]     # optional; default: every role
//! ```
//!
//! Before anything is written the builder checks that go.mod requires the
//! upstream module at the pinned version, then builds with `-mod=readonly`:
//! Go refuses a go.sum that does not match the modules it downloads (or has
//! cached, verified) and a go.mod edited without its go.sum. The programs are
//! cached under a digest of the module directory, the Go version and every
//! flag ([`gobuild::Inputs`]); an unchanged component costs a digest.

mod gobuild;
mod gomod;
pub mod spec;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::pins::Pins;
use crate::progress::Progress;
use crate::rootfs::cache::Cache;
pub use gobuild::Toolchain;
pub use gomod::Module;
use spec::Spec;

/// One `[[component]]` of the artifacts lock file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
}

/// What a built component put in the cache (`component.json`), and what the
/// manifest and SBOM say about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Info {
    pub name: String,
    /// The pinned version (`profiles/versions.toml`).
    pub version: String,
    /// The upstream module and its go.sum hash.
    pub module: String,
    pub module_version: String,
    pub module_sum: String,
    pub go_version: String,
    /// Cache key: digest of the module directory, Go version and flags.
    pub key: String,
    pub binaries: Vec<BinaryInfo>,
    /// Every module linked into the binaries, from their build information.
    pub modules: Vec<Module>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct BinaryInfo {
    /// The file `go build` wrote, in the cache entry's `bin/`.
    pub output: String,
    pub install: String,
    pub sha256: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
}

/// A component whose programs are in the cache.
#[derive(Debug)]
pub struct Built {
    pub info: Info,
    /// The cache entry (held under its shared lock while the build runs).
    entry: crate::rootfs::cache::Entry,
}

/// Selects the lock file's components for `role` (all when `None`).
pub fn for_role(entries: Vec<Entry>, role: Option<&str>) -> Vec<Entry> {
    entries
        .into_iter()
        .filter(|e| match (&e.roles, role) {
            (Some(roles), Some(role)) => roles.iter().any(|r| r == role),
            _ => true,
        })
        .collect()
}

/// Components checked against their pins, ready to build: [`check`] runs
/// first (a bad pin stops a build before anything is written), and
/// [`Checked::build`] may run beside the package stage.
#[derive(Debug, Default)]
pub struct Checked {
    toolchain: Option<Toolchain>,
    components: Vec<CheckedOne>,
}

/// Checks each component against its pin. Paths are relative to `lock_dir`.
pub fn check(
    entries: &[Entry],
    lock_dir: &Path,
    pins: &Pins,
    epoch: u64,
) -> anyhow::Result<Checked> {
    if entries.is_empty() {
        return Ok(Checked::default());
    }
    let mut seen = std::collections::HashMap::new();
    for entry in entries {
        let dir = lock_dir.join(&entry.path);
        let real = dir
            .canonicalize()
            .with_context(|| format!("component {:?}: {}", entry.name, dir.display()))?;
        if let Some(other) = seen.insert(real, &entry.name) {
            bail!(
                "components {other:?} and {:?} are the same directory {}",
                entry.name,
                dir.display()
            );
        }
    }
    let toolchain = Toolchain::find()?;
    let components = entries
        .iter()
        .map(|entry| {
            let dir = lock_dir.join(&entry.path);
            check_one(&entry.name, &dir, pins, epoch)
                .with_context(|| format!("component {:?} ({})", entry.name, dir.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Checked {
        toolchain: Some(toolchain),
        components,
    })
}

impl Checked {
    /// Builds each component (or finds it in the cache) and checks the
    /// programs' digests.
    pub fn build(&self, cache: &Cache, progress: &Progress) -> anyhow::Result<Vec<Built>> {
        let Some(toolchain) = &self.toolchain else {
            return Ok(Vec::new());
        };
        self.components
            .iter()
            .map(|one| {
                one.build(toolchain, cache, progress)
                    .and_then(|built| built.verify().map(|()| built))
                    .with_context(|| format!("component {:?} ({})", one.name, one.dir.display()))
            })
            .collect()
    }
}

/// A component whose module, pins and go.sum agree.
#[derive(Debug)]
struct CheckedOne {
    name: String,
    dir: PathBuf,
    spec: Spec,
    version: String,
    /// `v` and the version: the module version go.mod requires.
    wanted: String,
    module_sum: String,
    ldflags: Vec<String>,
}

/// Builds the component in `dir` (or finds it in the cache).
pub fn build_one(
    name: &str,
    dir: &Path,
    pins: &Pins,
    epoch: u64,
    toolchain: &Toolchain,
    cache: &Cache,
    progress: &Progress,
) -> anyhow::Result<Built> {
    check_one(name, dir, pins, epoch)?.build(toolchain, cache, progress)
}

/// Checks the component in `dir` against its pin, its go.mod and go.sum.
fn check_one(name: &str, dir: &Path, pins: &Pins, epoch: u64) -> anyhow::Result<CheckedOne> {
    let spec = Spec::load(dir)?;
    let pins_file = pins
        .path
        .as_ref()
        .map_or("versions.toml".into(), |p| p.display().to_string());
    let Some(version) = pins.version(&spec.pin) else {
        bail!("{pins_file} has no [{}] version to build against", spec.pin);
    };
    let go_mod = gomod::GoMod::read(dir)?;
    let wanted = format!("v{version}");
    match go_mod.required(&spec.upstream) {
        Some(found) if found == wanted => {}
        Some(found) => bail!(
            "{}/go.mod requires {} {found}, but {pins_file} pins [{}] version = {version:?}: \
             bump both with scripts/bump-component.sh",
            dir.display(),
            spec.upstream,
            spec.pin
        ),
        None => bail!(
            "{}/go.mod does not require {} (component.toml's `upstream`)",
            dir.display(),
            spec.upstream
        ),
    }
    // A replace by a local path would build code from outside the component
    // directory: not in the cache key, not locked by go.sum.
    if let Some(r) = go_mod.replace.iter().find(|r| r.new.version.is_empty()) {
        bail!(
            "{}/go.mod replaces {} with the directory {}: a component builds only \
             published modules (go.sum locks them)",
            dir.display(),
            r.old.path,
            r.new.path
        );
    }
    // Every module of the upstream's repository moves with the pin (etcd's
    // api, client, etcdctl, etcdutl with its server). On a code host the
    // repository is HOST/OWNER/NAME (github.com/versity/scoutfs-go is not
    // versitygw's); elsewhere the import path's first two elements
    // (go.etcd.io/etcd).
    let hosted = ["github.com/", "gitlab.com/", "bitbucket.org/"]
        .iter()
        .any(|h| spec.upstream.starts_with(h));
    let repo: String = spec
        .upstream
        .split('/')
        .take(if hosted { 3 } else { 2 })
        .collect::<Vec<_>>()
        .join("/")
        + "/";
    if let Some(r) = go_mod
        .require
        .iter()
        .find(|r| r.path.starts_with(&repo) && r.version != wanted && r.version != "v0.0.0")
    {
        bail!(
            "{}/go.mod requires {} {}, but the other modules of {repo}… are at the pin {wanted}: \
             bump with scripts/bump-component.sh",
            dir.display(),
            r.path,
            r.version
        );
    }
    if let Some(wanted) = spec.expand_replaces(version)? {
        for r in &go_mod.replace {
            if r.new.path != r.old.path || r.new.version != wanted {
                bail!(
                    "{}/go.mod replaces {} with {} {}, but the pin [{}] version = {version:?} \
                     wants {} {wanted} (component.toml's `replaces`): bump with \
                     scripts/bump-component.sh",
                    dir.display(),
                    r.old.path,
                    r.new.path,
                    r.new.version,
                    spec.pin,
                    r.old.path
                );
            }
        }
    }
    let go_sum_path = dir.join("go.sum");
    let go_sum = std::fs::read_to_string(&go_sum_path)
        .with_context(|| format!("reading {} (the component's lock)", go_sum_path.display()))?;
    let Some(module_sum) = gomod::sum(&go_sum, &spec.upstream, &wanted) else {
        bail!(
            "{} has no hash for {}@{wanted}: go.mod was edited without its go.sum",
            go_sum_path.display(),
            spec.upstream
        );
    };
    let ldflags = spec.expand_ldflags(version, epoch)?;
    Ok(CheckedOne {
        name: name.to_owned(),
        dir: dir.to_path_buf(),
        version: version.to_owned(),
        wanted,
        module_sum: module_sum.to_owned(),
        ldflags,
        spec,
    })
}

impl CheckedOne {
    fn build(
        &self,
        toolchain: &Toolchain,
        cache: &Cache,
        progress: &Progress,
    ) -> anyhow::Result<Built> {
        let CheckedOne {
            name,
            dir,
            spec,
            version,
            wanted,
            module_sum,
            ldflags,
        } = self;
        let (name, dir, version) = (name.as_str(), dir.as_path(), version.as_str());
        let inputs = gobuild::Inputs::new(name, dir, spec, toolchain, ldflags)?;
        let key = inputs.key();
        let entry = cache.component(&key, |tmp| {
            let bin = tmp.join("bin");
            gobuild::build(name, dir, &inputs, &bin, progress)?;
            let mut binaries = Vec::new();
            let mut files = Vec::new();
            for binary in &spec.binaries {
                let file = bin.join(binary.output_name());
                if !file.is_file() {
                    bail!(
                        "`go build` of {} wrote no {}",
                        binary.package,
                        file.display()
                    );
                }
                binaries.push(BinaryInfo {
                    output: binary.output_name().to_owned(),
                    install: binary.install.display().to_string(),
                    sha256: crate::digest::file(&file)?,
                    size: std::fs::metadata(&file)?.len(),
                    links: binary
                        .links
                        .iter()
                        .map(|l| l.display().to_string())
                        .collect(),
                });
                files.push(file);
            }
            let file_refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
            let info = Info {
                name: name.to_owned(),
                version: version.to_owned(),
                module: spec.upstream.clone(),
                module_version: wanted.clone(),
                module_sum: module_sum.to_owned(),
                go_version: toolchain.version.clone(),
                key: key.clone(),
                binaries,
                modules: gobuild::linked_modules(&file_refs)?,
            };
            // Written last: its presence marks a complete entry.
            std::fs::write(
                tmp.join("description"),
                format!("{name} {version} ({})", toolchain.version),
            )?;
            let json = serde_json::to_vec_pretty(&info)?;
            std::fs::write(tmp.join("component.json"), json)
                .with_context(|| format!("writing {}", tmp.join("component.json").display()))
        })?;
        if !entry.built {
            tracing::info!(
                "component {name} {version} reused from the cache ({})",
                crate::rootfs::cache::short(&key)
            );
        }
        let path = entry.dir.join("component.json");
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let info: Info = serde_json::from_slice(&text)
            .with_context(|| format!("parsing {} (prune the cache entry)", path.display()))?;
        if info.name != name || info.key != key {
            bail!(
                "cache entry {} holds {:?}, not {name:?}",
                entry.dir.display(),
                info.name
            );
        }
        Ok(Built { info, entry })
    }
}

/// `builder component build`: builds the component in `dir` (or takes it
/// from the cache) and copies its programs into `out` by their file names,
/// each replaced through a rename (a running program is not disturbed), with
/// their links beside them.
pub fn build_into(
    dir: &Path,
    pins: &Pins,
    epoch: u64,
    cache: &Cache,
    out: &Path,
    progress: &Progress,
) -> anyhow::Result<Info> {
    let name = dir
        .canonicalize()
        .with_context(|| format!("component directory {}", dir.display()))?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let built = build_one(
        &name,
        dir,
        pins,
        epoch,
        &Toolchain::find()?,
        cache,
        progress,
    )
    .with_context(|| format!("component {name:?} ({})", dir.display()))?;
    let mut names = std::collections::HashSet::new();
    for binary in &built.info.binaries {
        for path in std::iter::once(&binary.install).chain(&binary.links) {
            let name = Path::new(path).file_name().unwrap_or_default();
            if !names.insert(name.to_owned()) {
                bail!(
                    "two programs of {:?} are named {} in --out",
                    built.info.name,
                    name.to_string_lossy()
                );
            }
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for binary in &built.info.binaries {
        let file_name = Path::new(&binary.install)
            .file_name()
            .context("install path without a file name")?;
        let dest = out.join(file_name);
        let bytes = std::fs::read(built.file(binary))?;
        if crate::digest::bytes(&bytes) != binary.sha256 {
            bail!("{} changed in the cache after it was built", binary.output);
        }
        globular_cluster::fsutil::write_atomic(&dest, &bytes, 0o755)
            .with_context(|| format!("writing {}", dest.display()))?;
        for link in &binary.links {
            let link = out.join(Path::new(link).file_name().context("link without a name")?);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(file_name, &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    Ok(built.info)
}

impl Built {
    /// Where the cache holds a built program.
    pub fn file(&self, binary: &BinaryInfo) -> PathBuf {
        self.entry.dir.join("bin").join(&binary.output)
    }

    /// Every path this component writes in the image (programs and links).
    pub fn install_paths(&self) -> impl Iterator<Item = &str> {
        self.info.binaries.iter().flat_map(|b| {
            std::iter::once(b.install.as_str()).chain(b.links.iter().map(String::as_str))
        })
    }

    /// Checks the programs' digests once more: what the cache holds is
    /// what was built. [`Checked::build`] does, beside the package stage,
    /// so that installing is a copy alone.
    fn verify(&self) -> anyhow::Result<()> {
        for binary in &self.info.binaries {
            let file = self.file(binary);
            if crate::digest::file(&file)? != binary.sha256 {
                bail!(
                    "component {:?}: {} changed in the cache after it was built (prune the cache)",
                    self.info.name,
                    file.display()
                );
            }
        }
        Ok(())
    }

    /// Copies the programs (verified by [`Checked::build`]) into the image
    /// tree and makes their links.
    pub fn install(&self, tree: &Path) -> anyhow::Result<()> {
        for binary in &self.info.binaries {
            let file = self.file(binary);
            let install = Path::new(&binary.install);
            crate::overlay::install_file(tree, install, &file, 0o755)
                .with_context(|| format!("installing {}", binary.install))?;
            for link in &binary.links {
                crate::overlay::install_symlink(tree, Path::new(link), install)
                    .with_context(|| format!("linking {link}"))?;
            }
        }
        Ok(())
    }
}
