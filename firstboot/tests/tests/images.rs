//! `globular image import` into a real containerd (Debian's 1.6, as the
//! worker image has it, on a socket and directories of the test's own):
//! an OCI archive written by the builder's `Format=oci` code is imported
//! into the CRI namespace and runs; archives that are not OCI images are
//! refused with their file named, and nothing is imported.

use std::path::Path;
use std::time::{Duration, Instant};

use globular_task::Task;

use crate::harness::{KillOnDrop, AGENT};

/// containerd on `dir/containerd.sock`, its state under `dir`, without
/// its CRI plugin (the test talks to it with ctr).
fn containerd(dir: &Path) -> KillOnDrop {
    let config = dir.join("containerd.toml");
    let socket = dir.join("containerd.sock");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = socket.display(),
        ),
    )
    .unwrap();
    let child: KillOnDrop = Task::new("containerd", "containerd")
        .arg("--config")
        .arg(&config)
        .spawn_logged(&dir.join("containerd.log"))
        .unwrap()
        .into();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ctr(dir, &["version"]).is_err() {
        assert!(
            Instant::now() < deadline,
            "containerd did not answer: {}",
            std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    child
}

fn ctr(dir: &Path, args: &[&str]) -> Result<String, globular_task::TaskError> {
    Task::new("ctr", "ctr")
        .arg("--address")
        .arg(dir.join("containerd.sock"))
        .args(["--namespace", "k8s.io"])
        .args(args)
        .read_string()
}

fn import(dir: &Path, args: &[&Path]) -> std::process::Output {
    let mut cmd = std::process::Command::new(AGENT);
    cmd.args(["image", "import", "--address"])
        .arg(dir.join("containerd.sock"));
    for a in args {
        cmd.arg(a);
    }
    cmd.output().unwrap()
}

#[test]
fn an_oci_archive_is_imported_into_containerd_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A tree with a static busybox (Debian's busybox-static).
    let tree = d.join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", tree.join("bin/busybox")).unwrap();
    std::fs::write(tree.join("etc/motd"), "from a builder-made image\n").unwrap();
    let work = d.join("work");
    std::fs::create_dir(&work).unwrap();
    let archive = d.join("tiny_1.oci.tar");
    builder::output::oci::write(
        &tree,
        &archive,
        &work,
        "gzip",
        1_700_000_000,
        &builder::output::oci::ImageRef {
            name: "tiny",
            version: "1",
            dpkg_architecture: "amd64",
            entrypoint: &[],
        },
    )
    .unwrap();

    let _containerd = containerd(d);

    // Not OCI archives: refused by name before anything is imported.
    let plain = d.join("plain.oci.tar");
    Task::new("a plain tar", "tar")
        .arg("-cf")
        .arg(&plain)
        .arg("-C")
        .arg(&tree)
        .arg("etc")
        .run()
        .unwrap();
    let junk = d.join("junk.oci.tar");
    std::fs::write(&junk, "not a tar archive at all").unwrap();
    for bad in [&plain, &junk] {
        let out = import(d, &[&archive, bad]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(&bad.display().to_string()), "{stderr}");
    }
    assert_eq!(ctr(d, &["images", "ls", "-q"]).unwrap().trim(), "");

    // Imported into the CRI namespace under the name the builder gave it.
    let out = import(d, &[&archive]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("imported localhost/tiny:1 ("),
        "{stdout}"
    );
    let images = ctr(d, &["images", "ls", "-q"]).unwrap();
    assert_eq!(images.trim(), "localhost/tiny:1");

    // `--dir`, as globular-images.service runs it at boot: every archive
    // there, again (an import of what containerd has is no error).
    let boot_dir = d.join("images");
    std::fs::create_dir(&boot_dir).unwrap();
    std::fs::copy(&archive, boot_dir.join("tiny_1.oci.tar")).unwrap();
    let out = Task::new("globular image import --dir", AGENT)
        .args(["image", "import", "--address"])
        .arg(d.join("containerd.sock"))
        .arg("--dir")
        .arg(&boot_dir)
        .read_string()
        .unwrap();
    assert!(out.contains("imported localhost/tiny:1"), "{out}");

    // It runs: the layer was unpacked into a snapshot a container starts
    // from.
    let ran = ctr(
        d,
        &[
            "run",
            "--rm",
            "localhost/tiny:1",
            "tiny-test",
            "/bin/busybox",
            "cat",
            "/etc/motd",
        ],
    )
    .unwrap();
    assert_eq!(ran.trim(), "from a builder-made image");
}
