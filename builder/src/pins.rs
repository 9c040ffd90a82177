//! Pinned component versions (`profiles/versions.toml`).
//!
//! The one place where the Kubernetes and etcd versions baked into images are
//! set. Templates see the file's tables as `pins` (`{{ pins.etcd.version }}`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// File name of the pins file, looked up next to (or above) a profile directory.
pub const FILE_NAME: &str = "versions.toml";

/// The parsed pins file, kept as a generic table for templates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pins {
    /// Where the pins came from, if from a file.
    pub path: Option<PathBuf>,
    pub table: toml::Table,
}

impl Pins {
    /// Reads and parses a pins file; errors name the file and line.
    pub fn load(path: &Path) -> anyhow::Result<Pins> {
        let table: toml::Table = read_toml(path)?;
        Ok(Pins {
            path: Some(path.to_owned()),
            table,
        })
    }

    /// Finds `versions.toml` in `dir` or the nearest ancestor holding one.
    pub fn discover(dir: &Path) -> anyhow::Result<Pins> {
        for ancestor in dir.ancestors() {
            let candidate = ancestor.join(FILE_NAME);
            if candidate.is_file() {
                return Pins::load(&candidate);
            }
        }
        Ok(Pins::default())
    }

    /// A version string by component name (`pins.etcd.version`).
    pub fn version(&self, component: &str) -> Option<&str> {
        self.table.get(component)?.get("version")?.as_str()
    }
}

/// Reads and parses a TOML file of the builder's (pins, the artifacts lock,
/// `component.toml`); errors name the file and line.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text[..span.start].matches('\n').count() + 1)
            .unwrap_or(0);
        anyhow::anyhow!("{}:{line}: {}", path.display(), e.message())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_reports_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "[etcd]\nversion = \"3.4.23\"\n").unwrap();
        let pins = Pins::discover(&dir.path().join("a/b")).unwrap();
        assert_eq!(pins.version("etcd"), Some("3.4.23"));
        std::fs::write(&path, "[etcd]\nversion = \n").unwrap();
        let err = Pins::load(&path).unwrap_err().to_string();
        assert!(err.contains("versions.toml:2:"), "{err}");
    }
}
