//! QEMU guests of the real-kernel tier: the machine's command line, starting a guest from the
//! golden snapshot, its ssh access and its end.
//!
//! Invariants:
//! - Every guest runs the same machine ([`machine_args`]): the golden state restores only
//!   into an identical machine, so the image cache key hashes this very argument list.
//! - A guest's QEMU runs under `setpriv --pdeathsig KILL`, in its own process group: when the
//!   thread that started it dies (a failed test), the kernel kills it; dropping a [`Guest`]
//!   kills it by pid and removes its directory (overlay, sockets), unless `keep` is set.
//! - A guest's directory path is short (unix socket paths are limited to 108 bytes).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::image::Image;
use super::qmp::Qmp;
use crate::exec::{self, Cmd, Running};
use crate::wait::{poll, Poll, Wait};

/// The MAC the image's networkd configuration matches (see scripts/rk-image).
const GUEST_MAC: &str = "52:54:00:12:34:56";
/// Where a guest reaches the simulated cloud's metadata and API (slirp guestfwd; it only
/// forwards addresses inside the user network, 10.0.2.0/24, which exists only inside QEMU).
pub const GUEST_CLOUD_ADDR: &str = "10.0.2.100:80";
/// How long a restored guest may take to answer ssh.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a QMP peer may take to appear after QEMU starts.
const QMP_CONNECT: Duration = Duration::from_secs(30);
/// Where the tools disk is mounted in the guest.
pub const TOOLS_DIR: &str = "/opt/bsud";

/// What differs between two guests of one machine: files and the forwarded port.
#[derive(Debug, Clone)]
pub struct Instance<'a> {
    /// The qcow2 root overlay.
    pub overlay: &'a Path,
    /// Directory of the QMP socket and the console log.
    pub dir: &'a Path,
    /// Host port forwarded to the guest's ssh.
    pub ssh_port: u16,
    /// Command run for each guest connection to [`GUEST_CLOUD_ADDR`] (stdio relay).
    pub cloud_relay: Option<String>,
}

/// The machine (identical for every guest; `@…@` placeholders are per instance).
fn machine_template(image: &Path) -> Vec<String> {
    let img = image.display();
    [
        "-name rk -nodefaults -display none -no-reboot".to_string(),
        "-accel tcg,tb-size=192 -cpu qemu64 -smp 1 -m 768".to_string(),
        format!("-kernel {img}/vmlinuz -initrd {img}/initrd"),
        "-append @APPEND@".to_string(),
        "-blockdev driver=qcow2,node-name=root,file.driver=file,file.filename=@OVERLAY@,cache.no-flush=on".to_string(),
        "-device virtio-blk-pci,drive=root,id=rootdisk".to_string(),
        "-device virtio-scsi-pci,id=scsi0".to_string(),
        "-netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:@PORT@-:22@GUESTFWD@".to_string(),
        format!("-device virtio-net-pci,netdev=net0,mac={GUEST_MAC}"),
        "-qmp unix:@DIR@/qmp.sock,server=on,wait=off -serial file:@DIR@/console.log".to_string(),
    ]
    .join(" ")
    .split(' ')
    .map(str::to_string)
    .collect()
}

/// The argument text the image cache key covers (placeholders left in).
pub fn machine_fingerprint() -> String {
    machine_template(Path::new("@IMAGE@")).join(" ")
}

/// `qemu-system-x86_64` arguments for one instance of the machine.
pub fn machine_args(image: &Path, i: &Instance<'_>) -> Vec<String> {
    let guestfwd = match &i.cloud_relay {
        Some(cmd) => format!(",guestfwd=tcp:{GUEST_CLOUD_ADDR}-cmd:{cmd}"),
        None => String::new(),
    };
    machine_template(image)
        .into_iter()
        .map(|a| {
            a.replace("@APPEND@", "root=/dev/vda rw console=ttyS0 panic=-1 quiet")
                .replace("@OVERLAY@", &i.overlay.to_string_lossy())
                .replace("@DIR@", &i.dir.to_string_lossy())
                .replace("@PORT@", &i.ssh_port.to_string())
                .replace("@GUESTFWD@", &guestfwd)
        })
        .collect()
}

/// A free TCP port on the loopback (the kernel's choice; QEMU binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts QEMU (stderr into `<dir>/qemu.log`) under a parent-death signal.
pub fn spawn_qemu(args: &[String], dir: &Path, incoming: Option<&Path>) -> anyhow::Result<Running> {
    let mut cmd = Cmd::new("setpriv")
        .args(["--pdeathsig", "KILL", "--", "qemu-system-x86_64"])
        .args(args)
        .timeout(Duration::from_secs(365 * 24 * 3600));
    if let Some(state) = incoming {
        cmd = cmd
            .arg("-incoming")
            .arg(format!("exec:cat {}", state.display()));
    }
    crate::sim::testbed::spawn_logged(&cmd, &dir.join("qemu.log"))
}

/// The ssh arguments that reach a guest directly (no config file): key, port, no host key
/// checks (every guest of an image shares its host keys), short timeouts.
pub fn ssh_args(key: &Path, port: u16) -> Vec<String> {
    vec![
        "-i".into(),
        key.to_string_lossy().into_owned(),
        "-p".into(),
        port.to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=no".into(),
        "-o".into(),
        "UserKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "ConnectTimeout=5".into(),
        "root@127.0.0.1".into(),
    ]
}

/// Waits until `ssh … true` succeeds (slirp accepts the TCP connection before sshd runs, so
/// only a whole command proves readiness).
pub fn wait_ssh(
    key: &Path,
    port: u16,
    qemu: &mut Running,
    timeout: Duration,
) -> anyhow::Result<()> {
    poll(
        "the guest to answer ssh",
        Wait::new(timeout, Duration::from_millis(200)),
        || {
            if let Ok(Some(st)) = qemu.child.try_wait() {
                anyhow::bail!("QEMU exited ({st}) before the guest answered ssh");
            }
            let r = exec::run(
                &Cmd::new("ssh")
                    .args(ssh_args(key, port))
                    .arg("true")
                    .timeout(Duration::from_secs(15)),
            );
            Ok(match r {
                Ok(_) => Poll::Ready(()),
                Err(e) => Poll::Pending(e.stderr_tail().to_string()),
            })
        },
    )
}

/// A running guest restored from the image's golden snapshot.
#[derive(Debug)]
pub struct Guest {
    /// Its directory (overlay, QMP socket, console log, QEMU log).
    pub dir: PathBuf,
    /// Host port of its ssh.
    pub ssh_port: u16,
    /// The key that logs in as root.
    pub key: PathBuf,
    qemu: Option<Running>,
    /// Leave the directory in place on drop (debugging).
    pub keep: bool,
}

impl Guest {
    /// Restores a guest into `dir` (created; a short path): overlay on the golden disk, QEMU
    /// with `-incoming`, `cont`, then ssh, the host's clock and fresh entropy. Ready in ~3 s.
    pub fn start(image: &Image, dir: &Path, cloud_relay: Option<String>) -> anyhow::Result<Guest> {
        let started = Instant::now();
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let overlay = dir.join("root.qcow2");
        image.overlay_on_golden(&overlay)?;
        // A port taken between the probe and QEMU's bind makes QEMU exit: try a few.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let inst = Instance {
                overlay: &overlay,
                dir,
                ssh_port: port,
                cloud_relay: cloud_relay.clone(),
            };
            let args = machine_args(image.dir(), &inst);
            let mut guest = Guest {
                dir: dir.to_path_buf(),
                ssh_port: port,
                key: image.key(),
                qemu: Some(spawn_qemu(&args, dir, Some(&image.golden_state()))?),
                keep: false,
            };
            match guest.resume() {
                Ok(()) => {
                    tracing::info!(
                        "guest {} ready in {:.1}s",
                        dir.display(),
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(guest);
                }
                Err(e) => {
                    guest.keep = true; // the loop reuses the directory
                    guest.stop();
                    last = Some(e.context(format!(
                        "QEMU log: {}",
                        std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default()
                    )));
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn resume(&mut self) -> anyhow::Result<()> {
        let qemu = self.qemu.as_mut().expect("just started");
        {
            let mut q = Qmp::connect(&self.dir.join("qmp.sock"), QMP_CONNECT)?;
            // The incoming migration finishes before QEMU accepts `cont`.
            poll(
                "the golden state to load",
                Wait::new(Duration::from_secs(60), Duration::from_millis(50)),
                || {
                    let st = q.execute("query-status", json!({}))?;
                    Ok(match st["status"].as_str() {
                        Some("inmigrate") => Poll::Pending("inmigrate".into()),
                        _ => Poll::Ready(()),
                    })
                },
            )?;
            q.execute("cont", json!({}))?;
        }
        wait_ssh(&self.key, self.ssh_port, qemu, READY_TIMEOUT)?;
        // The clock is frozen at snapshot time and every guest shares the golden's entropy:
        // LVM UUIDs must not collide when a VG moves between guests.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let seed: [u8; 64] = rand::random();
        let reseed = format!(
            "date -s @{now} >/dev/null && perl -e 'open(my $f, \">\", \"/dev/urandom\") or die; \
             print $f pack(\"H*\", $ARGV[0]); close $f; open($f, \"<\", \"/dev/urandom\") or die; \
             ioctl($f, 0x5207, 0) or die \"reseed: $!\"' {}",
            hex::encode(seed)
        );
        self.ssh(&reseed)?;
        Ok(())
    }

    /// Runs `script` in the guest with `sh -c` (ssh joins and re-parses: quote what you pass).
    pub fn ssh(&self, script: &str) -> anyhow::Result<exec::Output> {
        Ok(exec::run(
            &Cmd::new("ssh")
                .args(ssh_args(&self.key, self.ssh_port))
                .arg(script)
                .timeout(Duration::from_secs(300)),
        )?)
    }

    /// A QMP connection to this guest (one client at a time).
    pub fn qmp(&self) -> anyhow::Result<Qmp> {
        Qmp::connect(&self.qmp_socket(), QMP_CONNECT)
    }

    /// Its QMP socket.
    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }

    /// QEMU's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.qemu.as_ref().map(|r| r.child.id())
    }

    /// Kills QEMU now (the "host died" fault): SIGKILL to its process group.
    pub fn kill(&mut self) {
        if let Some(mut q) = self.qemu.take() {
            q.kill();
        }
    }

    fn stop(&mut self) {
        self.kill();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Hot-plugs a read-only raw image as virtio-blk with serial `serial` (the guest sees
/// `/dev/disk/by-id/virtio-<serial>`; the product's SCSI scan never does).
pub fn plug_readonly_disk(qmp: &mut Qmp, file: &Path, serial: &str) -> anyhow::Result<()> {
    qmp.execute(
        "blockdev-add",
        json!({
            "driver": "raw",
            "node-name": format!("ro-{serial}"),
            "read-only": true,
            "file": {"driver": "file", "filename": file, "read-only": true},
        }),
    )?;
    qmp.execute(
        "device_add",
        json!({
            "driver": "virtio-blk-pci",
            "drive": format!("ro-{serial}"),
            "id": format!("ro-{serial}"),
            "serial": serial,
        }),
    )?;
    Ok(())
}

/// Builds the tools disk: an ext4 image holding the product binary, stripped of debug info
/// (the debug build is ~280 MB; the guest needs the code only).
pub fn build_tools_disk(binary: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let content = dir.join("tools");
    std::fs::create_dir_all(&content)?;
    let exe = content.join("one-bsud");
    exec::run(
        &Cmd::new("objcopy")
            .arg("--strip-debug")
            .arg(binary)
            .arg(&exe)
            .timeout(Duration::from_secs(120)),
    )?;
    let size = std::fs::metadata(&exe)?.len();
    let img = dir.join("tools.img");
    let f = std::fs::File::create(&img)?;
    f.set_len((size + size / 4 + (16 << 20)).next_multiple_of(1 << 20))?;
    drop(f);
    exec::run(
        &Cmd::new("mke2fs")
            .args(["-q", "-t", "ext4", "-O", "^has_journal", "-d"])
            .arg(&content)
            .arg(&img)
            .timeout(Duration::from_secs(120)),
    )?;
    std::fs::remove_dir_all(&content)?;
    Ok(img)
}
