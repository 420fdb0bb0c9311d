//! The host-to-host data stream: moves the *logical content* of a disk (an LV device or a file)
//! from a sender to a receiver, typically `ssh src 'one-bsud host send …' | one-bsud host recv …`.
//! It skips all-zero blocks, can compress with zstd, and carries a checksum of the logical
//! content that the receiver recomputes and verifies before it reports success.
//!
//! # Invariants
//! - **No tenant ever reads another's old bytes.** Every range the sender skipped is zeroed on
//!   the receiver (hole punch on a regular file, `BLKZEROOUT` on a block device, written zeros
//!   as the fallback) unless the caller says the target is fresh ([`RecvOptions::fresh`]).
//! - **Success means verified.** [`recv`] returns `Ok` only after the end marker arrived, every
//!   block digest and the stream digest matched, and the target was fsynced. On any error the
//!   target holds partial content: the *caller* removes or reuses it (it owns the LV).
//! - **Bounded memory.** Each side is a pipeline of three threads joined by bounded channels of
//!   at most [`FRAME_BYTES`]-sized items; a few MiB whatever the image size. Nothing ever holds
//!   the whole image.
//! - **Never panics on input.** Every length and offset read from the wire is checked (range,
//!   alignment, order, overflow) before it is used; a bad stream is a clear error.
//! - **Zero ranges cost no hashing.** The digest folds runs of zero blocks into one record, so
//!   the digest of a mostly-empty 1 TiB LV costs only its data.
//!
//! # Blocks
//! The logical content (size `L` bytes) is cut into blocks of [`BLOCK_SIZE`] = 64 KiB; the last
//! block is shorter when `L` is not a multiple. A block is a *zero block* when all its bytes are
//! zero. The sender never puts zero blocks on the wire; the receiver treats every byte range not
//! covered by a data frame as zeros.
//!
//! # The stream digest (`bsud-stream-v1`)
//! `D = BLAKE3(records)`, hex-encoded, where `records` is the concatenation of:
//! 1. the ASCII bytes `one-bsud stream digest v1` followed by `le64(BLOCK_SIZE)`;
//! 2. for the blocks in order, grouped so that each maximal run of consecutive zero blocks is
//!    one record: a run of `n` zero blocks → `0x00 ‖ le64(n)`; a block that is not all zero →
//!    `0x01 ‖ BLAKE3(block bytes)` (32 bytes);
//! 3. the end record `0x02 ‖ le64(L)`.
//!
//! It depends only on the logical content (not on holes, frame boundaries or compression), so
//! [`digest_of`] computes it from a device alone, and the sender, the receiver and a later
//! `host checksum` of the stored LV all agree. The optional MD5 ([`SendOptions::md5`]) is the
//! plain MD5 of all `L` bytes, zeros included; unlike the digest it costs a pass over the zeros.
//!
//! # Wire format (version 1, integers little-endian)
//! ```text
//! stream  = header frame* trailer EOF
//! header  = "BSUDSTRM" version:u16=1 flags:u16 block_size:u32=65536 size:u64     (24 bytes)
//!           flags bit 0: size is known (else size must be 0; the trailer gives it)
//! frame   = 'D' codec:u8 offset:u64 raw_len:u32 payload_len:u32
//!           digest:[u8;32] × ceil(raw_len / block_size)   BLAKE3 of each block's raw bytes
//!           payload:[u8; payload_len]                      codec 0: raw; 1: one zstd frame
//! trailer = 'E' flags:u8 size:u64 digest:[u8;32] md5:[u8;16] seal:[u8;16]     (74 bytes)
//!           flags bit 0: md5 present (else zeros); seal: BLAKE3 of the 58 bytes before it,
//!           truncated to 16 bytes (the MD5 is carried, not recomputed, so it needs a check)
//! ```
//! Data frames come in strictly increasing, non-overlapping order; `offset` is a multiple of
//! the block size; `1 ≤ raw_len ≤ FRAME_BYTES`, a multiple of the block size unless the frame
//! ends at `size`; a zstd payload is smaller than `raw_len` (else the sender sends raw).
//! The per-block digests let the receiver name the corrupted block at once; the trailer's
//! stream digest covers what per-block digests cannot (offsets, dropped frames, the size).
//! Together with the seal, a damaged stream is never accepted with different content: every
//! damaged byte is refused, except inside a zstd payload that still decodes to the same
//! bytes (which the block digests then prove).
//!
//! # Targets
//! [`recv`] writes into a block device or a regular file. The target must be at least `L`
//! bytes ([`RecvOptions::extend_file`] lets a regular file grow instead); when the header
//! carries the size this is checked before anything is written. A target larger than `L` keeps
//! its bytes beyond `L` untouched: the caller decides what they are (a fresh LV reads zeros
//! there; a reused one must be cleared by the caller).

pub mod agent;
mod digest;
mod format;
mod progress;
mod recv;
mod send;
mod source;

use std::fmt;

pub use digest::{checksum, digest_of, is_zero};
pub use recv::{recv, RecvOptions};
pub use send::{send, SendOptions};
pub use source::Source;

/// Block size for zero detection and the digest (part of the digest definition).
pub const BLOCK_SIZE: u64 = 64 * 1024;

/// Largest raw size of one data frame, also the size of the pipeline's items.
pub const FRAME_BYTES: usize = 1 << 20;

/// Name of the digest algorithm defined above, reported next to every digest.
pub const DIGEST_ALGORITHM: &str = "bsud-stream-v1";

/// How many items each pipeline channel holds: with [`FRAME_BYTES`] items this bounds each
/// side to about `3 × (DEPTH + 1)` MiB.
const CHANNEL_DEPTH: usize = 3;

/// What one side of a transfer (or a checksum) did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stats {
    /// Logical size `L` in bytes.
    pub logical_bytes: u64,
    /// Raw bytes carried in data frames (the non-zero blocks).
    pub data_bytes: u64,
    /// Bytes on the wire (0 for a local checksum).
    pub wire_bytes: u64,
    /// Bytes the receiver zeroed for ranges the sender skipped (0 when fresh, or on the sender).
    pub zeroed_bytes: u64,
    /// Always [`DIGEST_ALGORITHM`].
    pub digest_algorithm: &'static str,
    /// The stream digest, hex.
    pub digest: String,
    /// MD5 of the logical content, hex, when asked for.
    pub md5: Option<String>,
    /// Wall time in seconds.
    pub elapsed_secs: f64,
}

/// A pipeline stage stopped because another stage went away; never the root cause. The
/// coordinator reports the real error of the other stage instead.
#[derive(Debug)]
struct Aborted;

impl fmt::Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stream stage stopped because another stage failed")
    }
}

impl std::error::Error for Aborted {}

fn aborted() -> anyhow::Error {
    anyhow::Error::new(Aborted)
}

/// Joins the results of a pipeline's stages, in stage order, into the root cause: the first
/// error that is not an [`Aborted`] (a stage that merely saw its neighbour go away).
fn first_real_error(results: Vec<anyhow::Result<()>>) -> anyhow::Result<()> {
    let mut fallback = None;
    for r in results {
        if let Err(e) = r {
            if e.downcast_ref::<Aborted>().is_none() {
                return Err(e);
            }
            fallback.get_or_insert(e);
        }
    }
    fallback.map_or(Ok(()), Err)
}

/// A stage's value and its status, for [`first_real_error`].
fn split<T>(r: anyhow::Result<T>) -> (Option<T>, anyhow::Result<()>) {
    match r {
        Ok(v) => (Some(v), Ok(())),
        Err(e) => (None, Err(e)),
    }
}

/// The result of a scoped thread, a panic turned into an error (it would be a bug, but the
/// process must still report it as one line rather than abort the pipeline silently).
fn joined<T>(r: std::thread::Result<anyhow::Result<T>>, stage: &str) -> anyhow::Result<T> {
    r.unwrap_or_else(|_| {
        Err(anyhow::anyhow!(
            "internal error: stream {stage} stage panicked"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_cause_wins_over_aborted_neighbours() {
        let r = first_real_error(vec![
            Err(aborted()),
            Err(anyhow::anyhow!("disk on fire")),
            Err(aborted()),
        ]);
        assert_eq!(r.unwrap_err().to_string(), "disk on fire");
        assert!(first_real_error(vec![Ok(()), Err(aborted())]).is_err());
        assert!(first_real_error(vec![Ok(()), Ok(())]).is_ok());
    }
}
