//! The substrate API: HTTPS on port 10016, client certificates optional at
//! the TLS layer and required per route.
//!
//! | route | caller | does |
//! |---|---|---|
//! | `POST /v1/enroll` | a node's ticket, or a token for a new name | CSR + role + addresses → certificate |
//! | `POST /v1/renew` | enrolled node (mTLS, current key) | CSR for its own name → certificate with the presented role and SANs |
//! | `GET /v1/nodes` | enrolled node | the node registry |
//! | `POST /v1/tokens` | control-plane node | a new bootstrap token |
//! | `POST /api/register` | enrolled node | register a service instance |
//! | `GET /api/services` | enrolled node | list service instances (`?name=`) |
//! | `GET /v1/dns` | enrolled node | the DNS zone, record by record |
//! | `POST /v1/kubernetes/node-certificate` | enrolled node | CSR for its Kubernetes identity (`system:node:<name>`) → certificate from Kubernetes' CA |
//! | `GET /healthz` | anyone | liveness |
//!
//! One module per route group: [`enroll`], [`renew`], [`nodes`], [`tokens`],
//! [`services`], [`dns`], [`kubernetes`]; [`auth`] checks callers, [`batch`] is the group commit of
//! enrollments, [`server`] the accept loop within [`Limits`]. Route paths are
//! [`globular_cluster::protocol::routes`].
//!
//! All state lives in etcd (key layout in [`globular_cluster::registry`]), so
//! every control-plane node serves the same truth. A refusal is a JSON
//! [`ErrorBody`] and nothing is written or issued.

mod addresses;
mod auth;
mod batch;
mod dns;
mod enroll;
mod error;
mod kubernetes;
mod limits;
mod nodes;
mod renew;
mod server;
mod services;
mod tokens;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::routing::{get, post};
use axum::Router;
use globular_cluster::pki::{Ca, CertIdentity};
use globular_cluster::protocol::{routes, EnrollResponse};
use globular_cluster::registry::{self, ClusterRecord, ServiceRecord, API_SERVICE};
use globular_cluster::seed;
use time::OffsetDateTime;

use crate::etcd::Etcd;
use batch::{create_batches, CreateJob};
pub use error::{ApiError, INTERNAL_ERROR};
pub use limits::{raise_nofile_limit, Limits};
pub use server::{serve, serve_with};
pub use services::service_record;
pub use tokens::{UNKNOWN_TOKEN_BURST, UNKNOWN_TOKEN_RATE};

/// What a handler needs: the CA (to sign) and etcd (the truth).
#[derive(Debug)]
pub struct Api {
    ca: Ca,
    /// Kubernetes' client CA, on control planes whose seed has it.
    kubernetes_ca: Option<Ca>,
    etcd: Etcd,
    cluster_name: String,
    endpoints: tokio::sync::Mutex<Option<(Instant, Endpoints)>>,
    /// Node records to create, batched by [`create_batches`].
    creates: tokio::sync::mpsc::UnboundedSender<CreateJob>,
    creates_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<CreateJob>>>,
    /// Token records and unknown token ids recently read from etcd.
    tokens: tokens::TokenCache,
    /// The cluster record (id, enrollment policy), read once.
    cluster: tokio::sync::OnceCell<ClusterRecord>,
}

#[derive(Debug, Clone)]
struct Endpoints {
    etcd: Vec<String>,
    api: Vec<String>,
}

/// The verified client certificate of a connection, if any.
#[derive(Debug, Clone)]
pub struct Peer(pub Option<CertIdentity>);

/// The source address of a connection, if known.
#[derive(Debug, Clone, Copy)]
pub struct Remote(pub Option<std::net::IpAddr>);

impl Api {
    pub fn new(ca: Ca, etcd: Etcd, cluster_name: String) -> Api {
        let (creates, creates_rx) = tokio::sync::mpsc::unbounded_channel();
        Api {
            creates,
            creates_rx: std::sync::Mutex::new(Some(creates_rx)),
            ca,
            kubernetes_ca: None,
            etcd,
            cluster_name,
            endpoints: tokio::sync::Mutex::new(None),
            tokens: tokens::TokenCache::new(),
            cluster: tokio::sync::OnceCell::new(),
        }
    }

    /// Signs Kubernetes node certificates with `ca` (Kubernetes' client
    /// CA); without it that route refuses.
    pub fn with_kubernetes_ca(mut self, ca: Ca) -> Api {
        self.kubernetes_ca = Some(ca);
        self
    }

    /// The cluster record: written once at bootstrap, read once here.
    async fn cluster(&self) -> Result<&ClusterRecord, ApiError> {
        Ok(self
            .cluster
            .get_or_try_init(|| async {
                let (value, _) = self
                    .etcd
                    .get(&registry::cluster_key())
                    .await?
                    .context("the cluster record is missing")?;
                serde_json::from_slice::<ClusterRecord>(&value)
                    .context("parsing the cluster record")
            })
            .await?)
    }

    pub fn router(self: Arc<Api>) -> Router {
        Router::new()
            .route(routes::HEALTHZ.path, get(|| async { "ok" }))
            .route(routes::ENROLL.path, post(enroll::enroll))
            .route(routes::RENEW.path, post(renew::renew))
            .route(routes::NODES.path, get(nodes::nodes))
            .route(routes::SELF.path, get(nodes::own))
            .route(routes::TOKENS.path, post(tokens::tokens))
            .route(routes::REGISTER.path, post(services::register))
            .route(routes::SERVICES.path, get(services::services))
            .route(routes::DNS.path, get(dns::zone))
            .route(
                routes::KUBERNETES_NODE_CERTIFICATE.path,
                post(kubernetes::node_certificate),
            )
            .with_state(self)
    }

    /// The group-commit writer, started on first use.
    fn batcher(&self) -> &tokio::sync::mpsc::UnboundedSender<CreateJob> {
        let rx = self
            .creates_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(rx) = rx {
            tokio::spawn(create_batches(self.etcd.clone(), rx));
        }
        &self.creates
    }

    async fn endpoints(&self) -> anyhow::Result<Endpoints> {
        let mut cache = self.endpoints.lock().await;
        if let Some((at, eps)) = &*cache {
            if at.elapsed() < Duration::from_secs(2) {
                return Ok(eps.clone());
            }
        }
        let mut etcd: Vec<String> = self
            .etcd
            .members()
            .await?
            .into_iter()
            .filter(|m| !m.is_learner)
            .flat_map(|m| m.client_urls)
            .collect();
        etcd.sort();
        etcd.dedup();
        let api = self
            .etcd
            .list(&format!("{}{API_SERVICE}/", registry::services_prefix()))
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<ServiceRecord>(&v).ok())
            .filter_map(|s| Some(seed::host_port(s.address.parse().ok()?, s.port)))
            .collect();
        let eps = Endpoints { etcd, api };
        *cache = Some((Instant::now(), eps.clone()));
        Ok(eps)
    }

    async fn response(&self, certificate: String) -> Result<EnrollResponse, ApiError> {
        let eps = self.endpoints().await?;
        Ok(EnrollResponse {
            certificate,
            ca_bundle: self.ca.cert_pem().to_owned(),
            etcd_endpoints: eps.etcd,
            api_endpoints: eps.api,
            cluster_name: self.cluster_name.clone(),
        })
    }
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}
