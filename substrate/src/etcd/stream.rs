//! The gateway's server streams: one compact JSON message per line.

use anyhow::{anyhow, Context as _};
use serde_json::Value;

/// The messages of one streaming response (`/v3/watch`,
/// `/v3/maintenance/snapshot`).
#[derive(Debug)]
pub(super) struct JsonStream {
    response: reqwest::Response,
    /// Bytes of the stream not parsed yet.
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no newline.
    scanned: usize,
    /// What the stream is, for errors (`etcd watch at https://...`).
    what: String,
}

/// How a stream stopped.
#[derive(Debug)]
pub(super) enum End {
    /// The server closed it.
    Closed,
    /// The request's time limit ran out.
    TimedOut,
}

impl JsonStream {
    pub(super) fn new(response: reqwest::Response, what: String) -> JsonStream {
        JsonStream {
            response,
            buffer: Vec::new(),
            scanned: 0,
            what,
        }
    }

    pub(super) fn what(&self) -> &str {
        &self.what
    }

    /// The next message, or how the stream ended.
    pub(super) async fn next(&mut self) -> anyhow::Result<Result<Value, End>> {
        loop {
            // The gateway ends every message with a newline, and its compact
            // JSON has none inside: a message is parsed once, when its end
            // is here (a large one arrives in many chunks).
            if let Some(end) = self.buffer[self.scanned..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| self.scanned + i)
            {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                self.scanned = 0;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line)
                    .with_context(|| format!("{}: bad JSON", self.what))
                    .map(Ok);
            }
            self.scanned = self.buffer.len();
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => return Ok(Err(End::Closed)),
                Err(e) if e.is_timeout() => return Ok(Err(End::TimedOut)),
                Err(e) => return Err(anyhow!(e).context(self.what.clone())),
            }
        }
    }
}
