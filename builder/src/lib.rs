//! Globular node image builder.
//!
//! The library behind the `builder` command: it reads mkosi-compatible profiles
//! ([`profile`]), renders tera templates ([`template`]) with the pinned component
//! versions ([`pins`]) and drives the build stages. The binary in `main.rs` only
//! sets up logging and calls [`cli::run`].

pub mod artifacts;
pub mod build;
pub mod cli;
pub mod components;
pub mod digest;
pub mod disk;
pub mod inspect;
pub mod output;
pub mod overlay;
pub mod pins;
pub mod profile;
pub mod progress;
pub mod rootfs;
pub mod scripts;
pub mod template;
