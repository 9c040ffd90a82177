//! Feeds arbitrary bytes to the configuration engine as `mkosi.conf` (and as a
//! `.tera` template) and resolves the tree. Any error is fine; a panic is a bug.

#![no_main]

use std::sync::OnceLock;

use builder::profile::{resolve, ResolveOptions};
use libfuzzer_sys::fuzz_target;

struct Trees {
    _root: tempfile::TempDir,
    plain: std::path::PathBuf,
    templated: std::path::PathBuf,
}

fn trees() -> &'static Trees {
    static TREES: OnceLock<Trees> = OnceLock::new();
    TREES.get_or_init(|| {
        let root = tempfile::tempdir().expect("tempdir");
        let plain = root.path().join("plain");
        let templated = root.path().join("templated");
        std::fs::create_dir_all(&plain).unwrap();
        std::fs::create_dir_all(&templated).unwrap();
        Trees {
            _root: root,
            plain,
            templated,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let trees = trees();
    // Keep the fuzzer away from reading arbitrary host trees through Include=/
    // PathExists=: absolute paths are still parsed, just not followed far.
    for (dir, name) in [(&trees.plain, "mkosi.conf"), (&trees.templated, "mkosi.conf.tera")] {
        std::fs::write(dir.join(name), data).unwrap();
        let options = ResolveOptions {
            directory: dir.clone(),
            role: Some("worker".into()),
            ..ResolveOptions::default()
        };
        let _ = resolve(&options);
    }
});
