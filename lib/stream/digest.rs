//! Zero detection and the stream digest (`bsud-stream-v1`, defined in the module above).
//!
//! [`Fold`] is the digest itself, fed block by block; [`ContentHasher`] drives it from the
//! sender's view of the content (data chunks with gaps between them) and also computes the
//! optional MD5. Both sides and [`digest_of`] go through [`Fold`], so they cannot disagree.

use std::fs::File;
use std::sync::mpsc::{sync_channel, Receiver};

use md5::{Digest as _, Md5};

use super::source::{scan, Scanned, Source};
use super::{first_real_error, joined, BLOCK_SIZE, CHANNEL_DEPTH};

/// A BLAKE3 digest.
pub(crate) type Hash32 = [u8; 32];

const DOMAIN: &[u8] = b"one-bsud stream digest v1";
const RECORD_ZERO_RUN: u8 = 0;
const RECORD_BLOCK: u8 = 1;
const RECORD_END: u8 = 2;

/// Zeros to feed MD5 for skipped ranges and to write where a target cannot punch holes (in
/// .bss: costs no memory until read).
pub(crate) static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// Whether every byte of `buf` is zero. Word-wise with one early exit per 256 bytes: fast on
/// data (first non-zero word is usually near the start) and vectorised on zeros.
pub fn is_zero(buf: &[u8]) -> bool {
    let (chunks, tail) = buf.as_chunks::<256>();
    for chunk in chunks {
        let (words, _) = chunk.as_chunks::<8>();
        let acc = words.iter().fold(0u64, |a, w| a | u64::from_ne_bytes(*w));
        if acc != 0 {
            return false;
        }
    }
    tail.iter().all(|&b| b == 0)
}

/// Number of blocks covering `len` bytes (the last one may be short).
pub(crate) fn blocks_in(len: u64) -> u64 {
    len.div_ceil(BLOCK_SIZE)
}

/// The stream digest, fed in block order.
pub(crate) struct Fold {
    hasher: blake3::Hasher,
    pending_zero_blocks: u64,
}

impl Fold {
    pub(crate) fn new() -> Fold {
        let mut hasher = blake3::Hasher::new();
        hasher.update(DOMAIN);
        hasher.update(&BLOCK_SIZE.to_le_bytes());
        Fold {
            hasher,
            pending_zero_blocks: 0,
        }
    }

    /// `n` consecutive zero blocks.
    pub(crate) fn zero_blocks(&mut self, n: u64) {
        self.pending_zero_blocks += n;
    }

    /// One block that is not all zero, by its BLAKE3 digest.
    pub(crate) fn data_block(&mut self, digest: &Hash32) {
        self.flush_zero_run();
        self.hasher.update(&[RECORD_BLOCK]);
        self.hasher.update(digest);
    }

    /// One block given by its bytes and digest: folded as a zero block when it is one. The
    /// receiver uses this for blocks that arrived in data frames (a sender may send zeros).
    pub(crate) fn block(&mut self, bytes: &[u8], digest: &Hash32) {
        if is_zero(bytes) {
            self.zero_blocks(1);
        } else {
            self.data_block(digest);
        }
    }

    fn flush_zero_run(&mut self) {
        if self.pending_zero_blocks > 0 {
            self.hasher.update(&[RECORD_ZERO_RUN]);
            self.hasher.update(&self.pending_zero_blocks.to_le_bytes());
            self.pending_zero_blocks = 0;
        }
    }

    /// The digest of content of `size` bytes (every block must have been fed).
    pub(crate) fn finish(mut self, size: u64) -> Hash32 {
        self.flush_zero_run();
        self.hasher.update(&[RECORD_END]);
        self.hasher.update(&size.to_le_bytes());
        *self.hasher.finalize().as_bytes()
    }
}

/// A run of consecutive non-zero blocks inside a chunk, ready to become one data frame.
pub(crate) struct Run {
    /// Byte offset of the run inside the chunk's data.
    pub(crate) start: usize,
    /// Length in bytes.
    pub(crate) len: usize,
    /// BLAKE3 of each block of the run.
    pub(crate) digests: Vec<Hash32>,
}

/// Hashes content given as data chunks at increasing, block-aligned offsets, with gaps of
/// zeros between them.
pub(crate) struct ContentHasher {
    fold: Fold,
    md5: Option<Md5>,
    pos: u64,
}

impl ContentHasher {
    pub(crate) fn new(md5: bool) -> ContentHasher {
        ContentHasher {
            fold: Fold::new(),
            md5: md5.then(Md5::new),
            pos: 0,
        }
    }

    /// Zeros from the current position to `end`.
    fn zeros_to(&mut self, end: u64) {
        if end <= self.pos {
            return;
        }
        self.fold.zero_blocks(blocks_in(end - self.pos));
        if let Some(m) = &mut self.md5 {
            let mut left = end - self.pos;
            while left > 0 {
                let n = left.min(ZEROS.len() as u64) as usize;
                m.update(&ZEROS[..n]);
                left -= n as u64;
            }
        }
        self.pos = end;
    }

    /// A chunk of content at `offset` (block-aligned, ≥ the end of the previous chunk):
    /// returns its runs of non-zero blocks with their digests.
    pub(crate) fn chunk(&mut self, offset: u64, data: &[u8]) -> Vec<Run> {
        debug_assert!(offset >= self.pos && offset.is_multiple_of(BLOCK_SIZE));
        self.zeros_to(offset);
        if let Some(m) = &mut self.md5 {
            m.update(data);
        }
        let mut runs: Vec<Run> = Vec::new();
        let mut open = false;
        for (i, block) in data.chunks(BLOCK_SIZE as usize).enumerate() {
            if is_zero(block) {
                self.fold.zero_blocks(1);
                open = false;
                continue;
            }
            let digest = *blake3::hash(block).as_bytes();
            self.fold.data_block(&digest);
            match runs.last_mut() {
                Some(run) if open => {
                    run.len += block.len();
                    run.digests.push(digest);
                }
                _ => runs.push(Run {
                    start: i * BLOCK_SIZE as usize,
                    len: block.len(),
                    digests: vec![digest],
                }),
            }
            open = true;
        }
        self.pos = offset + data.len() as u64;
        runs
    }

    /// The digest and MD5 (when asked for) of content of `size` bytes.
    pub(crate) fn finish(mut self, size: u64) -> (Hash32, Option<[u8; 16]>) {
        self.zeros_to(size);
        let md5 = self.md5.take().map(|m| m.finalize().into());
        (self.fold.finish(size), md5)
    }
}

/// The digest (hex) of the first `size` bytes of `file` (a device or regular file; `None`:
/// all of it), computed like the sender does: holes and zero blocks cost no hashing.
pub fn digest_of(file: File, size: Option<u64>) -> anyhow::Result<String> {
    let mut source = Source::from_file(file, size)?;
    Ok(checksum(&mut source, false)?.0)
}

/// The logical size, digest and optional MD5 of a source, reading in one thread while hashing
/// in this one.
pub fn checksum(
    source: &mut Source<'_>,
    md5: bool,
) -> anyhow::Result<(String, Option<String>, u64)> {
    std::thread::scope(|s| {
        let (tx, rx) = sync_channel(CHANNEL_DEPTH);
        let reader = s.spawn(move || scan(source, &tx));
        let mut result = None;
        let hashed = hash_all(&rx, md5, &mut result);
        drop(rx);
        first_real_error(vec![joined(reader.join(), "reader"), hashed])?;
        result.ok_or_else(|| anyhow::anyhow!("internal error: checksum ended without a result"))
    })
}

fn hash_all(
    rx: &Receiver<Scanned>,
    md5: bool,
    result: &mut Option<(String, Option<String>, u64)>,
) -> anyhow::Result<()> {
    let mut hasher = ContentHasher::new(md5);
    loop {
        match rx.recv().map_err(|_| super::aborted())? {
            Scanned::Chunk { offset, data } => {
                hasher.chunk(offset, &data);
            }
            Scanned::End { size } => {
                let (digest, md5) = hasher.finish(size);
                *result = Some((hex::encode(digest), md5.map(hex::encode), size));
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_zero_finds_a_single_set_bit_anywhere() {
        let mut buf = vec![0u8; 70_001];
        assert!(is_zero(&buf));
        assert!(is_zero(&[]));
        for at in [0, 7, 255, 256, 4096, 65_535, 70_000] {
            buf[at] = 0x10;
            assert!(!is_zero(&buf), "bit at {at} missed");
            buf[at] = 0;
        }
    }

    #[test]
    fn zero_runs_fold_the_same_however_they_are_split() {
        let mut a = Fold::new();
        a.zero_blocks(3);
        a.data_block(&[7; 32]);
        a.zero_blocks(2);
        let mut b = Fold::new();
        b.zero_blocks(1);
        b.zero_blocks(2);
        b.data_block(&[7; 32]);
        b.zero_blocks(1);
        b.zero_blocks(1);
        assert_eq!(a.finish(6 * BLOCK_SIZE), b.finish(6 * BLOCK_SIZE));
    }

    #[test]
    fn digest_binds_the_size_and_the_block_positions() {
        let mut a = Fold::new();
        a.data_block(&[7; 32]);
        a.zero_blocks(1);
        let mut b = Fold::new();
        b.zero_blocks(1);
        b.data_block(&[7; 32]);
        assert_ne!(a.finish(2 * BLOCK_SIZE), b.finish(2 * BLOCK_SIZE));
        let c = Fold::new();
        let d = Fold::new();
        assert_ne!(c.finish(1), d.finish(2));
    }

    #[test]
    fn content_hasher_splits_runs_at_zero_blocks_and_matches_md5() {
        let b = BLOCK_SIZE as usize;
        let mut data = vec![1u8; 4 * b + 100];
        data[b..2 * b].fill(0);
        let mut h = ContentHasher::new(true);
        let runs = h.chunk(BLOCK_SIZE, &data);
        let shape: Vec<(usize, usize, usize)> = runs
            .iter()
            .map(|r| (r.start, r.len, r.digests.len()))
            .collect();
        assert_eq!(shape, vec![(0, b, 1), (2 * b, 2 * b + 100, 3)]);
        let size = BLOCK_SIZE + data.len() as u64 + 3;
        let (_, md5) = h.finish(size);
        let md5 = md5.map(hex::encode);
        let mut whole = vec![0u8; b];
        whole.extend_from_slice(&data);
        whole.extend_from_slice(&[0, 0, 0]);
        assert_eq!(md5.unwrap(), hex::encode(Md5::digest(&whole)));
    }

    /// The definition written out naively over the whole buffer, to pin the format down.
    fn reference_digest(content: &[u8]) -> String {
        let mut h = blake3::Hasher::new();
        h.update(b"one-bsud stream digest v1");
        h.update(&65_536u64.to_le_bytes());
        let mut zeros = 0u64;
        for block in content.chunks(65_536) {
            if block.iter().all(|&x| x == 0) {
                zeros += 1;
                continue;
            }
            if zeros > 0 {
                h.update(&[0]);
                h.update(&zeros.to_le_bytes());
                zeros = 0;
            }
            h.update(&[1]);
            h.update(blake3::hash(block).as_bytes());
        }
        if zeros > 0 {
            h.update(&[0]);
            h.update(&zeros.to_le_bytes());
        }
        h.update(&[2]);
        h.update(&(content.len() as u64).to_le_bytes());
        h.finalize().to_hex().to_string()
    }

    #[test]
    fn content_hasher_matches_the_written_definition() {
        let b = BLOCK_SIZE as usize;
        let mut content = vec![0u8; 9 * b + 17];
        content[2 * b + 5] = 1;
        content[3 * b..4 * b].fill(9);
        content[9 * b + 16] = 3;
        let mut h = ContentHasher::new(false);
        // Two chunks with a gap (blocks 5..7) the way the scanner hands them over.
        h.chunk(0, &content[..5 * b]);
        h.chunk(7 * BLOCK_SIZE, &content[7 * b..]);
        let (digest, md5) = h.finish(content.len() as u64);
        assert_eq!(md5, None);
        assert_eq!(hex::encode(digest), reference_digest(&content));
        // Size zero and a short all-zero tail are defined too.
        let empty = ContentHasher::new(false).finish(0).0;
        assert_eq!(hex::encode(empty), reference_digest(&[]));
        let short_zeros = ContentHasher::new(false).finish(100).0;
        assert_eq!(hex::encode(short_zeros), reference_digest(&[0; 100]));
    }
}
