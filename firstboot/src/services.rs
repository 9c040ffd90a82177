//! Starting the node's long-running services (etcd, the substrate API).
//!
//! On a node, systemd runs them (`globular-etcd.service`,
//! `globular-api.service`). Every systemd unit of the images is a file in
//! one place, `overlays/base/usr/lib/systemd/system/` (a test below checks
//! that the units named here are there). Without systemd (tests,
//! containers) the agent spawns them itself, detached, with a pid file under
//! `run/` and a log under `log/`. Starting a running service does nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use globular_task::Task;

use crate::layout::Layout;

/// A service of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Etcd,
    Api,
}

impl Service {
    pub fn unit(self) -> &'static str {
        match self {
            Service::Etcd => "globular-etcd.service",
            Service::Api => "globular-api.service",
        }
    }
    /// `etcd` or `api`.
    pub fn name(self) -> &'static str {
        self.short()
    }
    fn short(self) -> &'static str {
        match self {
            Service::Etcd => "etcd",
            Service::Api => "api",
        }
    }
}

/// How services are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Systemd,
    Spawn,
}

impl Manager {
    pub fn start(self, layout: &Layout, service: Service) -> anyhow::Result<()> {
        match self {
            Manager::Systemd => {
                // On an image the service runs as its own user: hand it
                // what it reads first.
                crate::ownership::prepare(layout, Path::new("/"), service)?;
                Task::new(format!("starting {}", service.unit()), "systemctl")
                    .package("systemd")
                    .args(["start", service.unit()])
                    .run()
                    .with_context(|| format!("starting {}", service.unit()))
            }
            Manager::Spawn => spawn(layout, service),
        }
    }

    /// Stops `service` (a spawned one: SIGTERM, then SIGKILL after 10 s)
    /// and returns once it is gone.
    pub fn stop(self, layout: &Layout, service: Service) -> anyhow::Result<()> {
        match self {
            Manager::Systemd => Task::new(format!("stopping {}", service.unit()), "systemctl")
                .package("systemd")
                .args(["stop", service.unit()])
                .run()
                .with_context(|| format!("stopping {}", service.unit())),
            Manager::Spawn => {
                let started = std::time::Instant::now();
                while let Some(pid) = running_pid(layout, service) {
                    let signal = if started.elapsed().as_secs() < 10 {
                        "TERM"
                    } else {
                        "KILL"
                    };
                    let _ = Task::new(format!("stopping {}", service.short()), "kill")
                        .args([format!("-{signal}"), pid.to_string()])
                        .run();
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Ok(())
            }
        }
    }
}

/// What the node's service manager says about a service: whether it runs,
/// and a value that changes whenever it was started again (systemd's
/// `NRestarts` and main pid; a spawned service's pid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub running: bool,
    pub generation: String,
}

impl Manager {
    /// How `service` is doing now.
    pub fn observe(self, layout: &Layout, service: Service) -> anyhow::Result<Observed> {
        match self {
            Manager::Systemd => observe_unit(service.unit()),
            Manager::Spawn => Ok(observe_spawned(layout, service.short())),
        }
    }
}

/// How the spawned process called `name` is doing (its pid is its
/// generation).
pub fn observe_spawned(layout: &Layout, name: &str) -> Observed {
    let pid = running_pid_named(layout, name);
    Observed {
        running: pid.is_some(),
        generation: pid.map_or_else(String::new, |p| p.to_string()),
    }
}

/// What systemd says about `unit`.
pub fn observe_unit(unit: &str) -> anyhow::Result<Observed> {
    let mut all = observe_units(&[unit.to_owned()])?;
    all.remove(unit)
        .ok_or_else(|| anyhow::anyhow!("systemctl show said nothing about {unit}"))
}

/// What systemd says about each of `units`, asked with one `systemctl
/// show`: the health loop asks about every unit it keeps running each
/// round, and one systemctl costs a TCG guest about 0.2 CPU-seconds.
pub fn observe_units(units: &[String]) -> anyhow::Result<HashMap<String, Observed>> {
    if units.is_empty() {
        return Ok(HashMap::new());
    }
    let out = Task::new("asking systemd about the services", "systemctl")
        .package("systemd")
        .args(["show", "--property=Id,ActiveState,NRestarts,MainPID"])
        .args(units)
        .read_string()?;
    Ok(parse_show(&out))
}

/// `systemctl show`'s blocks (one per unit, blank-line separated) by `Id`.
fn parse_show(out: &str) -> HashMap<String, Observed> {
    out.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                    .unwrap_or("")
            };
            let id = field("Id");
            (!id.is_empty()).then(|| {
                let observed = Observed {
                    running: field("ActiveState") == "active",
                    generation: format!("{}/{}", field("NRestarts"), field("MainPID")),
                };
                (id.to_owned(), observed)
            })
        })
        .collect()
}

/// The pid file of a spawned service.
pub fn pid_file(layout: &Layout, service: Service) -> PathBuf {
    pid_file_named(layout, service.short())
}

/// The pid file of a spawned process called `name` (`etcd`, `api`,
/// `component-NAME`).
pub fn pid_file_named(layout: &Layout, name: &str) -> PathBuf {
    layout.run_dir().join(format!("{name}.pid"))
}

/// The pid of a spawned service if it is still running.
pub fn running_pid(layout: &Layout, service: Service) -> Option<u32> {
    running_pid_named(layout, service.short())
}

/// The pid of the spawned process called `name` if it is still running
/// (and still ours: its command line names the state directory).
pub fn running_pid_named(layout: &Layout, name: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file_named(layout, name))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    alive(layout, pid).then_some(pid)
}

/// Whether `pid` runs (a zombie does not) and is one of this state
/// directory's processes (its command line names the directory).
pub fn alive(layout: &Layout, pid: u32) -> bool {
    let ours = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Field 3 is the state.
        let state = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .next()?
            .to_owned();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let root = layout.root().to_string_lossy();
        Some(state != "Z" && String::from_utf8_lossy(&cmdline).contains(root.as_ref()))
    };
    ours().unwrap_or(false)
}

fn spawn(layout: &Layout, service: Service) -> anyhow::Result<()> {
    if let Some(pid) = running_pid(layout, service) {
        tracing::info!("{} is already running (pid {pid})", service.short());
        return Ok(());
    }
    for dir in [layout.run_dir(), layout.log_dir()] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log = layout.log_dir().join(format!("{}.log", service.short()));
    let task = match service {
        Service::Etcd => Task::new("starting etcd", "etcd")
            .arg("--config-file")
            .arg(layout.etcd_config()),
        Service::Api => {
            let exe = std::env::current_exe().context("finding the globular binary")?;
            Task::new("starting the substrate API", exe)
                .args(["serve", "--root"])
                .arg(layout.root())
        }
    };
    let child = task.spawn_logged(&log)?;
    write_pid(&pid_file(layout, service), child.id())?;
    tracing::info!(
        "spawned {} (pid {}), log {}",
        service.short(),
        child.id(),
        log.display()
    );
    Ok(())
}

pub fn write_pid(path: &Path, pid: u32) -> anyhow::Result<()> {
    globular_cluster::fsutil::write_atomic(path, format!("{pid}\n").as_bytes(), 0o644)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The units the agent starts are the image's unit files.
    #[test]
    fn units_are_in_the_overlay() {
        let units =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../overlays/base/usr/lib/systemd/system");
        let package_units = [
            crate::package::units::TEMPLATE,
            crate::agent::PACKAGES_UNIT,
            crate::agent::HEALTH_UNIT,
        ];
        for unit in [Service::Etcd.unit(), Service::Api.unit()]
            .into_iter()
            .chain(package_units)
        {
            let path = units.join(unit);
            assert!(path.is_file(), "{} is missing", path.display());
        }
    }

    #[test]
    fn systemctl_show_of_several_units() {
        // As systemd 252 prints it: one block per unit, in the order asked.
        let out = "Id=globular-etcd.service\nMainPID=345\nNRestarts=0\nActiveState=active\n\n\
                   Id=globular-component@kube-apiserver.service\nMainPID=0\nNRestarts=3\nActiveState=activating\n\n\
                   Id=nope.service\nMainPID=0\nNRestarts=0\nActiveState=inactive\n";
        let all = parse_show(out);
        assert_eq!(all.len(), 3);
        let etcd = &all["globular-etcd.service"];
        assert!(etcd.running);
        assert_eq!(etcd.generation, "0/345");
        let apiserver = &all["globular-component@kube-apiserver.service"];
        assert!(!apiserver.running);
        assert_eq!(apiserver.generation, "3/0");
        assert!(!all["nope.service"].running);
        assert!(parse_show("").is_empty());
    }
}
