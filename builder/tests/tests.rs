//! Integration tests of the builder, one module per concept.

mod build;
mod common;
mod malformed;
mod profiles;
mod summary;
