//! `globular firewall`: the node's nftables ruleset, and on control-plane
//! nodes the set of control-plane addresses allowed on etcd's ports, kept
//! equal to the registry.
//!
//! A controller in the sense of the agent's other loops:
//! - reads: the stored seed (`seed.yaml`: role, addresses, ports, join
//!   endpoints) and the registry's node records (`GET /v1/nodes`, through the
//!   one API client with the node's certificate, once it has one);
//! - owns: the nftables table `inet globular` (nothing else in the ruleset is
//!   touched, so iptables-nft rules of container networking stay);
//! - desired state: input dropped except loopback, ICMP/ICMPv6, replies, and
//!   on control-plane nodes the substrate API and DNS from anywhere and etcd's
//!   client and peer ports from the control-plane set, and the ports the
//!   node's applied packages register (`packages/NAME/ports.json`, written
//!   by `globular apply`, which reloads this service when they change);
//! - acts: loads the whole table once ([`ruleset`]), then replaces the set's
//!   elements in one nftables transaction ([`set_update`]) only when the
//!   registry's control-plane addresses changed. Polled every second, with
//!   backoff while the API does not answer.
//!
//! The image's `/etc/nftables.conf` (loaded by `nftables.service` before the
//! network is up) is the same table with nothing opened: what a worker runs
//! and what a control-plane node has until this service has read its seed.
//! See docs/firewall.md.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::Context as _;
use globular_cluster::registry::NodeRecord;
use globular_cluster::seed::{self, Seed};
use globular_cluster::Role;
use globular_task::Task;

use crate::layout::Layout;
use crate::node_cli;
use crate::runtime::{self, Threads};

/// The nftables table this service owns (family `inet`).
pub const TABLE: &str = "globular";
/// The DNS authority's port on control-plane nodes.
pub const DNS_PORT: u16 = 53;
const SET_V4: &str = "control_plane_v4";
const SET_V6: &str = "control_plane_v6";
/// How often the registry is read while it answers.
const POLL: Duration = Duration::from_secs(1);
/// The longest wait between reads while it does not.
const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// What the input chain opens, beyond loopback, ICMP and replies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Openings {
    /// TCP ports open to anyone (the substrate API, packages' services).
    pub tcp: Vec<(u16, String)>,
    /// UDP ports open to anyone (packages' services).
    pub udp: Vec<(u16, String)>,
    /// TCP and UDP ports open to anyone (DNS).
    pub tcp_udp: Vec<(u16, String)>,
    /// TCP ports open only to the control-plane set (etcd client and peer).
    pub control_plane: BTreeSet<u16>,
}

impl Openings {
    /// A worker's (and a node's without a seed): nothing.
    pub fn none() -> Openings {
        Openings::default()
    }

    /// From the node's seed: its role and its ports.
    pub fn of(seed: &Seed) -> Openings {
        match seed.node.role {
            Role::Worker => Openings::none(),
            Role::ControlPlane => {
                let ports = seed.node.ports;
                Openings {
                    tcp: vec![(ports.api, "substrate API".into())],
                    udp: vec![],
                    tcp_udp: vec![(DNS_PORT, "DNS".into())],
                    control_plane: [ports.etcd_client, ports.etcd_peer].into(),
                }
            }
        }
    }

    /// Also open the ports the node's packages registered.
    pub fn with_packages(mut self, ports: &[PackagePort]) -> Openings {
        for p in ports {
            // The comment is the service's name, kept to characters that
            // need no quoting in nft.
            let what: String = p
                .service
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
                .collect();
            match p.protocol.as_str() {
                "tcp" => self.tcp.push((p.port, what)),
                "udp" => self.udp.push((p.port, what)),
                other => tracing::warn!(
                    "{}: protocol {other:?} is neither tcp nor udp; port {} stays closed",
                    p.service,
                    p.port
                ),
            }
        }
        self
    }
}

/// A port a package's registry entry names: open to anyone, like the
/// substrate API (the service behind it authenticates its clients).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackagePort {
    pub service: String,
    pub port: u16,
    pub protocol: String,
}

/// The file under `packages/NAME/` that lists the package's ports.
pub const PORTS_FILE: &str = "ports.json";

/// The ports of every applied package; a file that does not parse is
/// skipped with a warning (its ports stay closed).
pub fn package_ports(layout: &Layout) -> Vec<PackagePort> {
    let Ok(dirs) = std::fs::read_dir(layout.root().join("packages")) else {
        return Vec::new();
    };
    let mut files: Vec<_> = dirs
        .filter_map(|d| d.ok())
        .map(|d| d.path().join(PORTS_FILE))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let parsed = std::fs::read_to_string(&file)
            .map_err(anyhow::Error::from)
            .and_then(|t| Ok(serde_json::from_str::<Vec<PackagePort>>(&t)?));
        match parsed {
            Ok(ports) => out.extend(ports),
            Err(e) => tracing::warn!("{}: {e:#}; its ports stay closed", file.display()),
        }
    }
    out
}

/// Addresses of the control-plane set, by family (nftables sets are typed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddrSet {
    pub v4: BTreeSet<Ipv4Addr>,
    pub v6: BTreeSet<Ipv6Addr>,
}

impl AddrSet {
    pub fn insert(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(ip) => self.v4.insert(ip),
            IpAddr::V6(ip) => self.v6.insert(ip),
        };
    }

    /// Addresses in `self` and not in `other`.
    pub fn minus(&self, other: &AddrSet) -> Vec<IpAddr> {
        let v4 = self.v4.difference(&other.v4).map(|ip| IpAddr::V4(*ip));
        let v6 = self.v6.difference(&other.v6).map(|ip| IpAddr::V6(*ip));
        v4.chain(v6).collect()
    }
}

impl FromIterator<IpAddr> for AddrSet {
    fn from_iter<I: IntoIterator<Item = IpAddr>>(iter: I) -> AddrSet {
        let mut set = AddrSet::default();
        for ip in iter {
            set.insert(ip);
        }
        set
    }
}

/// The set before the registry has answered: this node's addresses and the
/// seed's join endpoints (the control-plane nodes a joiner talks to first),
/// so that the first join works.
pub fn initial_set(seed: &Seed) -> AddrSet {
    let endpoints = seed
        .cluster
        .endpoints
        .iter()
        .filter_map(|e| e.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()));
    seed.ips().into_iter().chain(endpoints).collect()
}

/// The set the registry asks for: the addresses of every enrolled
/// control-plane node, and this node's own.
pub fn registry_set(seed: &Seed, nodes: &[NodeRecord]) -> AddrSet {
    let registered = nodes
        .iter()
        .filter(|n| n.role == Role::ControlPlane)
        .flat_map(|n| n.addresses.iter())
        .filter_map(|a| match seed::parse_cidr(a) {
            Ok((ip, _)) => Some(ip),
            Err(e) => {
                tracing::warn!("ignoring a node record's address {a:?}: {e}");
                None
            }
        });
    seed.ips().into_iter().chain(registered).collect()
}

fn elements<T: std::fmt::Display>(ips: impl IntoIterator<Item = T>) -> String {
    ips.into_iter()
        .map(|ip| ip.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn port_list(ports: &BTreeSet<u16>) -> String {
    match ports.len() {
        1 => ports.iter().next().map(u16::to_string).unwrap_or_default(),
        _ => format!("{{ {} }}", elements(ports)),
    }
}

/// The whole table, replacing an earlier one in the same transaction
/// (`nft -f`): create it if missing, delete it, define it.
pub fn ruleset(open: &Openings, set: &AddrSet) -> String {
    let mut text =
        format!("table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n");
    for (name, family, elems) in [
        (SET_V4, "ipv4_addr", elements(&set.v4)),
        (SET_V6, "ipv6_addr", elements(&set.v6)),
    ] {
        text += &format!("\tset {name} {{\n\t\ttype {family}\n");
        if !elems.is_empty() {
            text += &format!("\t\telements = {{ {elems} }}\n");
        }
        text += "\t}\n\n";
    }
    text += "\tchain input {\n\
              \t\ttype filter hook input priority filter; policy drop;\n\
              \t\tiif \"lo\" accept\n\
              \t\tmeta l4proto { icmp, ipv6-icmp } accept comment \"ICMP, neighbour discovery\"\n\
              \t\tct state established,related accept\n\
              \t\tct state invalid drop\n";
    for (port, what) in &open.tcp {
        text += &format!("\t\ttcp dport {port} accept comment \"{what}\"\n");
    }
    for (port, what) in &open.udp {
        text += &format!("\t\tudp dport {port} accept comment \"{what}\"\n");
    }
    for (port, what) in &open.tcp_udp {
        text +=
            &format!("\t\tmeta l4proto {{ tcp, udp }} th dport {port} accept comment \"{what}\"\n");
    }
    if !open.control_plane.is_empty() {
        let ports = port_list(&open.control_plane);
        text += &format!(
            "\t\ttcp dport {ports} ip saddr @{SET_V4} accept comment \"etcd: control-plane nodes\"\n\
             \t\ttcp dport {ports} ip6 saddr @{SET_V6} accept comment \"etcd: control-plane nodes\"\n\
             \t\ttcp dport {ports} reject with tcp reset comment \"etcd: anyone else, refused at once\"\n"
        );
    }
    text += "\t}\n\n\
             \tchain output {\n\
             \t\ttype filter hook output priority filter; policy accept;\n\
             \t}\n\
             }\n";
    text
}

/// Replaces the set's elements, in one transaction.
pub fn set_update(set: &AddrSet) -> String {
    let mut text = String::new();
    for (name, elems) in [(SET_V4, elements(&set.v4)), (SET_V6, elements(&set.v6))] {
        text += &format!("flush set inet {TABLE} {name}\n");
        if !elems.is_empty() {
            text += &format!("add element inet {TABLE} {name} {{ {elems} }}\n");
        }
    }
    text
}

/// Loads nftables scripts: `nft -f -` on a node, a recorder in tests.
pub trait Nft {
    fn apply(&mut self, what: &str, script: &str) -> anyhow::Result<()>;
}

/// The real `nft`.
#[derive(Debug, Default)]
pub struct System;

impl Nft for System {
    fn apply(&mut self, what: &str, script: &str) -> anyhow::Result<()> {
        Task::new(what, "nft")
            .package("nftables")
            .args(["-f", "-"])
            .stdin(script)
            .run()?;
        Ok(())
    }
}

/// The control-plane set of one node: what is loaded, what to change.
#[derive(Debug)]
pub struct Controller<N> {
    seed: Seed,
    packages: Vec<PackagePort>,
    current: AddrSet,
    nft: N,
}

impl<N: Nft> Controller<N> {
    /// Loads the table for `seed` with its initial set.
    pub fn start(
        seed: Seed,
        packages: Vec<PackagePort>,
        mut nft: N,
    ) -> anyhow::Result<Controller<N>> {
        let current = initial_set(&seed);
        nft.apply(
            "loading the firewall ruleset",
            &first_ruleset(&seed, &packages),
        )?;
        tracing::info!(
            "firewall loaded for {} ({}); control-plane set: {}",
            seed.node.name,
            seed.node.role,
            elements(current.minus(&AddrSet::default()))
        );
        Ok(Controller {
            seed,
            packages,
            current,
            nft,
        })
    }

    /// Loads the whole table again with the current set and `packages`'
    /// ports: after `nftables.service` reloaded the image's closed table,
    /// or `globular apply` changed a package's ports (SIGHUP).
    pub fn reload(&mut self, packages: Vec<PackagePort>) -> anyhow::Result<()> {
        self.packages = packages;
        let open = Openings::of(&self.seed).with_packages(&self.packages);
        let text = ruleset(&open, &self.current);
        self.nft.apply("reloading the firewall ruleset", &text)?;
        tracing::info!("firewall ruleset reloaded");
        Ok(())
    }

    pub fn current(&self) -> &AddrSet {
        &self.current
    }

    /// Makes the set equal to the registry's control-plane addresses;
    /// whether it changed.
    pub fn observe(&mut self, nodes: &[NodeRecord]) -> anyhow::Result<bool> {
        let desired = registry_set(&self.seed, nodes);
        if desired == self.current {
            return Ok(false);
        }
        let (added, removed) = (desired.minus(&self.current), self.current.minus(&desired));
        self.nft.apply(
            "updating the control-plane address set",
            &set_update(&desired),
        )?;
        tracing::info!(
            "control-plane set: added [{}], removed [{}]",
            elements(added),
            elements(removed)
        );
        self.current = desired;
        Ok(true)
    }
}

/// Tells systemd the service is ready (`Type=notify`); nothing without
/// `NOTIFY_SOCKET`.
fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        use std::os::linux::net::SocketAddrExt as _;
        use std::os::unix::ffi::OsStrExt as _;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let bytes = path.as_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(std::path::Path::new(&path))?,
        };
        UnixDatagram::unbound()?.send_to_addr(b"READY=1", &addr)?;
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!("telling systemd the firewall is ready: {e}");
    }
}

/// The stored seed, waiting for the agent to store it (first boot).
async fn wait_for_seed(layout: &Layout) -> anyhow::Result<Seed> {
    let path = layout.seed();
    let mut logged = false;
    loop {
        if path.exists() {
            let text = layout.read(&path)?;
            return Ok(Seed::parse(&text, &path.display().to_string())?);
        }
        if !logged {
            tracing::info!(
                "waiting for the agent to store the seed ({}); the image's ruleset stays",
                path.display()
            );
            notify_ready();
            logged = true;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The ruleset loaded first for `seed`: a worker's opens nothing (the
/// image's `/etc/nftables.conf`); a control-plane node's has its initial set.
/// Either opens the ports of the node's packages.
pub fn first_ruleset(seed: &Seed, packages: &[PackagePort]) -> String {
    match seed.node.role {
        Role::Worker => ruleset(
            &Openings::none().with_packages(packages),
            &AddrSet::default(),
        ),
        Role::ControlPlane => ruleset(
            &Openings::of(seed).with_packages(packages),
            &initial_set(seed),
        ),
    }
}

/// The ruleset the stored seed asks for, as `globular firewall` loads it first.
pub fn print(layout: &Layout) -> anyhow::Result<String> {
    let path = layout.seed();
    let seed = Seed::parse(&layout.read(&path)?, &path.display().to_string())?;
    Ok(first_ruleset(&seed, &package_ports(layout)))
}

/// `globular firewall`: loads the ruleset from the seed; on a control-plane
/// node then follows the registry until SIGTERM.
pub fn run(layout: &Layout) -> anyhow::Result<()> {
    runtime::block_on(Threads::One, async {
        let seed = wait_for_seed(layout).await?;
        if seed.node.role == Role::Worker {
            let ports = package_ports(layout);
            System.apply(
                "loading the firewall ruleset",
                &first_ruleset(&seed, &ports),
            )?;
            let open: Vec<String> = ports
                .iter()
                .map(|p| format!("{}/{} ({})", p.port, p.protocol, p.service))
                .collect();
            tracing::info!(
                "firewall loaded for worker {}: open inbound: {}",
                seed.node.name,
                if open.is_empty() {
                    "nothing".to_owned()
                } else {
                    open.join(", ")
                }
            );
            notify_ready();
            return Ok(());
        }
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("listening for SIGHUP")?;
        let mut controller = Controller::start(seed, package_ports(layout), System)?;
        notify_ready();
        loop {
            tokio::select! {
                result = follow(layout, &mut controller) => return result,
                _ = crate::server::shutdown_signal() => return Ok(()),
                // `systemctl reload nftables` (propagated to this unit) put
                // the closed table back, or a package's ports changed: load
                // ours again, then keep following.
                _ = hangup.recv() => controller.reload(package_ports(layout))?,
            }
        }
    })
}

/// Keeps the set equal to the registry: every [`POLL`] while the API
/// answers, backing off to [`MAX_BACKOFF`] while it does not. The client is
/// made again after an error (new endpoints or certificate).
async fn follow<N: Nft>(layout: &Layout, controller: &mut Controller<N>) -> anyhow::Result<()> {
    let mut client = None;
    let mut wait = POLL;
    let mut failing = false;
    loop {
        if !layout.node_config().exists() {
            // Not enrolled yet: nothing to ask, the initial set holds.
            tokio::time::sleep(POLL).await;
            continue;
        }
        if client.is_none() {
            client = node_cli::client(layout)
                .map_err(|e| tracing::warn!("firewall: no API client yet: {e:#}"))
                .ok();
        }
        let answer = match &client {
            Some(c) => Some(c.nodes().await),
            None => None,
        };
        match answer {
            Some(Ok(list)) => {
                controller
                    .observe(&list.nodes)
                    .context("updating the firewall")?;
                if failing {
                    tracing::info!("firewall: the registry answers again");
                }
                failing = false;
                wait = POLL;
            }
            Some(Err(e)) => {
                if !failing {
                    tracing::warn!("firewall: reading the registry: {e:#}; retrying with backoff");
                }
                failing = true;
                client = None;
                wait = (wait * 2).min(MAX_BACKOFF);
            }
            None => wait = (wait * 2).min(MAX_BACKOFF),
        }
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const CA_HASH: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn worker_seed() -> Seed {
        let yaml = format!(
            "version: 1
cluster:
  name: demo
  id: 0123456789abcdef0123456789abcdef
  ca_cert_hash: {CA_HASH}
  endpoints: [10.0.0.1:10016]
node:
  name: w1
  role: worker
  addresses: [10.0.0.21/24]
token: abcdef.0123456789abcdef
"
        );
        Seed::parse(&yaml, "test").unwrap()
    }

    /// A control-plane seed with non-default ports; `validate` is skipped
    /// (it needs a real CA), the fields are what the firewall reads.
    fn control_plane_seed() -> Seed {
        let mut seed = worker_seed();
        seed.node.name = "cp2".into();
        seed.node.role = Role::ControlPlane;
        seed.node.addresses = vec!["10.0.0.12/24".into(), "fd00::12/64".into()];
        seed.node.ports.api = 11016;
        seed.node.ports.etcd_client = 12379;
        seed.node.ports.etcd_peer = 12380;
        seed.cluster.endpoints = vec!["10.0.0.11:11016".into(), "[fd00::11]:11016".into()];
        seed
    }

    fn record(name: &str, role: Role, addresses: &[&str]) -> NodeRecord {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "role": role,
            "addresses": addresses,
            "image_version": "0.1.0",
            "cert_serial": "01",
            "key_id": "sha256:00",
            "certificate": "",
            "enrolled_at": 0,
            "renewed_at": 0,
        }))
        .unwrap()
    }

    fn ips(list: &[&str]) -> AddrSet {
        list.iter().map(|s| s.parse::<IpAddr>().unwrap()).collect()
    }

    #[derive(Default)]
    struct Recorder(Vec<String>);
    impl Nft for &mut Recorder {
        fn apply(&mut self, _what: &str, script: &str) -> anyhow::Result<()> {
            self.0.push(script.to_owned());
            Ok(())
        }
    }

    #[test]
    fn packages_ports_are_opened_and_bad_files_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let write = |name: &str, text: &str| {
            let d = layout.package_dir(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(PORTS_FILE), text).unwrap();
        };
        write(
            "kubernetes-control-plane",
            r#"[{"service": "kubernetes.KubernetesService", "port": 6443, "protocol": "tcp"},
                {"service": "x\" accept; drop \"", "port": 7000, "protocol": "udp"},
                {"service": "odd", "port": 7001, "protocol": "sctp"}]"#,
        );
        write("broken", "{not json");
        let ports = package_ports(&layout);
        assert_eq!(ports.len(), 3, "{ports:?}");
        for seed in [control_plane_seed(), worker_seed()] {
            let text = first_ruleset(&seed, &ports);
            assert!(
                text.contains("tcp dport 6443 accept comment \"kubernetes.KubernetesService\""),
                "{text}"
            );
            // A name cannot end the comment and add a rule of its own.
            assert!(
                text.contains("udp dport 7000 accept comment \"xacceptdrop\""),
                "{text}"
            );
            assert!(!text.contains("7001"), "{text}");
        }
        // Without packages a worker still opens nothing.
        assert!(!first_ruleset(&worker_seed(), &[]).contains("dport"));
    }

    #[test]
    fn control_plane_ruleset_follows_the_seed_ports() {
        let seed = control_plane_seed();
        let text = ruleset(&Openings::of(&seed), &initial_set(&seed));
        assert!(
            text.starts_with("table inet globular\ndelete table inet globular\n"),
            "{text}"
        );
        assert!(text.contains("policy drop;"), "{text}");
        assert!(text.contains("tcp dport 11016 accept"), "{text}");
        assert!(
            text.contains("meta l4proto { tcp, udp } th dport 53 accept"),
            "{text}"
        );
        assert!(
            text.contains("tcp dport { 12379, 12380 } ip saddr @control_plane_v4 accept"),
            "{text}"
        );
        assert!(
            text.contains("tcp dport { 12379, 12380 } ip6 saddr @control_plane_v6 accept"),
            "{text}"
        );
        assert!(
            text.contains("elements = { 10.0.0.11, 10.0.0.12 }"),
            "{text}"
        );
        assert!(text.contains("elements = { fd00::11, fd00::12 }"), "{text}");
        assert!(
            !text.contains(" 2379") && !text.contains(" 10016"),
            "{text}"
        );
    }

    #[test]
    fn worker_opens_nothing() {
        let text = ruleset(&Openings::of(&worker_seed()), &AddrSet::default());
        assert!(!text.contains("dport"), "{text}");
        assert!(!text.contains("elements"), "{text}");
        assert!(text.contains("policy drop;"), "{text}");
    }

    /// The image's /etc/nftables.conf is the ruleset with nothing open: the
    /// same table this service replaces.
    #[test]
    fn image_ruleset_is_the_closed_one() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../overlays/base/etc/nftables.conf");
        let file = std::fs::read_to_string(&path).unwrap();
        let closed = ruleset(&Openings::none(), &AddrSet::default());
        let header = file
            .strip_suffix(&closed)
            .unwrap_or_else(|| panic!("{} is not the closed ruleset:\n{closed}", path.display()));
        assert!(header.lines().all(|l| l.starts_with('#')), "{header}");
    }

    /// The image runs this command from its unit, beside the others.
    #[test]
    fn unit_is_in_the_overlay() {
        let unit = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../overlays/base/usr/lib/systemd/system/globular-firewall.service");
        let text = std::fs::read_to_string(&unit).unwrap();
        assert!(
            text.contains("ExecStart=/usr/bin/globular firewall --root /var/lib/globular\n"),
            "{text}"
        );
    }

    #[test]
    fn duplicate_etcd_ports_render_once() {
        let mut seed = control_plane_seed();
        seed.node.ports.etcd_peer = seed.node.ports.etcd_client;
        let text = ruleset(&Openings::of(&seed), &AddrSet::default());
        assert!(text.contains("tcp dport 12379 ip saddr"), "{text}");
    }

    #[test]
    fn registry_set_is_control_planes_and_self() {
        let seed = control_plane_seed();
        let nodes = [
            record("cp1", Role::ControlPlane, &["10.0.0.11/24"]),
            record("cp3", Role::ControlPlane, &["10.0.0.13/24", "fd00::13/64"]),
            record("w1", Role::Worker, &["10.0.0.21/24"]),
            record("bad", Role::ControlPlane, &["not-an-address"]),
        ];
        assert_eq!(
            registry_set(&seed, &nodes),
            ips(&[
                "10.0.0.11",
                "10.0.0.12",
                "10.0.0.13",
                "fd00::12",
                "fd00::13"
            ])
        );
    }

    #[test]
    fn set_update_replaces_the_elements() {
        assert_eq!(
            set_update(&ips(&["10.0.0.12", "10.0.0.11"])),
            "flush set inet globular control_plane_v4\n\
             add element inet globular control_plane_v4 { 10.0.0.11, 10.0.0.12 }\n\
             flush set inet globular control_plane_v6\n"
        );
    }

    #[test]
    fn nft_runs_only_when_the_set_changes() {
        let seed = control_plane_seed();
        let mut nft = Recorder::default();
        let mut c = Controller::start(seed, vec![], &mut nft).unwrap();
        assert_eq!(
            c.current(),
            &ips(&["10.0.0.11", "10.0.0.12", "fd00::11", "fd00::12"])
        );
        let cp1 = record("cp1", Role::ControlPlane, &["10.0.0.11/24"]);
        let cp3 = record("cp3", Role::ControlPlane, &["10.0.0.13/24"]);
        let w1 = record("w1", Role::Worker, &["10.0.0.21/24"]);
        // The registry drops the seed's IPv6 endpoint (not a node's address).
        assert!(c.observe(std::slice::from_ref(&cp1)).unwrap());
        assert!(!c.observe(&[cp1.clone(), w1.clone()]).unwrap());
        assert!(c.observe(&[cp1.clone(), cp3.clone(), w1]).unwrap());
        assert!(!c.observe(&[cp3, cp1]).unwrap());
        drop(c);
        assert_eq!(nft.0.len(), 3, "{:#?}", nft.0);
        assert!(nft.0[0].starts_with("table inet globular\n"));
        assert!(
            nft.0[2].contains("{ 10.0.0.11, 10.0.0.12, 10.0.0.13 }"),
            "{}",
            nft.0[2]
        );
    }

    fn require_nft() {
        assert!(
            globular_task::which("nft").is_some(),
            "nft is not installed (scripts/install-deps.sh installs nftables)"
        );
    }

    /// The real `nft --check` accepts every ruleset and update we render.
    #[test]
    fn nft_accepts_the_rendered_rulesets() {
        require_nft();
        let cp = control_plane_seed();
        let set = registry_set(&cp, &[record("cp1", Role::ControlPlane, &["10.0.0.11/24"])]);
        for (name, script) in [
            (
                "control-plane",
                ruleset(&Openings::of(&cp), &initial_set(&cp)),
            ),
            (
                "worker",
                ruleset(&Openings::of(&worker_seed()), &AddrSet::default()),
            ),
            (
                "control-plane, then an update",
                ruleset(&Openings::of(&cp), &initial_set(&cp)) + &set_update(&set),
            ),
            (
                "an emptied set",
                ruleset(&Openings::of(&cp), &initial_set(&cp)) + &set_update(&AddrSet::default()),
            ),
        ] {
            Task::new(format!("checking the {name} ruleset"), "nft")
                .args(["--check", "-f", "-"])
                .stdin(script.clone())
                .run()
                .unwrap_or_else(|e| panic!("{e:#}\n{script}"));
        }
    }

    /// Loaded for real in a network namespace of its own: the table, an
    /// update, and the set nftables then holds.
    #[test]
    fn nft_loads_the_ruleset_and_the_update() {
        require_nft();
        // A network namespace of its own needs root; the error says so.
        Task::new("making a network namespace (needs root)", "unshare")
            .args(["-n", "true"])
            .run()
            .unwrap();
        let cp = control_plane_seed();
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("ruleset.nft");
        let update = dir.path().join("update.nft");
        std::fs::write(&first, ruleset(&Openings::of(&cp), &initial_set(&cp))).unwrap();
        let nodes = [
            record("cp1", Role::ControlPlane, &["10.0.0.11/24"]),
            record("cp3", Role::ControlPlane, &["10.0.0.13/24"]),
        ];
        std::fs::write(&update, set_update(&registry_set(&cp, &nodes))).unwrap();
        let script = format!(
            "nft -f {first} && nft -f {update} && nft -f {first} && nft -f {update} && nft list set inet globular control_plane_v4 && nft list set inet globular control_plane_v6",
            first = first.display(),
            update = update.display()
        );
        let out = Task::new("loading the ruleset in a network namespace", "unshare")
            .args(["-n", "sh", "-c", &script])
            .read_string()
            .unwrap();
        assert!(out.contains("elements = { 10.0.0.11, 10.0.0.12,"), "{out}");
        assert!(out.contains("10.0.0.13 }"), "{out}");
        assert!(out.contains("elements = { fd00::12 }"), "{out}");
    }
}
