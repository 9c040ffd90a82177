//! The substrate API: HTTPS on port 10016, client certificates optional at
//! the TLS layer and required per route.
//!
//! | route | caller | does |
//! |---|---|---|
//! | `POST /v1/enroll` | anyone with a token | token + CSR + role → certificate |
//! | `POST /v1/renew` | enrolled node (mTLS) | CSR for its own name → certificate |
//! | `GET /v1/nodes` | enrolled node | the node registry |
//! | `POST /v1/tokens` | control-plane node | a new bootstrap token |
//! | `POST /api/register` | enrolled node | register a service instance |
//! | `GET /api/services` | enrolled node | list service instances (`?name=`) |
//! | `GET /healthz` | anyone | liveness |
//!
//! All state lives in etcd (key layout in [`globular_cluster::registry`]), so
//! every control-plane node serves the same truth. A refusal is a JSON
//! [`ErrorBody`] and nothing is written or issued.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use globular_cluster::pki::{self, Ca, CertIdentity, LeafSpec};
use globular_cluster::protocol::{
    EnrollRequest, EnrollResponse, ErrorBody, NodeList, RegisterRequest, RenewRequest, ServiceList,
    TokenRequest, TokenResponse,
};
use globular_cluster::registry::{self, NodeRecord, ServiceRecord};
use globular_cluster::token::{BootstrapToken, TokenError, TokenRecord};
use globular_cluster::{seed, Role};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use time::OffsetDateTime;
use tokio::net::TcpListener;

use crate::etcd::Etcd;

/// Service name under which each control-plane node registers its API.
pub const API_SERVICE: &str = "globular.SubstrateApi";
/// Service name under which each control-plane node registers its etcd.
pub const ETCD_SERVICE: &str = "globular.Etcd";

/// What a handler needs: the CA (to sign) and etcd (the truth).
#[derive(Debug)]
pub struct Api {
    ca: Ca,
    etcd: Etcd,
    cluster_name: String,
    endpoints: tokio::sync::Mutex<Option<(Instant, Endpoints)>>,
    /// Node records to create, batched by [`create_batches`].
    creates: tokio::sync::mpsc::UnboundedSender<CreateJob>,
    creates_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<CreateJob>>>,
    /// Token records read in the last [`TOKEN_CACHE`].
    tokens: std::sync::Mutex<std::collections::HashMap<String, (Instant, TokenRecord)>>,
}

/// How long a token record read from etcd is reused: a new token works at
/// once, a deleted one may still be accepted for this long.
const TOKEN_CACHE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct Endpoints {
    etcd: Vec<String>,
    api: Vec<String>,
}

/// The verified client certificate of a connection, if any.
#[derive(Debug, Clone)]
pub struct Peer(pub Option<CertIdentity>);

/// A refusal or failure, as HTTP status and message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        tracing::error!("internal error: {e:#}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("request body: {e}")))
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

impl Api {
    pub fn new(ca: Ca, etcd: Etcd, cluster_name: String) -> Api {
        let (creates, creates_rx) = tokio::sync::mpsc::unbounded_channel();
        Api {
            creates,
            creates_rx: std::sync::Mutex::new(Some(creates_rx)),
            ca,
            etcd,
            cluster_name,
            endpoints: tokio::sync::Mutex::new(None),
            tokens: Default::default(),
        }
    }

    pub fn router(self: Arc<Api>) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/v1/enroll", post(enroll))
            .route("/v1/renew", post(renew))
            .route("/v1/nodes", get(nodes))
            .route("/v1/tokens", post(tokens))
            .route("/api/register", post(register))
            .route("/api/services", get(services))
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

/// How long the group-commit writer waits for more enrollments.
const BATCH_LINGER: Duration = Duration::from_millis(2);

/// The answer to a compare-and-create: `None` if created, else the stored
/// value and its mod revision.
type Created = anyhow::Result<Option<(Vec<u8>, i64)>>;

/// A compare-and-create of one key and where its answer goes.
type CreateJob = (String, Vec<u8>, tokio::sync::oneshot::Sender<Created>);

/// Group commit of enrollments: the creates that queue up while one etcd
/// transaction is in flight go into the next one (up to etcd's limit of
/// operations per transaction). If any key of a batch exists, each is
/// retried on its own so that one answer does not depend on another.
async fn create_batches(etcd: Etcd, mut rx: tokio::sync::mpsc::UnboundedReceiver<CreateJob>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        // Linger briefly: an etcd transaction costs about a millisecond of
        // etcd CPU however many keys it writes.
        let linger = tokio::time::Instant::now() + BATCH_LINGER;
        while batch.len() < crate::etcd::MAX_TXN_OPS {
            match tokio::time::timeout_at(linger, rx.recv()).await {
                Ok(Some(job)) => batch.push(job),
                Ok(None) | Err(_) => break,
            }
        }
        let mut keys: Vec<&str> = batch.iter().map(|(k, _, _)| k.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        if batch.len() > 1 && keys.len() == batch.len() {
            let entries: Vec<(String, Vec<u8>)> = batch
                .iter()
                .map(|(k, v, _)| (k.clone(), v.clone()))
                .collect();
            match etcd.create_all(&entries).await {
                Ok(true) => {
                    for (_, _, reply) in batch {
                        let _ = reply.send(Ok(None));
                    }
                    continue;
                }
                Ok(false) => {}
                Err(e) => {
                    for (_, _, reply) in batch {
                        let _ = reply.send(Err(anyhow::anyhow!("{e:#}")));
                    }
                    continue;
                }
            }
        }
        for (key, value, reply) in batch {
            let etcd = etcd.clone();
            tokio::spawn(async move {
                let _ = reply.send(etcd.create_or_get(&key, &value).await);
            });
        }
    }
}

/// Checks a token against the records in etcd.
async fn check_token(api: &Api, token: &str, role: Role) -> Result<(), ApiError> {
    let token =
        BootstrapToken::parse(token).map_err(|e| ApiError::forbidden(format!("token: {e}")))?;
    let cached = api
        .tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(token.id())
        .filter(|(at, _)| at.elapsed() < TOKEN_CACHE)
        .map(|(_, r)| r.clone());
    let record = match cached {
        Some(record) => record,
        None => {
            let (value, _) = api
                .etcd
                .get(&registry::token_key(token.id()))
                .await?
                .ok_or_else(|| {
                    ApiError::forbidden(format!(
                        "token: {}",
                        TokenError::Unknown(token.id().into())
                    ))
                })?;
            let record: TokenRecord =
                serde_json::from_slice(&value).context("parsing a token record")?;
            api.tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(token.id().to_owned(), (Instant::now(), record.clone()));
            record
        }
    };
    record
        .check(&token, role, OffsetDateTime::now_utc())
        .map_err(|e| ApiError::forbidden(format!("token: {e}")))
}

fn parse_ips(addresses: &[String]) -> Result<Vec<IpAddr>, ApiError> {
    addresses
        .iter()
        .enumerate()
        .map(|(i, a)| {
            seed::parse_cidr(a)
                .map(|(ip, _)| ip)
                .map_err(|e| ApiError::bad(format!("addresses[{i}]: {e}")))
        })
        .collect()
}

/// How often a re-enrollment retries when the record changes under it.
const REENROLL_ATTEMPTS: usize = 3;

/// Records a newly enrolled node, returns the certificate already issued to
/// the same node and key, or re-enrolls a node of the same role that comes
/// back with a new key (a wiped or reimaged node: its old certificate is
/// recorded as superseded).
async fn enroll_node(
    api: &Api,
    req: &EnrollRequest,
    public_key_der: &[u8],
) -> Result<String, ApiError> {
    let (ca, node, role) = (&api.ca, req.node.as_str(), req.role);
    let (addresses, image_version) = (&req.addresses, &req.image_version);
    let key = registry::node_key(node);
    let key_id = pki::spki_pin(public_key_der);
    // Issue first, then compare-and-create: one etcd round trip. If the node
    // exists with this key, the fresh certificate is dropped unsent and never
    // recorded, and the answer is the stored certificate.
    let ips = parse_ips(addresses)?;
    let issued = ca
        .issue(public_key_der, &LeafSpec::node(node, role, &ips))
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let now = now_unix();
    let record = NodeRecord {
        name: node.to_owned(),
        role,
        addresses: addresses.to_vec(),
        image_version: image_version.to_owned(),
        cert_serial: issued.serial.clone(),
        key_id: key_id.clone(),
        certificate: issued.cert_pem.clone(),
        enrolled_at: now,
        renewed_at: now,
        superseded: Vec::new(),
    };
    let value = serde_json::to_vec(&record).context("encoding a node record")?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    api.batcher()
        .send((key.clone(), value, tx))
        .map_err(|_| anyhow::anyhow!("the enrollment writer stopped"))?;
    let created = rx
        .await
        .map_err(|_| anyhow::anyhow!("the enrollment writer stopped"))??;
    let Some(mut stored) = created else {
        tracing::info!("enrolled {node} as {role}, certificate {}", issued.serial);
        return Ok(issued.cert_pem);
    };
    for _ in 0..REENROLL_ATTEMPTS {
        let (value, revision) = stored;
        let old: NodeRecord = serde_json::from_slice(&value).context("parsing a node record")?;
        if old.role != role {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "node {node} is enrolled as {}; a {role} enrollment cannot take its name",
                    old.role
                ),
            ));
        }
        if old.key_id == key_id {
            return Ok(old.certificate);
        }
        if old.is_superseded(&key_id) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("node {node}: this key was superseded by a later enrollment"),
            ));
        }
        let old_serial = old.cert_serial.clone();
        let new = old.reenrolled(record.clone());
        let value = serde_json::to_vec(&new).context("encoding a node record")?;
        if api.etcd.replace(&key, &value, revision).await? {
            tracing::warn!(
                "re-enrolled {node} as {role} with a new key: certificate {} supersedes {old_serial}",
                issued.serial
            );
            return Ok(issued.cert_pem);
        }
        stored = api.etcd.get(&key).await?.ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("node {node} was removed during its enrollment; retry"),
            )
        })?;
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        format!("node {node}: its record kept changing during the enrollment; retry"),
    ))
}

async fn enroll(State(api): State<Arc<Api>>, body: axum::body::Bytes) -> ApiResult<EnrollResponse> {
    let req: EnrollRequest = parse_body(&body)?;
    check_token(&api, &req.token, req.role).await?;
    if !globular_cluster::valid_node_name(&req.node) {
        return Err(ApiError::bad(format!(
            "node: {:?} is not a lowercase DNS label",
            req.node
        )));
    }
    let csr = pki::verify_csr(&req.csr).map_err(|e| ApiError::bad(format!("csr: {e}")))?;
    if csr.common_name != req.node {
        return Err(ApiError::forbidden(format!(
            "csr: asks for node name {:?} but the request is for {:?}",
            csr.common_name, req.node
        )));
    }
    let cert = enroll_node(&api, &req, &csr.public_key_der).await?;
    Ok(Json(api.response(cert).await?))
}

fn identity(peer: &Peer) -> Result<&CertIdentity, ApiError> {
    peer.0.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this route needs a client certificate",
        )
    })
}

/// The caller's identity, checked against its node record: the node is
/// enrolled and the certificate's key was not superseded by a
/// re-enrollment. Returns the record and its mod revision.
async fn authenticate<'p>(
    api: &Api,
    peer: &'p Peer,
) -> Result<(&'p CertIdentity, NodeRecord, i64), ApiError> {
    let id = identity(peer)?;
    let (value, revision) = api
        .etcd
        .get(&registry::node_key(&id.common_name))
        .await?
        .ok_or_else(|| ApiError::forbidden(format!("node {} is not enrolled", id.common_name)))?;
    let rec: NodeRecord = serde_json::from_slice(&value).context("parsing a node record")?;
    if rec.is_superseded(&pki::spki_pin(&id.public_key_der)) {
        return Err(ApiError::forbidden(format!(
            "the certificate {} of node {} was superseded when the node enrolled again",
            id.serial, id.common_name
        )));
    }
    Ok((id, rec, revision))
}

async fn renew(
    State(api): State<Arc<Api>>,
    Extension(peer): Extension<Peer>,
    body: axum::body::Bytes,
) -> ApiResult<EnrollResponse> {
    let (id, mut rec, revision) = authenticate(&api, &peer).await?;
    let req: RenewRequest = parse_body(&body)?;
    let csr = pki::verify_csr(&req.csr).map_err(|e| ApiError::bad(format!("csr: {e}")))?;
    if csr.common_name != id.common_name {
        return Err(ApiError::forbidden(format!(
            "csr: asks for {:?} but the caller is {:?}",
            csr.common_name, id.common_name
        )));
    }
    let key = registry::node_key(&id.common_name);
    let ips = parse_ips(&rec.addresses)?;
    let issued = api
        .ca
        .issue(
            &csr.public_key_der,
            &LeafSpec::node(&rec.name, rec.role, &ips),
        )
        .map_err(|e| ApiError::bad(e.to_string()))?;
    rec.cert_serial = issued.serial.clone();
    rec.key_id = csr.key_id();
    rec.certificate = issued.cert_pem.clone();
    rec.renewed_at = now_unix();
    let value = serde_json::to_vec(&rec).context("encoding a node record")?;
    if !api.etcd.replace(&key, &value, revision).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "node record changed; retry",
        ));
    }
    tracing::info!("renewed {}, certificate {}", rec.name, issued.serial);
    Ok(Json(api.response(issued.cert_pem).await?))
}

async fn nodes(
    State(api): State<Arc<Api>>,
    Extension(peer): Extension<Peer>,
) -> ApiResult<NodeList> {
    authenticate(&api, &peer).await?;
    let mut nodes = Vec::new();
    for (_, v) in api.etcd.list(&registry::nodes_prefix()).await? {
        nodes.push(serde_json::from_slice(&v).context("parsing a node record")?);
    }
    Ok(Json(NodeList { nodes }))
}

async fn tokens(
    State(api): State<Arc<Api>>,
    Extension(peer): Extension<Peer>,
    body: axum::body::Bytes,
) -> ApiResult<TokenResponse> {
    let (id, _, _) = authenticate(&api, &peer).await?;
    if id.role != Some(Role::ControlPlane) {
        return Err(ApiError::forbidden(
            "only control-plane nodes may create tokens",
        ));
    }
    let req: TokenRequest = parse_body(&body)?;
    if req.roles.is_empty() {
        return Err(ApiError::bad("roles: at least one role is required"));
    }
    if req.ttl_seconds <= 0 {
        return Err(ApiError::bad("ttl_seconds: must be positive"));
    }
    let token = BootstrapToken::generate();
    let mut record = TokenRecord::new(&token, req.roles, time::Duration::seconds(req.ttl_seconds));
    record.description = if req.description.is_empty() {
        format!("created by {}", id.common_name)
    } else {
        req.description
    };
    let value = serde_json::to_vec(&record).context("encoding a token record")?;
    if !api
        .etcd
        .create(&registry::token_key(token.id()), &value)
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "token id collision; retry",
        ));
    }
    Ok(Json(TokenResponse {
        token: token.expose(),
        expires: record
            .expires
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    }))
}

async fn register(
    State(api): State<Arc<Api>>,
    Extension(peer): Extension<Peer>,
    body: axum::body::Bytes,
) -> ApiResult<ServiceRecord> {
    let (id, _, _) = authenticate(&api, &peer).await?;
    let control_plane = id.role == Some(Role::ControlPlane);
    let req: RegisterRequest = parse_body(&body)?;
    let record = service_record(&id.common_name, req)?;
    // Joiners and the node CLI find the substrate through `globular.*`
    // records: only control-plane nodes may write them.
    if record.name.starts_with(RESERVED_PREFIX) && !control_plane {
        return Err(ApiError::forbidden(format!(
            "name: services named {RESERVED_PREFIX}* are registered by control-plane nodes only"
        )));
    }
    let key = registry::service_key(&record.name, &record.id);
    let value = serde_json::to_vec(&record).context("encoding a service record")?;
    match api.etcd.get(&key).await? {
        None => {
            if !api.etcd.create(&key, &value).await? {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "registration raced; retry",
                ));
            }
        }
        Some((old, revision)) => {
            let old: ServiceRecord =
                serde_json::from_slice(&old).context("parsing a service record")?;
            if old.node != record.node && !control_plane {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "{} instance {} belongs to node {}",
                        record.name, record.id, old.node
                    ),
                ));
            }
            if !api.etcd.replace(&key, &value, revision).await? {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "registration raced; retry",
                ));
            }
        }
    }
    Ok(Json(record))
}

/// Service names only control-plane nodes may register.
pub const RESERVED_PREFIX: &str = "globular.";

/// Validates a registration; the node comes from the caller's certificate.
pub fn service_record(node: &str, req: RegisterRequest) -> Result<ServiceRecord, ApiError> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if !ok(&req.name) {
        return Err(ApiError::bad(format!(
            "name: {:?} is not a service name",
            req.name
        )));
    }
    let id = req.id.unwrap_or_else(|| node.to_owned());
    if !ok(&id) {
        return Err(ApiError::bad(format!("id: {id:?} is not an instance id")));
    }
    if req.address.parse::<IpAddr>().is_err() {
        return Err(ApiError::bad(format!(
            "address: {:?} is not an IP address",
            req.address
        )));
    }
    if req.port == 0 {
        return Err(ApiError::bad("port: must not be 0"));
    }
    Ok(ServiceRecord {
        name: req.name,
        id,
        node: node.to_owned(),
        address: req.address,
        port: req.port,
        protocol: req.protocol,
        tags: req.tags,
        metadata: req.metadata,
        registered_at: now_unix(),
    })
}

#[derive(Debug, Deserialize)]
struct ServiceQuery {
    name: Option<String>,
}

async fn services(
    State(api): State<Arc<Api>>,
    Extension(peer): Extension<Peer>,
    Query(q): Query<ServiceQuery>,
) -> ApiResult<ServiceList> {
    authenticate(&api, &peer).await?;
    let prefix = match &q.name {
        Some(name) => format!("{}{name}/", registry::services_prefix()),
        None => registry::services_prefix(),
    };
    let mut services = Vec::new();
    for (_, v) in api.etcd.list(&prefix).await? {
        services.push(serde_json::from_slice(&v).context("parsing a service record")?);
    }
    Ok(Json(ServiceList { services }))
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    api: Arc<Api>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let router = api.router();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small requests and answers: do not let Nagle's algorithm wait for
        // the peer's delayed ACK (40 ms per exchange).
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake with {remote}: {e}");
                    return;
                }
                Err(_) => return,
            };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|der| pki::identity_of_der(der).ok());
            let service = TowerToHyperService::new(router.layer(Extension(Peer(peer))));
            // A peer gets 10 s to send each request's headers.
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!("connection from {remote}: {e}");
            }
        });
    }
}
