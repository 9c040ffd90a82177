//! Pinned artifacts: files that do not come from the distribution (Kubernetes
//! binaries and the like), listed in a lock file with their sha256.
//!
//! ```toml
//! [[artifact]]
//! name = "kubelet"
//! url = "https://dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubelet"   # or: path = "local/file"
//! sha256 = "<64 hex digits>"
//! install = "/usr/bin/kubelet"
//! mode = "0755"
//! roles = ["worker", "control-plane"]   # optional; default: every role
//! ```
//!
//! Every artifact is fetched and verified before anything is built; a
//! mismatch stops the build. Downloads are kept in the cache under their
//! sha256 and only ever stored there after verification.
//!
//! An image is a container image the builder makes from another profile
//! (`Format=oci`) and installs as its archive:
//!
//! ```toml
//! [[image]]
//! name = "pause"
//! profile = "pause"                     # a profile directory, relative to this file
//! install = "/usr/share/globular/images/globular-pause.oci.tar"
//! roles = ["worker"]
//! ```

use std::io::{Read as _, Write as _};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _};
use globular_cluster::fsutil;
use sha2::{Digest as _, Sha256};

use crate::overlay;
use crate::progress::Progress;
use crate::rootfs::cache::Cache;

/// Default lock file name, looked up next to (or above) the profile.
pub const FILE_NAME: &str = "artifacts.toml";

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LockFile {
    #[serde(default, rename = "artifact")]
    artifacts: Vec<Artifact>,
    #[serde(default, rename = "component")]
    components: Vec<crate::components::Entry>,
    #[serde(default, rename = "image")]
    images: Vec<Image>,
}

/// The lock file a profile in `dir` uses: `artifacts.toml` in `dir` or
/// the nearest directory above it.
pub fn discover(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join(FILE_NAME))
        .find(|p| p.is_file())
}

/// What the lock file gives a role: downloaded artifacts, components
/// built from source and container images built from profiles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lock {
    pub artifacts: Vec<Artifact>,
    pub components: Vec<crate::components::Entry>,
    pub images: Vec<Image>,
}

/// A container image made from a profile (`Format=oci`) and installed as
/// its OCI archive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub name: String,
    /// The profile's directory, relative to the lock file.
    pub profile: PathBuf,
    pub install: PathBuf,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
}

/// One pinned artifact from the lock file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    pub sha256: String,
    pub install: PathBuf,
    #[serde(default = "default_mode")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

fn default_mode() -> String {
    "0644".to_owned()
}

/// An artifact whose bytes were verified: `file` holds exactly `sha256`.
#[derive(Debug, Clone)]
pub struct Verified {
    pub artifact: Artifact,
    pub file: PathBuf,
    pub mode: u32,
}

/// The lock file's artifacts and components for `role` (all when `role` is
/// `None`), validated.
pub fn load(path: &Path, role: Option<&str>) -> anyhow::Result<Lock> {
    let lock: LockFile = crate::pins::read_toml(path)?;
    let mut seen = std::collections::HashSet::new();
    for component in &lock.components {
        if !seen.insert(component.name.clone()) {
            bail!(
                "{}: component {:?} listed twice",
                path.display(),
                component.name
            );
        }
    }
    for artifact in &lock.artifacts {
        let at = || format!("{}: artifact {:?}", path.display(), artifact.name);
        if !seen.insert(artifact.name.clone()) {
            bail!("{}: listed twice", at());
        }
        if artifact.url.is_some() == artifact.path.is_some() {
            bail!("{}: give exactly one of `url` and `path`", at());
        }
        if artifact.sha256.len() != 64
            || !artifact
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            bail!("{}: `sha256` must be 64 lowercase hex digits", at());
        }
        check_install_path(&artifact.install).with_context(at)?;
        parse_mode(&artifact.mode).with_context(at)?;
    }
    for image in &lock.images {
        let at = || format!("{}: image {:?}", path.display(), image.name);
        if !seen.insert(image.name.clone()) {
            bail!("{}: listed twice", at());
        }
        check_install_path(&image.install).with_context(at)?;
        let dir = path.parent().unwrap_or(Path::new(".")).join(&image.profile);
        if !dir.is_dir() {
            bail!("{}: profile {} is not a directory", at(), dir.display());
        }
    }
    let for_role = |roles: &Option<Vec<String>>| match (roles, role) {
        (Some(roles), Some(role)) => roles.iter().any(|r| r == role),
        _ => true,
    };
    let images = lock
        .images
        .into_iter()
        .filter(|i| for_role(&i.roles))
        .collect();
    let artifacts = lock
        .artifacts
        .into_iter()
        .filter(|a| match (&a.roles, role) {
            (Some(roles), Some(role)) => roles.iter().any(|r| r == role),
            _ => true,
        })
        .collect();
    Ok(Lock {
        artifacts,
        components: crate::components::for_role(lock.components, role),
        images,
    })
}

pub(crate) fn check_install_path(path: &Path) -> anyhow::Result<()> {
    if !path.is_absolute() {
        bail!("`install` path {} must be absolute", path.display());
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        bail!(
            "`install` path {} escapes the image root ('..')",
            path.display()
        );
    }
    if path.parent().is_none() || path == Path::new("/") {
        bail!("`install` path {} names no file", path.display());
    }
    Ok(())
}

fn parse_mode(mode: &str) -> anyhow::Result<u32> {
    match u32::from_str_radix(mode, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => bail!("`mode` {mode:?} is not an octal file mode such as \"0755\""),
    }
}

/// Fetches (or finds in the cache) and verifies every artifact. Local paths are
/// relative to the lock file's directory.
pub fn fetch(
    artifacts: &[Artifact],
    lock_dir: &Path,
    cache: &Cache,
    progress: &Progress,
) -> anyhow::Result<Vec<Verified>> {
    let mut out = Vec::new();
    for artifact in artifacts {
        let mode = parse_mode(&artifact.mode)?;
        let file = match (&artifact.path, &artifact.url) {
            (Some(path), _) => {
                let path = lock_dir.join(path);
                let actual = crate::digest::file(&path)
                    .with_context(|| format!("artifact {:?}", artifact.name))?;
                check_digest(artifact, &actual, &path.display().to_string())?;
                path
            }
            (None, Some(url)) => download(artifact, url, cache, progress)?,
            (None, None) => bail!("artifact {:?} has neither `url` nor `path`", artifact.name),
        };
        out.push(Verified {
            artifact: artifact.clone(),
            file,
            mode,
        });
    }
    Ok(out)
}

fn check_digest(artifact: &Artifact, actual: &str, source: &str) -> anyhow::Result<()> {
    if actual != artifact.sha256 {
        bail!(
            "artifact {:?}: sha256 mismatch for {source}: the lock file pins {}, the file has {actual}",
            artifact.name,
            artifact.sha256
        );
    }
    Ok(())
}

fn download(
    artifact: &Artifact,
    url: &str,
    cache: &Cache,
    progress: &Progress,
) -> anyhow::Result<PathBuf> {
    let dest = cache.artifact(&artifact.sha256);
    if dest.is_file() {
        // Entries only ever land under their digest after verification, but a
        // disk error could still have damaged one: verify again, it is cheap.
        if crate::digest::file(&dest)? == artifact.sha256 {
            return Ok(dest);
        }
        std::fs::remove_file(&dest)?;
    }
    if let Some(path) = url.strip_prefix("file://") {
        let actual = crate::digest::file(Path::new(path))?;
        check_digest(artifact, &actual, url)?;
        return Ok(PathBuf::from(path));
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        bail!("artifact {:?}: unsupported URL {url}", artifact.name);
    }
    // Written beside its cache entry and renamed into place only once its
    // digest matched: an interrupted download leaves no entry.
    let mut file = fsutil::AtomicFile::create(&dest, fsutil::PUBLIC)
        .with_context(|| format!("creating a file next to {}", dest.display()))?;
    let response = ureq::get(url)
        .call()
        .with_context(|| format!("downloading artifact {:?} from {url}", artifact.name))?;
    let total = response
        .header("Content-Length")
        .and_then(|l| l.parse::<u64>().ok());
    let bar = progress.bytes(&format!("downloading {}", artifact.name), total);
    let mut reader = response.into_reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("downloading {url}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .with_context(|| format!("writing next to {}", dest.display()))?;
        bar.inc(n as u64);
    }
    bar.finish();
    check_digest(artifact, &hex::encode(hasher.finalize()), url)?;
    file.commit()
        .with_context(|| format!("storing {}", dest.display()))?;
    Ok(dest)
}

/// Installs verified artifacts into the image tree.
pub fn install(verified: &[Verified], tree: &Path) -> anyhow::Result<()> {
    for v in verified {
        let bytes = std::fs::read(&v.file)
            .with_context(|| format!("reading artifact {}", v.file.display()))?;
        // The bytes read now are the bytes installed: check them once more.
        if crate::digest::bytes(&bytes) != v.artifact.sha256 {
            bail!(
                "artifact {:?} changed on disk after verification",
                v.artifact.name
            );
        }
        overlay::write_file(tree, &v.artifact.install, &bytes, v.mode)
            .with_context(|| format!("installing artifact {:?}", v.artifact.name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(text: &str) -> anyhow::Result<Vec<Artifact>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, text).unwrap();
        load(&path, Some("worker")).map(|l| l.artifacts)
    }

    const SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn validates_entries() {
        let ok = format!("[[artifact]]\nname = \"a\"\npath = \"a\"\nsha256 = \"{SHA}\"\ninstall = \"/usr/bin/a\"\nmode = \"0755\"\nroles = [\"worker\"]\n[[artifact]]\nname = \"b\"\npath = \"b\"\nsha256 = \"{SHA}\"\ninstall = \"/b\"\nroles = [\"control-plane\"]\n");
        let loaded = lock(&ok).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].name, "a");
        let escape = format!("[[artifact]]\nname = \"a\"\npath = \"a\"\nsha256 = \"{SHA}\"\ninstall = \"/usr/../../etc/passwd\"\n");
        assert!(format!("{:#}", lock(&escape).unwrap_err()).contains("escapes"));
        let both = format!("[[artifact]]\nname = \"a\"\npath = \"a\"\nurl = \"https://x\"\nsha256 = \"{SHA}\"\ninstall = \"/a\"\n");
        assert!(format!("{:#}", lock(&both).unwrap_err()).contains("exactly one"));
        let typo = "[[artifact]]\nname = \"a\"\nsha = \"x\"\n";
        let err = format!("{:#}", lock(typo).unwrap_err());
        assert!(err.contains("artifacts.toml:"), "{err}");
        let mode = format!("[[artifact]]\nname = \"a\"\npath = \"a\"\nsha256 = \"{SHA}\"\ninstall = \"/a\"\nmode = \"rwx\"\n");
        assert!(format!("{:#}", lock(&mode).unwrap_err()).contains("octal"));
    }

    /// `[[image]]`: for the roles it names, its profile a directory, its
    /// name unique among everything the lock file lists.
    #[test]
    fn images_are_checked_and_given_to_their_roles() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pause")).unwrap();
        let path = dir.path().join(FILE_NAME);
        let load_text = |text: &str, role: &str| {
            std::fs::write(&path, text).unwrap();
            load(&path, Some(role))
        };
        let image = "[[image]]\nname = \"pause\"\nprofile = \"pause\"\ninstall = \"/usr/lib/p.oci.tar\"\nroles = [\"worker\"]\n";
        assert_eq!(load_text(image, "worker").unwrap().images.len(), 1);
        assert!(load_text(image, "control-plane").unwrap().images.is_empty());
        let err = load_text(
            &image.replace("profile = \"pause\"", "profile = \"nope\""),
            "worker",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("image \"pause\"") && err.contains("not a directory"),
            "{err}"
        );
        let err = load_text(&format!("{image}{image}"), "worker")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listed twice"), "{err}");
        let err = load_text(&image.replace("/usr/lib/p.oci.tar", "usr/p"), "worker").unwrap_err();
        assert!(format!("{err:#}").contains("must be absolute"), "{err:#}");
    }

    #[test]
    fn mismatch_stops_and_caches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "abc").unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        let good = Artifact {
            name: "a".into(),
            url: None,
            path: Some("a".into()),
            sha256: SHA.into(),
            install: "/usr/bin/a".into(),
            mode: "0755".into(),
            roles: None,
        };
        let verified = fetch(
            std::slice::from_ref(&good),
            dir.path(),
            &cache,
            &Progress::quiet(),
        )
        .unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        install(&verified, &tree).unwrap();
        assert_eq!(std::fs::read(tree.join("usr/bin/a")).unwrap(), b"abc");
        let bad = Artifact {
            sha256: SHA.replace('b', "c"),
            ..good
        };
        let err = fetch(&[bad], dir.path(), &cache, &Progress::quiet()).unwrap_err();
        assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    }
}
