//! The token route, `POST /v1/tokens`: control-plane nodes create bootstrap tokens.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use globular_cluster::protocol::{TokenRequest, TokenResponse};
use globular_cluster::registry;
use globular_cluster::token::{BootstrapToken, TokenError, TokenRecord};
use globular_cluster::Role;

use super::auth::Caller;
use super::error::{parse_body, ApiResult};
use super::{Api, ApiError, TOKEN_CACHE};
use time::OffsetDateTime;

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

/// Checks a token against the records in etcd.
pub(super) async fn check_token(api: &Api, token: &str, role: Role) -> Result<(), ApiError> {
    let token =
        BootstrapToken::parse(token).map_err(|e| ApiError::forbidden(format!("token: {e}")))?;
    let cached = api
        .tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(token.id())
        .filter(|(at, _)| at.elapsed() < TOKEN_CACHE)
        .map(|(_, r)| r.clone());
    let record = match cached {
        Some(record) => record,
        None => {
            let (value, _) = api
                .etcd
                .get(&registry::token_key(token.id()))
                .await?
                .ok_or_else(|| {
                    ApiError::forbidden(format!(
                        "token: {}",
                        TokenError::Unknown(token.id().into())
                    ))
                })?;
            let record: TokenRecord =
                serde_json::from_slice(&value).context("parsing a token record")?;
            api.tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(token.id().to_owned(), (Instant::now(), record.clone()));
            record
        }
    };
    record
        .check(&token, role, OffsetDateTime::now_utc())
        .map_err(|e| ApiError::forbidden(format!("token: {e}")))
}
