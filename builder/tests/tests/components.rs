//! Components from source in `builder build`: the real etcd component of the
//! repository (components/etcd) built with the machine's Go into the `mini`
//! profile. The builds share the build tests' cache (and Go's own), so after
//! the first compile each costs a digest.

use std::path::{Path, PathBuf};

use globular_task::Task;

use crate::build::{build, cache_dir, failed, listing, mini, ok};
use crate::common::workspace;

/// A copy of one of the repository's components, safe to break.
fn component_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let source = workspace().join("components").join(name);
    Task::new(format!("copying the {name} component"), "cp")
        .arg("-a")
        .arg(format!("{}/.", source.display()))
        .arg(dir.path())
        .run()
        .unwrap();
    dir
}

/// Points the profile's lock file at `component` and gives it the
/// repository's pins (or `pins`).
fn use_component(profile: &Path, component: &Path, pins: Option<&str>) {
    std::fs::write(
        profile.join("artifacts.toml"),
        format!(
            "[[component]]\nname = \"etcd\"\npath = \"{}\"\n",
            component.display()
        ),
    )
    .unwrap();
    let repo_pins = std::fs::read_to_string(workspace().join("profiles/versions.toml")).unwrap();
    std::fs::write(
        profile.join("versions.toml"),
        pins.map_or(repo_pins, str::to_owned),
    )
    .unwrap();
}

fn pinned_etcd() -> String {
    let pins = builder::pins::Pins::load(&workspace().join("profiles/versions.toml")).unwrap();
    pins.version("etcd").unwrap().to_owned()
}

fn complete_component_entries() -> Vec<PathBuf> {
    listing(&cache_dir().join("components"))
        .into_iter()
        .filter(|n| !n.contains('.'))
        .map(|n| cache_dir().join("components").join(n))
        .filter(|p| p.join("component.json").is_file())
        .collect()
}

#[test]
fn etcd_is_built_from_its_modules_into_a_reproducible_image() {
    let profile = mini();
    use_component(profile.path(), &workspace().join("components/etcd"), None);
    let (out1, out2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    ok(&build(profile.path(), out1.path(), &[]));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out1.path().join("mini_1.0.manifest.json")).unwrap())
            .unwrap();
    let key = manifest["components"][0]["key"].as_str().unwrap();
    // The second build compiles again (from Go's warm build cache) rather
    // than reusing the builder's entry, then a third reuses it.
    std::fs::remove_dir_all(cache_dir().join("components").join(key)).unwrap();
    let stderr = ok(&build(profile.path(), out2.path(), &[]));
    assert!(stderr.contains("compiling etcd"), "{stderr}");
    let out3 = tempfile::tempdir().unwrap();
    let stderr = ok(&build(
        profile.path(),
        out3.path(),
        &["--format", "directory"],
    ));
    assert!(
        stderr.contains("component etcd") && stderr.contains("reused from the cache"),
        "{stderr}"
    );
    for name in listing(out1.path()) {
        assert_eq!(
            std::fs::read(out1.path().join(&name)).unwrap(),
            std::fs::read(out2.path().join(&name)).unwrap(),
            "{name} differs between two builds"
        );
    }

    // The manifest names the upstream module, its go.sum hash and every
    // program with its digest; the SBOM lists the linked modules as purls.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out1.path().join("mini_1.0.manifest.json")).unwrap())
            .unwrap();
    let etcd = &manifest["components"][0];
    let version = pinned_etcd();
    assert_eq!(etcd["version"], version.as_str());
    assert_eq!(etcd["module"], "go.etcd.io/etcd/server/v3");
    let go_sum = std::fs::read_to_string(workspace().join("components/etcd/go.sum")).unwrap();
    let sum = etcd["module_sum"].as_str().unwrap();
    assert!(
        go_sum.contains(&format!("go.etcd.io/etcd/server/v3 v{version} {sum}")),
        "{sum}"
    );
    let installs: Vec<&str> = etcd["binaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["install"].as_str().unwrap())
        .collect();
    assert_eq!(
        installs,
        ["/usr/bin/etcd", "/usr/bin/etcdctl", "/usr/bin/etcdutl"]
    );
    let modules = etcd["modules"].as_array().unwrap();
    assert!(modules
        .iter()
        .any(|m| m["path"] == "go.etcd.io/etcd/api/v3"
            && m["sum"].as_str().unwrap().starts_with("h1:")));
    let sbom = std::fs::read_to_string(out1.path().join("mini_1.0.spdx.json")).unwrap();
    assert!(
        sbom.contains(&format!("pkg:golang/go.etcd.io/etcd/server/v3@v{version}")),
        "no purl for the etcd server module"
    );
    assert!(
        sbom.contains("pkg:golang/go.etcd.io/bbolt@"),
        "linked modules missing"
    );

    // The program in the image is the one the manifest names, and runs.
    let extract = tempfile::tempdir().unwrap();
    Task::new("extracting", "tar")
        .args(["--zstd", "-xf"])
        .arg(out1.path().join("mini_1.0.tar.zst"))
        .arg("-C")
        .arg(extract.path())
        .arg("usr/bin/etcd")
        .run()
        .unwrap();
    let etcd_bin = extract.path().join("usr/bin/etcd");
    assert_eq!(
        builder::digest::file(&etcd_bin).unwrap(),
        etcd["binaries"][0]["sha256"].as_str().unwrap()
    );
    let printed = Task::new("asking etcd its version", &etcd_bin)
        .arg("--version")
        .read_string()
        .unwrap();
    assert!(
        printed.contains(&format!("etcd Version: {version}")),
        "{printed}"
    );
}

#[test]
fn a_go_sum_that_does_not_match_the_modules_stops_before_anything_is_written() {
    let profile = mini();
    let component = component_copy("etcd");
    let go_sum = component.path().join("go.sum");
    let version = pinned_etcd();
    let prefix = format!("go.etcd.io/etcd/api/v3 v{version} h1:");
    let text = std::fs::read_to_string(&go_sum).unwrap();
    let tampered: String = text
        .lines()
        .map(|line| match line.strip_prefix(&prefix) {
            // Another valid-looking hash: the first character changed.
            Some(hash) => {
                let first = if hash.starts_with('A') { 'B' } else { 'A' };
                format!("{prefix}{first}{}\n", &hash[1..])
            }
            None => format!("{line}\n"),
        })
        .collect();
    assert_ne!(tampered, text, "the api module's hash is in go.sum");
    std::fs::write(&go_sum, tampered).unwrap();
    use_component(profile.path(), component.path(), None);
    let before = complete_component_entries();
    let out = tempfile::tempdir().unwrap();
    let stderr = failed(&build(profile.path(), out.path(), &["--quiet"]));
    assert!(
        stderr.contains(&format!("go.etcd.io/etcd/api/v3@v{version}")),
        "{stderr}"
    );
    assert!(stderr.contains("go.sum"), "{stderr}");
    assert!(listing(out.path()).is_empty(), "{:?}", listing(out.path()));
    assert_eq!(
        complete_component_entries(),
        before,
        "a cache entry was made"
    );
}

#[test]
fn a_go_mod_edited_without_its_go_sum_stops_naming_the_module() {
    let profile = mini();
    let component = component_copy("etcd");
    let go_mod = component.path().join("go.mod");
    let text = std::fs::read_to_string(&go_mod).unwrap();
    // A dependency moved to another (real) version, go.sum left alone.
    let edited = text.replace(
        "github.com/beorn7/perks v1.0.1",
        "github.com/beorn7/perks v1.0.0",
    );
    assert_ne!(
        edited, text,
        "go.mod requires github.com/beorn7/perks v1.0.1"
    );
    std::fs::write(&go_mod, edited).unwrap();
    use_component(profile.path(), component.path(), None);
    let out = tempfile::tempdir().unwrap();
    let stderr = failed(&build(profile.path(), out.path(), &["--quiet"]));
    assert!(
        stderr.contains("github.com/beorn7/perks@v1.0.0"),
        "{stderr}"
    );
    assert!(stderr.contains("go.sum"), "{stderr}");
    assert!(listing(out.path()).is_empty());

    // The upstream module bumped in go.mod and the pins, go.sum left alone:
    // first the server alone (its repository's other modules left behind),
    // then all of them.
    let version = pinned_etcd();
    let older = "3.6.15";
    assert_ne!(version, older);
    std::fs::write(
        &go_mod,
        text.replace(
            &format!("go.etcd.io/etcd/server/v3 v{version}"),
            &format!("go.etcd.io/etcd/server/v3 v{older}"),
        ),
    )
    .unwrap();
    use_component(
        profile.path(),
        component.path(),
        Some(&format!("[etcd]\nversion = \"{older}\"\n")),
    );
    let stderr = failed(&build(profile.path(), out.path(), &["--quiet"]));
    assert!(
        stderr.contains(&format!(
            "requires go.etcd.io/etcd/api/v3 v{version}, but the other modules of go.etcd.io/etcd/"
        )),
        "{stderr}"
    );
    let all_moved: String = text
        .lines()
        .map(|line| {
            if line.contains("go.etcd.io/etcd/") {
                line.replace(&format!(" v{version}"), &format!(" v{older}"))
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&go_mod, all_moved + "\n").unwrap();
    use_component(
        profile.path(),
        component.path(),
        Some(&format!("[etcd]\nversion = \"{older}\"\n")),
    );
    let stderr = failed(&build(profile.path(), out.path(), &["--quiet"]));
    assert!(
        stderr.contains(&format!("no hash for go.etcd.io/etcd/server/v3@v{older}")),
        "{stderr}"
    );
    assert!(listing(out.path()).is_empty());
}

#[test]
fn a_go_mod_that_disagrees_with_the_pin_names_both_files() {
    let profile = mini();
    use_component(
        profile.path(),
        &workspace().join("components/etcd"),
        Some("[etcd]\nversion = \"3.6.15\"\n"),
    );
    let out = tempfile::tempdir().unwrap();
    let stderr = failed(&build(profile.path(), out.path(), &["--quiet"]));
    assert!(
        stderr.contains("components/etcd/go.mod requires go.etcd.io/etcd/server/v3 v"),
        "{stderr}"
    );
    assert!(
        stderr.contains("versions.toml pins [etcd] version = \"3.6.15\""),
        "{stderr}"
    );
    assert!(listing(out.path()).is_empty());
}

#[test]
fn a_staging_module_left_at_another_release_names_go_mod() {
    let profile = mini();
    let component = component_copy("kubernetes");
    let pins = builder::pins::Pins::load(&workspace().join("profiles/versions.toml")).unwrap();
    let version = pins.version("kubernetes").unwrap();
    let staging = format!("v0.{}", version.split_once('.').unwrap().1);
    let go_mod = component.path().join("go.mod");
    let text = std::fs::read_to_string(&go_mod).unwrap();
    let line = format!("k8s.io/kubelet => k8s.io/kubelet {staging}");
    assert!(text.contains(&line), "go.mod replaces k8s.io/kubelet");
    std::fs::write(
        &go_mod,
        text.replace(&line, "k8s.io/kubelet => k8s.io/kubelet v0.36.0"),
    )
    .unwrap();
    std::fs::write(
        profile.path().join("artifacts.toml"),
        format!(
            "[[component]]\nname = \"kubernetes\"\npath = \"{}\"\n",
            component.path().display()
        ),
    )
    .unwrap();
    std::fs::copy(
        workspace().join("profiles/versions.toml"),
        profile.path().join("versions.toml"),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let stderr = failed(&build(profile.path(), out.path(), &["--quiet"]));
    assert!(
        stderr.contains("go.mod replaces k8s.io/kubelet with k8s.io/kubelet v0.36.0")
            && stderr.contains(&format!("wants k8s.io/kubelet {staging}")),
        "{stderr}"
    );
    assert!(listing(out.path()).is_empty());
}

#[test]
fn a_local_replace_and_a_doubly_installed_file_are_refused() {
    let profile = mini();
    let component = component_copy("etcd");
    let go_mod = component.path().join("go.mod");
    let mut text = std::fs::read_to_string(&go_mod).unwrap();
    text.push_str("\nreplace github.com/beorn7/perks => ./perks\n");
    std::fs::write(&go_mod, text).unwrap();
    use_component(profile.path(), component.path(), None);
    let out = tempfile::tempdir().unwrap();
    let stderr = failed(&build(profile.path(), out.path(), &["--quiet"]));
    assert!(
        stderr.contains("replaces github.com/beorn7/perks with the directory ./perks"),
        "{stderr}"
    );
    assert!(listing(out.path()).is_empty());

    // An artifact at /bin/etcd is the component's /usr/bin/etcd in a
    // merged-usr tree.
    use_component(profile.path(), &workspace().join("components/etcd"), None);
    let mut lock = std::fs::read_to_string(profile.path().join("artifacts.toml")).unwrap();
    let artifact = workspace().join("components/etcd/go.mod");
    lock.push_str(&format!(
        "[[artifact]]\nname = \"shadow\"\npath = \"{}\"\nsha256 = \"{}\"\ninstall = \"/bin/etcd\"\n",
        artifact.display(),
        builder::digest::file(&artifact).unwrap()
    ));
    std::fs::write(profile.path().join("artifacts.toml"), lock).unwrap();
    let stderr = failed(&build(profile.path(), out.path(), &["--quiet"]));
    assert!(
        stderr.contains("installs /usr/bin/etcd, which is the same file as /bin/etcd"),
        "{stderr}"
    );
    assert!(listing(out.path()).is_empty());
}
