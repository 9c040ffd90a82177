//! mkosi-compatible profiles: reading a configuration tree into one resolved
//! configuration.
//!
//! [`resolve`] walks a tree in mkosi's order (`mkosi.local.conf`, `mkosi.conf`,
//! default paths such as `mkosi.extra/`, `mkosi.conf.d/`, selected
//! `mkosi.profiles/`), following `Include=` as it goes; [`ini`] splits files,
//! [`conditions`] decides which files apply, [`specifier`] and the crate's
//! [`template`](crate::template) module expand values, [`value`] types them
//! against the [`settings`] table. [`summary`] renders the result.

pub mod compat;
pub mod conditions;
pub mod default_paths;
pub mod error;
mod images;
pub mod ini;
mod resolve;
pub mod settings;
pub mod specifier;
pub mod summary;
pub mod value;
pub mod warning;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use error::{ConfigError, ErrorKind};
pub use resolve::{resolve, ResolveOptions};
pub use value::Value;
pub use warning::{Warning, WarningKind};

/// A fully resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The directory the configuration was read from (for a sub-image, its
    /// entry in `mkosi.images/`: a directory or a `NAME.conf` file).
    pub directory: PathBuf,
    /// The role (profile directory name under `profiles/`), if built by role.
    pub role: Option<String>,
    /// Every setting that has a value, by mkosi name, defaults included.
    pub values: BTreeMap<&'static str, Value>,
    /// Files that were applied, in order.
    pub files: Vec<PathBuf>,
    /// What the builder read but does not act on as written (unknown or
    /// misplaced settings, settings it does not implement, ...).
    pub warnings: Vec<Warning>,
    /// Sub-images from `mkosi.images/`, by name, in the order mkosi reads them.
    pub subimages: Vec<(String, Config)>,
}

impl Config {
    /// A value by its key (as in the JSON summary) or by any name a
    /// configuration file may use for the setting.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values
            .get(name)
            .or_else(|| match compat::resolve(name) {
                compat::Name::Setting(setting, _) => self.values.get(setting.key),
                _ => None,
            })
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
