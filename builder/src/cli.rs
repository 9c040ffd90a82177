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
