//! Running a package's components: under systemd as instances of
//! `globular-component@.service` (shipped in the base overlay), or spawned
//! (tests, containers) with a pid file like etcd and the API
//! (`crate::services`). Either way the process is `globular component
//! exec NAME`, which execs what the package rendered for it.

use std::os::unix::process::CommandExt as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use globular_task::Task;
use serde::{Deserialize, Serialize};

use crate::layout::Layout;
use crate::services::{self, Manager, Observed};

/// The template unit of every component.
pub const TEMPLATE: &str = "globular-component@.service";

/// A component's rendered command line (`packages/P/components/NAME.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandLine {
    pub program: String,
    pub args: Vec<String>,
}

/// The systemd unit of component `name`.
pub fn unit(name: &str) -> String {
    format!("globular-component@{name}.service")
}

fn spawned(name: &str) -> String {
    format!("component-{name}")
}

/// Written into `packages/P/` when the package's health checks first
/// passed: from then on its components are expected to run, and the
/// health loop starts one that does not.
pub const APPLIED: &str = "applied";

/// The components of every package applied on this node whose checks
/// passed once ([`APPLIED`]), in name order.
pub fn applied_components(layout: &Layout) -> Vec<String> {
    let mut out: Vec<String> = applied_packages(layout)
        .into_iter()
        .flat_map(|p| p.components)
        .collect();
    out.sort();
    out
}

/// An applied package as the health loop reports it: its components and
/// the services it registered (`ports.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedPackage {
    pub name: String,
    pub components: Vec<String>,
    pub services: Vec<String>,
}

/// Every package applied on this node whose checks passed once
/// ([`APPLIED`]), in name order; a `ports.json` that does not parse counts
/// as no services.
pub fn applied_packages(layout: &Layout) -> Vec<AppliedPackage> {
    let mut out = Vec::new();
    let Ok(packages) = std::fs::read_dir(layout.package_dir("")) else {
        return out;
    };
    for package in packages.flatten() {
        let dir = package.path();
        if !dir.join(APPLIED).is_file() {
            continue;
        }
        let components = command_lines(&dir);
        let services = std::fs::read(dir.join(crate::firewall::PORTS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<crate::firewall::PackagePort>>(&b).ok())
            .map(|ports| {
                let mut names: Vec<String> = ports.into_iter().map(|p| p.service).collect();
                names.dedup();
                names
            })
            .unwrap_or_default();
        out.push(AppliedPackage {
            name: package.file_name().to_string_lossy().into_owned(),
            components,
            services,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// How the component is doing now (as [`Manager::observe`] says of the
/// substrate's services).
pub fn observe(layout: &Layout, manager: Manager, name: &str) -> anyhow::Result<Observed> {
    match manager {
        Manager::Systemd => services::observe_unit(&unit(name)),
        Manager::Spawn => Ok(services::observe_spawned(layout, &spawned(name))),
    }
}

/// Whether the component runs.
pub fn running(layout: &Layout, manager: Manager, name: &str) -> bool {
    match manager {
        Manager::Systemd => Task::new(format!("asking systemd about {name}"), "systemctl")
            .args(["is-active", "--quiet", &unit(name)])
            .run()
            .is_ok(),
        Manager::Spawn => services::running_pid_named(layout, &spawned(name)).is_some(),
    }
}

/// Where to read what a component said.
pub fn log_hint(layout: &Layout, manager: Manager, name: &str) -> String {
    match manager {
        Manager::Systemd => format!("journalctl -u {}", unit(name)),
        Manager::Spawn => {
            let log = layout.log_dir().join(format!("{name}.log"));
            // Its last words: the log may be gone with a test's directory.
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(5)..].join("\n");
            format!("see {}; it ends:\n{tail}", log.display())
        }
    }
}

/// Starts the component (nothing if it runs).
pub fn start(layout: &Layout, manager: Manager, name: &str) -> anyhow::Result<()> {
    match manager {
        Manager::Systemd => systemctl("start", name),
        Manager::Spawn => spawn(layout, name),
    }
}

/// Restarts the component (starts it if it does not run).
pub fn restart(layout: &Layout, manager: Manager, name: &str) -> anyhow::Result<()> {
    match manager {
        Manager::Systemd => systemctl("restart", name),
        Manager::Spawn => {
            stop_spawned(layout, name)?;
            spawn(layout, name)
        }
    }
}

fn systemctl(verb: &str, name: &str) -> anyhow::Result<()> {
    Task::new(format!("{verb}ing {}", unit(name)), "systemctl")
        .package("systemd")
        .args([verb, &unit(name)])
        .run()
        .with_context(|| format!("systemctl {verb} {}", unit(name)))
}

fn spawn(layout: &Layout, name: &str) -> anyhow::Result<()> {
    if services::running_pid_named(layout, &spawned(name)).is_some() {
        return Ok(());
    }
    for dir in [layout.run_dir(), layout.log_dir()] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let exe = std::env::current_exe().context("finding the globular binary")?;
    let log = layout.log_dir().join(format!("{name}.log"));
    let child = Task::new(format!("starting {name}"), exe)
        .args(["component", "exec", name, "--root"])
        .arg(layout.root())
        .spawn_logged(&log)?;
    services::write_pid(
        &services::pid_file_named(layout, &spawned(name)),
        child.id(),
    )?;
    tracing::info!("spawned {name} (pid {}), log {}", child.id(), log.display());
    Ok(())
}

/// Components with a command line in the package's directory `dir` that
/// `spec` no longer has (dropped by a new version of the package), in name
/// order.
pub fn retired(dir: &std::path::Path, spec: &super::Spec) -> Vec<String> {
    command_lines(dir)
        .into_iter()
        .filter(|name| !spec.components.iter().any(|c| &c.name == name))
        .collect()
}

/// The components with a command line (`components/NAME.json`) in the
/// package directory `dir`, in name order.
fn command_lines(dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join("components")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    out.sort();
    out
}

/// Retires a component the package dropped: its command line goes first
/// (the health loop starts only components that have one, and `component
/// exec` refuses one without), then the component is stopped.
pub fn retire(
    layout: &Layout,
    manager: Manager,
    dir: &std::path::Path,
    name: &str,
) -> anyhow::Result<()> {
    let path = dir.join("components").join(format!("{name}.json"));
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    match manager {
        Manager::Systemd => systemctl("stop", name),
        Manager::Spawn => stop_spawned(layout, name),
    }
}

/// Stops a spawned component as systemd stops a unit: SIGTERM, and
/// SIGKILL for one still there after [`STOP_GRACE`] (a kube-apiserver
/// stopped seconds after its start can hang in its shutdown).
fn stop_spawned(layout: &Layout, name: &str) -> anyhow::Result<()> {
    let Some(pid) = services::running_pid_named(layout, &spawned(name)) else {
        return Ok(());
    };
    let pid_t = rustix::process::Pid::from_raw(pid as i32).context("a bad pid")?;
    let _ = rustix::process::kill_process(pid_t, rustix::process::Signal::TERM);
    let started = Instant::now();
    let mut killed = false;
    // This process: the health loop may start another meanwhile.
    while services::alive(layout, pid) {
        if !killed && started.elapsed() > STOP_GRACE {
            tracing::warn!(
                "{name} (pid {pid}) did not stop within {} s of SIGTERM; killing it",
                STOP_GRACE.as_secs()
            );
            let _ = rustix::process::kill_process(pid_t, rustix::process::Signal::KILL);
            killed = true;
        }
        if started.elapsed() > STOP_GRACE + Duration::from_secs(10) {
            bail!("{name} (pid {pid}) did not stop, even after SIGKILL");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// How long a spawned component has to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// `globular component exec NAME`: replaces this process with the
/// component's program, as its package rendered it.
pub fn exec(layout: &Layout, name: &str) -> anyhow::Result<()> {
    let packages = layout.root().join("packages");
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&packages) {
        for entry in entries.flatten() {
            let path = entry.path().join("components").join(format!("{name}.json"));
            if path.is_file() {
                found.push(path);
            }
        }
    }
    let path = match found.as_slice() {
        [one] => one.clone(),
        [] => bail!(
            "no applied package has a component {name:?} (under {})",
            packages.display()
        ),
        _ => bail!("more than one package has a component {name:?}: {found:?}"),
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let line: CommandLine =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let err = std::process::Command::new(&line.program)
        .args(&line.args)
        .exec();
    Err(anyhow::anyhow!(err).context(format!("executing {}", line.program)))
}
