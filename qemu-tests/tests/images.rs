//! The images under test, made by the real `builder build --role R --version
//! V` (the library call behind the command) from this checkout's profiles,
//! once per test process. The builder's own cache keeps the package stages
//! between runs, so a rebuild is the overlay, the agent and the disk.
//!
//! Outputs go to `target/qemu-fixtures/images/<role>_<version>/` (or under
//! `$GLOBULAR_QEMU_FIXTURES`); VM run directories to `.../runs/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context as _;
use builder::build::{build, BuildOptions};
use builder::pins::Pins;
use builder::profile::ResolveOptions;
use globular_task::Task;

/// The version the boot tests use.
pub const VERSION: &str = "0.1.0";

/// A built disk image.
#[derive(Debug, Clone)]
pub struct Image {
    pub version: String,
    pub image_id: String,
    /// The raw GPT disk image (tests boot qcow2 overlays of it).
    pub disk: PathBuf,
    /// What `builder inspect` reads from it.
    pub inspection: Arc<builder::inspect::Inspection>,
}

impl Image {
    /// The console line of the image's boot-report unit
    /// (`overlays/base/usr/lib/globular/boot-report`).
    pub fn boot_report(&self, var: &str, boots: u32) -> String {
        format!(
            "globular: image={} version={} var={var} boots={boots}",
            self.image_id, self.version
        )
    }

    /// The kernel, initrd and command line of the image's UKI, extracted for
    /// a direct kernel boot of the same image.
    pub fn direct_kernel(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, String)> {
        let i = &self.inspection;
        let uki = i.ukis.first().context("the image has no UKI")?;
        let esp = i
            .partitions
            .iter()
            .find(|p| p.type_name == "esp")
            .context("the image has no ESP")?;
        let efi = dir.join("uki.efi");
        builder::disk::esp::extract(&self.disk, esp.offset, &uki.path, &efi)?;
        let kernel = dir.join("vmlinuz");
        let initrd = dir.join("initrd");
        for (section, out) in [(".linux", &kernel), (".initrd", &initrd)] {
            Task::new(format!("extracting {section} from the UKI"), "objcopy")
                .package("binutils")
                .args(["-O", "binary", "--only-section", section])
                .arg(&efi)
                .arg(out)
                .run()?;
        }
        Ok((kernel, initrd, uki.cmdline.clone()))
    }
}

pub fn cache_root() -> PathBuf {
    std::env::var_os("GLOBULAR_QEMU_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/qemu-fixtures"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the checkout")
}

/// The image of `role` at `version`, built on first use in this process.
pub fn image(role: &str, version: &str) -> Image {
    once("", role, version, || build_image(role, version))
        .unwrap_or_else(|err| panic!("builder build --role {role} --version {version}: {err:#}"))
}

/// An image built by `build` the first time its key is asked for in this
/// process: one build at a time (they share the builder's cache and the
/// two cores), each image once.
fn once(
    kind: &str,
    role: &str,
    version: &str,
    build: impl FnOnce() -> anyhow::Result<Image>,
) -> anyhow::Result<Image> {
    type Built = HashMap<(String, String, String), Image>;
    static BUILT: OnceLock<Mutex<Built>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let key = (kind.to_owned(), role.to_owned(), version.to_owned());
    if let Some(image) = built.get(&key) {
        return Ok(image.clone());
    }
    let image = build()?;
    built.insert(key, image.clone());
    Ok(image)
}

fn build_image(role: &str, version: &str) -> anyhow::Result<Image> {
    let repo = repo_root();
    let directory = repo.join("profiles").join(role);
    let out = cache_root()
        .join("images")
        .join(format!("{role}_{version}"));
    // Not while another test's VMs run: builds take both cores, and boot
    // times are measured.
    let _vms = vm_lock();
    let started = std::time::Instant::now();
    let report = build_profile(directory, Some(role), version, out)?;
    tracing::info!(
        "built {} in {:.1?} (package stage reused: {})",
        report.name,
        started.elapsed(),
        report.package_stage_reused
    );
    image_of(role, version, &report)
}

fn image_of(
    role: &str,
    version: &str,
    report: &builder::build::BuildReport,
) -> anyhow::Result<Image> {
    let disk = report
        .outputs
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "raw"))
        .with_context(|| format!("no .raw among {:?}", report.outputs))?
        .clone();
    let inspection = builder::inspect::inspect(&disk)?;
    Ok(Image {
        version: version.to_owned(),
        image_id: format!("globular-{role}"),
        disk,
        inspection: Arc::new(inspection),
    })
}

/// The image of `role` at `version` carrying the previous Kubernetes
/// release (qemu-tests/fixtures/kubernetes-previous), built on first use in
/// this process: what a cluster runs before an upgrade to this checkout's
/// pinned release.
pub fn previous_image(role: &str, version: &str) -> Image {
    once("previous", role, version, || build_previous(role, version)).unwrap_or_else(|err| {
        panic!("building the {role} image at the previous Kubernetes: {err:#}")
    })
}

/// This checkout's pinned version of `component` (profiles/versions.toml).
pub fn pinned(component: &str) -> String {
    let pins = Pins::load(&repo_root().join("profiles/versions.toml")).expect("the pins");
    pins.version(component)
        .unwrap_or_else(|| panic!("no {component} pin"))
        .to_owned()
}

/// The Kubernetes release of `qemu-tests/fixtures/kubernetes-previous`
/// (its go.mod's `k8s.io/kubernetes` requirement), without the `v`.
pub fn previous_kubernetes() -> String {
    let go_mod = repo_root().join("qemu-tests/fixtures/kubernetes-previous/go.mod");
    let text = std::fs::read_to_string(&go_mod).expect("the previous Kubernetes go.mod");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("k8s.io/kubernetes v"))
        .unwrap_or_else(|| panic!("{} requires no k8s.io/kubernetes", go_mod.display()))
        .to_owned()
}

/// Builds with this checkout's profiles, but the Kubernetes component made
/// of `components/kubernetes` (component.toml, the multicall program) and
/// the fixture's go.mod and go.sum, and the pins with the fixture's
/// release: what `scripts/bump-component.sh kubernetes VERSION` would give.
fn build_previous(role: &str, version: &str) -> anyhow::Result<Image> {
    let repo = repo_root();
    let work = cache_root().join("kubernetes-previous");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let component = work.join("component");
    copy_tree(&repo.join("components/kubernetes"), &component)?;
    for file in ["go.mod", "go.sum"] {
        let from = repo
            .join("qemu-tests/fixtures/kubernetes-previous")
            .join(file);
        std::fs::copy(&from, component.join(file))
            .with_context(|| format!("copying {}", from.display()))?;
    }
    // The pins: versions.toml with [kubernetes] at the previous release.
    let pins_text = std::fs::read_to_string(repo.join("profiles/versions.toml"))?;
    let mut pins: toml::Table = pins_text.parse()?;
    pins.get_mut("kubernetes")
        .and_then(|t| t.as_table_mut())
        .context("versions.toml has no [kubernetes]")?
        .insert("version".into(), previous_kubernetes().into());
    let pins_file = work.join("versions.toml");
    std::fs::write(&pins_file, toml::to_string(&pins)?)?;
    // The lock: every path absolute (it no longer sits in profiles/), the
    // Kubernetes component's the assembled one.
    let profiles = repo.join("profiles");
    let mut lock: toml::Table =
        std::fs::read_to_string(profiles.join("artifacts.toml"))?.parse()?;
    for (kind, key) in [
        ("artifact", "path"),
        ("component", "path"),
        ("image", "profile"),
    ] {
        let Some(entries) = lock.get_mut(kind).and_then(|v| v.as_array_mut()) else {
            continue;
        };
        for entry in entries.iter_mut().filter_map(|e| e.as_table_mut()) {
            let name = entry
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or_default();
            let path = if kind == "component" && name == "kubernetes" {
                component.clone()
            } else if let Some(relative) = entry.get(key).and_then(|p| p.as_str()) {
                profiles.join(relative)
            } else {
                continue;
            };
            entry.insert(key.into(), path.display().to_string().into());
        }
    }
    let lock_file = work.join("artifacts.toml");
    std::fs::write(&lock_file, toml::to_string(&lock)?)?;

    let directory = repo.join("profiles").join(role);
    let out = cache_root().join("images").join(format!(
        "{role}_{version}_kubernetes-{}",
        previous_kubernetes()
    ));
    let _vms = vm_lock();
    let started = std::time::Instant::now();
    let report = build(&BuildOptions {
        artifacts: Some(lock_file),
        ..options(directory, Some(role), version, out, Pins::load(&pins_file)?)
    })?;
    tracing::info!(
        "built {} at Kubernetes {} in {:.1?}",
        report.name,
        previous_kubernetes(),
        started.elapsed()
    );
    image_of(role, version, &report)
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry?;
        let target = to.join(entry.path().strip_prefix(from)?);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// `builder build` of the profile in `directory` at `version` into `out`,
/// with the default cache.
fn build_profile(
    directory: PathBuf,
    role: Option<&str>,
    version: &str,
    out: PathBuf,
) -> anyhow::Result<builder::build::BuildReport> {
    let pins = Pins::discover(&directory)?;
    build(&options(directory, role, version, out, pins))
}

fn options(
    directory: PathBuf,
    role: Option<&str>,
    version: &str,
    out: PathBuf,
    pins: Pins,
) -> BuildOptions {
    BuildOptions {
        resolve: ResolveOptions {
            pins,
            directory,
            role: role.map(str::to_owned),
            profiles: Vec::new(),
            image_version: Some(version.to_owned()),
            environment: Vec::new(),
        },
        format: None,
        compression: None,
        output_dir: Some(out),
        cache_dir: None,
        artifacts: None,
        force: false,
        work_tree: Default::default(),
        progress: builder::progress::Progress::new(true),
        source_root: repo_root(),
    }
}

/// The OCI archive of a fixture profile (`qemu-tests/fixtures/NAME`,
/// `Format=oci`) at `version`, built with the images' cache.
pub fn container_image(name: &str, version: &str) -> PathBuf {
    let directory = repo_root().join("qemu-tests/fixtures").join(name);
    let out = cache_root()
        .join("images")
        .join(format!("oci-{name}_{version}"));
    let built = build_profile(directory, None, version, out);
    let report = built.unwrap_or_else(|e| panic!("building the {name} image: {e:#}"));
    report
        .outputs
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".oci.tar"))
        .unwrap_or_else(|| panic!("no OCI archive for {name}"))
}

/// A private directory for one test's VM files (serial logs, QEMU's output,
/// firmware variables, disk overlays), under the cache directory rather
/// than /tmp (other suites on this machine clean /tmp/.tmp* while VMs still
/// write there). Removed when the test passes; kept, and its path printed,
/// when the test fails (or always with `GLOBULAR_QEMU_KEEP=1`).
pub fn run_dir() -> RunDir {
    let runs = cache_root().join("runs");
    std::fs::create_dir_all(&runs).expect("creating the runs directory");
    let dir = tempfile::Builder::new()
        .prefix("vm-")
        .disable_cleanup(std::env::var_os("GLOBULAR_QEMU_KEEP").is_some())
        .tempdir_in(runs)
        .expect("creating a run directory");
    RunDir(dir)
}

/// See [`run_dir`].
#[derive(Debug)]
pub struct RunDir(tempfile::TempDir);

impl RunDir {
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.disable_cleanup(true);
            // The test harness shows a failed test's output.
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "VM run directory kept (serial logs, QEMU output, disks): {}",
                    self.0.path().display()
                );
            }
        }
    }
}

/// One test's VMs at a time: the machine has two cores, and boot times are
/// measured.
pub fn vm_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Appends a measured figure to `boot-times.txt` next to the images (for
/// docs/benchmarks.md).
pub fn record(text: &str) {
    let file = cache_root().join("boot-times.txt");
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{text}\n").as_bytes()));
}

/// Issue 20: a failed test keeps its run directory; a passed one leaves none.
#[test]
fn run_dir_is_kept_when_the_test_fails() {
    let kept = std::thread::spawn(|| {
        let dir = run_dir();
        let path = dir.path().to_owned();
        std::fs::write(path.join("vm.serial.log"), "console").unwrap();
        let _dir = dir;
        std::panic::panic_any(path);
    })
    .join()
    .expect_err("the thread panics");
    let kept = kept
        .downcast::<PathBuf>()
        .expect("the run directory's path");
    assert_eq!(
        std::fs::read_to_string(kept.join("vm.serial.log")).unwrap(),
        "console"
    );
    std::fs::remove_dir_all(*kept).unwrap();

    let dir = run_dir();
    let path = dir.path().to_owned();
    std::fs::write(path.join("vm.serial.log"), "console").unwrap();
    drop(dir);
    if std::env::var_os("GLOBULAR_QEMU_KEEP").is_none() {
        assert!(!path.exists(), "{} was kept", path.display());
    }
}

/// etcd's heartbeat in the VMs' clusters, in milliseconds (election timeout
/// 5 s). Under TCG, etcd at its 100 ms default spent about half of an idle
/// control plane's CPU time (docs/benchmarks.md, 2026-12-07), and the idle
/// three control planes filled both host cores.
pub const VM_ETCD_HEARTBEAT_MS: u64 = 500;

/// What `builder cluster new` gets for a cluster of VMs under TCG.
pub fn vm_extras() -> globular_cluster::secrets::ClusterExtras {
    globular_cluster::secrets::ClusterExtras {
        etcd_heartbeat_ms: VM_ETCD_HEARTBEAT_MS,
        ..Default::default()
    }
}

/// The address of a lone bootstrap control plane ([`bootstrap_seed`]).
pub const LONE_CP_IP: &str = "10.77.0.11";

/// A new cluster's bundle under `dir` and the cidata seed of its bootstrap
/// control plane `cp-1` at [`LONE_CP_IP`], with the image's default packages.
pub fn bootstrap_seed(dir: &Path) -> PathBuf {
    use globular_cluster::secrets::{self, NewCluster, SeedFormat, SeedOptions};
    let bundle = dir.join("cluster");
    secrets::create_with(
        &NewCluster {
            name: "lone".into(),
            out: bundle.clone(),
            endpoints: vec![format!("{LONE_CP_IP}:{}", globular_cluster::API_PORT)],
            token_ttl: time::Duration::hours(1),
            policy: Default::default(),
        },
        &vm_extras(),
    )
    .expect("builder cluster new");
    let seed = dir.join("cp-1.seed.img");
    secrets::write_seed(
        &bundle,
        &SeedOptions {
            node: "cp-1".into(),
            role: globular_cluster::Role::ControlPlane,
            addresses: vec![format!("{LONE_CP_IP}/24")],
            gateway: None,
            bootstrap: true,
            endpoints: Vec::new(),
            ports: Default::default(),
            token: None,
            ticket_ttl: secrets::TICKET_TTL,
            // Every package the image ships for the role.
            packages: None,
        },
        SeedFormat::Cidata,
        &seed,
    )
    .expect("builder seed");
    seed
}
