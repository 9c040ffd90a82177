//! etcd access through its gRPC gateway (JSON over HTTPS, `/v3/...`), with
//! an etcd-CA client certificate and, once etcd's auth is on, a user's
//! token ([`auth`]).
//!
//! Why not the `etcd-client` crate: the gateway needs no `protoc` and no
//! second HTTP/TLS stack (tonic); we already speak HTTPS with reqwest and
//! rustls (ring) everywhere, and the handful of calls the substrate makes
//! (range, put, compare-and-create, member add/remove/promote/list) are all
//! plain JSON there. etcd's gateway encodes bytes as base64 and 64-bit
//! integers as strings.

mod auth;
mod lock;
mod maintenance;
mod snapshot;
mod stream;
mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::retry::{Attempt, Retry};
use crate::tls;

pub use auth::{Grant, Permission};
pub use lock::Lock;
pub use maintenance::{Alarm, SpaceRecovery};
pub use watch::{Watch, WatchEvent};

/// How long one etcd call may take.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// etcd's default limit of operations in one transaction (`--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// How a call at one endpoint failed.
enum Failure {
    /// Another endpoint may answer.
    Next(anyhow::Error),
    /// etcd answered; asking another member would not change it.
    Final(anyhow::Error),
}

/// An etcd cluster member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Empty until the member has started.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// A condition of a transaction ([`Etcd::txn`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist.
    Absent(String),
    /// The key's mod revision is this one.
    ModRevision(String, i64),
}

impl Condition {
    fn json(&self) -> Value {
        match self {
            Condition::Absent(k) => {
                json!({"key": B64.encode(k), "result": "EQUAL", "target": "CREATE", "create_revision": "0"})
            }
            Condition::ModRevision(k, rev) => {
                json!({"key": B64.encode(k), "result": "EQUAL", "target": "MOD", "mod_revision": rev.to_string()})
            }
        }
    }
}

/// A client for one etcd cluster (tries the endpoints in order).
#[derive(Debug, Clone)]
pub struct Etcd {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// The user this client signs in as once etcd's auth is on.
    user: Option<Arc<auth::User>>,
    /// Per endpoint, the token from signing in there (simple tokens are
    /// known to the member that made them only); `None` when that member
    /// said auth is off.
    tokens: Arc<Mutex<HashMap<String, Option<String>>>>,
}

impl Etcd {
    /// `endpoints` are client URLs (`https://ip:port`).
    pub fn new(
        endpoints: Vec<String>,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> anyhow::Result<Etcd> {
        Etcd::with_config(
            endpoints,
            tls::client_config(ca_pem, Some((cert_pem, key_pem)))?,
        )
    }

    /// Like [`Etcd::new`], the client certificate and key read from files
    /// and read again when the certificate file changes (renewal): for
    /// clients that live longer than a certificate.
    pub fn from_files(
        endpoints: Vec<String>,
        ca_pem: &str,
        cert_path: &std::path::Path,
        key_path: &std::path::Path,
    ) -> anyhow::Result<Etcd> {
        Etcd::with_config(
            endpoints,
            tls::client_config_from_files(ca_pem, cert_path, key_path)?,
        )
    }

    fn with_config(
        endpoints: Vec<String>,
        mut config: rustls::ClientConfig,
    ) -> anyhow::Result<Etcd> {
        if endpoints.is_empty() {
            bail!("no etcd endpoints");
        }
        // HTTP/2 lets every request share one connection; etcd sends
        // non-gRPC HTTP/2 requests to its gateway.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Etcd {
            http: tls::http_client(config)?,
            endpoints,
            user: None,
            tokens: Arc::default(),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    async fn call(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call_within(path, body, CALL_TIMEOUT).await
    }

    async fn call_within(
        &self,
        path: &str,
        body: Value,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let mut last = None;
        for ep in &self.endpoints {
            match self.call_endpoint(ep, path, &body, timeout).await {
                Ok(value) => return Ok(value),
                // A member that cannot answer (a learner, no leader) is a
                // reason to ask the next one.
                Err(Failure::Next(err)) => last = Some(err),
                Err(Failure::Final(err)) => return Err(err),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no etcd endpoints")))
    }

    /// One call at one endpoint, signing in again once when the member
    /// refuses the token it has (expired, or from before an auth change).
    async fn call_endpoint(
        &self,
        ep: &str,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Value, Failure> {
        let mut fresh = false;
        loop {
            let token = self.token(ep, fresh).await.map_err(Failure::Next)?;
            let url = format!("{}{path}", ep.trim_end_matches('/'));
            let mut request = self.http.post(&url).json(body).timeout(timeout);
            if let Some(token) = &token {
                request = request.header(reqwest::header::AUTHORIZATION, token);
            }
            let resp = match request.send().await {
                Ok(resp) => resp,
                Err(e) => {
                    return Err(Failure::Next(
                        anyhow!(e).context(format!("etcd {path} at {ep}")),
                    ))
                }
            };
            let status = resp.status();
            let text = resp
                .text()
                .await
                .with_context(|| format!("reading {url}"))
                .map_err(Failure::Next)?;
            if status.is_success() {
                return serde_json::from_str(&text)
                    .with_context(|| format!("etcd {path} at {ep}: bad JSON"))
                    .map_err(Failure::Final);
            }
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    v.get("error")
                        .or_else(|| v.get("message"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or(text);
            if self.user.is_some() && !fresh && auth::wants_sign_in(&msg) {
                fresh = true;
                continue;
            }
            let err = anyhow!("etcd {path} at {ep}: {status}: {msg}");
            return Err(if status.is_server_error() {
                Failure::Next(err)
            } else {
                Failure::Final(err)
            });
        }
    }

    /// The value and mod revision of `key`.
    pub async fn get(&self, key: &str) -> anyhow::Result<Option<(Vec<u8>, i64)>> {
        let resp = self
            .call("/v3/kv/range", json!({"key": B64.encode(key)}))
            .await?;
        match resp
            .get("kvs")
            .and_then(Value::as_array)
            .and_then(|k| k.first())
        {
            None => Ok(None),
            Some(kv) => Ok(Some((decode(kv, "value")?, int(kv, "mod_revision")))),
        }
    }

    /// Every key and value under `prefix`, in key order.
    pub async fn list(&self, prefix: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        Ok(self.list_at(prefix, None).await?.0)
    }

    /// Every key and value under `prefix` at `revision` (the latest if
    /// `None`), and the revision read: several lists at one revision are
    /// one consistent snapshot.
    pub async fn list_at(
        &self,
        prefix: &str,
        revision: Option<i64>,
    ) -> anyhow::Result<(Vec<(String, Vec<u8>)>, i64)> {
        let mut request =
            json!({"key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix))});
        if let Some(revision) = revision {
            request["revision"] = json!(revision.to_string());
        }
        let resp = self.call("/v3/kv/range", request).await?;
        let mut out = Vec::new();
        for kv in resp
            .get("kvs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = String::from_utf8(decode(kv, "key")?).context("etcd key is not UTF-8")?;
            out.push((key, decode(kv, "value")?));
        }
        let revision = resp.get("header").map_or(0, |h| int(h, "revision"));
        Ok((out, revision))
    }

    pub async fn put(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        self.call(
            "/v3/kv/put",
            json!({"key": B64.encode(key), "value": B64.encode(value)}),
        )
        .await?;
        Ok(())
    }

    /// Writes `key` only if it does not exist; false if it did.
    pub async fn create(&self, key: &str, value: &[u8]) -> anyhow::Result<bool> {
        self.put_if(Condition::Absent(key.to_owned()), key, value)
            .await
    }

    /// Writes `key` only if its mod revision is still `revision`.
    pub async fn replace(&self, key: &str, value: &[u8], revision: i64) -> anyhow::Result<bool> {
        self.put_if(Condition::ModRevision(key.to_owned(), revision), key, value)
            .await
    }

    /// Writes `key` if `condition` holds; false if it did not.
    async fn put_if(&self, condition: Condition, key: &str, value: &[u8]) -> anyhow::Result<bool> {
        let put = [(key.to_owned(), value.to_vec())];
        Ok(self.txn(&[condition], &put, &[], &[]).await?.is_none())
    }

    /// Writes every key if none of them exists, in one transaction (at most
    /// [`MAX_TXN_OPS`] keys, no duplicates); false if any existed.
    pub async fn create_all(&self, entries: &[(String, Vec<u8>)]) -> anyhow::Result<bool> {
        let absent: Vec<Condition> = entries
            .iter()
            .map(|(k, _)| Condition::Absent(k.clone()))
            .collect();
        Ok(self.txn(&absent, entries, &[], &[]).await?.is_none())
    }

    /// One transaction: if every condition holds, the puts and deletes are
    /// carried out (`Ok(None)`); else the keys in `read_on_failure` are read
    /// (`Ok(Some(values))`, in that order, `None` for a missing key).
    pub async fn txn(
        &self,
        conditions: &[Condition],
        puts: &[(String, Vec<u8>)],
        deletes: &[String],
        read_on_failure: &[String],
    ) -> anyhow::Result<Option<Vec<Option<(Vec<u8>, i64)>>>> {
        self.txn_leased(conditions, puts, None, deletes, read_on_failure)
            .await
    }

    /// [`Etcd::txn`] whose puts are bound to `lease` if there is one.
    async fn txn_leased(
        &self,
        conditions: &[Condition],
        puts: &[(String, Vec<u8>)],
        lease: Option<i64>,
        deletes: &[String],
        read_on_failure: &[String],
    ) -> anyhow::Result<Option<Vec<Option<(Vec<u8>, i64)>>>> {
        let compare: Vec<Value> = conditions.iter().map(Condition::json).collect();
        let success: Vec<Value> = puts
            .iter()
            .map(|(k, v)| {
                let mut put = json!({"key": B64.encode(k), "value": B64.encode(v)});
                if let Some(lease) = lease {
                    put["lease"] = json!(lease.to_string());
                }
                json!({ "request_put": put })
            })
            .chain(
                deletes
                    .iter()
                    .map(|k| json!({"request_delete_range": {"key": B64.encode(k)}})),
            )
            .collect();
        let failure: Vec<Value> = read_on_failure
            .iter()
            .map(|k| json!({"request_range": {"key": B64.encode(k)}}))
            .collect();
        let resp = self
            .call(
                "/v3/kv/txn",
                json!({"compare": compare, "success": success, "failure": failure}),
            )
            .await?;
        if resp
            .get("succeeded")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            return Ok(None);
        }
        let responses = resp.get("responses").and_then(Value::as_array);
        let mut out = Vec::new();
        for i in 0..read_on_failure.len() {
            let kv = responses
                .and_then(|r| r.get(i))
                .and_then(|r| r.get("response_range"))
                .and_then(|r| r.get("kvs"))
                .and_then(Value::as_array)
                .and_then(|k| k.first());
            out.push(match kv {
                Some(kv) => Some((decode(kv, "value")?, int(kv, "mod_revision"))),
                None => None,
            });
        }
        Ok(Some(out))
    }

    pub async fn members(&self) -> anyhow::Result<Vec<Member>> {
        let resp = self.call("/v3/cluster/member/list", json!({})).await?;
        Ok(members_of(&resp))
    }

    /// Adds a member (as a learner if `learner`); returns its id and the
    /// member list after the change.
    pub async fn member_add(
        &self,
        peer_urls: &[String],
        learner: bool,
    ) -> anyhow::Result<(u64, Vec<Member>)> {
        // A member add racing another one can hang in etcd; the caller
        // retries sooner than the default timeout.
        let resp = self
            .call_within(
                "/v3/cluster/member/add",
                json!({"peerURLs": peer_urls, "isLearner": learner}),
                Duration::from_secs(3),
            )
            .await?;
        let id = resp
            .get("member")
            .map(|m| uint(m, "ID"))
            .filter(|id| *id != 0)
            .ok_or_else(|| anyhow!("etcd member add: no member id in {resp}"))?;
        Ok((id, members_of(&resp)))
    }

    pub async fn member_remove(&self, id: u64) -> anyhow::Result<()> {
        self.call("/v3/cluster/member/remove", json!({"ID": id.to_string()}))
            .await?;
        Ok(())
    }

    pub async fn member_promote(&self, id: u64) -> anyhow::Result<()> {
        self.call("/v3/cluster/member/promote", json!({"ID": id.to_string()}))
            .await?;
        Ok(())
    }

    /// Whether the member that answers (the first endpoint that does) is
    /// the cluster's leader.
    pub async fn is_leader(&self) -> anyhow::Result<bool> {
        let resp = self.call("/v3/maintenance/status", json!({})).await?;
        let me = resp
            .get("header")
            .map(|h| uint(h, "member_id"))
            .unwrap_or(0);
        Ok(me != 0 && me == uint(&resp, "leader"))
    }

    /// Waits until [`Etcd::healthy`], trying as `retry` says; false if the
    /// deadline passed first.
    pub async fn wait_healthy(&self, retry: Retry) -> bool {
        retry
            .run(|| async {
                if self.healthy().await {
                    Attempt::Done(())
                } else {
                    Attempt::Again(())
                }
            })
            .await
            .is_ok()
    }

    /// Whether the first endpoint answers `/health` with `"health": "true"`.
    pub async fn healthy(&self) -> bool {
        let url = format!("{}/health", self.endpoints[0].trim_end_matches('/'));
        match self.http.get(url).send().await {
            Ok(r) => r
                .json::<Value>()
                .await
                .is_ok_and(|v| v.get("health").and_then(Value::as_str) == Some("true")),
            Err(_) => false,
        }
    }
}

fn members_of(resp: &Value) -> Vec<Member> {
    resp.get("members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| Member {
            id: uint(m, "ID"),
            name: m
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            peer_urls: strings(m, "peerURLs"),
            client_urls: strings(m, "clientURLs"),
            is_learner: m.get("isLearner").and_then(Value::as_bool).unwrap_or(false),
        })
        .collect()
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    v.get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

pub(super) fn decode(kv: &Value, field: &str) -> anyhow::Result<Vec<u8>> {
    match kv.get(field).and_then(Value::as_str) {
        None => Ok(Vec::new()),
        Some(s) => B64
            .decode(s)
            .with_context(|| format!("etcd returned bad base64 in {field}")),
    }
}

pub(super) fn int(v: &Value, field: &str) -> i64 {
    match v.get(field) {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn uint(v: &Value, field: &str) -> u64 {
    match v.get(field) {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// The smallest key greater than every key starting with `prefix`.
pub(super) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(
            super::prefix_end("/globular/nodes/"),
            b"/globular/nodes0".to_vec()
        );
    }
}
