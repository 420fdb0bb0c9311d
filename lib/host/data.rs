//! The agent's data operations on LVs: `send`, `recv` (from stdin, or pulled from another host
//! over ssh), `checksum`, `copy` (LV to LV on one host). They move bytes with [`crate::stream`]:
//! sparse, checksummed end to end, the receiver verifying the digest before it answers.
//!
//! Invariants:
//! - LVs are addressed as `vg/lv` and resolved by the agent (activated, node waited for): a
//!   caller never hands the agent a raw path to write.
//! - `send` writes the stream on the process's real stdout (never a buffer: images are large);
//!   every other op answers one JSON document.
//! - A receiver writes only into an existing LV and zeroes the ranges the sender skipped unless
//!   told the LV is fresh (just created and zeroed by `lv-create`).
//! - Data ops take no VG lock: they change no LVM metadata, and a copy can take hours.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};

use super::agent::Agent;
use super::proto::Request;
use crate::error::{fail, ErrorKind};
use crate::exec::ssh::SshCommand;
use crate::exec::{self, Pipe};
use crate::lvm::{LvName, VgName};
use crate::stream::{self, RecvOptions, SendOptions, Source};

/// An LV named `vg/lv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvRef {
    /// The VG.
    pub vg: VgName,
    /// The LV.
    pub lv: LvName,
}

impl FromStr for LvRef {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<LvRef> {
        let (vg, lv) = s
            .split_once('/')
            .ok_or_else(|| fail(ErrorKind::BadInput, format!("{s:?} is not vg/lv")))?;
        Ok(LvRef {
            vg: vg.parse()?,
            lv: lv.parse()?,
        })
    }
}

impl std::fmt::Display for LvRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.vg, self.lv)
    }
}

fn flag(name: &str, v: impl std::fmt::Display) -> String {
    format!("--{name}={v}")
}

/// What a receiving op answers (the stream statistics, owned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Received {
    /// Logical size.
    pub logical_bytes: u64,
    /// Data bytes carried.
    pub data_bytes: u64,
    /// Bytes on the wire.
    pub wire_bytes: u64,
    /// Bytes zeroed on the receiver.
    pub zeroed_bytes: u64,
    /// Digest algorithm.
    pub digest_algorithm: String,
    /// Verified digest.
    pub digest: String,
    /// MD5, when asked.
    pub md5: Option<String>,
    /// Seconds.
    pub elapsed_secs: f64,
}

impl From<stream::Stats> for Received {
    fn from(s: stream::Stats) -> Received {
        Received {
            logical_bytes: s.logical_bytes,
            data_bytes: s.data_bytes,
            wire_bytes: s.wire_bytes,
            zeroed_bytes: s.zeroed_bytes,
            digest_algorithm: s.digest_algorithm.to_string(),
            digest: s.digest,
            md5: s.md5,
            elapsed_secs: s.elapsed_secs,
        }
    }
}

/// `host send`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct SendReq {
    /// The LV to read (`vg/lv`).
    #[arg(long)]
    pub lv: LvRef,
    /// Bytes to send (default: the whole LV).
    #[arg(long)]
    pub size_bytes: Option<u64>,
    /// zstd-compress data frames.
    #[arg(long)]
    pub compress: bool,
    /// Also compute the MD5 of the content.
    #[arg(long)]
    pub md5: bool,
}

impl Request for SendReq {
    const OP: &'static str = "send";
    const LOCKS: bool = false;
    const MOVES_DATA: bool = true;
    type Response = Received;
    fn args(&self) -> Vec<String> {
        let mut a = vec![flag("lv", &self.lv)];
        if let Some(n) = self.size_bytes {
            a.push(flag("size-bytes", n));
        }
        if self.compress {
            a.push("--compress".into());
        }
        if self.md5 {
            a.push("--md5".into());
        }
        a
    }
}

/// Where a `recv` reads from when it pulls: the sending host.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct PullFrom {
    /// Pull from this host (runs `send` there over ssh) instead of reading stdin.
    #[arg(long)]
    pub from_host: Option<String>,
    /// The LV to pull.
    #[arg(long, requires = "from_host")]
    pub from_lv: Option<LvRef>,
    /// The agent's path on that host.
    #[arg(long, requires = "from_host")]
    pub from_agent: Option<String>,
    /// The ssh client command line, as a JSON array.
    #[arg(long, requires = "from_host")]
    pub ssh_command: Option<String>,
    /// Ask the sender to compress.
    #[arg(long)]
    pub compress: bool,
}

/// `host recv`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RecvReq {
    /// The LV to write (`vg/lv`), which must exist and be at least the content's size.
    #[arg(long)]
    pub lv: LvRef,
    /// The LV reads as zeros already (just created by lv-create): skipped ranges stay as they are.
    #[arg(long)]
    pub fresh: bool,
    /// Refuse a stream of another logical size.
    #[arg(long)]
    pub expect_size: Option<u64>,
    /// Bytes to pull (the sender's size).
    #[arg(long)]
    pub size_bytes: Option<u64>,
    /// Pulling.
    #[command(flatten)]
    pub from: PullFrom,
}

impl Request for RecvReq {
    const OP: &'static str = "recv";
    const LOCKS: bool = false;
    const MOVES_DATA: bool = true;
    type Response = Received;
    fn args(&self) -> Vec<String> {
        let mut a = vec![flag("lv", &self.lv)];
        if self.fresh {
            a.push("--fresh".into());
        }
        if let Some(n) = self.expect_size {
            a.push(flag("expect-size", n));
        }
        if let Some(n) = self.size_bytes {
            a.push(flag("size-bytes", n));
        }
        if let Some(h) = &self.from.from_host {
            a.push(flag("from-host", h));
        }
        if let Some(l) = &self.from.from_lv {
            a.push(flag("from-lv", l));
        }
        if let Some(p) = &self.from.from_agent {
            a.push(flag("from-agent", p));
        }
        if let Some(s) = &self.from.ssh_command {
            a.push(flag("ssh-command", s));
        }
        if self.from.compress {
            a.push("--compress".into());
        }
        a
    }
}

/// `host checksum`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ChecksumReq {
    /// The LV (`vg/lv`).
    #[arg(long)]
    pub lv: LvRef,
    /// Bytes to cover (default: the whole LV).
    #[arg(long)]
    pub size_bytes: Option<u64>,
    /// Also compute the MD5.
    #[arg(long)]
    pub md5: bool,
}

/// `checksum`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    /// Bytes covered.
    pub logical_bytes: u64,
    /// Algorithm.
    pub digest_algorithm: String,
    /// Digest.
    pub digest: String,
    /// MD5 when asked.
    pub md5: Option<String>,
}

impl Request for ChecksumReq {
    const OP: &'static str = "checksum";
    const LOCKS: bool = false;
    const MOVES_DATA: bool = true;
    type Response = Checksum;
    fn args(&self) -> Vec<String> {
        let mut a = vec![flag("lv", &self.lv)];
        if let Some(n) = self.size_bytes {
            a.push(flag("size-bytes", n));
        }
        if self.md5 {
            a.push("--md5".into());
        }
        a
    }
}

/// `host copy`: LV to LV on this host.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct CopyReq {
    /// Source LV.
    #[arg(long)]
    pub from_lv: LvRef,
    /// Target LV (exists, at least as large).
    #[arg(long)]
    pub to_lv: LvRef,
    /// The target reads as zeros already.
    #[arg(long)]
    pub fresh: bool,
    /// Bytes to copy (default: the whole source).
    #[arg(long)]
    pub size_bytes: Option<u64>,
}

impl Request for CopyReq {
    const OP: &'static str = "copy";
    const LOCKS: bool = false;
    const MOVES_DATA: bool = true;
    type Response = Received;
    fn args(&self) -> Vec<String> {
        let mut a = vec![flag("from-lv", &self.from_lv), flag("to-lv", &self.to_lv)];
        if self.fresh {
            a.push("--fresh".into());
        }
        if let Some(n) = self.size_bytes {
            a.push(flag("size-bytes", n));
        }
        a
    }
}

/// The device node of an existing LV of ours (activated, waited for).
fn lv_path(a: &Agent, r: &LvRef) -> anyhow::Result<PathBuf> {
    super::lv::device_of(a, &r.vg, &r.lv, Duration::from_secs(60))
}

/// `send`: the stream of the LV on `out`.
pub fn send(a: &Agent, req: &SendReq, out: &mut dyn Write) -> anyhow::Result<Received> {
    let path = lv_path(a, &req.lv)?;
    let mut source = Source::open(&path, req.size_bytes)?;
    let stats = stream::send(
        &mut source,
        out,
        &SendOptions {
            compress: req.compress,
            md5: req.md5,
            ..SendOptions::default()
        },
    )
    .with_context(|| format!("sending LV {}", req.lv))?;
    tracing::info!("sent LV {}: {}", req.lv, summary(&stats));
    Ok(stats.into())
}

fn summary(s: &stream::Stats) -> String {
    format!(
        "{} MiB logical, {} MiB of data, {} MiB on the wire, {:.1}s",
        s.logical_bytes >> 20,
        s.data_bytes >> 20,
        s.wire_bytes >> 20,
        s.elapsed_secs
    )
}

fn open_target(path: &PathBuf) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {} for writing", path.display()))
}

/// `recv`: from stdin, or pulled from another host.
pub fn recv(a: &Agent, req: &RecvReq, stdin: &mut dyn Read) -> anyhow::Result<Received> {
    let path = lv_path(a, &req.lv)?;
    let target = open_target(&path)?;
    let opts = RecvOptions {
        fresh: req.fresh,
        expect_size: req.expect_size,
        extend_file: false,
    };
    let Some(host) = &req.from.from_host else {
        let stats = stream::recv(stdin, &target, &opts)
            .with_context(|| format!("receiving into LV {}", req.lv))?;
        tracing::info!("received LV {}: {}", req.lv, summary(&stats));
        return Ok(stats.into());
    };
    let from_lv = req
        .from
        .from_lv
        .as_ref()
        .ok_or_else(|| fail(ErrorKind::BadInput, "recv --from-host needs --from-lv"))?;
    let ssh: Vec<String> = match &req.from.ssh_command {
        Some(j) => serde_json::from_str(j).map_err(|e| {
            fail(
                ErrorKind::BadInput,
                format!("--ssh-command is not a JSON array of strings: {e}"),
            )
        })?,
        None => SshCommand::default().0,
    };
    let agent = req
        .from
        .from_agent
        .clone()
        .unwrap_or_else(|| "one-bsud".into());
    let send = SendReq {
        lv: from_lv.clone(),
        size_bytes: req.size_bytes,
        compress: req.from.compress,
        md5: false,
    };
    let mut words = vec![agent, "host".into(), SendReq::OP.into()];
    words.extend(send.args());
    words.extend(
        super::proto::Limits {
            deadline_secs: a.deadline.left().as_secs().max(1),
            lock_timeout_secs: 1,
        }
        .args(),
    );
    let cmd = SshCommand(ssh)
        .remote(host, &words)?
        .timeout(a.deadline.left());
    let mut child = exec::spawn(&cmd, Pipe::Null, Pipe::Piped, Pipe::Piped)?;
    let mut out = child.child.stdout.take().expect("piped");
    let mut err = child.child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let received = stream::recv(&mut out, &target, &opts);
    drop(out);
    let stderr = err_reader.join().unwrap_or_default();
    super::client::relay_logs(host, &String::from_utf8_lossy(&stderr));
    let sent = child.finish(&stderr);
    let ctx = || format!("receiving LV {from_lv} from {host} into LV {}", req.lv);
    let stats = match (received, sent) {
        (Ok(s), Ok(())) => s,
        // The sender's failure explains a truncated stream better than the truncation does,
        // unless the sender only failed because we stopped reading (broken pipe).
        (Err(r), Err(s)) if s.stderr_tail().contains("Broken pipe") => return Err(r.context(ctx())),
        (_, Err(s)) => {
            return Err(anyhow::Error::new(s).context(format!("pulling LV {from_lv} from {host}")))
        }
        (Err(r), Ok(())) => return Err(r.context(ctx())),
    };
    tracing::info!(
        "pulled LV {from_lv} from {host} into {}: {}",
        req.lv,
        summary(&stats)
    );
    Ok(stats.into())
}

/// `checksum`.
pub fn checksum(a: &Agent, req: &ChecksumReq) -> anyhow::Result<Checksum> {
    let path = lv_path(a, &req.lv)?;
    let mut source = Source::open(&path, req.size_bytes)?;
    let (digest, md5, size) = stream::checksum(&mut source, req.md5)
        .with_context(|| format!("checksumming LV {}", req.lv))?;
    Ok(Checksum {
        logical_bytes: size,
        digest_algorithm: stream::DIGEST_ALGORITHM.to_string(),
        digest,
        md5,
    })
}

/// `copy`: LV to LV on this host, through an in-process pipe (same stream, same checks).
pub fn copy(a: &Agent, req: &CopyReq) -> anyhow::Result<Received> {
    if req.from_lv == req.to_lv {
        return Err(fail(
            ErrorKind::BadInput,
            "copy: source and target are the same LV",
        ));
    }
    let src = lv_path(a, &req.from_lv)?;
    let dst = lv_path(a, &req.to_lv)?;
    let target = open_target(&dst)?;
    let mut source = Source::open(&src, req.size_bytes)?;
    let (mut r, mut w) = std::io::pipe().context("creating a pipe")?;
    let opts = RecvOptions {
        fresh: req.fresh,
        expect_size: None,
        extend_file: false,
    };
    let stats = std::thread::scope(|s| {
        let sender = s.spawn(move || stream::send(&mut source, &mut w, &SendOptions::default()));
        let received = stream::recv(&mut r, &target, &opts);
        drop(r);
        let sent = sender
            .join()
            .map_err(|_| anyhow::anyhow!("the sending thread panicked"))?;
        sent?;
        received
    })
    .with_context(|| format!("copying LV {} to {}", req.from_lv, req.to_lv))?;
    tracing::info!(
        "copied LV {} to {}: {}",
        req.from_lv,
        req.to_lv,
        summary(&stats)
    );
    Ok(stats.into())
}
