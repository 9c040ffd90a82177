//! Integration tests of the builder, one module per concept (files in
//! `tests/`, the convention of every crate of the workspace).

#[path = "tests/common.rs"]
mod common;

#[path = "tests/build.rs"]
mod build;
#[path = "tests/components.rs"]
mod components;
#[path = "tests/malformed.rs"]
mod malformed;
#[path = "tests/profiles.rs"]
mod profiles;
#[path = "tests/summary.rs"]
mod summary;
