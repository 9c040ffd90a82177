//! What a component's Go module says: its requirements (from `go mod edit
//! -json`, Go's own reading of go.mod), its go.sum lines, and the modules a
//! built program links (`go version -m`, from the binary's build information).

use std::path::Path;

use anyhow::{bail, Context as _};

/// The parts of go.mod the builder checks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct GoMod {
    #[serde(rename = "Go", default)]
    pub go: String,
    #[serde(rename = "Require", default, deserialize_with = "null_as_empty")]
    pub require: Vec<Requirement>,
    #[serde(rename = "Replace", default, deserialize_with = "null_as_empty")]
    pub replace: Vec<Replacement>,
}

/// `go mod edit -json` writes `null` for a list go.mod does not have.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::Deserialize as _;
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Replacement {
    #[serde(rename = "Old")]
    pub old: ModuleVersion,
    #[serde(rename = "New")]
    pub new: ModuleVersion,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ModuleVersion {
    #[serde(rename = "Path")]
    pub path: String,
    #[serde(rename = "Version", default)]
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Requirement {
    #[serde(rename = "Path")]
    pub path: String,
    #[serde(rename = "Version")]
    pub version: String,
}

impl GoMod {
    /// go.mod of the module in `dir`, read by the Go tool itself.
    pub fn read(dir: &Path) -> anyhow::Result<GoMod> {
        let json = super::gobuild::go(format!("reading {}/go.mod", dir.display()))
            .args(["mod", "edit", "-json"])
            .current_dir(dir)
            .read()?;
        serde_json::from_slice(&json)
            .with_context(|| format!("parsing `go mod edit -json` of {}", dir.display()))
    }

    /// The version go.mod requires of `module`.
    pub fn required(&self, module: &str) -> Option<&str> {
        self.require
            .iter()
            .find(|r| r.path == module)
            .map(|r| r.version.as_str())
    }
}

/// The `h1:` hash go.sum records for the contents of `module@version`.
pub fn sum<'a>(go_sum: &'a str, module: &str, version: &str) -> Option<&'a str> {
    go_sum.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next(), fields.next()) {
            (Some(m), Some(v), Some(hash)) if m == module && v == version => Some(hash),
            _ => None,
        }
    })
}

/// A module linked into a program.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Module {
    pub path: String,
    pub version: String,
    /// The go.sum hash (`h1:...`) the program was built from.
    pub sum: String,
}

/// The dependency modules recorded in a Go program's build information
/// (`go version -m`), replacements applied: what the program contains.
pub fn linked_modules(binary: &Path) -> anyhow::Result<Vec<Module>> {
    let text = super::gobuild::go(format!(
        "reading the build information of {}",
        binary.display()
    ))
    .args(["version", "-m"])
    .arg(binary)
    .read_string()?;
    parse_build_info(&text).with_context(|| format!("`go version -m {}`", binary.display()))
}

fn parse_build_info(text: &str) -> anyhow::Result<Vec<Module>> {
    let mut modules: Vec<Module> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').filter(|f| !f.is_empty()).collect();
        match fields.as_slice() {
            ["dep", path, version, rest @ ..] => modules.push(Module {
                path: (*path).to_owned(),
                version: (*version).to_owned(),
                sum: rest.first().copied().unwrap_or_default().to_owned(),
            }),
            ["=>", path, version, rest @ ..] => {
                let Some(last) = modules.last_mut() else {
                    bail!("a replacement before any dependency: {line:?}");
                };
                *last = Module {
                    path: (*path).to_owned(),
                    version: (*version).to_owned(),
                    sum: rest.first().copied().unwrap_or_default().to_owned(),
                };
            }
            _ => {}
        }
    }
    Ok(modules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_sum_lookup_takes_the_content_hash_not_the_go_mod_hash() {
        let go_sum = "k8s.io/api v0.37.2 h1:AAA=\nk8s.io/api v0.37.2/go.mod h1:BBB=\n\
                      k8s.io/kubernetes v1.37.2/go.mod h1:CCC=\nk8s.io/kubernetes v1.37.2 h1:DDD=\n";
        assert_eq!(sum(go_sum, "k8s.io/api", "v0.37.2"), Some("h1:AAA="));
        assert_eq!(sum(go_sum, "k8s.io/kubernetes", "v1.37.2"), Some("h1:DDD="));
        assert_eq!(sum(go_sum, "k8s.io/kubernetes", "v1.37.1"), None);
        assert_eq!(sum("garbage\n\n k8s.io/api", "k8s.io/api", "v0.37.2"), None);
    }

    #[test]
    fn go_mod_json_with_absent_lists() {
        let json = r#"{"Module":{"Path":"x"},"Go":"1.26.0","Require":null,"Replace":null}"#;
        let go_mod: GoMod = serde_json::from_str(json).unwrap();
        assert!(go_mod.require.is_empty() && go_mod.replace.is_empty());
        let json = r#"{"Go":"1.26.0","Require":[{"Path":"k8s.io/kubernetes","Version":"v1.37.2"}],
            "Replace":[{"Old":{"Path":"k8s.io/api"},"New":{"Path":"k8s.io/api","Version":"v0.37.2"}}]}"#;
        let go_mod: GoMod = serde_json::from_str(json).unwrap();
        assert_eq!(go_mod.required("k8s.io/kubernetes"), Some("v1.37.2"));
        assert_eq!(go_mod.replace[0].new.version, "v0.37.2");
    }

    #[test]
    fn build_info_applies_replacements() {
        let text = "/tmp/kubelet: go1.26.8\n\
            \tpath\tk8s.io/kubernetes/cmd/kubelet\n\
            \tmod\tglobular.dev/components/kubernetes\t(devel)\t\n\
            \tdep\tgithub.com/beorn7/perks\tv1.0.1\th1:VlbK=\n\
            \tdep\tk8s.io/api\tv0.0.0\t\n\
            \t=>\tk8s.io/api\tv0.37.2\th1:AAA=\n\
            \tbuild\t-buildmode=exe\n";
        let modules = parse_build_info(text).unwrap();
        assert_eq!(
            modules,
            [
                Module {
                    path: "github.com/beorn7/perks".into(),
                    version: "v1.0.1".into(),
                    sum: "h1:VlbK=".into()
                },
                Module {
                    path: "k8s.io/api".into(),
                    version: "v0.37.2".into(),
                    sum: "h1:AAA=".into()
                },
            ]
        );
        assert!(parse_build_info("\t=>\tx\tv1\n").is_err());
        assert!(parse_build_info("").unwrap().is_empty());
    }
}
