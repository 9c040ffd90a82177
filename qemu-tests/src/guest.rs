//! Commands in a guest through the QEMU guest agent (`qemu-guest-agent` in
//! the image, a virtio-serial port `org.qemu.guest_agent.0` on the VM).
//!
//! The protocol is QMP-like JSON over the port: `guest-sync-delimited` to
//! flush stale replies, then `guest-exec` (with captured output) and
//! `guest-exec-status` until the process exits.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use serde_json::{json, Value};

/// What a command run in the guest returned.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The output if the command exited 0, else an error with its stderr.
    pub fn success(self, what: &str) -> anyhow::Result<Output> {
        if self.code == 0 {
            Ok(self)
        } else {
            bail!(
                "{what}: exit code {} in the guest\nstdout: {}\nstderr: {}",
                self.code,
                self.stdout.trim(),
                self.stderr.trim()
            )
        }
    }
}

/// One connection to a guest agent.
pub(crate) struct Agent {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Agent {
    /// Connects and synchronises; fails if the agent does not answer within
    /// `timeout` (it is not running yet, say).
    pub(crate) fn connect(socket: &Path, timeout: Duration) -> anyhow::Result<Agent> {
        let stream = UnixStream::connect(socket)
            .with_context(|| format!("connecting to {}", socket.display()))?;
        stream.set_read_timeout(Some(timeout))?;
        let mut agent = Agent {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let id = u64::from(std::process::id() ^ nanos);
        writeln!(
            agent.writer,
            "{}",
            json!({"execute": "guest-sync-delimited", "arguments": {"id": id}})
        )?;
        // The reply follows a 0xFF byte; anything before it is stale.
        loop {
            let mut byte = [0u8];
            agent
                .reader
                .read_exact(&mut byte)
                .context("waiting for the guest agent")?;
            if byte[0] == 0xFF {
                break;
            }
        }
        loop {
            let reply = agent.read()?;
            if reply["return"].as_u64() == Some(id) {
                return Ok(agent);
            }
        }
    }

    fn read(&mut self) -> anyhow::Result<Value> {
        let mut line = Vec::new();
        if self.reader.read_until(b'\n', &mut line)? == 0 {
            bail!("the guest agent closed the connection");
        }
        // A late reply to an earlier sync may carry its 0xFF delimiter.
        line.retain(|b| *b != 0xFF);
        serde_json::from_slice(&line)
            .with_context(|| format!("guest agent reply {:?}", String::from_utf8_lossy(&line)))
    }

    fn call(&mut self, command: &str, arguments: Value) -> anyhow::Result<Value> {
        writeln!(
            self.writer,
            "{}",
            json!({"execute": command, "arguments": arguments})
        )?;
        let reply = self.read()?;
        if let Some(err) = reply.get("error") {
            bail!("guest agent {command}: {err}");
        }
        reply
            .get("return")
            .cloned()
            .ok_or_else(|| anyhow!("guest agent {command}: no return in {reply}"))
    }

    /// Runs `program args...` in the guest and waits up to `timeout`.
    pub(crate) fn exec(
        &mut self,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Output> {
        let started = self.call(
            "guest-exec",
            json!({"path": program, "arg": args, "capture-output": true}),
        )?;
        let pid = started["pid"]
            .as_i64()
            .ok_or_else(|| anyhow!("guest-exec returned no pid: {started}"))?;
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.call("guest-exec-status", json!({"pid": pid}))?;
            if status["exited"].as_bool() == Some(true) {
                let text = |key: &str| -> anyhow::Result<String> {
                    let data = status[key].as_str().unwrap_or_default();
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .with_context(|| format!("decoding {key}"))?;
                    Ok(String::from_utf8_lossy(&bytes).into_owned())
                };
                return Ok(Output {
                    code: status["exitcode"]
                        .as_i64()
                        .or_else(|| status["signal"].as_i64().map(|s| 128 + s))
                        .unwrap_or(-1),
                    stdout: text("out-data")?,
                    stderr: text("err-data")?,
                });
            }
            if Instant::now() >= deadline {
                bail!("{program} {args:?} did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
