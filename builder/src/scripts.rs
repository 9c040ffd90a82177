//! `PostInstallationScripts=` (`mkosi.postinst`), run with mkosi's environment.
//! A script whose name ends in `.chroot` runs inside the image with `chroot`;
//! others run on the host with `$BUILDROOT` pointing at the image tree.

use std::path::Path;

use anyhow::Context as _;
use globular_task::Task;

/// The variables mkosi gives scripts, plus `Environment=`.
#[derive(Debug, Clone, Default)]
pub struct ScriptEnv {
    pub vars: Vec<(String, String)>,
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
    let mut task = if name.ends_with(".chroot") {
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
    task = task.env("MKOSI_UID", "0").env("MKOSI_GID", "0");
    for (k, v) in &env.vars {
        task = task.env(k, v);
    }
    let result = task.run();
    if let Some(dir) = cleanup {
        let _ = std::fs::remove_dir_all(dir);
    }
    result.with_context(|| format!("PostInstallationScripts={}", script.display()))
}
