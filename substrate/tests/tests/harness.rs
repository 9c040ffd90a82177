//! A test substrate: a cluster CA, an etcd CA, a real etcd with client and
//! peer TLS trusting the etcd CA only, and the API served in-process on
//! `127.0.0.1:0` until the harness is dropped.

use std::net::{IpAddr, SocketAddr};
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use globular_cluster::pki::{Ca, LeafSpec};
use globular_cluster::registry::{self, ClusterRecord, EnrollmentPolicy};
use globular_cluster::token::{BootstrapToken, TokenRecord};
use globular_cluster::Role;
use globular_substrate::api::{self, Api, Limits};
use globular_substrate::etcd::Etcd;
use globular_substrate::retry::Retry;
use globular_substrate::tls;
use globular_task::Task;

use crate::ports::free_port;

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// The test cluster's policy: loopback addresses (its joiners are this
/// process), enrolled from one of them.
fn lab_policy() -> EnrollmentPolicy {
    EnrollmentPolicy {
        allow_loopback: true,
        ..EnrollmentPolicy::default()
    }
}

pub struct Substrate {
    /// etcd's data and log, the API's certificate files.
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    /// Kubernetes' client CA, an intermediate of `ca` that the API signs
    /// node certificates with (none: [`Substrate::start_without_kubernetes`]).
    pub kubernetes_ca: Option<Ca>,
    pub etcd_ca: Ca,
    /// The substrate's own etcd client (etcd CA certificate).
    pub etcd_db: Etcd,
    pub cluster_id: String,
    /// etcd's client and peer addresses (`127.0.0.1:port`).
    pub etcd_client: String,
    pub etcd_peer: String,
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
    /// etcd, the API in-process, and a worker token in the registry; the
    /// cluster accepts loopback addresses (its joiners are this process),
    /// enrolled from one of them.
    pub fn start() -> (Substrate, String) {
        Substrate::start_config(lab_policy(), Limits::default())
    }

    /// Like [`Substrate::start`], with the cluster's enrollment policy.
    pub fn start_with(policy: EnrollmentPolicy) -> (Substrate, String) {
        Substrate::start_config(policy, Limits::default())
    }

    /// [`Substrate::start`] with the API serving within `limits`.
    pub fn start_with_limits(limits: Limits) -> (Substrate, String) {
        Substrate::start_config(lab_policy(), limits)
    }

    /// [`Substrate::start`] with more etcd flags (`--quota-backend-bytes`).
    pub fn start_with_etcd_args(args: &[&str]) -> (Substrate, String) {
        Substrate::start_etcd(lab_policy(), Limits::default(), args, true)
    }

    /// [`Substrate::start`] for a cluster made before Kubernetes: the API
    /// holds no Kubernetes CA.
    pub fn start_without_kubernetes() -> (Substrate, String) {
        Substrate::start_etcd(lab_policy(), Limits::default(), &[], false)
    }

    fn start_config(policy: EnrollmentPolicy, limits: Limits) -> (Substrate, String) {
        Substrate::start_etcd(policy, limits, &[], true)
    }

    fn start_etcd(
        policy: EnrollmentPolicy,
        limits: Limits,
        etcd_args: &[&str],
        kubernetes: bool,
    ) -> (Substrate, String) {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("test").unwrap();
        let kubernetes_ca = kubernetes.then(|| {
            ca.generate_intermediate("globular-kubernetes-ca test")
                .unwrap()
        });
        let etcd_ca = Ca::generate_etcd("test").unwrap();
        // The control-plane identity the API serves and reaches etcd with.
        let (cp, cp_key) = ca
            .issue_with_new_key(&LeafSpec::node("cp1", Role::ControlPlane, &[LOOPBACK]))
            .unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let cert_path = write("cp1.crt", &cp.cert_pem);
        let key_path = write("cp1.key", &cp_key);
        // etcd's own identities, from the etcd CA.
        let etcd_spec = |cn: &str, server: bool| LeafSpec {
            common_name: cn.into(),
            role: None,
            group: None,
            dns_names: vec![],
            ips: vec![LOOPBACK],
            server,
            client: true,
            validity: None,
        };
        let (server, server_key) = etcd_ca
            .issue_with_new_key(&etcd_spec("cp1-etcd-server", true))
            .unwrap();
        let (client_cert, client_key) = etcd_ca
            .issue_with_new_key(&etcd_spec("globular-substrate", false))
            .unwrap();
        let etcd_ca_path = write("etcd-ca.crt", etcd_ca.cert_pem());
        let server_path = write("etcd-server.crt", &server.cert_pem);
        let server_key_path = write("etcd-server.key", &server_key);

        let (client, peer, metrics) = (free_port(), free_port(), free_port());
        let etcd_metrics = format!("127.0.0.1:{metrics}");
        let client_url = format!("https://127.0.0.1:{client}");
        let peer_url = format!("https://127.0.0.1:{peer}");
        let etcd = Task::new("starting etcd", "etcd")
            .arg("--name=t")
            .arg(format!("--data-dir={}", dir.path().join("etcd").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=t={peer_url}"))
            .arg(format!("--listen-metrics-urls=http://{etcd_metrics}"))
            .arg(format!("--cert-file={}", server_path.display()))
            .arg(format!("--key-file={}", server_key_path.display()))
            .arg(format!("--trusted-ca-file={}", etcd_ca_path.display()))
            .arg("--client-cert-auth")
            .arg(format!("--peer-cert-file={}", server_path.display()))
            .arg(format!("--peer-key-file={}", server_key_path.display()))
            .arg(format!("--peer-trusted-ca-file={}", etcd_ca_path.display()))
            .arg("--peer-client-cert-auth")
            .args(etcd_args)
            .spawn_logged(&dir.path().join("etcd.log"))
            .unwrap();

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let etcd_client = Etcd::new(
            vec![client_url],
            etcd_ca.cert_pem(),
            &client_cert.cert_pem,
            &client_key,
        )
        .unwrap();
        let cluster = ClusterRecord {
            name: "test".into(),
            id: "0123456789abcdef0123456789abcdef".into(),
            ca_cert_hash: ca.pin(),
            policy,
            domain: "example.internal".into(),
            certificate_lifetime: globular_cluster::pki::default_lifetime_seconds(),
        };
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
            let value = serde_json::to_vec(&cluster).unwrap();
            assert!(etcd.create(&registry::cluster_key(), &value).await.unwrap());
        });

        let tls = tls::server_config(&cert_path, &key_path, ca.cert_pem()).unwrap();
        let ca_again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let mut api = Api::new(ca_again, etcd_client.clone(), "test".into());
        if let Some(k) = &kubernetes_ca {
            api = api.with_kubernetes_ca(Ca::from_pem(k.cert_pem(), k.key_pem()).unwrap());
        }
        let api = Arc::new(api);
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
            dir,
            ca,
            kubernetes_ca,
            etcd_ca,
            etcd_db: etcd_client,
            cluster_id: cluster.id,
            etcd_client: format!("127.0.0.1:{client}"),
            etcd_peer: format!("127.0.0.1:{peer}"),
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
