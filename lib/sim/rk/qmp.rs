//! A minimal QMP client: line-delimited JSON over QEMU's unix socket, no crate needed.
//!
//! Invariants:
//! - Every read has a deadline (socket read timeout), so a wedged QEMU never hangs a caller.
//! - Events that arrive while a command waits for its answer are kept in order and can be
//!   waited for afterwards ([`Qmp::wait_event`]); nothing QEMU says is dropped unread.
//! - QEMU serves one QMP client at a time: hold a [`Qmp`] only for the few commands at hand.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

/// How long one QMP read may block.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A QMP error answer (`{"error": {"class", "desc"}}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("QMP {command}: {class}: {desc}")]
pub struct QmpError {
    /// The command that failed.
    pub command: String,
    /// QEMU's error class (`GenericError`, `DeviceNotFound`…).
    pub class: String,
    /// QEMU's message.
    pub desc: String,
}

/// A negotiated QMP connection.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: VecDeque<Value>,
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation mode. QEMU accepts a
    /// second client only once the first has gone, so connecting retries until `wait` ends.
    pub fn connect(socket: &Path, wait: Duration) -> anyhow::Result<Qmp> {
        let started = Instant::now();
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if started.elapsed() < wait => {
                    tracing::trace!("QMP {}: {e}; retrying", socket.display());
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("connecting to QMP {}", socket.display()))
                }
            }
        };
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        let writer = stream.try_clone()?;
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
            events: VecDeque::new(),
        };
        let greeting = q.read_message()?;
        if greeting.get("QMP").is_none() {
            anyhow::bail!("QMP {}: unexpected greeting {greeting}", socket.display());
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read_message(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .context("reading from QMP")?;
        if n == 0 {
            anyhow::bail!("QMP connection closed by QEMU");
        }
        serde_json::from_str(&line).with_context(|| format!("QMP sent {line:?}"))
    }

    /// Runs a command; its `return` value, or a [`QmpError`] (inside the anyhow error).
    pub fn execute(&mut self, command: &str, arguments: Value) -> anyhow::Result<Value> {
        let msg = if arguments.as_object().is_some_and(|o| o.is_empty()) {
            json!({ "execute": command })
        } else {
            json!({ "execute": command, "arguments": arguments })
        };
        let mut text = serde_json::to_string(&msg)?;
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .with_context(|| format!("sending QMP {command}"))?;
        loop {
            let v = self.read_message()?;
            if v.get("event").is_some() {
                self.events.push_back(v);
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(QmpError {
                    command: command.to_string(),
                    class: e["class"].as_str().unwrap_or("?").to_string(),
                    desc: e["desc"].as_str().unwrap_or("?").to_string(),
                }
                .into());
            }
            anyhow::bail!("QMP {command}: unexpected answer {v}");
        }
    }

    /// Waits until an event for which `matches` holds arrives (or had arrived); returns it.
    pub fn wait_event(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        if let Some(i) = self.events.iter().position(&matches) {
            return Ok(self.events.remove(i).expect("position is in range"));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                anyhow::bail!("timed out after {timeout:?} waiting for QMP event {what}");
            }
            self.reader.get_ref().set_read_timeout(Some(left))?;
            let v = self.read_message();
            self.reader.get_ref().set_read_timeout(Some(READ_TIMEOUT))?;
            let v = v.with_context(|| format!("waiting for QMP event {what}"))?;
            if v.get("event").is_some() && matches(&v) {
                return Ok(v);
            }
            if v.get("event").is_some() {
                self.events.push_back(v);
            }
        }
    }
}

/// The QMP error class of an error from [`Qmp::execute`], if it is one.
pub fn error_class(e: &anyhow::Error) -> Option<&QmpError> {
    e.downcast_ref::<QmpError>()
}
