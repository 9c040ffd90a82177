//! Walks a configuration tree in mkosi's order and folds every assignment into
//! one configuration.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::compat::{self, Name};
use super::conditions::{self, Facts, Outcome};
use super::default_paths::{self, Source};
use super::error::{ConfigError, ErrorKind};
use super::images;
use super::ini;
use super::settings::{self, Section, Setting, SETTINGS};
use super::specifier;
use super::value::{self, Update, Value};
use super::{Config, Warning, WarningKind};
use crate::pins::Pins;
use crate::template;

/// What to resolve and the command-line overrides that apply on top.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// The configuration directory (holding `mkosi.conf` and friends).
    pub directory: PathBuf,
    /// The role being built, for templates (`{{ role }}`).
    pub role: Option<String>,
    /// Profiles selected on the command line (`--profile`).
    pub profiles: Vec<String>,
    /// `--version`: overrides `ImageVersion=`.
    pub image_version: Option<String>,
    /// `--set KEY=VALUE`: added to `Environment=` and the template context.
    pub environment: Vec<(String, String)>,
    /// Pinned component versions for templates.
    pub pins: Pins,
}

/// Resolves the configuration tree at `options.directory`.
pub fn resolve(options: &ResolveOptions) -> Result<Config, ConfigError> {
    let top = std::path::absolute(&options.directory)
        .map(|p| value::normalize(&p))
        .map_err(|e| ConfigError::new(&options.directory, 0, ErrorKind::Io(e)))?;
    // mkosi reads a tree kept in a `mkosi/` subdirectory of a project.
    let nested = top.join("mkosi");
    let top = if config_file(&top, "mkosi.conf")?.is_none()
        && !top.join("mkosi.tools.conf").exists()
        && config_file(&nested, "mkosi.conf")?.is_some()
    {
        nested
    } else {
        top
    };
    if !top.is_dir() {
        return Err(ConfigError::new(
            &top,
            0,
            ErrorKind::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not a configuration directory",
            )),
        ));
    }
    let mut resolver = Resolver::new(options, &top, MAIN);
    resolver.parse_dir(&top, Dir::Top)?;
    let mut subimages = resolver.parse_subimages()?;
    let mut config = resolver.finish();
    match config.get("Dependencies") {
        Some(Value::List(wanted)) => {
            subimages = images::select(subimages, wanted, |c| c.list("Dependencies")).map_err(
                |missing| {
                    ConfigError::new(
                        &top,
                        0,
                        ErrorKind::InvalidValue {
                            key: "Dependencies".into(),
                            reason: format!("no image {missing:?} in mkosi.images/"),
                        },
                    )
                },
            )?;
        }
        _ if !subimages.is_empty() => {
            let names = subimages.iter().map(|(name, _)| name.clone()).collect();
            config.values.insert("Dependencies", Value::List(names));
        }
        _ => {}
    }
    for (name, subimage) in &subimages {
        config.warnings.extend(subimage.warnings.iter().cloned());
        config.warnings.push(Warning::new(
            &subimage.directory,
            0,
            name.clone(),
            WarningKind::SubimageNotBuilt,
        ));
    }
    config.subimages = subimages;
    Ok(config)
}

/// The name mkosi gives the top-level image (`[Match] Image=main`, `%I`).
const MAIN: &str = "main";

/// How a configuration directory is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// The tree itself or a sub-image directory: local overrides and profiles.
    Top,
    /// A directory given to `Include=`: its own profiles too, as in mkosi.
    Included,
    /// A `mkosi.conf.d/` subdirectory, a profile directory, `mkosi.local/`.
    Nested,
}

struct Resolver<'a> {
    options: &'a ResolveOptions,
    top: PathBuf,
    /// `main`, or the name of the sub-image being read.
    image: String,
    /// mkosi's working directory: the configuration directory being read.
    /// Relative paths in values resolve against it, in drop-in files too.
    cwd: Vec<PathBuf>,
    /// Values from the configuration files.
    config: BTreeMap<&'static str, Value>,
    /// Values from the command line and `mkosi.local.conf`: single values win
    /// over `config`, list items come after it.
    overrides: BTreeMap<&'static str, Value>,
    files: Vec<PathBuf>,
    warnings: Vec<Warning>,
    /// Canonical paths of the directories and files being parsed (cycle check).
    stack: Vec<PathBuf>,
    /// Canonical paths already parsed (each is parsed once).
    done: HashSet<PathBuf>,
    host_distribution: String,
    host_architecture: String,
}

impl<'a> Resolver<'a> {
    fn new(options: &'a ResolveOptions, top: &Path, image: &str) -> Resolver<'a> {
        Resolver {
            options,
            top: top.to_path_buf(),
            image: image.to_owned(),
            cwd: vec![top.to_path_buf()],
            config: BTreeMap::new(),
            overrides: BTreeMap::new(),
            files: Vec::new(),
            warnings: Vec::new(),
            stack: Vec::new(),
            done: HashSet::new(),
            host_distribution: host_distribution(),
            host_architecture: host_architecture(),
        }
    }

    fn parse_dir(&mut self, dir: &Path, how: Dir) -> Result<bool, ConfigError> {
        let key = canonical(dir, dir, 0)?;
        self.done.insert(key.clone());
        self.stack.push(key);
        self.cwd.push(dir.to_path_buf());
        let result = self.parse_dir_contents(dir, how);
        self.cwd.pop();
        self.stack.pop();
        result
    }

    fn parse_dir_contents(&mut self, dir: &Path, how: Dir) -> Result<bool, ConfigError> {
        if how == Dir::Top {
            if self.image == MAIN {
                self.apply_command_line();
            }
            let local_dir = dir.join("mkosi.local");
            if local_dir.is_dir() {
                self.parse_dir(&local_dir, Dir::Nested)?;
                self.promote_local();
            }
            if let Some(local) = config_file(dir, "mkosi.local.conf")? {
                self.parse_file(&local, None)?;
                self.promote_local();
            }
        }
        // mkosi picks up default paths after the [Match] of mkosi.conf held
        // and before its settings, so mkosi.conf overrides mkosi.version.
        match config_file(dir, "mkosi.conf")? {
            Some(conf) => {
                if !self.parse_file(&conf, Some(dir))? {
                    tracing::debug!(
                        "{}: [Match] failed, skipping {}",
                        conf.display(),
                        dir.display()
                    );
                    return Ok(false);
                }
            }
            None => self.default_paths(dir)?,
        }
        let dropins = dir.join("mkosi.conf.d");
        if dropins.is_dir() {
            for entry in sorted_entries(&dropins)? {
                if entry.is_dir() {
                    self.parse_dir(&entry, Dir::Nested)?;
                } else if is_conf(&entry) && !self.is_done(&entry)? {
                    self.parse_file(&entry, None)?;
                }
            }
        }
        if how != Dir::Nested {
            self.parse_profiles(dir)?;
        }
        Ok(true)
    }

    /// Each entry of `mkosi.images/` (a directory, or a `NAME.conf` file) as
    /// its own configuration, starting from the main image's values the way
    /// mkosi passes them down. Entries whose `[Match]` fails are left out.
    fn parse_subimages(&self) -> Result<Vec<(String, Config)>, ConfigError> {
        let dir = self.top.join("mkosi.images");
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        let mut subimages = Vec::new();
        for entry in sorted_entries(&dir)? {
            if !entry.is_dir() && !is_conf(&entry) {
                continue;
            }
            let file_name = entry.file_name().unwrap_or_default().to_string_lossy();
            let file_name = file_name
                .strip_suffix(template::SUFFIX)
                .unwrap_or(&file_name);
            let name = file_name
                .strip_suffix(".conf")
                .unwrap_or(file_name)
                .to_owned();
            if name.is_empty() || name == MAIN {
                return Err(ConfigError::new(
                    &entry,
                    0,
                    ErrorKind::InvalidValue {
                        key: "mkosi.images".into(),
                        reason: format!("{name:?} is not a sub-image name"),
                    },
                ));
            }
            let mut sub = Resolver::new(self.options, &self.top, &name);
            for setting in SETTINGS {
                let value = self
                    .effective(setting.key)
                    .or_else(|| self.default(setting.key));
                match value {
                    Some(v) if images::is_universal(setting) => {
                        sub.overrides.insert(setting.key, v);
                    }
                    Some(v) if images::is_inherited(setting) => {
                        sub.config.insert(setting.key, v);
                    }
                    _ => {}
                }
            }
            let passed = self
                .effective("PassEnvironment")
                .map(|v| v.as_list().to_vec())
                .unwrap_or_default();
            let environment: Vec<String> = self
                .environment_map()
                .into_iter()
                .filter(|(k, _)| passed.contains(k))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if !environment.is_empty() {
                sub.config.insert("Environment", Value::List(environment));
            }
            let applied = if entry.is_dir() {
                sub.parse_dir(&entry, Dir::Top)?
            } else {
                sub.parse_file(&entry, None)?
            };
            if applied {
                let mut config = sub.finish();
                config.directory = entry;
                subimages.push((name, config));
            } else {
                tracing::debug!("{}: [Match] failed, sub-image skipped", entry.display());
            }
        }
        Ok(subimages)
    }

    fn parse_profiles(&mut self, dir: &Path) -> Result<(), ConfigError> {
        let mut seen = HashSet::new();
        for profile in self.selected_profiles() {
            if !seen.insert(profile.clone()) {
                continue;
            }
            let profiles_dir = dir.join("mkosi.profiles");
            if profile.is_empty() || profile.contains('/') || profile.starts_with('.') {
                return Err(ConfigError::new(
                    &profiles_dir,
                    0,
                    ErrorKind::InvalidValue {
                        key: "Profiles".into(),
                        reason: format!("{profile:?} is not a profile name"),
                    },
                ));
            }
            let as_dir = profiles_dir.join(&profile);
            if as_dir.is_dir() {
                if !self.is_done(&as_dir)? {
                    self.parse_dir(&as_dir, Dir::Nested)?;
                }
            } else if let Some(file) = config_file(&profiles_dir, &format!("{profile}.conf"))? {
                if !self.is_done(&file)? {
                    self.parse_file(&file, None)?;
                }
            } else {
                tracing::debug!("profile {profile} has no mkosi.profiles/ entry");
            }
        }
        Ok(())
    }

    fn is_done(&self, path: &Path) -> Result<bool, ConfigError> {
        Ok(self.done.contains(&canonical(path, path, 0)?))
    }

    /// Parses one configuration file; `Ok(false)` if its `[Match]` failed.
    /// `defaults_of`: the directory whose default paths apply once the
    /// file's conditions hold (for its `mkosi.conf`).
    fn parse_file(&mut self, path: &Path, defaults_of: Option<&Path>) -> Result<bool, ConfigError> {
        let key = canonical(path, path, 0)?;
        self.done.insert(key.clone());
        self.stack.push(key);
        let result = self.parse_file_contents(path, defaults_of);
        self.stack.pop();
        result
    }

    /// mkosi's working directory, which relative paths resolve against.
    fn cwd(&self) -> PathBuf {
        self.cwd.last().unwrap_or(&self.top).clone()
    }

    fn parse_file_contents(
        &mut self,
        path: &Path,
        defaults_of: Option<&Path>,
    ) -> Result<bool, ConfigError> {
        let bytes = std::fs::read(path).map_err(|e| ConfigError::new(path, 0, ErrorKind::Io(e)))?;
        let mut text = utf8(path, bytes)?;
        if path.to_string_lossy().ends_with(template::SUFFIX) {
            text = template::render(&path.to_string_lossy(), &text, &self.template_context())
                .map_err(|e| ConfigError::new(path, e.line, ErrorKind::Template(e.message)))?;
        }
        let sections =
            ini::parse(&text).map_err(|(line, kind)| ConfigError::new(path, line, kind))?;
        let file_dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let expand = |raw: &str| self.expand(raw, &file_dir);
        let outcome = conditions::evaluate(&sections, self, &file_dir, &expand)
            .map_err(|(line, kind)| ConfigError::new(path, line, kind))?;
        match outcome {
            Outcome::Skip => {
                tracing::debug!("{}: conditions not met, skipped", path.display());
                return Ok(false);
            }
            Outcome::AssertionFailed { line, condition } => {
                return Err(ConfigError::new(
                    path,
                    line,
                    ErrorKind::AssertionFailed(condition),
                ));
            }
            Outcome::Apply => {}
        }
        tracing::debug!("{}: applied", path.display());
        self.files.push(path.to_path_buf());
        if let Some(dir) = defaults_of {
            self.default_paths(dir)?;
        }
        for section in &sections {
            let name = section.name.as_str();
            if conditions::SECTIONS.contains(&name) {
                continue;
            }
            let known = name == "Include"
                || Section::from_name(name).is_some()
                || compat::SECTIONS.iter().any(|(old, _)| *old == name);
            if !known {
                self.warn(path, section.line, name, WarningKind::UnknownSection);
                continue;
            }
            for entry in &section.entries {
                self.assign(path, &file_dir, name, entry)?;
            }
        }
        Ok(true)
    }

    fn warn(&mut self, path: &Path, line: usize, setting: &str, kind: WarningKind) {
        self.warnings.push(Warning::new(path, line, setting, kind));
    }

    fn assign(
        &mut self,
        path: &Path,
        file_dir: &Path,
        section_name: &str,
        entry: &ini::Entry,
    ) -> Result<(), ConfigError> {
        let at = |kind| ConfigError::new(path, entry.line, kind);
        let key = match entry.key.strip_prefix('@') {
            Some(key) => {
                let kind = WarningKind::Deprecated {
                    new: key.to_owned(),
                };
                self.warn(path, entry.line, &entry.key, kind);
                key
            }
            None => entry.key.as_str(),
        };
        let setting: &'static Setting = match compat::resolve(key) {
            Name::Setting(setting, deprecated) => {
                if deprecated {
                    let kind = WarningKind::Deprecated {
                        new: setting.name.to_owned(),
                    };
                    self.warn(path, entry.line, key, kind);
                }
                setting
            }
            Name::Retired(note) => {
                let kind = WarningKind::Retired { note: note.into() };
                self.warn(path, entry.line, key, kind);
                return Ok(());
            }
            Name::Unknown => {
                let kind = WarningKind::UnknownSetting {
                    section: section_name.to_owned(),
                };
                self.warn(path, entry.line, key, kind);
                return Ok(());
            }
        };
        let in_place = match setting.name {
            "Include" => matches!(section_name, "Include" | "Config"),
            _ => section_name == setting.section.name(),
        };
        if !in_place {
            let expected = match setting.name {
                "Include" => "Include",
                _ => setting.section.name(),
            };
            let kind = WarningKind::WrongSection {
                expected: expected.to_owned(),
                found: section_name.to_owned(),
            };
            self.warn(path, entry.line, setting.name, kind);
        }
        if self.image != MAIN && images::main_only(setting) {
            return Err(at(ErrorKind::NotInSubimage {
                key: setting.name.to_owned(),
                image: self.image.clone(),
            }));
        }
        let raw = self.expand(&entry.value, file_dir).map_err(at)?;
        let update = value::parse_update(setting, &raw, &self.cwd()).map_err(at)?;
        if !setting.implemented && update != Update::Reset {
            self.warn(path, entry.line, setting.name, WarningKind::NotImplemented);
        }
        let includes = match (&update, setting.name) {
            (Update::Append(paths), "Include") => paths.clone(),
            _ => Vec::new(),
        };
        apply(&mut self.config, setting, update);
        for include in includes {
            self.include(Path::new(&include), path, entry.line)?;
        }
        Ok(())
    }

    fn include(&mut self, target: &Path, from: &Path, line: usize) -> Result<(), ConfigError> {
        let key = canonical(target, from, line)?;
        if let Some(position) = self.stack.iter().position(|p| *p == key) {
            let mut chain: Vec<String> = self.stack[position..]
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            chain.push(key.display().to_string());
            return Err(ConfigError::new(
                from,
                line,
                ErrorKind::IncludeCycle(chain.join(" -> ")),
            ));
        }
        if self.done.contains(&key) {
            tracing::debug!("{}: already parsed, not including again", target.display());
            return Ok(());
        }
        if target.is_dir() {
            self.parse_dir(target, Dir::Included)?;
        } else {
            self.parse_file(target, None)?;
        }
        Ok(())
    }

    fn default_paths(&mut self, dir: &Path) -> Result<(), ConfigError> {
        for default in default_paths::default_paths() {
            let path = dir.join(&default.name);
            if !path.exists() {
                continue;
            }
            let setting = settings::lookup(default.setting).expect("default path settings exist");
            if self.image != MAIN && images::main_only(setting) {
                continue;
            }
            let items = match default.source {
                Source::Path | Source::Secret => vec![path.clone()],
                Source::Text => Vec::new(),
                Source::Entries(suffix) if path.is_dir() => sorted_entries(&path)?
                    .into_iter()
                    .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
                    .collect(),
                Source::Entries(_) => Vec::new(),
            };
            if default.source != Source::Text && items.is_empty() {
                continue;
            }
            if !setting.implemented {
                self.warn(&path, 0, setting.name, WarningKind::NotImplemented);
            }
            let text = |p: &PathBuf| p.to_string_lossy().into_owned();
            let update = match default.source {
                Source::Secret => continue,
                Source::Text => Update::Set(Value::Text(read_value(&path, setting)?)),
                _ if setting.kind.is_list() => Update::Append(items.iter().map(text).collect()),
                _ => Update::Set(Value::Text(text(&items[0]))),
            };
            apply(&mut self.config, setting, update);
        }
        Ok(())
    }

    /// `--profile`, `--version` and `--set` go into the override layer first.
    fn apply_command_line(&mut self) {
        if !self.options.profiles.is_empty() {
            self.overrides
                .insert("Profiles", Value::List(self.options.profiles.clone()));
        }
        if let Some(version) = &self.options.image_version {
            self.overrides
                .insert("ImageVersion", Value::Text(version.clone()));
        }
        if !self.options.environment.is_empty() {
            let items = self
                .options
                .environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            self.overrides.insert("Environment", Value::List(items));
        }
    }

    /// mkosi.local.conf overrides the files parsed after it, but not the command line.
    fn promote_local(&mut self) {
        for (name, local) in std::mem::take(&mut self.config) {
            match (self.overrides.remove(name), local) {
                (Some(Value::List(cli)), Value::List(mut items)) => {
                    items.extend(cli);
                    self.overrides.insert(name, Value::List(items));
                }
                (Some(cli), _) => {
                    self.overrides.insert(name, cli);
                }
                (None, local) => {
                    self.overrides.insert(name, local);
                }
            }
        }
    }

    fn effective(&self, name: &str) -> Option<Value> {
        let config = self.config.get(name);
        let overrides = self.overrides.get(name);
        match (config, overrides) {
            (Some(Value::List(a)), Some(Value::List(b))) => {
                Some(Value::List(a.iter().chain(b).cloned().collect()))
            }
            (_, Some(v)) | (Some(v), None) => Some(v.clone()),
            (None, None) => None,
        }
    }

    fn default(&self, name: &str) -> Option<Value> {
        let text = |s: &str| Some(Value::Text(s.to_owned()));
        match name {
            "Distribution" => text(&self.host_distribution),
            "Architecture" => text(&self.host_architecture),
            "Format" => text("disk"),
            "Release" => {
                let distribution = self.text("Distribution")?;
                default_release(&distribution).and_then(text)
            }
            "ToolsTreeDistribution" => text(tools_tree_distribution(&self.host_distribution)),
            "ToolsTreeRelease" => {
                let distribution = self.text("ToolsTreeDistribution")?;
                default_release(&distribution).and_then(text)
            }
            "ToolsTreeProfiles" => Some(Value::List(
                ["misc", "package-manager", "runtime"]
                    .map(String::from)
                    .to_vec(),
            )),
            // mkosi installs documentation unless told otherwise.
            "WithDocs" => Some(Value::Bool(true)),
            "Output" => {
                // A sub-image is named after its entry in mkosi.images/.
                let id = match self.image.as_str() {
                    MAIN => self.effective("ImageId").map(|v| v.display()),
                    image => Some(image.to_owned()),
                };
                let id = id.unwrap_or_else(|| "image".to_owned());
                match self.effective("ImageVersion") {
                    Some(version) => text(&format!("{id}_{}", version.display())),
                    None => text(&id),
                }
            }
            _ => None,
        }
    }

    /// The current value, or the default, as text.
    fn text(&self, name: &str) -> Option<String> {
        self.effective(name)
            .or_else(|| self.default(name))
            .map(|v| v.display())
    }

    fn selected_profiles(&self) -> Vec<String> {
        self.effective("Profiles")
            .map(|v| v.as_list().to_vec())
            .unwrap_or_default()
    }

    fn environment_map(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        if let Some(Value::List(items)) = self.effective("Environment") {
            for item in items {
                match item.split_once('=') {
                    Some((k, v)) => map.insert(k.to_owned(), v.to_owned()),
                    None => match std::env::var(&item) {
                        Ok(v) => map.insert(item, v),
                        Err(_) => None,
                    },
                };
            }
        }
        map
    }

    fn expand(&self, raw: &str, base: &Path) -> Result<String, ErrorKind> {
        specifier::expand(raw, |c| {
            let setting = match c {
                'd' => "Distribution",
                'r' => "Release",
                'a' => "Architecture",
                't' => "Format",
                'o' => "Output",
                'O' => "OutputDirectory",
                'i' => "ImageId",
                'v' => "ImageVersion",
                'p' => return Some(self.selected_profiles().join(",")),
                'C' => return Some(base.display().to_string()),
                'D' => return Some(self.top.display().to_string()),
                'P' => return Some(self.cwd().display().to_string()),
                'I' => return Some(self.image.clone()),
                _ => return None,
            };
            Some(self.text(setting).unwrap_or_default())
        })
    }

    fn template_context(&self) -> tera::Context {
        let mut context = tera::Context::new();
        if let Some(role) = &self.options.role {
            context.insert("role", role);
        }
        if let Some(version) = self.effective("ImageVersion") {
            context.insert("version", &version.display());
        }
        for (key, setting) in [
            ("distribution", "Distribution"),
            ("release", "Release"),
            ("architecture", "Architecture"),
            ("image_id", "ImageId"),
            ("format", "Format"),
        ] {
            if let Some(v) = self.text(setting) {
                context.insert(key, &v);
            }
        }
        context.insert("profiles", &self.selected_profiles());
        context.insert("pins", &self.options.pins.table);
        context.insert("env", &self.environment_map());
        context
    }

    fn finish(self) -> Config {
        let mut values = BTreeMap::new();
        for setting in SETTINGS {
            // Defaults of settings the builder does not implement only serve
            // conditions; the summary shows such settings only when set.
            let default = || {
                setting
                    .implemented
                    .then(|| self.default(setting.key))
                    .flatten()
            };
            if let Some(v) = self.effective(setting.key).or_else(default) {
                values.insert(setting.key, v);
            }
        }
        Config {
            directory: self.top,
            role: self.options.role.clone(),
            values,
            files: self.files,
            warnings: self.warnings,
            subimages: Vec::new(),
        }
    }
}

impl Facts for Resolver<'_> {
    fn setting(&self, name: &str) -> Option<String> {
        self.text(name)
    }

    fn profiles(&self) -> Vec<String> {
        self.selected_profiles()
    }

    fn environment(&self, key: &str) -> Option<String> {
        self.environment_map().remove(key)
    }

    fn host_architecture(&self) -> String {
        self.host_architecture.clone()
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.effective(name)
            .map(|v| v.as_list().to_vec())
            .unwrap_or_default()
    }

    fn image(&self) -> String {
        self.image.clone()
    }
}

fn apply(map: &mut BTreeMap<&'static str, Value>, setting: &'static Setting, update: Update) {
    match update {
        Update::Reset if setting.kind.is_list() => {
            map.insert(setting.key, Value::List(Vec::new()));
        }
        Update::Reset => {
            map.remove(setting.key);
        }
        Update::Set(v) => {
            map.insert(setting.key, v);
        }
        Update::Append(items) => match map.get_mut(setting.key) {
            Some(Value::List(list)) => list.extend(items),
            _ => {
                map.insert(setting.key, Value::List(items));
            }
        },
    }
}

/// The contents of a default path read as a single value (`mkosi.version`).
fn read_value(path: &Path, setting: &Setting) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError::new(path, 0, ErrorKind::Io(e)))?;
    let value = utf8(path, bytes)?.trim().to_owned();
    if value.is_empty() || value.contains(char::is_whitespace) {
        return Err(ConfigError::new(
            path,
            1,
            ErrorKind::InvalidValue {
                key: setting.name.into(),
                reason: format!("{value:?} is not a single value"),
            },
        ));
    }
    Ok(value)
}

/// `NAME` or `NAME.tera` in `dir`; both at once is ambiguous.
fn config_file(dir: &Path, name: &str) -> Result<Option<PathBuf>, ConfigError> {
    let plain = dir.join(name);
    let templated = dir.join(format!("{name}{}", template::SUFFIX));
    match (plain.is_file(), templated.is_file()) {
        (true, true) => Err(ConfigError::new(
            &templated,
            0,
            ErrorKind::InvalidValue {
                key: name.to_owned(),
                reason: format!("both {name} and {name}{} exist", template::SUFFIX),
            },
        )),
        (true, false) => Ok(Some(plain)),
        (false, true) => Ok(Some(templated)),
        (false, false) => Ok(None),
    }
}

fn is_conf(path: &Path) -> bool {
    let name = path.to_string_lossy();
    let name = name.strip_suffix(template::SUFFIX).unwrap_or(&name);
    name.ends_with(".conf")
}

/// Entries of a drop-in directory in lexical order of their names without `.tera`.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let read = std::fs::read_dir(dir).map_err(|e| ConfigError::new(dir, 0, ErrorKind::Io(e)))?;
    let mut entries = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| ConfigError::new(dir, 0, ErrorKind::Io(e)))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let key = name
            .strip_suffix(template::SUFFIX)
            .unwrap_or(&name)
            .to_owned();
        entries.push((key, path));
    }
    entries.sort();
    for pair in entries.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(ConfigError::new(
                &pair[1].1,
                0,
                ErrorKind::InvalidValue {
                    key: pair[0].0.clone(),
                    reason: format!(
                        "both {} and {} exist",
                        pair[0].1.display(),
                        pair[1].1.display()
                    ),
                },
            ));
        }
    }
    Ok(entries.into_iter().map(|(_, p)| p).collect())
}

fn canonical(path: &Path, from: &Path, line: usize) -> Result<PathBuf, ConfigError> {
    std::fs::canonicalize(path).map_err(|e| {
        let at = if line == 0 { path } else { from };
        ConfigError::new(at, line, ErrorKind::Io(e))
    })
}

/// Decodes a file as UTF-8, naming the line and column of the first bad byte.
fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let prefix = &e.as_bytes()[..valid];
        let line = prefix.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = prefix
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        ConfigError::new(
            path,
            line,
            ErrorKind::NotUtf8 {
                column: valid - line_start + 1,
            },
        )
    })
}

fn default_release(distribution: &str) -> Option<&'static str> {
    Some(match distribution {
        "debian" => "testing",
        "ubuntu" => "noble",
        "kali" => "kali-rolling",
        "fedora" => "rawhide",
        "arch" => "rolling",
        "opensuse" => "tumbleweed",
        _ => return None,
    })
}

/// mkosi's fallback for `ToolsTreeDistribution=`: the host's distribution,
/// except that Ubuntu builds on Debian and RHEL and its rebuilds on Fedora.
fn tools_tree_distribution(host: &str) -> &str {
    match host {
        "ubuntu" => "debian",
        "rhel" | "rhel-ubi" | "centos" | "alma" | "rocky" => "fedora",
        other => other,
    }
}

fn host_distribution() -> String {
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("ID="))
        .map(|id| id.trim_matches('"').to_owned())
        .filter(|id| settings::DISTRIBUTIONS.contains(&id.as_str()))
        .unwrap_or_else(|| "custom".to_owned())
}

/// The host architecture in mkosi's (systemd's) naming.
pub fn host_architecture() -> String {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "x86" => "x86",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64-le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loongarch64",
        other => other,
    }
    .to_owned()
}
