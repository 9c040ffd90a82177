//! Who is calling: the verified client certificate, checked against its node record.

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use globular_cluster::pki::{self, CertIdentity};
use globular_cluster::registry::{self, NodeRecord};

use super::{Api, ApiError, Peer};

/// An authenticated caller, as a handler argument: an enrolled node whose
/// certificate was not superseded (see [`authenticate`]).
#[derive(Debug)]
pub(super) struct Caller {
    pub id: CertIdentity,
    pub record: NodeRecord,
    /// The mod revision of the node record.
    pub revision: i64,
}

impl FromRequestParts<Arc<Api>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Caller, ApiError> {
        let peer = parts
            .extensions
            .get::<Peer>()
            .cloned()
            .unwrap_or(Peer(None));
        let (id, record, revision) = authenticate(api, &peer).await?;
        Ok(Caller {
            id: id.clone(),
            record,
            revision,
        })
    }
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
/// enrolled and the certificate is of its current key (a renewal with a new
/// key or a re-enrollment retires the old one at once). Returns the record
/// and its mod revision.
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
    if rec.key_id != pki::spki_pin(&id.public_key_der) {
        return Err(ApiError::forbidden(format!(
            "the certificate {} of node {} is not of its current key (superseded)",
            id.serial, id.common_name
        )));
    }
    Ok((id, rec, revision))
}
