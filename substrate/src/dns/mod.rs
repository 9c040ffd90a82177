//! The DNS authority for the cluster zone `<cluster>.<domain>`, answering
//! from the registry on every control-plane node (docs/dns.md).
//!
//! - [`zone`]: the records, built from one read of the registry;
//! - [`nodes`]: the node names, kept from one zone to the next;
//! - [`names`]: registry names as DNS labels;
//! - [`follow`]: the zone follows the registry (an etcd watch);
//! - [`answer`]: one request to one response, with no I/O (the fuzz target);
//! - [`cache`]: a UDP worker's encoded responses;
//! - [`rrl`]: response-rate limiting per source;
//! - [`server`]: the UDP and TCP loops over injected sockets;
//! - [`probe`]: asks an authority for its SOA (the health loop's check).
//!
//! hickory-proto reads and writes the wire format; the server is ours (see
//! docs/dns.md for why not hickory-server).

pub mod answer;
mod cache;
pub mod follow;
pub mod names;
pub mod nodes;
pub mod probe;
pub mod rrl;
pub mod server;
pub mod zone;

use std::future::Future;

use tokio::sync::watch;

use crate::etcd::Etcd;
pub use nodes::ZoneNode;
pub use rrl::RateLimit;
pub use server::{Limits, Listeners, ZoneWatch};
pub use zone::{Registry, Zone};

/// Serves the zone of the registry in `etcd` on `listeners` until
/// `shutdown` completes: the follower and the server together.
pub async fn run(
    etcd: Etcd,
    listeners: Listeners,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let (zone, zone_watch) = watch::channel(None);
    let (stop, stopped) = watch::channel(());
    let mut stopped_too = stopped.clone();
    let follower = follow::follow(etcd, zone, async move {
        let mut stopped = stopped;
        let _ = stopped.changed().await;
    });
    let server = server::serve(listeners, zone_watch, limits, async move {
        let _ = stopped_too.changed().await;
    });
    tokio::join!(follower, server, async move {
        shutdown.await;
        drop(stop);
    });
}
