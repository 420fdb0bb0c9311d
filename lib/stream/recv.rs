//! The receiving side: this thread (read and check frames) → verifier thread (decompress,
//! check block digests, fold the stream digest) → writer thread (positional writes, zeroing of
//! skipped ranges, fsync).
//!
//! Checks that need only the stream's order and sizes are made while reading, before the frame
//! goes further; content checks are the verifier's. Success needs all three stages to finish.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Instant;

use anyhow::{bail, Context};

use super::digest::{blocks_in, Fold, Hash32};
use super::format::{Codec, DataFrame, Frame, Trailer, WireReader};
use super::progress::{human, Progress};
use super::{
    aborted, first_real_error, joined, split, Stats, BLOCK_SIZE, CHANNEL_DEPTH, DIGEST_ALGORITHM,
};
use crate::sys;

/// Largest range zeroed in one call.
const ZERO_PIECE: u64 = 1 << 30;

/// How to receive.
#[derive(Debug, Clone, Default)]
pub struct RecvOptions {
    /// The target is known to read as zeros already (a just-created LV on fresh extents, a
    /// new sparse file): skipped ranges are not zeroed.
    pub fresh: bool,
    /// Refuse a stream whose logical size is not this.
    pub expect_size: Option<u64>,
    /// A regular-file target smaller than the logical size is grown to it instead of refused.
    pub extend_file: bool,
}

/// From the frame reader to the verifier.
enum Wire {
    Data(DataFrame),
    End(Trailer),
}

/// From the verifier to the writer.
enum ToWrite {
    Data { offset: u64, data: Vec<u8> },
    Zero { offset: u64, len: u64 },
    End { size: u64 },
}

/// What the verifier established.
struct Verified {
    size: u64,
    data_bytes: u64,
    digest: Hash32,
    md5: Option<[u8; 16]>,
}

/// Receives a stream from `input` into `target` (opened for writing). Returns only once the
/// content is verified and synced; on error the target holds partial content and the caller
/// cleans it up.
pub fn recv(input: &mut dyn Read, target: &File, opts: &RecvOptions) -> anyhow::Result<Stats> {
    let start = Instant::now();
    let target = Target::new(target, opts.extend_file)?;
    let mut wire = WireReader::new(BufReader::with_capacity(256 << 10, input));
    let header_size = wire.read_header()?;
    if let Some(size) = header_size {
        check_size(size, opts.expect_size, &target)?;
        target.extend_to(size)?;
    }
    let (verified, written, read) = std::thread::scope(|s| {
        let (wire_tx, wire_rx) = sync_channel(CHANNEL_DEPTH);
        let (write_tx, write_rx) = sync_channel(CHANNEL_DEPTH);
        let verifier = s.spawn(move || verify_stage(&wire_rx, &write_tx));
        let target = &target;
        let writer = s.spawn(move || write_stage(&write_rx, target, opts.fresh, header_size));
        let read = read_stage(&mut wire, header_size, opts.expect_size, target, &wire_tx);
        // Unblocks the verifier (and through it the writer) when reading failed.
        drop(wire_tx);
        let (verified, verify_status) = split(joined(verifier.join(), "verifier"));
        let (written, write_status) = split(joined(writer.join(), "writer"));
        first_real_error(vec![read, verify_status, write_status])?;
        anyhow::Ok((verified, written, wire.position()))
    })?;
    let (Some(v), Some(zeroed_bytes)) = (verified, written) else {
        bail!("internal error: the stream ended without a result");
    };
    let stats = Stats {
        logical_bytes: v.size,
        data_bytes: v.data_bytes,
        wire_bytes: read,
        zeroed_bytes,
        digest_algorithm: DIGEST_ALGORITHM,
        digest: hex::encode(v.digest),
        md5: v.md5.map(hex::encode),
        elapsed_secs: start.elapsed().as_secs_f64(),
    };
    tracing::info!(
        "received {} ({} of data, {} zeroed) in {:.1}s, digest verified",
        human(stats.logical_bytes),
        human(stats.data_bytes),
        human(stats.zeroed_bytes),
        stats.elapsed_secs
    );
    Ok(stats)
}

/// The logical size against what the caller expects and what the target holds.
fn check_size(size: u64, expect: Option<u64>, target: &Target<'_>) -> anyhow::Result<()> {
    if let Some(expected) = expect {
        if size != expected {
            bail!("the stream holds {size} bytes, {expected} were expected");
        }
    }
    if !target.extendable && size > target.capacity {
        bail!(
            "the target holds {} bytes, smaller than the stream's {size} bytes",
            target.capacity
        );
    }
    Ok(())
}

/// Reads frames and checks their order and bounds against the stream's state.
fn read_stage(
    wire: &mut WireReader<BufReader<&mut dyn Read>>,
    header_size: Option<u64>,
    expect: Option<u64>,
    target: &Target<'_>,
    tx: &SyncSender<Wire>,
) -> anyhow::Result<()> {
    // End of the previous frame: the next one starts at or after it.
    let mut next = 0u64;
    // End of a frame whose last block is short: it must be the content's end.
    let mut short_end: Option<u64> = None;
    loop {
        let at = wire.position();
        match wire.read_frame()? {
            Frame::Data(f) => {
                let end = f.offset.checked_add(f.raw_len as u64);
                let bad = |what: String| {
                    anyhow::anyhow!("the stream is corrupted: data frame at byte {at}: {what}")
                };
                let Some(end) = end else {
                    return Err(bad(format!("offset {} overflows", f.offset)));
                };
                if f.offset < next || short_end.is_some() {
                    return Err(bad(format!(
                        "offset {} overlaps or precedes earlier data (up to {next})",
                        f.offset
                    )));
                }
                let short = !(f.raw_len as u64).is_multiple_of(BLOCK_SIZE);
                if let Some(size) = header_size {
                    if end > size || (short && end != size) {
                        return Err(bad(format!(
                            "bytes {}..{end} do not fit the content's {size} bytes",
                            f.offset
                        )));
                    }
                }
                if !target.extendable && end > target.capacity {
                    bail!(
                        "the stream is larger than the target ({} bytes): it has data up to byte {end}",
                        target.capacity
                    );
                }
                if short {
                    short_end = Some(end);
                }
                next = end;
                tx.send(Wire::Data(f)).map_err(|_| aborted())?;
            }
            Frame::End(t) => {
                if let Some(size) = header_size {
                    if t.size != size {
                        bail!(
                            "the stream is corrupted: its end marker says {} bytes, its header {size}",
                            t.size
                        );
                    }
                }
                if t.size < next || short_end.is_some_and(|e| e != t.size) {
                    bail!(
                        "the stream is corrupted: its end marker says {} bytes but data reaches byte {next}",
                        t.size
                    );
                }
                check_size(t.size, expect, target)?;
                wire.expect_eof()?;
                tx.send(Wire::End(t)).map_err(|_| aborted())?;
                return Ok(());
            }
        }
    }
}

/// Decodes payloads, checks every block against its digest and the whole against the stream
/// digest, and tells the writer what to write and what to zero.
fn verify_stage(rx: &Receiver<Wire>, tx: &SyncSender<ToWrite>) -> anyhow::Result<Verified> {
    let mut fold = Fold::new();
    let mut pos = 0u64;
    let mut data_bytes = 0u64;
    let mut decompressor =
        zstd::bulk::Decompressor::new().context("setting up zstd decompression")?;
    let send = |item| tx.send(item).map_err(|_| aborted());
    loop {
        match rx.recv().map_err(|_| aborted())? {
            Wire::Data(f) => {
                if f.offset > pos {
                    fold.zero_blocks((f.offset - pos) / BLOCK_SIZE);
                    send(ToWrite::Zero {
                        offset: pos,
                        len: f.offset - pos,
                    })?;
                }
                let data = match f.codec {
                    Codec::Raw => f.payload,
                    Codec::Zstd => {
                        let mut out = Vec::with_capacity(f.raw_len);
                        let n = decompressor
                            .decompress_to_buffer(&f.payload, &mut out)
                            .map_err(|e| {
                                anyhow::anyhow!(
                                    "the stream is corrupted: data at byte {} does not decompress: {e}",
                                    f.offset
                                )
                            })?;
                        if n != f.raw_len {
                            bail!(
                                "the stream is corrupted: data at byte {} decompresses to {n} bytes, not {}",
                                f.offset,
                                f.raw_len
                            );
                        }
                        out
                    }
                };
                for (i, (block, expected)) in
                    data.chunks(BLOCK_SIZE as usize).zip(&f.digests).enumerate()
                {
                    let digest = *blake3::hash(block).as_bytes();
                    if &digest != expected {
                        bail!(
                            "the stream is corrupted: the block at byte {} does not match its digest",
                            f.offset + i as u64 * BLOCK_SIZE
                        );
                    }
                    fold.block(block, &digest);
                }
                pos = f.offset + data.len() as u64;
                data_bytes += data.len() as u64;
                send(ToWrite::Data {
                    offset: f.offset,
                    data,
                })?;
            }
            Wire::End(t) => {
                if t.size > pos {
                    fold.zero_blocks(blocks_in(t.size - pos));
                    send(ToWrite::Zero {
                        offset: pos,
                        len: t.size - pos,
                    })?;
                }
                let digest = fold.finish(t.size);
                if digest != t.digest {
                    bail!(
                        "the received content does not match the sender's digest (got {}, sent {})",
                        hex::encode(digest),
                        hex::encode(t.digest)
                    );
                }
                send(ToWrite::End { size: t.size })?;
                return Ok(Verified {
                    size: t.size,
                    data_bytes,
                    digest,
                    md5: t.md5,
                });
            }
        }
    }
}

/// Writes and zeroes; at the end grows a regular file to the size if allowed and syncs.
/// Returns the number of bytes zeroed.
fn write_stage(
    rx: &Receiver<ToWrite>,
    target: &Target<'_>,
    fresh: bool,
    size_hint: Option<u64>,
) -> anyhow::Result<u64> {
    let mut zeroer = crate::zeroing::Zeroer::new(target.file, target.block_device);
    let mut progress = Progress::new("received", size_hint);
    loop {
        match rx.recv().map_err(|_| aborted())? {
            ToWrite::Data { offset, data } => {
                target
                    .file
                    .write_all_at(&data, offset)
                    .with_context(|| format!("writing the target at byte {offset}"))?;
                progress.at(offset + data.len() as u64);
            }
            ToWrite::Zero { offset, len } => {
                // In pieces: zeroing a large range can take minutes on a device without
                // write-zeroes, and the log must show it is alive.
                let end = offset + len;
                let mut at = offset;
                while at < end {
                    let n = (end - at).min(ZERO_PIECE);
                    if !fresh {
                        zeroer
                            .zero(at, n)
                            .with_context(|| format!("zeroing the target at byte {at}"))?;
                    }
                    at += n;
                    progress.at(at);
                }
            }
            ToWrite::End { size } => {
                target.extend_to(size)?;
                target.file.sync_all().context("syncing the target")?;
                return Ok(zeroer.zeroed);
            }
        }
    }
}

/// The file written into.
struct Target<'a> {
    file: &'a File,
    /// Bytes it holds (a regular file's length, a block device's size).
    capacity: u64,
    /// A regular file allowed to grow to the logical size.
    extendable: bool,
    block_device: bool,
}

impl<'a> Target<'a> {
    fn new(file: &'a File, extend_file: bool) -> anyhow::Result<Target<'a>> {
        let meta = file.metadata().context("reading the target's metadata")?;
        let kind = meta.file_type();
        if kind.is_block_device() {
            let capacity =
                sys::block_device_size(file).context("reading the target's device size")?;
            Ok(Target {
                file,
                capacity,
                extendable: false,
                block_device: true,
            })
        } else if kind.is_file() {
            Ok(Target {
                file,
                capacity: meta.len(),
                extendable: extend_file,
                block_device: false,
            })
        } else {
            bail!("the target must be a block device or a regular file")
        }
    }

    /// Grows an extendable regular file to `size` (new bytes read as zeros).
    fn extend_to(&self, size: u64) -> anyhow::Result<()> {
        if !self.extendable {
            return Ok(());
        }
        let len = self
            .file
            .metadata()
            .context("reading the target's size")?
            .len();
        if len < size {
            self.file
                .set_len(size)
                .with_context(|| format!("growing the target to {size} bytes"))?;
        }
        Ok(())
    }
}
