//! Who may read what under the state directory on an image, where etcd and
//! the substrate API run as their own system users (`etcd`, from Debian's
//! package, and `globular`, made by the base profile's `mkosi.postinst`).
//!
//! The agent writes every file as root. Before it starts a service it hands
//! that service exactly what it reads, by group, never by owner, so root
//! processes without capabilities (`globular cert renew`, the firewall)
//! still read and replace them:
//!
//! | path | owner:group | mode | read by |
//! |---|---|---|---|
//! | the state directory, `pki/` | root:root | 0711 | anyone who knows a name (no listing) |
//! | `pki/node.key`, `pki/ca.key`, `pki/etcd-client.key`, `pki/etcd-client.password` | root:globular | 0640 | the API |
//! | `pki/kubernetes-ca.key` (control planes whose seed has it) | root:globular | 0640 | the API (it signs Kubernetes node certificates) |
//! | `pki/etcd-server.key`, `pki/etcd-peer.key` | root:etcd | 0640 | etcd |
//! | `etcd/` | root:etcd | 0750 | etcd |
//! | `etcd/etcd.conf.yml` | root:etcd | 0640 | etcd |
//! | `etcd/data/` | etcd:etcd | 0700 | etcd (its own) |
//!
//! Certificates are public (0644). Nodes without these users (tests, a
//! tree without systemd) keep the root-only modes the agent writes.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::layout::Layout;
use crate::services::Service;

/// The system user etcd runs as.
pub const ETCD_USER: &str = "etcd";
/// The system user the substrate API runs as.
pub const API_USER: &str = "globular";

/// A system user's ids, from the image's `/etc/passwd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// The ids of `user` in `passwd` (the text of `/etc/passwd`).
pub fn lookup(passwd: &str, user: &str) -> Option<Ids> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(Ids { uid, gid })
    })
}

/// One change: a path, its owner and group, its mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// What `service` needs, given its user's ids.
pub fn grants(layout: &Layout, service: Service, ids: Ids) -> Vec<Grant> {
    let root_group = |path: PathBuf, mode| Grant {
        path,
        uid: 0,
        gid: ids.gid,
        mode,
    };
    let traverse = |path: PathBuf| Grant {
        path,
        uid: 0,
        gid: 0,
        mode: 0o711,
    };
    let mut out = vec![traverse(layout.root().to_owned()), traverse(layout.pki())];
    match service {
        Service::Api => {
            for key in [
                layout.node_key(),
                layout.ca_key(),
                layout.etcd_key("client"),
                layout.etcd_password(),
                kubernetes_ca_key(layout),
            ] {
                out.push(root_group(key, 0o640));
            }
        }
        Service::Etcd => {
            for kind in ["server", "peer"] {
                out.push(root_group(layout.etcd_key(kind), 0o640));
            }
            out.push(root_group(layout.etcd_dir(), 0o750));
            out.push(root_group(layout.etcd_config(), 0o640));
            out.push(Grant {
                path: layout.etcd_data(),
                uid: ids.uid,
                gid: ids.gid,
                mode: 0o700,
            });
        }
    }
    out
}

/// Kubernetes' client CA key: only where the seed had it (a cluster made
/// before Kubernetes has none), so its grant is skipped when it is missing.
fn kubernetes_ca_key(layout: &Layout) -> PathBuf {
    layout.kubernetes_secret("kubernetes-ca", "key")
}

/// Hands `service` what it reads, if the image has its user (`sysroot` is
/// `/` on a node). Creates etcd's data directory for it.
pub fn prepare(layout: &Layout, sysroot: &Path, service: Service) -> anyhow::Result<()> {
    let user = match service {
        Service::Etcd => ETCD_USER,
        Service::Api => API_USER,
    };
    let passwd = std::fs::read_to_string(sysroot.join("etc/passwd")).unwrap_or_default();
    let Some(ids) = lookup(&passwd, user) else {
        tracing::debug!("no {user} user: {} keeps root-only files", service.unit());
        return Ok(());
    };
    if service == Service::Etcd {
        std::fs::create_dir_all(layout.etcd_data())
            .with_context(|| format!("creating {}", layout.etcd_data().display()))?;
    }
    for grant in grants(layout, service, ids) {
        if grant.path == kubernetes_ca_key(layout) && !grant.path.exists() {
            continue;
        }
        apply(&grant)?;
    }
    if service == Service::Etcd {
        // What etcd finds in its data directory is its own, whoever wrote
        // it (a restore writes the data as root).
        own_tree(&layout.etcd_data(), ids)?;
    }
    Ok(())
}

/// Gives `dir` and everything under it back to root, so that root without
/// `CAP_DAC_OVERRIDE` (the health loop) can delete a service's old data.
pub fn reclaim(dir: &Path) -> anyhow::Result<()> {
    let root = Ids { uid: 0, gid: 0 };
    std::os::unix::fs::lchown(dir, Some(0), Some(0))
        .with_context(|| format!("changing the owner of {}", dir.display()))?;
    own_tree(dir, root)
}

/// Gives everything under `dir` to `ids` (the owner only: modes stay).
fn own_tree(dir: &Path, ids: Ids) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if meta.uid() != ids.uid || meta.gid() != ids.gid {
            std::os::unix::fs::lchown(&path, Some(ids.uid), Some(ids.gid))
                .with_context(|| format!("changing the owner of {}", path.display()))?;
        }
        if meta.is_dir() {
            own_tree(&path, ids)?;
        }
    }
    Ok(())
}

/// Mode first, then owner: a mode set after the owner changed would be set
/// on another user's file.
fn apply(grant: &Grant) -> anyhow::Result<()> {
    let path = &grant.path;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(grant.mode))
        .with_context(|| format!("changing the mode of {}", path.display()))?;
    std::os::unix::fs::chown(path, Some(grant.uid), Some(grant.gid))
        .with_context(|| format!("changing the owner of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        etcd:x:100:105::/var/lib/etcd/:/usr/sbin/nologin\n\
        globular:x:990:990:Globular substrate API:/nonexistent:/usr/sbin/nologin\n";

    #[test]
    fn users_are_read_from_passwd() {
        assert_eq!(lookup(PASSWD, "etcd"), Some(Ids { uid: 100, gid: 105 }));
        assert_eq!(lookup(PASSWD, "globular"), Some(Ids { uid: 990, gid: 990 }));
        assert_eq!(lookup(PASSWD, "glob"), None);
        assert_eq!(lookup("etcd:x:nope:1\n", "etcd"), None);
        assert_eq!(lookup("", "etcd"), None);
    }

    /// Each service gets its own keys by group, never the other's, and
    /// never the seed or the etcd CA key.
    #[test]
    fn each_service_reads_only_its_keys() {
        let layout = Layout::new("/var/lib/globular");
        let ids = Ids { uid: 7, gid: 8 };
        let api = grants(&layout, Service::Api, ids);
        let etcd = grants(&layout, Service::Etcd, ids);
        let paths = |g: &[Grant]| g.iter().map(|g| g.path.clone()).collect::<Vec<_>>();
        assert!(paths(&api).contains(&layout.ca_key()));
        assert!(paths(&api).contains(&layout.kubernetes_secret("kubernetes-ca", "key")));
        assert!(!paths(&api).contains(&layout.kubernetes_secret("front-proxy-ca", "key")));
        assert!(!paths(&api).contains(&layout.kubernetes_secret("service-account", "key")));
        assert!(!paths(&api).contains(&layout.etcd_key("server")));
        assert!(paths(&etcd).contains(&layout.etcd_key("peer")));
        assert!(!paths(&etcd).contains(&layout.node_key()));
        for g in api.iter().chain(&etcd) {
            assert_ne!(g.path, layout.seed());
            assert_ne!(g.path, layout.etcd_ca_key());
            // A key is never owned by the service nor readable by others.
            if g.path.extension().is_some_and(|e| e == "key") {
                assert_eq!((g.uid, g.mode), (0, 0o640), "{}", g.path.display());
            }
        }
    }

    /// With the user in the image's passwd, etcd's keys go to its group
    /// and its data directory to it (tests run as root, like the agent).
    #[test]
    fn etcd_gets_its_keys_by_group_and_its_data() {
        use std::os::unix::fs::MetadataExt as _;
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "etcd:x:4242:4343::/:/bin/false\n",
        )
        .unwrap();
        let layout = Layout::new(dir.path().join("state"));
        std::fs::create_dir_all(layout.pki()).unwrap();
        std::fs::create_dir_all(layout.etcd_dir()).unwrap();
        for path in [
            layout.etcd_key("server"),
            layout.etcd_key("peer"),
            layout.etcd_config(),
            layout.node_key(),
        ] {
            std::fs::write(&path, "x").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        prepare(&layout, dir.path(), Service::Etcd).unwrap();
        // Twice: the second run finds etcd's own data directory.
        prepare(&layout, dir.path(), Service::Etcd).unwrap();
        let meta = |p: PathBuf| std::fs::metadata(p).unwrap();
        let key = meta(layout.etcd_key("server"));
        assert_eq!((key.uid(), key.gid(), key.mode() & 0o777), (0, 4343, 0o640));
        let data = meta(layout.etcd_data());
        assert_eq!(
            (data.uid(), data.gid(), data.mode() & 0o777),
            (4242, 4343, 0o700)
        );
        let node_key = meta(layout.node_key());
        assert_eq!((node_key.gid(), node_key.mode() & 0o777), (0, 0o600));
        assert_eq!(meta(layout.root().to_owned()).mode() & 0o777, 0o711);
    }

    /// Every unit that declares the state directory keeps it traversable:
    /// systemd applies `StateDirectoryMode=` at each start, and a 0700 there
    /// (the boot report's, once) locks etcd and the API out after the next
    /// restart.
    #[test]
    fn units_keep_the_state_directory_traversable() {
        let units =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../overlays/base/usr/lib/systemd/system");
        let mut seen = 0;
        // Unit files and their drop-in directories' files.
        let mut files = Vec::new();
        let mut dirs = vec![units];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            if !text.lines().any(|l| l == "StateDirectory=globular") {
                continue;
            }
            seen += 1;
            assert!(
                text.lines().any(|l| l == "StateDirectoryMode=0711"),
                "{} declares /var/lib/globular without StateDirectoryMode=0711",
                path.display()
            );
        }
        assert!(seen >= 2, "the agent and the boot report declare it");
    }

    #[test]
    fn without_the_user_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("state"));
        std::fs::create_dir_all(layout.pki()).unwrap();
        std::fs::set_permissions(layout.root(), std::fs::Permissions::from_mode(0o700)).unwrap();
        prepare(&layout, dir.path(), Service::Etcd).unwrap();
        let mode = std::fs::metadata(layout.root())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(!layout.etcd_data().exists());
    }
}
