//! What the sender reads: a device or regular file (read by position, holes skipped with
//! `SEEK_DATA`/`SEEK_HOLE`), or any byte stream (a decompressed download) read in order.
//!
//! The scanner hands the content over as chunks of at most [`FRAME_BYTES`] at increasing,
//! block-aligned offsets; ranges between chunks are zeros (holes). Chunks still contain zero
//! blocks (a file system's allocated zeros, or a plain stream): the hasher finds those.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;
use std::sync::mpsc::SyncSender;

use anyhow::{bail, Context};

use super::{aborted, BLOCK_SIZE, FRAME_BYTES};
use crate::sys;

/// Content to send.
pub struct Source<'a> {
    inner: Inner<'a>,
    size: Option<u64>,
}

enum Inner<'a> {
    /// Positional reads; the size is known.
    File(File),
    /// Sequential reads; the size may be unknown until the end.
    Reader(Box<dyn Read + Send + 'a>),
}

/// One item from the scanner.
pub(crate) enum Scanned {
    /// Content at a block-aligned offset; everything between the previous chunk and this one
    /// is zeros.
    Chunk { offset: u64, data: Vec<u8> },
    /// The content ended; its logical size.
    End { size: u64 },
}

impl Source<'static> {
    /// Opens a device or file. `size`: how many bytes of it are the content (default: all).
    pub fn open(path: &Path, size: Option<u64>) -> anyhow::Result<Source<'static>> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Source::from_file(file, size).with_context(|| format!("source {}", path.display()))
    }

    /// A device or regular file; anything else (a pipe, a character device) is read as a
    /// stream. `size`: how many bytes of it are the content (default: all of it); more than
    /// the file holds is an error.
    pub fn from_file(file: File, size: Option<u64>) -> anyhow::Result<Source<'static>> {
        let file_type = file.metadata().context("reading its metadata")?.file_type();
        let actual = if file_type.is_file() {
            file.metadata().context("reading its metadata")?.len()
        } else if file_type.is_block_device() {
            sys::block_device_size(&file).context("reading the block device size")?
        } else {
            return Ok(Source::from_reader(file, size));
        };
        let size = match size {
            None => actual,
            Some(n) if n <= actual => n,
            Some(n) => bail!("it holds {actual} bytes, fewer than the {n} bytes to send"),
        };
        Ok(Source {
            inner: Inner::File(file),
            size: Some(size),
        })
    }
}

impl<'a> Source<'a> {
    /// A byte stream read in order. With `size`, the stream must hold exactly that many bytes.
    pub fn from_reader(reader: impl Read + Send + 'a, size: Option<u64>) -> Source<'a> {
        Source {
            inner: Inner::Reader(Box::new(reader)),
            size,
        }
    }

    /// The logical size, when known before reading.
    pub fn size(&self) -> Option<u64> {
        self.size
    }
}

/// Reads the whole source into `tx`, then sends [`Scanned::End`]. Runs on its own thread.
pub(crate) fn scan(source: &mut Source<'_>, tx: &SyncSender<Scanned>) -> anyhow::Result<()> {
    let size = match &mut source.inner {
        Inner::File(file) => {
            let size = source.size.unwrap_or(0);
            scan_file(file, size, tx)?;
            size
        }
        Inner::Reader(reader) => scan_reader(reader, source.size, tx)?,
    };
    tx.send(Scanned::End { size }).map_err(|_| aborted())
}

fn scan_file(file: &File, size: u64, tx: &SyncSender<Scanned>) -> anyhow::Result<()> {
    let mut pos = 0;
    while pos < size {
        let (start, end) = next_data_extent(file, pos, size);
        let mut offset = start;
        while offset < end {
            let n = (end - offset).min(FRAME_BYTES as u64) as usize;
            let mut data = vec![0u8; n];
            file.read_exact_at(&mut data, offset).map_err(|e| {
                if e.kind() == ErrorKind::UnexpectedEof {
                    anyhow::anyhow!("the source ended before {size} bytes (did it shrink?)")
                } else {
                    anyhow::Error::new(e).context(format!("reading the source at byte {offset}"))
                }
            })?;
            tx.send(Scanned::Chunk { offset, data })
                .map_err(|_| aborted())?;
            offset += n as u64;
        }
        pos = end;
    }
    Ok(())
}

/// The next range at or after `pos` (block-aligned) that may hold data, widened to whole
/// blocks and clipped to `size`; `(size, size)` when only holes remain. A file system that
/// cannot tell holes makes everything data.
fn next_data_extent(file: &File, pos: u64, size: u64) -> (u64, u64) {
    let data = match sys::seek_data(file, pos) {
        Ok(Some(d)) if d < size => d,
        Ok(_) => return (size, size),
        Err(_) => return (pos, size),
    };
    let hole = match sys::seek_hole(file, data) {
        Ok(Some(h)) => h.min(size),
        _ => size,
    };
    let start = (data - data % BLOCK_SIZE).max(pos);
    let end = hole.next_multiple_of(BLOCK_SIZE).min(size);
    // A file changing under us could report a hole before its data; always make progress.
    let end = if end > start {
        end
    } else {
        (start + BLOCK_SIZE).min(size)
    };
    (start, end)
}

fn scan_reader(
    reader: &mut (dyn Read + Send + '_),
    expected: Option<u64>,
    tx: &SyncSender<Scanned>,
) -> anyhow::Result<u64> {
    let mut offset = 0u64;
    loop {
        let want = match expected {
            Some(size) => (size - offset).min(FRAME_BYTES as u64) as usize,
            None => FRAME_BYTES,
        };
        if want == 0 {
            // Exactly the expected size was read: the stream must end here.
            let mut probe = [0u8; 1];
            if fill(reader, &mut probe).context("reading the source")? > 0 {
                bail!(
                    "the source holds more than the {} bytes expected",
                    expected.unwrap_or(0)
                );
            }
            return Ok(offset);
        }
        let mut data = vec![0u8; want];
        let n = fill(reader, &mut data)
            .with_context(|| format!("reading the source at byte {offset}"))?;
        data.truncate(n);
        if n > 0 {
            tx.send(Scanned::Chunk { offset, data })
                .map_err(|_| aborted())?;
            offset += n as u64;
        }
        if n < want {
            if let Some(size) = expected {
                bail!("the source ended after {offset} bytes, {size} expected");
            }
            return Ok(offset);
        }
    }
}

/// Reads until `buf` is full or the stream ends; the number of bytes read.
fn fill(reader: &mut (dyn Read + Send + '_), buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    fn collect(mut source: Source<'_>) -> anyhow::Result<(Vec<(u64, usize)>, u64)> {
        let (tx, rx) = sync_channel(1024);
        scan(&mut source, &tx)?;
        drop(tx);
        let mut chunks = Vec::new();
        let mut end = None;
        for item in rx {
            match item {
                Scanned::Chunk { offset, data } => chunks.push((offset, data.len())),
                Scanned::End { size } => end = Some(size),
            }
        }
        Ok((chunks, end.expect("scan sends End on success")))
    }

    #[test]
    fn file_scan_skips_holes_in_whole_blocks() {
        let f = tempfile::tempfile().unwrap();
        let size = 40 * BLOCK_SIZE + 123;
        f.set_len(size).unwrap();
        f.write_all_at(b"x", 5 * BLOCK_SIZE + 10).unwrap();
        f.write_all_at(b"y", size - 1).unwrap();
        // Whether holes are reported depends on the file system.
        let reports_holes = matches!(sys::seek_data(&f, 0), Ok(Some(d)) if d > 0);
        let (chunks, end) = collect(Source::from_file(f, None).unwrap()).unwrap();
        assert_eq!(end, size);
        assert!(chunks.iter().all(|c| c.0 % BLOCK_SIZE == 0));
        let written = 5 * BLOCK_SIZE + 10;
        assert!(chunks
            .iter()
            .any(|c| c.0 <= written && c.0 + c.1 as u64 > written));
        assert_eq!(chunks.last().map(|c| c.0 + c.1 as u64), Some(size));
        if reports_holes {
            assert_eq!(
                chunks,
                vec![
                    (5 * BLOCK_SIZE, BLOCK_SIZE as usize),
                    (40 * BLOCK_SIZE, 123)
                ]
            );
        }
    }

    #[test]
    fn file_source_refuses_a_size_beyond_its_end() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(1000).unwrap();
        let e = Source::from_file(f, Some(1001)).err().unwrap();
        assert!(e.to_string().contains("fewer than the 1001 bytes"), "{e}");
    }

    #[test]
    fn reader_scan_checks_the_expected_size() {
        let data = vec![3u8; FRAME_BYTES + 5];
        let (chunks, end) = collect(Source::from_reader(&data[..], None)).unwrap();
        assert_eq!(end, data.len() as u64);
        assert_eq!(chunks, vec![(0, FRAME_BYTES), (FRAME_BYTES as u64, 5)]);
        let exact = Some(data.len() as u64);
        assert!(collect(Source::from_reader(&data[..], exact)).is_ok());
        let short = collect(Source::from_reader(&data[..], Some(data.len() as u64 + 1)));
        assert!(short.unwrap_err().to_string().contains("ended after"));
        let long = collect(Source::from_reader(&data[..], Some(10)));
        assert!(long
            .unwrap_err()
            .to_string()
            .contains("more than the 10 bytes"));
        let (chunks, end) = collect(Source::from_reader(&[][..], None)).unwrap();
        assert_eq!((chunks.len(), end), (0, 0));
    }
}
