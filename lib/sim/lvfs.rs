//! lvfs: a simulated host's LVs as files over FUSE, byte-accurate over LVM's own segment map.
//!
//! This kernel has no device-mapper, so LVs are never activated and `/dev/<vg>/<lv>` never
//! appears. lvfs stands in for linear device-mapper: `<mountpoint>/<vg>/<lv>` is a regular file
//! (mode 0660, root) the size of the LV; byte `x` of it is the byte LVM's segment map puts it at,
//! in the volume file behind the loop device of the right PV (see `lvfs/map.rs`). Data written through
//! an LV on one host is therefore in the volume files where LVM put it, and reads back through
//! the same LV on another host once the volumes move there.
//!
//! Behaviour (the contract tools and the agent rely on):
//! - the tree follows LVM as it changes (lvcreate, lvextend, lvremove, vgextend, attach and
//!   detach of volumes) with no delay: see `lvfs/fs.rs` for how;
//! - unwritten areas read as zeros; writes past the end fail with `ENOSPC`;
//!   `fallocate(PUNCH_HOLE|KEEP_SIZE)` and `ZERO_RANGE` go to the volume files, `SEEK_DATA` /
//!   `SEEK_HOLE` are answered from them, so sparse-aware tools skip holes; `fsync` and `close`
//!   flush the volume files; `O_TRUNC` is ignored and truncation to another size refused, as on
//!   a block device;
//! - only linear LVs are served (thin, RAID, snapshots are absent from the tree);
//! - no page cache in front of the files (direct I/O): `mmap` of an LV file is not supported.
//!
//! Process: `bsud-sim lvfs --foreground` serves in the calling process and forks nothing
//! (it runs `lvs`/`pvs` to read the map, and the mount itself goes through `fusermount3`). It
//! unmounts and exits on SIGTERM, SIGINT or SIGHUP; with `--die-with-parent` it gets SIGTERM
//! when the thread that started it ends. Without `--foreground` it starts such a server in the
//! background, waits until the file system is mounted, and exits.

mod fs;
pub(crate) mod map;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;

use crate::error::{fail, ErrorKind};
use crate::exec::{self, Cmd, Running};
use crate::sim::hostview::HostView;
use crate::sys;
use crate::wait::{poll, Poll, Wait};

/// How long starting a server may take until the mount is there.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a server gets to unmount after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// `bsud-sim lvfs` arguments.
#[derive(Debug, clap::Args)]
pub struct LvfsArgs {
    /// Root directory of the simulated host; its etc/lvm/lvm.conf decides which PVs are seen.
    #[arg(long, value_name = "DIR")]
    pub host_root: PathBuf,
    /// Where to mount [default: HOST_ROOT/lv, the host's BSUD_LV_DIR].
    #[arg(long, value_name = "DIR")]
    pub mountpoint: Option<PathBuf>,
    /// Serve in this process until unmounted or sent SIGTERM/SIGINT/SIGHUP (which unmount;
    /// the pid is in HOST_ROOT/run/lvfs.pid). Without it, a server is started in the
    /// background (log: HOST_ROOT/run/lvfs.log) and this command returns once mounted.
    #[arg(long)]
    pub foreground: bool,
    /// Unmount and exit when the thread that started this process ends (needs --foreground).
    #[arg(long, requires = "foreground")]
    pub die_with_parent: bool,
    /// Worker threads serving requests in parallel.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
}

/// Mounts and serves until unmounted (foreground), or starts a background server.
pub fn run(a: LvfsArgs) -> anyhow::Result<()> {
    let root = a.host_root.canonicalize().map_err(|e| {
        fail(
            ErrorKind::BadInput,
            format!("host root {}: {e}", a.host_root.display()),
        )
    })?;
    let view = HostView::new(root);
    if !view.lvm_conf().is_file() {
        return Err(fail(
            ErrorKind::BadInput,
            format!(
                "{} is not a simulated host root (no etc/lvm/lvm.conf)",
                view.root().display()
            ),
        ));
    }
    let mountpoint = a.mountpoint.clone().unwrap_or_else(|| view.lv_dir());
    std::fs::create_dir_all(&mountpoint)
        .with_context(|| format!("creating mount point {}", mountpoint.display()))?;
    if !a.foreground {
        return start_background(&a, &view, &mountpoint);
    }
    serve(&a, view, &mountpoint)
}

fn serve(a: &LvfsArgs, view: HostView, mountpoint: &Path) -> anyhow::Result<()> {
    if a.die_with_parent {
        let parent = std::os::unix::process::parent_id();
        sys::parent_death_signal(libc::SIGTERM);
        // The parent may have gone before the signal was armed.
        if std::os::unix::process::parent_id() != parent {
            anyhow::bail!("the parent process exited before lvfs started");
        }
    }
    // Before any thread starts, so that only the signal thread takes them.
    let signals = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];
    sys::block_signals(&signals).context("blocking signals")?;
    clear_stale_mount(mountpoint)?;
    let mountpoint = mountpoint
        .canonicalize()
        .with_context(|| format!("mount point {}", mountpoint.display()))?;
    let options = [
        fuser::MountOption::FSName(format!("lvfs:{}", view.root().display())),
        fuser::MountOption::Subtype("lvfs".into()),
        fuser::MountOption::AllowOther,
        // fusermount3 unmounts it if this process is killed outright.
        fuser::MountOption::AutoUnmount,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoExec,
        fuser::MountOption::RW,
    ];
    let pid_file = view.run_dir().join("lvfs.pid");
    let fs = fs::Lvfs::new(view.clone(), usize::from(a.threads));
    let mut session = fuser::Session::new(fs, &mountpoint, &options)
        .with_context(|| format!("mounting lvfs on {}", mountpoint.display()))?;
    let _ = std::fs::write(&pid_file, format!("{}\n", std::process::id()));
    tracing::info!(
        "lvfs of {} mounted on {}",
        view.root().display(),
        mountpoint.display()
    );
    {
        let mountpoint = mountpoint.clone();
        let pid_file = pid_file.clone();
        std::thread::Builder::new()
            .name("lvfs-signals".into())
            .spawn(move || {
                let sig = sys::wait_signal(&signals).unwrap_or(libc::SIGTERM);
                tracing::info!("signal {sig}: unmounting {}", mountpoint.display());
                unmount(&mountpoint);
                let _ = std::fs::remove_file(&pid_file);
                std::process::exit(0);
            })
            .context("starting the signal thread")?;
    }
    let res = session.run();
    let _ = std::fs::remove_file(&pid_file);
    res.with_context(|| format!("serving lvfs on {}", mountpoint.display()))
}

/// Starts `bsud-sim lvfs --foreground …` detached (own process group, log file) and waits for
/// the mount. It is a daemon by design, so it is started with `std::process` rather than
/// [`exec`], whose children live and die with their caller.
fn start_background(a: &LvfsArgs, view: &HostView, mountpoint: &Path) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("locating bsud-sim")?;
    std::fs::create_dir_all(view.run_dir())?;
    let log_path = view.run_dir().join("lvfs.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut child = std::process::Command::new(exe)
        .args(["lvfs", "--foreground", "--host-root"])
        .arg(view.root())
        .arg("--mountpoint")
        .arg(mountpoint)
        .arg("--threads")
        .arg(a.threads.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the lvfs server")?;
    wait_mounted(mountpoint, || match child.try_wait() {
        Ok(Some(status)) => Err(anyhow::anyhow!(
            "lvfs server {status}; see {}",
            log_path.display()
        )),
        _ => Ok(()),
    })?;
    eprintln!(
        "lvfs: {} mounted (pid {}, log {})",
        mountpoint.display(),
        child.id(),
        log_path.display()
    );
    Ok(())
}

/// Waits until `mountpoint` is an lvfs mount; `alive` reports a server that died meanwhile.
fn wait_mounted(
    mountpoint: &Path,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    poll(
        &format!("lvfs on {}", mountpoint.display()),
        Wait::new(MOUNT_TIMEOUT, Duration::from_millis(20)),
        || {
            alive()?;
            Ok(if is_mounted(mountpoint) {
                Poll::Ready(())
            } else {
                Poll::Pending("not mounted yet".into())
            })
        },
    )
}

/// Whether `path` is the mount point of an lvfs file system (per /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        let mut parts = l.split(" - ");
        let (Some(left), Some(right)) = (parts.next(), parts.next()) else {
            return false;
        };
        let mp = left.split(' ').nth(4).map(unescape_mountinfo);
        let fstype = right.split(' ').next().unwrap_or("");
        fstype == "fuse.lvfs" && mp.as_deref() == Some(path.as_os_str().to_string_lossy().as_ref())
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A dead server leaves its mount behind ("Transport endpoint is not connected"): clear it.
/// A live mount is an error (two servers on one tree).
fn clear_stale_mount(mountpoint: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(mountpoint) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!("clearing a stale mount on {}", mountpoint.display());
            unmount(mountpoint);
            Ok(())
        }
        _ if is_mounted(mountpoint) => Err(fail(
            ErrorKind::Refused,
            format!("{} is already served by lvfs", mountpoint.display()),
        )),
        _ => Ok(()),
    }
}

/// Lazy unmount (succeeds even while files are open; they fail from then on).
fn unmount(mountpoint: &Path) {
    let r = exec::run(
        &Cmd::new("fusermount3")
            .args(["-u", "-z", "-q", "--"])
            .arg(mountpoint)
            .timeout(Duration::from_secs(30)),
    );
    if let Err(e) = r {
        tracing::warn!("unmounting {}: {e}", mountpoint.display());
    }
}

/// A `bsud-sim lvfs --foreground --die-with-parent` server started by a testbed or a test.
/// Dropping it stops the server (SIGTERM, which unmounts; then SIGKILL and a lazy unmount if
/// it does not go).
#[derive(Debug)]
pub struct LvfsProcess {
    running: Option<Running>,
    mountpoint: PathBuf,
}

impl LvfsProcess {
    /// Starts the server of `host_root` (mounted on `<host_root>/lv`), its stderr appended to
    /// `log`, and waits until it is mounted.
    pub fn start(sim_binary: &Path, host_root: &Path, log: &Path) -> anyhow::Result<LvfsProcess> {
        let view = HostView::new(host_root);
        let mountpoint = view.lv_dir();
        let cmd = Cmd::new(sim_binary)
            .args(["lvfs", "--foreground", "--die-with-parent", "--host-root"])
            .arg(host_root)
            // A server runs as long as its host: the testbed's lifetime bounds it.
            .timeout(Duration::from_secs(365 * 24 * 3600));
        let running = crate::sim::testbed::spawn_logged(&cmd, log)?;
        let mut p = LvfsProcess {
            running: Some(running),
            mountpoint,
        };
        let log = log.to_path_buf();
        let waited = {
            let running = p.running.as_mut().expect("just set");
            wait_mounted(&p.mountpoint, || match running.child.try_wait() {
                Ok(Some(status)) => Err(anyhow::anyhow!(
                    "lvfs of {} {status}: {}",
                    host_root.display(),
                    log_tail(&log)
                )),
                _ => Ok(()),
            })
        };
        waited?;
        Ok(p)
    }

    /// The mount point (`<host_root>/lv`).
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The server's pid.
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.child.id())
    }

    /// Stops the server and makes sure nothing stays mounted.
    pub fn stop(&mut self) {
        if let Some(mut running) = self.running.take() {
            let pid = running.child.id() as i32;
            let _ = sys::signal(pid, libc::SIGTERM);
            let _ = poll(
                "lvfs to exit",
                Wait::new(STOP_TIMEOUT, Duration::from_millis(20)),
                || {
                    Ok(match running.child.try_wait() {
                        Ok(Some(_)) | Err(_) => Poll::Ready(()),
                        Ok(None) => Poll::Pending("running".into()),
                    })
                },
            );
            running.kill();
        }
        if is_mounted(&self.mountpoint) {
            unmount(&self.mountpoint);
        }
    }
}

impl Drop for LvfsProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_tail(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    exec::stderr_tail(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }
}
