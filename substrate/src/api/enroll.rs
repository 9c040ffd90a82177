//! The enrollment route, `POST /v1/enroll`: ticket or token + CSR + role ->
//! certificate. A ticket (signed by the CA holder for one node) may enroll
//! a name that exists; a token only a new one.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use globular_cluster::pki::{self, LeafSpec};
use globular_cluster::protocol::{EnrollRequest, EnrollResponse};
use globular_cluster::registry::{self, NodeRecord};
use globular_cluster::{seed, ticket};

use super::addresses;
use super::batch::Created;
use super::error::{parse_body, ApiResult};
use super::tokens::check_token;
use super::{now_unix, Api, ApiError, Remote};
use crate::etcd::Condition;

/// What lets a request enroll a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Authority {
    /// The node's ticket, signed by the CA holder: new names and names
    /// already recorded (a wiped or reimaged node).
    Ticket,
    /// A role token: new names only.
    Token,
}

/// Checks the ticket or, without one, the token; a ticket must say what the
/// request says.
async fn authorize(api: &Api, req: &EnrollRequest) -> Result<Authority, ApiError> {
    if let Some(text) = &req.ticket {
        let cluster_id = &api.cluster().await?.id;
        let claims = ticket::verify(text, api.ca.cert_pem(), cluster_id, now_unix())
            .map_err(|e| ApiError::forbidden(format!("ticket: {e}")))?;
        claims
            .check(&req.node, req.role, &req.addresses)
            .map_err(|e| ApiError::forbidden(format!("ticket: {e}")))?;
        return Ok(Authority::Ticket);
    }
    let Some(token) = &req.token else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "enrollment needs the node's ticket or a token",
        ));
    };
    check_token(api, token, req.role).await?;
    Ok(Authority::Token)
}

/// How often a re-enrollment retries when the record changes under it.
const REENROLL_ATTEMPTS: usize = 3;

/// Records a newly enrolled node with its addresses, returns the certificate
/// already issued to the same node and key, or (with the node's ticket)
/// re-enrolls a node that comes back with a new key (a wiped or reimaged
/// node: its old key is superseded).
async fn enroll_node(
    api: &Api,
    req: &EnrollRequest,
    public_key_der: &[u8],
    authority: Authority,
    ips: &[IpAddr],
) -> Result<String, ApiError> {
    let (ca, node, role) = (&api.ca, req.node.as_str(), req.role);
    let key = registry::node_key(node);
    let key_id = pki::spki_pin(public_key_der);
    // Issue first, then compare-and-create: one etcd round trip. If the node
    // exists with this key, the fresh certificate is dropped unsent and never
    // recorded, and the answer is the stored certificate.
    let spec = LeafSpec {
        validity: Some(api.cluster().await?.certificate_lifetime()),
        ..LeafSpec::node(node, role, ips)
    };
    let issued = ca
        .issue(public_key_der, &spec)
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let now = now_unix();
    let record = NodeRecord {
        name: node.to_owned(),
        role,
        addresses: req.addresses.clone(),
        image_version: req.image_version.clone(),
        cert_serial: issued.serial.clone(),
        key_id: key_id.clone(),
        certificate: issued.cert_pem.clone(),
        enrolled_at: now,
        renewed_at: now,
        superseded: Vec::new(),
        rotate_requested: 0,
    };
    let value = serde_json::to_vec(&record).context("encoding a node record")?;
    let mut group = vec![(key.clone(), value)];
    group.extend(addresses::index(node, ips));
    let (tx, rx) = tokio::sync::oneshot::channel();
    api.batcher()
        .send((group, tx))
        .map_err(|_| anyhow::anyhow!("the enrollment writer stopped"))?;
    let created = rx
        .await
        .map_err(|_| anyhow::anyhow!("the enrollment writer stopped"))??;
    let mut stored = match created {
        Created::Done => {
            tracing::info!("enrolled {node} as {role}, certificate {}", issued.serial);
            return Ok(issued.cert_pem);
        }
        Created::Taken(k, owner) => return Err(addresses::taken(&k, &owner)),
        Created::Exists(value, revision) => (value, revision),
    };
    for _ in 0..REENROLL_ATTEMPTS {
        let (value, revision) = stored;
        let old: NodeRecord = serde_json::from_slice(&value).context("parsing a node record")?;
        if old.key_id == key_id && old.role == role {
            return Ok(old.certificate);
        }
        if authority != Authority::Ticket {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "node {node} is already enrolled; a token enrolls new names only, \
                     re-enrolling {node} needs its ticket"
                ),
            ));
        }
        if old.key_id == key_id || old.is_superseded(&key_id, now) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("node {node}: this key was already used by the node; make a new key"),
            ));
        }
        if reenroll(api, &old, revision, &record, ips).await? {
            tracing::warn!(
                "re-enrolled {node} as {role} with a new key: certificate {} supersedes {}",
                issued.serial,
                old.cert_serial
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

/// Replaces `old` (at `revision`) by `new`, moving the address index:
/// true when written, false when the record or an address changed under it.
async fn reenroll(
    api: &Api,
    old: &NodeRecord,
    revision: i64,
    new: &NodeRecord,
    ips: &[IpAddr],
) -> Result<bool, ApiError> {
    let node = new.name.as_str();
    let old_ips: Vec<IpAddr> = old
        .addresses
        .iter()
        .filter_map(|a| seed::parse_cidr(a).ok().map(|(ip, _)| ip))
        .collect();
    let mut conditions = vec![Condition::ModRevision(registry::node_key(node), revision)];
    let mut puts = Vec::new();
    for (k, v) in addresses::index(node, ips) {
        match api.etcd.get(&k).await? {
            Some((owner, _)) if owner != node.as_bytes() => {
                return Err(addresses::taken(&k, &owner))
            }
            Some(_) => {}
            None => {
                conditions.push(Condition::Absent(k.clone()));
                puts.push((k, v));
            }
        }
    }
    let deletes: Vec<String> = old_ips
        .iter()
        .filter(|ip| !ips.contains(ip))
        .map(registry::address_key)
        .collect();
    let old_not_after = pki::identity_of_pem(&old.certificate)
        .map(|id| id.not_after)
        .unwrap_or(i64::MAX);
    let record = old.clone().reenrolled(new.clone(), old_not_after);
    let value = serde_json::to_vec(&record).context("encoding a node record")?;
    puts.insert(0, (registry::node_key(node), value));
    let failed = api.etcd.txn(&conditions, &puts, &deletes, &[]).await?;
    Ok(failed.is_none())
}

pub(super) async fn enroll(
    State(api): State<Arc<Api>>,
    Extension(remote): Extension<Remote>,
    body: axum::body::Bytes,
) -> ApiResult<EnrollResponse> {
    let req: EnrollRequest = parse_body(&body)?;
    let authority = authorize(&api, &req).await?;
    let cluster = api.cluster().await?;
    if !globular_cluster::valid_node_name(&req.node) {
        return Err(ApiError::bad(format!(
            "node: {:?} is not a lowercase DNS label",
            req.node
        )));
    }
    let ips = addresses::check(&cluster.policy, &req.addresses, remote.0)?;
    let csr = pki::verify_csr(&req.csr).map_err(|e| ApiError::bad(format!("csr: {e}")))?;
    if csr.common_name != req.node {
        return Err(ApiError::forbidden(format!(
            "csr: asks for node name {:?} but the request is for {:?}",
            csr.common_name, req.node
        )));
    }
    let cert = enroll_node(&api, &req, &csr.public_key_der, authority, &ips).await?;
    Ok(Json(api.response(cert).await?))
}
