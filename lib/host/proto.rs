//! The host agent protocol, defined once for both sides.
//!
//! A request is a clap argument struct: the agent parses it from argv, the frontend's client
//! turns the same struct back into argv with [`Request::args`] (a unit test parses every
//! request's `args()` back and compares, so the two directions cannot drift). A response is a
//! serde struct: the agent prints it as one JSON document, the client deserialises it.
//!
//! Values are validated by their types ([`VgName`], [`LvName`], [`Tag`], [`DevicePath`],
//! [`BsuDeviceName`]) when clap parses them, so a bad value is a usage error (exit 2) before
//! anything runs. Flags are sent as single `--flag=value` words, so no value can ever be read
//! as another flag.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{fail, ErrorKind};
use crate::lvm::{DevicePath, Lv, LvName, Pv, Tag, Vg, VgName};

/// Prefix of the by-id name under which an attached BSU appears (`…_sd<x>`).
pub const BY_ID_PREFIX: &str = "scsi-0QEMU_QEMU_HARDDISK_";

/// One agent operation: its name, its flags and the type of its answer.
pub trait Request {
    /// The subcommand (`lv-create`).
    const OP: &'static str;
    /// Whether it takes the VG lock (the client then allows the lock wait in its deadline).
    const LOCKS: bool;
    /// Whether it moves data (its deadline is the transfer deadline, not the command one).
    const MOVES_DATA: bool = false;
    /// The JSON answer.
    type Response: Serialize + DeserializeOwned;
    /// The flags, each one `--flag=value` word (or a bare `--flag`).
    fn args(&self) -> Vec<String>;
    /// Waits the operation does besides commands and the lock (device nodes), for the
    /// client's deadline.
    fn waits(&self) -> Duration {
        Duration::ZERO
    }
}

fn flag(name: &str, v: impl fmt::Display) -> String {
    format!("--{name}={v}")
}

/// Limits every operation runs under. The client sets them from its configuration and gives
/// the whole ssh call a little more, so the agent always gives up first and says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct Limits {
    /// The whole operation must end within this many seconds (each command gets what is left).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub deadline_secs: u64,
    /// Longest wait for the volume group's lock on this host (capped by the deadline).
    #[arg(long, default_value_t = 300)]
    pub lock_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline_secs: 600,
            lock_timeout_secs: 300,
        }
    }
}

impl Limits {
    /// As flags.
    pub fn args(&self) -> Vec<String> {
        vec![
            flag("deadline-secs", self.deadline_secs),
            flag("lock-timeout-secs", self.lock_timeout_secs),
        ]
    }
}

/// The device name a BSU is linked under: `/dev/xvd<x>` or `/dev/sd<x>`, `<x>` one or two
/// letters (`a` alone is the root disk and refused).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BsuDeviceName {
    name: String,
    suffix: String,
}

impl FromStr for BsuDeviceName {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let suffix = s
            .strip_prefix("/dev/xvd")
            .or_else(|| s.strip_prefix("/dev/sd"))
            .filter(|x| (1..=2).contains(&x.len()) && x.chars().all(|c| c.is_ascii_lowercase()))
            .filter(|x| *x != "a");
        match suffix {
            Some(x) => Ok(BsuDeviceName {
                name: s.to_string(),
                suffix: x.to_string(),
            }),
            None => Err(fail(
                ErrorKind::BadInput,
                format!("{s:?} is not a BSU device name (/dev/xvd<x> or /dev/sd<x>, <x> = b…z or two letters)"),
            )),
        }
    }
}

impl fmt::Display for BsuDeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl BsuDeviceName {
    /// The requested name (`/dev/xvdb`).
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The SCSI serial the guest sees: `sd<x>` whatever the prefix asked for.
    pub fn serial(&self) -> String {
        format!("sd{}", self.suffix)
    }

    /// The by-id file name (`scsi-0QEMU_QEMU_HARDDISK_sdb`).
    pub fn by_id_name(&self) -> String {
        format!("{BY_ID_PREFIX}{}", self.serial())
    }

    /// The literal path some images also create (`/dev/xvd<x>`), only for xvd names: a
    /// `/dev/sd<x>` literal may be another disk (kernel names need not match the serial).
    pub fn literal_fallback(&self) -> Option<&str> {
        self.name
            .starts_with("/dev/xvd")
            .then_some(self.name.as_str())
    }
}

/// Whether `s` is a serial an attached BSU can have (`sd` + one or two letters).
pub fn is_bsu_serial(s: &str) -> bool {
    s.strip_prefix("sd")
        .is_some_and(|x| (1..=2).contains(&x.len()) && x.chars().all(|c| c.is_ascii_lowercase()))
}

// ---------------------------------------------------------------------------------------------
// Requests

/// `version`: the agent's version.
#[derive(Debug, Clone, PartialEq, Eq, Default, Args)]
pub struct VersionReq {}

/// `identity`: who this host is for the cloud, from the metadata server.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct IdentityReq {
    /// Keep retrying the metadata server for this many seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_secs: u64,
}

/// `wait-device`: wait for a linked BSU to appear and resolve it to the real device.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct WaitDeviceReq {
    /// The device name the volume was linked under (`/dev/xvdb`).
    #[arg(long)]
    pub device: BsuDeviceName,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_secs: u64,
}

/// `vg-report`: everything the frontend needs to reconcile a drive, in one round trip.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct VgReportReq {
    /// The volume group.
    #[arg(long)]
    pub vg: VgName,
}

/// `pv-add`: make the device a PV of the VG (creating the VG if needed).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct PvAddReq {
    /// The volume group.
    #[arg(long)]
    pub vg: VgName,
    /// The device (as resolved by wait-device).
    #[arg(long)]
    pub device: DevicePath,
    /// The device is a new volume that never held data: its extents need no zeroing. Honoured
    /// only when the device is not yet a PV and its first MiB reads all zero.
    #[arg(long)]
    pub fresh: bool,
}

/// `vg-limit`: record the drive's growth limit as the VG tag `one.bsud.max_size_gib=<n>`
/// (replacing an older value), for the host capacity probe.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct VgLimitReq {
    /// The volume group.
    #[arg(long)]
    pub vg: VgName,
    /// The limit, GiB.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_size_gib: u64,
}

/// `pv-remove`: take an empty PV out of the VG (removing the VG with its last PV).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct PvRemoveReq {
    /// The volume group.
    #[arg(long)]
    pub vg: VgName,
    /// The device.
    #[arg(long)]
    pub device: DevicePath,
}

/// `lv-create`: create a tagged LV whose stale extents read as zeros.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct LvCreateReq {
    /// The volume group.
    #[arg(long)]
    pub vg: VgName,
    /// The LV name.
    #[arg(long)]
    pub lv: LvName,
    /// Size in bytes (LVM rounds up to whole extents).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub size_bytes: u64,
    /// A `key=value` tag; repeat for several. At least one must start with `one.`.
    #[arg(long = "tag")]
    pub tags: Vec<Tag>,
    /// Longest wait for the LV's device node.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub device_timeout_secs: u64,
    /// Make it a thin volume of this pool (reads zeroes until written; nothing to zero).
    #[arg(long, conflicts_with = "snapshot_of")]
    pub thin_pool: Option<LvName>,
    /// Make it a thin snapshot of this thin LV of ours (then grown to the size asked).
    #[arg(long)]
    pub snapshot_of: Option<LvName>,
}

/// `pool-ensure`: the drive's thin pool exists with at least these sizes.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct PoolEnsureReq {
    /// The volume group.
    #[arg(long)]
    pub vg: VgName,
    /// The pool LV.
    #[arg(long)]
    pub pool: LvName,
    /// Data size, bytes.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub data_bytes: u64,
    /// Metadata size, bytes.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub metadata_bytes: u64,
    /// Chunk size at creation, bytes (a power of two, 64 KiB to 1 GiB).
    #[arg(long, value_parser = clap::value_parser!(u64).range(65536..=(1 << 30)))]
    pub chunk_bytes: u64,
    /// A `key=value` tag for a new pool; at least one must start with `one.`.
    #[arg(long = "tag")]
    pub tags: Vec<Tag>,
}

/// `lv-extend`: grow an LV (new stale extents read as zeros).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct LvExtendReq {
    /// The volume group.
    #[arg(long)]
    pub vg: VgName,
    /// The LV.
    #[arg(long)]
    pub lv: LvName,
    /// New size in bytes (no-op when the LV is already at least this large).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub size_bytes: u64,
    /// Longest wait for the LV's device node.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub device_timeout_secs: u64,
}

/// `lv-remove`: remove one of our LVs (absent is success).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct LvRemoveReq {
    /// The volume group.
    #[arg(long)]
    pub vg: VgName,
    /// The LV.
    #[arg(long)]
    pub lv: LvName,
    /// Remove only if the LV carries this tag (repeatable).
    #[arg(long = "require-tag")]
    pub require_tags: Vec<Tag>,
}

/// `lv-tag`: add and delete tags of one of our LVs.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct LvTagReq {
    /// The volume group.
    #[arg(long)]
    pub vg: VgName,
    /// The LV.
    #[arg(long)]
    pub lv: LvName,
    /// Tag to add (repeatable).
    #[arg(long = "add")]
    pub add: Vec<Tag>,
    /// Tag to delete (repeatable).
    #[arg(long = "del")]
    pub del: Vec<Tag>,
}

/// `lv-list`: the VG's LVs, optionally only those carrying every given tag.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct LvListReq {
    /// The volume group.
    #[arg(long)]
    pub vg: VgName,
    /// Only LVs carrying this tag (repeatable: all of them).
    #[arg(long = "tag")]
    pub tags: Vec<Tag>,
}

/// `lv-rename`: rename one of our LVs (done already is success).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct LvRenameReq {
    /// The volume group.
    #[arg(long)]
    pub vg: VgName,
    /// The current name.
    #[arg(long)]
    pub lv: LvName,
    /// The new name.
    #[arg(long)]
    pub new_name: LvName,
}

fn push_all(out: &mut Vec<String>, name: &str, tags: &[Tag]) {
    out.extend(tags.iter().map(|t| flag(name, t)));
}

impl Request for VersionReq {
    const OP: &'static str = "version";
    const LOCKS: bool = false;
    type Response = VersionInfo;
    fn args(&self) -> Vec<String> {
        Vec::new()
    }
}

impl Request for IdentityReq {
    const OP: &'static str = "identity";
    const LOCKS: bool = false;
    type Response = Identity;
    fn args(&self) -> Vec<String> {
        vec![flag("timeout-secs", self.timeout_secs)]
    }
    fn waits(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

impl Request for WaitDeviceReq {
    const OP: &'static str = "wait-device";
    const LOCKS: bool = false;
    type Response = DeviceFound;
    fn args(&self) -> Vec<String> {
        vec![
            flag("device", &self.device),
            flag("timeout-secs", self.timeout_secs),
        ]
    }
    fn waits(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

impl Request for VgReportReq {
    const OP: &'static str = "vg-report";
    const LOCKS: bool = false;
    type Response = VgReport;
    fn args(&self) -> Vec<String> {
        vec![flag("vg", &self.vg)]
    }
}

impl Request for PvAddReq {
    const OP: &'static str = "pv-add";
    const LOCKS: bool = true;
    type Response = PvAdded;
    fn args(&self) -> Vec<String> {
        let mut a = vec![flag("vg", &self.vg), flag("device", &self.device)];
        if self.fresh {
            a.push("--fresh".into());
        }
        a
    }
}

impl Request for VgLimitReq {
    const OP: &'static str = "vg-limit";
    const LOCKS: bool = true;
    type Response = VgLimited;
    fn args(&self) -> Vec<String> {
        vec![
            flag("vg", &self.vg),
            flag("max-size-gib", self.max_size_gib),
        ]
    }
}

impl Request for PvRemoveReq {
    const OP: &'static str = "pv-remove";
    const LOCKS: bool = true;
    type Response = PvRemoved;
    fn args(&self) -> Vec<String> {
        vec![flag("vg", &self.vg), flag("device", &self.device)]
    }
}

impl Request for LvCreateReq {
    const OP: &'static str = "lv-create";
    const LOCKS: bool = true;
    type Response = LvCreated;
    fn args(&self) -> Vec<String> {
        let mut a = vec![
            flag("vg", &self.vg),
            flag("lv", &self.lv),
            flag("size-bytes", self.size_bytes),
        ];
        push_all(&mut a, "tag", &self.tags);
        a.push(flag("device-timeout-secs", self.device_timeout_secs));
        if let Some(p) = &self.thin_pool {
            a.push(flag("thin-pool", p));
        }
        if let Some(o) = &self.snapshot_of {
            a.push(flag("snapshot-of", o));
        }
        a
    }
    fn waits(&self) -> Duration {
        Duration::from_secs(self.device_timeout_secs)
    }
}

impl Request for PoolEnsureReq {
    const OP: &'static str = "pool-ensure";
    const LOCKS: bool = true;
    type Response = PoolStatus;
    fn args(&self) -> Vec<String> {
        let mut a = vec![
            flag("vg", &self.vg),
            flag("pool", &self.pool),
            flag("data-bytes", self.data_bytes),
            flag("metadata-bytes", self.metadata_bytes),
            flag("chunk-bytes", self.chunk_bytes),
        ];
        push_all(&mut a, "tag", &self.tags);
        a
    }
}

impl Request for LvExtendReq {
    const OP: &'static str = "lv-extend";
    const LOCKS: bool = true;
    type Response = LvExtended;
    fn args(&self) -> Vec<String> {
        vec![
            flag("vg", &self.vg),
            flag("lv", &self.lv),
            flag("size-bytes", self.size_bytes),
            flag("device-timeout-secs", self.device_timeout_secs),
        ]
    }
    fn waits(&self) -> Duration {
        Duration::from_secs(self.device_timeout_secs)
    }
}

impl Request for LvRemoveReq {
    const OP: &'static str = "lv-remove";
    const LOCKS: bool = true;
    type Response = LvRemoved;
    fn args(&self) -> Vec<String> {
        let mut a = vec![flag("vg", &self.vg), flag("lv", &self.lv)];
        push_all(&mut a, "require-tag", &self.require_tags);
        a
    }
}

impl Request for LvTagReq {
    const OP: &'static str = "lv-tag";
    const LOCKS: bool = true;
    type Response = LvTagged;
    fn args(&self) -> Vec<String> {
        let mut a = vec![flag("vg", &self.vg), flag("lv", &self.lv)];
        push_all(&mut a, "add", &self.add);
        push_all(&mut a, "del", &self.del);
        a
    }
}

impl Request for LvListReq {
    const OP: &'static str = "lv-list";
    const LOCKS: bool = false;
    type Response = LvList;
    fn args(&self) -> Vec<String> {
        let mut a = vec![flag("vg", &self.vg)];
        push_all(&mut a, "tag", &self.tags);
        a
    }
}

impl Request for LvRenameReq {
    const OP: &'static str = "lv-rename";
    const LOCKS: bool = true;
    type Response = LvRenamed;
    fn args(&self) -> Vec<String> {
        vec![
            flag("vg", &self.vg),
            flag("lv", &self.lv),
            flag("new-name", &self.new_name),
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

/// `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The agent's version.
    pub version: String,
}

/// `identity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The VM id (`i-…`).
    pub vm_id: String,
    /// Its subregion (`eu-west-2a`).
    pub subregion: String,
    /// Its region (`eu-west-2`).
    pub region: String,
    /// The agent's version.
    pub version: String,
}

/// `wait-device`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFound {
    /// The device name asked for (`/dev/xvdb`).
    pub device: String,
    /// Its serial (`sdb`).
    pub serial: String,
    /// The real device it resolves to (`/dev/sdc`), to pass to `pv-add`.
    pub path: String,
    /// How it was found: `by-id` or `literal`.
    pub via: String,
}

/// A PV as `vg-report` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PvInfo {
    /// LVM's view.
    #[serde(flatten)]
    pub pv: Pv,
    /// The BSU serial whose by-id link points at it, if any.
    pub serial: Option<String>,
    /// Extents below this may hold bytes of deleted LVs (only for PVs in a VG).
    pub hwm: Option<u64>,
}

/// A by-id BSU device present on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BsuDevice {
    /// `sdb`.
    pub serial: String,
    /// The by-id link.
    pub link: String,
    /// The real device.
    pub path: String,
    /// Whether it is a PV.
    pub is_pv: bool,
    /// The VG of that PV, if in one.
    pub vg: Option<String>,
}

/// `vg-report`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VgReport {
    /// The VG asked about.
    pub vg_name: String,
    /// The VG, or null when it does not exist on this host.
    pub vg: Option<Vg>,
    /// Its PVs.
    pub pvs: Vec<PvInfo>,
    /// Its LVs with their segments.
    pub lvs: Vec<Lv>,
    /// PVs in no VG.
    pub orphan_pvs: Vec<PvInfo>,
    /// Every attached BSU the host sees by id.
    pub bsu_devices: Vec<BsuDevice>,
}

/// `pv-add`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PvAdded {
    /// The VG.
    pub vg: String,
    /// The device as given.
    pub device: String,
    /// The real device.
    pub path: String,
    /// pvcreate ran.
    pub pv_created: bool,
    /// vgcreate ran.
    pub vg_created: bool,
    /// vgextend ran.
    pub vg_extended: bool,
    /// The PV's high-water mark: extents below it are zeroed when an LV gets them.
    pub hwm: u64,
    /// The PV's extents.
    pub pe_count: u64,
}

/// `vg-limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VgLimited {
    /// The VG.
    pub vg: String,
    /// Its tags now.
    pub tags: Vec<String>,
    /// false: the tag was already there.
    pub changed: bool,
}

/// `pv-remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PvRemoved {
    /// The VG.
    pub vg: String,
    /// The device as given.
    pub device: String,
    /// vgreduce ran.
    pub vg_reduced: bool,
    /// vgremove ran (it was the last PV).
    pub vg_removed: bool,
    /// pvremove ran.
    pub pv_removed: bool,
}

/// `lv-create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LvCreated {
    /// The VG.
    pub vg: String,
    /// The LV.
    pub lv: String,
    /// Its device node.
    pub path: String,
    /// Its size (whole extents).
    pub size_bytes: u64,
    /// Its tags.
    pub tags: Vec<String>,
    /// false: it existed already with these tags.
    pub created: bool,
    /// Bytes that never held data (left alone).
    pub fresh_bytes: u64,
    /// Bytes zeroed because a deleted LV may have used them.
    pub zeroed_bytes: u64,
}

/// `pool-ensure`: the pool as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// The VG.
    pub vg: String,
    /// The pool LV.
    pub pool: String,
    /// Data size, bytes.
    pub data_bytes: u64,
    /// Metadata size, bytes.
    pub metadata_bytes: u64,
    /// Data usage, hundredths of a percent.
    pub data_bp: u32,
    /// Metadata usage, hundredths of a percent.
    pub metadata_bp: u32,
    /// Whether this call created it.
    pub created: bool,
    /// Whether this call grew its data or metadata.
    pub extended: bool,
}

/// `lv-extend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LvExtended {
    /// The VG.
    pub vg: String,
    /// The LV.
    pub lv: String,
    /// Its device node.
    pub path: String,
    /// Its size now.
    pub size_bytes: u64,
    /// false: it was already that large.
    pub extended: bool,
    /// New bytes that never held data.
    pub fresh_bytes: u64,
    /// New bytes zeroed.
    pub zeroed_bytes: u64,
}

/// `lv-remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LvRemoved {
    /// The VG.
    pub vg: String,
    /// The LV.
    pub lv: String,
    /// false: it was already absent.
    pub removed: bool,
}

/// `lv-tag`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LvTagged {
    /// The VG.
    pub vg: String,
    /// The LV.
    pub lv: String,
    /// Its tags now.
    pub tags: Vec<String>,
    /// false: nothing needed changing.
    pub changed: bool,
}

/// `lv-list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LvList {
    /// The VG.
    pub vg: String,
    /// Whether the VG exists.
    pub vg_exists: bool,
    /// The matching LVs.
    pub lvs: Vec<Lv>,
}

/// `lv-rename`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LvRenamed {
    /// The VG.
    pub vg: String,
    /// The old name.
    pub from: String,
    /// The new name.
    pub to: String,
    /// false: it already had the new name.
    pub renamed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bsu_device_names() {
        let d: BsuDeviceName = "/dev/xvdb".parse().unwrap();
        assert_eq!(d.serial(), "sdb");
        assert_eq!(d.by_id_name(), "scsi-0QEMU_QEMU_HARDDISK_sdb");
        assert_eq!(d.literal_fallback(), Some("/dev/xvdb"));
        let d: BsuDeviceName = "/dev/sdaa".parse().unwrap();
        assert_eq!(d.serial(), "sdaa");
        assert_eq!(d.literal_fallback(), None);
        for bad in [
            "/dev/xvda",
            "/dev/sda",
            "/dev/xvd",
            "/dev/xvdB",
            "/dev/xvdabc",
            "xvdb",
            "/dev/vdb",
        ] {
            assert!(bad.parse::<BsuDeviceName>().is_err(), "{bad}");
        }
        assert!(is_bsu_serial("sdzz") && !is_bsu_serial("sdb-part1") && !is_bsu_serial("sd"));
    }
}
