//! Issue 17: a backup of a real cluster (real etcd, the real `globular`)
//! restores every key with its revisions into a fresh etcd, and archives
//! that are not the operator's, not the cluster's or not intact are refused
//! before anything is written.

use std::path::{Path, PathBuf};
use std::process::Child;

use age::secrecy::ExposeSecret as _;
use globular_cluster::etcd_auth::SUBSTRATE_USER;
use globular_cluster::Role;
use globular_task::Task;
use serde_json::Value;

use crate::harness::{etcdctl, free_port, kill_all_spawned, kill_spawned, Cluster, Node, AGENT};

/// Every key with its revisions, version and value, in key order.
type Keys = Vec<(String, i64, i64, i64, String)>;

fn keys_of(json: &str) -> (Keys, i64) {
    let v: Value = serde_json::from_str(json).unwrap();
    let int = |v: &Value| match v {
        Value::Number(n) => n.as_i64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        _ => 0,
    };
    let keys = v["kvs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|kv| {
            (
                kv["key"].as_str().unwrap().to_owned(),
                int(&kv["create_revision"]),
                int(&kv["mod_revision"]),
                int(&kv["version"]),
                kv["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    (keys, int(&v["header"]["revision"]))
}

/// All keys (`get --from-key ''`), as the substrate.
fn all_keys(node: &Node) -> (Keys, i64) {
    keys_of(&etcdctl(
        node,
        &node.etcd_url(),
        &["get", "--from-key", "", "-w", "json"],
    ))
}

fn globular(args: &[&str]) -> Result<String, String> {
    Task::new("running globular", AGENT)
        .args(args)
        .env("RUST_LOG", "warn")
        .read_string()
        .map_err(|e| format!("{e:#}"))
}

fn write_identity(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = age::x25519::Identity::generate();
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "# public key: {}\n{}\n",
            key.to_public(),
            key.to_string().expose_secret()
        ),
    )
    .unwrap();
    (path, key.to_public().to_string())
}

/// Substrate records through the API (`test.S0`...), Kubernetes-like
/// objects straight into etcd (`/registry/test/00`...).
fn write_records(cp: &Node, services: usize, objects: usize) {
    let root = cp.root.to_str().unwrap();
    for i in 0..services {
        globular(&[
            "service",
            "register",
            "--root",
            root,
            "--name",
            &format!("test.S{i}"),
            "--address",
            "127.0.0.1",
            "--port",
            "8080",
        ])
        .unwrap();
    }
    for i in 0..objects {
        etcdctl(
            cp,
            &cp.etcd_url(),
            &["put", &format!("/registry/test/{i:02}"), "object"],
        );
    }
}

/// `globular backup create --name NAME` on the node at `root`, encrypted
/// to `recipient`; the archive's path.
fn create_backup(root: &str, dir: &Path, name: &str, recipient: &str) -> PathBuf {
    globular(&[
        "backup",
        "create",
        "--root",
        root,
        "--dir",
        dir.to_str().unwrap(),
        "--name",
        name,
        "--recipient",
        recipient,
    ])
    .unwrap();
    dir.join(format!("{name}.gbackup"))
}

/// A plain-HTTP etcd on loopback, killed when dropped.
struct Etcd(Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_backup_restores_every_key_and_revision_and_bad_archives_are_refused() {
    let cluster = Cluster::new();
    let dir = cluster.dir.path().to_owned();
    let cp1 = cluster.node("cp1", Role::ControlPlane, true, &[]);
    cluster.run_agent(&cp1).unwrap();
    let root = cp1.root.to_str().unwrap().to_owned();

    // Substrate records through the API, Kubernetes-like objects in etcd.
    write_records(&cp1, 5, 20);
    // Some keys changed more than once: versions and revisions to keep.
    etcdctl(
        &cp1,
        &cp1.etcd_url(),
        &["put", "/registry/test/00", "changed"],
    );
    let (before, revision) = all_keys(&cp1);
    let substrate_keys = before
        .iter()
        .filter(|k| key_name(&k.0).starts_with("/globular/"))
        .count();
    assert!(substrate_keys >= 5, "{before:?}");

    let (identity, recipient) = write_identity(&dir, "operator.key");
    let backups = dir.join("backups");
    let backups_arg = backups.to_str().unwrap();
    // Without a recipient (none in the seed, none given) nothing is written.
    let err = globular(&["backup", "create", "--root", &root, "--dir", backups_arg]).unwrap_err();
    assert!(err.contains("no backup recipients"), "{err}");
    assert_eq!(
        std::fs::read_dir(&backups).map(|d| d.count()).unwrap_or(0),
        0
    );

    let out = globular(&[
        "backup",
        "create",
        "--root",
        &root,
        "--dir",
        backups_arg,
        "--name",
        "t1",
        "--recipient",
        &recipient,
    ])
    .unwrap();
    let archive = backups.join("t1.gbackup");
    assert_eq!(out.trim(), archive.display().to_string());
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Only the archive and its checksum file: the staged snapshot is gone.
    let mut names: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["t1.gbackup", "t1.gbackup.sha256"]);
    let listed = globular(&["backup", "list", "--dir", backups_arg]).unwrap();
    assert!(listed.contains("t1"), "{listed}");

    // The manifest describes the snapshot: its revision and key counts.
    let archive_arg = archive.to_str().unwrap();
    let identity_arg = identity.to_str().unwrap();
    let verified: Value = serde_json::from_str(
        &globular(&[
            "backup",
            "verify",
            archive_arg,
            "--root",
            &root,
            "--identity",
            identity_arg,
        ])
        .unwrap(),
    )
    .unwrap();
    let manifest = &verified["manifest"];
    assert_eq!(manifest["etcd"]["revision"], revision, "{manifest}");
    assert_eq!(manifest["etcd"]["total_keys"], before.len(), "{manifest}");
    assert_eq!(manifest["etcd"]["keys"]["/registry/"], 20, "{manifest}");
    assert_eq!(
        manifest["etcd"]["keys"]["/globular/"], substrate_keys,
        "{manifest}"
    );
    assert_eq!(
        manifest["cluster"]["id"], cluster.secrets.info.id,
        "{manifest}"
    );

    // The cluster is gone: etcd killed, its data removed.
    kill_spawned(&cp1.root);
    std::fs::remove_dir_all(cp1.layout().etcd_data()).unwrap();

    let ca = cluster.bundle_dir().join("ca.crt");
    let ca_arg = ca.to_str().unwrap();
    let peer = format!("http://127.0.0.1:{}", free_port());
    let restore = |archive: &str, identity: &str, ca: &str, data: &Path| {
        backup_restore(archive, identity, ca, data, &peer)
    };
    let data = dir.join("restored.etcd");

    // Refused, and nothing written: another operator's key ...
    let (other, _) = write_identity(&dir, "other.key");
    let err = restore(archive_arg, other.to_str().unwrap(), ca_arg, &data).unwrap_err();
    assert!(err.contains("not encrypted to this key"), "{err}");
    assert!(!data.exists());
    // ... another cluster's CA ...
    let other_cluster = Cluster::new();
    let other_ca = other_cluster.bundle_dir().join("ca.crt");
    let err = restore(archive_arg, identity_arg, other_ca.to_str().unwrap(), &data).unwrap_err();
    assert!(err.contains("signature does not verify"), "{err}");
    assert!(!data.exists());
    // ... a copy with one byte changed (its checksum says so too).
    let tampered = backups.join("tampered.gbackup");
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&tampered, &bytes).unwrap();
    std::fs::copy(
        backups.join("t1.gbackup.sha256"),
        backups.join("tampered.gbackup.sha256"),
    )
    .unwrap();
    let err = globular(&[
        "backup",
        "verify",
        tampered.to_str().unwrap(),
        "--root",
        &root,
    ])
    .unwrap_err();
    assert!(err.contains("SHA-256"), "{err}");
    let err = restore(tampered.to_str().unwrap(), identity_arg, ca_arg, &data).unwrap_err();
    assert!(err.contains("tampered.gbackup"), "{err}");
    assert!(!data.exists());
    // No scratch directory left anywhere.
    let leftovers: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".globular-backup") || n.contains("restored"))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());

    // The real archive restores into a fresh etcd: every key, value,
    // version and revision as before.
    let password = std::fs::read_to_string(cp1.layout().etcd_password()).unwrap();
    let after = restored_keys(&dir, &archive, &identity, &ca, &password);
    assert_eq!(
        after.0, before,
        "keys, revisions, versions or values differ"
    );
    assert!(after.1 >= revision, "revision {} < {revision}", after.1);
}

/// `globular backup restore` into the data directory `data`, a member
/// named `restored` at `peer`.
fn backup_restore(
    archive: &str,
    identity: &str,
    ca: &str,
    data: &Path,
    peer: &str,
) -> Result<String, String> {
    globular(&[
        "backup",
        "restore",
        archive,
        "--identity",
        identity,
        "--ca",
        ca,
        "--data-dir",
        data.to_str().unwrap(),
        "--name",
        "restored",
        "--peer-url",
        peer,
    ])
}

/// Restores `archive` (`globular backup restore`) into a fresh plain-HTTP
/// etcd on loopback and reads every key as the substrate (etcd's auth
/// comes back with the data: `password` signs in as before); the etcd is
/// stopped and its data removed again.
fn restored_keys(
    dir: &Path,
    archive: &Path,
    identity: &Path,
    ca: &Path,
    password: &str,
) -> (Keys, i64) {
    let data = tempfile::tempdir_in(dir).unwrap();
    let data = data.path().join("etcd");
    let peer = format!("http://127.0.0.1:{}", free_port());
    backup_restore(
        archive.to_str().unwrap(),
        identity.to_str().unwrap(),
        ca.to_str().unwrap(),
        &data,
        &peer,
    )
    .unwrap();
    let client = format!("http://127.0.0.1:{}", free_port());
    let log = data.with_extension("log");
    let _etcd = Etcd(
        Task::new("starting the restored etcd", "etcd")
            .args(["--name", "restored", "--data-dir"])
            .arg(&data)
            .args([
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
            ])
            .spawn_logged(&log)
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = Task::new("reading the restored etcd", "etcdctl")
            .args([
                format!("--endpoints={client}"),
                "--command-timeout=5s".into(),
            ])
            .args(["get", "--from-key", "", "-w", "json"])
            .env(
                "ETCDCTL_USER",
                format!("{SUBSTRATE_USER}:{}", password.trim()),
            )
            .read_string();
        match out {
            Ok(out) => return keys_of(&out),
            Err(e) if std::time::Instant::now() > deadline => {
                panic!(
                    "{e:#}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(300)),
        }
    }
}

/// A key as etcdctl's JSON gives it (base64), decoded.
fn key_name(b64: &str) -> String {
    use base64::Engine as _;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

/// The keys under `prefix`, with revisions and values.
fn keys_under(node: &Node, prefix: &str) -> Keys {
    keys_of(&etcdctl(
        node,
        &node.etcd_url(),
        &["get", "--prefix", prefix, "-w", "json"],
    ))
    .0
}

/// The names of the keys under `prefix`.
fn names_under(node: &Node, prefix: &str) -> Vec<String> {
    keys_under(node, prefix)
        .iter()
        .map(|k| key_name(&k.0))
        .collect()
}

/// Issue 17, restore by reimaging: every machine and every disk of a
/// cluster is gone; a fresh first control plane seeded from a backup
/// (`builder seed --restore-from`, on a config drive) brings back etcd's
/// data with the cluster's identity, drops the nodes that are gone, and
/// the other nodes join again with their usual seeds. A seed made with
/// another cluster's bundle, and a snapshot changed beside its seed, are
/// refused before anything is written.
#[test]
fn a_cluster_is_restored_from_a_backup_by_reimaging() {
    let cluster = Cluster::new();
    let dir = cluster.dir.path().to_owned();
    let cp1 = cluster.node("cp1", Role::ControlPlane, true, &[]);
    cluster.run_agent(&cp1).unwrap();
    let cp2 = cluster.node("cp2", Role::ControlPlane, false, &[cp1.api()]);
    cluster.run_agent(&cp2).unwrap();
    let w1 = cluster.node("w1", Role::Worker, false, &[cp1.api()]);
    cluster.run_agent(&w1).unwrap();
    let root = cp1.root.to_str().unwrap().to_owned();
    write_records(&cp1, 3, 10);
    let registry_before = keys_under(&cp1, "/registry/");
    let substrate_before = names_under(&cp1, "/globular/");
    assert!(
        substrate_before.contains(&"/globular/nodes/w1".to_owned()),
        "{substrate_before:?}"
    );

    let (identity, recipient) = write_identity(&dir, "operator.key");
    let backups = dir.join("backups");
    let archive = create_backup(&root, &backups, "daily", &recipient);
    let old_cert = dir.join("cp2-before.crt");
    std::fs::copy(cp2.layout().node_cert(), &old_cert).unwrap();

    // Every process and every disk is gone.
    kill_all_spawned(&dir);
    for node in [&cp1, &cp2, &w1] {
        std::fs::remove_dir_all(&node.root).unwrap();
    }

    // Refused: a seed made with another cluster's bundle (its CA did not
    // sign this backup); nothing is written, no scratch directory stays.
    let other = Cluster::new();
    let err = other
        .restore_node(&cp1, &archive, &identity, false)
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("signature does not verify"),
        "{err:#}"
    );
    let left: Vec<String> = std::fs::read_dir(other.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("restore") && !n.ends_with(".sysroot"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
    let other_drive = other
        .dir
        .path()
        .join("cp1.restored.sysroot/dev/disk/by-label");
    assert_eq!(std::fs::read_dir(other_drive).unwrap().count(), 0);

    // Refused: a snapshot changed beside its seed; etcd gets no data.
    let tampered = cluster
        .restore_node(&cp1, &archive, &identity, false)
        .unwrap();
    let mut snapshot_file = tampered.seed_path.as_os_str().to_owned();
    snapshot_file.push(".snapshot.db");
    let mut bytes = std::fs::read(&snapshot_file).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x01;
    std::fs::write(&snapshot_file, bytes).unwrap();
    let err = cluster.run_agent(&tampered).unwrap_err();
    assert!(err.contains("SHA-256"), "{err}");
    assert!(!tampered.layout().etcd_data().exists());
    assert!(!tampered.layout().restore_snapshot().exists());

    // The restore, from a config drive.
    let cp1 = cluster
        .restore_node(&cp1, &archive, &identity, true)
        .unwrap();
    cluster.run_agent(&cp1).unwrap();
    assert!(!cp1.layout().restore_snapshot().exists());
    // Kubernetes' objects as they were, revisions included; the nodes that
    // are gone are no longer in the registry.
    assert_eq!(keys_under(&cp1, "/registry/"), registry_before);
    assert_eq!(
        names_under(&cp1, "/globular/nodes/"),
        ["/globular/nodes/cp1"]
    );
    let services = names_under(&cp1, "/globular/services/");
    assert!(
        services.iter().all(|s| !s.ends_with("/cp2")),
        "{services:?}"
    );
    assert!(
        services.contains(&"/globular/services/test.S2/cp1".to_owned()),
        "{services:?}"
    );

    // The other nodes join again with the seeds they had, on fresh disks:
    // the substrate's keys are those of before.
    cluster.run_agent(&cp2).unwrap();
    cluster.run_agent(&w1).unwrap();
    assert_eq!(names_under(&cp1, "/globular/"), substrate_before);
    let members = etcdctl(&cp1, &cp1.etcd_url(), &["member", "list"]);
    assert_eq!(members.lines().count(), 2, "{members}");
    // A certificate issued before the disaster still verifies.
    crate::harness::openssl_verify(&cluster.bundle_dir().join("ca.crt"), &old_cert);
}

/// A real S3-compatible object store on loopback (the Versity S3 gateway,
/// components/versitygw) serving HTTPS with a certificate of its own CA,
/// killed when dropped.
struct ObjectStore {
    child: Child,
    endpoint: String,
    ca_pem: String,
    /// The posix backend's root: a bucket is a directory.
    root: PathBuf,
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ObjectStore {
    fn start(dir: &Path, bucket: &str) -> ObjectStore {
        let ca = globular_cluster::pki::Ca::generate("object-store").unwrap();
        let (issued, key) = ca
            .issue_with_new_key(&globular_cluster::pki::LeafSpec {
                common_name: "s3".into(),
                role: None,
                group: None,
                dns_names: vec!["localhost".into()],
                ips: vec![[127, 0, 0, 1].into()],
                server: true,
                client: false,
                validity: None,
            })
            .unwrap();
        let (cert_file, key_file) = (dir.join("s3.crt"), dir.join("s3.key"));
        std::fs::write(&cert_file, &issued.cert_pem).unwrap();
        std::fs::write(&key_file, key).unwrap();
        let root = dir.join("s3-data");
        std::fs::create_dir_all(root.join(bucket)).unwrap();
        let port = free_port();
        let child = Task::new("starting the object store", "versitygw")
            .arg("--port")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--cert")
            .arg(&cert_file)
            .arg("--key")
            .arg(&key_file)
            .args([
                "--access",
                "backup-writer",
                "--secret",
                "s3cret-key-for-tests",
                "--quiet",
            ])
            .arg("posix")
            .arg(&root)
            .spawn_logged(&dir.join("s3.log"))
            .unwrap();
        crate::harness::wait_listening(("127.0.0.1", port), "the object store");
        ObjectStore {
            child,
            endpoint: format!("https://127.0.0.1:{port}"),
            ca_pem: ca.cert_pem().to_owned(),
            root,
        }
    }
}

/// The `.gbackup` files in a directory, sorted.
fn archives_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".gbackup"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Issue 17, scheduled backups off the cluster: the backup policy of the
/// bundle reaches the control plane's seed; `globular backup run` takes a
/// backup when one is due (not twice in an interval), keeps `keep` of them
/// here, in a directory and in a real S3 bucket over TLS to a pinned CA,
/// each copy checked by its SHA-256, and records it in the registry; a
/// store that is down is retried, reported, and the run fails.
#[test]
fn scheduled_backups_are_copied_to_a_directory_and_an_object_store() {
    let work = tempfile::tempdir().unwrap();
    let store = ObjectStore::start(work.path(), "globular-backups");
    let copies = work.path().join("usb-disk");
    std::fs::create_dir_all(&copies).unwrap();
    let operator = age::x25519::Identity::generate();
    let policy = globular_cluster::backup::policy::Policy::parse(
        &format!(
            "interval: 1h\nkeep: 2\nmax_age: 7d\ntargets:\n  - directory: {}\n  - s3:\n      endpoint: {}\n      bucket: globular-backups\n      prefix: prod/\n      access_key_id: backup-writer\n      secret_access_key: s3cret-key-for-tests\n      ca: {}\n",
            copies.display(),
            store.endpoint,
            serde_json::to_string(&store.ca_pem).unwrap(),
        ),
        "test policy",
    )
    .unwrap();
    let cluster = Cluster::new_with(&globular_cluster::secrets::ClusterExtras {
        backup_recipients: vec![operator.to_public().to_string()],
        backup_policy: Some(policy),
        ..Default::default()
    });
    // The bundle keeps the policy (with its credentials) 0600.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(cluster.bundle_dir().join("backup.yaml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let cp1 = cluster.node("cp1", Role::ControlPlane, true, &[]);
    assert!(cp1.seed.backup.is_some());
    cluster.run_agent(&cp1).unwrap();
    let w1 = cluster.node("w1", Role::Worker, false, &[cp1.api()]);
    assert!(
        w1.seed.backup.is_none(),
        "a worker's seed has no backup policy"
    );
    let root = cp1.root.to_str().unwrap().to_owned();
    let local = cluster.dir.path().join("backups");
    let run = |force: bool| {
        let mut args = vec![
            "backup",
            "run",
            "--root",
            &root,
            "--dir",
            local.to_str().unwrap(),
        ];
        if force {
            args.push("--force");
        }
        globular(&args)
    };

    let status: Value = serde_json::from_str(&run(false).unwrap()).unwrap();
    let name = status["name"].as_str().unwrap().to_owned();
    let sha256 = status["sha256"].as_str().unwrap().to_owned();
    assert_eq!(status["copies"][0]["ok"], true, "{status}");
    assert_eq!(status["copies"][1]["ok"], true, "{status}");
    assert_eq!(status["copies"][1]["attempts"], 1, "{status}");
    let file = format!("{name}.gbackup");
    // Every copy is the archive, byte for byte.
    let bucket_copy = store.root.join("globular-backups/prod").join(&file);
    for copy in [copies.join(&file), bucket_copy.clone()] {
        let (hash, _) = globular_cluster::backup::hash_file(&copy).unwrap();
        assert_eq!(hash, sha256, "{}", copy.display());
    }
    assert!(store
        .root
        .join("globular-backups/prod")
        .join(format!("{file}.sha256"))
        .exists());
    // The registry has it; the next run within the interval takes none.
    let recorded: Value =
        serde_json::from_str(&globular(&["backup", "status", "--root", &root]).unwrap()).unwrap();
    assert_eq!(recorded, status);
    assert_eq!(run(false).unwrap().trim(), "");
    assert_eq!(archives_in(&local).len(), 1);

    // Forced runs (before an upgrade): each place keeps the newest two.
    for _ in 0..2 {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        run(true).unwrap();
    }
    assert_eq!(archives_in(&local).len(), 2);
    assert_eq!(archives_in(&copies).len(), 2);
    assert_eq!(
        archives_in(&store.root.join("globular-backups/prod")).len(),
        2
    );
    assert!(
        !bucket_copy.exists(),
        "the oldest copy was pruned from the bucket"
    );

    // The store is down: the copy is tried again, reported in the registry,
    // and the run fails; the directory copy is made all the same.
    drop(store);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let err = run(true).unwrap_err();
    assert!(
        err.contains("copies failed") && err.contains("s3 https://127.0.0.1"),
        "{err}"
    );
    let recorded: Value =
        serde_json::from_str(&globular(&["backup", "status", "--root", &root]).unwrap()).unwrap();
    assert_eq!(recorded["copies"][0]["ok"], true, "{recorded}");
    assert_eq!(recorded["copies"][1]["ok"], false, "{recorded}");
    assert!(
        recorded["copies"][1]["attempts"].as_u64().unwrap() >= 3,
        "{recorded}"
    );
    assert_eq!(archives_in(&copies).len(), 2);
}

/// Issue 17: backups taken while nodes enroll hold whole records: in each
/// restored snapshot every node record's addresses are owned by it and
/// every address owner has its record (an enrollment is one transaction;
/// etcd's snapshot is of one revision).
#[test]
fn backups_taken_while_nodes_enroll_hold_whole_records() {
    let mut cluster = Cluster::new();
    let dir = cluster.dir.path().to_owned();
    let cp1 = cluster.node("cp1", Role::ControlPlane, true, &[]);
    cluster.run_agent(&cp1).unwrap();
    let root = cp1.root.to_str().unwrap().to_owned();
    let (identity, recipient) = write_identity(&dir, "operator.key");
    let backups = dir.join("backups");
    let workers: Vec<Node> = (1..=6)
        .map(|i| cluster.node(&format!("w{i}"), Role::Worker, false, &[cp1.api()]))
        .collect();
    let mut archives = Vec::new();
    let take = |name: String, archives: &mut Vec<PathBuf>| {
        archives.push(create_backup(&root, &backups, &name, &recipient));
    };
    // Each worker's agent starts, and a backup is taken while it enrolls.
    let mut agents = Vec::new();
    for (i, worker) in workers.iter().enumerate() {
        agents.push(cluster.start_agent(worker));
        take(format!("during-{i}"), &mut archives);
    }
    for (agent, worker) in agents.into_iter().zip(&workers) {
        cluster.wait_agent(agent, worker);
    }
    take("after".into(), &mut archives);

    let password = std::fs::read_to_string(cp1.layout().etcd_password()).unwrap();
    let ca = cluster.bundle_dir().join("ca.crt");
    let mut enrolled = Vec::new();
    for archive in &archives {
        let (keys, _) = restored_keys(&dir, archive, &identity, &ca, &password);
        let value = |k: &(String, i64, i64, i64, String)| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(&k.4)
                .unwrap()
        };
        let mut nodes = std::collections::BTreeMap::new();
        let mut owners = std::collections::BTreeMap::new();
        for k in &keys {
            let name = key_name(&k.0);
            if let Some(node) = name.strip_prefix("/globular/nodes/") {
                let record: Value = serde_json::from_slice(&value(k)).unwrap();
                nodes.insert(node.to_owned(), record);
            } else if let Some(ip) = name.strip_prefix("/globular/addresses/") {
                owners.insert(ip.to_owned(), String::from_utf8(value(k)).unwrap());
            }
        }
        for (node, record) in &nodes {
            for address in record["addresses"].as_array().unwrap() {
                let ip = address.as_str().unwrap().split('/').next().unwrap();
                assert_eq!(
                    owners.get(ip),
                    Some(node),
                    "{}: {node}'s address {ip} has no owner record",
                    archive.display()
                );
            }
        }
        for (ip, owner) in &owners {
            assert!(
                nodes.contains_key(owner),
                "{}: {ip} is owned by {owner}, which has no record",
                archive.display()
            );
        }
        enrolled.push(nodes.len() - 1);
    }
    // The last backup, after every agent finished, has every worker.
    assert_eq!(enrolled.last(), Some(&workers.len()), "{enrolled:?}");
    // Workers only join: a later backup never holds fewer.
    assert!(enrolled.windows(2).all(|w| w[0] <= w[1]), "{enrolled:?}");
}
