//! The renewal route, `POST /v1/renew`: an enrolled node's CSR for its own name -> certificate.

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use globular_cluster::pki::{self, LeafSpec};
use globular_cluster::protocol::{EnrollResponse, RenewRequest};
use globular_cluster::registry;

use super::auth::Caller;
use super::enroll::parse_ips;
use super::error::{parse_body, ApiResult};
use super::{now_unix, Api, ApiError};

pub(super) async fn renew(
    State(api): State<Arc<Api>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<EnrollResponse> {
    let Caller {
        id,
        record: mut rec,
        revision,
    } = caller;
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
