//! The node registry routes: `GET /v1/nodes`, and `GET /v1/self` (the
//! caller's own record).

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::Json;
use globular_cluster::protocol::NodeList;
use globular_cluster::registry;

use super::auth::Caller;
use super::error::ApiResult;
use super::Api;

pub(super) async fn nodes(State(api): State<Arc<Api>>, _caller: Caller) -> ApiResult<NodeList> {
    let mut nodes = Vec::new();
    for (_, v) in api.etcd.list(&registry::nodes_prefix()).await? {
        nodes.push(serde_json::from_slice(&v).context("parsing a node record")?);
    }
    Ok(Json(NodeList { nodes }))
}

pub(super) async fn own(caller: Caller) -> ApiResult<registry::NodeRecord> {
    Ok(Json(caller.record))
}
