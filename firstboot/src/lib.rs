//! The Globular node agent.
//!
//! - [`agent`]: `globular firstboot`, the state machine that turns a generic
//!   image plus a seed ([`datasource`]) into a cluster member;
//! - [`server`]: `globular serve`, the substrate API of this node
//!   ([`globular_substrate::api`]) with the node's state;
//! - [`node_cli`]: `globular node list` and friends, through the one API
//!   client ([`globular_substrate::Client`]);
//! - [`renew`]: certificate renewal (`globular cert renew`); [`certs`]: the
//!   node's certificates and their expiry (`globular cert status`);
//! - [`services`]: starting etcd and the API (systemd or spawned);
//!   [`health`]: `globular health`, the loop that keeps them running and
//!   clears etcd's `NOSPACE`;
//!   [`ownership`]: on images, what their system users may read;
//! - [`firewall`]: `globular firewall`, the nftables ruleset and the
//!   control-plane address set that follows the registry;
//! - [`etcd_client`]: the substrate's etcd client and etcd's auth;
//! - [`kubeconfig`]: `globular kubeconfig`, a short-lived admin kubeconfig;
//! - [`package`]: `globular apply`, the package installer (Kubernetes);
//! - [`backup`]: `globular backup`, encrypted snapshots of the cluster;
//! - [`images`]: `globular image import`, OCI archives into containerd;
//! - [`layout`]: the state directory; [`runtime`]: the tokio runtime.

pub mod agent;
pub mod backup;
pub mod certs;
pub mod cli;
pub mod datasource;
pub mod etcd_client;
pub mod firewall;
pub mod health;
pub mod images;
pub mod kubeconfig;
pub mod layout;
pub mod node_cli;
pub mod ownership;
pub mod package;
pub mod pod_routes;
pub mod renew;
pub mod rotation;
pub mod runtime;
pub mod server;
pub mod services;
pub mod upgrade;
