//! `globular serve`: runs the substrate API of an enrolled control-plane node
//! and its DNS authority (docs/dns.md) in one process: both read the same
//! etcd with the same identity, and the DNS needs nothing the API does not
//! hold already.

use std::sync::Arc;

use anyhow::Context as _;
use globular_cluster::pki::Ca;
use tokio::net::TcpListener;

use globular_substrate::api::{self, Api};
use globular_substrate::dns;
use globular_substrate::etcd::Etcd;
use globular_substrate::tls;

use crate::layout::Layout;
use crate::runtime::{self, Threads};

/// What `globular serve` runs.
#[derive(Debug)]
pub struct Loaded {
    pub api: Arc<Api>,
    pub tls: Arc<rustls::ServerConfig>,
    /// The API's `IP:PORT`.
    pub listen: String,
    /// The substrate's etcd client (the DNS follows the registry with it).
    pub etcd: Etcd,
    /// The node's addresses (`IP/PREFIX`): the DNS listens on each.
    pub addresses: Vec<String>,
}

/// Loads the node's state and builds the API and its TLS configuration.
pub fn load(layout: &Layout) -> anyhow::Result<Loaded> {
    let config = layout.load_node_config()?;
    let listen = config
        .api_listen
        .clone()
        .context("this node does not serve the substrate API (not a control-plane node)")?;
    let ca_pem = layout.read(&layout.ca_cert())?;
    let ca = Ca::from_pem(&ca_pem, &layout.read(&layout.ca_key())?).context("loading the CA")?;
    // etcd trusts its own CA only: the API reaches it with the substrate's
    // etcd client certificate and user, never with the node certificate.
    let etcd = crate::etcd_client::substrate(layout, config.etcd_endpoints.clone())?;
    let tls = tls::server_config(&layout.node_cert(), &layout.node_key(), &ca_pem)?;
    let mut api = Api::new(ca, etcd.clone(), config.cluster_name);
    // Kubernetes' client CA, when the seed had it: the API signs Kubernetes
    // node certificates with it (workers hold no CA key).
    let kubernetes_key = layout.kubernetes_secret("kubernetes-ca", "key");
    if kubernetes_key.exists() {
        let cert = layout.kubernetes_secret("kubernetes-ca", "crt");
        let kubernetes = Ca::from_pem(&layout.read(&cert)?, &layout.read(&kubernetes_key)?)
            .with_context(|| format!("loading {}", cert.display()))?;
        api = api.with_kubernetes_ca(kubernetes);
    }
    Ok(Loaded {
        api: Arc::new(api),
        tls: Arc::new(tls),
        listen,
        etcd,
        addresses: config.addresses,
    })
}

/// Serves until SIGTERM or Ctrl-C; the DNS on `dns_port` (0: none).
pub fn run(layout: &Layout, dns_port: u16) -> anyhow::Result<()> {
    // Each connection is a file: let the API's connection limits, not the
    // open-files limit, bound how many it holds.
    match api::raise_nofile_limit() {
        Ok(Some(n)) => tracing::info!("open-files limit {n}"),
        Ok(None) => tracing::info!("open-files limit: unlimited"),
        Err(e) => tracing::warn!("raising the open-files limit: {e}"),
    }
    let loaded = load(layout)?;
    runtime::block_on(Threads::PerCpu, async move {
        let listen = &loaded.listen;
        let listener = bind(listen).with_context(|| format!("listening on {listen}"))?;
        tracing::info!("substrate API listening on {listen}");
        let (stop, stopped) = tokio::sync::watch::channel(());
        if dns_port != 0 {
            tokio::spawn(serve_dns(
                loaded.etcd.clone(),
                loaded.addresses.clone(),
                dns_port,
                stopped,
            ));
        }
        api::serve(listener, loaded.tls, loaded.api, shutdown_signal()).await;
        drop(stop);
        tracing::info!("substrate API stopped");
        Ok(())
    })
}

/// How often binding the DNS sockets is tried again after a failure.
const DNS_BIND_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// The DNS authority on every address's `port`, UDP and TCP, until `stop`
/// is dropped. A failure to bind (the address not up yet, the port taken)
/// leaves the API serving and is tried again every few seconds.
async fn serve_dns(
    etcd: Etcd,
    addresses: Vec<String>,
    port: u16,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    let mut failures = 0u32;
    let listeners = loop {
        match dns_listeners(&addresses, port).await {
            Ok(listeners) => break listeners,
            // Said once; a test cluster on one host has all its nodes on
            // 127.0.0.1 and only one of them gets the port.
            Err(e) if failures == 0 => tracing::error!("DNS authority: {e:#}; trying again"),
            Err(e) => tracing::debug!("DNS authority: {e:#}; trying again"),
        }
        failures += 1;
        tokio::select! {
            _ = tokio::time::sleep(DNS_BIND_RETRY) => {}
            _ = stop.changed() => return,
        }
    };
    tracing::info!(
        "DNS authority listening on port {port} of {}",
        addresses.join(", ")
    );
    dns::run(etcd, listeners, dns::Limits::default(), async move {
        let _ = stop.changed().await;
    })
    .await;
}

async fn dns_listeners(addresses: &[String], port: u16) -> anyhow::Result<dns::Listeners> {
    let mut listeners = dns::Listeners::default();
    for address in addresses {
        let ip: std::net::IpAddr = address
            .split('/')
            .next()
            .unwrap_or_default()
            .parse()
            .with_context(|| format!("address {address:?}"))?;
        let at = std::net::SocketAddr::new(ip, port);
        listeners.udp.push(
            tokio::net::UdpSocket::bind(at)
                .await
                .with_context(|| format!("binding {at}/udp"))?,
        );
        listeners
            .tcp
            .push(bind(&at.to_string()).with_context(|| format!("binding {at}/tcp"))?);
    }
    Ok(listeners)
}

/// Binds with a deep accept queue: a crowd of joiners connects at once.
fn bind(listen: &str) -> anyhow::Result<TcpListener> {
    let addr: std::net::SocketAddr = listen.parse().context("not IP:PORT")?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket.listen(4096)?)
}

/// SIGTERM or Ctrl-C (also `globular firewall`'s end).
pub(crate) async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
