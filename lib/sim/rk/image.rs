//! The guest image cache of the real-kernel tier: built once per recipe, outside the
//! repository, and a golden RAM snapshot every guest restores from.
//!
//! Layout of `<cache root>/<key>/` (cache root: `BSUD_RK_CACHE`, default
//! `/var/cache/one-bsud-rk`):
//!
//! ```text
//! key, key.pub        the ssh key that logs into every guest as root
//! base.qcow2          ext4 root (scripts/rk-image)
//! vmlinuz, initrd     the cloud kernel and the tiny busybox initramfs
//! golden.qcow2        overlay on base.qcow2 of the guest whose RAM golden.state holds
//! golden.state        QEMU migration stream of that guest, booted and idle
//! ready               written last: the entry is complete
//! ```
//!
//! Invariants:
//! - `<key>` hashes everything the golden state depends on: the build script's text (it holds
//!   the package list), `qemu-system-x86_64 --version` and the machine's argument list
//!   ([`super::guest::machine_fingerprint`]). A changed recipe is a new entry; entries are
//!   never modified once `ready` exists (guests' overlays point at golden.qcow2).
//! - Building holds `<cache root>/<key>.lock`, so parallel tests build once and the others wait.
//! - A failed build leaves no `ready`; the next call starts over from an empty entry.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::guest::{self, Instance};
use super::qmp::Qmp;
use crate::exec::{self, Cmd};
use crate::lock::FileLock;
use crate::wait::{poll, Poll, Wait};

/// The build script (product test tooling; the same text as `scripts/rk-image`).
pub const BUILD_SCRIPT: &str = include_str!("../../../scripts/rk-image");
/// Default cache root.
pub const DEFAULT_CACHE: &str = "/var/cache/one-bsud-rk";
/// How long a build (mmdebstrap, ~1 min with downloads; golden boot, ~20 s) may take,
/// including waiting for another process building the same entry.
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// How long a cold boot of the golden guest may take.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// A complete cache entry.
#[derive(Debug, Clone)]
pub struct Image {
    dir: PathBuf,
}

/// The cache root: `BSUD_RK_CACHE` or [`DEFAULT_CACHE`].
pub fn cache_root() -> PathBuf {
    std::env::var_os("BSUD_RK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
}

/// The cache key of this machine's recipe.
pub fn cache_key() -> anyhow::Result<String> {
    let qemu = exec::run(
        &Cmd::new("qemu-system-x86_64")
            .arg("--version")
            .timeout(Duration::from_secs(30)),
    )
    .context("the real-kernel tier needs qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let mut h = blake3::Hasher::new();
    for part in [
        BUILD_SCRIPT,
        &qemu.stdout_str(),
        &guest::machine_fingerprint(),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    Ok(h.finalize().to_hex()[..16].to_string())
}

impl Image {
    /// The cache entry for this recipe under `root`, built first when missing (needs root and
    /// network access to a Debian mirror; about 1.5 min).
    pub fn ensure(root: &Path) -> anyhow::Result<Image> {
        let key = cache_key()?;
        let image = Image {
            dir: root.join(&key),
        };
        if image.ready() {
            return Ok(image);
        }
        let _lock = FileLock::acquire(root, &key, BUILD_TIMEOUT)?;
        if image.ready() {
            return Ok(image);
        }
        let started = Instant::now();
        image.build().with_context(|| {
            format!(
                "building the real-kernel tier's guest image in {}",
                image.dir.display()
            )
        })?;
        tracing::info!(
            "guest image {} built in {:.0}s",
            image.dir.display(),
            started.elapsed().as_secs_f64()
        );
        Ok(image)
    }

    /// The entry's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The ssh private key of the guests' root.
    pub fn key(&self) -> PathBuf {
        self.dir.join("key")
    }

    /// The golden RAM state.
    pub fn golden_state(&self) -> PathBuf {
        self.dir.join("golden.state")
    }

    fn ready(&self) -> bool {
        self.dir.join("ready").exists()
    }

    /// Creates a guest's root overlay on the golden disk.
    pub fn overlay_on_golden(&self, overlay: &Path) -> anyhow::Result<()> {
        qcow2_overlay(&self.dir.join("golden.qcow2"), overlay)
    }

    fn build(&self) -> anyhow::Result<()> {
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir)
                .with_context(|| format!("removing the partial entry {}", self.dir.display()))?;
        }
        std::fs::create_dir_all(&self.dir)?;
        exec::run(
            &Cmd::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "bsud-rk", "-f"])
                .arg(self.key())
                .timeout(Duration::from_secs(30)),
        )?;
        let script = self.dir.join("rk-image");
        std::fs::write(&script, BUILD_SCRIPT)?;
        exec::run(
            &Cmd::new("bash")
                .arg(&script)
                .arg(&self.dir)
                .arg(self.dir.join("key.pub"))
                .timeout(BUILD_TIMEOUT),
        )?;
        self.save_golden()?;
        std::fs::write(self.dir.join("ready"), b"")?;
        Ok(())
    }

    /// Cold-boots the image once, waits until systemd is up and idle, and saves the machine's
    /// RAM into golden.state (QEMU `migrate` to a file); golden.qcow2 keeps its disk.
    fn save_golden(&self) -> anyhow::Result<()> {
        let run = self.dir.join("golden-run");
        std::fs::create_dir_all(&run)?;
        let overlay = self.dir.join("golden.qcow2");
        qcow2_overlay(&self.dir.join("base.qcow2"), &overlay)?;
        let port = guest::free_port()?;
        let args = guest::machine_args(
            &self.dir,
            &Instance {
                overlay: &overlay,
                dir: &run,
                ssh_port: port,
                cloud_relay: None,
            },
        );
        let mut qemu = guest::spawn_qemu(&args, &run, None)?;
        let console = || std::fs::read_to_string(run.join("console.log")).unwrap_or_default();
        guest::wait_ssh(&self.key(), port, &mut qemu, BOOT_TIMEOUT)
            .with_context(|| format!("golden boot; console:\n{}", tail(&console(), 3000)))?;
        // Idle, with nothing cached that a later guest would find stale. "degraded" (a unit
        // failed) is a usable machine, hence `; true`.
        exec::run(
            &Cmd::new("ssh")
                .args(guest::ssh_args(&self.key(), port))
                .arg("systemctl is-system-running --wait; sync; echo 3 >/proc/sys/vm/drop_caches")
                .timeout(BOOT_TIMEOUT),
        )?;
        let mut q = Qmp::connect(&run.join("qmp.sock"), Duration::from_secs(10))?;
        q.execute("stop", json!({}))?;
        let state = self.golden_state();
        q.execute(
            "migrate",
            json!({"uri": format!("exec:cat > {}", state.display())}),
        )?;
        poll(
            "the golden state to be saved",
            Wait::new(Duration::from_secs(120), Duration::from_millis(100)),
            || {
                let st = q.execute("query-migrate", json!({}))?;
                match st["status"].as_str() {
                    Some("completed") => Ok(Poll::Ready(())),
                    Some("failed") | Some("cancelled") => {
                        anyhow::bail!("saving the golden state: {st}")
                    }
                    other => Ok(Poll::Pending(format!("{other:?}"))),
                }
            },
        )?;
        let _ = q.execute("quit", json!({}));
        drop(q);
        let _ = poll(
            "the golden QEMU to exit",
            Wait::new(Duration::from_secs(10), Duration::from_millis(50)),
            || {
                Ok(match qemu.child.try_wait() {
                    Ok(None) => Poll::Pending("running".into()),
                    _ => Poll::Ready(()),
                })
            },
        );
        qemu.kill();
        std::fs::remove_dir_all(&run)?;
        Ok(())
    }
}

/// `qemu-img create -f qcow2 -b <backing>` (absolute backing path).
pub fn qcow2_overlay(backing: &Path, overlay: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(overlay);
    exec::run(
        &Cmd::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(backing)
            .arg(overlay)
            .timeout(Duration::from_secs(30)),
    )?;
    Ok(())
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_fingerprint_covers_the_machine_but_not_the_instance() {
        let f = guest::machine_fingerprint();
        assert!(f.contains("-cpu qemu64"), "{f}");
        assert!(f.contains("tb-size=192"), "{f}");
        assert!(f.contains("@OVERLAY@"), "{f}");
        let args = guest::machine_args(
            Path::new("/c/k"),
            &Instance {
                overlay: Path::new("/g/root.qcow2"),
                dir: Path::new("/g"),
                ssh_port: 4022,
                cloud_relay: Some("relay 1".into()),
            },
        );
        let line = args.join(" ");
        assert!(line.contains("file.filename=/g/root.qcow2"), "{line}");
        assert!(
            line.contains("hostfwd=tcp:127.0.0.1:4022-:22,guestfwd=tcp:10.0.2.100:80-cmd:relay 1"),
            "{line}"
        );
        assert!(line.contains("-kernel /c/k/vmlinuz"), "{line}");
        assert!(!line.contains('@'), "{line}");
    }
}
