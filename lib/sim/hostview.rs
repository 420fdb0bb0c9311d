//! A simulated host's view: its root directory, private LVM configuration and device links.
//!
//! Layout (docs/ARCHITECTURE.md, "Simulated host layout"), `<root>` being the host's directory:
//!
//! ```text
//! <root>/etc/lvm/lvm.conf         activation = 0; the filter accepts exactly the loop devices
//!                                 linked in <root>/dev/disk/by-id, nothing else
//! <root>/run/lvm/                 LVM locking dir
//! <root>/run/hostview.lock        serialises attach/detach on this host
//! <root>/dev/disk/by-id/          scsi-0QEMU_QEMU_HARDDISK_sd<x> -> /dev/loopN
//! <root>/lv/                      lvfs mount point (<vg>/<lv> files)
//! <root>/var/lib/one/datastores/  datastore and VM directories
//! <root>/var/lock/one/bsud/       host locks
//! ```
//!
//! Invariants:
//! - A volume (a sparse file) is attached to a host by a loop device over the file and a by-id
//!   link to it; the LVM filter always accepts exactly the loop devices the by-id links name, so
//!   the host's LVM sees its own attached volumes and never another host's.
//! - At most one loop device backs a volume file: attach reuses one that already does (a crashed
//!   run, or the previous host when a detach failed half-way) instead of stacking a second.
//! - [`attach_volume`] and [`detach_volume`] are idempotent and serialised per host by a lock
//!   file; the filter is rewritten atomically (rename), so a concurrent LVM command reads either
//!   the old or the new configuration, never half of one.
//!
//! What the testbed does **not** reproduce: kernel activation and device-mapper (this kernel has
//! none: LVs never get `/dev/<vg>/<lv>` nodes; lvfs serves their bytes instead, linear segments
//! only), thin pools and snapshots (no copy-on-write), real udev (links are written by
//! [`attach_volume`] synchronously, not by rules after a delay), the zeroing of a new LV's first
//! bytes that `lvcreate` does on a real host (without activation it cannot), the refusal to
//! remove an LV that is open, and device names: a volume shows up as a loop device, not as
//! `/dev/sdX`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::error::{fail, ErrorKind};
use crate::exec::{self, Cmd};
use crate::lock::FileLock;
use crate::wait::{poll, Poll, Wait};

/// Prefix of the by-id name of an attached BSU, followed by `sd<suffix>`.
pub const BY_ID_PREFIX: &str = "scsi-0QEMU_QEMU_HARDDISK_";

/// How long attach/detach wait for another attach/detach on the same host.
const HOST_LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// Deadline of one `losetup`.
const LOSETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a detach waits for a busy loop device to be released.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// A simulated host's directory tree and the environment that makes commands run "on" it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    root: PathBuf,
    metadata_url: Option<String>,
}

impl HostView {
    /// The view of an existing (or yet to be created) host root. Nothing is touched.
    pub fn new(root: impl Into<PathBuf>) -> HostView {
        HostView {
            root: root.into(),
            metadata_url: None,
        }
    }

    /// Creates the host tree and its private lvm.conf (idempotent: an existing host keeps its
    /// links, and the filter is rewritten from them).
    pub fn create(root: impl Into<PathBuf>) -> anyhow::Result<HostView> {
        let root: PathBuf = root.into();
        check_conf_safe(&root)?;
        std::fs::create_dir_all(&root)
            .with_context(|| format!("creating host root {}", root.display()))?;
        let root = root
            .canonicalize()
            .with_context(|| format!("resolving host root {}", root.display()))?;
        check_conf_safe(&root)?;
        let view = HostView::new(root);
        let _lock = view.lock()?;
        view.ensure_tree()?;
        view.write_lvm_conf()?;
        Ok(view)
    }

    /// Sets the metadata URL exported as `BSUD_METADATA_URL` by [`HostView::env`].
    pub fn with_metadata_url(mut self, url: impl Into<String>) -> HostView {
        self.metadata_url = Some(url.into());
        self
    }

    /// The host root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `LVM_SYSTEM_DIR` of this host.
    pub fn lvm_dir(&self) -> PathBuf {
        self.root.join("etc/lvm")
    }

    /// The private lvm.conf.
    pub fn lvm_conf(&self) -> PathBuf {
        self.lvm_dir().join("lvm.conf")
    }

    /// Where attached volumes appear under their by-id names.
    pub fn dev_dir(&self) -> PathBuf {
        self.root.join("dev/disk/by-id")
    }

    /// Where lvfs serves `<vg>/<lv>` files.
    pub fn lv_dir(&self) -> PathBuf {
        self.root.join("lv")
    }

    /// The host's lock directory (`BSUD_LOCK_DIR`).
    pub fn lock_dir(&self) -> PathBuf {
        self.root.join("var/lock/one/bsud")
    }

    /// Runtime files of the simulation (LVM locks, lvfs pid and log).
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// OpenNebula's datastore directory on this host.
    pub fn datastores_dir(&self) -> PathBuf {
        self.root.join("var/lib/one/datastores")
    }

    /// The environment of a command running on this host (see docs/ARCHITECTURE.md, "Host
    /// view"). `BSUD_SSH_COMMAND` is added by the ssh transport, which knows its own command.
    pub fn env(&self) -> Vec<(String, String)> {
        let s = |p: PathBuf| p.to_string_lossy().into_owned();
        let mut env = vec![
            ("BSUD_HOST_ROOT".to_string(), s(self.root.clone())),
            ("BSUD_DEV_DIR".to_string(), s(self.dev_dir())),
            ("BSUD_LV_DIR".to_string(), s(self.lv_dir())),
            ("BSUD_LOCK_DIR".to_string(), s(self.lock_dir())),
            ("LVM_SYSTEM_DIR".to_string(), s(self.lvm_dir())),
            ("LVM_SUPPRESS_FD_WARNINGS".to_string(), "1".to_string()),
        ];
        if let Some(url) = &self.metadata_url {
            env.push(("BSUD_METADATA_URL".to_string(), url.clone()));
        }
        env
    }

    /// An LVM (or any) command running with this host's environment.
    pub fn cmd(&self, program: &str) -> Cmd {
        self.env()
            .into_iter()
            .fold(Cmd::new(program), |c, (k, v)| c.env(k, v))
    }

    /// The volumes attached to this host: (by-id link name, loop device), sorted by name.
    pub fn attached(&self) -> anyhow::Result<Vec<(String, String)>> {
        let dir = self.dev_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(BY_ID_PREFIX) {
                continue;
            }
            if let Ok(target) = std::fs::read_link(entry.path()) {
                out.push((name, target.to_string_lossy().into_owned()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Detaches every volume of this host (teardown): links removed, filter emptied, loop
    /// devices released. Errors are collected so one stuck device does not keep the others.
    pub fn detach_all(&self) -> anyhow::Result<()> {
        let _lock = self.lock()?;
        let attached = self.attached()?;
        let mut errors = Vec::new();
        for (name, _) in &attached {
            let link = self.dev_dir().join(name);
            if let Err(e) = std::fs::remove_file(&link) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    errors.push(format!("removing {}: {e}", link.display()));
                }
            }
        }
        if let Err(e) = self.write_lvm_conf() {
            errors.push(format!("{e:#}"));
        }
        for (_, loop_dev) in &attached {
            if let Err(e) = losetup_detach(loop_dev) {
                errors.push(format!("{e:#}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "detaching the volumes of host {}: {}",
                self.root.display(),
                errors.join("; ")
            ))
        }
    }

    fn lock(&self) -> anyhow::Result<FileLock> {
        FileLock::acquire(&self.run_dir(), "hostview", HOST_LOCK_TIMEOUT)
    }

    fn ensure_tree(&self) -> anyhow::Result<()> {
        for d in [
            self.lvm_dir(),
            self.run_dir().join("lvm"),
            self.dev_dir(),
            self.lv_dir(),
            self.datastores_dir(),
            self.lock_dir(),
        ] {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(())
    }

    /// Rewrites lvm.conf so its filter accepts exactly the loop devices linked in by-id.
    fn write_lvm_conf(&self) -> anyhow::Result<()> {
        let mut loops: Vec<String> = self
            .attached()?
            .into_iter()
            .map(|(_, target)| target)
            .filter(|t| is_loop_device_path(t))
            .collect();
        loops.sort();
        loops.dedup();
        let text = lvm_conf_text(&self.root, &loops);
        let path = self.lvm_conf();
        let tmp = path.with_extension("conf.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
        Ok(())
    }
}

/// The private lvm.conf of a host whose filter accepts `loops` (e.g. `/dev/loop3`) only.
fn lvm_conf_text(root: &Path, loops: &[String]) -> String {
    let root = root.to_string_lossy();
    let mut filter: Vec<String> = loops.iter().map(|l| format!("\"a|^{l}$|\"")).collect();
    filter.push("\"r|.*|\"".to_string());
    let filter = filter.join(", ");
    format!(
        "# Written by bsud-sim for a simulated host; rewritten on every attach and detach.\n\
         # The filter accepts exactly the loop devices linked in {root}/dev/disk/by-id.\n\
         devices {{\n\
         \tdir = \"/dev\"\n\
         \tscan = [ \"/dev\" ]\n\
         \tfilter = [ {filter} ]\n\
         \tobtain_device_list_from_udev = 0\n\
         \texternal_device_info_source = \"none\"\n\
         \tuse_devicesfile = 0\n\
         \thints = \"none\"\n\
         \tmultipath_component_detection = 0\n\
         \tmd_component_detection = 0\n\
         \tfw_raid_component_detection = 0\n\
         }}\n\
         global {{\n\
         \tactivation = 0\n\
         \tlocking_dir = \"{root}/run/lvm\"\n\
         \tuse_lvmlockd = 0\n\
         \tuse_lvmpolld = 0\n\
         \tevent_activation = 0\n\
         \tsystem_id_source = \"none\"\n\
         }}\n\
         activation {{\n\
         \tudev_sync = 0\n\
         \tudev_rules = 0\n\
         \tmonitoring = 0\n\
         }}\n\
         backup {{\n\
         \tbackup = 0\n\
         \tarchive = 0\n\
         \tbackup_dir = \"{root}/etc/lvm/backup\"\n\
         \tarchive_dir = \"{root}/etc/lvm/archive\"\n\
         }}\n"
    )
}

/// The root ends up inside quoted lvm.conf strings: refuse what would break them.
fn check_conf_safe(root: &Path) -> anyhow::Result<()> {
    let s = root.to_string_lossy();
    if s.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        return Err(fail(
            ErrorKind::BadInput,
            format!("host root {s:?} contains a quote, backslash or control character"),
        ));
    }
    Ok(())
}

fn is_loop_device_path(p: &str) -> bool {
    p.strip_prefix("/dev/loop")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The by-id link name of an Outscale device name: `/dev/xvdb` → `scsi-0QEMU_QEMU_HARDDISK_sdb`
/// (Outscale keeps the requested suffix as the disk serial, with `xvd` read as `sd`).
pub fn by_id_name(device: &str) -> anyhow::Result<String> {
    let suffix = device
        .strip_prefix("/dev/xvd")
        .or_else(|| device.strip_prefix("/dev/sd"))
        .filter(|s| (1..=2).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase()));
    match suffix {
        Some(s) => Ok(format!("{BY_ID_PREFIX}sd{s}")),
        None => Err(fail(
            ErrorKind::BadInput,
            format!("invalid device name {device:?} (expected /dev/xvdX[X] or /dev/sdX[X])"),
        )),
    }
}

/// Attaches a volume file to a host as `device`: a loop device over the file (an existing one
/// is reused), the by-id link, the LVM filter. Idempotent; serialised per host.
pub fn attach_volume(host_root: &Path, device: &str, volume_file: &Path) -> anyhow::Result<()> {
    let link_name = by_id_name(device)?;
    let file = volume_file
        .canonicalize()
        .with_context(|| format!("volume file {}", volume_file.display()))?;
    if !file.is_file() {
        return Err(fail(
            ErrorKind::BadInput,
            format!("volume file {} is not a regular file", file.display()),
        ));
    }
    let view = HostView::create(host_root)?;
    let _lock = view.lock()?;
    let link = view.dev_dir().join(&link_name);
    let backing: Vec<String> = loops_backing(&file)?
        .into_iter()
        .filter(|d| !release_pending(d))
        .collect();
    let current = std::fs::read_link(&link)
        .ok()
        .map(|t| t.to_string_lossy().into_owned());
    let loop_dev = match current {
        Some(t) if backing.contains(&t) => t,
        _ => {
            let dev = match backing.first() {
                Some(d) => d.clone(),
                None => losetup_attach(&file)?,
            };
            replace_symlink(&dev, &link)?;
            dev
        }
    };
    // The same volume under another name is a leftover of an attach that was never undone.
    for (name, target) in view.attached()? {
        if name != link_name && target == loop_dev {
            let _ = std::fs::remove_file(view.dev_dir().join(&name));
        }
    }
    view.write_lvm_conf()?;
    tracing::debug!(
        "attached {} to {} as {device} ({loop_dev})",
        file.display(),
        view.root.display()
    );
    Ok(())
}

/// Detaches a volume file from a host: removes its by-id link(s), rewrites the filter, releases
/// the loop device(s) backing the file. Idempotent; serialised per host.
pub fn detach_volume(host_root: &Path, device: &str, volume_file: &Path) -> anyhow::Result<()> {
    let link_name = by_id_name(device)?;
    // The file may already be gone (DeleteVolume after a failed detach): the kernel then names
    // it "<path> (deleted)".
    let file = canonical_even_if_gone(volume_file);
    let deleted = format!("{} (deleted)", file.display());
    let backing: Vec<String> = list_loops()?
        .into_iter()
        .filter(|(_, back)| Path::new(back) == file || *back == deleted)
        .map(|(dev, _)| dev)
        .collect();
    let view = HostView::new(host_root.to_path_buf());
    if view.root.exists() {
        let _lock = view.lock()?;
        for (name, target) in view.attached()? {
            let ours = backing.contains(&target);
            // A link under this device name to a loop that backs nothing is stale too.
            let dead = name == link_name && loop_backing_file(&target).is_none();
            if ours || dead {
                let p = view.dev_dir().join(&name);
                std::fs::remove_file(&p).or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e).with_context(|| format!("removing {}", p.display()))
                    }
                })?;
            } else if name == link_name {
                tracing::warn!(
                    "{}: {name} links {target}, which does not back {}; left alone",
                    view.root.display(),
                    file.display()
                );
            }
        }
        view.write_lvm_conf()?;
    }
    for dev in &backing {
        losetup_detach(dev)?;
    }
    Ok(())
}

/// The canonical path of a file that may no longer exist (its directory is resolved).
fn canonical_even_if_gone(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    match (p.parent(), p.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .map(|d| d.join(name))
            .unwrap_or_else(|_| p.to_path_buf()),
        _ => p.to_path_buf(),
    }
}

/// Releases every loop device whose backing file lies under `dir` (teardown of a testbed or a
/// test: catches devices of a crashed attach that no by-id link names).
pub fn detach_loops_under(dir: &Path) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    for (dev, _) in loops_under(dir)? {
        if let Err(e) = losetup_detach(&dev) {
            errors.push(format!("{e:#}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{}", errors.join("; ")))
    }
}

/// Loop devices whose backing file lies under `dir` (also when the file was deleted):
/// (device, backing file).
pub fn loops_under(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    Ok(list_loops()?
        .into_iter()
        .filter(|(_, back)| {
            Path::new(back.strip_suffix(" (deleted)").unwrap_or(back)).starts_with(&dir)
        })
        .collect())
}

/// The file behind a loop device (`/dev/loop3` → its backing file), `None` when the device does
/// not exist or backs nothing.
pub fn loop_backing_file(loop_dev: &str) -> Option<PathBuf> {
    let name = Path::new(loop_dev).file_name()?.to_str()?;
    let text = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    let text = text.trim_end_matches('\n');
    (!text.is_empty()).then(|| PathBuf::from(text))
}

/// Loop devices backing exactly this (canonical) file path.
fn loops_backing(file: &Path) -> anyhow::Result<Vec<String>> {
    let mut devs: Vec<String> = list_loops()?
        .into_iter()
        .filter(|(_, back)| Path::new(back) == file)
        .map(|(dev, _)| dev)
        .collect();
    devs.sort();
    Ok(devs)
}

/// Every loop device in use: (device, backing file as the kernel names it).
fn list_loops() -> anyhow::Result<Vec<(String, String)>> {
    #[derive(serde::Deserialize)]
    struct Listing {
        loopdevices: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        name: String,
        #[serde(rename = "back-file")]
        back_file: Option<String>,
    }
    let out = exec::run(
        &Cmd::new("losetup")
            .args(["--list", "--json", "--output", "NAME,BACK-FILE"])
            .timeout(LOSETUP_TIMEOUT),
    )?;
    let text = out.stdout_str();
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let listing: Listing =
        serde_json::from_str(&text).context("parsing the output of losetup --list --json")?;
    Ok(listing
        .loopdevices
        .into_iter()
        .filter_map(|e| e.back_file.map(|b| (e.name, b)))
        .collect())
}

fn losetup_attach(file: &Path) -> anyhow::Result<String> {
    let out = exec::run(
        &Cmd::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .timeout(LOSETUP_TIMEOUT),
    )?;
    let dev = out.stdout_str().trim().to_string();
    if !is_loop_device_path(&dev) {
        anyhow::bail!(
            "losetup --find --show {} printed {dev:?}, not a loop device",
            file.display()
        );
    }
    Ok(dev)
}

/// `losetup -d`; a device that is already free is fine. A device some other process has open
/// (a scan by the machine's own LVM, blkid…) is only marked for release by the kernel: wait a
/// little for it to go, so a detached volume is really detached when this returns.
fn losetup_detach(dev: &str) -> anyhow::Result<()> {
    // Tests run in parallel: once released, the same device name may back another test's
    // file within milliseconds. "Released" therefore means "no longer backs what it backed".
    let Some(backing) = loop_backing_file(dev) else {
        return Ok(());
    };
    let still_ours = || loop_backing_file(dev).is_some_and(|b| b == backing);
    if let Err(e) = exec::run(
        &Cmd::new("losetup")
            .arg("-d")
            .arg(dev)
            .timeout(LOSETUP_TIMEOUT),
    ) {
        if still_ours() {
            return Err(e.into());
        }
    }
    let gone = poll(
        &format!("{dev} to be released"),
        Wait::new(RELEASE_TIMEOUT, Duration::from_millis(20)),
        || {
            Ok(if still_ours() && !release_pending(dev) {
                Poll::Pending("still set up".into())
            } else if still_ours() {
                Poll::Pending("still open somewhere".into())
            } else {
                Poll::Ready(())
            })
        },
    );
    if let Err(e) = gone {
        tracing::warn!("{e:#}; the kernel releases it at the last close");
    }
    Ok(())
}

/// Whether a loop device is only waiting for its last user to close it before it goes away
/// (`losetup -d` of a busy device): never reuse such a device.
fn release_pending(dev: &str) -> bool {
    let Some(name) = Path::new(dev).file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    std::fs::read_to_string(format!("/sys/block/{name}/loop/autoclear"))
        .is_ok_and(|s| s.trim() == "1")
}

/// Points `link` at `target` atomically (a new link renamed over the old one).
fn replace_symlink(target: &str, link: &Path) -> anyhow::Result<()> {
    let tmp = link.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    std::fs::rename(&tmp, link).with_context(|| format!("writing {}", link.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_id_names_follow_outscale_serials() {
        assert_eq!(
            by_id_name("/dev/xvdb").unwrap(),
            "scsi-0QEMU_QEMU_HARDDISK_sdb"
        );
        assert_eq!(
            by_id_name("/dev/xvdba").unwrap(),
            "scsi-0QEMU_QEMU_HARDDISK_sdba"
        );
        assert_eq!(
            by_id_name("/dev/sdc").unwrap(),
            "scsi-0QEMU_QEMU_HARDDISK_sdc"
        );
        for bad in [
            "/dev/xvd",
            "/dev/xvdabc",
            "/dev/xvdB",
            "xvdb",
            "/dev/xvdb/../x",
            "/dev/vdb",
        ] {
            let e = by_id_name(bad).unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 2, "{bad}");
        }
    }

    #[test]
    fn filter_accepts_exactly_the_given_loops() {
        let text = lvm_conf_text(
            Path::new("/tb/h1"),
            &["/dev/loop3".into(), "/dev/loop12".into()],
        );
        assert!(
            text.contains(r#"filter = [ "a|^/dev/loop3$|", "a|^/dev/loop12$|", "r|.*|" ]"#),
            "{text}"
        );
        assert!(text.contains("activation = 0"));
        assert!(text.contains(r#"locking_dir = "/tb/h1/run/lvm""#));
        let empty = lvm_conf_text(Path::new("/tb/h1"), &[]);
        assert!(empty.contains(r#"filter = [ "r|.*|" ]"#), "{empty}");
    }

    #[test]
    fn loop_paths_are_recognised() {
        assert!(is_loop_device_path("/dev/loop0"));
        assert!(is_loop_device_path("/dev/loop127"));
        assert!(!is_loop_device_path("/dev/loop"));
        assert!(!is_loop_device_path("/dev/loop-control"));
        assert!(!is_loop_device_path("/dev/sda"));
    }

    #[test]
    fn create_makes_the_tree_and_an_lvm_config_lvm_accepts() {
        let d = tempfile::tempdir().unwrap();
        let v = HostView::create(d.path().join("h")).unwrap();
        for p in [v.dev_dir(), v.lv_dir(), v.lock_dir(), v.datastores_dir()] {
            assert!(p.is_dir(), "{}", p.display());
        }
        // Idempotent.
        let v2 = HostView::create(v.root()).unwrap();
        assert_eq!(v, v2);
        // LVM itself must accept every setting (an unknown key is only a warning, so look).
        let out = exec::run(&v.cmd("lvmconfig").arg("--validate")).unwrap();
        let all = format!(
            "{}{}",
            out.stdout_str(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.to_lowercase().contains("unknown"), "{all}");
        let env = v.with_metadata_url("http://m").env();
        assert!(env.contains(&("BSUD_METADATA_URL".into(), "http://m".into())));
        assert!(env.iter().any(|(k, _)| k == "LVM_SYSTEM_DIR"));
    }

    #[test]
    fn roots_that_would_break_lvm_conf_are_refused() {
        let d = tempfile::tempdir().unwrap();
        assert!(HostView::create(d.path().join("a\"b")).is_err());
    }
}
