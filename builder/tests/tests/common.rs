//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use builder::pins::Pins;
use builder::profile::{resolve, Config, ConfigError, ResolveOptions};

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

pub fn options(dir: &Path) -> ResolveOptions {
    ResolveOptions {
        directory: dir.to_path_buf(),
        pins: Pins::discover(dir).unwrap(),
        ..ResolveOptions::default()
    }
}

pub fn resolve_dir(dir: &Path) -> Result<Config, ConfigError> {
    resolve(&options(dir))
}

/// Runs the real `builder` binary.
pub fn builder(args: &[&str], cwd: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_builder"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .expect("running builder")
}

/// Settings that make snapshots independent of the checkout location.
pub fn redact(root: &Path) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(&root.display().to_string()), "[ROOT]");
    settings.set_prepend_module_to_snapshot(false);
    settings
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
