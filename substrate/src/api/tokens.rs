//! The token route, `POST /v1/tokens`: control-plane nodes create bootstrap tokens.

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use globular_cluster::protocol::{TokenRequest, TokenResponse};
use globular_cluster::registry;
use globular_cluster::token::{BootstrapToken, TokenRecord};
use globular_cluster::Role;

use super::auth::Caller;
use super::error::{parse_body, ApiResult};
use super::{Api, ApiError};

pub(super) async fn tokens(
    State(api): State<Arc<Api>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<TokenResponse> {
    if caller.id.role != Some(Role::ControlPlane) {
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
        format!("created by {}", caller.id.common_name)
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
