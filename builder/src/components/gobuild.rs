//! `go build` of a component: a fixed environment (the local toolchain, the
//! module's own go.sum, no VCS stamping, no build paths), a cache key over
//! every input, and errors that say which module broke the lock.

use std::path::Path;

use anyhow::{bail, Context as _};
use globular_task::{Task, TaskError};

use super::gomod;
use super::spec::Spec;
use crate::progress::Progress;

/// `GOFLAGS` of every component build: go.sum and go.mod are read, never
/// written; no build-host paths and no VCS state in the binaries.
pub const GOFLAGS: &str = "-mod=readonly -trimpath -buildvcs=false";
const GOOS: &str = "linux";
const GOARCH: &str = "amd64";
const GOAMD64: &str = "v1";

/// The Go toolchain on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    /// `go env GOVERSION`, e.g. `go1.26.8`.
    pub version: String,
}

impl Toolchain {
    pub fn find() -> anyhow::Result<Toolchain> {
        let version = match go("finding the Go toolchain")
            .args(["env", "GOVERSION"])
            .read_string()
        {
            Ok(out) => out.trim().to_owned(),
            Err(TaskError::NotInstalled { .. }) => bail!(
                "`go` is not installed: components are built with the machine's Go \
                 (>= 1.26, from go.dev/dl; Debian 12's golang-go is too old)"
            ),
            Err(err) => return Err(err.into()),
        };
        if !version.starts_with("go") {
            bail!("`go env GOVERSION` printed {version:?}, not a Go version");
        }
        Ok(Toolchain { version })
    }
}

/// Variables a component build takes from the caller: where Go keeps its
/// caches and how it reaches the module proxy. Everything else is cleared, so
/// nothing of the caller's Go setup (GOFLAGS, GOEXPERIMENT, CGO_*, a `go env
/// -w` file) changes what is built.
const PASSED: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "GOPATH",
    "GOCACHE",
    "GOMODCACHE",
    "GOPROXY",
    "GONOPROXY",
    "GOPRIVATE",
    "GOSUMDB",
    "GONOSUMDB",
    "GOINSECURE",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// A `go` command with the environment every component build uses.
pub(super) fn go(description: impl Into<String>) -> Task {
    let mut task = Task::new(description, "go").env_clear();
    for name in PASSED {
        if let Some(value) = std::env::var_os(name) {
            task = task.env(name, value);
        }
    }
    task.env("GOENV", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOWORK", "off")
        .env("GO111MODULE", "on")
        .env("GOFLAGS", GOFLAGS)
        .env("GOOS", GOOS)
        .env("GOARCH", GOARCH)
        .env("GOAMD64", GOAMD64)
        .env("GOFIPS140", "off")
}

/// Everything that decides the bytes of a build, for its cache key.
#[derive(Debug, serde::Serialize)]
pub struct Inputs<'a> {
    pub name: &'a str,
    pub module_tree: String,
    pub go_version: &'a str,
    pub goflags: &'static str,
    pub target: [&'static str; 3],
    pub cgo: bool,
    pub tags: &'a [String],
    pub ldflags: &'a [String],
    pub packages: Vec<&'a str>,
}

impl<'a> Inputs<'a> {
    pub fn new(
        name: &'a str,
        dir: &Path,
        spec: &'a Spec,
        toolchain: &'a Toolchain,
        ldflags: &'a [String],
    ) -> anyhow::Result<Inputs<'a>> {
        Ok(Inputs {
            name,
            module_tree: crate::digest::source_tree(dir)?,
            go_version: &toolchain.version,
            goflags: GOFLAGS,
            target: [GOOS, GOARCH, GOAMD64],
            cgo: spec.cgo,
            tags: &spec.tags,
            ldflags,
            packages: spec.binaries.iter().map(|b| b.package.as_str()).collect(),
        })
    }

    pub fn key(&self) -> String {
        crate::digest::json(self)
    }
}

/// Builds every binary of the component in `dir` into `out`, showing the
/// packages as they compile.
pub fn build(
    name: &str,
    dir: &Path,
    inputs: &Inputs<'_>,
    out: &Path,
    progress: &Progress,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let step = progress.step(&format!("compiling {name} with {}", inputs.go_version));
    let mut compiled = 0usize;
    let mut out_arg = out.as_os_str().to_owned();
    out_arg.push("/");
    let result = go(format!("building the {name} component"))
        .env("CGO_ENABLED", if inputs.cgo { "1" } else { "0" })
        .current_dir(dir)
        .args(["build", "-v"])
        .arg(format!("-tags={}", inputs.tags.join(",")))
        .arg(format!("-ldflags={}", inputs.ldflags.join(" ")))
        .arg("-o")
        .arg(out_arg)
        .args(&inputs.packages)
        .run_watching_stderr(|line| {
            if let Some(module) = line.strip_prefix("go: downloading ") {
                step.detail(&format!("downloading {module}"));
            } else if !line.is_empty() && !line.contains(' ') {
                compiled += 1;
                step.detail(&format!("{compiled} packages compiled, last {line}"));
            }
        });
    if let Err(err) = result {
        return Err(explain(err, dir));
    }
    step.done();
    Ok(())
}

/// Turns Go's refusal of a module into an error that names the module and the
/// file to fix; other failures keep Go's own words.
fn explain(err: TaskError, dir: &Path) -> anyhow::Error {
    let reason = match &err {
        TaskError::Failed { stderr, .. } => refusal(stderr, dir),
        _ => None,
    };
    match reason {
        Some(reason) => anyhow::Error::new(err).context(reason),
        None => err.into(),
    }
}

fn refusal(stderr: &str, dir: &Path) -> Option<String> {
    let go_sum = dir.join("go.sum");
    let go_mod = dir.join("go.mod");
    for line in stderr.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("verifying ") {
            if let Some((module, _)) = rest.split_once(": checksum mismatch") {
                return Some(format!(
                    "{}: the hash recorded for {module} does not match the module Go \
                     downloaded or cached (a tampered go.sum, or a module changed upstream)",
                    go_sum.display()
                ));
            }
        }
        if let Some((_, rest)) =
            line.split_once("missing go.sum entry for module providing package ")
        {
            let package = rest.split_whitespace().next().unwrap_or_default();
            return Some(format!(
                "{}: no entry for the module providing {package}: go.mod was edited without \
                 updating go.sum (bump versions with scripts/bump-component.sh)",
                go_sum.display()
            ));
        }
        if line.contains("missing go.sum entry") || line.contains("updates to go.mod needed") {
            return Some(format!(
                "{} and {} disagree ({line}): bump versions with scripts/bump-component.sh",
                go_mod.display(),
                go_sum.display()
            ));
        }
    }
    None
}

/// The modules linked into the built binaries, each once, sorted.
pub fn linked_modules(binaries: &[&Path]) -> anyhow::Result<Vec<gomod::Module>> {
    let mut all = std::collections::BTreeMap::new();
    for binary in binaries {
        for module in gomod::linked_modules(binary)? {
            all.insert((module.path.clone(), module.version.clone()), module);
        }
    }
    Ok(all.into_values().collect())
}
