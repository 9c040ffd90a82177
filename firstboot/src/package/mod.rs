//! Packages: `globular apply FILE` makes this node match a package spec
//! (`spec.rs`), `--plan` says what that would change. Everything a
//! package owns is derived from the spec, the node and the cluster's CAs,
//! so a run changes only what drifted: a missing or wrong certificate is
//! issued again, an edited file rewritten, a stopped component started,
//! and a component whose files changed restarted; a second run changes
//! nothing.
//!
//! Order of a run: certificates (`certs.rs`), kubeconfigs, files and
//! component command lines (under `packages/NAME/`), the package's etcd
//! user, the components (`units.rs`), the health checks, the registry
//! entries, its Kubernetes objects (`manifests.rs`).

mod certs;
mod health;
mod manifests;
mod render;
pub mod spec;
pub mod units;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use globular_cluster::fsutil;
use globular_cluster::protocol::RegisterRequest;
use globular_cluster::registry;
use globular_cluster::seed::Seed;
use globular_cluster::Role;
use globular_substrate::etcd::{Grant, Permission};
use globular_task::Task;

use crate::firewall;
use crate::layout::{Layout, NodeConfig};
use crate::runtime::{self, Threads};
use crate::services::Manager;
use render::Facts;
use spec::Spec;

/// Options of `globular apply`.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub spec: PathBuf,
    /// Only say what would change.
    pub plan: bool,
    /// Setting overrides, `NAME=VALUE`.
    pub settings: Vec<String>,
    pub manager: Manager,
    /// How long the health checks may take to pass.
    pub wait: Duration,
}

/// One thing a run changes (or, with `--plan`, would change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Certificate {
        name: String,
        why: String,
    },
    File {
        path: PathBuf,
    },
    EtcdAccess {
        user: String,
    },
    Start {
        component: String,
    },
    Restart {
        component: String,
    },
    /// A component the package no longer has: stopped, its command line
    /// removed, so that nothing starts it again.
    Retire {
        component: String,
    },
    Register {
        service: String,
    },
    /// A Kubernetes object kubectl created or changed.
    Manifest {
        name: String,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Certificate { name, why } => write!(f, "issue certificate {name} ({why})"),
            Change::File { path } => write!(f, "write {}", path.display()),
            Change::EtcdAccess { user } => write!(f, "set etcd user {user} and its role"),
            Change::Start { component } => write!(f, "start {component}"),
            Change::Restart { component } => write!(f, "restart {component}"),
            Change::Retire { component } => write!(f, "retire {component}"),
            Change::Register { service } => write!(f, "register {service}"),
            Change::Manifest { name } => write!(f, "apply manifest {name}"),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub changes: Vec<Change>,
    /// Health checks that passed, by name (none with `--plan`).
    pub healthy: Vec<String>,
}

impl Report {
    /// Records a change, and logs it when it is made (not planned): the
    /// journal of `globular-packages.service` shows a run's progress.
    fn push(&mut self, plan: bool, change: Change) {
        if !plan {
            tracing::info!("{change}");
        }
        self.changes.push(change);
    }

    /// The report as `globular apply` prints it.
    pub fn text(&self, plan: bool) -> String {
        let mut out = String::new();
        if self.changes.is_empty() {
            out.push_str("no changes\n");
        }
        for c in &self.changes {
            out.push_str(if plan { "would " } else { "" });
            out.push_str(&format!("{c}\n"));
        }
        for h in &self.healthy {
            out.push_str(&format!("healthy: {h}\n"));
        }
        out
    }
}

/// How long a package's start lock outlives its holder (a crash, a power
/// loss): the holder renews it every third of that.
const LOCK_TTL: Duration = Duration::from_secs(60);

/// Where images ship their package specs.
pub const INSTALLED_DIR: &str = "/usr/share/globular/packages";

/// `globular apply --installed`: applies every spec in `dir` (`*.yaml`, in
/// name order) whose role is this node's and that the seed selects
/// (`node.packages`: unset, all of them), each as `globular apply FILE`
/// would (`opts.spec` is ignored). What the image's
/// `globular-packages.service` runs after enrollment and on every boot.
pub fn apply_installed(
    layout: &Layout,
    dir: &Path,
    opts: &ApplyOptions,
) -> anyhow::Result<Vec<(String, Report)>> {
    let node = layout.load_node_config()?;
    let seed_path = layout.seed();
    let seed = Seed::parse(&layout.read(&seed_path)?, &seed_path.display().to_string())?;
    let selected = seed.node.packages;
    let mut specs = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // An image without packages.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "yaml") {
            specs.push(path);
        }
    }
    specs.sort();
    let mut loaded = Vec::new();
    for path in specs {
        let spec = Spec::load(&path)?;
        loaded.push((path, spec));
    }
    let mut out = Vec::new();
    for (path, spec) in select(loaded, node.role, selected.as_deref(), dir)? {
        let opts = ApplyOptions {
            spec: path.clone(),
            ..opts.clone()
        };
        let report =
            apply(layout, &opts).with_context(|| format!("applying {}", path.display()))?;
        out.push((spec.name, report));
    }
    Ok(out)
}

/// The specs for `role` that the seed's `selected` names (all of them when
/// it names none); an error when it names one `dir` does not have.
fn select(
    specs: Vec<(PathBuf, Spec)>,
    role: Role,
    selected: Option<&[String]>,
    dir: &Path,
) -> anyhow::Result<Vec<(PathBuf, Spec)>> {
    let for_role: Vec<_> = specs.into_iter().filter(|(_, s)| s.role == role).collect();
    if let Some(selected) = selected {
        for name in selected {
            if !for_role.iter().any(|(_, s)| &s.name == name) {
                let names: Vec<&str> = for_role.iter().map(|(_, s)| s.name.as_str()).collect();
                bail!(
                    "the seed's node.packages names {name}, but {} has no {name} package for {role} nodes (it has: {})",
                    dir.display(),
                    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
                );
            }
        }
    }
    Ok(for_role
        .into_iter()
        .filter(|(_, s)| selected.is_none_or(|sel| sel.contains(&s.name)))
        .collect())
}

/// `globular apply`: makes the node match the spec (see the module docs).
pub fn apply(layout: &Layout, opts: &ApplyOptions) -> anyhow::Result<Report> {
    let spec = Spec::load(&opts.spec)?;
    let node = layout.load_node_config()?;
    if node.role != spec.role {
        bail!(
            "package {} is for {} nodes; this node ({}) is a {} node",
            spec.name,
            spec.role,
            node.name,
            node.role
        );
    }
    let settings = spec.settings_with(&opts.settings)?;
    let facts = Facts::new(layout, &node, &spec.name, &spec.version, &settings)?;
    let dir = layout.package_dir(&spec.name);
    let mut report = Report::default();

    if !opts.plan {
        fsutil::create_private_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for change in certs::converge(
        layout,
        &spec,
        &facts,
        &dir,
        node.certificate_lifetime(),
        opts.plan,
    )? {
        report.push(opts.plan, change);
    }
    let mut ports_changed = false;
    for (path, content) in files(layout, &spec, &facts, &dir)? {
        if std::fs::read(&path).ok().as_deref() != Some(content.as_bytes()) {
            ports_changed |= path.ends_with(firewall::PORTS_FILE);
            if !opts.plan {
                if let Some(parent) = path.parent() {
                    fsutil::create_private_dir(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                fsutil::write_atomic(&path, content.as_bytes(), fsutil::SECRET)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            report.push(opts.plan, Change::File { path });
        }
    }
    for component in units::retired(&dir, &spec) {
        if !opts.plan {
            units::retire(layout, opts.manager, &dir, &component)?;
        }
        report.push(opts.plan, Change::Retire { component });
    }
    if ports_changed && !opts.plan && opts.manager == Manager::Systemd {
        // The firewall opens what packages register (firewall.rs). A
        // control plane's keeps running and reloads; a worker's loads its
        // ruleset and exits, so it is started again (a `try-` reload left
        // a worker's kubelet port closed until the next boot).
        Task::new("reloading the firewall", "systemctl")
            .package("systemd")
            .args(["reload-or-restart", "globular-firewall.service"])
            .run()?;
    }
    let rt = runtime::build(Threads::One)?;
    if let Some(access) = &spec.etcd {
        let etcd = crate::etcd_client::substrate(layout, node.etcd_endpoints.clone())?;
        let grants = [Grant::prefix(&access.prefix, Permission::ReadWrite)];
        let current = rt.block_on(async {
            anyhow::Ok((
                etcd.role_grants(&access.role).await?,
                etcd.user_roles(&access.user).await?,
            ))
        })?;
        let roles = vec![access.role.clone()];
        if current != (Some(grants.to_vec()), Some(roles)) {
            if !opts.plan {
                rt.block_on(async {
                    etcd.ensure_role(&access.role, &[(&access.prefix, Permission::ReadWrite)])
                        .await?;
                    etcd.ensure_user(&access.user, None, &[&access.role]).await
                })
                .with_context(|| format!("giving etcd user {} its prefix", access.user))?;
            }
            report.push(
                opts.plan,
                Change::EtcdAccess {
                    user: access.user.clone(),
                },
            );
        }
    }
    // A component reads the package's files when it starts: any change to
    // them restarts every running component of the package.
    // (Retiring a component changes nothing the others read.)
    let files_changed = report
        .changes
        .iter()
        .any(|c| !matches!(c, Change::Retire { .. }));
    let mut starts = Vec::new();
    for component in &spec.components {
        let component = component.name.clone();
        if !units::running(layout, opts.manager, &component) {
            starts.push(Change::Start { component });
        } else if files_changed {
            starts.push(Change::Restart { component });
        }
    }
    if opts.plan {
        for change in starts {
            report.push(true, change);
        }
        return Ok(report);
    }
    // Control planes start a package one at a time, each until its checks
    // pass: Kubernetes' first apiserver writes its RBAC defaults alone
    // (three at once under a slow etcd kept failing the RBAC bootstrap hook
    // for minutes), and a changed package restarts behind healthy peers.
    let lock = if starts.is_empty() || node.role != Role::ControlPlane {
        None
    } else {
        let etcd = crate::etcd_client::substrate(layout, node.etcd_endpoints.clone())?;
        let key = registry::lock_key(&format!("packages/{}", spec.name));
        Some(rt.block_on(etcd.lock(&key, &node.name, LOCK_TTL, opts.wait))?)
    };
    for change in starts {
        match &change {
            Change::Start { component } => units::start(layout, opts.manager, component)?,
            Change::Restart { component } => units::restart(layout, opts.manager, component)?,
            _ => {}
        }
        report.push(false, change);
    }
    // A spawned component that exits while the checks wait fails the run
    // now (systemd restarts its units; the wait bounds that).
    let alive = || -> anyhow::Result<()> {
        if opts.manager == Manager::Systemd {
            return Ok(());
        }
        for c in &spec.components {
            if !units::running(layout, opts.manager, &c.name) {
                bail!(
                    "{} stopped ({})",
                    c.name,
                    units::log_hint(layout, opts.manager, &c.name)
                );
            }
        }
        Ok(())
    };
    tracing::info!(
        "{}: waiting up to {} s for {} health checks",
        spec.name,
        opts.wait.as_secs(),
        spec.health.len()
    );
    let healthy = rt.block_on(health::wait(layout, &spec, &facts, opts.wait, &alive));
    if let Some(lock) = lock {
        // Failed checks release it too: the next control plane may do better.
        if let Err(e) = rt.block_on(lock.release()) {
            tracing::warn!("{e:#}");
        }
    }
    report.healthy = healthy?;
    // From now on the health loop keeps the components running.
    let applied = dir.join(units::APPLIED);
    if !applied.exists() {
        let at = time::OffsetDateTime::now_utc().unix_timestamp();
        fsutil::write_atomic(&applied, format!("{at}\n").as_bytes(), fsutil::PUBLIC)
            .with_context(|| format!("writing {}", applied.display()))?;
    }
    for change in rt.block_on(register(layout, &spec, &facts, &node))? {
        report.push(opts.plan, change);
    }
    // After the registration: nodes find the API servers by it, and
    // kubectl's start takes tens of seconds on a slow machine.
    for change in manifests::apply(layout, &spec, &facts, &dir)? {
        report.push(opts.plan, change);
    }
    Ok(report)
}

/// The files the package owns besides certificates: kubeconfigs, its
/// `files`, and the components' command lines.
fn files(
    layout: &Layout,
    spec: &Spec,
    facts: &Facts,
    dir: &Path,
) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let ca = layout.kubernetes_secret(spec::CaName::Kubernetes.file(), "crt");
    for (i, k) in spec.kubeconfigs.iter().enumerate() {
        let server = facts.render(&k.server, &format!("kubeconfigs[{i}].server"))?;
        let text = kubeconfig(
            &k.name,
            &server,
            &ca,
            &dir.join(format!("{}.crt", k.certificate)),
            &dir.join(format!("{}.key", k.certificate)),
        );
        out.push((dir.join(format!("{}.kubeconfig", k.name)), text));
    }
    for (i, f) in spec.files.iter().enumerate() {
        let content = facts.render(&f.content, &format!("files[{i}].content"))?;
        out.push((dir.join(&f.name), content));
    }
    for (i, c) in spec.components.iter().enumerate() {
        let mut args = Vec::new();
        for (j, a) in c.args.iter().enumerate() {
            args.push(facts.render(a, &format!("components[{i}].args[{j}]"))?);
        }
        let program = facts.render(&c.program, &format!("components[{i}].program"))?;
        if !program.starts_with('/') {
            bail!("components[{i}].program: {program:?} is not an absolute path");
        }
        let line = units::CommandLine { program, args };
        let path = dir.join("components").join(format!("{}.json", c.name));
        out.push((path, serde_json::to_string_pretty(&line)? + "\n"));
    }
    if !spec.register.is_empty() {
        let ports: Vec<firewall::PackagePort> = registrations(spec, facts)?
            .into_iter()
            .map(|(r, port)| firewall::PackagePort {
                service: r.service.clone(),
                port,
                protocol: r.protocol.clone(),
            })
            .collect();
        out.push((
            dir.join(firewall::PORTS_FILE),
            serde_json::to_string_pretty(&ports)? + "\n",
        ));
    }
    Ok(out)
}

/// The spec's registry entries with their ports rendered.
fn registrations<'a>(
    spec: &'a Spec,
    facts: &Facts,
) -> anyhow::Result<Vec<(&'a spec::Registration, u16)>> {
    let mut out = Vec::new();
    for (i, r) in spec.register.iter().enumerate() {
        let port: u16 = facts
            .render(&r.port, &format!("register[{i}].port"))?
            .parse()
            .with_context(|| format!("register[{i}].port: not a port number"))?;
        out.push((r, port));
    }
    Ok(out)
}

/// What a kubeconfig written by [`kubeconfig`] names: the server and the
/// files of its CA, certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeconfigFiles {
    pub server: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl KubeconfigFiles {
    /// Reads one a package wrote; a field it lacks is an error naming it.
    pub fn load(path: &Path) -> anyhow::Result<KubeconfigFiles> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let field = |section: &str, inner: &str, name: &str| {
            doc[section][0][inner][name]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("{}: no {section}[0].{inner}.{name}", path.display()))
        };
        Ok(KubeconfigFiles {
            server: field("clusters", "cluster", "server")?,
            ca: field("clusters", "cluster", "certificate-authority")?.into(),
            cert: field("users", "user", "client-certificate")?.into(),
            key: field("users", "user", "client-key")?.into(),
        })
    }
}

/// A kubeconfig that names its certificate files (renewed in place).
pub fn kubeconfig(user: &str, server: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "globular", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{"name": user, "user": {
            "client-certificate": cert,
            "client-key": key,
        }}],
        "contexts": [{"name": user, "context": {"cluster": "globular", "user": user}}],
        "current-context": user,
    });
    serde_yaml_ng::to_string(&doc).unwrap_or_default()
}

/// The package's registry entries for this node, when they differ.
async fn register(
    layout: &Layout,
    spec: &Spec,
    facts: &Facts,
    node: &NodeConfig,
) -> anyhow::Result<Vec<Change>> {
    if spec.register.is_empty() {
        return Ok(Vec::new());
    }
    let client = crate::node_cli::client(layout)?;
    let address = facts
        .node_ip()
        .context("the node has no address")?
        .to_owned();
    let mut changes = Vec::new();
    for (r, port) in registrations(spec, facts)? {
        let metadata = BTreeMap::from([
            ("package".to_owned(), spec.name.clone()),
            ("version".to_owned(), spec.version.clone()),
            ("health".to_owned(), "running".to_owned()),
        ]);
        let listed = client.services(Some(&r.service)).await?;
        let current = listed.services.iter().find(|s| s.node == node.name);
        // `health` and `checked_at` are the health loop's to keep current
        // (once registered, a record is the package's only in the rest).
        let same = current.is_some_and(|s| {
            s.address == address
                && s.port == port
                && s.protocol == r.protocol
                && ["package", "version"]
                    .iter()
                    .all(|k| s.metadata.get(*k) == metadata.get(*k))
        });
        if same {
            continue;
        }
        client
            .register(&RegisterRequest {
                name: r.service.clone(),
                id: None,
                address: address.clone(),
                port,
                protocol: r.protocol.clone(),
                tags: vec![],
                metadata,
            })
            .await
            .with_context(|| format!("registering {}", r.service))?;
        changes.push(Change::Register {
            service: r.service.clone(),
        });
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`kubeconfig`] writes, [`KubeconfigFiles::load`] reads back
    /// (`globular pod-routes` reads the package's kube-proxy.kubeconfig).
    #[test]
    fn a_written_kubeconfig_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.kubeconfig");
        let text = kubeconfig(
            "kube-proxy",
            "https://api.example:6443",
            Path::new("/pki/ca.crt"),
            Path::new("/p/k.crt"),
            Path::new("/p/k.key"),
        );
        std::fs::write(&path, text).unwrap();
        assert_eq!(
            KubeconfigFiles::load(&path).unwrap(),
            KubeconfigFiles {
                server: "https://api.example:6443".into(),
                ca: "/pki/ca.crt".into(),
                cert: "/p/k.crt".into(),
                key: "/p/k.key".into(),
            }
        );
        std::fs::write(&path, "clusters: []\n").unwrap();
        let err = KubeconfigFiles::load(&path).unwrap_err().to_string();
        assert!(err.contains("clusters[0].cluster.server"), "{err}");
    }

    fn specs() -> Vec<(PathBuf, Spec)> {
        [("a", "control-plane"), ("b", "control-plane"), ("c", "worker")]
            .into_iter()
            .map(|(name, role)| {
                let text = format!(
                    "apiVersion: globular/v1\nkind: Package\nname: {name}\nversion: '1'\nrole: {role}\n"
                );
                (PathBuf::from(format!("{name}.yaml")), Spec::parse(&text, name).unwrap())
            })
            .collect()
    }

    fn names(selected: Option<&[String]>, role: Role) -> anyhow::Result<Vec<String>> {
        Ok(select(specs(), role, selected, Path::new("/packages"))?
            .into_iter()
            .map(|(_, s)| s.name)
            .collect())
    }

    #[test]
    fn the_seed_selects_among_the_role_packages() {
        assert_eq!(names(None, Role::ControlPlane).unwrap(), ["a", "b"]);
        assert_eq!(names(None, Role::Worker).unwrap(), ["c"]);
        assert_eq!(
            names(Some(&["b".to_owned()]), Role::ControlPlane).unwrap(),
            ["b"]
        );
        // `[]`: a substrate-only node.
        assert!(names(Some(&[]), Role::ControlPlane).unwrap().is_empty());
        // A package of another role, or one the image lacks, is an error
        // that names it and what there is.
        for wanted in ["c", "zzz"] {
            let err = names(Some(&[wanted.to_owned()]), Role::ControlPlane)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("names {wanted}")) && err.contains("(it has: a, b)"),
                "{err}"
            );
        }
    }
}
