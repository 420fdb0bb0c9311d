//! What an import reads, between the origin and the stream: hash of the bytes as downloaded
//! (MD5/SHA1), bandwidth limit, decompression (gzip, xz, bzip2, zstd told by their magic),
//! and the decompressed size when the compressed format states it.
//!
//! Invariants:
//! - The hash covers the bytes as they come from the origin, before decompression: what
//!   OpenNebula's `downloader.sh` hashes (`tee >(hasher) | decompress`), so the MD5/SHA1 a
//!   marketplace or a user publishes for a `.qcow2.gz` is checked as published.
//! - Nothing here buffers more than a peeked head ([`HEAD_BYTES`] at most) plus the
//!   decompressors' own windows: an image never sits in the frontend's memory or disk.
//! - A decompressed size comes only from data that states it exactly (the xz index of a
//!   single-stream file, zstd frame headers); otherwise the caller counts or bounds it.

use std::io::{self, Cursor, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use md5::Digest as _;
use serde::Serialize;

use crate::error::{fail, ErrorKind};
use crate::one::template::Template;

pub use crate::host::image_ops::format::HEAD_BYTES;

/// A compression format of the downloaded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip (possibly several members).
    Gzip,
    /// xz (possibly several streams).
    Xz,
    /// bzip2 (possibly several streams).
    Bzip2,
    /// zstd (possibly several frames).
    Zstd,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
            Compression::Zstd => "zstd",
        })
    }
}

const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const ZSTD_MAGIC: u32 = 0xfd2f_b528;

/// The compression `head` (the first bytes of the download) starts with, if any.
pub fn compression(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        Some(Compression::Gzip)
    } else if head.starts_with(XZ_MAGIC) {
        Some(Compression::Xz)
    } else if head.len() >= 10
        && head.starts_with(b"BZh")
        && (b'1'..=b'9').contains(&head[3])
        && (head[4..10] == [0x31, 0x41, 0x59, 0x26, 0x53, 0x59]
            || head[4..10] == [0x17, 0x72, 0x45, 0x38, 0x50, 0x90])
    {
        Some(Compression::Bzip2)
    } else if head.len() >= 4 && u32::from_le_bytes(head[..4].try_into().ok()?) == ZSTD_MAGIC {
        Some(Compression::Zstd)
    } else {
        None
    }
}

/// A reader decompressing `r` (every member/stream/frame, as the command-line tools do).
pub fn decoder<'a>(
    c: Option<Compression>,
    r: impl Read + Send + 'a,
) -> anyhow::Result<Box<dyn Read + Send + 'a>> {
    Ok(match c {
        None => Box::new(r),
        Some(Compression::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Some(Compression::Xz) => Box::new(xz2::read::XzDecoder::new_multi_decoder(r)),
        Some(Compression::Bzip2) => Box::new(bzip2::read::MultiBzDecoder::new(r)),
        Some(Compression::Zstd) => Box::new(zstd::stream::read::Decoder::new(r)?),
    })
}

/// Reads until `buf` is full or the input ends; how many bytes were read.
fn fill(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The first `n` bytes of `r` (fewer if it is shorter) and a reader giving the whole content
/// again, those bytes included.
pub fn peek<'a>(
    mut r: impl Read + Send + 'a,
    n: usize,
) -> io::Result<(Vec<u8>, Box<dyn Read + Send + 'a>)> {
    let mut head = vec![0u8; n];
    let got = fill(&mut r, &mut head)?;
    head.truncate(got);
    Ok((head.clone(), Box::new(Cursor::new(head).chain(r))))
}

/// The first decompressed bytes of a compressed prefix (`head` need not hold the whole
/// file): as many as it yields, up to `n`.
pub fn decompressed_prefix(c: Compression, head: &[u8], n: usize) -> Vec<u8> {
    let Ok(mut d) = decoder(Some(c), head) else {
        return Vec::new();
    };
    let mut out = vec![0u8; n];
    let mut got = 0;
    // A truncated input ends in an error after the bytes it could give: keep those.
    while got < n {
        match d.read(&mut out[got..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    out.truncate(got);
    out
}

/// Counts the bytes of `r` without keeping them.
pub fn count(r: &mut dyn Read) -> io::Result<u64> {
    io::copy(r, &mut io::sink())
}

// ---------------------------------------------------------------------------------------------
// Hashes

/// The hash an image template asks for (`MD5` or `SHA1`), lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// `MD5`.
    Md5(String),
    /// `SHA1`.
    Sha1(String),
}

impl Expected {
    /// From the image template: MD5 wins when both are given (as `downloader.sh` takes the
    /// last of `--md5`/`--sha1`, and the stock drivers pass MD5 last). A value that is not a
    /// hex digest of the right length is bad input, refused before anything is done.
    pub fn from_template(t: &Template) -> anyhow::Result<Option<Expected>> {
        let check = |name: &str, len: usize| -> anyhow::Result<Option<String>> {
            let Some(v) = t.get_nonempty(name).map(str::trim) else {
                return Ok(None);
            };
            if v.len() != len || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(fail(
                    ErrorKind::BadInput,
                    format!(
                        "image template {name} {v:?} is not a {name} digest ({len} hex digits)"
                    ),
                ));
            }
            Ok(Some(v.to_ascii_lowercase()))
        };
        let sha1 = check("SHA1", 40)?;
        Ok(match check("MD5", 32)? {
            Some(m) => Some(Expected::Md5(m)),
            None => sha1.map(Expected::Sha1),
        })
    }

    /// `MD5` or `SHA1`.
    pub fn name(&self) -> &'static str {
        match self {
            Expected::Md5(_) => "MD5",
            Expected::Sha1(_) => "SHA1",
        }
    }

    /// The expected hex digest.
    pub fn hex(&self) -> &str {
        match self {
            Expected::Md5(h) | Expected::Sha1(h) => h,
        }
    }

    /// Compares with the digest computed; the error names both.
    pub fn verify(&self, actual: &str, what: &str) -> anyhow::Result<()> {
        if actual.eq_ignore_ascii_case(self.hex()) {
            tracing::info!("{} of {what} verified: {actual}", self.name());
            Ok(())
        } else {
            Err(fail(
                ErrorKind::Failed,
                format!(
                    "{} of {what} is {actual}, the image template says {}",
                    self.name(),
                    self.hex()
                ),
            ))
        }
    }
}

enum HashState {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
}

/// A hash fed by a [`Tapped`] reader, read once the reading is over.
#[derive(Clone)]
pub struct HashTap(Arc<Mutex<HashState>>);

impl HashTap {
    /// A tap for the kind `e` asks for.
    pub fn new(e: &Expected) -> HashTap {
        HashTap(Arc::new(Mutex::new(match e {
            Expected::Md5(_) => HashState::Md5(md5::Md5::new()),
            Expected::Sha1(_) => HashState::Sha1(sha1::Sha1::new()),
        })))
    }

    /// `r`, every byte read through it hashed.
    pub fn reader<R: Read>(&self, r: R) -> Tapped<R> {
        Tapped {
            inner: r,
            tap: self.clone(),
        }
    }

    /// The hex digest of everything read so far.
    pub fn hex(&self) -> String {
        let state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match &*state {
            HashState::Md5(h) => hex::encode(h.clone().finalize()),
            HashState::Sha1(h) => hex::encode(h.clone().finalize()),
        }
    }
}

/// A reader whose bytes feed a [`HashTap`].
pub struct Tapped<R> {
    inner: R,
    tap: HashTap,
}

impl<R: Read> Read for Tapped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut state = self.tap.0.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *state {
            HashState::Md5(h) => h.update(&buf[..n]),
            HashState::Sha1(h) => h.update(&buf[..n]),
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// Bandwidth

/// Parses `LIMIT_TRANSFER_BW` as curl's `--limit-rate` reads it: bytes per second with an
/// optional `K`, `M` or `G` suffix (powers of 1024).
pub fn parse_rate(v: &str) -> anyhow::Result<u64> {
    let v = v.trim();
    let (num, mult) = match v.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&v[..v.len() - 1], 1u64 << 10),
        Some('M') => (&v[..v.len() - 1], 1 << 20),
        Some('G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            fail(
                ErrorKind::Config,
                format!(
                    "datastore attribute LIMIT_TRANSFER_BW = {v:?}: not a rate (bytes per second, optional K/M/G suffix)"
                ),
            )
        })
}

/// A reader that never goes faster than `rate` bytes per second on average.
pub struct RateLimited<R> {
    inner: R,
    rate: u64,
    start: Instant,
    done: u64,
}

impl<R> RateLimited<R> {
    /// `r` limited to `rate` bytes per second.
    pub fn new(inner: R, rate: u64) -> RateLimited<R> {
        RateLimited {
            inner,
            rate: rate.max(1),
            start: Instant::now(),
            done: 0,
        }
    }
}

impl<R: Read> Read for RateLimited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Small reads keep the pace smooth at low rates.
        let cap = buf.len().min((self.rate as usize / 4).max(4096));
        let n = self.inner.read(&mut buf[..cap])?;
        self.done += n as u64;
        let due = Duration::from_secs_f64(self.done as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// Decompressed sizes stated by the data

/// Random access to the compressed bytes: `read_at(offset, len)`, `None` when the origin
/// cannot seek (an HTTP server without ranges).
pub type ReadAt<'a> = dyn Fn(u64, usize) -> anyhow::Result<Option<Vec<u8>>> + 'a;

fn vli(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..9 {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The uncompressed size of a single-stream xz file of `len` bytes, from its index (found
/// through the stream footer); `None` when it cannot be told that way (several streams, no
/// random access, a damaged footer).
pub fn xz_size(read_at: &ReadAt<'_>, len: u64) -> anyhow::Result<Option<u64>> {
    let tail_len = len.min(4096) as usize;
    let Some(tail) = read_at(len - tail_len as u64, tail_len)? else {
        return Ok(None);
    };
    // Stream padding: zero bytes, a multiple of four, after the footer.
    let end = tail.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    if end < 12 || (tail.len() - end) % 4 != 0 || tail[end - 2..end] != *b"YZ" {
        return Ok(None);
    }
    let footer = &tail[end - 12..end];
    let backward = (u64::from(u32::from_le_bytes(footer[4..8].try_into()?)) + 1) * 4;
    let footer_at = len - (tail.len() - end) as u64 - 12;
    let Some(index_at) = footer_at.checked_sub(backward) else {
        return Ok(None);
    };
    let Some(index) = read_at(index_at, backward as usize)? else {
        return Ok(None);
    };
    if index.first() != Some(&0) {
        return Ok(None);
    }
    let mut pos = 1;
    let Some(records) = vli(&index, &mut pos) else {
        return Ok(None);
    };
    let (mut blocks, mut size) = (0u64, 0u64);
    for _ in 0..records {
        let (Some(unpadded), Some(uncompressed)) = (vli(&index, &mut pos), vli(&index, &mut pos))
        else {
            return Ok(None);
        };
        blocks = blocks.saturating_add(unpadded.next_multiple_of(4));
        size = size.saturating_add(uncompressed);
    }
    // The stream starts at 0 only if this index describes the whole file.
    Ok((index_at.checked_sub(blocks) == Some(12)).then_some(size))
}

/// A zstd frame header: its length and the content size it states.
fn zstd_frame_header(h: &[u8]) -> Option<(usize, Option<u64>)> {
    let fhd = *h.get(4)?;
    let fcs_flag = fhd >> 6;
    let single_segment = fhd & 0x20 != 0;
    let dict_len = [0usize, 1, 2, 4][usize::from(fhd & 3)];
    let fcs_len = match fcs_flag {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let fcs_at = 5 + usize::from(!single_segment) + dict_len;
    let header_len = fcs_at + fcs_len;
    let raw = h.get(fcs_at..header_len)?;
    let mut v = 0u64;
    for (i, b) in raw.iter().enumerate() {
        v |= u64::from(*b) << (8 * i);
    }
    let fcs = match fcs_len {
        0 => None,
        2 => Some(v + 256),
        _ => Some(v),
    };
    Some((header_len, fcs))
}

/// The content size of a zstd file. With `walk` (cheap random access: a local file) every
/// frame is visited through its block headers and the sizes added up; without, the first
/// frame's stated size is taken (what `zstd` writes is one frame). `None` when a frame does
/// not state its size.
pub fn zstd_size(read_at: &ReadAt<'_>, len: u64, walk: bool) -> anyhow::Result<Option<u64>> {
    let mut at = 0u64;
    let mut total = 0u64;
    while at < len {
        let Some(h) = read_at(at, 18.min((len - at) as usize))? else {
            return Ok(None);
        };
        let Some(magic) = h
            .get(..4)
            .map(|m| u32::from_le_bytes(m.try_into().unwrap_or([0; 4])))
        else {
            return Ok(None);
        };
        if magic & 0xffff_fff0 == 0x184d_2a50 {
            // A skippable frame.
            let Some(n) = h
                .get(4..8)
                .map(|m| u32::from_le_bytes(m.try_into().unwrap_or([0; 4])))
            else {
                return Ok(None);
            };
            at += 8 + u64::from(n);
            continue;
        }
        if magic != ZSTD_MAGIC {
            return Ok(None);
        }
        let Some((header_len, Some(fcs))) = zstd_frame_header(&h) else {
            return Ok(None);
        };
        total = total.saturating_add(fcs);
        if !walk {
            return Ok(Some(total));
        }
        let checksum = h[4] & 0x04 != 0;
        at += header_len as u64;
        loop {
            let Some(b) = read_at(at, 3)? else {
                return Ok(None);
            };
            if b.len() < 3 {
                return Ok(None);
            }
            let bh = u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16;
            let last = bh & 1 != 0;
            let block_type = (bh >> 1) & 3;
            let block_size = u64::from(bh >> 3);
            at += 3 + if block_type == 1 { 1 } else { block_size };
            if last {
                break;
            }
        }
        if checksum {
            at += 4;
        }
    }
    Ok((at == len).then_some(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn at(data: &[u8]) -> impl Fn(u64, usize) -> anyhow::Result<Option<Vec<u8>>> + '_ {
        move |off, n| {
            let s = (off as usize).min(data.len());
            let e = (s + n).min(data.len());
            Ok(Some(data[s..e].to_vec()))
        }
    }

    /// Compressible but not trivially (so half a compressed file holds whole blocks).
    fn sample() -> Vec<u8> {
        let mut x = 1u32;
        (0..3_000_000u32)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                b"abcdefgh"[(x >> 28) as usize % 8]
            })
            .collect()
    }

    #[test]
    fn magic_and_round_trips() {
        let data = sample();
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let xz = {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let bz = {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let zs = zstd::bulk::compress(&data, 1).unwrap();
        for (c, bytes) in [
            (Compression::Gzip, &gz),
            (Compression::Xz, &xz),
            (Compression::Bzip2, &bz),
            (Compression::Zstd, &zs),
        ] {
            assert_eq!(compression(bytes), Some(c));
            let mut d = decoder(Some(c), &bytes[..]).unwrap();
            assert_eq!(count(&mut d).unwrap(), data.len() as u64, "{c}");
            let prefix = decompressed_prefix(c, &bytes[..bytes.len() / 2], 1000);
            assert_eq!(prefix, data[..1000], "{c}");
        }
        assert_eq!(compression(b"QFI\xfb\0\0\0\x03"), None);
        assert_eq!(compression(b"BZh9xxxxxx"), None);
        assert_eq!(xz_size(&at(&xz), xz.len() as u64).unwrap(), Some(3_000_000));
        // Padding after the stream is allowed; two streams are not told by the index.
        let mut padded = xz.clone();
        padded.extend_from_slice(&[0; 8]);
        assert_eq!(
            xz_size(&at(&padded), padded.len() as u64).unwrap(),
            Some(3_000_000)
        );
        let mut two = xz.clone();
        two.extend_from_slice(&xz);
        assert_eq!(xz_size(&at(&two), two.len() as u64).unwrap(), None);
        assert_eq!(xz_size(&at(&gz), gz.len() as u64).unwrap(), None);
        assert_eq!(
            zstd_size(&at(&zs), zs.len() as u64, true).unwrap(),
            Some(3_000_000)
        );
        let mut frames = zs.clone();
        frames.extend_from_slice(&zs);
        assert_eq!(
            zstd_size(&at(&frames), frames.len() as u64, true).unwrap(),
            Some(6_000_000)
        );
        assert_eq!(
            zstd_size(&at(&frames), frames.len() as u64, false).unwrap(),
            Some(3_000_000)
        );
        // A streamed zstd (no size in the header) is not told.
        let streamed = {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        assert_eq!(
            zstd_size(&at(&streamed), streamed.len() as u64, true).unwrap(),
            None
        );
        let none = |_: u64, _: usize| -> anyhow::Result<Option<Vec<u8>>> { Ok(None) };
        assert_eq!(xz_size(&none, xz.len() as u64).unwrap(), None);
    }

    #[test]
    fn peek_gives_everything_back() {
        let data = sample();
        let (head, mut r) = peek(&data[..], 10).unwrap();
        assert_eq!(head, data[..10]);
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, data);
        let (head, _) = peek(&b"abc"[..], 10).unwrap();
        assert_eq!(head, b"abc");
    }

    #[test]
    fn hashes_and_templates() {
        let tap = HashTap::new(&Expected::Md5(String::new()));
        let mut r = tap.reader(&b"hello"[..]);
        count(&mut r).unwrap();
        assert_eq!(tap.hex(), "5d41402abc4b2a76b9719d911017c592");
        let tap = HashTap::new(&Expected::Sha1(String::new()));
        count(&mut tap.reader(&b"hello"[..])).unwrap();
        assert_eq!(tap.hex(), "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d");
        let t = Template::from_pairs([("MD5", "5D41402ABC4B2A76B9719D911017C592")]);
        let e = Expected::from_template(&t).unwrap().unwrap();
        assert!(e.verify("5d41402abc4b2a76b9719d911017c592", "x").is_ok());
        let err = e.verify("00", "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "MD5 of x is 00, the image template says 5d41402abc4b2a76b9719d911017c592"
        );
        for bad in ["$(id)", "abc", "5d41402abc4b2a76b9719d911017c59z"] {
            let t = Template::from_pairs([("MD5", bad)]);
            let e = Expected::from_template(&t).unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 2);
        }
        assert_eq!(Expected::from_template(&Template::default()).unwrap(), None);
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("100").unwrap(), 100);
        assert_eq!(parse_rate("10M").unwrap(), 10 << 20);
        assert_eq!(parse_rate("2k").unwrap(), 2048);
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0").is_err());
        let data = vec![1u8; 20_000];
        let start = Instant::now();
        count(&mut RateLimited::new(&data[..], 100_000)).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(180));
    }
}
