//! The few system calls std does not wrap. This is the only module allowed `unsafe`; each call
//! is a thin, checked wrapper so the rest of the crate stays safe.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Sends SIGKILL to a process group (the group led by `pgid`). Errors are ignored: the group
/// may already be gone.
pub fn kill_process_group(pgid: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid targets a process group; no memory is involved.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Size in bytes of a block device.
pub fn block_device_size(f: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid for the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(size)
    }
}

/// Asks a block device to zero a range (WRITE ZEROES / WRITE SAME where the device offers it;
/// the kernel falls back to writing zero pages). After success the range reads as zeros.
pub fn block_zero_out(f: &File, offset: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKZEROOUT reads two u64 from the pointer, valid for the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKZEROOUT, range.as_ptr()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Deallocates a range of a regular file so it reads as zeros (keeps the file size).
pub fn punch_hole(f: &File, offset: u64, len: u64) -> io::Result<()> {
    fallocate(
        f,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        offset,
        len,
    )
}

/// `fallocate(ZERO_RANGE | KEEP_SIZE)`: the range reads as zeros afterwards. File systems that
/// cannot (tmpfs) answer `EOPNOTSUPP`; callers fall back to [`punch_hole`].
pub fn zero_range(f: &File, offset: u64, len: u64) -> io::Result<()> {
    fallocate(
        f,
        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
        offset,
        len,
    )
}

fn fallocate(f: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate(2) on a valid fd with integer arguments.
    let r = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `lseek(fd, offset, SEEK_DATA)`: the next offset ≥ `offset` holding data, `None` past the
/// last data (ENXIO). Errors mean the file system cannot tell (treat everything as data).
pub fn seek_data(f: &File, offset: u64) -> io::Result<Option<u64>> {
    seek(f, offset, libc::SEEK_DATA)
}

/// `lseek(fd, offset, SEEK_HOLE)`: the next hole at or after `offset` (the end of file counts).
pub fn seek_hole(f: &File, offset: u64) -> io::Result<Option<u64>> {
    seek(f, offset, libc::SEEK_HOLE)
}

fn seek(f: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: lseek(2) on a valid fd with integer arguments.
    let r = unsafe { libc::lseek(f.as_raw_fd(), offset as libc::off_t, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(r as u64))
}

/// Sets the calling process's parent-death signal, so a helper (FUSE server, simulator) dies
/// with the test or demo that started it.
pub fn die_with_parent() {
    // SAFETY: prctl(2) with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}

/// Sets the signal this process gets when its parent thread dies (`PR_SET_PDEATHSIG`), for a
/// server that must clean up (unmount) rather than be killed outright.
pub fn parent_death_signal(sig: i32) {
    // SAFETY: prctl(2) with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong);
    }
}

fn sigset(sigs: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset only writes into it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks these signals in the calling thread and the threads it starts afterwards, so that
/// one thread can take them with [`wait_signal`]. (Children started by `std::process` get a
/// clean mask.) Call it before starting any thread.
pub fn block_signals(sigs: &[i32]) -> io::Result<()> {
    let set = sigset(sigs);
    // SAFETY: pthread_sigmask with a valid set and no old-set pointer.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        Err(io::Error::from_raw_os_error(r))
    } else {
        Ok(())
    }
}

/// Waits until one of these (blocked) signals arrives and returns it.
pub fn wait_signal(sigs: &[i32]) -> io::Result<i32> {
    let set = sigset(sigs);
    let mut sig: libc::c_int = 0;
    // SAFETY: sigwait with a valid set and a valid output pointer.
    let r = unsafe { libc::sigwait(&set, &mut sig) };
    if r != 0 {
        Err(io::Error::from_raw_os_error(r))
    } else {
        Ok(sig)
    }
}

/// Whether we run as root (LVM needs `sudo -n` otherwise).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Sends a signal to one process.
pub fn signal(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) with integer arguments.
    let r = unsafe { libc::kill(pid, sig) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

// _IOR(0x12, 114, size_t) and _IO(0x12, 127) from <linux/fs.h>.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKZEROOUT: libc::c_ulong = 0x127f;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    #[test]
    fn punch_hole_reads_back_zeros_and_seek_sees_it() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![0xAB; 1 << 20]).unwrap();
        punch_hole(&f, 0, 512 * 1024).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_exact(&mut buf).unwrap();
        assert!(buf[..512 * 1024].iter().all(|&b| b == 0));
        assert!(buf[512 * 1024..].iter().all(|&b| b == 0xAB));
        // Not every file system reports holes; when it does, data starts after the hole.
        if let Ok(Some(d)) = seek_data(&f, 0) {
            assert!(d <= 512 * 1024);
        }
    }
}
