//! How long resolving the shipped role profiles takes (target: well under 100 ms).

use std::path::PathBuf;

use builder::pins::Pins;
use builder::profile::{resolve, ResolveOptions};

fn main() {
    divan::main();
}

fn options(role: &str) -> ResolveOptions {
    let profiles = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    ResolveOptions {
        directory: profiles.join(role),
        role: Some(role.to_owned()),
        pins: Pins::load(&profiles.join("versions.toml")).expect("pins"),
        ..ResolveOptions::default()
    }
}

#[divan::bench(args = ["worker", "control-plane", "initrd"])]
fn resolve_role(bencher: divan::Bencher, role: &str) {
    let options = options(role);
    bencher.bench(|| resolve(divan::black_box(&options)).expect("resolves"));
}
