use std::path::{Path, PathBuf};

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
    ca: Ca,
    key: age::x25519::Identity,
    files: Vec<(String, PathBuf)>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("snapshot.db");
    std::fs::write(&snapshot, vec![7u8; 300_000]).unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(&seed, "cluster: {name: test}\n").unwrap();
    Fixture {
        ca: Ca::generate("test").unwrap(),
        key: age::x25519::Identity::generate(),
        files: vec![
            ("etcd/snapshot.db".into(), snapshot),
            ("seed.yaml".into(), seed),
        ],
        dir,
    }
}

fn manifest() -> Manifest {
    Manifest {
        format: FORMAT,
        name: "test-1".into(),
        created: OffsetDateTime::UNIX_EPOCH,
        cluster: ClusterId {
            name: "test".into(),
            id: "c1".into(),
        },
        node: "cp-1".into(),
        etcd: EtcdFacts {
            revision: 42,
            keys: [("/globular/".to_owned(), 9)].into(),
            total_keys: 9,
        },
        parts: Vec::new(),
    }
}

impl Fixture {
    fn archive(&self) -> PathBuf {
        self.dir.path().join("test-1.gbackup")
    }
    fn write(&self) -> Manifest {
        write(
            &self.archive(),
            manifest(),
            &self.files,
            &self.ca,
            &[self.key.to_public()],
        )
        .unwrap()
    }
    fn open(&self, key: &age::x25519::Identity, ca: &Ca) -> Result<Manifest, BackupError> {
        open(
            &self.archive(),
            std::slice::from_ref(key),
            ca.cert_pem(),
            &self.dest(),
        )
    }
    fn dest(&self) -> PathBuf {
        self.dir.path().join("restored")
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn an_archive_opens_with_the_key_and_the_ca_and_gives_back_every_part() {
    let f = fixture();
    let written = f.write();
    assert_eq!(written.parts.len(), 2);
    assert_eq!(mode(&f.archive()), 0o600);
    check_sum(&f.archive()).unwrap();
    // Encrypted: the seed's text is nowhere in the file.
    let raw = std::fs::read(f.archive()).unwrap();
    assert!(!raw.windows(8).any(|w| w == b"cluster:"));

    let read = f.open(&f.key, &f.ca).unwrap();
    assert_eq!(read, written);
    for (path, source) in &f.files {
        let unpacked = f.dest().join(path);
        assert_eq!(
            std::fs::read(&unpacked).unwrap(),
            std::fs::read(source).unwrap()
        );
        assert_eq!(mode(&unpacked), 0o600);
    }
    assert_eq!(mode(&f.dest()), 0o700);
}

#[test]
fn another_key_is_refused_and_nothing_is_unpacked() {
    let f = fixture();
    f.write();
    let other = age::x25519::Identity::generate();
    let err = f.open(&other, &f.ca).unwrap_err();
    assert!(matches!(err, BackupError::NotARecipient(_)), "{err}");
    assert!(!f.dest().exists());
    assert_eq!(leftovers(f.dir.path()), Vec::<String>::new());
}

#[test]
fn an_archive_signed_by_another_ca_is_refused() {
    // Anyone can encrypt to the operator's public key: a forged archive
    // (signed by a CA of the forger's own) is refused before anything is
    // unpacked.
    let f = fixture();
    let forger = Ca::generate("test").unwrap();
    write(
        &f.archive(),
        manifest(),
        &f.files,
        &forger,
        &[f.key.to_public()],
    )
    .unwrap();
    let err = f.open(&f.key, &f.ca).unwrap_err();
    assert!(matches!(err, BackupError::BadSignature { .. }), "{err}");
    assert!(!f.dest().exists());
}

#[test]
fn a_changed_byte_fails_the_checksum_and_the_decryption() {
    let f = fixture();
    f.write();
    let mut raw = std::fs::read(f.archive()).unwrap();
    let at = raw.len() - 1000;
    raw[at] ^= 1;
    std::fs::write(f.archive(), &raw).unwrap();
    let err = check_sum(&f.archive()).unwrap_err();
    assert!(matches!(err, BackupError::Checksum { .. }), "{err}");
    let err = f.open(&f.key, &f.ca).unwrap_err();
    assert!(
        matches!(
            err,
            BackupError::Corrupt { .. } | BackupError::Decrypt { .. }
        ),
        "{err}"
    );
    assert!(!f.dest().exists());
    assert_eq!(leftovers(f.dir.path()), Vec::<String>::new());
}

#[test]
fn no_recipient_no_archive() {
    let f = fixture();
    let err = write(&f.archive(), manifest(), &f.files, &f.ca, &[]).unwrap_err();
    assert!(err.to_string().contains("no backup recipients"), "{err}");
    assert!(!f.archive().exists());
}

#[test]
fn part_paths_stay_inside_the_archive() {
    let f = fixture();
    for bad in [
        "../seed.yaml",
        "/etc/passwd",
        "a/../../b",
        "",
        "manifest.json",
    ] {
        let files = vec![(bad.to_owned(), f.files[1].1.clone())];
        let err = write(
            &f.archive(),
            manifest(),
            &files,
            &f.ca,
            &[f.key.to_public()],
        );
        assert!(err.is_err(), "{bad:?} accepted");
    }
    assert!(!f.archive().exists());
}

#[test]
fn an_existing_destination_is_left_alone() {
    let f = fixture();
    f.write();
    std::fs::create_dir(f.dest()).unwrap();
    std::fs::write(f.dest().join("keep"), "x").unwrap();
    assert!(f.open(&f.key, &f.ca).is_err());
    assert_eq!(std::fs::read_to_string(f.dest().join("keep")).unwrap(), "x");
}

#[test]
fn identity_files_as_age_keygen_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let key = age::x25519::Identity::generate();
    let path = dir.path().join("key.txt");
    use age::secrecy::ExposeSecret as _;
    std::fs::write(
        &path,
        format!(
            "# created: 2026-12-03T00:00:00Z\n# public key: {}\n{}\n",
            key.to_public(),
            key.to_string().expose_secret()
        ),
    )
    .unwrap();
    let read = read_identities(&path).unwrap();
    assert_eq!(read[0].to_public().to_string(), key.to_public().to_string());

    std::fs::write(&path, "# nothing\n\nAGE-SECRET-KEY-1NOTAKEY\n").unwrap();
    let err = read_identities(&path).err().unwrap().to_string();
    assert!(err.contains("key.txt:3"), "{err}");
    std::fs::write(&path, "# only comments\n").unwrap();
    assert!(read_identities(&path).is_err());
    assert!(parse_recipient("age1notakey").is_err());
    parse_recipient(&key.to_public().to_string()).unwrap();
}

/// Files in `dir` other than the fixture's inputs and archive.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !matches!(
                n.as_str(),
                "snapshot.db" | "seed.yaml" | "test-1.gbackup" | "test-1.gbackup.sha256"
            )
        })
        .collect();
    names.sort();
    names
}
