//! Moving LV contents between hosts, seen from the frontend.
//!
//! - Same host: the agent copies LV to LV itself ([`super::data::copy`]).
//! - Two hosts: the destination's agent pulls from the source over ssh (host to host: the
//!   bytes never cross the frontend), unless `relay_via_frontend` is configured, in which case
//!   the frontend pipes the source's `send` into the destination's `recv`.
//! - From the frontend (an image import): the frontend runs the stream sender itself and
//!   feeds the destination's `recv` on stdin.
//!
//! In every case the receiver verifies the stream digest before it answers; the caller gets
//! the verified digest back and may compare it with a separate `checksum` of the source.

use std::io::{Read, Write};

use anyhow::Context;

use super::client::HostClient;
use super::data::{Checksum, ChecksumReq, CopyReq, LvRef, PullFrom, Received, RecvReq, SendReq};
use crate::config::Config;
use crate::exec::{self, Pipe};
use crate::stream::{self, SendOptions, Source};

/// An LV on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvLoc {
    /// The host.
    pub host: String,
    /// The LV.
    pub lv: LvRef,
}

impl std::fmt::Display for LvLoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.lv)
    }
}

/// How to copy.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// The destination was just created and reads as zeros.
    pub fresh: bool,
    /// Bytes to copy (default: the whole source LV).
    pub size_bytes: Option<u64>,
}

/// Copies `src` into the existing LV `dst`; returns the verified stream statistics.
pub fn copy_lv(
    client: &HostClient,
    config: &Config,
    src: &LvLoc,
    dst: &LvLoc,
    o: CopyOptions,
) -> anyhow::Result<Received> {
    tracing::info!("copying {src} to {dst}");
    let res = if src.host == dst.host {
        client.call(
            &dst.host,
            &CopyReq {
                from_lv: src.lv.clone(),
                to_lv: dst.lv.clone(),
                fresh: o.fresh,
                size_bytes: o.size_bytes,
            },
        )
    } else if config.relay_via_frontend {
        relay(client, config, src, dst, o)
    } else {
        client.call(
            &dst.host,
            &RecvReq {
                lv: dst.lv.clone(),
                fresh: o.fresh,
                expect_size: None,
                size_bytes: o.size_bytes,
                from: PullFrom {
                    from_host: Some(src.host.clone()),
                    from_lv: Some(src.lv.clone()),
                    from_agent: Some(config.host_agent.clone()),
                    ssh_command: Some(serde_json::to_string(&config.ssh.0)?),
                    compress: config.compress,
                },
            },
        )
    };
    res.with_context(|| format!("copying {src} to {dst}"))
}

/// The frontend pipes `send` on the source into `recv` on the destination.
fn relay(
    client: &HostClient,
    config: &Config,
    src: &LvLoc,
    dst: &LvLoc,
    o: CopyOptions,
) -> anyhow::Result<Received> {
    let send_cmd = client.command(
        &src.host,
        &SendReq {
            lv: src.lv.clone(),
            size_bytes: o.size_bytes,
            compress: config.compress,
            md5: false,
        },
    )?;
    let mut sender = exec::spawn(&send_cmd, Pipe::Null, Pipe::Piped, Pipe::Piped)?;
    let mut from = sender.child.stdout.take().expect("piped");
    let mut send_err = sender.child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = send_err.read_to_end(&mut v);
        v
    });
    let recv = feed(client, dst, o.fresh, move |w| {
        std::io::copy(&mut from, w).context("relaying the stream")?;
        Ok(())
    });
    let err = err_thread.join().unwrap_or_default();
    super::client::relay_logs(&src.host, &String::from_utf8_lossy(&err));
    match (recv, sender.finish(&err)) {
        (Ok(r), Ok(())) => Ok(r),
        // A sender that died of a broken pipe only saw the receiver stop: report the receiver.
        (Err(r), Err(s)) if s.stderr_tail().contains("Broken pipe") => Err(r),
        (_, Err(s)) => Err(anyhow::Error::new(s).context(format!("sending {src}"))),
        (Err(r), Ok(())) => Err(r),
    }
}

/// Runs `recv` on `dst` with its stdin fed by `write` (on another thread); returns the
/// receiver's verified statistics.
fn feed(
    client: &HostClient,
    dst: &LvLoc,
    fresh: bool,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()> + Send,
) -> anyhow::Result<Received> {
    let req = RecvReq {
        lv: dst.lv.clone(),
        fresh,
        expect_size: None,
        size_bytes: None,
        from: PullFrom {
            from_host: None,
            from_lv: None,
            from_agent: None,
            ssh_command: None,
            compress: false,
        },
    };
    let cmd = client.command(&dst.host, &req)?;
    let mut child = exec::spawn(&cmd, Pipe::Piped, Pipe::Piped, Pipe::Piped)?;
    let mut stdin = child.child.stdin.take().expect("piped");
    let mut stdout = child.child.stdout.take().expect("piped");
    let mut stderr = child.child.stderr.take().expect("piped");
    let (written, out, err) = std::thread::scope(|s| {
        let out = s.spawn(move || {
            let mut v = Vec::new();
            let _ = stdout.read_to_end(&mut v);
            v
        });
        let err = s.spawn(move || {
            let mut v = Vec::new();
            let _ = stderr.read_to_end(&mut v);
            v
        });
        let written = write(&mut stdin);
        drop(stdin);
        (
            written,
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        )
    });
    let stderr_text = String::from_utf8_lossy(&err).into_owned();
    super::client::relay_logs(&dst.host, &stderr_text);
    let finished = child.finish(&err);
    match (written, finished) {
        (_, Err(e)) => {
            Err(anyhow::Error::new(e).context(format!("receiving into {}:{}", dst.host, dst.lv)))
        }
        (Err(e), Ok(())) => Err(e),
        (Ok(()), Ok(())) => serde_json::from_slice(&out).with_context(|| {
            format!(
                "host {}: recv answered something that is not its JSON document",
                dst.host
            )
        }),
    }
}

/// Streams `source` (frontend data: a local file, a download) into the existing LV `dst`.
pub fn push(
    client: &HostClient,
    config: &Config,
    source: &mut Source<'_>,
    dst: &LvLoc,
    fresh: bool,
    md5: bool,
) -> anyhow::Result<Received> {
    let opts = SendOptions {
        compress: config.compress,
        md5,
        ..SendOptions::default()
    };
    feed(client, dst, fresh, |w| {
        stream::send(source, w, &opts)
            .map(|_| ())
            .context("streaming the image")
    })
    .with_context(|| format!("writing into {dst}"))
}

/// The digest (and MD5) of an LV, computed on its host.
pub fn checksum(
    client: &HostClient,
    loc: &LvLoc,
    size_bytes: Option<u64>,
    md5: bool,
) -> anyhow::Result<Checksum> {
    client.call(
        &loc.host,
        &ChecksumReq {
            lv: loc.lv.clone(),
            size_bytes,
            md5,
        },
    )
}
