//! Block devices on the host: finding a linked BSU by its by-id name, listing the BSUs the host
//! sees, and the checks made before a device becomes a PV.
//!
//! A BSU linked as `/dev/xvd<x>` appears as `<dev_dir>/scsi-0QEMU_QEMU_HARDDISK_sd<x>`, a link
//! to a kernel device whose name need not match (reference §D.2). The link is the identity; the
//! literal `/dev/xvd<x>` is a fallback for images that create it, and only in production (in a
//! testbed it would be the machine's own disk). Unlike bsud, device names are never derived from
//! what is absent under /dev, and every wait has a deadline.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{fail, ErrorKind};
use crate::lvm::Lvm;
use crate::wait::{poll, Poll, Wait};

use super::env::HostEnv;
use super::proto::{is_bsu_serial, BsuDeviceName, DeviceFound, BY_ID_PREFIX};

/// How much of a device is read to decide whether it ever held data: the label and metadata
/// area of a PV (even after pvremove) and the superblocks of common file systems live there.
pub const FRESH_PROBE_BYTES: usize = 1 << 20;

/// Whether `p` resolves to a block device.
fn is_block_device(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
}

/// Waits until the BSU linked as `name` is visible and returns the real device.
pub fn wait_device(
    env: &HostEnv,
    name: &BsuDeviceName,
    timeout: Duration,
) -> anyhow::Result<DeviceFound> {
    let link = env.dev_dir().join(name.by_id_name());
    let fallback = if env.dev_dir_set {
        None
    } else {
        name.literal_fallback().map(PathBuf::from)
    };
    let what = match &fallback {
        Some(f) => format!("device {name} ({} or {})", link.display(), f.display()),
        None => format!("device {name} ({})", link.display()),
    };
    let found = |path: PathBuf, via: &str| DeviceFound {
        device: name.to_string(),
        serial: name.serial(),
        path: path.display().to_string(),
        via: via.to_string(),
    };
    poll(
        &what,
        Wait::new(timeout, Duration::from_millis(200)),
        || {
            if std::fs::symlink_metadata(&link).is_ok() {
                return match std::fs::canonicalize(&link) {
                    Ok(real) if is_block_device(&real) => Ok(Poll::Ready(found(real, "by-id"))),
                    Ok(real) => Ok(Poll::Pending(format!(
                        "{} points at {}, not a block device",
                        link.display(),
                        real.display()
                    ))),
                    Err(e) => Ok(Poll::Pending(format!(
                        "{} is dangling: {e}",
                        link.display()
                    ))),
                };
            }
            if let Some(f) = &fallback {
                if is_block_device(f) {
                    return Ok(Poll::Ready(found(f.clone(), "literal")));
                }
            }
            Ok(Poll::Pending("absent".into()))
        },
    )
}

/// A by-id BSU link present on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByIdLink {
    /// `sdb`.
    pub serial: String,
    /// The link.
    pub link: PathBuf,
    /// What it resolves to.
    pub path: PathBuf,
}

/// Every BSU link in the by-id directory that resolves (partitions and other disks skipped).
pub fn bsu_links(env: &HostEnv) -> anyhow::Result<Vec<ByIdLink>> {
    let dir = env.dev_dir();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow::anyhow!("cannot list {}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(serial) = name.strip_prefix(BY_ID_PREFIX) else {
            continue;
        };
        if !is_bsu_serial(serial) {
            continue;
        }
        match std::fs::canonicalize(entry.path()) {
            Ok(path) => out.push(ByIdLink {
                serial: serial.to_string(),
                link: entry.path(),
                path,
            }),
            Err(e) => tracing::debug!("skipping dangling {}: {e}", entry.path().display()),
        }
    }
    out.sort_by(|a, b| a.serial.cmp(&b.serial));
    Ok(out)
}

/// The real path of a device the caller named; an error naming it when it does not exist.
pub fn resolve(dev: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(dev).map_err(|e| {
        fail(
            ErrorKind::Failed,
            format!("device {} is not there: {e}", dev.display()),
        )
    })
}

/// The canonical form of an LVM PV name, for comparing with a resolved device (a missing PV
/// or a name that no longer resolves compares as itself).
pub fn canonical(name: &str) -> PathBuf {
    std::fs::canonicalize(name).unwrap_or_else(|_| PathBuf::from(name))
}

#[derive(Deserialize)]
struct WipefsReport {
    #[serde(default)]
    signatures: Vec<WipefsSignature>,
}

#[derive(Deserialize)]
struct WipefsSignature {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    offset: String,
}

/// The signatures (file systems, partition tables, RAID, LVM…) `wipefs -n` finds on `dev`, as
/// `type@offset` strings.
pub fn signatures(lvm: &Lvm, dev: &Path) -> anyhow::Result<Vec<String>> {
    let out = lvm.run_tool(
        "wipefs",
        &[std::ffi::OsStr::new("-n"), "-J".as_ref(), dev.as_os_str()],
    )?;
    if out.iter().all(u8::is_ascii_whitespace) {
        // Older util-linux prints nothing at all when there is no signature.
        return Ok(Vec::new());
    }
    let r: WipefsReport = serde_json::from_slice(&out)
        .map_err(|e| anyhow::anyhow!("wipefs -n -J {}: unexpected output: {e}", dev.display()))?;
    Ok(r.signatures
        .into_iter()
        .map(|s| format!("{}@{}", s.kind, s.offset))
        .collect())
}

/// Whether the first [`FRESH_PROBE_BYTES`] of `dev` are all zero. A device that cannot be read
/// counts as used: the answer only ever saves zeroing work, so doubt must cost work, not data.
pub fn reads_all_zero_at_start(dev: &Path) -> bool {
    let mut buf = vec![0u8; FRESH_PROBE_BYTES];
    let res = File::open(dev).and_then(|mut f| {
        let mut filled = 0;
        while filled < buf.len() {
            match f.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    });
    match res {
        Ok(n) => buf[..n].iter().all(|&b| b == 0),
        Err(e) => {
            tracing::warn!("cannot read {} to check it is unused: {e}", dev.display());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn env_with(dev_dir: &Path) -> HostEnv {
        HostEnv::from_env(&Env::from_pairs([(
            "BSUD_DEV_DIR",
            dev_dir.to_str().unwrap(),
        )]))
    }

    #[test]
    fn waits_for_the_link_and_resolves_it() {
        let d = tempfile::tempdir().unwrap();
        let env = env_with(d.path());
        let name: BsuDeviceName = "/dev/xvdc".parse().unwrap();
        let link = d.path().join("scsi-0QEMU_QEMU_HARDDISK_sdc");
        let l2 = link.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            // A character device: present, but not a disk.
            std::os::unix::fs::symlink("/dev/loop-control", &l2).unwrap();
        });
        let e = wait_device(&env, &name, Duration::from_secs(1)).unwrap_err();
        t.join().unwrap();
        // loop-control is a char device: the wait must not accept it.
        assert_eq!(crate::error::exit_code(&e), 5);
        assert!(e.to_string().contains("not a block device"), "{e}");
        std::fs::remove_file(&link).unwrap();
        let loop0 = (0..8)
            .map(|i| PathBuf::from(format!("/dev/loop{i}")))
            .find(|p| is_block_device(p));
        let Some(block) = loop0 else { return };
        std::os::unix::fs::symlink(&block, &link).unwrap();
        let f = wait_device(&env, &name, Duration::from_secs(3)).unwrap();
        assert_eq!((f.serial.as_str(), f.via.as_str()), ("sdc", "by-id"));
        assert_eq!(f.path, block.display().to_string());
    }

    #[test]
    fn deadline_names_what_was_waited_for_and_no_testbed_fallback() {
        let d = tempfile::tempdir().unwrap();
        let env = env_with(d.path());
        let e = wait_device(
            &env,
            &"/dev/xvdq".parse().unwrap(),
            Duration::from_millis(300),
        )
        .unwrap_err();
        let m = e.to_string();
        assert!(m.contains("scsi-0QEMU_QEMU_HARDDISK_sdq"), "{m}");
        assert!(!m.contains(" or /dev/xvdq"), "{m}");
        let prod = HostEnv::from_env(&Env::from_pairs([(
            "BSUD_HOST_ROOT",
            d.path().to_str().unwrap(),
        )]));
        let e = wait_device(
            &prod,
            &"/dev/xvdq".parse().unwrap(),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(e.to_string().contains("or /dev/xvdq"), "{e}");
    }

    #[test]
    fn lists_only_bsu_links() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("disk");
        std::fs::write(&target, b"").unwrap();
        for n in [
            "scsi-0QEMU_QEMU_HARDDISK_sdb",
            "scsi-0QEMU_QEMU_HARDDISK_sdb-part1",
            "wwn-0x5000",
            "scsi-0QEMU_QEMU_HARDDISK_sdc",
        ] {
            std::os::unix::fs::symlink(&target, d.path().join(n)).unwrap();
        }
        std::os::unix::fs::symlink(
            "/nonexistent",
            d.path().join("scsi-0QEMU_QEMU_HARDDISK_sdd"),
        )
        .unwrap();
        let links = bsu_links(&env_with(d.path())).unwrap();
        let serials: Vec<_> = links.iter().map(|l| l.serial.as_str()).collect();
        assert_eq!(serials, ["sdb", "sdc"]);
        assert_eq!(links[0].path, target.canonicalize().unwrap());
        assert!(bsu_links(&env_with(&d.path().join("absent")))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn zero_probe() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("v");
        let file = File::create(&f).unwrap();
        file.set_len(4 << 20).unwrap();
        assert!(reads_all_zero_at_start(&f));
        std::fs::write(&f, b"\0\0LABELONE").unwrap();
        assert!(!reads_all_zero_at_start(&f));
        assert!(!reads_all_zero_at_start(&d.path().join("absent")));
    }
}
