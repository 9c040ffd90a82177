//! `builder build`: from a profile to published outputs.
//!
//! Stages, in order: resolve the profile; fetch and verify pinned artifacts
//! and check the components from source against their pins (nothing is
//! written before they check out); the package stage (mmdebstrap, cached by
//! the digest of its inputs) with, beside it, the components' compiles
//! (cached) and `BuildScripts=`; a private copy of the cached tree and what
//! the build scripts installed;
//! `ExtraTrees=` (and `mkosi.extra/`, `overlays/`) with `.tera` rendering;
//! artifacts and components; `PostInstallationScripts=`; finalize (settings, presets,
//! `RemoveFiles=`, host traces, timestamps); the output image; manifest, SBOM and
//! checksums; atomic publication.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

mod bootable;
mod images;
mod reuse;

use crate::artifacts;
use crate::components;
use crate::digest;
use crate::output::{self, manifest, sbom, Format, OutputFile, Staging};
use crate::profile::{self, summary, Config, ResolveOptions};
use crate::progress::Progress;
use crate::rootfs::worktree::{self, WorkTree};
use crate::rootfs::{self, cache::Cache, finalize, PackageStage};
use crate::scripts;

/// The timestamp used when neither `SourceDateEpoch=` nor `$SOURCE_DATE_EPOCH`
/// is set: 2024-01-01T00:00:00Z.
pub const DEFAULT_SOURCE_DATE_EPOCH: u64 = 1_704_067_200;

/// Everything `builder build` takes.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub resolve: ResolveOptions,
    /// `--format`: overrides `Format=`.
    pub format: Option<String>,
    /// `--compress-output`: overrides `CompressOutput=`.
    pub compression: Option<String>,
    /// `--output-dir`: overrides `OutputDirectory=` (default `./output`).
    pub output_dir: Option<PathBuf>,
    /// `--cache-dir`: overrides `CacheDirectory=` (default `~/.cache/globular-builder`).
    pub cache_dir: Option<PathBuf>,
    /// `--artifacts`: the artifacts lock file (default: `artifacts.toml` next to
    /// or above the profile, if there is one).
    pub artifacts: Option<PathBuf>,
    /// `--force`: rebuild the package stage even if cached.
    pub force: bool,
    /// `--work-tree`: how the private tree over the cached package stage is made.
    pub work_tree: worktree::Mode,
    pub progress: Progress,
    /// Paths under this directory are recorded relative to it in the manifest.
    pub source_root: PathBuf,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub name: String,
    pub outputs: Vec<PathBuf>,
    pub manifest: manifest::Manifest,
    /// Whether the package stage came from the cache.
    pub package_stage_reused: bool,
}

pub fn build(options: &BuildOptions) -> anyhow::Result<BuildReport> {
    let started = std::time::Instant::now();
    let report = build_inner(options, false)?;
    options.progress.summary(started.elapsed());
    Ok(report)
}

/// One build; with `reuse`, outputs that an earlier build made from the
/// same inputs are kept (the container images a build carries, in the
/// cache: reuse.rs).
fn build_inner(options: &BuildOptions, reuse: bool) -> anyhow::Result<BuildReport> {
    let config = profile::resolve(&options.resolve)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let plan = Plan::new(&config, options)?;
    for (tool, package) in plan.format.tools() {
        if globular_task::which(tool).is_none() {
            bail!("`{tool}` is not installed (install the Debian package `{package}`)");
        }
    }
    let cache = Cache::open(&plan.cache_dir)?;
    let progress = &options.progress;

    // Artifacts and components first: a bad pin stops the build before
    // anything is written.
    let lock = match &plan.artifacts_lock {
        Some(lock) => artifacts::load(lock, config.role.as_deref())?,
        None => artifacts::Lock::default(),
    };
    let artifact_list = lock.artifacts;
    let lock_dir = plan
        .artifacts_lock
        .as_ref()
        .and_then(|l| l.parent())
        .unwrap_or(Path::new("."));
    let step = progress.step(&format!(
        "verifying {} pinned artifacts",
        artifact_list.len()
    ));
    let verified = artifacts::fetch(&artifact_list, lock_dir, &cache, progress)?;
    step.done();
    let checked = components::check(
        &lock.components,
        lock_dir,
        &options.resolve.pins,
        plan.epoch,
    )?;
    images::check(
        &lock.images,
        lock_dir,
        &plan.version,
        options,
        &plan.cache_dir,
    )?;

    let stage = plan.package_stage(&config)?;
    let key = stage.key();
    let skeletons: Vec<PathBuf> = config
        .list("SkeletonTrees")
        .iter()
        .map(PathBuf::from)
        .collect();
    let work = cache.work_dir()?;
    let script_env = plan.script_env(&config, work.path());
    // Components and build scripts never see the tree (build scripts get
    // $SRCDIR, $BUILDDIR and $DESTDIR only), so they compile while the
    // package stage installs: go and cargo overlap mmdebstrap's downloads
    // and dpkg runs. The container images the image carries (small
    // profiles: the pod sandbox) are builds of their own, with their own
    // package stages, and run beside it too.
    let (entry, components, build_outputs, built_images) = std::thread::scope(|scope| {
        let components = scope.spawn(|| {
            beside_package_stage();
            checked.build(&cache, progress)
        });
        let scripts = scope.spawn(|| {
            beside_package_stage();
            run_build_scripts(&config, work.path(), &script_env, progress)
        });
        let images = scope.spawn(|| {
            beside_package_stage();
            images::build(
                &lock.images,
                lock_dir,
                &plan.version,
                options,
                &plan.cache_dir,
            )
        });
        let step = progress.step(&format!(
            "package stage {} ({} packages)",
            rootfs::cache::short(&key),
            stage.packages.len()
        ));
        let entry = cache.rootfs(&key, options.force, |tmp| {
            rootfs::install(&stage, &skeletons, tmp, progress)
        });
        if entry.as_ref().is_ok_and(|e| e.built) {
            step.done();
        } else {
            drop(step);
        }
        let components = components
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let outputs = scripts
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let images = images
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        anyhow::Ok((entry?, components?, outputs?, images?))
    })?;
    let package_stage_reused = !entry.built;
    if package_stage_reused {
        tracing::info!(
            "package stage {} reused from the cache",
            rootfs::cache::short(&key)
        );
    }
    let packages = rootfs::recorded_packages(&entry.dir)?;
    let bootable_format = matches!(plan.format, Format::Disk | Format::Qcow2);
    let build_digest = build_outputs.as_ref().map(|o| o.digest.clone());
    let stamp = if reuse && !bootable_format {
        let inputs_digest = plan.inputs_digest(
            &config,
            &key,
            None,
            build_digest.as_deref(),
            (&verified, &components, &built_images),
            options,
        )?;
        let stamp = reuse::Stamp::new(&inputs_digest, plan.format)?;
        if let Some((outputs, manifest)) = reuse::reusable(&plan.output_dir, &plan.name, &stamp) {
            tracing::info!("{}: up to date (no input changed)", plan.name);
            return Ok(BuildReport {
                name: plan.name,
                outputs,
                manifest,
                package_stage_reused,
            });
        }
        Some(stamp)
    } else {
        None
    };

    let step = progress.step("preparing the work tree");
    let work_tree = WorkTree::new(
        entry,
        work.path(),
        options.work_tree,
        worktree::Needs {
            real_tree: plan.format == Format::Directory,
            writes_in_place: !config.list("PostInstallationScripts").is_empty(),
        },
    )?;
    let tree = work_tree.path().to_path_buf();
    tracing::info!("work tree: {}", work_tree.how());
    step.done();
    if let Some(outputs) = &build_outputs {
        crate::overlay::copy_tree(&outputs.dest, &tree, Path::new("/"), None)
            .context("installing what the build scripts put in $DESTDIR")?;
    }

    let step = progress.step("copying extra trees");
    let context = config.template_context(&options.resolve.pins);
    for item in config.list("ExtraTrees") {
        let (source, target) = match item.split_once(':') {
            Some((s, t)) => (PathBuf::from(s), PathBuf::from(t)),
            None => (PathBuf::from(item), PathBuf::from("/")),
        };
        crate::overlay::copy_tree(&source, &tree, &target, Some(&context))
            .with_context(|| format!("ExtraTrees={}", source.display()))?;
    }
    check_install_paths(&tree, &verified, &components)?;
    artifacts::install(&verified, &tree)?;
    for component in &components {
        component.install(&tree)?;
    }
    images::install(&built_images, &tree)?;
    step.done();

    for script in config.list("PostInstallationScripts") {
        let step = progress.step(&format!("running {script}"));
        scripts::run_postinst(Path::new(script), &tree, &config.directory, &script_env)?;
        step.done();
    }

    let image_id = config.text("ImageId").unwrap_or("image").to_owned();
    let os_release = if bootable_format {
        Some(bootable::prepare_os_tree(&tree, &image_id, &plan.version)?)
    } else {
        None
    };

    let step = progress.step("finalizing the tree");
    finalize::finalize(
        &tree,
        &finalize::Finalize {
            hostname: config.text("Hostname").map(str::to_owned),
            locale: config.text("Locale").map(str::to_owned),
            timezone: config.text("Timezone").map(str::to_owned),
            remove_files: config.list("RemoveFiles").to_vec(),
            source_date_epoch: plan.epoch,
            clamp_mtimes: plan.format == Format::Directory,
        },
    )?;
    step.done();

    // A disk image boots the tree's kernel with an initrd from the `initrd`
    // profile, built from its own (cached) package stage.
    let mut initrd = None;
    if bootable_format {
        let kernel = bootable::kernel(&tree)?;
        let initrd_options = ResolveOptions {
            directory: bootable::initrd_profile(&config)?,
            role: Some("initrd".to_owned()),
            ..options.resolve.clone()
        };
        let initrd_config = profile::resolve(&initrd_options)?;
        let initrd_stage = plan.package_stage(&initrd_config)?;
        let step = progress.step(&format!(
            "initrd package stage {}",
            rootfs::cache::short(&initrd_stage.key())
        ));
        let entry = bootable::initrd_entry(&cache, &initrd_stage, options.force, progress)?;
        step.done();
        let mut modules: Vec<String> = config.list("KernelModulesInitrdInclude").to_vec();
        for module in initrd_config.list("KernelModulesInclude") {
            if !modules.contains(module) {
                modules.push(module.clone());
            }
        }
        let step = progress.step(&format!(
            "building the initrd for kernel {}",
            kernel.version
        ));
        let initrd_path = work.path().join("initrd.cpio.zst");
        let initrd_context = initrd_config.template_context(&options.resolve.pins);
        bootable::build_initrd(&bootable::InitrdInput {
            config: &initrd_config,
            template_context: &initrd_context,
            entry_tree: &entry.tree(),
            os_tree: &tree,
            kernel_version: &kernel.version,
            modules,
            epoch: plan.epoch,
            work: work.path(),
            output: &initrd_path,
        })?;
        step.done();
        let vmlinuz = work.path().join("vmlinuz");
        std::fs::copy(&kernel.image, &vmlinuz)
            .with_context(|| format!("copying {}", kernel.image.display()))?;
        // The initrd's inputs: its package stage and its extra trees.
        let initrd_key = bootable::initrd_key(&initrd_stage.key(), &initrd_config)?;
        initrd = Some((initrd_key, initrd_path, vmlinuz, kernel.version));
    }

    let inputs_digest = match &stamp {
        // Computed above for the reuse check (no initrd: not bootable).
        Some(stamp) => stamp.inputs_digest().to_owned(),
        None => plan.inputs_digest(
            &config,
            &key,
            initrd.as_ref().map(|(k, ..)| k.as_str()),
            build_digest.as_deref(),
            (&verified, &components, &built_images),
            options,
        )?,
    };
    let staging = Staging::new(&plan.output_dir)?;
    let mut disk_layout = None;
    let image_file = format!("{}{}", plan.name, plan.format.extension(plan.compression));
    let step = progress.step(&format!("writing {image_file}"));
    let image_path = staging.path(&image_file);
    match plan.format {
        Format::Directory => {
            std::fs::rename(&tree, &image_path)
                .with_context(|| format!("moving the tree to {}", image_path.display()))?;
        }
        Format::Tar => {
            output::archive::write_tar(&tree, &image_path, plan.compression, plan.epoch)?
        }
        Format::Cpio => {
            output::archive::write_cpio(&tree, &image_path, plan.compression, plan.epoch)?
        }
        Format::Erofs => output::filesystem::write_erofs(
            &tree,
            &image_path,
            plan.compression,
            plan.epoch,
            &crate::disk::ids::derive_uuid(
                &crate::disk::ids::digest_from_hex(&inputs_digest)?,
                "erofs",
            )
            .to_string(),
        )?,
        Format::Squashfs => {
            output::filesystem::write_squashfs(&tree, &image_path, plan.compression, plan.epoch)?
        }
        Format::Oci => output::oci::write(
            &tree,
            &image_path,
            work.path(),
            plan.compression,
            plan.epoch,
            &output::oci::ImageRef {
                name: config.text("ImageId").unwrap_or(&plan.name),
                version: &plan.version,
                dpkg_architecture: &stage.architecture,
                entrypoint: config.list("OciEntrypoint"),
            },
        )?,
        Format::Disk | Format::Qcow2 => {
            let (_, initrd_path, vmlinuz, kernel_version) =
                initrd.as_ref().expect("bootable formats build an initrd");
            let digest_bytes = crate::disk::ids::digest_from_hex(&inputs_digest)?;
            let ids = crate::disk::ids::Ids::derive(&digest_bytes);
            let os_image = work.path().join("os.erofs");
            output::filesystem::write_erofs(
                &tree,
                &os_image,
                Format::Erofs.compression(None)?,
                plan.epoch,
                &ids.filesystem.to_string(),
            )?;
            let raw = if plan.format == Format::Disk {
                image_path.clone()
            } else {
                work.path().join("disk.raw")
            };
            let layout = crate::disk::assemble(&crate::disk::DiskInput {
                os_image,
                os_filesystem: crate::disk::OsFilesystem::Erofs,
                kernel: vmlinuz.clone(),
                kernel_version: Some(kernel_version.clone()),
                initrd: initrd_path.clone(),
                cmdline: config.list("KernelCommandLine").join(" "),
                os_release: os_release.clone().unwrap_or_default(),
                image_id: image_id.clone(),
                image_version: plan.version.clone(),
                inputs_digest: digest_bytes,
                source_date_epoch: plan.epoch,
                slot_size: None,
                esp_size: None,
                boot_tries: crate::disk::DEFAULT_BOOT_TRIES,
                stub: None,
                systemd_boot: None,
                output: raw.clone(),
                work_dir: work.path().join("disk"),
            })?;
            if plan.format == Format::Qcow2 {
                crate::disk::qcow2::convert(&raw, &image_path)?;
            }
            disk_layout = Some(serde_json::to_value(&layout)?);
        }
    }
    step.done();
    // The work tree is not needed any more: it goes while the outputs are
    // hashed and published, in a scope, so it is gone when the build
    // returns, whether it failed or not.
    let (outputs, manifest) = std::thread::scope(|scope| {
        scope.spawn(move || {
            let step = progress.step("removing the work tree");
            drop(work_tree);
            drop(work);
            step.done();
        });
        let step = progress.step("checksums, manifest and SBOM");
        let (size, sha256) = if plan.format == Format::Directory {
            (
                rootfs::cache::disk_usage(&image_path),
                digest::tree(&image_path)?,
            )
        } else {
            (
                std::fs::metadata(&image_path)?.len(),
                digest::file(&image_path)?,
            )
        };
        let outputs = vec![OutputFile {
            file: image_file.clone(),
            format: format!("{:?}", plan.format).to_lowercase(),
            compression: plan.compression.to_owned(),
            size,
            sha256,
        }];

        let manifest = manifest::Manifest {
            schema: manifest::SCHEMA,
            builder_version: env!("CARGO_PKG_VERSION").to_owned(),
            image: manifest::Image {
                name: plan.name.clone(),
                id: config.text("ImageId").map(str::to_owned),
                role: config.role.clone(),
                version: plan.version.clone(),
                distribution: stage.distribution.clone(),
                release: stage.release.clone(),
                architecture: stage.architecture.clone(),
            },
            inputs_digest,
            source_date_epoch: plan.epoch,
            package_stage: manifest::PackageStageInfo {
                key: key.clone(),
                mmdebstrap: stage.mmdebstrap.clone(),
                sources: stage.sources.iter().map(|s| s.line()).collect(),
            },
            profile: plan.relative_profile(&config, &options.source_root),
            packages,
            artifacts: verified.iter().map(|v| (&v.artifact).into()).collect(),
            components: components.iter().map(|c| c.info.clone()).collect(),
            outputs,
            tools: output::tool_versions(plan.format)?,
            disk: disk_layout,
        };
        let manifest_file = format!("{}.manifest.json", plan.name);
        let sbom_file = format!("{}.spdx.json", plan.name);
        let sums_file = format!("{}.SHA256SUMS", plan.name);
        write_json(
            &staging.path(&manifest_file),
            &serde_json::to_value(&manifest)?,
        )?;
        write_json(&staging.path(&sbom_file), &sbom::spdx(&manifest)?)?;
        let mut sums = vec![
            (
                manifest_file.clone(),
                digest::file(&staging.path(&manifest_file))?,
            ),
            (sbom_file.clone(), digest::file(&staging.path(&sbom_file))?),
        ];
        if plan.format != Format::Directory {
            sums.push((image_file.clone(), manifest.outputs[0].sha256.clone()));
        }
        std::fs::write(staging.path(&sums_file), output::checksums(&sums))?;
        if stamp.is_some() {
            reuse::forget(&plan.output_dir, &plan.name)?;
        }
        let outputs = staging.publish(&[image_file, manifest_file, sbom_file, sums_file])?;
        if let Some(stamp) = &stamp {
            stamp.record(&plan.output_dir, &plan.name)?;
        }
        step.done();
        anyhow::Ok((outputs, manifest))
    })?;
    Ok(BuildReport {
        name: plan.name,
        outputs,
        manifest,
        package_stage_reused,
    })
}

/// Lowers the calling thread's priority (nice 19; the processes it starts
/// inherit it): compiles that run beside the package stage take the CPU
/// mmdebstrap leaves idle (downloads, fsyncs) instead of slowing it down,
/// and the package stage is the longest stage of a cold build.
fn beside_package_stage() {
    if let Err(err) = rustix::process::setpriority_process(None, 19) {
        tracing::debug!("could not lower the compiles' priority: {err}");
    }
}

/// What `BuildScripts=` installed.
struct BuildOutputs {
    /// `$DESTDIR`, copied into the tree after the package stage.
    dest: PathBuf,
    /// The digest of the installed files (an input of the image: partition
    /// UUIDs and salts follow it).
    digest: String,
}

/// Runs `BuildScripts=` with a fresh `$DESTDIR` in `work`; `None` without
/// build scripts.
fn run_build_scripts(
    config: &Config,
    work: &Path,
    env: &scripts::ScriptEnv,
    progress: &Progress,
) -> anyhow::Result<Option<BuildOutputs>> {
    let build_scripts = config.list("BuildScripts");
    if build_scripts.is_empty() {
        return Ok(None);
    }
    let sources = match config.list("BuildSources") {
        [] => config.directory.clone(),
        [one] if !one.contains(':') => PathBuf::from(one),
        _ => bail!(
            "BuildSources=: only one source directory without a target is implemented (it becomes $SRCDIR)"
        ),
    };
    let dest = work.join("destdir");
    std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
    let build = build_dir(config, work);
    std::fs::create_dir_all(&build).with_context(|| format!("creating {}", build.display()))?;
    let dirs = scripts::BuildDirs {
        sources: &sources,
        dest: &dest,
        build: &build,
    };
    for script in build_scripts {
        let step = progress.step(&format!("running {script}"));
        scripts::run_build(Path::new(script), &dirs, env)?;
        step.done();
    }
    let digest = digest::tree(&dest)?;
    Ok(Some(BuildOutputs { dest, digest }))
}

/// `$BUILDDIR`: `BuildDirectory=` (kept between builds, so a build script
/// can build incrementally), else a directory of this build's work tree.
fn build_dir(config: &Config, work: &Path) -> PathBuf {
    match config.text("BuildDirectory") {
        Some(dir) => PathBuf::from(dir),
        None => work.join("builddir"),
    }
}

/// No two artifacts or component programs (or their links) may land on the
/// same file of the image, as paths resolve inside it (`/bin` is `/usr/bin`).
fn check_install_paths(
    tree: &Path,
    verified: &[artifacts::Verified],
    components: &[components::Built],
) -> anyhow::Result<()> {
    let artifact_paths = verified.iter().map(|v| {
        (
            format!("artifact {:?}", v.artifact.name),
            v.artifact.install.display().to_string(),
        )
    });
    let component_paths = components.iter().flat_map(|c| {
        c.install_paths()
            .map(|p| (format!("component {:?}", c.info.name), p.to_owned()))
    });
    let mut claimed: std::collections::HashMap<PathBuf, (String, String)> =
        std::collections::HashMap::new();
    for (owner, path) in artifact_paths.chain(component_paths) {
        let resolved = crate::overlay::resolve_in_root(tree, Path::new(&path), false)?;
        if let Some((other, other_path)) = claimed.get(&resolved) {
            bail!("{owner} installs {path}, which is the same file as {other_path} of {other}");
        }
        claimed.insert(resolved, (owner, path));
    }
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Decisions derived from the configuration and the options.
struct Plan {
    format: Format,
    compression: &'static str,
    version: String,
    name: String,
    epoch: u64,
    output_dir: PathBuf,
    cache_dir: PathBuf,
    artifacts_lock: Option<PathBuf>,
}

impl Plan {
    fn new(config: &Config, options: &BuildOptions) -> anyhow::Result<Plan> {
        let format_name = options
            .format
            .as_deref()
            .or(config.text("Format"))
            .unwrap_or("disk");
        let format = Format::parse(format_name)?;
        let compression = format.compression(
            options
                .compression
                .as_deref()
                .or(config.text("CompressOutput")),
        )?;
        let version = config
            .text("ImageVersion")
            .map(str::to_owned)
            .context("no image version: pass --version, set ImageVersion= or add mkosi.version")?;
        let name = config
            .text("Output")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("image_{version}"));
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            bail!("Output={name:?} is not a file name");
        }
        let epoch = match config.int("SourceDateEpoch") {
            Some(e) => e,
            None => source_date_epoch()?,
        };
        let output_dir = options
            .output_dir
            .clone()
            .or_else(|| config.text("OutputDirectory").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("output"));
        let cache_dir = options
            .cache_dir
            .clone()
            .or_else(|| config.text("CacheDirectory").map(PathBuf::from))
            .unwrap_or_else(default_cache_dir);
        let artifacts_lock = match &options.artifacts {
            Some(path) => Some(path.clone()),
            None => artifacts::discover(&config.directory),
        };
        Ok(Plan {
            format,
            compression,
            version,
            name,
            epoch,
            output_dir,
            cache_dir,
            artifacts_lock,
        })
    }

    fn package_stage(&self, config: &Config) -> anyhow::Result<PackageStage> {
        let distribution = config.text("Distribution").unwrap_or("debian").to_owned();
        let release = config
            .text("Release")
            .context("no Release= for the package stage")?
            .to_owned();
        let architecture =
            rootfs::dpkg_architecture(config.text("Architecture").unwrap_or("x86-64"))?.to_owned();
        let sources = rootfs::mirror::sources(
            &distribution,
            &release,
            config.text("Mirror"),
            config.text("Snapshot"),
            config.list("Repositories"),
            Path::new("/etc/apt"),
        );
        let packages = config.list("Packages").to_vec();
        let remove_packages = config.list("RemovePackages").to_vec();
        let extract_packages = config.bool("ExtractPackages").unwrap_or(false);
        if extract_packages {
            if matches!(self.format, Format::Disk | Format::Qcow2) {
                bail!(
                    "ExtractPackages=yes cannot make a bootable image (Format=disk or qcow2): \
                     its packages must be installed, their scripts set up the kernel, the \
                     initrd and the services"
                );
            }
            if !remove_packages.is_empty() {
                bail!(
                    "ExtractPackages=yes with RemovePackages={}: extracted packages are not \
                     installed, so apt cannot remove any",
                    remove_packages.join(" ")
                );
            }
            if packages.is_empty() {
                bail!("ExtractPackages=yes with no Packages=: nothing to extract");
            }
        }
        let mut skeleton_trees = Vec::new();
        for tree in config.list("SkeletonTrees") {
            skeleton_trees.push(digest::tree(Path::new(tree))?);
        }
        Ok(PackageStage {
            stage_version: rootfs::STAGE_VERSION,
            distribution,
            release,
            architecture,
            sources,
            packages,
            remove_packages,
            with_recommends: config.bool("WithRecommends").unwrap_or(false),
            with_docs: config.bool("WithDocs").unwrap_or(false),
            skeleton_trees,
            source_date_epoch: self.epoch,
            mmdebstrap: rootfs::mmdebstrap_version()?,
            kernel_modules_compression: config
                .text("KernelModulesCompression")
                .filter(|a| *a != "none")
                .map(str::to_owned),
            extract_packages,
        })
    }

    fn script_env(&self, config: &Config, work: &Path) -> scripts::ScriptEnv {
        let mut vars = vec![
            (
                "DISTRIBUTION".to_owned(),
                config.text("Distribution").unwrap_or_default().to_owned(),
            ),
            (
                "RELEASE".to_owned(),
                config.text("Release").unwrap_or_default().to_owned(),
            ),
            (
                "ARCHITECTURE".to_owned(),
                config.text("Architecture").unwrap_or_default().to_owned(),
            ),
            (
                "IMAGE_ID".to_owned(),
                config.text("ImageId").unwrap_or_default().to_owned(),
            ),
            ("IMAGE_VERSION".to_owned(), self.version.clone()),
            ("PROFILES".to_owned(), config.list("Profiles").join(",")),
            ("SOURCE_DATE_EPOCH".to_owned(), self.epoch.to_string()),
            (
                "OUTPUTDIR".to_owned(),
                self.output_dir.display().to_string(),
            ),
            (
                "BUILDDIR".to_owned(),
                build_dir(config, work).display().to_string(),
            ),
        ];
        vars.extend(config.environment());
        scripts::ScriptEnv { vars }
    }

    /// Digest of every input: resolved profile (paths relative), package stage,
    /// tree and script contents, artifacts, format and builder version.
    fn inputs_digest(
        &self,
        config: &Config,
        package_key: &str,
        initrd_key: Option<&str>,
        build_outputs: Option<&str>,
        pinned: (
            &[artifacts::Verified],
            &[components::Built],
            &[images::Built],
        ),
        options: &BuildOptions,
    ) -> anyhow::Result<String> {
        let (verified, components, built_images) = pinned;
        let mut trees = Vec::new();
        for item in config.list("ExtraTrees") {
            let source = item.split_once(':').map_or(item.as_str(), |(s, _)| s);
            trees.push((item.clone(), digest::tree(Path::new(source))?));
        }
        let mut scripts = Vec::new();
        for script in config.list("PostInstallationScripts") {
            scripts.push(digest::tree(Path::new(script))?);
        }
        let artifacts: Vec<(&str, &str)> = verified
            .iter()
            .map(|v| (v.artifact.name.as_str(), v.artifact.sha256.as_str()))
            .collect();
        let mut inputs = serde_json::json!({
            "builder": env!("CARGO_PKG_VERSION"),
            "profile": self.relative_profile(config, &options.source_root),
            "package_stage": package_key,
            "initrd_package_stage": initrd_key,
            "build_outputs": build_outputs,
            "trees": trees.iter().map(|(_, d)| d).collect::<Vec<_>>(),
            "scripts": scripts,
            "artifacts": artifacts,
            "components": components.iter().map(|c| (&c.info.name, &c.info.key)).collect::<Vec<_>>(),
            "pins": options.resolve.pins.table,
            "format": format!("{:?}", self.format),
            "compression": self.compression,
            "epoch": self.epoch,
        });
        // Only where there are some: the digest of an image without them
        // stays what it was before images existed.
        if !built_images.is_empty() {
            inputs["images"] = serde_json::json!(built_images
                .iter()
                .map(|i| (&i.image.name, &i.sha256))
                .collect::<Vec<_>>());
        }
        Ok(digest::json(&inputs))
    }

    /// The summary JSON with paths under `root` made relative, so the manifest
    /// does not depend on where the checkout lives.
    fn relative_profile(&self, config: &Config, root: &Path) -> serde_json::Value {
        let prefix = format!("{}/", root.display());
        relativize(summary::to_json(config), &prefix)
    }
}

fn relativize(value: serde_json::Value, prefix: &str) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(s.strip_prefix(prefix).map(str::to_owned).unwrap_or(s)),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| relativize(v, prefix)).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, relativize(v, prefix)))
                .collect(),
        ),
        other => other,
    }
}

/// `$XDG_CACHE_HOME/globular-builder`, else `~/.cache/globular-builder`.
/// `$SOURCE_DATE_EPOCH`, or the builder's fixed default.
pub fn source_date_epoch() -> anyhow::Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("$SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        Err(_) => Ok(DEFAULT_SOURCE_DATE_EPOCH),
    }
}

pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("globular-builder");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache/globular-builder"),
        None => PathBuf::from(".cache/globular-builder"),
    }
}
