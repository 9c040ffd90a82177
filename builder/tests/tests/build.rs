//! `builder build` on a small real tree (mmdebstrap minbase + a few packages):
//! outputs, reproducibility, caching, pinned artifacts, refusals and
//! interrupted builds. The package stage is cached in one directory shared by
//! these tests, so the suite pays for mmdebstrap about twice.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use globular_task::Task;

use crate::common::workspace;

/// The cache shared by every build test (kept for the whole test run).
pub(crate) fn cache_dir() -> &'static Path {
    static CACHE: OnceLock<tempfile::TempDir> = OnceLock::new();
    CACHE.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// A private copy of the `mini` fixture profile, safe to modify.
pub(crate) fn mini() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/build/mini");
    Task::new("copying the fixture", "cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dir.path())
        .run()
        .unwrap();
    dir
}

fn build_command(profile: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_builder"));
    cmd.arg("build")
        .arg("--directory")
        .arg(profile)
        .arg("--output-dir")
        .arg(out)
        .arg("--cache-dir")
        .arg(cache_dir())
        .args(["--version", "1.0"])
        .args(extra)
        .current_dir(workspace())
        .env_remove("SOURCE_DATE_EPOCH")
        .env("RUST_LOG", "info");
    cmd
}

pub(crate) fn build(profile: &Path, out: &Path, extra: &[&str]) -> Output {
    build_command(profile, out, extra)
        .output()
        .expect("running builder")
}

pub(crate) fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build failed: {stderr}");
    stderr
}

pub(crate) fn failed(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "expected failure: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Names in `dir`, sorted.
pub(crate) fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The package-stage cache key recorded in an output's manifest.
fn stage_key(out: &Path) -> String {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("mini_1.0.manifest.json")).unwrap())
            .unwrap();
    manifest["package_stage"]["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

// Other tests add cache entries concurrently: assertions name the entry of
// the build under test (its key, from its manifest) rather than the listing.
fn rootfs_entries() -> Vec<String> {
    listing(&cache_dir().join("rootfs"))
        .into_iter()
        .filter(|n| !n.contains('.'))
        .collect()
}

#[test]
fn tar_output_is_reproducible_with_manifest_sbom_and_checksums() {
    let profile = mini();
    let out1 = tempfile::tempdir().unwrap();
    let out2 = tempfile::tempdir().unwrap();
    ok(&build(profile.path(), out1.path(), &[]));
    let stderr = ok(&build(profile.path(), out2.path(), &[]));
    assert!(stderr.contains("reused from the cache"), "{stderr}");
    assert_eq!(
        listing(out1.path()),
        [
            "mini_1.0.SHA256SUMS",
            "mini_1.0.manifest.json",
            "mini_1.0.spdx.json",
            "mini_1.0.tar.zst"
        ]
    );
    for name in listing(out1.path()) {
        assert_eq!(
            std::fs::read(out1.path().join(&name)).unwrap(),
            std::fs::read(out2.path().join(&name)).unwrap(),
            "{name} differs between two builds"
        );
    }
    Task::new("checking sums", "sha256sum")
        .args(["-c", "mini_1.0.SHA256SUMS"])
        .current_dir(out1.path())
        .run()
        .unwrap();

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out1.path().join("mini_1.0.manifest.json")).unwrap())
            .unwrap();
    let packages = manifest["packages"].as_array().unwrap();
    let tzdata = packages
        .iter()
        .find(|p| p["name"] == "tzdata")
        .expect("tzdata listed");
    assert!(!tzdata["version"].as_str().unwrap().is_empty());
    assert_eq!(manifest["image"]["version"], "1.0");
    assert_eq!(manifest["outputs"][0]["file"], "mini_1.0.tar.zst");
    let sbom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out1.path().join("mini_1.0.spdx.json")).unwrap())
            .unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    assert_eq!(
        sbom["packages"].as_array().unwrap().len(),
        packages.len() + 1
    );

    // The tree: overlay template rendered, postinst ran, settings applied,
    // no build-host traces.
    let list = Task::new("listing", "tar")
        .args(["--zstd", "-tvf"])
        .arg(out1.path().join("mini_1.0.tar.zst"))
        .read_string()
        .unwrap();
    for expected in [
        "etc/globular/image",
        "etc/postinst-ran",
        "usr/share/mini/build-output",
        "etc/hostname",
        "etc/localtime -> ../usr/share/zoneinfo/Etc/UTC",
    ] {
        assert!(list.contains(expected), "{expected} missing");
    }
    assert!(!list.contains("etc/resolv.conf"), "host resolv.conf leaked");
    assert!(!list.contains("var/lib/apt/lists/deb"), "apt lists leaked");
    assert!(list
        .lines()
        .all(|l| !l.contains("var/log/") || l.starts_with('d')));
    let extract = tempfile::tempdir().unwrap();
    Task::new("extracting", "tar")
        .args(["--zstd", "-xf"])
        .arg(out1.path().join("mini_1.0.tar.zst"))
        .args(["-C"])
        .arg(extract.path())
        .args(["etc/globular/image", "etc/hostname"])
        .run()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(extract.path().join("etc/globular/image")).unwrap(),
        "id=mini version=1.0 release=bookworm\n"
    );
    assert_eq!(
        std::fs::read_to_string(extract.path().join("etc/hostname")).unwrap(),
        "mini\n"
    );
}

#[test]
fn every_tree_format_is_readable_by_its_tool() {
    let profile = mini();
    let out = tempfile::tempdir().unwrap();
    for format in ["cpio", "erofs", "squashfs", "directory"] {
        ok(&build(
            profile.path(),
            out.path(),
            &["--format", format, "--quiet"],
        ));
        // The manifest names the program (and version) that wrote a
        // filesystem image; the builder writes the others itself.
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.path().join("mini_1.0.manifest.json")).unwrap(),
        )
        .unwrap();
        let tools = &manifest["tools"];
        match format {
            "erofs" => assert!(
                tools["mkfs.erofs"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("mkfs.erofs")),
                "{tools}"
            ),
            "squashfs" => assert!(
                tools["mksquashfs"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("mksquashfs version")),
                "{tools}"
            ),
            _ => assert!(tools.is_null(), "{format}: {tools}"),
        }
    }
    let cpio = Task::new("listing cpio", "sh")
        .arg("-c")
        .arg(format!(
            "zstd -dc {}/mini_1.0.cpio.zst | cpio -it --quiet",
            out.path().display()
        ))
        .read_string()
        .unwrap();
    assert!(cpio.lines().any(|l| l == "etc/hostname"), "{cpio}");
    Task::new("checking erofs", "fsck.erofs")
        .arg(out.path().join("mini_1.0.erofs"))
        .run()
        .unwrap();
    let squash = Task::new("listing squashfs", "unsquashfs")
        .args(["-l", "-d", "/r"])
        .arg(out.path().join("mini_1.0.squashfs"))
        .read_string()
        .unwrap();
    assert!(squash.contains("/r/etc/postinst-ran"), "{squash}");
    assert!(out.path().join("mini_1.0/etc/postinst-ran").is_file());
    // Re-building a directory output replaces it.
    ok(&build(
        profile.path(),
        out.path(),
        &["--format", "directory", "--quiet"],
    ));
    assert!(listing(out.path())
        .iter()
        .all(|n| !n.starts_with(".builder")));
}

/// `Format=oci`: an OCI archive a real OCI client (skopeo) reads and
/// copies, verifying every blob's digest: one layer holding the tree, the
/// tree's architecture, the name containerd imports it under; the same
/// inputs give the same bytes.
#[test]
fn oci_output_is_an_image_an_oci_client_reads() {
    let profile = mini();
    let out = tempfile::tempdir().unwrap();
    ok(&build(
        profile.path(),
        out.path(),
        &["--format", "oci", "--quiet"],
    ));
    let archive = out.path().join("mini_1.0.oci.tar");
    let first = std::fs::read(&archive).unwrap();
    let inspect = Task::new("skopeo inspect", "skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", archive.display()))
        .read_string()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        1,
        "{manifest}"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let config = Task::new("skopeo inspect --config", "skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci-archive:{}", archive.display()))
        .read_string()
        .unwrap();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["architecture"], "amd64", "{config}");
    assert_eq!(config["os"], "linux", "{config}");
    // Copied into a layout directory: skopeo checks each blob's digest.
    let copy = out.path().join("copy");
    Task::new("skopeo copy", "skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("oci:{}:1.0", copy.display()))
        .run()
        .unwrap();
    // The layer is the tree.
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let files = Task::new("listing the layer", "tar")
        .arg("-tzf")
        .arg(copy.join("blobs/sha256").join(&layer))
        .read_string()
        .unwrap();
    assert!(files.lines().any(|l| l == "etc/hostname"), "{files}");
    // containerd's name for it, in the index.
    assert_names(&archive, "localhost/mini:1.0");
    // Reproducible.
    ok(&build(
        profile.path(),
        out.path(),
        &["--format", "oci", "--quiet"],
    ));
    assert!(
        std::fs::read(&archive).unwrap() == first,
        "a second build differs"
    );
}

#[test]
fn overlay_change_reuses_the_package_stage_and_package_change_does_not() {
    let profile = mini();
    // Without post-installation scripts the work tree shares files with the
    // cache through hard links: overwriting files must not reach the cache.
    std::fs::remove_file(profile.path().join("mkosi.postinst")).unwrap();
    let out = tempfile::tempdir().unwrap();
    ok(&build(profile.path(), out.path(), &[]));
    let key = stage_key(out.path());
    let cached = cache_dir().join("rootfs").join(&key).join("tree");
    let cached_digest = builder::digest::tree(&cached).unwrap();
    std::fs::write(profile.path().join("mkosi.extra/etc/motd"), "changed\n").unwrap();
    std::fs::write(
        profile.path().join("mkosi.extra/etc/debian_version"),
        "overlaid\n",
    )
    .unwrap();
    let stderr = ok(&build(profile.path(), out.path(), &[]));
    assert!(stderr.contains("reused from the cache"), "{stderr}");
    assert_eq!(stage_key(out.path()), key);
    assert_eq!(
        builder::digest::tree(&cached).unwrap(),
        cached_digest,
        "the build wrote into the cache"
    );
    let list = Task::new("listing", "tar")
        .args(["--zstd", "-xOf"])
        .arg(out.path().join("mini_1.0.tar.zst"))
        .arg("etc/debian_version")
        .read_string()
        .unwrap();
    assert_eq!(list, "overlaid\n");

    let conf = profile.path().join("mkosi.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace("    tzdata\n", "    tzdata\n    less\n"),
    )
    .unwrap();
    let stderr = ok(&build(profile.path(), out.path(), &["--quiet"]));
    assert!(!stderr.contains("reused from the cache"), "{stderr}");
    let new_key = stage_key(out.path());
    assert_ne!(new_key, key);
    assert!(rootfs_entries().contains(&key) && rootfs_entries().contains(&new_key));
}

/// The work tree over the cached package stage is an overlayfs mount by
/// default and a copy with `--work-tree copy`: a post-installation script
/// that writes package files in place (append, chmod) changes neither
/// cache entry, and both ways give byte-identical outputs (issue 21: the
/// faster code builds what the slower code built).
#[test]
fn overlay_and_copied_work_trees_build_identical_images_and_spare_the_cache() {
    let profile = mini();
    let postinst = profile.path().join("mkosi.postinst");
    let mut text = std::fs::read_to_string(&postinst).unwrap();
    text.push_str("echo appended >> \"$BUILDROOT/etc/debian_version\"\n");
    text.push_str("chmod 0600 \"$BUILDROOT/etc/services\"\n");
    std::fs::write(&postinst, text).unwrap();
    let copied = tempfile::tempdir().unwrap();
    let overlaid = tempfile::tempdir().unwrap();
    for format in ["erofs", "tar"] {
        let stderr = ok(&build(
            profile.path(),
            copied.path(),
            &["--format", format, "--work-tree", "copy"],
        ));
        assert!(stderr.contains("work tree: copy"), "{stderr}");
    }
    let key = stage_key(copied.path());
    let cached = cache_dir().join("rootfs").join(&key).join("tree");
    let before = builder::digest::tree(&cached).unwrap();
    for format in ["erofs", "tar"] {
        let stderr = ok(&build(
            profile.path(),
            overlaid.path(),
            &["--format", format],
        ));
        assert!(stderr.contains("work tree: overlay"), "{stderr}");
    }
    assert_eq!(stage_key(overlaid.path()), key);
    assert_eq!(
        builder::digest::tree(&cached).unwrap(),
        before,
        "the post-installation script wrote into the cache"
    );
    let names = listing(copied.path());
    assert_eq!(names, listing(overlaid.path()));
    assert!(names.contains(&"mini_1.0.erofs".to_owned()), "{names:?}");
    for name in &names {
        assert_eq!(
            std::fs::read(copied.path().join(name)).unwrap(),
            std::fs::read(overlaid.path().join(name)).unwrap(),
            "{name} differs between a copied and an overlaid work tree"
        );
    }
    let version = Task::new("reading the image", "tar")
        .args(["--zstd", "-xOf"])
        .arg(overlaid.path().join("mini_1.0.tar.zst"))
        .arg("etc/debian_version")
        .read_string()
        .unwrap();
    assert!(version.ends_with("appended\n"), "{version:?}");
    assert!(!std::fs::read_to_string(cached.join("etc/debian_version"))
        .unwrap()
        .contains("appended"));
    // The script wrote the file just now; finalize no longer clamps the
    // tree's times (issue 21), so the writers must: tar clamps each entry,
    // mkfs.erofs -T gives every inode SOURCE_DATE_EPOCH.
    let listing = Task::new("listing the image", "tar")
        .env("TZ", "UTC")
        .args(["--zstd", "--full-time", "-tvf"])
        .arg(overlaid.path().join("mini_1.0.tar.zst"))
        .arg("etc/debian_version")
        .read_string()
        .unwrap();
    assert!(listing.contains(" 2024-01-01 00:00:00 "), "{listing}");
    let inode = Task::new("reading the erofs image", "dump.erofs")
        .arg("--path=/etc/debian_version")
        .arg(overlaid.path().join("mini_1.0.erofs"))
        .read_string()
        .unwrap();
    assert!(inode.contains("Timestamp: 2024-01-01 00:00:00"), "{inode}");
}

#[test]
fn artifact_mismatch_stops_before_anything_is_written() {
    let profile = mini();
    let out = tempfile::tempdir().unwrap();
    let kubectl =
        globular_task::which("kubectl").expect("kubectl is installed (scripts/install-deps.sh)");
    let kubectl = kubectl.as_path();
    let sha = builder::digest::file(kubectl).unwrap();
    let lock = profile.path().join("artifacts.toml");
    let entry = |sha: &str| {
        format!(
            "[[artifact]]\nname = \"kubectl\"\npath = \"{}\"\nsha256 = \"{sha}\"\ninstall = \"/usr/local/bin/kubectl\"\nmode = \"0755\"\n",
            kubectl.display()
        )
    };
    std::fs::write(&lock, entry(&sha)).unwrap();
    ok(&build(
        profile.path(),
        out.path(),
        &["--quiet", "--format", "directory"],
    ));
    let installed = out.path().join("mini_1.0/usr/local/bin/kubectl");
    assert_eq!(builder::digest::file(&installed).unwrap(), sha);
    let manifest = std::fs::read_to_string(out.path().join("mini_1.0.manifest.json")).unwrap();
    assert!(manifest.contains(&sha));

    let empty = tempfile::tempdir().unwrap();
    let wrong = sha.replace(|c: char| c.is_ascii_digit(), "0");
    std::fs::write(&lock, entry(&wrong)).unwrap();
    let stderr = failed(&build(profile.path(), empty.path(), &["--quiet"]));
    assert!(stderr.contains("sha256 mismatch"), "{stderr}");
    assert!(stderr.contains("kubectl"), "{stderr}");
    assert!(
        listing(empty.path()).is_empty(),
        "{:?}",
        listing(empty.path())
    );
}

#[test]
fn overlay_escaping_the_tree_is_refused() {
    let profile = mini();
    let out = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        "../../../../../../etc/shadow",
        profile.path().join("mkosi.extra/etc/leak"),
    )
    .unwrap();
    let stderr = failed(&build(profile.path(), out.path(), &["--quiet"]));
    assert!(stderr.contains("etc/leak"), "{stderr}");
    assert!(stderr.contains("escapes"), "{stderr}");
    assert!(listing(out.path()).is_empty());
}

#[test]
fn failing_build_script_stops_the_build_and_its_output_changes_the_image() {
    let profile = mini();
    let out = tempfile::tempdir().unwrap();
    ok(&build(profile.path(), out.path(), &["--quiet"]));
    let manifest = |dir: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("mini_1.0.manifest.json")).unwrap()).unwrap()
    };
    let before = manifest(out.path())["inputs_digest"].clone();
    assert!(before.is_string(), "{before}");

    // A build script installing something else: a different image.
    let script = profile.path().join("mkosi.build");
    let text = std::fs::read_to_string(&script).unwrap();
    std::fs::write(&script, text.replace("built by", "rebuilt by")).unwrap();
    let changed = tempfile::tempdir().unwrap();
    ok(&build(profile.path(), changed.path(), &["--quiet"]));
    assert_ne!(manifest(changed.path())["inputs_digest"], before);

    // BuildDirectory= is $BUILDDIR and outlives the build (incremental
    // builds): a counter kept there counts both builds.
    let conf = profile.path().join("mkosi.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\n[Build]\nBuildDirectory=build-cache\n");
    std::fs::write(&conf, text).unwrap();
    let counter = "n=$(cat \"$BUILDDIR/count\" 2>/dev/null || echo 0); echo $((n + 1)) > \"$BUILDDIR/count\"\n";
    let text = std::fs::read_to_string(&script).unwrap();
    std::fs::write(&script, format!("{text}{counter}")).unwrap();
    for _ in 0..2 {
        let again = tempfile::tempdir().unwrap();
        ok(&build(profile.path(), again.path(), &["--quiet"]));
    }
    let count = std::fs::read_to_string(profile.path().join("build-cache/count")).unwrap();
    assert_eq!(count.trim(), "2");

    // A failing build script: named, and nothing is published.
    std::fs::write(&script, "#!/bin/sh\necho compiler exploded >&2\nexit 3\n").unwrap();
    let failed_out = tempfile::tempdir().unwrap();
    let stderr = failed(&build(profile.path(), failed_out.path(), &["--quiet"]));
    assert!(stderr.contains("BuildScripts="), "{stderr}");
    assert!(stderr.contains("mkosi.build"), "{stderr}");
    assert!(listing(failed_out.path()).is_empty());
}

#[test]
fn missing_tool_is_named_with_its_package() {
    let profile = mini();
    let out = tempfile::tempdir().unwrap();
    let output = build_command(profile.path(), out.path(), &["--format", "erofs"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let stderr = failed(&output);
    assert!(stderr.contains("erofs-utils"), "{stderr}");
}

/// Kill the build at a point in the package stage, then check that nothing is
/// published and no cache entry is trusted, and that the next build works.
fn interrupted(signal: &str) {
    let profile = mini();
    let out = tempfile::tempdir().unwrap();
    let conf = profile.path().join("mkosi.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    // A package set no other test uses, so this build runs mmdebstrap.
    let extra = if signal == "INT" { "file" } else { "bzip2" };
    std::fs::write(
        &conf,
        text.replace("    tzdata\n", &format!("    tzdata\n    {extra}\n")),
    )
    .unwrap();
    let mut child = build_command(profile.path(), out.path(), &["--quiet"])
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    // Wait until mmdebstrap is busy writing the cache entry.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // Its entry is built in KEY.tmp-PID (PID of this builder).
        let suffix = format!(".tmp-{}", child.id());
        let busy = listing(&cache_dir().join("rootfs")).iter().any(|n| {
            n.ends_with(&suffix) && cache_dir().join("rootfs").join(n).join("tree/usr").exists()
        });
        if busy {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the build never reached the package stage"
        );
        assert!(child.try_wait().unwrap().is_none(), "the build ended early");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Signal the whole process group, as a terminal's Ctrl-C (or kill -9 of the
    // builder, whose children then die with it here) would.
    Task::new("interrupting the build", "kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{}", child.id()))
        .run()
        .unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let after_interruption = rootfs_entries();
    assert!(
        listing(out.path())
            .iter()
            .all(|n| n.starts_with(".builder-staging")),
        "{:?}",
        listing(out.path())
    );
    // The next build cleans up and succeeds, building the entry anew: the
    // interrupted build left none under its key.
    let stderr = ok(&build(profile.path(), out.path(), &["--quiet"]));
    assert!(listing(out.path()).contains(&"mini_1.0.tar.zst".to_owned()));
    assert!(!stderr.contains("reused from the cache"), "{stderr}");
    let key = stage_key(out.path());
    assert!(
        !after_interruption.contains(&key),
        "an interrupted build left a cache entry"
    );
}

#[test]
fn sigint_during_the_package_stage_leaves_nothing_trusted() {
    interrupted("INT");
}

#[test]
fn kill_9_during_the_package_stage_leaves_nothing_trusted() {
    interrupted("KILL");
}

#[test]
fn write_failure_leaves_no_output_and_a_sound_cache() {
    let profile = mini();
    let out = tempfile::tempdir().unwrap();
    ok(&build(profile.path(), out.path(), &["--quiet"]));
    let key = stage_key(out.path());
    let full = tempfile::tempdir().unwrap();
    // A file size limit makes every write past 20 MiB fail (EFBIG), as a full
    // disk would (ENOSPC) once the cached tree is being copied and written.
    let builder = env!("CARGO_BIN_EXE_builder");
    let script = format!(
        "trap '' XFSZ; ulimit -f 20480; exec {builder} build --directory {} --output-dir {} --cache-dir {} --version 1.0 --quiet --format cpio",
        profile.path().display(),
        full.path().display(),
        cache_dir().display()
    );
    let output = Command::new("bash").arg("-c").arg(script).output().unwrap();
    let stderr = failed(&output);
    assert!(stderr.contains("error:"), "{stderr}");
    assert!(
        listing(full.path()).is_empty(),
        "{:?}",
        listing(full.path())
    );
    assert!(rootfs_entries().contains(&key));
    // The cache still serves a good build.
    let stderr = ok(&build(profile.path(), full.path(), &["--quiet"]));
    assert!(stderr.contains("reused from the cache"), "{stderr}");
    assert_eq!(stage_key(full.path()), key);
}

/// Asserts that the OCI archive's index names the image `name` for
/// containerd.
fn assert_names(archive: &Path, name: &str) {
    let index = Task::new("reading index.json", "tar")
        .arg("-xOf")
        .arg(archive)
        .arg("index.json")
        .read_string()
        .unwrap();
    let want = format!(r#""io.containerd.image.name":"{name}""#);
    assert!(index.contains(&want), "{index}");
}

/// `[[image]]` in the lock file: a container image built from its own
/// profile (`Format=oci`, with `OciEntrypoint=`) at the carrying image's
/// version and installed as its archive, built again only when one of its
/// inputs changed; a profile whose lock file would carry the image again is
/// refused.
#[test]
fn an_image_carries_a_container_image_built_from_its_profile() {
    let dir = tempfile::tempdir().unwrap();
    let copy = |name: &str| {
        let profile = mini();
        let to = dir.path().join(name);
        Task::new("moving the profile", "cp")
            .arg("-a")
            .arg(profile.path())
            .arg(&to)
            .run()
            .unwrap();
        to
    };
    let main = copy("main");
    let boxed = copy("box");
    std::fs::create_dir_all(boxed.join("mkosi.conf.d")).unwrap();
    std::fs::write(
        boxed.join("mkosi.conf.d/90-oci.conf"),
        "[Output]\nImageId=box\nOciEntrypoint=/usr/bin/env true\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("artifacts.toml"),
        "[[image]]\nname = \"box\"\nprofile = \"box\"\ninstall = \"/usr/share/images/box.oci.tar\"\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();

    // box/ finds ../artifacts.toml, which lists box again: refused.
    let stderr = failed(&build(&main, out.path(), &["--format", "directory"]));
    assert!(
        stderr.contains("lists images too") && stderr.contains("image \"box\""),
        "{stderr}"
    );

    std::fs::write(boxed.join("artifacts.toml"), "# none\n").unwrap();
    ok(&build(&main, out.path(), &["--format", "directory"]));
    let archive = out.path().join("mini_1.0/usr/share/images/box.oci.tar");
    assert_entrypoint(&archive, &["/usr/bin/env", "true"]);
    assert_names(&archive, "localhost/box:1.0");
    // The installed archive is the one the builder wrote for the image.
    let cached = cache_dir().join("images/box/box_1.0.oci.tar");
    let built = std::fs::read(&cached).unwrap();
    assert!(built == std::fs::read(&archive).unwrap());

    // Issue 21: built again only when an input changed. The same inputs:
    // the cached archive is kept, and installed as it is.
    let stderr = ok(&build(&main, out.path(), &["--format", "directory"]));
    assert!(stderr.contains("box_1.0: up to date"), "{stderr}");
    assert!(std::fs::read(&archive).unwrap() == built);
    // A cached archive changed behind the builder's back is not used: its
    // digest no longer matches, so the image is built again.
    std::fs::write(&cached, b"not an image").unwrap();
    let stderr = ok(&build(&main, out.path(), &["--format", "directory"]));
    assert!(!stderr.contains("up to date"), "{stderr}");
    assert!(std::fs::read(&archive).unwrap() == built);
    // A changed input (its entrypoint) builds it again.
    std::fs::write(
        boxed.join("mkosi.conf.d/90-oci.conf"),
        "[Output]\nImageId=box\nOciEntrypoint=/usr/bin/env false\n",
    )
    .unwrap();
    let stderr = ok(&build(&main, out.path(), &["--format", "directory"]));
    assert!(!stderr.contains("up to date"), "{stderr}");
    assert_entrypoint(&archive, &["/usr/bin/env", "false"]);
}

/// The Entrypoint of the OCI archive's image, as skopeo reads it.
fn assert_entrypoint(archive: &Path, expected: &[&str]) {
    let config = Task::new("skopeo inspect --config", "skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci-archive:{}", archive.display()))
        .read_string()
        .unwrap();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(expected),
        "{config}"
    );
}

/// `ExtractPackages=yes` (issue 21: the pause image without a minimal base
/// installed and deleted): the packages and their dependencies unpacked,
/// nothing else, and the manifest lists exactly those.
#[test]
fn extracted_packages_are_the_whole_tree_and_the_whole_manifest() {
    let profile = tempfile::tempdir().unwrap();
    let conf = profile.path().join("mkosi.conf");
    let write = |extra: &str| {
        std::fs::write(
            &conf,
            format!(
                "[Distribution]\nDistribution=debian\nRelease=bookworm\nArchitecture=x86-64\n\
                 [Output]\nImageId=static\nFormat=directory\n\
                 [Content]\nPackages=hello\nExtractPackages=yes\nWithDocs=no\n{extra}"
            ),
        )
        .unwrap()
    };
    write("");
    let out = tempfile::tempdir().unwrap();
    ok(&build(profile.path(), out.path(), &[]));
    let tree = out.path().join("static_1.0");
    assert!(tree.join("usr/bin/hello").is_file());
    assert!(tree.join("lib/x86_64-linux-gnu/libc.so.6").exists());
    // Nothing of an installed system: no shell, no dpkg, no apt.
    for absent in ["bin/sh", "usr/bin/dpkg", "usr/bin/apt-get", "usr/bin/bash"] {
        assert!(!tree.join(absent).exists(), "{absent} is in the tree");
    }
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join("static_1.0.manifest.json")).unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = manifest["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gcc-12-base", "hello", "libc6", "libgcc-s1"]);
    let hello = &manifest["packages"][1];
    assert_eq!(hello["source"], "hello");
    assert!(!hello["version"].as_str().unwrap().is_empty());

    // Refused before anything is written: apt cannot remove what it did
    // not install, and a bootable image needs its packages' scripts.
    write("RemovePackages=hello\n");
    let empty = tempfile::tempdir().unwrap();
    let stderr = failed(&build(profile.path(), empty.path(), &[]));
    assert!(
        stderr.contains("ExtractPackages=yes with RemovePackages=hello"),
        "{stderr}"
    );
    write("");
    let stderr = failed(&build(profile.path(), empty.path(), &["--format", "disk"]));
    assert!(
        stderr.contains("ExtractPackages=yes cannot make a bootable image"),
        "{stderr}"
    );
    assert!(listing(empty.path()).is_empty());
}
