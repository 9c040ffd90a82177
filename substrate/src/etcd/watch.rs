//! Watches through the gateway's `/v3/watch` stream.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::stream::{End, JsonStream};
use super::{decode, int, prefix_end, Etcd};

impl Etcd {
    /// Watches the keys under each of `prefixes` from `start_revision` on:
    /// one gateway `/v3/watch` stream (a watch per prefix, their events
    /// interleaved), from the first endpoint that takes it, for at most
    /// `session` (then the caller watches again from where it was, which
    /// also moves it off a member that went away).
    pub async fn watch(
        &self,
        prefixes: &[&str],
        start_revision: i64,
        session: Duration,
    ) -> anyhow::Result<Watch> {
        // The gateway reads one JSON request after another from the body.
        let mut body = Vec::new();
        for prefix in prefixes {
            let request = json!({"create_request": {
                "key": B64.encode(prefix),
                "range_end": B64.encode(prefix_end(prefix)),
                "start_revision": start_revision.to_string(),
            }});
            serde_json::to_writer(&mut body, &request)?;
            body.push(b'\n');
        }
        let mut last = None;
        for ep in &self.endpoints {
            let url = format!("{}/v3/watch", ep.trim_end_matches('/'));
            // A watch outlives tokens: sign in afresh for each.
            let token = match self.token(ep, true).await {
                Ok(token) => token,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let mut request = self
                .http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .timeout(session);
            if let Some(token) = token {
                request = request.header(reqwest::header::AUTHORIZATION, token);
            }
            match request.send().await {
                Ok(resp) if resp.status().is_success() => {
                    return Ok(Watch {
                        stream: JsonStream::new(resp, format!("etcd watch at {ep}")),
                    })
                }
                Ok(resp) => last = Some(anyhow!("etcd /v3/watch at {ep}: {}", resp.status())),
                Err(e) => last = Some(anyhow!(e).context(format!("etcd /v3/watch at {ep}"))),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no etcd endpoints")))
    }
}

/// An open watch ([`Etcd::watch`]).
#[derive(Debug)]
pub struct Watch {
    stream: JsonStream,
}

/// What a watch saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The watch is in place.
    Created,
    /// Keys changed at `revision`: each key with its new value, `None` for
    /// a delete.
    Changed {
        revision: i64,
        changes: Vec<(String, Option<Vec<u8>>)>,
    },
    /// The start revision was compacted away: read everything again.
    Compacted,
}

impl Watch {
    /// The next event; `Ok(None)` when the stream ended (its session is
    /// over or the member went away).
    pub async fn next(&mut self) -> anyhow::Result<Option<WatchEvent>> {
        match self.stream.next().await? {
            Ok(message) => watch_event(&message)
                .with_context(|| self.stream.what().to_owned())
                .map(Some),
            Err(End::Closed | End::TimedOut) => Ok(None),
        }
    }
}

fn watch_event(message: &Value) -> anyhow::Result<WatchEvent> {
    if let Some(error) = message.get("error") {
        bail!("{error}");
    }
    let result = message.get("result").unwrap_or(message);
    if result.get("canceled").and_then(Value::as_bool) == Some(true)
        || int(result, "compact_revision") > 0
    {
        return Ok(WatchEvent::Compacted);
    }
    if result.get("created").and_then(Value::as_bool) == Some(true) {
        return Ok(WatchEvent::Created);
    }
    let mut changes = Vec::new();
    for event in result
        .get("events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(kv) = event.get("kv") {
            let key = String::from_utf8_lossy(&decode(kv, "key")?).into_owned();
            // The gateway leaves out the default (PUT) event type.
            let deleted = event.get("type").and_then(Value::as_str) == Some("DELETE");
            let value = if deleted {
                None
            } else {
                Some(decode(kv, "value")?)
            };
            changes.push((key, value));
        }
    }
    let revision = result.get("header").map_or(0, |h| int(h, "revision"));
    Ok(WatchEvent::Changed { revision, changes })
}

#[cfg(test)]
mod tests {
    use super::WatchEvent;
    use serde_json::json;

    #[test]
    fn watch_messages_as_the_gateway_writes_them() {
        let created = json!({"result": {"header": {"revision": "7"}, "created": true}});
        assert_eq!(super::watch_event(&created).unwrap(), WatchEvent::Created);
        let changed = json!({"result": {"header": {"revision": "9"}, "events": [
            {"kv": {"key": "L2dsb2J1bGFyL25vZGVzL2Ex", "mod_revision": "9", "value": "e30="}},
            {"type": "DELETE", "kv": {"key": "L2dsb2J1bGFyL25vZGVzL2Ey"}}]}});
        assert_eq!(
            super::watch_event(&changed).unwrap(),
            WatchEvent::Changed {
                revision: 9,
                changes: vec![
                    ("/globular/nodes/a1".into(), Some(b"{}".to_vec())),
                    ("/globular/nodes/a2".into(), None)
                ]
            }
        );
        let compacted = json!({"result": {"canceled": true, "compact_revision": "3"}});
        assert_eq!(
            super::watch_event(&compacted).unwrap(),
            WatchEvent::Compacted
        );
        assert!(super::watch_event(&json!({"error": {"message": "x"}})).is_err());
    }
}
