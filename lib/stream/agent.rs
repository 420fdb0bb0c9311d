//! The stream on plain files: send a file, receive into a file, checksum a file. Used by the
//! benchmark tool (`examples/stream.rs`, `scripts/bench-stream`) and tests. The host agent's
//! operations on LVs (`one-bsud host send|recv|checksum|copy`) are `crate::host::data`; they
//! resolve the LV, then run the same `stream::send`/`stream::recv`.
//!
//! Output contract:
//! - `send` writes the stream to its `out` (the process's stdout: the wiring must hand over
//!   the real stdout, not a buffer) and logs its statistics as one line `STATS: {json}` on
//!   stderr (through the log); stdout carries nothing else.
//! - `recv` reads the stream from its input (stdin) and answers the statistics as a JSON
//!   document (stdout), including the sender's digest and MD5 which it verified or carried.
//! - `checksum` answers `{"logical_bytes", "digest_algorithm", "digest", "md5"}`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;

use super::{digest, recv, send, RecvOptions, SendOptions, Source, Stats, DIGEST_ALGORITHM};
use crate::one::output::ActionOutput;

/// `host send`: stream a device or file to stdout.
#[derive(Debug, Clone, clap::Args)]
pub struct SendArgs {
    /// Device or file to read.
    #[arg(long, allow_hyphen_values = true)]
    pub path: PathBuf,
    /// Logical size to send (default: the whole device or file; must not exceed it).
    #[arg(long)]
    pub size_bytes: Option<u64>,
    /// Compress data frames with zstd (for slow links).
    #[arg(long)]
    pub compress: bool,
    /// Also compute the MD5 of the content (reads the zeros too).
    #[arg(long)]
    pub md5: bool,
}

/// `host recv`: write a stream from stdin into a device or file.
#[derive(Debug, Clone, clap::Args)]
pub struct RecvArgs {
    /// Block device or regular file to write.
    #[arg(long, allow_hyphen_values = true)]
    pub path: PathBuf,
    /// The target already reads as zeros (a just-created LV): skipped ranges are not zeroed.
    #[arg(long)]
    pub fresh: bool,
    /// Refuse a stream whose logical size differs.
    #[arg(long)]
    pub expect_size: Option<u64>,
    /// The target is a regular file that may be created and grown to the logical size.
    #[arg(long)]
    pub create_file: bool,
}

/// `host checksum`: the stream digest of a device or file, computed locally.
#[derive(Debug, Clone, clap::Args)]
pub struct ChecksumArgs {
    /// Device or file to read.
    #[arg(long, allow_hyphen_values = true)]
    pub path: PathBuf,
    /// Logical size (default: the whole device or file).
    #[arg(long)]
    pub size_bytes: Option<u64>,
    /// Also compute the MD5 (reads the zeros too).
    #[arg(long)]
    pub md5: bool,
}

/// Runs `host send`, writing the stream to `out`.
pub fn send_op(args: &SendArgs, out: &mut dyn Write) -> anyhow::Result<Stats> {
    let mut source = Source::open(&args.path, args.size_bytes)?;
    let opts = SendOptions {
        compress: args.compress,
        md5: args.md5,
        ..SendOptions::default()
    };
    let stats = send(&mut source, out, &opts)
        .with_context(|| format!("sending {}", args.path.display()))?;
    tracing::info!("{}", stats_line(&stats));
    Ok(stats)
}

/// The sender's final log line: `STATS: {json}`.
pub fn stats_line(stats: &Stats) -> String {
    format!("STATS: {}", serde_json::json!(stats))
}

/// Runs `host recv`, reading the stream from `input`.
pub fn recv_op(args: &RecvArgs, input: &mut dyn Read) -> anyhow::Result<ActionOutput> {
    let target = open_target(args)?;
    let opts = RecvOptions {
        fresh: args.fresh,
        expect_size: args.expect_size,
        extend_file: args.create_file,
    };
    let stats = recv(input, &target, &opts)
        .with_context(|| format!("receiving into {}", args.path.display()))?;
    Ok(ActionOutput::Document(serde_json::json!(stats).to_string()))
}

fn open_target(args: &RecvArgs) -> anyhow::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(args.create_file);
    options
        .open(&args.path)
        .with_context(|| format!("opening {} for writing", args.path.display()))
}

/// Runs `host checksum`.
pub fn checksum_op(args: &ChecksumArgs) -> anyhow::Result<ActionOutput> {
    let mut source = Source::open(&args.path, args.size_bytes)?;
    let (digest, md5, size) = digest::checksum(&mut source, args.md5)
        .with_context(|| format!("checksumming {}", args.path.display()))?;
    Ok(ActionOutput::Document(
        serde_json::json!({
            "logical_bytes": size,
            "digest_algorithm": DIGEST_ALGORITHM,
            "digest": digest,
            "md5": md5,
        })
        .to_string(),
    ))
}
