//! BSU links of QEMU hosts: the simulated cloud's LinkVolume / UnlinkVolume effects on a host
//! whose root directory holds a QMP socket ([`is_qemu_host`]).
//!
//! - Attach: `blockdev-add` of the volume's sparse file (raw, discards passed through to the
//!   file) and `device_add scsi-hd` on the guest's virtio-scsi bus with serial `sd<x>`, so the
//!   guest's udev names it `/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_sd<x>` exactly as Outscale
//!   does; the kernel name (`/dev/sdX`) follows plug order, not the serial.
//! - Detach: `device_del`, wait for `DEVICE_DELETED` (deadline), `blockdev-del`.
//!
//! Invariants:
//! - Both are idempotent: a device already there with the same file is success, a device or
//!   node already gone is success.
//! - One QMP conversation at a time per host (`<root>/qmp.lock`): QEMU serves one client.
//! - A host whose QEMU is gone (killed: the "host died" fault) holds no volume: detaching
//!   from it succeeds at once, and QEMU's own image locks are gone with the process.
//! - Attaching a file another running guest holds fails (QEMU's image locking), as the cloud
//!   refuses a second link; the cloud retries the effect.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

use super::qmp::{error_class, Qmp};
use crate::lock::FileLock;
use crate::sim::hostview::by_id_name;

/// The socket a QEMU host's root directory holds.
pub const QMP_SOCKET: &str = "qmp.sock";
const LOCK_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const UNPLUG_TIMEOUT: Duration = Duration::from_secs(30);
const BY_ID_PREFIX: &str = "scsi-0QEMU_QEMU_HARDDISK_";

/// Whether the simulated host at `root` is a QEMU guest (rather than a host view on loops).
pub fn is_qemu_host(root: &Path) -> bool {
    root.join(QMP_SOCKET).exists()
}

/// `/dev/xvdb` → `sdb`, the disk serial.
fn serial(device: &str) -> anyhow::Result<String> {
    let link = by_id_name(device)?;
    Ok(link
        .strip_prefix(BY_ID_PREFIX)
        .expect("by_id_name uses the prefix")
        .to_string())
}

fn names(device: &str) -> anyhow::Result<(String, String)> {
    let s = serial(device)?;
    Ok((format!("bsu-{s}"), s))
}

/// Device ids plugged into the machine by hand (`/machine/peripheral`).
fn peripherals(q: &mut Qmp) -> anyhow::Result<Vec<String>> {
    let list = q.execute("qom-list", json!({"path": "/machine/peripheral"}))?;
    Ok(list
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// The file behind block node `node`, if the node exists.
fn node_file(q: &mut Qmp, node: &str) -> anyhow::Result<Option<PathBuf>> {
    let nodes = q.execute("query-named-block-nodes", json!({"flat": true}))?;
    Ok(nodes.as_array().and_then(|a| {
        a.iter()
            .find(|n| n["node-name"].as_str() == Some(node))
            .and_then(|n| n["file"].as_str().map(PathBuf::from))
    }))
}

fn lock(root: &Path) -> anyhow::Result<FileLock> {
    FileLock::acquire(root, "qmp", LOCK_TIMEOUT)
}

/// Plugs `file` into the guest at `root` as `device` (`/dev/xvdX`). Idempotent.
pub fn attach(root: &Path, device: &str, file: &Path) -> anyhow::Result<()> {
    let (id, serial) = names(device)?;
    let file = file
        .canonicalize()
        .with_context(|| format!("volume file {}", file.display()))?;
    let _lock = lock(root)?;
    let mut q = Qmp::connect(&root.join(QMP_SOCKET), CONNECT_TIMEOUT)?;
    match node_file(&mut q, &id)? {
        Some(f) if f == file => {}
        Some(f) => anyhow::bail!(
            "{device} of {} already holds {}, not {}",
            root.display(),
            f.display(),
            file.display()
        ),
        None => {
            q.execute(
                "blockdev-add",
                json!({
                    "driver": "raw",
                    "node-name": id,
                    "discard": "unmap",
                    "file": {"driver": "file", "filename": file, "discard": "unmap"},
                }),
            )
            .with_context(|| format!("opening {} for {}", file.display(), root.display()))?;
        }
    }
    if !peripherals(&mut q)?.contains(&id) {
        q.execute(
            "device_add",
            json!({
                "driver": "scsi-hd",
                "bus": "scsi0.0",
                "drive": id,
                "id": id,
                "serial": serial,
            }),
        )?;
    }
    tracing::debug!(
        "plugged {} into {} as {device}",
        file.display(),
        root.display()
    );
    Ok(())
}

/// Unplugs `device` from the guest at `root`. Idempotent; a dead guest holds nothing.
pub fn detach(root: &Path, device: &str) -> anyhow::Result<()> {
    let (id, _) = names(device)?;
    let _lock = lock(root)?;
    let mut q = match Qmp::connect(&root.join(QMP_SOCKET), Duration::ZERO) {
        Ok(q) => q,
        Err(e) if guest_is_gone(&e) => {
            tracing::info!("{}: QEMU is gone; {device} is detached", root.display());
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if peripherals(&mut q)?.contains(&id) {
        match q.execute("device_del", json!({"id": id})) {
            Ok(_) => {}
            Err(e) if error_class(&e).is_some_and(|c| c.class == "DeviceNotFound") => {}
            Err(e) => return Err(e),
        }
        let id2 = id.clone();
        q.wait_event("DEVICE_DELETED", UNPLUG_TIMEOUT, move |ev: &Value| {
            ev["event"] == "DEVICE_DELETED" && ev["data"]["device"].as_str() == Some(&id2)
        })?;
    }
    if node_file(&mut q, &id)?.is_some() {
        q.execute("blockdev-del", json!({"node-name": id}))?;
    }
    tracing::debug!("unplugged {device} from {}", root.display());
    Ok(())
}

/// A connection refused (socket left by a killed QEMU) or a missing socket.
fn guest_is_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_follow_the_outscale_device_name() {
        assert_eq!(
            names("/dev/xvdb").unwrap(),
            ("bsu-sdb".into(), "sdb".into())
        );
        assert_eq!(names("/dev/xvdab").unwrap().1, "sdab");
        assert!(names("/dev/vda").is_err());
    }
}
