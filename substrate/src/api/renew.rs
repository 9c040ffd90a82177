//! The renewal route, `POST /v1/renew`: an enrolled node's CSR for its own
//! name -> a certificate with the role and SANs of the one presented.

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use globular_cluster::pki::{self, CertIdentity, LeafSpec};
use globular_cluster::protocol::{EnrollResponse, RenewRequest};
use globular_cluster::registry;

use super::auth::Caller;
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
    // What the CA signed before is the authority, not the record (which an
    // etcd client could have edited): the same name, role and SANs.
    let role = id.role.ok_or_else(|| {
        ApiError::forbidden("the presented certificate carries no role; it cannot be renewed")
    })?;
    let spec = LeafSpec::renewal_of(
        &CertIdentity {
            role: Some(role),
            ..id.clone()
        },
        api.cluster().await?.certificate_lifetime(),
    );
    let issued = api
        .ca
        .issue(&csr.public_key_der, &spec)
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let now = now_unix();
    if csr.key_id() != rec.key_id {
        // A new key: the presented one is retired until its certificate
        // would have expired anyway.
        rec.supersede_current(now, id.not_after);
    }
    rec.role = role;
    rec.cert_serial = issued.serial.clone();
    rec.key_id = csr.key_id();
    rec.certificate = issued.cert_pem.clone();
    rec.renewed_at = now;
    let value = serde_json::to_vec(&rec).context("encoding a node record")?;
    let key = registry::node_key(&id.common_name);
    if !api.etcd.replace(&key, &value, revision).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "node record changed; retry",
        ));
    }
    tracing::info!("renewed {}, certificate {}", rec.name, issued.serial);
    Ok(Json(api.response(issued.cert_pem).await?))
}
