//! Command-line interface of `globular`: clap types and one library call per
//! subcommand.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use globular_cluster::protocol::RegisterRequest;
use globular_cluster::Role;

use crate::layout::{Layout, DEFAULT_ROOT};
use crate::runtime::{self, Threads};
use crate::{
    agent, backup, certs, firewall, health, images, kubeconfig, node_cli, package, pod_routes,
    renew, rotation, server, services, upgrade,
};

#[derive(Debug, Parser)]
#[command(name = "globular", version, about = "The Globular node agent and CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the seed's network and hostname (every boot) and turn this node
    /// into a cluster member (until enrolled).
    Firstboot(FirstbootArgs),
    /// Run the substrate API and the DNS authority of a control-plane node.
    Serve(ServeArgs),
    /// Load the node's nftables ruleset from its seed; on a control-plane
    /// node, keep etcd's allowed addresses equal to the registry's
    /// control-plane nodes.
    Firewall(FirewallArgs),
    /// Nodes of the cluster.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Services in the registry.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// The cluster's DNS zone, as the control planes answer it.
    Dns(DnsArgs),
    /// Bootstrap tokens (control-plane nodes).
    #[command(subcommand)]
    Token(TokenCommand),
    /// The node's certificate.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Make this node match a package spec (`kubernetes-control-plane.yaml`):
    /// certificates, files, etcd access, components, health, registration.
    Apply(ApplyArgs),
    /// Components of applied packages.
    #[command(subcommand)]
    Component(ComponentCommand),
    /// Print a short-lived administrator kubeconfig (control-plane nodes).
    Kubeconfig(KubeconfigArgs),
    /// Keep routes to the other Kubernetes nodes' pod ranges (a component
    /// of the Kubernetes node package; docs/kubernetes.md).
    PodRoutes(PodRoutesArgs),
    /// Backups of the cluster: etcd snapshots with the cluster's secrets,
    /// encrypted to the operators (docs/backup.md).
    #[command(subcommand)]
    Backup(BackupCommand),
    /// This node's health checks now, with the health loop's actions and
    /// incidents (non-zero exit when a check fails); `--watch` is the loop
    /// (docs/operations.md).
    Health(HealthArgs),
    /// Container images on this node (docs/kubernetes.md).
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Import OCI archives (the builder's `Format=oci`) into containerd,
    /// where Kubernetes' pods find them without a registry.
    Import(ImageImportArgs),
}

#[derive(Debug, Args)]
struct ImageImportArgs {
    /// OCI archives (`NAME.oci.tar`).
    #[arg(required_unless_present = "dir")]
    archives: Vec<PathBuf>,
    /// Import every `*.oci.tar` of this directory (none: nothing to do),
    /// as `globular-images.service` does at boot.
    #[arg(long, conflicts_with = "archives")]
    dir: Option<PathBuf>,
    /// containerd's socket.
    #[arg(long, default_value = images::CONTAINERD_ADDRESS)]
    address: PathBuf,
    /// containerd namespace (Kubernetes' CRI uses `k8s.io`).
    #[arg(long, default_value = images::CRI_NAMESPACE)]
    namespace: String,
}

#[derive(Debug, Args)]
struct HealthArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Run the loop: check and correct every `--interval`, forever.
    #[arg(long)]
    watch: bool,
    /// How often the loop runs (`5s`).
    #[arg(long, default_value = "5s", value_parser = globular_cluster::token::parse_ttl)]
    interval: time::Duration,
    /// How the node's services are run.
    #[arg(long, value_enum, default_value = "systemd")]
    services: ManagerArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ApplyArgs {
    #[command(flatten)]
    root: RootArgs,
    /// The package spec.
    #[arg(required_unless_present = "installed")]
    spec: Option<PathBuf>,
    /// Apply every package the image ships for this node's role (the specs
    /// in `--packages-dir`) instead of one spec.
    #[arg(long, conflicts_with = "spec")]
    installed: bool,
    /// Where `--installed` finds the image's package specs.
    #[arg(long, default_value = package::INSTALLED_DIR)]
    packages_dir: PathBuf,
    /// Print what would change and change nothing.
    #[arg(long)]
    plan: bool,
    /// Override a setting of the package (`NAME=VALUE`); may be repeated.
    #[arg(long = "set")]
    settings: Vec<String>,
    /// How to run the components.
    #[arg(long, value_enum, default_value = "systemd")]
    services: ManagerArg,
    /// How long the health checks may take to pass, in seconds.
    #[arg(long, default_value_t = 600)]
    wait: u64,
}

#[derive(Debug, Subcommand)]
enum ComponentCommand {
    /// Replace this process with the component's program (what the
    /// `globular-component@NAME` unit runs).
    Exec(ComponentExecArgs),
}

#[derive(Debug, Args)]
struct ComponentExecArgs {
    #[command(flatten)]
    root: RootArgs,
    name: String,
}

#[derive(Debug, Args)]
struct KubeconfigArgs {
    #[command(flatten)]
    root: RootArgs,
    /// How long the administrator certificate is valid (at most 24h).
    #[arg(long, default_value = "1h", value_parser = globular_cluster::token::parse_ttl)]
    ttl: time::Duration,
    /// The API server URL (default: this node's kubernetes.KubernetesService
    /// in the registry).
    #[arg(long)]
    server: Option<String>,
}

#[derive(Debug, Args)]
struct PodRoutesArgs {
    #[command(flatten)]
    root: RootArgs,
    /// A kubeconfig whose identity may list Nodes (the package's
    /// kube-proxy.kubeconfig).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Seconds between two readings of the Nodes.
    #[arg(long, default_value_t = 5)]
    interval: u64,
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Renew this node's certificates (same keys) that are due: a third of
    /// their validity left (the health loop does this by itself).
    Renew(CertRenewArgs),
    /// Renew every certificate of this node now, or with `--all` of every
    /// node of the cluster, node by node (on a control plane).
    Rotate(CertRotateArgs),
    /// List every certificate on this node with its expiry, soonest first.
    Status(CertStatusArgs),
}

#[derive(Debug, Args)]
struct CertStatusArgs {
    #[command(flatten)]
    root: RootArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CertRenewArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Renew the certificates that expire within this long (`7d`) instead.
    #[arg(long, value_parser = globular_cluster::token::parse_ttl)]
    before: Option<time::Duration>,
}

#[derive(Debug, Args)]
struct CertRotateArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Every node of the cluster, one at a time (control planes first).
    #[arg(long)]
    all: bool,
    /// With --all: how long one node may take before the run stops.
    #[arg(long, default_value = "180s", value_parser = globular_cluster::token::parse_ttl)]
    per_node: time::Duration,
}

#[derive(Debug, Args)]
struct RootArgs {
    /// State directory of the node.
    #[arg(long, default_value = DEFAULT_ROOT)]
    root: PathBuf,
}

#[derive(Debug, Args)]
struct DnsArgs {
    #[command(flatten)]
    root: RootArgs,
    /// The zone as JSON (name, serial, records).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Port of the DNS authority on every seed address (UDP and TCP); 0:
    /// no DNS.
    #[arg(long, default_value_t = globular_cluster::DNS_PORT)]
    dns_port: u16,
}

#[derive(Debug, Args)]
struct FirewallArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Print the ruleset the stored seed asks for and exit (nothing loaded).
    #[arg(long)]
    print: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ManagerArg {
    /// `systemctl start` the units.
    Systemd,
    /// Spawn the services as detached processes (tests, containers).
    Spawn,
}

#[derive(Debug, Args)]
struct FirstbootArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Root under which seed devices, fw_cfg and /proc/cmdline are looked up.
    #[arg(long, default_value = "/")]
    sysroot: PathBuf,
    /// Use this seed file instead of searching the datasources.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// How to start etcd and the substrate API.
    #[arg(long, value_enum, default_value = "systemd")]
    services: ManagerArg,
    /// Image version to record (default: IMAGE_VERSION from os-release).
    #[arg(long)]
    image_version: Option<String>,
    /// How long to keep trying to reach the cluster, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Where to write the network configuration made from the seed (on
    /// every run; /etc is read-only on images).
    #[arg(long, default_value = "/run/systemd/network")]
    network_dir: PathBuf,
    /// Leave the network configuration alone.
    #[arg(long, conflicts_with = "network_dir")]
    no_network: bool,
    /// Leave the hostname alone (else the node name is written to
    /// SYSROOT/proc/sys/kernel/hostname on every run).
    #[arg(long)]
    no_hostname: bool,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// List the enrolled nodes.
    List(NodeListArgs),
    /// Wait until a reimaged node is back: enrolled from the image
    /// version given, its services checked healthy since, and (with
    /// --kubeconfig) its Kubernetes Node Ready. Fails naming what is
    /// missing after --timeout: the gate between two nodes of an upgrade.
    Wait(NodeWaitArgs),
}

#[derive(Debug, Args)]
struct NodeWaitArgs {
    #[command(flatten)]
    root: RootArgs,
    /// The node's name.
    node: String,
    /// The image version it must run (the new image's).
    #[arg(long)]
    image_version: String,
    /// Also wait for its Kubernetes Node (a worker's) to be Ready.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The Node's kubelet version (`v1.37.2`), with --kubeconfig.
    #[arg(long, requires = "kubeconfig")]
    kubelet_version: Option<String>,
    /// How long to wait (`20m`).
    #[arg(long, default_value = "20m", value_parser = globular_cluster::token::parse_ttl)]
    timeout: time::Duration,
}

#[derive(Debug, Args)]
struct NodeListArgs {
    #[command(flatten)]
    root: RootArgs,
    /// The node records as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// List registered services.
    List(ServiceListArgs),
    /// Register a service instance in the registry, as this node; prints the
    /// stored record.
    Register(ServiceRegisterArgs),
}

#[derive(Debug, Args)]
struct ServiceRegisterArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Service name (e.g. `kubernetes.KubernetesService`).
    #[arg(long)]
    name: String,
    /// Instance id (default: this node's name).
    #[arg(long)]
    id: Option<String>,
    /// Address the service is reached at.
    #[arg(long)]
    address: String,
    #[arg(long)]
    port: u16,
    #[arg(long, default_value = "tcp")]
    protocol: String,
    /// A tag; may be repeated.
    #[arg(long = "tag")]
    tags: Vec<String>,
}

#[derive(Debug, Args)]
struct ServiceListArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Only this service.
    #[arg(long)]
    name: Option<String>,
    /// The service records as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a bootstrap token.
    Create(TokenCreateArgs),
}

#[derive(Debug, Args)]
struct TokenCreateArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Role the token may enroll; may be repeated.
    #[arg(long = "role", required = true)]
    roles: Vec<Role>,
    /// Lifetime (`30m`, `1h`, `7d`).
    #[arg(long, default_value = "1h", value_parser = globular_cluster::token::parse_ttl)]
    ttl: time::Duration,
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// Take a backup now (control-plane nodes): an etcd snapshot and the
    /// seed, signed with the cluster CA and encrypted to the operators' keys.
    Create(BackupCreateArgs),
    /// List the archives in the backup directory, newest first.
    List(BackupListArgs),
    /// Check an archive against its checksum file; with `--identity`, also
    /// decrypt it and check its signature and every part.
    Verify(BackupVerifyArgs),
    /// Remove old archives (never the newest).
    Prune(BackupPruneArgs),
    /// Restore an archive's etcd snapshot into a new data directory (keys
    /// and revisions kept) after checking the whole archive.
    Restore(BackupRestoreArgs),
    /// The scheduled backup (globular-backup.timer): if this control plane
    /// leads etcd and the last backup is older than the policy's interval,
    /// take one, prune, copy it to the policy's targets and record it in
    /// the registry.
    Run(BackupRunArgs),
    /// The last scheduled backup and its copies, from the registry (JSON).
    Status(BackupStatusArgs),
}

#[derive(Debug, Args)]
struct BackupRunArgs {
    #[command(flatten)]
    root: RootArgs,
    #[command(flatten)]
    dir: BackupDirArgs,
    /// Take one now, whether this node leads and whether one is due (for
    /// example before an upgrade).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct BackupStatusArgs {
    #[command(flatten)]
    root: RootArgs,
}

#[derive(Debug, Args)]
struct BackupDirArgs {
    /// Where the archives are.
    #[arg(long, default_value = backup::DEFAULT_DIR)]
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct BackupCreateArgs {
    #[command(flatten)]
    root: RootArgs,
    #[command(flatten)]
    dir: BackupDirArgs,
    /// Archive name (default: CLUSTER-YYYYMMDDTHHMMSSZ).
    #[arg(long)]
    name: Option<String>,
    /// Another operator public key (`age1...`) beside the seed's; may be
    /// repeated.
    #[arg(long = "recipient")]
    recipients: Vec<String>,
}

#[derive(Debug, Args)]
struct BackupListArgs {
    #[command(flatten)]
    dir: BackupDirArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct BackupVerifyArgs {
    #[command(flatten)]
    root: RootArgs,
    /// The archive (`NAME.gbackup`).
    archive: PathBuf,
    /// An age identity file holding a recipient's key: decrypt and check
    /// everything.
    #[arg(long)]
    identity: Option<PathBuf>,
    /// The cluster CA certificate the signature must verify against
    /// (default: this node's).
    #[arg(long)]
    ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct BackupPruneArgs {
    #[command(flatten)]
    dir: BackupDirArgs,
    /// How many archives to keep.
    #[arg(long, default_value_t = 24)]
    keep: usize,
    /// Remove archives older than this (`7d`, `12h`).
    #[arg(long, default_value = "7d", value_parser = globular_cluster::token::parse_ttl)]
    max_age: time::Duration,
}

#[derive(Debug, Args)]
struct BackupRestoreArgs {
    #[command(flatten)]
    root: RootArgs,
    archive: PathBuf,
    /// An age identity file holding a recipient's key.
    #[arg(long)]
    identity: PathBuf,
    /// The cluster CA certificate the signature must verify against
    /// (default: this node's).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The new etcd data directory (must not exist).
    #[arg(long)]
    data_dir: PathBuf,
    /// The restored member's name.
    #[arg(long)]
    name: String,
    /// The restored member's peer URL (`https://IP:2380`).
    #[arg(long)]
    peer_url: String,
}

impl ManagerArg {
    fn manager(self) -> services::Manager {
        match self {
            ManagerArg::Systemd => services::Manager::Systemd,
            ManagerArg::Spawn => services::Manager::Spawn,
        }
    }
}

fn print(text: &str) -> anyhow::Result<()> {
    std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes())
        .map_err(|e| anyhow::anyhow!("writing to stdout: {e}"))
}

/// Parses the process arguments and runs the command.
pub fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Firstboot(args) => {
            let outcome = agent::run(&agent::Options {
                root: args.root.root,
                seed: args.seed,
                services: args.services.manager(),
                image_version: args.image_version,
                timeout: Duration::from_secs(args.timeout),
                network_dir: (!args.no_network).then_some(args.network_dir),
                hostname_file: (!args.no_hostname)
                    .then(|| args.sysroot.join("proc/sys/kernel/hostname")),
                sysroot: args.sysroot,
            })?;
            tracing::info!("{outcome:?}");
            Ok(())
        }
        Command::Serve(args) => server::run(&Layout::new(args.root.root), args.dns_port),
        Command::Dns(args) => node_cli::run(
            &Layout::new(args.root.root),
            node_cli::Command::Dns { json: args.json },
        ),
        Command::Firewall(args) if args.print => {
            print(&firewall::print(&Layout::new(args.root.root))?)
        }
        Command::Firewall(args) => firewall::run(&Layout::new(args.root.root)),
        Command::Node(NodeCommand::List(args)) => node_cli::run(
            &Layout::new(args.root.root),
            node_cli::Command::NodeList { json: args.json },
        ),
        Command::Node(NodeCommand::Wait(args)) => {
            let want = upgrade::Want {
                node: args.node,
                image_version: args.image_version,
                kubeconfig: args.kubeconfig,
                kubelet_version: args.kubelet_version,
            };
            let timeout = Duration::from_secs(args.timeout.whole_seconds().unsigned_abs());
            print(&upgrade::wait(
                &Layout::new(args.root.root),
                &want,
                timeout,
            )?)
        }
        Command::Service(ServiceCommand::List(args)) => node_cli::run(
            &Layout::new(args.root.root),
            node_cli::Command::ServiceList {
                name: args.name,
                json: args.json,
            },
        ),
        Command::Service(ServiceCommand::Register(args)) => node_cli::run(
            &Layout::new(args.root.root),
            node_cli::Command::ServiceRegister(RegisterRequest {
                name: args.name,
                id: args.id,
                address: args.address,
                port: args.port,
                protocol: args.protocol,
                tags: args.tags,
                metadata: Default::default(),
            }),
        ),
        Command::Cert(CertCommand::Renew(args)) => {
            let when = match args.before {
                Some(before) => renew::When::Before(before),
                None => renew::When::Due,
            };
            let layout = Layout::new(args.root.root);
            let outcome =
                runtime::block_on(Threads::One, async { renew::renew(&layout, when).await })?;
            print(&outcome.lines)
        }
        Command::Cert(CertCommand::Rotate(args)) => {
            let layout = Layout::new(args.root.root);
            if args.all {
                let per_node = Duration::from_secs(args.per_node.whole_seconds().unsigned_abs());
                runtime::block_on(Threads::One, async {
                    rotation::rotate_all(&layout, per_node, |line| {
                        // Progress: a line per node as it happens.
                        let _ = print(&format!("{line}\n"));
                    })
                    .await
                })
            } else {
                let packages = renew::rotate_packages(&layout)?;
                let outcome = runtime::block_on(Threads::One, async {
                    renew::renew(&layout, renew::When::Now).await
                })?;
                print(&(outcome.lines + &packages))
            }
        }
        Command::Cert(CertCommand::Status(args)) => {
            let certs = certs::status(&args.root.root, time::OffsetDateTime::now_utc())?;
            if args.json {
                print(&(serde_json::to_string_pretty(&certs)? + "\n"))
            } else {
                print(&certs::table(&certs))
            }
        }
        Command::Apply(args) => {
            let layout = Layout::new(args.root.root);
            let opts = package::ApplyOptions {
                spec: args.spec.clone().unwrap_or_default(),
                plan: args.plan,
                settings: args.settings,
                manager: args.services.manager(),
                wait: Duration::from_secs(args.wait),
            };
            if !args.installed {
                return print(&package::apply(&layout, &opts)?.text(args.plan));
            }
            let reports = package::apply_installed(&layout, &args.packages_dir, &opts)?;
            if reports.is_empty() {
                return print(&format!(
                    "nothing to apply: no package in {} for this node's role, or none its seed selects (node.packages)\n",
                    args.packages_dir.display()
                ));
            }
            let mut out = String::new();
            for (name, report) in reports {
                out.push_str(&format!("package {name}:\n{}", report.text(args.plan)));
            }
            print(&out)
        }
        Command::Component(ComponentCommand::Exec(args)) => {
            package::units::exec(&Layout::new(args.root.root), &args.name)
        }
        Command::Kubeconfig(args) => print(&kubeconfig::admin(
            &Layout::new(args.root.root),
            args.ttl,
            args.server,
        )?),
        Command::PodRoutes(args) => {
            let layout = Layout::new(args.root.root);
            let own = layout.load_node_config()?.name;
            let interval = Duration::from_secs(args.interval.max(1));
            runtime::block_on(Threads::One, async move {
                pod_routes::run(&args.kubeconfig, &own, interval).await
            })
        }
        Command::Backup(command) => run_backup(command),
        Command::Health(args) => run_health(args),
        Command::Image(ImageCommand::Import(args)) => {
            let archives = match &args.dir {
                Some(dir) => images::archives_in(dir)?,
                None => args.archives,
            };
            let target = images::Target {
                address: args.address,
                namespace: args.namespace,
            };
            print(&images::import(&archives, &target)?)
        }
        Command::Token(TokenCommand::Create(args)) => node_cli::run(
            &Layout::new(args.root.root),
            node_cli::Command::TokenCreate {
                roles: args.roles,
                ttl: args.ttl,
            },
        ),
    }
}

fn run_health(args: HealthArgs) -> anyhow::Result<()> {
    let layout = Layout::new(args.root.root);
    let manager = args.services.manager();
    if args.watch {
        let interval = Duration::from_secs(args.interval.whole_seconds().max(1).unsigned_abs());
        return health::watch(&layout, manager, interval);
    }
    let state = health::check_now(&layout, manager)?;
    if args.json {
        print(&(serde_json::to_string_pretty(&state)? + "\n"))?;
    } else {
        print(&state.table())?;
    }
    if !state.healthy() {
        anyhow::bail!("a health check is failing");
    }
    Ok(())
}

fn run_backup(command: BackupCommand) -> anyhow::Result<()> {
    let node_ca = |root: RootArgs, ca: Option<PathBuf>| {
        ca.unwrap_or_else(|| Layout::new(root.root).ca_cert())
    };
    match command {
        BackupCommand::Create(args) => {
            let manifest = backup::create(
                &Layout::new(args.root.root),
                &backup::CreateOptions {
                    dir: args.dir.dir.clone(),
                    name: args.name,
                    recipients: args.recipients,
                },
            )?;
            print(&format!(
                "{}\n",
                args.dir
                    .dir
                    .join(format!(
                        "{}.{}",
                        manifest.name,
                        globular_cluster::backup::EXTENSION
                    ))
                    .display()
            ))
        }
        BackupCommand::List(args) => {
            let listed = backup::list(&args.dir.dir)?;
            if args.json {
                return print(&(serde_json::to_string_pretty(&listed)? + "\n"));
            }
            let mut out = format!("{:<40} {:>12} {}\n", "NAME", "BYTES", "MODIFIED");
            for l in listed {
                out += &format!("{:<40} {:>12} {}\n", l.name, l.size, l.modified);
            }
            print(&out)
        }
        BackupCommand::Verify(args) => {
            let ca = node_ca(args.root, args.ca);
            let verified = backup::verify(&args.archive, args.identity.as_deref(), &ca)?;
            print(&(serde_json::to_string_pretty(&verified)? + "\n"))
        }
        BackupCommand::Prune(args) => {
            let removed = backup::prune(&args.dir.dir, args.keep, args.max_age)?;
            print(
                &removed
                    .iter()
                    .map(|n| format!("removed {n}\n"))
                    .collect::<String>(),
            )
        }
        BackupCommand::Restore(args) => {
            let trusted_ca = node_ca(args.root, args.ca);
            let manifest = backup::restore(&backup::RestoreOptions {
                archive: args.archive,
                identity: args.identity,
                trusted_ca,
                data_dir: args.data_dir,
                name: args.name,
                peer_url: args.peer_url,
            })?;
            print(&(serde_json::to_string_pretty(&manifest)? + "\n"))
        }
        BackupCommand::Run(args) => {
            let outcome = backup::schedule::run(
                &Layout::new(args.root.root),
                &backup::schedule::RunOptions {
                    dir: args.dir.dir,
                    force: args.force,
                },
            )?;
            match outcome {
                backup::schedule::Outcome::Skipped(why) => {
                    tracing::info!("no backup: {why}");
                    Ok(())
                }
                backup::schedule::Outcome::Taken(status) => {
                    print(&(serde_json::to_string_pretty(&status)? + "\n"))
                }
            }
        }
        BackupCommand::Status(args) => {
            let status = backup::schedule::status(&Layout::new(args.root.root))?;
            print(&(serde_json::to_string_pretty(&status)? + "\n"))
        }
    }
}
