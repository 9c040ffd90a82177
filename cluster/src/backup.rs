//! Backup archives: what a control plane writes (`globular backup create`)
//! and what a restore reads.
//!
//! An archive (`NAME.gbackup`) is an [age] file encrypted to the operators'
//! X25519 recipients chosen at `builder cluster new`: nodes can write one
//! but not read it. Inside is a tar stream:
//!
//! | entry | holds |
//! |---|---|
//! | `manifest.json` | [`Manifest`]: cluster, etcd revision and key counts, every part's size and SHA-256 |
//! | `manifest.sig` | the cluster CA's signature of `manifest.json` (ECDSA P-256, as [`Ca::sign`]) |
//! | the parts, in the manifest's order | `etcd/snapshot.db`, the node's seed (cluster record, CA keys, tokens) |
//!
//! Beside it, `NAME.gbackup.sha256` (`sha256sum` format) lets anyone check
//! a copy without the key. Reading ([`open`]) decrypts, checks the
//! signature against a CA the reader already trusts, then every part's size
//! and hash while it unpacks into a new private directory; on any failure
//! that directory is removed, so nothing of a bad archive is left behind.
//!
//! [age]: https://age-encryption.org/v1

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr as _;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::fsutil::{self, AtomicFile, SECRET};
use crate::pki::{self, Ca};

/// The archive's file name extension.
pub const EXTENSION: &str = "gbackup";
/// The format this code writes and reads.
pub const FORMAT: u32 = 1;
/// The manifest's entry in an archive, and its file in an unpacked one.
pub const MANIFEST: &str = "manifest.json";
/// The signature's entry in an archive, and its file in an unpacked one.
pub const SIGNATURE: &str = "manifest.sig";
/// The etcd snapshot's part.
pub const SNAPSHOT: &str = "etcd/snapshot.db";
/// The seed's part (cluster record, CAs, tokens).
pub const SEED: &str = "seed.yaml";
/// Most bytes a manifest or signature entry may have.
const SMALL_ENTRY: u64 = 1 << 20;

/// Why an archive was refused. Callers match: a key that is not a
/// recipient is not the same failure as a forged archive.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: not encrypted to this key (none of its recipients is the identity given)")]
    NotARecipient(PathBuf),
    #[error("{path}: cannot decrypt: {message}")]
    Decrypt { path: PathBuf, message: String },
    #[error("{path}: the manifest's signature does not verify against the cluster CA")]
    BadSignature { path: PathBuf },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{path}: SHA-256 {actual}, its checksum file says {expected}")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The cluster an archive belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterId {
    pub name: String,
    pub id: String,
}

/// The etcd side of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdFacts {
    /// The keyspace revision the snapshot holds.
    pub revision: i64,
    /// Keys per prefix at that revision (`/globular/`, `/registry/`).
    pub keys: BTreeMap<String, u64>,
    /// Every key at that revision.
    pub total_keys: u64,
}

/// One file of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// Relative path inside the archive (and under the unpacked directory).
    pub path: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    pub cluster: ClusterId,
    /// The control plane that made it.
    pub node: String,
    pub etcd: EtcdFacts,
    pub parts: Vec<Part>,
}

/// An operator's public key (`age1...`).
pub fn parse_recipient(text: &str) -> Result<age::x25519::Recipient, BackupError> {
    age::x25519::Recipient::from_str(text.trim()).map_err(|e| {
        BackupError::Invalid(format!(
            "backup recipient {:?}: {e} (an age X25519 public key, age1...)",
            text.trim()
        ))
    })
}

/// The identities of an age identity file (`age-keygen` writes one:
/// comments and `AGE-SECRET-KEY-1...` lines).
pub fn read_identities(path: &Path) -> Result<Vec<age::x25519::Identity>, BackupError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut identities = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        identities.push(age::x25519::Identity::from_str(line).map_err(|e| {
            BackupError::Invalid(format!(
                "{}:{}: {e} (expected an AGE-SECRET-KEY-1... line)",
                path.display(),
                n + 1
            ))
        })?);
    }
    if identities.is_empty() {
        return Err(BackupError::Invalid(format!(
            "{}: no AGE-SECRET-KEY-1... line",
            path.display()
        )));
    }
    Ok(identities)
}

/// A safe relative archive path: plain components only.
fn check_part_path(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if path.is_empty()
        || path == MANIFEST
        || path == SIGNATURE
        || !p.components().all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(format!("part path {path:?} is not a plain relative path"));
    }
    Ok(())
}

/// The SHA-256 and size of a file.
pub fn hash_file(path: &Path) -> Result<(String, u64), BackupError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher).map_err(io(path))?;
    Ok((hex::encode(hasher.finalize()), size))
}

/// Writes the archive `out` (mode 0600, in place only when complete) and
/// its checksum file: `files` are (archive path, file on disk); their parts
/// are added to `manifest`, which `ca` signs. Returns the manifest written.
pub fn write(
    out: &Path,
    mut manifest: Manifest,
    files: &[(String, PathBuf)],
    ca: &Ca,
    recipients: &[age::x25519::Recipient],
) -> Result<Manifest, BackupError> {
    if recipients.is_empty() {
        return Err(BackupError::Invalid(
            "no backup recipients: an archive holds the CA key and is only written encrypted \
             (builder cluster new --backup-recipient, or --recipient)"
                .into(),
        ));
    }
    manifest.parts.clear();
    for (path, source) in files {
        check_part_path(path).map_err(BackupError::Invalid)?;
        let (sha256, size) = hash_file(source)?;
        manifest.parts.push(Part {
            path: path.clone(),
            size,
            sha256,
        });
    }
    let manifest_json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Invalid(format!("manifest: {e}")))?;
    let signature = ca
        .sign(&manifest_json)
        .map_err(|e| BackupError::Invalid(format!("signing the manifest: {e}")))?;

    let file = AtomicFile::create(out, SECRET).map_err(io(out))?;
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| BackupError::Invalid(format!("encrypting {}: {e}", out.display())))?;
    let hashing = HashingWriter {
        inner: file,
        hasher: Sha256::new(),
    };
    let encrypted = encryptor.wrap_output(hashing).map_err(io(out))?;
    let mut tar = tar::Builder::new(encrypted);
    append(
        &mut tar,
        MANIFEST,
        &mut &manifest_json[..],
        manifest_json.len() as u64,
    )
    .map_err(io(out))?;
    append(
        &mut tar,
        SIGNATURE,
        &mut &signature[..],
        signature.len() as u64,
    )
    .map_err(io(out))?;
    for ((path, source), part) in files.iter().zip(&manifest.parts) {
        let mut f = std::fs::File::open(source).map_err(io(source))?;
        // What is read must be what was hashed: a file that changed since is
        // an error, never a part that does not match its manifest entry.
        let mut limited = (&mut f).take(part.size + 1);
        let mut buf = Vec::new();
        limited.read_to_end(&mut buf).map_err(io(source))?;
        if buf.len() as u64 != part.size || hex::encode(Sha256::digest(&buf)) != part.sha256 {
            return Err(BackupError::Invalid(format!(
                "{} changed while the archive was written",
                source.display()
            )));
        }
        append(&mut tar, path, &mut &buf[..], part.size).map_err(io(out))?;
    }
    let encrypted = tar.into_inner().map_err(io(out))?;
    let mut hashing = encrypted.finish().map_err(io(out))?;
    hashing.flush().map_err(io(out))?;
    let digest = hex::encode(hashing.hasher.finalize());
    hashing.inner.commit().map_err(io(out))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sums = checksum_path(out);
    fsutil::write_atomic(&sums, format!("{digest}  {name}\n").as_bytes(), SECRET)
        .map_err(io(&sums))?;
    Ok(manifest)
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    data: &mut impl Read,
    size: u64,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o600);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mtime(0);
    tar.append_data(&mut header, path, data)
}

/// Hashes what passes through (the encrypted bytes, for the checksum file).
struct HashingWriter {
    inner: AtomicFile,
    hasher: Sha256,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `NAME.gbackup.sha256` beside `NAME.gbackup`.
pub fn checksum_path(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// The SHA-256 an archive's checksum file records (lowercase hex).
pub fn recorded_sum(archive: &Path) -> Result<String, BackupError> {
    let sums = checksum_path(archive);
    let text = std::fs::read_to_string(&sums).map_err(io(&sums))?;
    Ok(text
        .split_whitespace()
        .next()
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| BackupError::Corrupt {
            path: sums.clone(),
            message: "not a sha256sum line".into(),
        })?
        .to_ascii_lowercase())
}

/// Checks an archive against its checksum file (no key needed).
pub fn check_sum(archive: &Path) -> Result<String, BackupError> {
    let expected = recorded_sum(archive)?;
    let (actual, _) = hash_file(archive)?;
    if actual != expected {
        return Err(BackupError::Checksum {
            path: archive.to_owned(),
            expected,
            actual,
        });
    }
    Ok(actual)
}

/// Decrypts `archive` with `identities`, checks its manifest's signature
/// against `trusted_ca_pem` and unpacks its parts into `dest`, a directory
/// made here (0700; it must not exist), checking each part's size and hash;
/// the manifest and its signature are kept there too ([`MANIFEST`],
/// [`SIGNATURE`]). On any error `dest` is removed again.
pub fn open(
    archive: &Path,
    identities: &[age::x25519::Identity],
    trusted_ca_pem: &str,
    dest: &Path,
) -> Result<Manifest, BackupError> {
    if dest.exists() {
        return Err(BackupError::Invalid(format!(
            "{}: already exists (a restore unpacks into a new directory)",
            dest.display()
        )));
    }
    let staging = fsutil::AtomicDir::create(dest, 0o700).map_err(io(dest))?;
    let manifest = unpack(archive, identities, trusted_ca_pem, staging.path())?;
    staging.commit().map_err(io(dest))?;
    Ok(manifest)
}

fn unpack(
    archive: &Path,
    identities: &[age::x25519::Identity],
    trusted_ca_pem: &str,
    dest: &Path,
) -> Result<Manifest, BackupError> {
    let corrupt = |message: String| BackupError::Corrupt {
        path: archive.to_owned(),
        message,
    };
    let file = std::fs::File::open(archive).map_err(io(archive))?;
    let decryptor =
        age::Decryptor::new(std::io::BufReader::new(file)).map_err(|e| BackupError::Decrypt {
            path: archive.to_owned(),
            message: e.to_string(),
        })?;
    let reader = decryptor
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => BackupError::NotARecipient(archive.to_owned()),
            e => BackupError::Decrypt {
                path: archive.to_owned(),
                message: e.to_string(),
            },
        })?;
    let mut tar = tar::Archive::new(reader);
    let mut entries = tar
        .entries()
        .map_err(|e| corrupt(format!("not a tar stream: {e}")))?;
    let mut next = |what: &str| -> Result<tar::Entry<'_, _>, BackupError> {
        match entries.next() {
            Some(Ok(entry)) => Ok(entry),
            Some(Err(e)) => Err(corrupt(format!("reading {what}: {e}"))),
            None => Err(corrupt(format!("ends before {what}"))),
        }
    };
    let manifest_json = read_small(&mut next(MANIFEST)?, MANIFEST).map_err(corrupt)?;
    let signature = read_small(&mut next(SIGNATURE)?, SIGNATURE).map_err(corrupt)?;
    pki::verify_signature(trusted_ca_pem, &manifest_json, &signature).map_err(|_| {
        BackupError::BadSignature {
            path: archive.to_owned(),
        }
    })?;
    let manifest = parse_manifest(&manifest_json).map_err(corrupt)?;
    for (name, bytes) in [(MANIFEST, &manifest_json), (SIGNATURE, &signature)] {
        let path = dest.join(name);
        fsutil::write_atomic(&path, bytes, SECRET).map_err(io(&path))?;
    }
    for part in &manifest.parts {
        check_part_path(&part.path).map_err(corrupt)?;
        let mut entry = next(&part.path)?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name != part.path || !entry.header().entry_type().is_file() {
            return Err(corrupt(format!(
                "entry {name:?} where the manifest has the file {:?}",
                part.path
            )));
        }
        let target = dest.join(&part.path);
        if let Some(parent) = target.parent() {
            fsutil::create_private_dir(parent).map_err(io(parent))?;
        }
        let out = AtomicFile::create(&target, SECRET).map_err(io(&target))?;
        let mut hashing = HashingWriter {
            inner: out,
            hasher: Sha256::new(),
        };
        let size = std::io::copy(
            &mut (&mut entry).take(part.size.saturating_add(1)),
            &mut hashing,
        )
        .map_err(|e| corrupt(format!("{}: {e}", part.path)))?;
        let sha256 = hex::encode(hashing.hasher.finalize());
        if size != part.size || sha256 != part.sha256 {
            return Err(corrupt(format!(
                "{}: {size} bytes with SHA-256 {sha256}, the manifest says {} bytes with {}",
                part.path, part.size, part.sha256
            )));
        }
        hashing.inner.commit().map_err(io(&target))?;
    }
    if let Some(extra) = entries.next() {
        let name = extra
            .ok()
            .and_then(|e| e.path().ok().map(|p| p.to_string_lossy().into_owned()))
            .unwrap_or_default();
        return Err(corrupt(format!("entry {name:?} is not in the manifest")));
    }
    Ok(manifest)
}

fn parse_manifest(json: &[u8]) -> Result<Manifest, String> {
    let manifest: Manifest =
        serde_json::from_slice(json).map_err(|e| format!("{MANIFEST}: {e}"))?;
    if manifest.format != FORMAT {
        return Err(format!(
            "format {} (this program reads {FORMAT})",
            manifest.format
        ));
    }
    Ok(manifest)
}

/// Checks one part taken out of an archive on its own (the snapshot a
/// restore seed carries): the manifest's signature against
/// `trusted_ca_pem`, then the file's size and hash against the manifest's
/// entry for `part`.
pub fn check_part(
    manifest_json: &[u8],
    signature: &[u8],
    trusted_ca_pem: &str,
    part: &str,
    file: &Path,
) -> Result<Manifest, BackupError> {
    pki::verify_signature(trusted_ca_pem, manifest_json, signature).map_err(|_| {
        BackupError::BadSignature {
            path: file.to_owned(),
        }
    })?;
    let corrupt = |message: String| BackupError::Corrupt {
        path: file.to_owned(),
        message,
    };
    let manifest = parse_manifest(manifest_json).map_err(corrupt)?;
    let entry = manifest
        .parts
        .iter()
        .find(|p| p.path == part)
        .ok_or_else(|| corrupt(format!("the manifest has no part {part:?}")))?;
    let (sha256, size) = hash_file(file)?;
    if size != entry.size || sha256 != entry.sha256 {
        return Err(corrupt(format!(
            "{size} bytes with SHA-256 {sha256}, the manifest's {part} has {} bytes with {}",
            entry.size, entry.sha256
        )));
    }
    Ok(manifest)
}

fn read_small(entry: &mut impl Read, what: &str) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    entry
        .take(SMALL_ENTRY + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{what}: {e}"))?;
    if buf.len() as u64 > SMALL_ENTRY {
        return Err(format!("{what} is larger than {SMALL_ENTRY} bytes"));
    }
    Ok(buf)
}

pub mod policy;

#[cfg(test)]
mod tests;
