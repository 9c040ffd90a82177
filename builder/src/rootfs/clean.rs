//! Removing what a build host leaves in a tree, so images are reproducible and
//! carry nothing of the machine that built them.

use std::path::Path;

use anyhow::Context as _;

/// Right after the package stage: files mmdebstrap copies from the host.
pub fn after_packages(tree: &Path) -> anyhow::Result<()> {
    for host_copy in ["etc/hostname", "etc/resolv.conf"] {
        let path = tree.join(host_copy);
        if path.symlink_metadata().is_ok_and(|m| m.is_file()) {
            remove(&path)?;
        }
    }
    Ok(())
}

/// Files that differ from build to build or identify the build host: machine
/// id, ssh host keys, apt lists and caches, logs, temporary files, random seeds,
/// backup copies of the account databases.
pub fn scrub(tree: &Path) -> anyhow::Result<()> {
    // An empty machine-id makes systemd generate one on first boot.
    let machine_id = tree.join("etc/machine-id");
    if machine_id.symlink_metadata().is_ok() {
        crate::overlay::replace_file(&machine_id, b"")
            .with_context(|| format!("emptying {}", machine_id.display()))?;
    }
    for pattern in [
        "var/lib/dbus/machine-id",
        "etc/ssh/ssh_host_*",
        "var/lib/apt/lists/*",
        "var/lib/apt/lists/partial/*",
        "var/cache/apt/*.bin",
        "var/cache/apt/archives/*.deb",
        "var/cache/apt/archives/partial/*",
        "var/cache/debconf/*-old",
        "var/cache/ldconfig/aux-cache",
        "var/lib/dpkg/*-old",
        "var/lib/systemd/random-seed",
        "var/lib/systemd/credential.secret",
        "etc/passwd-",
        "etc/group-",
        "etc/shadow-",
        "etc/gshadow-",
        "etc/subuid-",
        "etc/subgid-",
        "tmp/*",
        "var/tmp/*",
        "run/*",
    ] {
        remove_glob(tree, pattern)?;
    }
    // Logs: keep the directories (packages own them), drop the files.
    let logs = tree.join("var/log");
    if logs.is_dir() {
        for entry in walkdir::WalkDir::new(&logs).min_depth(1) {
            let entry = entry?;
            if !entry.file_type().is_dir() {
                remove(entry.path())?;
            }
        }
    }
    Ok(())
}

/// Removes everything matching `pattern` (relative to `tree`).
pub fn remove_glob(tree: &Path, pattern: &str) -> anyhow::Result<()> {
    let pattern = pattern.trim_start_matches('/');
    let full = format!(
        "{}/{}",
        glob::Pattern::escape(&tree.to_string_lossy()),
        pattern
    );
    let paths = glob::glob(&full).with_context(|| format!("invalid glob {pattern:?}"))?;
    for path in paths.filter_map(Result::ok) {
        // Never follow a match out of the tree.
        if !path.starts_with(tree) {
            continue;
        }
        remove(&path)?;
    }
    Ok(())
}

fn remove(path: &Path) -> anyhow::Result<()> {
    let meta = match path.symlink_metadata() {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
    .with_context(|| format!("removing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_host_traces() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        for f in [
            "etc/machine-id",
            "etc/ssh/ssh_host_rsa_key",
            "var/log/apt/history.log",
            "tmp/x",
            "etc/hostname",
        ] {
            std::fs::create_dir_all(t.join(f).parent().unwrap()).unwrap();
            std::fs::write(t.join(f), "data").unwrap();
        }
        after_packages(t).unwrap();
        scrub(t).unwrap();
        assert_eq!(std::fs::read(t.join("etc/machine-id")).unwrap(), b"");
        assert!(!t.join("etc/ssh/ssh_host_rsa_key").exists());
        assert!(!t.join("var/log/apt/history.log").exists());
        assert!(t.join("var/log/apt").is_dir());
        assert!(!t.join("tmp/x").exists());
        assert!(!t.join("etc/hostname").exists());
    }
}
