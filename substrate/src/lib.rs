//! The Globular substrate: what runs on control-plane nodes behind the
//! substrate API.
//!
//! - [`api`]: the HTTP API, one module per route group, its server loop and
//!   the group commit of enrollments; it can be started in-process
//!   ([`api::serve`] takes a listener and a shutdown future);
//! - [`dns`]: the DNS authority for the cluster zone, following the
//!   registry ([`dns::run`] takes its sockets and a shutdown future);
//! - [`etcd`]: the etcd client (its gRPC gateway, with the node's certificate);
//! - [`tls`]: rustls configurations (CA-pinned, mTLS, the reloading server
//!   certificate);
//! - [`client`]: the one API client (endpoint failover, pinned or mTLS),
//!   used by the agent's enrollment and by the node CLI;
//! - [`retry`]: the one retry helper (deadline, backoff, what is retried).

pub mod api;
pub mod client;
pub mod dns;
pub mod etcd;
pub mod retry;
pub mod tls;

pub use client::Client;
