//! The DNS server loops: UDP workers and TCP connections over injected
//! sockets, answering from the current zone snapshot.
//!
//! UDP: a few workers per socket, each receiving, answering ([`respond`])
//! and sending on its own; the rate limiter ([`Limiter`]) decides whether
//! a response goes out. TCP (RFC 7766): the two-byte length framing, several
//! queries per connection answered in order, at most
//! [`Limits::tcp_connections`] connections, each closed after
//! [`Limits::tcp_idle`] without a query.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::answer::{respond, truncated, Transport};
use super::cache::Cache;
use super::rrl::{Limiter, RateLimit, Verdict};
use super::zone::Zone;

/// The zone as the follower publishes it: `None` until the registry was read.
pub type ZoneWatch = watch::Receiver<Option<Arc<Zone>>>;

/// The sockets to serve on (bound by the caller: port 53 needs privilege,
/// tests bind `127.0.0.1:0`).
#[derive(Debug, Default)]
pub struct Listeners {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
}

/// How much the server takes on.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Per source network over UDP; `None` turns it off (benchmarks).
    pub rate_limit: Option<RateLimit>,
    /// Open TCP connections in all.
    pub tcp_connections: usize,
    /// A TCP connection without a query for this long is closed.
    pub tcp_idle: Duration,
    /// UDP workers per socket.
    pub udp_workers: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            rate_limit: Some(RateLimit::default()),
            tcp_connections: 1024,
            tcp_idle: Duration::from_secs(10),
            udp_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// The largest UDP request read; larger ones arrive cut and are dropped as
/// malformed.
const UDP_RECEIVE: usize = 4096;

/// Serves `zone` on `listeners` within `limits` until `shutdown` completes.
pub async fn serve(
    listeners: Listeners,
    zone: ZoneWatch,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let limiter = limits.rate_limit.map(|l| Arc::new(Limiter::new(l)));
    let connections = Arc::new(Semaphore::new(limits.tcp_connections));
    // Dropping `stop` ends every TCP connection.
    let (stop, stopped) = watch::channel(());
    let mut tasks = JoinSet::new();
    for socket in listeners.udp {
        let socket = Arc::new(socket);
        for _ in 0..limits.udp_workers.max(1) {
            tasks.spawn(udp_worker(socket.clone(), zone.clone(), limiter.clone()));
        }
    }
    for listener in listeners.tcp {
        tasks.spawn(tcp_accept(
            listener,
            zone.clone(),
            connections.clone(),
            limits.tcp_idle,
            stopped.clone(),
        ));
    }
    shutdown.await;
    drop(stop);
    tasks.shutdown().await;
}

async fn udp_worker(socket: Arc<UdpSocket>, mut zone: ZoneWatch, limiter: Option<Arc<Limiter>>) {
    let mut buffer = vec![0u8; UDP_RECEIVE];
    let mut current = zone.borrow_and_update().clone();
    let mut cache = Cache::default();
    loop {
        let (len, source) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(e) => {
                // An ICMP error for an earlier answer surfaces here.
                tracing::debug!("dns: receiving: {e}");
                continue;
            }
        };
        if zone.has_changed().unwrap_or(false) {
            current = zone.borrow_and_update().clone();
        }
        let request = &buffer[..len];
        let Some(response) = cache.answer(current.as_ref(), request, || {
            respond(current.as_deref(), request, Transport::Udp)
        }) else {
            continue;
        };
        let verdict = match &limiter {
            Some(limiter) => limiter.check(source.ip(), Instant::now()),
            None => Verdict::Send,
        };
        let sent = match verdict {
            Verdict::Send => socket.send_to(response, source).await,
            Verdict::Slip => match truncated(response) {
                Some(tc) => socket.send_to(&tc, source).await,
                None => continue,
            },
            Verdict::Drop => continue,
        };
        if let Err(e) = sent {
            tracing::debug!("dns: answering {source}: {e}");
        }
    }
}

async fn tcp_accept(
    listener: TcpListener,
    zone: ZoneWatch,
    connections: Arc<Semaphore>,
    idle: Duration,
    stopped: watch::Receiver<()>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("dns: accepting a TCP connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!("dns: closing the connection from {peer}: too many connections");
            continue;
        };
        let zone = zone.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tcp_connection(stream, peer, zone, idle) => {}
                _ = stopped.changed() => {}
            }
            drop(permit);
        });
    }
}

async fn tcp_connection(mut stream: TcpStream, peer: SocketAddr, zone: ZoneWatch, idle: Duration) {
    let _ = stream.set_nodelay(true);
    let mut request = Vec::new();
    loop {
        let len = match tokio::time::timeout(idle, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            _ => return,
        };
        request.resize(len, 0);
        // The rest of a query comes promptly or not at all.
        match tokio::time::timeout(idle, stream.read_exact(&mut request)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let current = zone.borrow().clone();
        let Some(response) = respond(current.as_deref(), &request, Transport::Tcp) else {
            tracing::debug!("dns: dropping a malformed query from {peer} and its connection");
            return;
        };
        let mut framed = Vec::with_capacity(response.len() + 2);
        framed.extend_from_slice(&(response.len() as u16).to_be_bytes());
        framed.extend_from_slice(&response);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
