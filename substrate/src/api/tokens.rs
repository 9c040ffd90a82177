//! The token route, `POST /v1/tokens`: control-plane nodes create bootstrap tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
use super::limits::RateLimit;
use super::{Api, ApiError};
use time::OffsetDateTime;

/// The longest lifetime of a token made through the API.
const MAX_TTL: time::Duration = time::Duration::days(30);

/// How long a token record read from etcd is reused: a new token works at
/// once, a deleted one may still be accepted for this long.
const TOKEN_CACHE: Duration = Duration::from_secs(1);

/// How long a token id read from etcd counts as known: its lookups are not
/// rate limited (the record itself is read again after [`TOKEN_CACHE`]).
const KNOWN_FOR: Duration = Duration::from_secs(600);

/// How long a token id that etcd did not have is refused without asking
/// again: a token made in the meantime works after this long.
const UNKNOWN_FOR: Duration = Duration::from_secs(5);

/// Lookups in etcd of token ids not known in the last [`KNOWN_FOR`] (made-up
/// ids, or new tokens), per second on average, in all: beyond it a lookup
/// is refused with 429 and etcd is not asked. Legitimate new token ids are
/// few; every request with a made-up id would otherwise be an etcd read.
pub const UNKNOWN_TOKEN_RATE: u32 = 10;
/// The burst of such lookups allowed at once.
pub const UNKNOWN_TOKEN_BURST: u32 = 20;

/// Token records, known and unknown token ids recently read from etcd, and
/// the rate limit of lookups of ids not known.
#[derive(Debug)]
pub(super) struct TokenCache(Mutex<Cached>);

#[derive(Debug)]
struct Cached {
    /// Records read in the last [`KNOWN_FOR`], with when.
    known: HashMap<String, (Instant, TokenRecord)>,
    /// Ids etcd did not have, with when.
    unknown: HashMap<String, Instant>,
    lookups: RateLimit,
}

/// What the cache says about a token id.
enum Lookup {
    Fresh(TokenRecord),
    Unknown,
    /// Ask etcd.
    Read,
    /// Do not ask etcd: too many lookups of ids not known.
    Throttled,
}

impl TokenCache {
    pub(super) fn new() -> TokenCache {
        TokenCache(Mutex::new(Cached {
            known: HashMap::new(),
            unknown: HashMap::new(),
            lookups: RateLimit::new(UNKNOWN_TOKEN_RATE, UNKNOWN_TOKEN_BURST, Instant::now()),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lookup(&self, id: &str, now: Instant) -> Lookup {
        let mut c = self.lock();
        match c.known.get(id) {
            Some((at, record)) if now.saturating_duration_since(*at) < TOKEN_CACHE => {
                return Lookup::Fresh(record.clone())
            }
            Some((at, _)) if now.saturating_duration_since(*at) < KNOWN_FOR => return Lookup::Read,
            _ => {}
        }
        if c.unknown
            .get(id)
            .is_some_and(|at| now.saturating_duration_since(*at) < UNKNOWN_FOR)
        {
            return Lookup::Unknown;
        }
        if c.lookups.take(now) {
            Lookup::Read
        } else {
            Lookup::Throttled
        }
    }

    /// Records what etcd said about `id` at `now`.
    fn remember(&self, id: &str, record: Option<&TokenRecord>, now: Instant) {
        let mut c = self.lock();
        match record {
            Some(record) => {
                c.unknown.remove(id);
                c.known.insert(id.to_owned(), (now, record.clone()));
            }
            None => {
                c.known.remove(id);
                c.unknown.insert(id.to_owned(), now);
            }
        }
        // Both maps stay small: `unknown` grows by at most the rate limit,
        // `known` by the tokens that exist. Forget what expired now and then.
        if c.unknown.len() > 4 * UNKNOWN_TOKEN_BURST as usize {
            c.unknown
                .retain(|_, at| now.saturating_duration_since(*at) < UNKNOWN_FOR);
        }
        if c.known.len() > 1024 {
            c.known
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < KNOWN_FOR);
        }
    }
}

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
    let token = BootstrapToken::generate();
    let mut record = TokenRecord::new(&token, req.roles, ttl(req.ttl_seconds)?)
        .map_err(|e| ApiError::bad(format!("ttl_seconds: {e}")))?;
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

/// A requested token lifetime, if positive and at most [`MAX_TTL`].
fn ttl(seconds: i64) -> Result<time::Duration, ApiError> {
    if seconds <= 0 {
        return Err(ApiError::bad("ttl_seconds: must be positive"));
    }
    if seconds > MAX_TTL.whole_seconds() {
        return Err(ApiError::bad(format!(
            "ttl_seconds: at most {} ({} days)",
            MAX_TTL.whole_seconds(),
            MAX_TTL.whole_days()
        )));
    }
    Ok(time::Duration::seconds(seconds))
}

/// Checks a token against the records in etcd (or recently read from it).
pub(super) async fn check_token(api: &Api, token: &str, role: Role) -> Result<(), ApiError> {
    let token =
        BootstrapToken::parse(token).map_err(|e| ApiError::forbidden(format!("token: {e}")))?;
    let unknown =
        || ApiError::forbidden(format!("token: {}", TokenError::Unknown(token.id().into())));
    let record = match api.tokens.lookup(token.id(), Instant::now()) {
        Lookup::Fresh(record) => record,
        Lookup::Unknown => return Err(unknown()),
        Lookup::Throttled => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "token: too many lookups of unknown token ids; retry in a few seconds",
            ))
        }
        Lookup::Read => {
            let read = api.etcd.get(&registry::token_key(token.id())).await?;
            let record = match read {
                Some((value, _)) => Some(
                    serde_json::from_slice::<TokenRecord>(&value)
                        .context("parsing a token record")?,
                ),
                None => None,
            };
            api.tokens
                .remember(token.id(), record.as_ref(), Instant::now());
            record.ok_or_else(unknown)?
        }
    };
    record
        .check(&token, role, OffsetDateTime::now_utc())
        .map_err(|e| ApiError::forbidden(format!("token: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TokenRecord {
        let token = BootstrapToken::generate();
        TokenRecord::new(&token, vec![Role::Worker], time::Duration::hours(1)).unwrap()
    }

    #[test]
    fn a_ttl_is_positive_and_at_most_30_days() {
        assert_eq!(ttl(3600).unwrap(), time::Duration::hours(1));
        assert_eq!(ttl(30 * 86_400).unwrap(), MAX_TTL);
        for bad in [0, -1, 30 * 86_400 + 1, i64::MAX, i64::MIN] {
            let err = ttl(bad).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            assert!(err.message.starts_with("ttl_seconds:"), "{}", err.message);
        }
    }

    #[test]
    fn unknown_ids_are_remembered_and_new_ids_rate_limited() {
        let cache = TokenCache::new();
        let t0 = Instant::now();
        cache.remember("aaaaaa", None, t0);
        assert!(matches!(cache.lookup("aaaaaa", t0), Lookup::Unknown));
        // Made-up ids: a burst of lookups, then none until the bucket refills.
        let reads = (0..100)
            .filter(|i| matches!(cache.lookup(&format!("{i:06}"), t0), Lookup::Read))
            .count();
        assert_eq!(reads, UNKNOWN_TOKEN_BURST as usize);
        // After UNKNOWN_FOR the unknown id is asked about again.
        let later = t0 + UNKNOWN_FOR;
        assert!(matches!(cache.lookup("aaaaaa", later), Lookup::Read));
    }

    #[test]
    fn known_ids_are_cached_then_read_without_the_rate_limit() {
        let cache = TokenCache::new();
        let t0 = Instant::now();
        // Exhaust the lookups of ids not known.
        while matches!(cache.lookup("zzzzzz", t0), Lookup::Read) {}
        let rec = record();
        cache.remember("bbbbbb", Some(&rec), t0);
        assert!(matches!(cache.lookup("bbbbbb", t0), Lookup::Fresh(r) if r == rec));
        let t1 = t0 + TOKEN_CACHE;
        while matches!(cache.lookup("zzzzzz", t1), Lookup::Read) {}
        assert!(matches!(cache.lookup("bbbbbb", t1), Lookup::Read));
        assert!(matches!(cache.lookup("cccccc", t1), Lookup::Throttled));
        // A deleted token becomes unknown.
        cache.remember("bbbbbb", None, t1);
        assert!(matches!(cache.lookup("bbbbbb", t1), Lookup::Unknown));
    }
}
