//! Snapshots of the keyspace (`/v3/maintenance/snapshot`) and key counts:
//! what a backup holds.

use std::io::Write;

use anyhow::{anyhow, bail, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::stream::{End, JsonStream};
use super::{int, prefix_end, Etcd, CALL_TIMEOUT};

/// How long a whole snapshot may take (etcd's quota is 2 GiB by default;
/// a loopback or LAN member sends that in well under this).
const SNAPSHOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1800);

impl Etcd {
    /// Streams a snapshot of the member's backend (a consistent copy of
    /// the whole keyspace, with etcd's SHA-256 of it at the end, which
    /// `etcdutl snapshot restore` checks) into `out`, from the first
    /// endpoint that serves it. Needs the `root` role. Returns the bytes
    /// written. On an error `out` may hold part of a snapshot: the caller
    /// throws it away.
    pub async fn snapshot(&self, out: &mut impl Write) -> anyhow::Result<u64> {
        let mut last = None;
        for ep in &self.endpoints {
            let token = match self.token(ep, false).await {
                Ok(token) => token,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let url = format!("{}/v3/maintenance/snapshot", ep.trim_end_matches('/'));
            let mut request = self
                .http
                .post(&url)
                .json(&json!({}))
                .timeout(SNAPSHOT_TIMEOUT);
            if let Some(token) = token {
                request = request.header(reqwest::header::AUTHORIZATION, token);
            }
            let resp = match request.send().await {
                Ok(resp) if resp.status().is_success() => resp,
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    last = Some(anyhow!("etcd snapshot at {ep}: {status}: {text}"));
                    continue;
                }
                Err(e) => {
                    last = Some(anyhow!(e).context(format!("etcd snapshot at {ep}")));
                    continue;
                }
            };
            let mut stream = JsonStream::new(resp, format!("etcd snapshot at {ep}"));
            return copy_snapshot(&mut stream, out).await;
        }
        Err(last.unwrap_or_else(|| anyhow!("no etcd endpoints")))
    }

    /// How many keys are under `prefix` at `revision`.
    pub async fn count_at(&self, prefix: &str, revision: i64) -> anyhow::Result<u64> {
        let resp = self
            .call(
                "/v3/kv/range",
                json!({
                    "key": B64.encode(prefix),
                    "range_end": B64.encode(prefix_end(prefix)),
                    "revision": revision.to_string(),
                    "count_only": true,
                }),
            )
            .await?;
        u64::try_from(int(&resp, "count")).context("etcd returned a negative count")
    }
}

/// Writes the blobs of a snapshot stream until etcd closes it, which it
/// does after the message that carries its SHA-256 of the snapshot. A
/// stream that closes before a message says no bytes remain was cut short.
async fn copy_snapshot(stream: &mut JsonStream, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut written = 0u64;
    let mut complete = false;
    loop {
        let message = match tokio::time::timeout(CALL_TIMEOUT, stream.next()).await {
            Ok(next) => match next? {
                Ok(message) => message,
                Err(End::Closed) if complete => break,
                Err(End::Closed) => bail!("{}: cut short after {written} bytes", stream.what()),
                Err(End::TimedOut) => bail!("{}: took too long", stream.what()),
            },
            Err(_) => bail!("{}: nothing for {CALL_TIMEOUT:?}", stream.what()),
        };
        let (blob, remaining) = snapshot_message(&message)
            .with_context(|| format!("{} after {written} bytes", stream.what()))?;
        out.write_all(&blob).context("writing the snapshot")?;
        written += blob.len() as u64;
        complete = remaining == 0;
    }
    out.flush().context("writing the snapshot")?;
    Ok(written)
}

/// The bytes of one snapshot message and how many remain after them.
fn snapshot_message(message: &Value) -> anyhow::Result<(Vec<u8>, u64)> {
    if let Some(error) = message.get("error") {
        bail!("{error}");
    }
    let result = message
        .get("result")
        .ok_or_else(|| anyhow!("a message without a result"))?;
    let blob = match result.get("blob").and_then(Value::as_str) {
        Some(b) => B64.decode(b).context("bad base64 in a snapshot blob")?,
        None => Vec::new(),
    };
    let remaining = u64::try_from(int(result, "remaining_bytes"))
        .context("a negative number of remaining bytes")?;
    Ok((blob, remaining))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn snapshot_messages_as_the_gateway_writes_them() {
        let first = json!({"result": {"header": {"revision": "4"}, "remaining_bytes": "3", "blob": "YWJj"}});
        assert_eq!(
            super::snapshot_message(&first).unwrap(),
            (b"abc".to_vec(), 3)
        );
        // The last message: nothing remains (the gateway leaves out zeros).
        let last = json!({"result": {"blob": "ZA=="}});
        assert_eq!(super::snapshot_message(&last).unwrap(), (b"d".to_vec(), 0));
        assert!(
            super::snapshot_message(&json!({"error": {"message": "permission denied"}})).is_err()
        );
        assert!(super::snapshot_message(&json!({"result": {"blob": "!!"}})).is_err());
        assert!(super::snapshot_message(&json!({"result": {"remaining_bytes": "-1"}})).is_err());
    }
}
