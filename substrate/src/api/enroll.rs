//! The enrollment route, `POST /v1/enroll`: token + CSR + role -> certificate.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use globular_cluster::pki::{self, LeafSpec};
use globular_cluster::protocol::{EnrollRequest, EnrollResponse};
use globular_cluster::registry::{self, NodeRecord};
use globular_cluster::seed;

use super::error::{parse_body, ApiResult};
use super::tokens::check_token;
use super::{now_unix, Api, ApiError};

pub(super) fn parse_ips(addresses: &[String]) -> Result<Vec<IpAddr>, ApiError> {
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

pub(super) async fn enroll(
    State(api): State<Arc<Api>>,
    body: axum::body::Bytes,
) -> ApiResult<EnrollResponse> {
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
