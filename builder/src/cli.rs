//! Command-line interface: clap types and one library call per subcommand.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};

use crate::pins::Pins;
use crate::profile::{self, ResolveOptions};

#[derive(Debug, Parser)]
#[command(
    name = "builder",
    version,
    about = "Build immutable Globular node images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the fully resolved configuration of a role or a directory.
    Summary(SummaryArgs),
    /// Build an image: OS tree, output file, manifest, SBOM and checksums.
    Build(BuildArgs),
    /// Inspect or clean the build cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Manage offline cluster secrets.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Write a per-node seed (YAML or a `cidata` config drive image).
    Seed(SeedArgs),
    /// Show a disk image's partitions, slots, verity root hashes and UKI command line.
    Inspect(InspectArgs),
    /// Components built from source (etcd, Kubernetes).
    #[command(subcommand)]
    Component(ComponentCommand),
}

#[derive(Debug, Subcommand)]
enum ComponentCommand {
    /// Build a component (or take it from the cache) and copy its programs
    /// into a directory: how the host tests get the images' etcd.
    Build(ComponentBuildArgs),
}

#[derive(Debug, Args)]
struct ComponentBuildArgs {
    /// The component's directory (its go.mod, go.sum and component.toml).
    dir: PathBuf,
    /// Where the programs go (by file name).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The pins file (default: `versions.toml` in or above DIR, or in a
    /// `profiles/` directory above it).
    #[arg(long, value_name = "FILE")]
    pins: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheDirArg,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// The disk image (raw or qcow2).
    image: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct BuildArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// Output format (overrides `Format=`): directory, tar, cpio, erofs, squashfs.
    #[arg(long)]
    format: Option<String>,
    /// Compression (overrides `CompressOutput=`): zstd, gzip, xz, lz4, lz4hc or none,
    /// as the format allows.
    #[arg(long, value_name = "ALGORITHM")]
    compress_output: Option<String>,
    /// Where outputs go (default: `OutputDirectory=`, else `./output`).
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheDirArg,
    /// Artifacts lock file (default: `artifacts.toml` next to or above the profile).
    #[arg(long, value_name = "FILE")]
    artifacts: Option<PathBuf>,
    /// Rebuild the package stage even if it is cached.
    #[arg(long)]
    force: bool,
    /// How the private tree over the cached package stage is made: `overlay`
    /// (overlayfs, nothing copied; a copy where it cannot be mounted) or
    /// `copy`. Both give the same image.
    #[arg(long, value_name = "HOW", default_value = "overlay")]
    work_tree: String,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct CacheDirArg {
    /// Cache directory (default: `CacheDirectory=`, else `~/.cache/globular-builder`).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// List cached package stages and artifacts.
    List(CacheListArgs),
    /// Remove cache entries unused for a while (or all of them).
    Prune(CachePruneArgs),
}

#[derive(Debug, Args)]
struct CacheListArgs {
    #[command(flatten)]
    cache: CacheDirArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CachePruneArgs {
    #[command(flatten)]
    cache: CacheDirArg,
    /// Remove entries not used for this many days.
    #[arg(long, default_value_t = 14, conflicts_with = "all")]
    older_than_days: u64,
    /// Remove every entry.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Create a cluster secrets bundle (CA, bootstrap tokens, cluster id) offline.
    New(ClusterNewArgs),
}

#[derive(Debug, Args)]
struct ClusterNewArgs {
    /// Cluster name (a lowercase DNS label).
    #[arg(long)]
    name: String,
    /// Directory to create (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// Default join endpoint (`IP:PORT` of a control-plane substrate API); may be repeated.
    #[arg(long = "endpoint", value_name = "IP:PORT")]
    endpoints: Vec<String>,
    /// Lifetime of the bootstrap tokens (`30m`, `24h`, `7d`).
    #[arg(long, default_value = "24h", value_parser = globular_cluster::token::parse_ttl)]
    token_ttl: time::Duration,
    /// Accept enrollments whose connection does not come from one of the
    /// node's addresses (joiners behind NAT or a proxy).
    #[arg(long)]
    enroll_from_any_source: bool,
    /// Accept loopback node addresses: only for clusters whose nodes all
    /// run on one host (tests).
    #[arg(long)]
    allow_loopback_addresses: bool,
    /// Most addresses a node may enroll.
    #[arg(long, default_value_t = 4)]
    max_addresses: usize,
    /// DNS domain of the cluster's zone: the control planes answer for
    /// `<name>.<domain>` (see docs/dns.md).
    #[arg(long, default_value = globular_cluster::registry::DEFAULT_DOMAIN)]
    domain: String,
    /// An operator's age public key (`age1...`, from `age-keygen`):
    /// the control planes' backups are encrypted to it; may be repeated
    /// (docs/backup.md).
    #[arg(long = "backup-recipient", value_name = "AGE_PUBLIC_KEY")]
    backup_recipients: Vec<String>,
    /// When control planes take backups and where they copy them off the
    /// cluster (a `backup.yaml`: interval, keep, max_age, targets); it is
    /// checked and kept in the bundle, and control-plane seeds carry it
    /// (docs/backup.md). Default: hourly, on the nodes only.
    #[arg(long, value_name = "FILE")]
    backup_policy: Option<PathBuf>,
    /// How long the certificates the cluster issues are valid (`90s`,
    /// `3m`, `30d`; 1 minute to 397 days): every node renews each of its
    /// certificates when a third of it is left (docs/operations.md).
    #[arg(long, default_value = "30d", value_parser = globular_cluster::token::parse_ttl)]
    certificate_lifetime: time::Duration,
    /// etcd's Raft heartbeat interval in milliseconds (10 to 5000); the
    /// election timeout is ten of them. etcd's 100 suits a LAN of real
    /// machines; slow or emulated machines want more (docs/operations.md).
    #[arg(long = "etcd-heartbeat", value_name = "MS", default_value_t = globular_cluster::etcd_timing::DEFAULT_HEARTBEAT_MS)]
    etcd_heartbeat_ms: u64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SeedFormatArg {
    Yaml,
    Cidata,
}

#[derive(Debug, Args)]
struct SeedArgs {
    /// Cluster secrets bundle made by `builder cluster new`.
    #[arg(long, value_name = "DIR")]
    cluster: PathBuf,
    /// Node name (a lowercase DNS label).
    #[arg(long)]
    node: String,
    /// Node role: control-plane or worker.
    #[arg(long)]
    role: globular_cluster::Role,
    /// Node address in CIDR form; may be repeated (the first one is advertised).
    #[arg(long = "address", value_name = "CIDR", required = true)]
    addresses: Vec<String>,
    /// Default gateway.
    #[arg(long)]
    gateway: Option<String>,
    /// This node bootstraps the cluster (first control-plane only).
    #[arg(long)]
    bootstrap: bool,
    /// Join endpoint (`IP:PORT`); may be repeated (default: those of the bundle).
    #[arg(long = "endpoint", value_name = "IP:PORT")]
    endpoints: Vec<String>,
    /// Bootstrap token to put in the seed instead of the bundle's token for
    /// the role (e.g. one made with `globular token create` on the cluster).
    /// The secret is visible to other local users while the command runs:
    /// prefer --token-file.
    #[arg(long, value_name = "ID.SECRET", conflicts_with = "token_file")]
    token: Option<String>,
    /// Read that bootstrap token from a file (first line).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Lifetime of the node's enrollment ticket (`30d`, `365d`): until then
    /// the seed can reimage the node under its name.
    #[arg(long, default_value = "365d", value_parser = globular_cluster::token::parse_ttl)]
    ticket_ttl: time::Duration,
    /// The image's packages the node applies once enrolled, by name,
    /// comma-separated (`kubernetes-control-plane`); `none` for a
    /// substrate-only node. Default: every one the image ships for the role.
    #[arg(long, value_name = "NAME,...|none", value_parser = parse_packages)]
    packages: Option<PackageList>,
    /// Substrate API port of this node.
    #[arg(long, default_value_t = globular_cluster::API_PORT)]
    api_port: u16,
    /// etcd client port of this node.
    #[arg(long, default_value_t = globular_cluster::ETCD_CLIENT_PORT)]
    etcd_client_port: u16,
    /// etcd peer port of this node.
    #[arg(long, default_value_t = globular_cluster::ETCD_PEER_PORT)]
    etcd_peer_port: u16,
    /// Restore the cluster from this backup archive (`NAME.gbackup`): the
    /// seed of the restored cluster's first control plane (with
    /// --bootstrap), which starts etcd from the archive's snapshot. The
    /// snapshot goes on the config drive, or beside a YAML seed
    /// (`OUT.snapshot.db`). See docs/backup.md.
    #[arg(long, value_name = "ARCHIVE", requires = "identity")]
    restore_from: Option<PathBuf>,
    /// An age identity file (`AGE-SECRET-KEY-1...`) of one of the backup's
    /// recipients, to open --restore-from.
    #[arg(long, value_name = "FILE", requires = "restore_from")]
    identity: Option<PathBuf>,
    /// Output file (written 0600).
    #[arg(long)]
    out: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "yaml")]
    format: SeedFormatArg,
}

/// Which configuration to read, shared by every command that reads one.
#[derive(Debug, Args)]
struct ProfileArgs {
    /// Role to use: the profile directory `profiles/ROLE/`.
    #[arg(
        long,
        conflicts_with = "directory",
        required_unless_present = "directory"
    )]
    role: Option<String>,
    /// An mkosi configuration directory to use instead of a role.
    #[arg(long, short = 'C')]
    directory: Option<PathBuf>,
    /// Select an mkosi profile (`mkosi.profiles/NAME`); may be repeated.
    #[arg(long = "profile", value_name = "NAME")]
    profiles: Vec<String>,
    /// Image version (overrides `ImageVersion=`).
    #[arg(long = "version", value_name = "VERSION")]
    image_version: Option<String>,
    /// Set a build environment variable (also visible to templates as `env.KEY`).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    environment: Vec<(String, String)>,
    /// Directory holding the role profiles (default: `profiles/` in the current
    /// directory or the nearest parent that has one).
    #[arg(long, value_name = "DIR")]
    profiles_dir: Option<PathBuf>,
    /// Pinned versions file (default: `versions.toml` next to or above the configuration).
    #[arg(long, value_name = "FILE")]
    pins: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct SummaryArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// Print JSON with mkosi's setting names as keys.
    #[arg(long)]
    json: bool,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
            Ok((k.to_owned(), v.to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Parses the process arguments and runs the command.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Summary(args) => summary(args),
        Command::Build(args) => build(args),
        Command::Cache(CacheCommand::List(args)) => cache_list(args),
        Command::Cache(CacheCommand::Prune(args)) => cache_prune(args),
        Command::Cluster(ClusterCommand::New(args)) => cluster_new(args),
        Command::Seed(args) => seed(args),
        Command::Inspect(args) => std::io::stdout()
            .write_all(crate::inspect::report(&args.image, args.json)?.as_bytes())
            .context("writing the report"),
        Command::Component(ComponentCommand::Build(args)) => component_build(args),
    }
}

fn component_build(args: ComponentBuildArgs) -> anyhow::Result<()> {
    let pins = match &args.pins {
        Some(path) => Pins::load(path)?,
        None => find_pins(&args.dir)?,
    };
    let cache = crate::rootfs::cache::Cache::open(&args.cache.resolve())?;
    let info = crate::components::build_into(
        &args.dir,
        &pins,
        crate::build::source_date_epoch()?,
        &cache,
        &args.out,
        &crate::progress::Progress::new(args.quiet),
    )?;
    for binary in &info.binaries {
        let name = Path::new(&binary.install)
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        tracing::info!(
            "{} {} -> {}",
            info.name,
            info.version,
            args.out.join(&*name).display()
        );
    }
    Ok(())
}

/// `versions.toml` in or above `dir`, or in a `profiles/` directory above it.
fn find_pins(dir: &Path) -> anyhow::Result<Pins> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("component directory {}", dir.display()))?;
    for ancestor in dir.ancestors() {
        for candidate in [
            ancestor.join(crate::pins::FILE_NAME),
            ancestor.join("profiles").join(crate::pins::FILE_NAME),
        ] {
            if candidate.is_file() {
                return Pins::load(&candidate);
            }
        }
    }
    bail!(
        "no {} in or above {} (pass --pins)",
        crate::pins::FILE_NAME,
        dir.display()
    )
}

fn cluster_new(args: ClusterNewArgs) -> anyhow::Result<()> {
    let new = globular_cluster::secrets::NewCluster {
        name: args.name,
        out: args.out.clone(),
        endpoints: args.endpoints,
        token_ttl: args.token_ttl,
        policy: globular_cluster::registry::EnrollmentPolicy {
            require_source_address: !args.enroll_from_any_source,
            allow_loopback: args.allow_loopback_addresses,
            max_addresses: args.max_addresses,
        },
    };
    let backup_policy = match &args.backup_policy {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --backup-policy {}", path.display()))?;
            Some(globular_cluster::backup::policy::Policy::parse(
                &text,
                &path.display().to_string(),
            )?)
        }
        None => None,
    };
    let secrets = globular_cluster::secrets::create_with(
        &new,
        &globular_cluster::secrets::ClusterExtras {
            domain: args.domain,
            backup_recipients: args.backup_recipients,
            backup_policy,
            certificate_lifetime: args.certificate_lifetime,
            etcd_heartbeat_ms: args.etcd_heartbeat_ms,
        },
    )?;
    tracing::info!(
        "created cluster {} ({}) in {}, CA {}",
        secrets.info.name,
        secrets.info.id,
        args.out.display(),
        secrets.info.ca_cert_hash
    );
    Ok(())
}

fn seed(args: SeedArgs) -> anyhow::Result<()> {
    use globular_cluster::secrets::{self, SeedFormat, SeedOptions};
    let token = match &args.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --token-file {}", path.display()))?;
            let line = text.lines().next().unwrap_or_default().trim().to_owned();
            globular_cluster::token::BootstrapToken::parse(&line)
                .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()))?;
            Some(line)
        }
        None => args.token,
    };
    let options = SeedOptions {
        node: args.node,
        role: args.role,
        addresses: args.addresses,
        gateway: args.gateway,
        bootstrap: args.bootstrap,
        endpoints: args.endpoints,
        ports: globular_cluster::seed::Ports {
            api: args.api_port,
            etcd_client: args.etcd_client_port,
            etcd_peer: args.etcd_peer_port,
        },
        token,
        ticket_ttl: args.ticket_ttl,
        packages: args.packages.map(|p| p.0),
    };
    let format = match args.format {
        SeedFormatArg::Yaml => SeedFormat::Yaml,
        SeedFormatArg::Cidata => SeedFormat::Cidata,
    };
    if let (Some(archive), Some(identity)) = (args.restore_from, args.identity) {
        let from = globular_cluster::restore::RestoreFrom { archive, identity };
        let (_, manifest) = globular_cluster::restore::write_restore_seed(
            &args.cluster,
            &options,
            &from,
            format,
            &args.out,
        )?;
        tracing::info!(
            "the seed restores backup {} ({}, etcd revision {}, {} keys)",
            manifest.name,
            manifest.created,
            manifest.etcd.revision,
            manifest.etcd.total_keys
        );
    } else {
        secrets::write_seed(&args.cluster, &options, format, &args.out)?;
    }
    tracing::info!(
        "wrote the seed of {} to {}",
        options.node,
        args.out.display()
    );
    Ok(())
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    let source_root = args.profile.source_root()?;
    let options = crate::build::BuildOptions {
        resolve: args.profile.resolve_options()?,
        format: args.format,
        compression: args.compress_output,
        output_dir: args.output_dir,
        cache_dir: args.cache.cache_dir,
        artifacts: args.artifacts,
        force: args.force,
        work_tree: crate::rootfs::worktree::Mode::parse(&args.work_tree)?,
        progress: crate::progress::Progress::new(args.quiet),
        source_root,
    };
    let report = crate::build::build(&options)?;
    let mut text = String::new();
    for path in &report.outputs {
        text.push_str(&format!("{}\n", path.display()));
    }
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing the list of outputs")
}

fn cache_list(args: CacheListArgs) -> anyhow::Result<()> {
    let cache = crate::rootfs::cache::Cache::open(&args.cache.resolve())?;
    let listing = cache.list()?;
    let text = if args.json {
        serde_json::to_string_pretty(&listing)? + "\n"
    } else {
        listing
            .iter()
            .map(|l| {
                format!(
                    "{:<8} {}  {:>8} MiB  {}\n",
                    l.kind,
                    crate::rootfs::cache::short(&l.key),
                    l.bytes / (1 << 20),
                    l.description
                )
            })
            .collect()
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing the cache listing")
}

fn cache_prune(args: CachePruneArgs) -> anyhow::Result<()> {
    let cache = crate::rootfs::cache::Cache::open(&args.cache.resolve())?;
    let older_than =
        (!args.all).then(|| std::time::Duration::from_secs(args.older_than_days * 86_400));
    for removed in cache.prune(older_than)? {
        tracing::info!("removed {removed}");
    }
    Ok(())
}

impl CacheDirArg {
    fn resolve(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(crate::build::default_cache_dir)
    }
}

fn summary(args: SummaryArgs) -> anyhow::Result<()> {
    let options = args.profile.resolve_options()?;
    let config = profile::resolve(&options)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let mut text = if args.json {
        serde_json::to_string_pretty(&profile::summary::to_json(&config))?
    } else {
        profile::summary::to_text(&config)
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing the summary")
}

impl ProfileArgs {
    /// The checkout the profile lives in: the parent of `profiles/` for a role,
    /// the directory itself otherwise. Manifests record paths relative to it.
    fn source_root(&self) -> anyhow::Result<PathBuf> {
        let dir = match (&self.directory, &self.profiles_dir) {
            (Some(dir), _) => dir.clone(),
            (None, Some(profiles)) => profiles.join(".."),
            (None, None) => find_profiles_dir()?.join(".."),
        };
        let dir =
            std::path::absolute(&dir).with_context(|| format!("resolving {}", dir.display()))?;
        Ok(profile::value::normalize(&dir))
    }

    fn resolve_options(self) -> anyhow::Result<ResolveOptions> {
        let directory = match (&self.role, self.directory) {
            (_, Some(directory)) => directory,
            (Some(role), None) => {
                let profiles_dir = match self.profiles_dir {
                    Some(dir) => dir,
                    None => find_profiles_dir()?,
                };
                role_directory(&profiles_dir, role)?
            }
            (None, None) => bail!("either --role or --directory is required"),
        };
        let pins = match &self.pins {
            Some(path) => Pins::load(path)?,
            None => Pins::discover(&directory)?,
        };
        Ok(ResolveOptions {
            directory,
            role: self.role,
            profiles: self.profiles,
            image_version: self.image_version,
            environment: self.environment,
            pins,
        })
    }
}

/// `profiles/` in the current directory or its nearest ancestor.
fn find_profiles_dir() -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    cwd.ancestors()
        .map(|dir| dir.join("profiles"))
        .find(|dir| dir.is_dir())
        .with_context(|| {
            format!(
                "no profiles/ directory in {} or its parents (use --profiles-dir)",
                cwd.display()
            )
        })
}

fn role_directory(profiles_dir: &Path, role: &str) -> anyhow::Result<PathBuf> {
    let valid = !role.is_empty()
        && role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let dir = profiles_dir.join(role);
    if !valid || !dir.join("mkosi.conf").is_file() && !dir.join("mkosi.conf.tera").is_file() {
        let mut roles: Vec<String> = std::fs::read_dir(profiles_dir)
            .with_context(|| format!("reading {}", profiles_dir.display()))?
            .filter_map(Result::ok)
            .filter(|e| e.path().join("mkosi.conf").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        roles.sort();
        bail!(
            "unknown role {role:?}: {} has no {role}/mkosi.conf (roles: {})",
            profiles_dir.display(),
            roles.join(", ")
        );
    }
    Ok(dir)
}

/// `--packages`: names, or `none` for the empty list.
#[derive(Debug, Clone)]
struct PackageList(Vec<String>);

fn parse_packages(text: &str) -> Result<PackageList, String> {
    if text == "none" {
        return Ok(PackageList(Vec::new()));
    }
    let names: Vec<String> = text.split(',').map(|n| n.trim().to_owned()).collect();
    match names.iter().find(|n| !globular_cluster::valid_node_name(n)) {
        Some(bad) => Err(format!(
            "{bad:?} is not a package name (a lowercase DNS label)"
        )),
        None => Ok(PackageList(names)),
    }
}
