//! The sending side: scanner thread → hasher thread → this thread (compress, frame, write).
//!
//! The hasher finds zero blocks and digests the others, so the writer only frames runs of
//! non-zero blocks; zero blocks and holes never reach the wire.

use std::io::{BufWriter, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Instant;

use anyhow::Context;

use super::digest::{ContentHasher, Hash32, Run};
use super::format::{encode_data_head, encode_header, encode_trailer, Codec, Trailer};
use super::progress::{human, Progress};
use super::source::{scan, Scanned, Source};
use super::{
    aborted, first_real_error, joined, Stats, CHANNEL_DEPTH, DIGEST_ALGORITHM, FRAME_BYTES,
};

/// How to send.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Compress data frames with zstd (a frame that does not shrink is sent raw). Worth it
    /// only when the link is slower than zstd (~200 MiB/s per core at level 1).
    pub compress: bool,
    /// zstd level when compressing.
    pub compress_level: i32,
    /// Also compute the MD5 of the logical content (costs a pass over the zeros too).
    pub md5: bool,
}

impl Default for SendOptions {
    fn default() -> SendOptions {
        SendOptions {
            compress: false,
            compress_level: 1,
            md5: false,
        }
    }
}

/// From the hasher to the writer.
enum Hashed {
    Chunk {
        offset: u64,
        data: Vec<u8>,
        runs: Vec<Run>,
    },
    End {
        size: u64,
        digest: Hash32,
        md5: Option<[u8; 16]>,
    },
}

/// Writes the stream of `source` to `out` (flushed at the end). On error the stream is left
/// without its end marker, so no receiver can take it for complete.
pub fn send(
    source: &mut Source<'_>,
    out: &mut dyn Write,
    opts: &SendOptions,
) -> anyhow::Result<Stats> {
    let start = Instant::now();
    let size_hint = source.size();
    let mut stats = None;
    std::thread::scope(|s| {
        let (scan_tx, scan_rx) = sync_channel(CHANNEL_DEPTH);
        let (hash_tx, hash_rx) = sync_channel(CHANNEL_DEPTH);
        let reader = s.spawn(move || scan(source, &scan_tx));
        let md5 = opts.md5;
        let hasher = s.spawn(move || hash_stage(&scan_rx, &hash_tx, md5));
        let written = write_stage(&hash_rx, out, size_hint, opts, &mut stats);
        // Unblocks the hasher (and through it the scanner) when writing failed.
        drop(hash_rx);
        first_real_error(vec![
            joined(reader.join(), "reader"),
            joined(hasher.join(), "hasher"),
            written,
        ])
    })?;
    let mut stats = stats.context("internal error: the stream ended without statistics")?;
    stats.elapsed_secs = start.elapsed().as_secs_f64();
    tracing::info!(
        "sent {} ({} of data, {} on the wire) in {:.1}s",
        human(stats.logical_bytes),
        human(stats.data_bytes),
        human(stats.wire_bytes),
        stats.elapsed_secs
    );
    Ok(stats)
}

fn hash_stage(rx: &Receiver<Scanned>, tx: &SyncSender<Hashed>, md5: bool) -> anyhow::Result<()> {
    let mut hasher = ContentHasher::new(md5);
    loop {
        let item = match rx.recv().map_err(|_| aborted())? {
            Scanned::Chunk { offset, data } => {
                let runs = hasher.chunk(offset, &data);
                Hashed::Chunk { offset, data, runs }
            }
            Scanned::End { size } => {
                let (digest, md5) = hasher.finish(size);
                tx.send(Hashed::End { size, digest, md5 })
                    .map_err(|_| aborted())?;
                return Ok(());
            }
        };
        tx.send(item).map_err(|_| aborted())?;
    }
}

/// Counts the bytes that reach the underlying writer.
struct Counted<'a> {
    inner: &'a mut dyn Write,
    count: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_stage(
    rx: &Receiver<Hashed>,
    out: &mut dyn Write,
    size_hint: Option<u64>,
    opts: &SendOptions,
    stats: &mut Option<Stats>,
) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(
        256 << 10,
        Counted {
            inner: out,
            count: 0,
        },
    );
    let mut compressor = match opts.compress {
        true => Some(
            zstd::bulk::Compressor::new(opts.compress_level)
                .context("setting up zstd compression")?,
        ),
        false => None,
    };
    let mut packed: Vec<u8> = Vec::with_capacity(if opts.compress { FRAME_BYTES } else { 0 });
    let mut data_bytes = 0u64;
    let mut progress = Progress::new("sent", size_hint);
    let write_err = |e: std::io::Error| anyhow::Error::new(e).context("writing the stream");
    out.write_all(&encode_header(size_hint))
        .map_err(write_err)?;
    loop {
        match rx.recv().map_err(|_| aborted())? {
            Hashed::Chunk { offset, data, runs } => {
                for run in runs {
                    let raw = &data[run.start..run.start + run.len];
                    packed.clear();
                    let compressed = match &mut compressor {
                        // Output that does not fit in the raw size is not worth sending.
                        Some(c) => c
                            .compress_to_buffer(raw, &mut packed)
                            .is_ok_and(|n| n < raw.len()),
                        None => false,
                    };
                    let (codec, payload) = match compressed {
                        true => (Codec::Zstd, &packed[..]),
                        false => (Codec::Raw, raw),
                    };
                    let head = encode_data_head(
                        offset + run.start as u64,
                        run.len,
                        codec,
                        payload.len(),
                        &run.digests,
                    );
                    out.write_all(&head).map_err(write_err)?;
                    out.write_all(payload).map_err(write_err)?;
                    data_bytes += run.len as u64;
                }
                progress.at(offset + data.len() as u64);
            }
            Hashed::End { size, digest, md5 } => {
                let trailer = Trailer { size, digest, md5 };
                out.write_all(&encode_trailer(&trailer))
                    .map_err(write_err)?;
                out.flush().map_err(write_err)?;
                *stats = Some(Stats {
                    logical_bytes: size,
                    data_bytes,
                    wire_bytes: out.get_ref().count,
                    zeroed_bytes: 0,
                    digest_algorithm: DIGEST_ALGORITHM,
                    digest: hex::encode(digest),
                    md5: md5.map(hex::encode),
                    elapsed_secs: 0.0,
                });
                return Ok(());
            }
        }
    }
}
