//! The service registry routes: `POST /api/register`, `GET /api/services`.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use globular_cluster::protocol::{RegisterRequest, ServiceList};
use globular_cluster::registry::{self, ServiceRecord, RESERVED_PREFIX};
use globular_cluster::Role;
use serde::Deserialize;

use super::auth::Caller;
use super::error::{parse_body, ApiResult};
use super::{now_unix, Api, ApiError};

pub(super) async fn register(
    State(api): State<Arc<Api>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<ServiceRecord> {
    let control_plane = caller.id.role == Some(Role::ControlPlane);
    let req: RegisterRequest = parse_body(&body)?;
    let record = service_record(&caller.id.common_name, req)?;
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
pub(super) struct ServiceQuery {
    name: Option<String>,
}

pub(super) async fn services(
    State(api): State<Arc<Api>>,
    Query(q): Query<ServiceQuery>,
    _caller: Caller,
) -> ApiResult<ServiceList> {
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
