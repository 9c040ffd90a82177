//! `component.toml`: what the builder builds from a component's Go module and
//! where each program goes in the image.
//!
//! ```toml
//! pin = "etcd"                          # the table of profiles/versions.toml
//! upstream = "go.etcd.io/etcd/server/v3" # go.mod must require it at v{version}
//! cgo = false
//! tags = []
//! ldflags = ["-s", "-w", "-X go.etcd.io/etcd/api/v3/version.GitSHA=v{version}"]
//!
//! [[binary]]
//! package = "./cmd/etcd"                # a main package of the module or a dependency
//! install = "/usr/bin/etcd"
//! links = []                            # symlinks to it (a multicall binary's names)
//! ```
//!
//! `ldflags` may use `{version}`, `{major}`, `{minor}`, `{patch}` (of the pin)
//! and `{build_date}` (SOURCE_DATE_EPOCH, RFC 3339 UTC).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

/// File name of a component's build description, in its module directory.
pub const FILE_NAME: &str = "component.toml";

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub pin: String,
    pub upstream: String,
    #[serde(default)]
    pub cgo: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub ldflags: Vec<String>,
    /// If set, every `replace` of go.mod must point at this version of the
    /// same module (Kubernetes' staging modules: `v0.{minor}.{patch}`).
    #[serde(default)]
    pub replaces: Option<String>,
    #[serde(rename = "binary")]
    pub binaries: Vec<Binary>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Binary {
    pub package: String,
    pub install: PathBuf,
    #[serde(default)]
    pub links: Vec<PathBuf>,
}

impl Binary {
    /// The file `go build -o DIR/` writes for this package: its last path
    /// element, or the one before a major-version suffix (`.../etcdctl/v3`).
    pub fn output_name(&self) -> &str {
        let mut parts = self.package.rsplit('/');
        let last = parts.next().unwrap_or_default();
        // Go drops a major-version suffix v2 and above (v0, v1 name no major).
        let is_major = last.len() > 1
            && last.starts_with('v')
            && last[1..].bytes().all(|b| b.is_ascii_digit())
            && last[1..].parse::<u64>().is_ok_and(|n| n >= 2);
        match (is_major, parts.next()) {
            (true, Some(before)) => before,
            _ => last,
        }
    }
}

impl Spec {
    /// Reads and validates `dir/component.toml`; errors name the file and line.
    pub fn load(dir: &Path) -> anyhow::Result<Spec> {
        let path = dir.join(FILE_NAME);
        let spec: Spec = crate::pins::read_toml(&path)?;
        spec.validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(spec)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.binaries.is_empty() {
            bail!("no [[binary]] to build");
        }
        let mut names = std::collections::HashSet::new();
        let mut paths = std::collections::HashSet::new();
        for binary in &self.binaries {
            if binary.package.is_empty()
                || binary.package.starts_with('-')
                || binary.package.contains("...")
            {
                bail!(
                    "binary package {:?} is not a Go package path",
                    binary.package
                );
            }
            let output = binary.output_name();
            if output.is_empty() || output == "." || output == ".." {
                bail!("binary package {:?} names no program", binary.package);
            }
            if !names.insert(output.to_owned()) {
                bail!(
                    "two binaries would both be built as {:?}",
                    binary.output_name()
                );
            }
            for path in std::iter::once(&binary.install).chain(&binary.links) {
                crate::artifacts::check_install_path(path)?;
                if !paths.insert(path.clone()) {
                    bail!("{} is installed twice", path.display());
                }
            }
        }
        for flag in self.tags.iter().chain(&self.ldflags) {
            if flag.contains('\'') || flag.contains('"') {
                bail!("{flag:?}: quotes are not passed through to the Go linker");
            }
        }
        Ok(())
    }

    /// The version every replace must point at, for the pin `version`.
    pub fn expand_replaces(&self, version: &str) -> anyhow::Result<Option<String>> {
        match &self.replaces {
            Some(template) => Ok(Some(expand(template, &version_vars(version, "")?)?)),
            None => Ok(None),
        }
    }

    /// The linker flags with the pin's version and the build date filled in.
    pub fn expand_ldflags(&self, version: &str, epoch: u64) -> anyhow::Result<Vec<String>> {
        let date = time::OffsetDateTime::from_unix_timestamp(epoch as i64)?
            .format(&time::format_description::well_known::Rfc3339)?;
        let vars = version_vars(version, &date)?;
        self.ldflags
            .iter()
            .map(|flag| expand(flag, &vars))
            .collect()
    }
}

/// `{version}`, `{major}`, `{minor}`, `{patch}` of a pin and `{build_date}`.
fn version_vars<'a>(
    version: &'a str,
    date: &'a str,
) -> anyhow::Result<[(&'static str, &'a str); 5]> {
    let mut parts = version.splitn(3, '.');
    let (major, minor, patch) = (parts.next(), parts.next(), parts.next());
    let (Some(major), Some(minor), Some(patch)) = (major, minor, patch) else {
        bail!("pinned version {version:?} is not MAJOR.MINOR.PATCH");
    };
    Ok([
        ("version", version),
        ("major", major),
        ("minor", minor),
        ("patch", patch),
        ("build_date", date),
    ])
}

fn expand(flag: &str, vars: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = flag;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            bail!("ldflag {flag:?}: unclosed '{{'");
        };
        let name = &rest[open + 1..open + close];
        let Some((_, value)) = vars.iter().find(|(n, _)| *n == name) else {
            bail!(
                "ldflag {flag:?}: unknown variable {{{name}}} (known: version, major, minor, patch, build_date)"
            );
        };
        out.push_str(value);
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> anyhow::Result<Spec> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), text).unwrap();
        Spec::load(dir.path())
    }

    const HEAD: &str = "pin = \"etcd\"\nupstream = \"go.etcd.io/etcd/server/v3\"\n";

    #[test]
    fn output_names_follow_go_build() {
        let name = |package: &str| {
            Binary {
                package: package.into(),
                install: "/x".into(),
                links: vec![],
            }
            .output_name()
            .to_owned()
        };
        assert_eq!(name("./cmd/etcd"), "etcd");
        assert_eq!(name("go.etcd.io/etcd/etcdctl/v3"), "etcdctl");
        assert_eq!(name("k8s.io/kubernetes/cmd/kubelet"), "kubelet");
        assert_eq!(name("example.com/v2tool"), "v2tool");
        assert_eq!(name("example.com/tool/v1"), "v1");
    }

    #[test]
    fn refuses_bad_specs_naming_the_file() {
        let ok =
            format!("{HEAD}[[binary]]\npackage = \"./cmd/etcd\"\ninstall = \"/usr/bin/etcd\"\n");
        assert_eq!(load(&ok).unwrap().binaries.len(), 1);
        let typo = format!("{HEAD}ldflag = []\n[[binary]]\npackage = \"a\"\ninstall = \"/a\"\n");
        let err = format!("{:#}", load(&typo).unwrap_err());
        assert!(err.contains("component.toml:3"), "{err}");
        let none = HEAD.to_owned() + "binary = []\n";
        assert!(format!("{:#}", load(&none).unwrap_err()).contains("no [[binary]]"));
        let escape = format!("{HEAD}[[binary]]\npackage = \"a\"\ninstall = \"/usr/../etc/a\"\n");
        assert!(format!("{:#}", load(&escape).unwrap_err()).contains("escapes"));
        let twice = format!("{HEAD}[[binary]]\npackage = \"a/x\"\ninstall = \"/a\"\n[[binary]]\npackage = \"b/x/v2\"\ninstall = \"/b\"\n");
        assert!(format!("{:#}", load(&twice).unwrap_err()).contains("both be built"));
        let link =
            format!("{HEAD}[[binary]]\npackage = \"a\"\ninstall = \"/a\"\nlinks = [\"/a\"]\n");
        assert!(format!("{:#}", load(&link).unwrap_err()).contains("installed twice"));
    }

    #[test]
    fn ldflags_expand_the_pin_and_the_date() {
        let spec = Spec {
            pin: "kubernetes".into(),
            upstream: "k8s.io/kubernetes".into(),
            cgo: false,
            tags: vec![],
            replaces: Some("v0.{minor}.{patch}".into()),
            ldflags: vec![
                "-X v.gitVersion=v{version}".into(),
                "-X v.gitMinor={minor}".into(),
                "-X v.buildDate={build_date}".into(),
            ],
            binaries: vec![],
        };
        let flags = spec.expand_ldflags("1.37.2", 0).unwrap();
        assert_eq!(
            flags,
            [
                "-X v.gitVersion=v1.37.2",
                "-X v.gitMinor=37",
                "-X v.buildDate=1970-01-01T00:00:00Z"
            ]
        );
        assert!(spec.expand_ldflags("1.37", 0).is_err());
        assert_eq!(
            spec.expand_replaces("1.37.2").unwrap().as_deref(),
            Some("v0.37.2")
        );
        let unknown = Spec {
            ldflags: vec!["-X a={commit}".into()],
            ..spec.clone()
        };
        let err = unknown.expand_ldflags("1.2.3", 0).unwrap_err().to_string();
        assert!(err.contains("unknown variable {commit}"), "{err}");
        let unclosed = Spec {
            ldflags: vec!["-X a={version".into()],
            ..spec
        };
        assert!(unclosed.expand_ldflags("1.2.3", 0).is_err());
    }
}
