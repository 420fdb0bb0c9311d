//! File locks with a deadline.
//!
//! Locks are `flock`-style advisory locks on files in a lock directory (the frontend's for
//! drives, each host's for its volume groups). They are released when the holder exits, even
//! when it is killed, so a crashed action never leaves a lock behind. Waiting for a lock is a
//! wait like any other: bounded, with progress in the log.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::wait::{poll, Poll, Wait};

/// A held lock; released on drop.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Takes the exclusive lock `<dir>/<name>.lock`, waiting at most `timeout`.
    pub fn acquire(dir: &Path, name: &str, timeout: Duration) -> anyhow::Result<FileLock> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating lock directory {}", dir.display()))?;
        let path = dir.join(format!("{}.lock", sanitize(name)));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        poll(
            &format!("lock {}", path.display()),
            Wait::new(timeout, Duration::from_millis(25)),
            || match file.try_lock() {
                Ok(()) => Ok(Poll::Ready(())),
                Err(std::fs::TryLockError::WouldBlock) => {
                    Ok(Poll::Pending("held by another process".into()))
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    Err(anyhow::Error::new(e).context(format!("locking {}", path.display())))
                }
            },
        )?;
        tracing::debug!("locked {}", path.display());
        Ok(FileLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
        tracing::debug!("unlocked {}", self.path.display());
    }
}

/// Lock names become file names: keep them to a safe alphabet.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit_code;

    #[test]
    fn second_holder_times_out_then_gets_it_after_release() {
        let d = tempfile::tempdir().unwrap();
        let a = FileLock::acquire(d.path(), "drive:vg-one-1", Duration::from_secs(1)).unwrap();
        assert!(a
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("drive_vg-one-1"));
        let e =
            FileLock::acquire(d.path(), "drive:vg-one-1", Duration::from_millis(100)).unwrap_err();
        assert_eq!(exit_code(&e), 5);
        drop(a);
        FileLock::acquire(d.path(), "drive:vg-one-1", Duration::from_millis(100)).unwrap();
    }
}
