//! Profile scripts, run with mkosi's environment:
//! - `BuildScripts=` (`mkosi.build`) run on the host before the extra trees are
//!   copied in; what they install into `$DESTDIR` is copied into the image.
//!   They get no `$BUILDROOT`: the work tree shares files with the package
//!   cache by hard links, so a build script must not write into it (mkosi runs
//!   them in an overlay for the same reason).
//! - `PostInstallationScripts=` (`mkosi.postinst`) run after the extra trees;
//!   a script whose name ends in `.chroot` runs inside the image with `chroot`,
//!   others run on the host with `$BUILDROOT` pointing at the image tree.

use std::path::Path;

use anyhow::{bail, Context as _};
use globular_task::Task;

/// The variables mkosi gives scripts, plus `Environment=`.
#[derive(Debug, Clone, Default)]
pub struct ScriptEnv {
    pub vars: Vec<(String, String)>,
}

/// Where a build script reads its sources and writes its results.
#[derive(Debug)]
pub struct BuildDirs<'a> {
    /// `$SRCDIR`: the first `BuildSources=` entry (default: the profile).
    pub sources: &'a Path,
    /// `$DESTDIR`: installed into the image afterwards.
    pub dest: &'a Path,
    /// `$BUILDDIR`: `BuildDirectory=`, kept between builds when set.
    pub build: &'a Path,
}

pub fn run_build(script: &Path, dirs: &BuildDirs<'_>, env: &ScriptEnv) -> anyhow::Result<()> {
    let setting = format!("BuildScripts={}", script.display());
    if script.extension().is_some_and(|e| e == "chroot") {
        bail!(
            "{setting}: build scripts run on the host; `.chroot` build scripts are not implemented"
        );
    }
    // The directories last: they win over `Environment=`.
    let task = with_env(
        Task::new(format!("running {}", script.display()), script),
        env,
    )
    .env("SRCDIR", dirs.sources)
    .env("DESTDIR", dirs.dest)
    .env("BUILDDIR", dirs.build)
    .current_dir(dirs.sources);
    task.run().context(setting)
}

pub fn run_postinst(
    script: &Path,
    tree: &Path,
    src_dir: &Path,
    env: &ScriptEnv,
) -> anyhow::Result<()> {
    let name = script
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let description = format!("running {}", script.display());
    let mut cleanup = None;
    let task = if name.ends_with(".chroot") {
        let inside = tree.join("work");
        if !inside.exists() {
            cleanup = Some(inside.clone());
        }
        std::fs::create_dir_all(&inside)?;
        let copy = inside.join(&name);
        std::fs::copy(script, &copy).with_context(|| format!("copying {}", script.display()))?;
        Task::new(description, "chroot")
            .package("coreutils")
            .arg(tree)
            .arg(format!("/work/{name}"))
            .env("BUILDROOT", "/")
            .env("SRCDIR", "/work/src")
            .env("CHROOT_SCRIPT", format!("/work/{name}"))
    } else {
        Task::new(description, script)
            .env("BUILDROOT", tree)
            .env("SRCDIR", src_dir)
            .current_dir(src_dir)
    };
    let result = with_env(task, env).run();
    if let Some(dir) = cleanup {
        let _ = std::fs::remove_dir_all(dir);
    }
    result.with_context(|| format!("PostInstallationScripts={}", script.display()))
}

fn with_env(mut task: Task, env: &ScriptEnv) -> Task {
    task = task.env("MKOSI_UID", "0").env("MKOSI_GID", "0");
    for (k, v) in &env.vars {
        task = task.env(k, v);
    }
    task
}
