//! Malformed input: one-line errors naming file and line, a non-zero exit, and
//! never a panic.

use std::path::Path;

use builder::profile::{ErrorKind, WarningKind};

use crate::common::{builder, resolve_dir, workspace};

/// Writes `files` (relative path, contents) into a fresh tree.
fn tree(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, contents) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    dir
}

/// Runs `builder summary` on the tree and returns its stderr, asserting failure.
fn fails(dir: &Path) -> String {
    let out = builder(
        &["summary", "--directory", dir.to_str().unwrap()],
        &workspace(),
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(out.stdout.is_empty());
    stderr
}

fn expect(files: &[(&str, &[u8])], location: &str, message: &str) {
    let dir = tree(files);
    let stderr = fails(dir.path());
    let location = format!("{}/{location}", dir.path().display());
    assert!(
        stderr.starts_with(&format!("error: {location}")),
        "{stderr}"
    );
    assert!(stderr.contains(message), "{stderr}");
}

#[test]
fn unterminated_section() {
    expect(
        &[("mkosi.conf", b"[Distribution]\nRelease=x\n[Content\n")],
        "mkosi.conf:3:",
        "not terminated",
    );
}

#[test]
fn key_outside_section() {
    expect(
        &[("mkosi.conf", b"# c\nPackages=a\n")],
        "mkosi.conf:2:",
        "before any [Section]",
    );
}

#[test]
fn bad_boolean() {
    expect(
        &[
            ("mkosi.conf.d/10-a.conf", b"[Content]\n\nWithDocs=perhaps\n"),
            ("mkosi.conf", b""),
        ],
        "mkosi.conf.d/10-a.conf:3:",
        "invalid boolean \"perhaps\"",
    );
}

#[test]
fn unknown_condition() {
    expect(
        &[("mkosi.conf", b"[Match]\nColour=red\n")],
        "mkosi.conf:2:",
        "unknown condition Colour=",
    );
}

/// Issue 18: as in mkosi since v26, unknown and misplaced settings are
/// warnings naming file and line; the rest of the file still applies.
#[test]
fn unknown_and_misplaced_settings_are_warnings() {
    let dir = tree(&[
        (
            "mkosi.conf",
            b"[Content]\nPackagez=a\n[Contents]\nPackages=b\n[Output]\nPackages=c\n\
              [Runtime]\nCDROM=yes\n[Host]\nQemuMem=4G\n[Content]\n@Hostname=h\n",
        ),
        ("mkosi.conf.d/10-a.conf", b"[Build]\nColour=blue\n"),
    ]);
    let config = resolve_dir(dir.path()).unwrap();
    assert_eq!(config.list("Packages"), ["c"]);
    assert_eq!(config.text("Hostname"), Some("h"));
    let warned: Vec<_> = config
        .warnings
        .iter()
        .map(|w| {
            (
                w.path.file_name().unwrap().to_str().unwrap(),
                w.line,
                &w.kind,
            )
        })
        .collect();
    use WarningKind::*;
    let wrong = |expected: &str, found: &str| WrongSection {
        expected: expected.into(),
        found: found.into(),
    };
    assert_eq!(
        warned,
        [
            (
                "mkosi.conf",
                2,
                &UnknownSetting {
                    section: "Content".into()
                }
            ),
            ("mkosi.conf", 3, &UnknownSection),
            ("mkosi.conf", 6, &wrong("Content", "Output")),
            (
                "mkosi.conf",
                8,
                &Retired {
                    note: "mkosi no longer attaches images as a CD-ROM; the setting is ignored"
                        .into()
                }
            ),
            ("mkosi.conf", 10, &Deprecated { new: "RAM".into() }),
            ("mkosi.conf", 10, &wrong("Runtime", "Host")),
            ("mkosi.conf", 10, &NotImplemented),
            (
                "mkosi.conf",
                12,
                &Deprecated {
                    new: "Hostname".into()
                }
            ),
            (
                "10-a.conf",
                2,
                &UnknownSetting {
                    section: "Build".into()
                }
            ),
        ]
    );
    let out = builder(
        &["summary", "--directory", dir.path().to_str().unwrap()],
        &workspace(),
    );
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let file = dir.path().join("mkosi.conf");
    for line in [
        format!(
            "{}:2: unknown setting Packagez= in [Content], ignored",
            file.display()
        ),
        format!("{}:3: unknown section [Contents]", file.display()),
        format!(
            "{}:6: setting Packages= belongs in section [Content], not [Output]",
            file.display()
        ),
        format!("{}:8: CDROM= was removed from mkosi", file.display()),
        format!(
            "{}:10: QemuMem= is deprecated, use RAM= instead",
            file.display()
        ),
    ] {
        assert!(stderr.contains(&line), "{line} not in {stderr}");
    }
}

#[test]
fn include_cycle() {
    expect(
        &[
            ("mkosi.conf", b"[Include]\nInclude=a.conf\n"),
            ("a.conf", b"[Include]\nInclude=b.conf\n"),
            (
                "b.conf",
                b"[Content]\nPackages=x\n[Include]\nInclude=a.conf\n",
            ),
        ],
        "b.conf:4:",
        "include cycle",
    );
    // A directory including its own parent tree.
    expect(
        &[
            ("mkosi.conf", b"[Include]\nInclude=base\n"),
            ("base/mkosi.conf", b"[Include]\nInclude=..\n"),
        ],
        "base/mkosi.conf:2:",
        "include cycle",
    );
}

#[test]
fn missing_include() {
    expect(
        &[("mkosi.conf", b"[Include]\nInclude=nope.conf\n")],
        "mkosi.conf:2:",
        "Include=: ",
    );
}

#[test]
fn template_syntax_error() {
    expect(
        &[(
            "mkosi.conf.tera",
            b"[Content]\nPackages=a\nHostname={{ role \n",
        )],
        "mkosi.conf.tera:3:",
        "template error: syntax error",
    );
    expect(
        &[(
            "mkosi.conf.tera",
            b"[Content]\n\nHostname={{ nothing_here }}\n",
        )],
        "mkosi.conf.tera:3:",
        "nothing_here",
    );
}

#[test]
fn non_utf8_file() {
    expect(
        &[("mkosi.conf", b"[Content]\nPackages=caf\xe9\n")],
        "mkosi.conf:2:",
        "not valid UTF-8 (first invalid byte at column 13)",
    );
}

#[test]
fn bad_specifier_and_assert() {
    expect(
        &[("mkosi.conf", b"[Output]\nOutput=img-%Q\n")],
        "mkosi.conf:2:",
        "unknown specifier '%Q'",
    );
    expect(
        &[
            ("mkosi.conf", b"[Distribution]\nDistribution=debian\n"),
            ("mkosi.conf.d/a.conf", b"\n[Assert]\nDistribution=fedora\n"),
        ],
        "mkosi.conf.d/a.conf:2:",
        "assertion failed",
    );
}

#[test]
fn bad_enum_names_choices() {
    expect(
        &[("mkosi.conf", b"[Output]\nFormat=vmdk\n")],
        "mkosi.conf:2:",
        "expected one of: directory",
    );
}

#[test]
fn errors_are_matchable() {
    let dir = tree(&[("mkosi.conf", b"[Content]\nWithDocs=2\n")]);
    let err = resolve_dir(dir.path()).unwrap_err();
    assert_eq!(err.line, 2);
    assert!(matches!(err.kind, ErrorKind::InvalidBool { .. }));
}

#[test]
fn not_a_directory() {
    let dir = tree(&[]);
    let missing = dir.path().join("nope");
    let stderr = fails(&missing);
    assert!(stderr.contains("nope"), "{stderr}");
}

#[test]
fn unknown_role_lists_roles() {
    let out = builder(&["summary", "--role", "gpu"], &workspace());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("unknown role \"gpu\""), "{stderr}");
    assert!(stderr.contains("worker"), "{stderr}");
}
