//! The shipped role profiles resolve, and stay the way they were reviewed.

use builder::pins::Pins;
use builder::profile::{resolve, summary, ResolveOptions};

use crate::common::{builder, redact, workspace};

fn role(role: &str) -> builder::profile::Config {
    let profiles = workspace().join("profiles");
    resolve(&ResolveOptions {
        directory: profiles.join(role),
        role: Some(role.to_owned()),
        pins: Pins::load(&profiles.join("versions.toml")).unwrap(),
        ..ResolveOptions::default()
    })
    .unwrap()
}

#[test]
fn roles_resolve_without_warnings() {
    for name in ["worker", "control-plane", "initrd"] {
        let config = role(name);
        assert!(config.warnings.is_empty(), "{name}: {:?}", config.warnings);
        assert_eq!(config.text("Distribution"), Some("debian"));
        assert_eq!(config.text("Release"), Some("bookworm"));
        let root = workspace();
        redact(&root).bind(|| {
            insta::assert_json_snapshot!(format!("role-{name}"), summary::to_json(&config))
        });
    }
}

#[test]
fn components_by_role_etcd_only_on_control_planes() {
    let lock = workspace().join("profiles/artifacts.toml");
    let names = |role: &str| -> Vec<String> {
        builder::artifacts::load(&lock, Some(role))
            .unwrap()
            .components
            .into_iter()
            .map(|c| c.name)
            .collect()
    };
    assert_eq!(names("control-plane"), ["etcd", "kubernetes"]);
    assert_eq!(names("worker"), ["kubernetes"]);
    // No distribution etcd (Debian's 3.4 is older than Kubernetes accepts).
    for name in ["control-plane", "worker"] {
        assert!(
            !role(name)
                .list("Packages")
                .iter()
                .any(|p| p.starts_with("etcd")),
            "{name} installs a distribution etcd"
        );
    }
    assert!(role("worker")
        .list("Packages")
        .contains(&"containerd".to_owned()));
    assert_eq!(role("initrd").text("Format"), Some("cpio"));
}

#[test]
fn debug_profile_adds_tools() {
    let out = builder(
        &[
            "summary",
            "--role",
            "worker",
            "--profile",
            "debug",
            "--json",
        ],
        &workspace(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = json["Packages"].as_array().unwrap();
    assert!(packages.contains(&serde_json::json!("strace")));
}

#[test]
fn summary_found_from_a_subdirectory() {
    let out = builder(
        &["summary", "--role", "control-plane"],
        &workspace().join("docs"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("ImageId: globular-control-plane"), "{text}");
}
