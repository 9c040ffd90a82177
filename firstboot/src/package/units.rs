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
use crate::services::{self, Manager};

/// The template unit of every component.
pub const TEMPLATE: &str = "globular-component@.service";

/// A component's rendered command line (`packages/P/components/NAME.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandLine {
    pub program: String,
    pub args: Vec<String>,
}

fn unit(name: &str) -> String {
    format!("globular-component@{name}.service")
}

fn spawned(name: &str) -> String {
    format!("component-{name}")
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
        Manager::Spawn => format!(
            "see {}",
            layout.log_dir().join(format!("{name}.log")).display()
        ),
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

fn stop_spawned(layout: &Layout, name: &str) -> anyhow::Result<()> {
    let Some(pid) = services::running_pid_named(layout, &spawned(name)) else {
        return Ok(());
    };
    let pid_t = rustix::process::Pid::from_raw(pid as i32).context("a bad pid")?;
    let _ = rustix::process::kill_process(pid_t, rustix::process::Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while services::running_pid_named(layout, &spawned(name)).is_some() {
        if Instant::now() > deadline {
            bail!("{name} (pid {pid}) did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

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
