//! The Globular node agent.
//!
//! - [`agent`]: `globular firstboot`, the state machine that turns a generic
//!   image plus a seed ([`datasource`]) into a cluster member;
//! - [`api`] and [`server`]: the substrate API (enrollment, renewal, registry,
//!   tokens) backed by [`etcd`];
//! - [`node_cli`]: `globular node list` and friends;
//! - [`services`]: starting etcd and the API (systemd or spawned);
//! - [`layout`]: the state directory; [`tls`]: rustls configurations.

pub mod agent;
pub mod api;
pub mod cli;
pub mod datasource;
pub mod etcd;
pub mod layout;
pub mod logging;
pub mod node_cli;
pub mod server;
pub mod services;
pub mod tls;
