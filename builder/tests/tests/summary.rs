//! Real multi-file mkosi trees resolve to the expected configuration.

use builder::profile::{summary, ResolveOptions, WarningKind};

use crate::common::{builder, fixture, options, redact, resolve_dir, workspace};

#[test]
fn appliance_tree() {
    let dir = fixture("appliance");
    let config = resolve_dir(&dir).unwrap();
    // mkosi.local.conf wins over mkosi.conf; lists accumulate, resets clear.
    assert_eq!(config.text("ImageId"), Some("appliance-dev"));
    assert_eq!(config.text("ImageVersion"), Some("2.4.1"));
    assert_eq!(config.text("Output"), Some("appliance-dev_2.4.1"));
    assert!(!config.list("Packages").contains(&"dnf".to_owned()));
    assert_eq!(
        config.list("Packages").last().map(String::as_str),
        Some("vim")
    );
    assert_eq!(
        config.list("KernelCommandLine"),
        [
            "console=ttyS0,115200",
            "systemd.journald.forward_to_console=1"
        ]
    );
    assert!(config.list("RemoveFiles").is_empty());
    redact(&dir).bind(|| insta::assert_json_snapshot!("appliance", summary::to_json(&config)));
}

#[test]
fn fleet_tree_with_profiles() {
    let dir = fixture("fleet");
    let mut opts = options(&dir);
    opts.profiles = vec!["dev".into()];
    let config = builder::profile::resolve(&opts).unwrap();
    let packages = config.list("Packages");
    assert!(packages.contains(&"gdb".to_owned()), "{packages:?}");
    assert!(
        packages.contains(&"edge-agent-7".to_owned()),
        "{packages:?}"
    );
    assert!(
        packages.contains(&"ubuntu-standard".to_owned()),
        "{packages:?}"
    );
    assert!(!packages.contains(&"u-boot-tools".to_owned()));
    assert!(!packages.contains(&"arm-only".to_owned()));
    assert!(!packages.contains(&"beta-tools".to_owned()));
    // shared/common.conf is included twice but parsed once.
    assert_eq!(packages.iter().filter(|p| *p == "systemd").count(), 1);
    assert_eq!(config.text("Hostname"), Some("fleet-dev"));
    redact(&dir).bind(|| insta::assert_json_snapshot!("fleet-dev", summary::to_json(&config)));

    let mut opts = options(&dir);
    opts.environment = vec![("CHANNEL".into(), "beta".into())];
    let config = builder::profile::resolve(&opts).unwrap();
    assert!(config.list("Packages").contains(&"beta-tools".to_owned()));
    assert!(!config.list("Packages").contains(&"gdb".to_owned()));
    // The profile named in Profiles= is selected without --profile.
    assert!(config
        .list("KernelCommandLine")
        .contains(&"module.sig_enforce=1".to_owned()));
}

#[test]
fn templated_tree() {
    let dir = fixture("templated");
    let mut opts = options(&dir);
    opts.role = Some("worker".into());
    opts.environment = vec![("BUILD".into(), "5.1".into())];
    let config = builder::profile::resolve(&opts).unwrap();
    assert_eq!(config.text("ImageId"), Some("node-worker"));
    assert_eq!(config.text("ImageVersion"), Some("5.1"));
    assert_eq!(
        config.list("Packages"),
        ["systemd", "udev", "etcd-server=3.4.23-4+b4"]
    );
    assert_eq!(
        config.list("KernelCommandLine"),
        ["globular.note=100%_debian"]
    );
    let warned: Vec<_> = config
        .warnings
        .iter()
        .map(|w| (w.setting.as_str(), w.line))
        .collect();
    assert_eq!(warned, [("SecureBoot", 3), ("RAM", 6)]);
    redact(&dir).bind(|| insta::assert_json_snapshot!("templated", summary::to_json(&config)));
}

#[test]
fn version_flag_overrides_every_file() {
    let dir = fixture("appliance");
    let mut opts: ResolveOptions = options(&dir);
    opts.image_version = Some("1.0".into());
    let config = builder::profile::resolve(&opts).unwrap();
    assert_eq!(config.text("ImageVersion"), Some("1.0"));
    // 40-version.conf matches ImageVersion>=2.0 only.
    assert!(!config
        .list("Packages")
        .contains(&"appliance-v2-extras".to_owned()));
}

#[test]
fn cli_summary_text_and_json() {
    let dir = fixture("fleet");
    let out = builder(
        &[
            "summary",
            "--directory",
            dir.to_str().unwrap(),
            "--profile",
            "dev",
        ],
        &workspace(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    redact(&dir).bind(|| insta::assert_snapshot!("fleet-dev-text", text));

    let out = builder(
        &["summary", "--directory", dir.to_str().unwrap(), "--json"],
        &workspace(),
    );
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["Distribution"], "ubuntu");
    assert_eq!(json["Profiles"], serde_json::json!(["hardened"]));
    assert!(json["Packages"].is_array());
}

#[test]
fn cli_reports_unimplemented_settings_as_warnings() {
    let dir = fixture("templated");
    let out = builder(
        &["summary", "--directory", dir.to_str().unwrap()],
        &workspace(),
    );
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("20-unimplemented.conf:3: SecureBoot= is not implemented"),
        "{stderr}"
    );
    assert!(stderr.contains("20-unimplemented.conf:6: RAM="), "{stderr}");
}

/// Issue 18: a tree for mkosi 26/27 with a default tools tree of another
/// distribution, sandbox trees and the current kernel module settings.
#[test]
fn issue_18_tools_tree() {
    let dir = fixture("tools-tree");
    let config = resolve_dir(&dir).unwrap();
    assert_eq!(config.list("ToolsTreeProfiles"), ["misc", "runtime"]);
    for (setting, value) in [
        ("ToolsTree", "default"),
        ("ToolsTreeDistribution", "fedora"),
    ] {
        assert_eq!(config.text(setting), Some(value));
    }
    // [Match] ToolsTreeDistribution=fedora applied, =debian did not.
    assert_eq!(
        config.list("ToolsTreePackages"),
        ["erofs-utils", "dnf5", "dnf5-plugins"]
    );
    assert_eq!(
        config.list("ToolsTreeSandboxTrees"),
        [dir.join("mkosi.tools.sandbox").display().to_string()]
    );
    // mkosi.sandbox/ is a default path of SandboxTrees=.
    assert_eq!(
        config.list("SandboxTrees"),
        [dir.join("mkosi.sandbox").display().to_string()]
    );
    // KernelModules= and KernelInitrdModules= fill the keys mkosi's JSON uses.
    assert_eq!(
        config.list("KernelModules"),
        config.list("KernelModulesInclude")
    );
    assert_eq!(config.list("KernelInitrdModules"), ["default", "dm-verity"]);
    assert_eq!(config.bool("WithDocs"), Some(true));
    redact(&dir).bind(|| insta::assert_json_snapshot!("tools-tree", summary::to_json(&config)));
}

/// Issue 18: relative paths in drop-ins resolve against the configuration
/// directory (mkosi's working directory), older names and unknown settings
/// are read the way mkosi 26 reads them.
#[test]
fn issue_18_dropins() {
    let dir = fixture("dropins");
    let config = resolve_dir(&dir).unwrap();
    let at = |p: &str| dir.join(p).display().to_string();
    assert_eq!(
        config.list("ExtraTrees"),
        [
            format!("{}:/usr/share/edge", at("extra/common")),
            at("mkosi.conf.d/20-kernel/extra"),
        ]
    );
    assert_eq!(
        config.list("PostInstallationScripts"),
        [at("scripts/postinst.sh")]
    );
    assert_eq!(
        config.list("BuildScripts"),
        [
            at("mkosi.build.d/10-compile.sh"),
            at("mkosi.build.d/20-install.chroot")
        ]
    );
    assert_eq!(
        config.list("Environment"),
        [
            format!("DROPIN_DIR={}", at("mkosi.conf.d")),
            format!("TOP={}", dir.display())
        ]
    );
    assert_eq!(config.list("KernelInitrdModules"), ["virtio_blk"]);
    assert_eq!(config.list("SandboxTrees"), [at("pm")]);
    assert_eq!(config.text("Hostname"), Some("edge-node"));
    let warned: Vec<_> = config
        .warnings
        .iter()
        .map(|w| {
            let file = w.path.file_name().unwrap().to_string_lossy().into_owned();
            (file, w.line, w.setting.clone())
        })
        .collect();
    let expected = [
        ("30-legacy.conf", 4, "@Hostname"),
        ("30-legacy.conf", 8, "PackageManagerTrees"),
        ("30-legacy.conf", 8, "SandboxTrees"),
        ("30-legacy.conf", 8, "SandboxTrees"),
        ("40-newer.conf", 3, "FutureSetting"),
        ("40-newer.conf", 6, "CDROM"),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(f, l, s)| (f.to_string(), *l, s.to_string()))
        .collect();
    assert_eq!(warned, expected);
    redact(&dir).bind(|| insta::assert_json_snapshot!("dropins", summary::to_json(&config)));
}

/// Issue 18: sub-images in mkosi.images/ are resolved with the main image's
/// universal and inherited settings, and reported as not built.
#[test]
fn issue_18_multi_image() {
    let dir = fixture("multi-image");
    let config = resolve_dir(&dir).unwrap();
    assert_eq!(config.list("Dependencies"), ["base", "initrd"]);
    assert_eq!(
        config.list("Packages"),
        ["systemd", "kernel-core", "systemd-boot"]
    );
    assert_eq!(
        config.text("SysupdateDirectory"),
        Some(dir.join("mkosi.sysupdate").to_str().unwrap())
    );
    let names: Vec<&str> = config.subimages.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["base", "initrd"]);
    let (_, base) = &config.subimages[0];
    assert_eq!(base.text("Distribution"), Some("fedora"));
    assert_eq!(base.text("Architecture"), Some("arm64"));
    assert_eq!(base.text("Output"), Some("base_3.1"));
    assert_eq!(base.text("ImageId"), Some("appliance"));
    assert_eq!(base.list("Packages"), ["util-linux", "bash", "coreutils"]);
    assert_eq!(base.list("Environment"), ["CHANNEL=stable"]);
    let (_, initrd) = &config.subimages[1];
    assert_eq!(initrd.text("Output"), Some("initrd_3.1.1"));
    assert_eq!(initrd.text("Format"), Some("cpio"));
    let not_built: Vec<_> = config
        .warnings
        .iter()
        .filter(|w| w.kind == WarningKind::SubimageNotBuilt)
        .map(|w| w.setting.as_str())
        .collect();
    assert_eq!(not_built, ["base", "initrd"]);
    for (setting, path) in [
        ("SysupdateDirectory", "mkosi.sysupdate"),
        ("Credentials", "mkosi.credentials"),
        ("UnifiedKernelImageProfiles", "mkosi.uki-profiles"),
    ] {
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.setting == setting && w.path == dir.join(path)),
            "{setting}: {:?}",
            config.warnings
        );
    }
    redact(&dir).bind(|| insta::assert_json_snapshot!("multi-image", summary::to_json(&config)));

    let out = builder(
        &["summary", "--directory", dir.to_str().unwrap(), "--json"],
        &workspace(),
    );
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["Subimages"]["initrd"]["Format"], "cpio");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("initrd.conf: sub-image initrd is resolved but not built"),
        "{stderr}"
    );
}

/// A sub-image may not set a universal setting, as in mkosi.
#[test]
fn issue_18_subimage_universal_setting_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mkosi.conf"), "[Output]\nImageId=x\n").unwrap();
    std::fs::create_dir(dir.path().join("mkosi.images")).unwrap();
    std::fs::write(
        dir.path().join("mkosi.images/a.conf"),
        "[Distribution]\nDistribution=arch\n",
    )
    .unwrap();
    let err = resolve_dir(dir.path()).unwrap_err();
    assert_eq!(err.line, 2);
    assert!(err
        .to_string()
        .contains("Distribution= cannot be configured in sub-image a"));
}

/// Dependencies= in the main image selects sub-images (and theirs), as in mkosi.
#[test]
fn issue_18_dependencies_select_subimages() {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("mkosi.conf", "[Config]\nDependencies=app\n");
    write("mkosi.images/app.conf", "[Config]\nDependencies=lib\n");
    write("mkosi.images/lib.conf", "[Output]\nFormat=directory\n");
    write("mkosi.images/other.conf", "[Output]\nFormat=tar\n");
    let config = resolve_dir(dir.path()).unwrap();
    let names: Vec<&str> = config.subimages.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["app", "lib"]);
    write("mkosi.conf", "[Config]\nDependencies=nope\n");
    let err = resolve_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("no image \"nope\""), "{err}");
}
