//! Feeds arbitrary bytes to the configuration engine as `mkosi.conf`, as a
//! `.tera` template, and as a drop-in plus a sub-image of a fixed tree, and
//! resolves each tree. Any error is fine; a panic is a bug.

#![no_main]

use std::sync::OnceLock;

use builder::profile::{resolve, ResolveOptions};
use libfuzzer_sys::fuzz_target;

struct Trees {
    _root: tempfile::TempDir,
    plain: std::path::PathBuf,
    templated: std::path::PathBuf,
    nested: std::path::PathBuf,
}

fn trees() -> &'static Trees {
    static TREES: OnceLock<Trees> = OnceLock::new();
    TREES.get_or_init(|| {
        let root = tempfile::tempdir().expect("tempdir");
        let plain = root.path().join("plain");
        let templated = root.path().join("templated");
        let nested = root.path().join("nested");
        std::fs::create_dir_all(&plain).unwrap();
        std::fs::create_dir_all(&templated).unwrap();
        std::fs::create_dir_all(nested.join("mkosi.conf.d")).unwrap();
        std::fs::create_dir_all(nested.join("mkosi.images")).unwrap();
        std::fs::write(nested.join("mkosi.conf"), "[Output]\nImageId=fuzz\n").unwrap();
        Trees {
            _root: root,
            plain,
            templated,
            nested,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let trees = trees();
    // Keep the fuzzer away from reading arbitrary host trees through Include=/
    // PathExists=: absolute paths are still parsed, just not followed far.
    std::fs::write(trees.nested.join("mkosi.conf.d/10-fuzz.conf"), data).unwrap();
    for (dir, name) in [
        (&trees.plain, "mkosi.conf"),
        (&trees.templated, "mkosi.conf.tera"),
        (&trees.nested, "mkosi.images/fuzz.conf"),
    ] {
        std::fs::write(dir.join(name), data).unwrap();
        let options = ResolveOptions {
            directory: dir.clone(),
            role: Some("worker".into()),
            ..ResolveOptions::default()
        };
        let _ = resolve(&options);
    }
});
