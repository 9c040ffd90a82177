//! Real multi-file mkosi trees resolve to the expected configuration.

use builder::profile::{summary, ResolveOptions};

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
