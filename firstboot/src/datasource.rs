//! Where a seed comes from. Each source is one [`Datasource`]; the first one
//! that has a seed wins and its name is logged.
//!
//! - config drive: a FAT filesystem labelled `cidata`, `CIDATA` or `GLOBULAR`
//!   (`/dev/disk/by-label/LABEL`), file `globular-seed.yaml`, read with `fatfs`
//!   (no mount);
//! - QEMU fw_cfg: `/sys/firmware/qemu_fw_cfg/by_name/opt/io.globular/seed/raw`;
//! - kernel command line: `globular.seed=/path` or `globular.seed=<base64>`.
//!
//! Every path is taken under a system root (`/` on a node) so tests can fake
//! devices, firmware and `/proc/cmdline` in a directory.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use globular_cluster::cidata;

/// Most bytes of a file that comes with a seed (a restore's snapshot).
pub const MAX_FILE: u64 = 64 * 1024 * 1024 * 1024;

/// A place a seed may be found.
pub trait Datasource: std::fmt::Debug {
    /// Short name for logs ("config drive /dev/disk/by-label/cidata").
    fn name(&self) -> String;
    /// The seed text, `None` if this source has none; an error if it has one
    /// that cannot be read.
    fn fetch(&self) -> anyhow::Result<Option<String>>;
    /// Copies the file `name` that came with the seed (on its drive, beside
    /// its file) into `out`; `false` if this source has none.
    fn fetch_file(&self, name: &str, out: &mut dyn std::io::Write) -> anyhow::Result<bool> {
        let _ = (name, out);
        Ok(false)
    }
}

/// The sources in the order they are tried.
pub fn all(sysroot: &Path) -> Vec<Box<dyn Datasource>> {
    let mut sources: Vec<Box<dyn Datasource>> = ["cidata", "CIDATA", "GLOBULAR"]
        .into_iter()
        .map(|label| {
            Box::new(ConfigDrive {
                path: sysroot.join("dev/disk/by-label").join(label),
            }) as Box<dyn Datasource>
        })
        .collect();
    sources.push(Box::new(FwCfg {
        path: sysroot.join("sys/firmware/qemu_fw_cfg/by_name/opt/io.globular/seed/raw"),
    }));
    sources.push(Box::new(KernelCmdline {
        sysroot: sysroot.to_owned(),
    }));
    sources
}

/// Tries `sources` in order; returns the first that has a seed, and the seed.
pub fn find(sources: &[Box<dyn Datasource>]) -> anyhow::Result<Option<(&dyn Datasource, String)>> {
    for source in sources {
        if let Some(text) = source.fetch()? {
            tracing::info!("seed found in {}", source.name());
            return Ok(Some((source.as_ref(), text)));
        }
        tracing::debug!("no seed in {}", source.name());
    }
    Ok(None)
}

/// A seed given explicitly (`--seed FILE`).
#[derive(Debug)]
pub struct File(pub PathBuf);

impl Datasource for File {
    fn name(&self) -> String {
        format!("file {}", self.0.display())
    }
    fn fetch(&self) -> anyhow::Result<Option<String>> {
        std::fs::read_to_string(&self.0)
            .map(Some)
            .with_context(|| format!("reading {}", self.0.display()))
    }
    fn fetch_file(&self, name: &str, out: &mut dyn std::io::Write) -> anyhow::Result<bool> {
        let path = self.0.parent().unwrap_or(Path::new(".")).join(name);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let copied = std::io::copy(&mut file.take(MAX_FILE + 1), out)
            .with_context(|| format!("reading {}", path.display()))?;
        if copied > MAX_FILE {
            anyhow::bail!("{}: larger than {MAX_FILE} bytes", path.display());
        }
        Ok(true)
    }
}

#[derive(Debug)]
struct ConfigDrive {
    path: PathBuf,
}

impl Datasource for ConfigDrive {
    fn name(&self) -> String {
        format!("config drive {}", self.path.display())
    }
    fn fetch(&self) -> anyhow::Result<Option<String>> {
        let Ok(file) = std::fs::File::open(&self.path) else {
            return Ok(None);
        };
        cidata::read_seed(cidata::ReadOnly(std::io::BufReader::new(file)))
            .with_context(|| format!("reading {} from {}", cidata::SEED_FILE, self.path.display()))
    }
    fn fetch_file(&self, name: &str, mut out: &mut dyn std::io::Write) -> anyhow::Result<bool> {
        let file = std::fs::File::open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        let found = cidata::copy_file(
            cidata::ReadOnly(std::io::BufReader::new(file)),
            name,
            &mut out,
            MAX_FILE,
        )
        .with_context(|| format!("reading {name} from {}", self.path.display()))?;
        Ok(found.is_some())
    }
}

#[derive(Debug)]
struct FwCfg {
    path: PathBuf,
}

impl Datasource for FwCfg {
    fn name(&self) -> String {
        format!("QEMU fw_cfg {}", self.path.display())
    }
    fn fetch(&self) -> anyhow::Result<Option<String>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => String::from_utf8(bytes)
                .map(Some)
                .with_context(|| format!("{} is not UTF-8", self.path.display())),
            Err(_) => Ok(None),
        }
    }
}

#[derive(Debug)]
struct KernelCmdline {
    sysroot: PathBuf,
}

impl Datasource for KernelCmdline {
    fn name(&self) -> String {
        "kernel command line (globular.seed=)".into()
    }
    fn fetch(&self) -> anyhow::Result<Option<String>> {
        let path = self.sysroot.join("proc/cmdline");
        let Ok(cmdline) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        let Some(value) = cmdline
            .split_whitespace()
            .find_map(|arg| arg.strip_prefix("globular.seed="))
        else {
            return Ok(None);
        };
        if value.starts_with('/') {
            let file = self.sysroot.join(value.trim_start_matches('/'));
            return std::fs::read_to_string(&file)
                .map(Some)
                .with_context(|| format!("globular.seed={value}: reading {}", file.display()));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(value))
            .with_context(|| "globular.seed=: neither a path nor base64".to_string())?;
        let text = String::from_utf8(bytes).context("globular.seed=: decoded seed is not UTF-8")?;
        // Any local user reads /proc/cmdline, and boot loaders keep it in
        // plain files: no CA key travels there.
        if let Ok(seed) = globular_cluster::seed::Seed::parse(&text, "globular.seed=") {
            if seed.ca.is_some() || seed.etcd_ca.is_some() || seed.kubernetes.is_some() {
                anyhow::bail!(
                    "globular.seed=: a seed on the kernel command line may not carry the CA \
                     (every local user can read /proc/cmdline); give a control-plane seed \
                     on a cidata drive or through fw_cfg"
                );
            }
        }
        Ok(Some(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11: a control-plane seed (it carries the CA keys) inline on the
    /// kernel command line is refused; a worker seed is fine there.
    #[test]
    fn cmdline_seed_may_not_carry_the_ca() {
        use globular_cluster::secrets::{self, NewCluster, SeedOptions};
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        let bundle = secrets::create(&NewCluster {
            name: "demo".into(),
            out: dir.path().join("c"),
            endpoints: vec!["10.0.0.1:10016".into()],
            token_ttl: time::Duration::hours(1),
            policy: Default::default(),
        })
        .unwrap();
        for (role, allowed) in [
            (globular_cluster::Role::ControlPlane, false),
            (globular_cluster::Role::Worker, true),
        ] {
            let seed = bundle
                .seed(&SeedOptions {
                    node: "n1".into(),
                    role,
                    addresses: vec!["10.0.0.5/24".into()],
                    gateway: None,
                    bootstrap: false,
                    endpoints: vec![],
                    ports: Default::default(),
                    token: None,
                    ticket_ttl: secrets::TICKET_TTL,
                    packages: None,
                })
                .unwrap();
            let b64 = base64::engine::general_purpose::STANDARD.encode(seed.to_yaml());
            std::fs::write(
                dir.path().join("proc/cmdline"),
                format!("globular.seed={b64}\n"),
            )
            .unwrap();
            let sources = all(dir.path());
            let found = find(&sources);
            assert_eq!(found.is_ok(), allowed, "{role}: {found:?}");
            if let Err(e) = found {
                assert!(format!("{e:#}").contains("may not carry the CA"), "{e:#}");
            }
        }
    }

    #[test]
    fn cmdline_base64_and_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode("version: 1\n");
        std::fs::write(
            dir.path().join("proc/cmdline"),
            format!("quiet globular.seed={b64} ro\n"),
        )
        .unwrap();
        let sources = all(dir.path());
        let (source, text) = find(&sources).unwrap().unwrap();
        let name = source.name();
        assert!(name.contains("kernel command line"), "{name}");
        assert_eq!(text, "version: 1\n");
        std::fs::write(dir.path().join("seed.yaml"), "version: 2\n").unwrap();
        std::fs::write(
            dir.path().join("proc/cmdline"),
            "globular.seed=/seed.yaml\n",
        )
        .unwrap();
        assert_eq!(find(&all(dir.path())).unwrap().unwrap().1, "version: 2\n");
    }

    #[test]
    fn drive_labelled_globular_wins_over_fw_cfg() {
        let dir = tempfile::tempdir().unwrap();
        let fw = dir
            .path()
            .join("sys/firmware/qemu_fw_cfg/by_name/opt/io.globular/seed");
        std::fs::create_dir_all(&fw).unwrap();
        std::fs::write(fw.join("raw"), "from fw_cfg").unwrap();
        let by_label = dir.path().join("dev/disk/by-label");
        std::fs::create_dir_all(&by_label).unwrap();
        let seed = globular_cluster::seed::Seed {
            version: 1,
            cluster: globular_cluster::seed::ClusterRef {
                name: "demo".into(),
                id: "0".repeat(32),
                ca_cert_hash: format!("sha256:{}", "0".repeat(64)),
                endpoints: vec!["127.0.0.1:10016".into()],
                policy: Default::default(),
                domain: globular_cluster::registry::default_domain(),
                backup_recipients: Vec::new(),
                certificate_lifetime: globular_cluster::pki::default_lifetime_seconds(),
                etcd_heartbeat_ms: globular_cluster::etcd_timing::DEFAULT_HEARTBEAT_MS,
            },
            node: globular_cluster::seed::NodeSpec {
                name: "w1".into(),
                role: globular_cluster::Role::Worker,
                addresses: vec!["127.0.0.1/8".into()],
                gateway: None,
                ports: Default::default(),
                packages: None,
            },
            bootstrap: false,
            token: Some("abcdef.0123456789abcdef".into()),
            ticket: None,
            joined: false,
            ca: None,
            etcd_ca: None,
            kubernetes: None,
            tokens: vec![],
            restore: None,
            backup: None,
        };
        std::fs::write(by_label.join("GLOBULAR"), cidata::image(&seed).unwrap()).unwrap();
        let sources = all(dir.path());
        let (source, text) = find(&sources).unwrap().unwrap();
        let name = source.name();
        assert!(name.ends_with("by-label/GLOBULAR"), "{name}");
        assert_eq!(text, seed.to_yaml());
    }

    #[test]
    fn fw_cfg_wins_over_cmdline_and_nothing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(find(&all(dir.path())).unwrap().is_none());
        let fw = dir
            .path()
            .join("sys/firmware/qemu_fw_cfg/by_name/opt/io.globular/seed");
        std::fs::create_dir_all(&fw).unwrap();
        std::fs::write(fw.join("raw"), "from fw_cfg").unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(dir.path().join("proc/cmdline"), "globular.seed=eA==").unwrap();
        let sources = all(dir.path());
        let (source, text) = find(&sources).unwrap().unwrap();
        let name = source.name();
        assert!(name.contains("fw_cfg"), "{name}");
        assert_eq!(text, "from fw_cfg");
    }
}
