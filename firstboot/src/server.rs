//! `globular serve`: runs the substrate API of an enrolled control-plane node.

use std::sync::Arc;

use anyhow::Context as _;
use globular_cluster::pki::Ca;
use tokio::net::TcpListener;

use globular_substrate::api::{self, Api};
use globular_substrate::etcd::Etcd;
use globular_substrate::tls;

use crate::layout::Layout;
use crate::runtime::{self, Threads};

/// Loads the node's state and builds the API and its TLS configuration.
pub fn load(layout: &Layout) -> anyhow::Result<(Arc<Api>, Arc<rustls::ServerConfig>, String)> {
    let config = layout.load_node_config()?;
    let listen = config
        .api_listen
        .clone()
        .context("this node does not serve the substrate API (not a control-plane node)")?;
    let ca_pem = layout.read(&layout.ca_cert())?;
    let ca = Ca::from_pem(&ca_pem, &layout.read(&layout.ca_key())?).context("loading the CA")?;
    // etcd trusts its own CA only: the API reaches it with the substrate's
    // etcd client certificate, never with the node certificate.
    let etcd = Etcd::new(
        config.etcd_endpoints.clone(),
        &layout.read(&layout.etcd_ca_cert())?,
        &layout.read(&layout.etcd_cert("client"))?,
        &layout.read(&layout.etcd_key("client"))?,
    )?;
    let tls = tls::server_config(&layout.node_cert(), &layout.node_key(), &ca_pem)?;
    Ok((
        Arc::new(Api::new(ca, etcd, config.cluster_name)),
        Arc::new(tls),
        listen,
    ))
}

/// Serves until SIGTERM or Ctrl-C.
pub fn run(layout: &Layout) -> anyhow::Result<()> {
    // Each connection is a file: let the API's connection limits, not the
    // open-files limit, bound how many it holds.
    match api::raise_nofile_limit() {
        Ok(Some(n)) => tracing::info!("open-files limit {n}"),
        Ok(None) => tracing::info!("open-files limit: unlimited"),
        Err(e) => tracing::warn!("raising the open-files limit: {e}"),
    }
    let (api, tls, listen) = load(layout)?;
    runtime::block_on(Threads::PerCpu, async move {
        let listener = bind(&listen).with_context(|| format!("listening on {listen}"))?;
        tracing::info!("substrate API listening on {listen}");
        api::serve(listener, tls, api, shutdown_signal()).await;
        tracing::info!("substrate API stopped");
        Ok(())
    })
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
