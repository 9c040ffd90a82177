//! A test substrate: a CA, a real etcd with client TLS, and the API served
//! in-process on `127.0.0.1:0` until the harness is dropped.

use std::net::{IpAddr, SocketAddr};
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use globular_cluster::pki::{Ca, LeafSpec};
use globular_cluster::registry;
use globular_cluster::token::{BootstrapToken, TokenRecord};
use globular_cluster::Role;
use globular_substrate::api::{self, Api, Limits};
use globular_substrate::etcd::Etcd;
use globular_substrate::retry::Retry;
use globular_substrate::tls;
use globular_task::Task;

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind((LOOPBACK, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Substrate {
    /// etcd's data and log, the API's certificate files.
    _dir: tempfile::TempDir,
    pub ca: Ca,
    /// The API's address (`127.0.0.1:port`).
    pub api: String,
    /// etcd's plain-HTTP metrics address (`127.0.0.1:port`).
    pub etcd_metrics: String,
    pub runtime: tokio::runtime::Runtime,
    etcd: Child,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Substrate {
    /// etcd, the API in-process, and a worker token in the registry.
    pub fn start() -> (Substrate, String) {
        Substrate::start_with(Limits::default())
    }

    /// [`Substrate::start`] with the API serving within `limits`.
    pub fn start_with(limits: Limits) -> (Substrate, String) {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("test").unwrap();
        // The control-plane identity the API serves and reaches etcd with.
        let (cp, cp_key) = ca
            .issue_with_new_key(&LeafSpec::node("cp1", Role::ControlPlane, &[LOOPBACK]))
            .unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let ca_path = write("ca.crt", ca.cert_pem());
        let cert_path = write("cp1.crt", &cp.cert_pem);
        let key_path = write("cp1.key", &cp_key);

        let (client, peer, metrics) = (free_port(), free_port(), free_port());
        let etcd_metrics = format!("127.0.0.1:{metrics}");
        let client_url = format!("https://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let etcd = Task::new("starting etcd", "etcd")
            .package("etcd-server")
            .arg("--name=t")
            .arg(format!("--data-dir={}", dir.path().join("etcd").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=t={peer_url}"))
            .arg(format!("--listen-metrics-urls=http://{etcd_metrics}"))
            .arg(format!("--cert-file={}", cert_path.display()))
            .arg(format!("--key-file={}", key_path.display()))
            .arg(format!("--trusted-ca-file={}", ca_path.display()))
            .arg("--client-cert-auth")
            .spawn_logged(&dir.path().join("etcd.log"))
            .unwrap();

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let etcd_client =
            Etcd::new(vec![client_url], ca.cert_pem(), &cp.cert_pem, &cp_key).unwrap();
        let token = BootstrapToken::generate();
        let record =
            TokenRecord::new(&token, vec![Role::Worker], time::Duration::hours(1)).unwrap();
        runtime.block_on(async {
            let etcd = &etcd_client;
            let retry = Retry::every(Duration::from_millis(100), Duration::from_secs(30));
            assert!(
                etcd.wait_healthy(retry).await,
                "etcd did not become healthy"
            );
            let value = serde_json::to_vec(&record).unwrap();
            assert!(etcd
                .create(&registry::token_key(token.id()), &value)
                .await
                .unwrap());
        });

        let tls = tls::server_config(&cert_path, &key_path, ca.cert_pem()).unwrap();
        let ca_again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let api = Arc::new(Api::new(ca_again, etcd_client, "test".into()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
                LOOPBACK, 0,
            ))))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = runtime.spawn(api::serve_with(
            listener,
            Arc::new(tls),
            api,
            limits,
            async {
                let _ = rx.await;
            },
        ));
        let substrate = Substrate {
            _dir: dir,
            ca,
            api: addr,
            etcd_metrics,
            runtime,
            etcd,
            shutdown: Some(tx),
            server: Some(server),
        };
        (substrate, token.expose())
    }

    /// Stops the server loop: the shutdown future completes and `serve`
    /// returns. Returns whether it did within 5 s.
    pub fn stop(&mut self) -> bool {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let Some(server) = self.server.take() else {
            return true;
        };
        self.runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), server).await })
            .is_ok()
    }

    /// Kills etcd: the API stays up and its etcd calls fail.
    pub fn kill_etcd(&mut self) {
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

impl Drop for Substrate {
    fn drop(&mut self) {
        self.stop();
        self.kill_etcd();
    }
}
