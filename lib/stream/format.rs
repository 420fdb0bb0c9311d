//! The wire format (version 1, specified in the module above): encoding, and decoding with the
//! structural checks that need nothing but the frame itself. Order and size checks, which need
//! the stream's state, are the receiver's.

use std::io::{ErrorKind, Read};

use anyhow::bail;

use super::digest::{blocks_in, Hash32};
use super::{BLOCK_SIZE, FRAME_BYTES};

const MAGIC: &[u8; 8] = b"BSUDSTRM";
const VERSION: u16 = 1;
const FLAG_SIZE_KNOWN: u16 = 1;
const TAG_DATA: u8 = b'D';
const TAG_END: u8 = b'E';
const TRAILER_HAS_MD5: u8 = 1;
const HEADER_LEN: usize = 24;
const DATA_HEAD_LEN: usize = 18;
const TRAILER_FIELDS_LEN: usize = 58;
const TRAILER_LEN: usize = TRAILER_FIELDS_LEN + 16;

/// How a data frame's payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Raw = 0,
    Zstd = 1,
}

/// The end marker: what the sender computed over the whole content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trailer {
    pub(crate) size: u64,
    pub(crate) digest: Hash32,
    pub(crate) md5: Option<[u8; 16]>,
}

/// One decoded frame.
pub(crate) enum Frame {
    Data(DataFrame),
    End(Trailer),
}

/// A data frame as it came off the wire (payload still encoded).
pub(crate) struct DataFrame {
    pub(crate) offset: u64,
    pub(crate) raw_len: usize,
    pub(crate) codec: Codec,
    pub(crate) digests: Vec<Hash32>,
    pub(crate) payload: Vec<u8>,
}

pub(crate) fn encode_header(size: Option<u64>) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    let flags = if size.is_some() { FLAG_SIZE_KNOWN } else { 0 };
    h[10..12].copy_from_slice(&flags.to_le_bytes());
    h[12..16].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
    h[16..24].copy_from_slice(&size.unwrap_or(0).to_le_bytes());
    h
}

/// The bytes of a data frame before its payload.
pub(crate) fn encode_data_head(
    offset: u64,
    raw_len: usize,
    codec: Codec,
    payload_len: usize,
    digests: &[Hash32],
) -> Vec<u8> {
    let mut h = Vec::with_capacity(DATA_HEAD_LEN + 32 * digests.len());
    h.push(TAG_DATA);
    h.push(codec as u8);
    h.extend_from_slice(&offset.to_le_bytes());
    h.extend_from_slice(&(raw_len as u32).to_le_bytes());
    h.extend_from_slice(&(payload_len as u32).to_le_bytes());
    for d in digests {
        h.extend_from_slice(d);
    }
    h
}

pub(crate) fn encode_trailer(t: &Trailer) -> [u8; TRAILER_LEN] {
    let mut b = [0u8; TRAILER_LEN];
    b[0] = TAG_END;
    b[1] = if t.md5.is_some() { TRAILER_HAS_MD5 } else { 0 };
    b[2..10].copy_from_slice(&t.size.to_le_bytes());
    b[10..42].copy_from_slice(&t.digest);
    b[42..58].copy_from_slice(&t.md5.unwrap_or_default());
    let seal = trailer_seal(&b[..TRAILER_FIELDS_LEN]);
    b[TRAILER_FIELDS_LEN..].copy_from_slice(&seal);
    b
}

/// The end marker's own check: its digest field is checked against the content, but its MD5
/// and flags are only carried, so a damaged bit there must still be caught.
fn trailer_seal(fields: &[u8]) -> [u8; 16] {
    let mut seal = [0u8; 16];
    seal.copy_from_slice(&blake3::hash(fields).as_bytes()[..16]);
    seal
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_le_bytes(a)
}

/// Decodes a stream, counting the bytes consumed (for error messages and statistics).
pub(crate) struct WireReader<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> WireReader<R> {
    pub(crate) fn new(inner: R) -> WireReader<R> {
        WireReader { inner, pos: 0 }
    }

    /// Bytes consumed so far.
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// Reads exactly `buf.len()` bytes; `inside` names what was being read when the stream
    /// ends early.
    fn read_exact(&mut self, buf: &mut [u8], inside: &str) -> anyhow::Result<()> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => bail!(
                    "the stream is truncated: it ends at byte {} inside {inside} (did the sender fail?)",
                    self.pos + got as u64
                ),
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("reading the stream at byte {}", self.pos + got as u64)))
                }
            }
        }
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// The header; returns the logical size when the sender knew it.
    pub(crate) fn read_header(&mut self) -> anyhow::Result<Option<u64>> {
        let mut h = [0u8; HEADER_LEN];
        let mut first = [0u8; 1];
        if self.inner.read(&mut first)? == 0 {
            bail!("the stream is empty (did the sender fail before it started?)");
        }
        h[0] = first[0];
        self.pos = 1;
        self.read_exact(&mut h[1..], "the stream header")?;
        if &h[..8] != MAGIC {
            bail!("this is not a one-bsud stream (bad magic at its start)");
        }
        let version = u16::from_le_bytes([h[8], h[9]]);
        if version != VERSION {
            bail!(
                "stream version {version} is not supported (this one-bsud reads version {VERSION})"
            );
        }
        let flags = u16::from_le_bytes([h[10], h[11]]);
        if flags & !FLAG_SIZE_KNOWN != 0 {
            bail!("the stream header has unknown flags {flags:#06x}");
        }
        let block_size = le_u32(&h[12..16]);
        if u64::from(block_size) != BLOCK_SIZE {
            bail!("the stream uses blocks of {block_size} bytes, this one-bsud only {BLOCK_SIZE}");
        }
        let size = le_u64(&h[16..24]);
        let known = flags & FLAG_SIZE_KNOWN != 0;
        if !known && size != 0 {
            bail!("the stream header is corrupted: a size of {size} bytes flagged unknown");
        }
        Ok(known.then_some(size))
    }

    /// The next frame, structurally checked.
    pub(crate) fn read_frame(&mut self) -> anyhow::Result<Frame> {
        let at = self.pos;
        let mut tag = [0u8; 1];
        self.read_exact(&mut tag, "the frame sequence (no end marker)")?;
        match tag[0] {
            TAG_DATA => self.read_data(at).map(Frame::Data),
            TAG_END => self.read_trailer().map(Frame::End),
            t => bail!("the stream is corrupted: unknown frame type {t:#04x} at byte {at}"),
        }
    }

    fn read_data(&mut self, at: u64) -> anyhow::Result<DataFrame> {
        let mut h = [0u8; DATA_HEAD_LEN - 1];
        self.read_exact(&mut h, "a data frame header")?;
        let codec = match h[0] {
            0 => Codec::Raw,
            1 => Codec::Zstd,
            c => bail!("the stream is corrupted: unknown codec {c} in the data frame at byte {at}"),
        };
        let offset = le_u64(&h[1..9]);
        let raw_len = le_u32(&h[9..13]) as usize;
        let payload_len = le_u32(&h[13..17]) as usize;
        let bad = |what: String| {
            anyhow::anyhow!("the stream is corrupted: data frame at byte {at}: {what}")
        };
        if raw_len == 0 || raw_len > FRAME_BYTES {
            return Err(bad(format!("length {raw_len} out of range")));
        }
        if !offset.is_multiple_of(BLOCK_SIZE) {
            return Err(bad(format!("offset {offset} is not block-aligned")));
        }
        let payload_ok = match codec {
            Codec::Raw => payload_len == raw_len,
            Codec::Zstd => payload_len > 0 && payload_len < raw_len,
        };
        if !payload_ok {
            return Err(bad(format!(
                "payload of {payload_len} bytes for {raw_len} bytes of {codec:?} data"
            )));
        }
        let mut digests = vec![[0u8; 32]; blocks_in(raw_len as u64) as usize];
        for d in &mut digests {
            self.read_exact(d, "a data frame header")?;
        }
        let mut payload = vec![0u8; payload_len];
        self.read_exact(&mut payload, "a data frame")?;
        Ok(DataFrame {
            offset,
            raw_len,
            codec,
            digests,
            payload,
        })
    }

    fn read_trailer(&mut self) -> anyhow::Result<Trailer> {
        let mut b = [0u8; TRAILER_LEN];
        b[0] = TAG_END;
        self.read_exact(&mut b[1..], "the end marker")?;
        if trailer_seal(&b[..TRAILER_FIELDS_LEN]) != b[TRAILER_FIELDS_LEN..] {
            bail!("the stream is corrupted: its end marker fails its check");
        }
        let flags = b[1];
        if flags & !TRAILER_HAS_MD5 != 0 {
            bail!("the stream is corrupted: unknown end marker flags {flags:#04x}");
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&b[10..42]);
        let mut md5 = [0u8; 16];
        md5.copy_from_slice(&b[42..58]);
        Ok(Trailer {
            size: le_u64(&b[2..10]),
            digest,
            md5: (flags & TRAILER_HAS_MD5 != 0).then_some(md5),
        })
    }

    /// Checks that nothing follows the end marker.
    pub(crate) fn expect_eof(&mut self) -> anyhow::Result<()> {
        let mut probe = [0u8; 1];
        loop {
            match self.inner.read(&mut probe) {
                Ok(0) => return Ok(()),
                Ok(_) => bail!(
                    "the stream is corrupted: data follows the end marker at byte {}",
                    self.pos
                ),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(anyhow::Error::new(e).context("reading the stream's end")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn header_and_frames_round_trip() {
        let head = encode_data_head(BLOCK_SIZE, 5, Codec::Raw, 5, &[[9; 32]]);
        let trailer = Trailer {
            size: 2 * BLOCK_SIZE,
            digest: [4; 32],
            md5: Some([5; 16]),
        };
        let bytes = stream(&[
            &encode_header(Some(2 * BLOCK_SIZE)),
            &head,
            b"hello",
            &encode_trailer(&trailer),
        ]);
        let mut r = WireReader::new(&bytes[..]);
        assert_eq!(r.read_header().unwrap(), Some(2 * BLOCK_SIZE));
        let Frame::Data(d) = r.read_frame().unwrap() else {
            panic!("expected data")
        };
        assert_eq!((d.offset, d.raw_len, d.codec), (BLOCK_SIZE, 5, Codec::Raw));
        assert_eq!((d.digests, d.payload), (vec![[9; 32]], b"hello".to_vec()));
        let Frame::End(t) = r.read_frame().unwrap() else {
            panic!("expected end")
        };
        assert_eq!(t, trailer);
        r.expect_eof().unwrap();
        assert_eq!(r.position(), bytes.len() as u64);
    }

    fn first_error(bytes: &[u8]) -> String {
        let mut r = WireReader::new(bytes);
        let res = r.read_header().and_then(|_| loop {
            if let Frame::End(_) = r.read_frame()? {
                break r.expect_eof();
            }
        });
        format!("{:#}", res.unwrap_err())
    }

    #[test]
    fn bad_headers_are_named() {
        assert!(first_error(b"").contains("empty"));
        assert!(first_error(b"BSUD").contains("truncated"));
        assert!(first_error(&[b'x'; 24]).contains("not a one-bsud stream"));
        let mut h = encode_header(None);
        h[8] = 2;
        assert!(first_error(&h).contains("version 2 is not supported"));
        let mut h = encode_header(None);
        h[13] = 0x20;
        assert!(first_error(&h).contains("blocks of"));
        let mut h = encode_header(Some(5));
        h[10] = 0;
        assert!(first_error(&h).contains("flagged unknown"));
    }

    #[test]
    fn bad_frames_are_named_not_trusted() {
        let h = encode_header(None);
        let frame = |offset, raw, codec, payload| {
            stream(&[
                &h,
                &encode_data_head(offset, raw, codec, payload, &[[0; 32]]),
            ])
        };
        assert!(first_error(&stream(&[&h, b"Z"])).contains("unknown frame type 0x5a"));
        assert!(first_error(&h).contains("no end marker"));
        assert!(first_error(&frame(0, 0, Codec::Raw, 0)).contains("out of range"));
        assert!(first_error(&frame(0, FRAME_BYTES + 1, Codec::Raw, 1)).contains("out of range"));
        assert!(first_error(&frame(1, 5, Codec::Raw, 5)).contains("not block-aligned"));
        assert!(first_error(&frame(0, 5, Codec::Raw, 4)).contains("payload of 4 bytes"));
        assert!(first_error(&frame(0, 5, Codec::Zstd, 5)).contains("payload of 5 bytes"));
        assert!(first_error(&frame(0, 5, Codec::Raw, 5)).contains("inside a data frame"));
        let t = encode_trailer(&Trailer {
            size: 0,
            digest: [0; 32],
            md5: None,
        });
        assert!(first_error(&stream(&[&h, &t, b"!"])).contains("follows the end marker"));
        assert!(first_error(&stream(&[&h, &t[..30]])).contains("inside the end marker"));
        let mut bad_md5 = t;
        bad_md5[50] ^= 1;
        assert!(first_error(&stream(&[&h, &bad_md5])).contains("fails its check"));
    }
}
