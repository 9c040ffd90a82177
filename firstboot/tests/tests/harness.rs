//! A test cluster: a secrets bundle, per-node seeds and state directories,
//! and a guard that kills every process the nodes spawned.

use std::path::{Path, PathBuf};
use std::process::Child;

use globular_cluster::etcd_auth::SUBSTRATE_USER;
use globular_cluster::registry::EnrollmentPolicy;
use globular_cluster::secrets::{self, ClusterSecrets, NewCluster, SeedOptions};
use globular_cluster::seed::{Ports, Seed};
use globular_cluster::Role;
use globular_firstboot::layout::Layout;
use globular_task::Task;

pub const AGENT: &str = env!("CARGO_BIN_EXE_globular");

pub use crate::ports::free_port;

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub root: PathBuf,
    pub seed_path: PathBuf,
    pub seed: Seed,
    /// The node's system root (`--sysroot`): devices, `/proc` (the hostname
    /// is written to `proc/sys/kernel/hostname` here, never the host's).
    pub sysroot: PathBuf,
    /// Boot "with a config drive": the seed is a `cidata` image under the
    /// system root and the agent searches the datasources.
    pub seed_on_drive: bool,
    /// The image version the agent records.
    pub image_version: String,
}

impl Node {
    pub fn layout(&self) -> Layout {
        Layout::new(&self.root)
    }
    pub fn api(&self) -> String {
        format!("{}:{}", self.seed.primary_ip(), self.seed.node.ports.api)
    }
    /// Where the agent writes this node's network configuration.
    pub fn network_dir(&self) -> PathBuf {
        self.root.with_extension("network")
    }
    /// The hostname the agent set.
    pub fn hostname(&self) -> Option<String> {
        std::fs::read_to_string(self.sysroot.join("proc/sys/kernel/hostname")).ok()
    }
    pub fn etcd_url(&self) -> String {
        format!(
            "https://{}:{}",
            self.seed.primary_ip(),
            self.seed.node.ports.etcd_client
        )
    }
    /// The node's own address (`127.0.0.N/8`: every node of a test cluster
    /// owns another loopback address).
    pub fn address(&self) -> &str {
        &self.seed.node.addresses[0]
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub secrets: ClusterSecrets,
    agents: Vec<Child>,
    /// The last octet of the next node's loopback address.
    next_address: std::sync::atomic::AtomicU8,
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster::new_with(&secrets::ClusterExtras::default())
    }

    /// A test cluster whose bundle has `extras` (backup recipients, a
    /// backup policy).
    pub fn new_with(extras: &secrets::ClusterExtras) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let secrets = secrets::create_with(
            &NewCluster {
                name: "test".into(),
                out: dir.path().join("cluster"),
                endpoints: vec![],
                token_ttl: time::Duration::hours(1),
                // Every node of a test cluster runs on this host: loopback
                // addresses, and joiners connect from 127.0.0.1.
                policy: EnrollmentPolicy {
                    allow_loopback: true,
                    require_source_address: false,
                    ..EnrollmentPolicy::default()
                },
            },
            extras,
        )
        .unwrap();
        Cluster {
            dir,
            secrets,
            agents: Vec::new(),
            next_address: std::sync::atomic::AtomicU8::new(10),
        }
    }

    /// A loopback address no other node of this cluster has.
    pub fn fresh_address(&self) -> String {
        let n = self
            .next_address
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("127.0.0.{n}/8")
    }

    pub fn bundle_dir(&self) -> PathBuf {
        self.dir.path().join("cluster")
    }

    /// Writes the seed of a node (joining `endpoints`) and returns it.
    pub fn node(&self, name: &str, role: Role, bootstrap: bool, endpoints: &[String]) -> Node {
        self.node_at(name, role, bootstrap, endpoints, &self.fresh_address())
    }

    /// Like [`Cluster::node`], with the given address (a reimaged node keeps
    /// its address).
    pub fn node_at(
        &self,
        name: &str,
        role: Role,
        bootstrap: bool,
        endpoints: &[String],
        address: &str,
    ) -> Node {
        let ports = Ports {
            api: free_port(),
            etcd_client: free_port(),
            etcd_peer: free_port(),
        };
        let seed_path = self.dir.path().join(format!("{name}.seed.yaml"));
        let seed = secrets::write_seed(
            &self.bundle_dir(),
            &SeedOptions {
                node: name.into(),
                role,
                addresses: vec![address.into()],
                gateway: None,
                bootstrap,
                endpoints: endpoints.to_vec(),
                ports,
                token: None,
                ticket_ttl: secrets::TICKET_TTL,
                packages: None,
            },
            secrets::SeedFormat::Yaml,
            &seed_path,
        )
        .unwrap();
        let sysroot = self.dir.path().join(format!("{name}.sysroot"));
        std::fs::create_dir_all(sysroot.join("proc/sys/kernel")).unwrap();
        Node {
            name: name.into(),
            root: self.dir.path().join(format!("{name}.root")),
            seed_path,
            seed,
            sysroot,
            seed_on_drive: false,
            image_version: "test-1".into(),
        }
    }

    /// Like [`Cluster::node`], with the seed on a `cidata` config drive.
    pub fn node_with_drive(&self, name: &str, role: Role, endpoints: &[String]) -> Node {
        let mut node = self.node(name, role, false, endpoints);
        let by_label = node.sysroot.join("dev/disk/by-label");
        std::fs::create_dir_all(&by_label).unwrap();
        let image = globular_cluster::cidata::image(&node.seed).unwrap();
        std::fs::write(by_label.join("cidata"), image).unwrap();
        std::fs::remove_file(&node.seed_path).unwrap();
        node.seed_on_drive = true;
        node
    }

    /// The restored cluster's first control plane on a fresh disk: `like`'s
    /// name, address and ports, its seed made by `builder seed
    /// --restore-from` (on a `cidata` drive when `on_drive`, else a YAML
    /// file with the snapshot beside it).
    pub fn restore_node(
        &self,
        like: &Node,
        archive: &Path,
        identity: &Path,
        on_drive: bool,
    ) -> anyhow::Result<Node> {
        let name = format!("{}.restored", like.name);
        let sysroot = self.dir.path().join(format!("{name}.sysroot"));
        std::fs::create_dir_all(sysroot.join("proc/sys/kernel")).unwrap();
        let by_label = sysroot.join("dev/disk/by-label");
        std::fs::create_dir_all(&by_label).unwrap();
        let (seed_path, format) = if on_drive {
            (by_label.join("cidata"), secrets::SeedFormat::Cidata)
        } else {
            (
                self.dir.path().join(format!("{name}.seed.yaml")),
                secrets::SeedFormat::Yaml,
            )
        };
        let (seed, _) = globular_cluster::restore::write_restore_seed(
            &self.bundle_dir(),
            &SeedOptions {
                node: like.name.clone(),
                role: Role::ControlPlane,
                addresses: like.seed.node.addresses.clone(),
                gateway: None,
                bootstrap: true,
                endpoints: Vec::new(),
                ports: like.seed.node.ports,
                token: None,
                ticket_ttl: secrets::TICKET_TTL,
                packages: None,
            },
            &globular_cluster::restore::RestoreFrom {
                archive: archive.to_owned(),
                identity: identity.to_owned(),
            },
            format,
            &seed_path,
        )?;
        Ok(Node {
            name: like.name.clone(),
            root: self.dir.path().join(format!("{name}.root")),
            seed_path,
            seed,
            sysroot,
            seed_on_drive: on_drive,
            image_version: "test-2".into(),
        })
    }

    fn agent_task(node: &Node) -> Task {
        Task::new(format!("running the agent of {}", node.name), AGENT)
            .args(["firstboot", "--services", "spawn", "--timeout", "60"])
            .arg("--image-version")
            .arg(&node.image_version)
            .arg("--root")
            .arg(&node.root)
            .arg("--network-dir")
            .arg(node.network_dir())
            .arg("--sysroot")
            .arg(&node.sysroot)
            .args(if node.seed_on_drive {
                vec![]
            } else {
                vec!["--seed".as_ref(), node.seed_path.as_os_str()]
            })
            .env("RUST_LOG", "info")
    }

    /// Runs the agent to completion; returns its stderr-tail error on failure.
    /// Its log is appended to `<name>.agent.log` in the cluster directory
    /// (kept after the test with `GLOBULAR_TEST_KEEP=1`).
    pub fn run_agent(&self, node: &Node) -> Result<(), String> {
        let log = self.dir.path().join(format!("{}.agent.log", node.name));
        let mut child = Self::agent_task(node)
            .spawn_logged(&log)
            .map_err(|e| e.to_string())?;
        let status = child.wait().map_err(|e| e.to_string())?;
        if status.success() {
            return Ok(());
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        Err(format!(
            "agent of {} failed ({status}): {}",
            node.name,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    }

    /// Starts the node's health loop (`globular health --watch`, a round
    /// every second, services spawned), logged beside the agent's log.
    pub fn start_health_loop(&self, node: &Node) -> KillOnDrop {
        let log = self.dir.path().join(format!("{}.health.log", node.name));
        Task::new("the health loop", AGENT)
            .args([
                "health",
                "--watch",
                "--interval",
                "1s",
                "--services",
                "spawn",
                "--root",
            ])
            .arg(&node.root)
            .env("RUST_LOG", "info")
            .spawn_logged(&log)
            .unwrap()
            .into()
    }

    /// Starts the agent in the background; [`Cluster::wait_agent`] waits.
    pub fn start_agent(&mut self, node: &Node) -> usize {
        let log = self.dir.path().join(format!("{}.agent.log", node.name));
        let child = Self::agent_task(node).spawn_logged(&log).unwrap();
        self.agents.push(child);
        self.agents.len() - 1
    }

    /// Waits for an agent started with [`Cluster::start_agent`]; it must
    /// succeed.
    pub fn wait_agent(&mut self, agent: usize, node: &Node) {
        let status = self.agents[agent].wait().unwrap();
        let log = std::fs::read_to_string(self.dir.path().join(format!("{}.agent.log", node.name)))
            .unwrap_or_default();
        assert!(status.success(), "agent of {} failed: {log}", node.name);
    }

    /// Starts the agent with the crash hook set to pause before `step`.
    pub fn start_paused(&mut self, node: &Node, step: &str) -> usize {
        std::fs::create_dir_all(&node.root).unwrap();
        let _ = std::fs::remove_file(node.root.join("paused"));
        let log = self.dir.path().join(format!("{}.agent.log", node.name));
        let child = Self::agent_task(node)
            .env(globular_firstboot::agent::PAUSE_ENV, step)
            .spawn_logged(&log)
            .unwrap();
        self.agents.push(child);
        self.agents.len() - 1
    }

    /// Waits for the paused agent, or for it to exit (the step was not on its
    /// path). Returns whether it paused.
    pub fn wait_paused(&mut self, node: &Node, agent: usize) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            if node.root.join("paused").exists() {
                return true;
            }
            if let Some(status) = self.agents[agent].try_wait().unwrap() {
                let log = std::fs::read_to_string(
                    self.dir.path().join(format!("{}.agent.log", node.name)),
                )
                .unwrap_or_default();
                assert!(status.success(), "agent of {} failed: {log}", node.name);
                return false;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "agent of {} never paused",
                node.name
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// kill -9 of an agent.
    pub fn kill_agent(&mut self, agent: usize) {
        let child = &mut self.agents[agent];
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A background process (a health loop) killed when dropped, so a failed
/// test does not leave it starting the cluster's services again.
pub struct KillOnDrop(Child);

impl From<Child> for KillOnDrop {
    fn from(child: Child) -> Self {
        KillOnDrop(child)
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.agents {
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_all_spawned(self.dir.path());
        if std::env::var_os("GLOBULAR_TEST_KEEP").is_some() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            let _kept = dir.keep();
        }
    }
}

/// Kills every service spawned under `dir` (pid files in `*/run/`).
pub fn kill_all_spawned(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        kill_spawned(&entry.path());
    }
}

/// Kills (SIGKILL) the services spawned for one node root.
pub fn kill_spawned(root: &Path) {
    let Ok(pids) = std::fs::read_dir(root.join("run")) else {
        return;
    };
    for pid in pids.flatten() {
        if let Ok(text) = std::fs::read_to_string(pid.path()) {
            let pid = text.trim().to_owned();
            if pid.parse::<u32>().is_ok() {
                // The shell's kill builtin: no dependency on procps.
                let _ = Task::new("stopping a test service", "sh")
                    .args(["-c", "kill -9 \"$1\"", "sh", &pid])
                    .run();
            }
        }
    }
}

/// `etcdctl` against etcd as the substrate: a control-plane node's etcd
/// client certificate, signed in as `globular-substrate`.
pub fn etcdctl(node: &Node, endpoint: &str, args: &[&str]) -> String {
    let l = node.layout();
    let password = std::fs::read_to_string(l.etcd_password()).unwrap();
    let user = format!("{SUBSTRATE_USER}:{}", password.trim());
    etcdctl_task(
        (
            &l.etcd_ca_cert(),
            &l.etcd_cert("client"),
            &l.etcd_key("client"),
        ),
        endpoint,
        args,
    )
    .env("ETCDCTL_USER", user)
    .read_string()
    .unwrap()
}

/// `etcdctl` with the given CA, certificate and key files (its common
/// name is the etcd user).
pub fn etcdctl_as(
    files: (&Path, &Path, &Path),
    endpoint: &str,
    args: &[&str],
) -> Result<String, globular_task::TaskError> {
    etcdctl_task(files, endpoint, args).read_string()
}

fn etcdctl_task((ca, cert, key): (&Path, &Path, &Path), endpoint: &str, args: &[&str]) -> Task {
    Task::new("querying etcd", "etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=5s")
        .arg("--dial-timeout=3s")
        .arg("--cacert")
        .arg(ca)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args(args)
}

/// `openssl verify -CAfile` of a certificate.
pub fn openssl_verify(ca: &Path, cert: &Path) {
    let out = Task::new("verifying a certificate", "openssl")
        .package("openssl")
        .args(["verify", "-CAfile"])
        .arg(ca)
        .arg(cert)
        .read_string()
        .unwrap();
    assert!(out.trim_end().ends_with("OK"), "{out}");
}

/// Waits up to 30 s until something listens on `addr` (a server the test
/// started); fails naming `what`.
pub fn wait_listening(addr: (&str, u16), what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    globular_firstboot::runtime::build(globular_firstboot::runtime::Threads::One).unwrap()
}
