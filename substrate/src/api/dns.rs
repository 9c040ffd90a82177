//! The DNS zone route, `GET /v1/dns`: the zone built from the registry as
//! it is now, exactly as the authority answers it once its watch has seen
//! the same revision.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use globular_cluster::protocol::DnsZone;

use super::auth::Caller;
use super::error::ApiResult;
use super::Api;
use crate::dns::follow;

pub(super) async fn zone(State(api): State<Arc<Api>>, _caller: Caller) -> ApiResult<DnsZone> {
    let zone = follow::load(&api.etcd).await?;
    Ok(Json(DnsZone {
        zone: zone.origin().to_string(),
        serial: zone.serial(),
        records: zone.records().iter().map(|r| r.to_string()).collect(),
    }))
}
