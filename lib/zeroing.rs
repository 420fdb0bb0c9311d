//! Making byte ranges of a device or file read as zeros — the one way the crate does it
//! (new LVs over stale extents, ranges a stream skipped).
//!
//! Fast path first: `BLKZEROOUT` on a block device (WRITE ZEROES/WRITE SAME where the device
//! offers it), hole punching on a regular file (the testbed's lvfs, sparse files). Where the
//! target cannot do that, zeros are written, and the zeroer remembers it to stop asking.
//! `EINVAL` on one range can be that range's alignment, so it does not disable the fast path.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// 1 MiB of zeros for the write fallback.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// Zeroes ranges of one open target.
#[derive(Debug)]
pub struct Zeroer<'a> {
    file: &'a File,
    block_device: bool,
    fast_path: bool,
    /// Bytes zeroed so far.
    pub zeroed: u64,
}

impl<'a> Zeroer<'a> {
    /// A zeroer for `file` (a block device when `block_device`).
    pub fn new(file: &'a File, block_device: bool) -> Zeroer<'a> {
        Zeroer {
            file,
            block_device,
            fast_path: true,
            zeroed: 0,
        }
    }

    /// Makes `[at, at + len)` read as zeros.
    pub fn zero(&mut self, at: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        if self.fast_path {
            let done = if self.block_device {
                crate::sys::block_zero_out(self.file, at, len)
            } else {
                crate::sys::punch_hole(self.file, at, len)
            };
            match done {
                Ok(()) => {
                    self.zeroed += len;
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => {
                    tracing::debug!("zeroing by writes: the target cannot deallocate ({e})");
                    self.fast_path = false;
                }
            }
        }
        let end = at + len;
        let mut off = at;
        while off < end {
            let n = (end - off).min(ZEROS.len() as u64) as usize;
            self.file.write_all_at(&ZEROS[..n], off)?;
            off += n as u64;
        }
        self.zeroed += len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn zeroes_a_file_range() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[0xEE; 3 << 20]).unwrap();
        let mut z = Zeroer::new(&f, false);
        z.zero(1 << 20, 1 << 20).unwrap();
        z.zero(5, 0).unwrap();
        assert_eq!(z.zeroed, 1 << 20);
        let mut buf = vec![0u8; 3 << 20];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert!(buf[..1 << 20].iter().all(|&b| b == 0xEE));
        assert!(buf[1 << 20..2 << 20].iter().all(|&b| b == 0));
        assert!(buf[2 << 20..].iter().all(|&b| b == 0xEE));
    }
}
