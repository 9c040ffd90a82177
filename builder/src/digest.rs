//! SHA-256 digests of files, trees and structured inputs.

use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

/// Lowercase hex SHA-256 of a file's contents.
pub fn file(path: &Path) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Lowercase hex SHA-256 of bytes.
pub fn bytes(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// SHA-256 of a value's canonical JSON (serde_json keeps struct field order).
pub fn json(value: &impl serde::Serialize) -> String {
    bytes(&serde_json::to_vec(value).expect("serializable"))
}

/// A digest of a directory tree or file: relative paths in sorted order, file
/// types, permission bits, symlink targets and file contents. Ownership and
/// timestamps are left out: they are not inputs a user controls in a checkout.
pub fn tree(root: &Path) -> anyhow::Result<String> {
    tree_with(root, |mode| mode)
}

/// [`tree`] that keeps only whether a file is executable of its permission
/// bits: for sources (a Go module) whose checkout mode follows the umask.
pub fn source_tree(root: &Path) -> anyhow::Result<String> {
    tree_with(root, |mode| mode & 0o170_100)
}

fn tree_with(root: &Path, mode: impl Fn(u32) -> u32) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    if root.is_file() {
        hasher.update(b"file\0");
        hasher.update(file(root)?.as_bytes());
        return Ok(hex::encode(hasher.finalize()));
    }
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry.with_context(|| format!("walking {}", root.display()))?;
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let meta = entry
            .path()
            .symlink_metadata()
            .with_context(|| format!("reading {}", entry.path().display()))?;
        hasher.update(rel.as_os_str().as_encoded_bytes());
        hasher.update(b"\0");
        hasher.update(format!("{:o}\0", mode(meta.permissions().mode())).as_bytes());
        let kind = meta.file_type();
        if kind.is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            hasher.update(b"l\0");
            hasher.update(target.as_os_str().as_encoded_bytes());
        } else if kind.is_file() {
            hasher.update(b"f\0");
            hasher.update(file(entry.path())?.as_bytes());
        } else if kind.is_dir() {
            hasher.update(b"d\0");
        } else {
            hasher.update(format!("s{}\0", meta.rdev()).as_bytes());
        }
        hasher.update(b"\n");
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_tree_ignores_the_umask_but_not_contents_or_exec_bits() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("go.mod");
        std::fs::write(&f, "module x\n").unwrap();
        let set =
            |mode| std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        set(0o644);
        let a = source_tree(dir.path()).unwrap();
        set(0o664);
        assert_eq!(source_tree(dir.path()).unwrap(), a);
        assert_ne!(
            tree(dir.path()).unwrap(),
            tree_with(dir.path(), |m| m ^ 0o020).unwrap()
        );
        set(0o755);
        assert_ne!(source_tree(dir.path()).unwrap(), a);
        set(0o644);
        std::fs::write(&f, "module y\n").unwrap();
        assert_ne!(source_tree(dir.path()).unwrap(), a);
    }

    #[test]
    fn tree_digest_sees_content_and_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "1").unwrap();
        let first = tree(dir.path()).unwrap();
        assert_eq!(first, tree(dir.path()).unwrap());
        std::fs::write(dir.path().join("a"), "2").unwrap();
        let second = tree(dir.path()).unwrap();
        assert_ne!(first, second);
        std::fs::rename(dir.path().join("a"), dir.path().join("b")).unwrap();
        assert_ne!(second, tree(dir.path()).unwrap());
        assert_eq!(bytes(b"abc").len(), 64);
    }
}
