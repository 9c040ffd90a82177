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

/// Tags of one service instance, and bytes of one tag.
const MAX_TAGS: usize = 32;
const MAX_TAG_LEN: usize = 128;
/// Metadata entries of one instance, bytes of a key and of a value.
const MAX_METADATA: usize = 32;
const MAX_METADATA_KEY_LEN: usize = 128;
const MAX_METADATA_VALUE_LEN: usize = 1024;
/// Bytes of a protocol name.
const MAX_PROTOCOL_LEN: usize = 32;
/// Bytes of a stored service record (its JSON): 413 above it.
pub const MAX_RECORD_BYTES: usize = 4096;
/// Service instances one node may have registered: 409 above it. A
/// control-plane node's own `globular.*` records count too (two of them).
pub const MAX_INSTANCES_PER_NODE: usize = 64;

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
    if value.len() > MAX_RECORD_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "record: the service record would be {} bytes; at most {MAX_RECORD_BYTES}",
                value.len()
            ),
        ));
    }
    let existing = api.etcd.get(&key).await?;
    let new_to_node = existing
        .as_ref()
        .and_then(|(old, _)| serde_json::from_slice::<ServiceRecord>(old).ok())
        .is_none_or(|old| old.node != record.node);
    if new_to_node {
        check_instances(&api, &record.node).await?;
    }
    match existing {
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

/// Refuses a new instance of `node` if it has [`MAX_INSTANCES_PER_NODE`].
///
/// This reads the whole service registry (bounded by nodes x instances x
/// record size), and two registrations of one node at the same moment can
/// both pass: the cap bounds what a node can write, not to the record.
async fn check_instances(api: &Api, node: &str) -> Result<(), ApiError> {
    let registered = api
        .etcd
        .list(&registry::services_prefix())
        .await?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice::<ServiceRecord>(&v).ok())
        .filter(|s| s.node == node)
        .count();
    if registered >= MAX_INSTANCES_PER_NODE {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "instances: node {node} has {registered} service instances registered; \
                 at most {MAX_INSTANCES_PER_NODE}"
            ),
        ));
    }
    Ok(())
}

/// Refuses tags, metadata and a protocol beyond their limits, naming the field.
fn check_sizes(req: &RegisterRequest) -> Result<(), ApiError> {
    let too_long =
        |field: String, max: usize| ApiError::bad(format!("{field}: longer than {max} bytes"));
    if req.protocol.len() > MAX_PROTOCOL_LEN {
        return Err(too_long("protocol".into(), MAX_PROTOCOL_LEN));
    }
    if req.tags.len() > MAX_TAGS {
        return Err(ApiError::bad(format!(
            "tags: {} tags; at most {MAX_TAGS}",
            req.tags.len()
        )));
    }
    if let Some(i) = req.tags.iter().position(|t| t.len() > MAX_TAG_LEN) {
        return Err(too_long(format!("tags[{i}]"), MAX_TAG_LEN));
    }
    if req.metadata.len() > MAX_METADATA {
        return Err(ApiError::bad(format!(
            "metadata: {} entries; at most {MAX_METADATA}",
            req.metadata.len()
        )));
    }
    for (k, v) in &req.metadata {
        if k.len() > MAX_METADATA_KEY_LEN {
            let shown: String = k.chars().take(32).collect();
            return Err(too_long(
                format!("metadata key {shown:?}..."),
                MAX_METADATA_KEY_LEN,
            ));
        }
        if v.len() > MAX_METADATA_VALUE_LEN {
            return Err(too_long(format!("metadata[{k:?}]"), MAX_METADATA_VALUE_LEN));
        }
    }
    Ok(())
}

/// Validates a registration; the node comes from the caller's certificate.
pub fn service_record(node: &str, req: RegisterRequest) -> Result<ServiceRecord, ApiError> {
    check_sizes(&req)?;
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
    /// Also the instances whose record says `health: failed` (left out
    /// otherwise: discovery answers only with instances that may work).
    #[serde(default)]
    all: bool,
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
        let record: ServiceRecord =
            serde_json::from_slice(&v).context("parsing a service record")?;
        if q.all || !record.failed() {
            services.push(record);
        }
    }
    Ok(Json(ServiceList { services }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RegisterRequest {
        RegisterRequest {
            name: "example.Web".into(),
            id: None,
            address: "10.0.0.1".into(),
            port: 80,
            protocol: "http".into(),
            tags: vec![],
            metadata: Default::default(),
        }
    }

    fn refusal(req: RegisterRequest) -> String {
        let err = service_record("n1", req).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        err.message
    }

    #[test]
    fn sizes_at_the_limits_pass_and_beyond_are_refused_naming_the_field() {
        let at_limits = RegisterRequest {
            protocol: "p".repeat(MAX_PROTOCOL_LEN),
            tags: vec!["t".repeat(MAX_TAG_LEN); MAX_TAGS],
            metadata: (0..MAX_METADATA)
                .map(|i| (format!("{i:0>128}"), "v".repeat(MAX_METADATA_VALUE_LEN)))
                .collect(),
            ..request()
        };
        service_record("n1", at_limits).unwrap();
        let msg = refusal(RegisterRequest {
            protocol: "p".repeat(MAX_PROTOCOL_LEN + 1),
            ..request()
        });
        assert!(msg.starts_with("protocol:"), "{msg}");
        let msg = refusal(RegisterRequest {
            tags: vec![String::new(); MAX_TAGS + 1],
            ..request()
        });
        assert!(msg.starts_with("tags:"), "{msg}");
        let msg = refusal(RegisterRequest {
            tags: vec!["a".into(), "t".repeat(MAX_TAG_LEN + 1)],
            ..request()
        });
        assert!(msg.starts_with("tags[1]:"), "{msg}");
        let msg = refusal(RegisterRequest {
            metadata: (0..=MAX_METADATA)
                .map(|i| (i.to_string(), String::new()))
                .collect(),
            ..request()
        });
        assert!(msg.starts_with("metadata:"), "{msg}");
        let msg = refusal(RegisterRequest {
            metadata: [("k".repeat(MAX_METADATA_KEY_LEN + 1), String::new())].into(),
            ..request()
        });
        assert!(msg.starts_with("metadata key"), "{msg}");
        let msg = refusal(RegisterRequest {
            metadata: [("k".into(), "v".repeat(MAX_METADATA_VALUE_LEN + 1))].into(),
            ..request()
        });
        assert!(msg.starts_with("metadata[\"k\"]:"), "{msg}");
    }
}
