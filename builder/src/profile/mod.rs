//! mkosi-compatible profiles: reading a configuration tree into one resolved
//! configuration.
//!
//! [`resolve`] walks a tree in mkosi's order (`mkosi.local.conf`, `mkosi.conf`,
//! default paths such as `mkosi.extra/`, `mkosi.conf.d/`, selected
//! `mkosi.profiles/`), following `Include=` as it goes; [`ini`] splits files,
//! [`conditions`] decides which files apply, [`specifier`] and the crate's
//! [`template`](crate::template) module expand values, [`value`] types them
//! against the [`settings`] table. [`summary`] renders the result.

pub mod conditions;
pub mod error;
pub mod ini;
mod resolve;
pub mod settings;
pub mod specifier;
pub mod summary;
pub mod value;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

pub use error::{ConfigError, ErrorKind};
pub use resolve::{resolve, ResolveOptions};
pub use value::Value;

/// A fully resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The directory the configuration was read from.
    pub directory: PathBuf,
    /// The role (profile directory name under `profiles/`), if built by role.
    pub role: Option<String>,
    /// Every setting that has a value, by mkosi name, defaults included.
    pub values: BTreeMap<&'static str, Value>,
    /// Files that were applied, in order.
    pub files: Vec<PathBuf>,
    /// Settings that were set but are not implemented by the builder.
    pub warnings: Vec<Warning>,
}

impl Config {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// A single-value setting as text (`None` if unset).
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_text)
    }

    /// A list setting (empty if unset).
    pub fn list(&self, name: &str) -> &[String] {
        self.get(name).map_or(&[], Value::as_list)
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.get(name)? {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn int(&self, name: &str) -> Option<u64> {
        match self.get(name)? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// `Environment=` as pairs; a bare `KEY` takes the builder's own value.
    pub fn environment(&self) -> Vec<(String, String)> {
        self.list("Environment")
            .iter()
            .filter_map(|item| match item.split_once('=') {
                Some((k, v)) => Some((k.to_owned(), v.to_owned())),
                None => std::env::var(item).ok().map(|v| (item.clone(), v)),
            })
            .collect()
    }

    /// The context overlay templates are rendered with: the same variables as
    /// configuration templates, final values, plus `config` (the summary JSON).
    pub fn template_context(&self, pins: &crate::pins::Pins) -> tera::Context {
        let mut context = tera::Context::new();
        if let Some(role) = &self.role {
            context.insert("role", role);
        }
        for (key, setting) in [
            ("version", "ImageVersion"),
            ("distribution", "Distribution"),
            ("release", "Release"),
            ("architecture", "Architecture"),
            ("image_id", "ImageId"),
            ("format", "Format"),
        ] {
            if let Some(value) = self.get(setting) {
                context.insert(key, &value.display());
            }
        }
        context.insert("profiles", self.list("Profiles"));
        context.insert("pins", &pins.table);
        let env: BTreeMap<String, String> = self.environment().into_iter().collect();
        context.insert("env", &env);
        context.insert("config", &summary::to_json(self));
        context
    }
}

/// A setting the builder accepted but does not act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: PathBuf,
    pub line: usize,
    pub setting: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line != 0 {
            write!(f, ":{}", self.line)?;
        }
        write!(
            f,
            ": {}= is not implemented by the builder and has no effect",
            self.setting
        )
    }
}
