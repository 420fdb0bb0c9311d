//! Disk LVs: where a disk oned names is, its tags, and the steps every action builds on —
//! copy into a new LV (verified, then marked ready), link, remove with its snapshots.

use anyhow::Context;

use super::Tm;
use crate::drive::engine::DriveRef;
use crate::drive::naming::{disk_lv, vg_name};
use crate::error::{fail, ErrorKind};
use crate::host::data::LvRef;
use crate::host::proto::LvList;
use crate::host::transfer::{self, CopyOptions, LvLoc};
use crate::host::vm_ops::{
    Entry, EntryKind, LinkDiskReq, ParkedDisk, PutFileReq, RemoveDiskReq, VmPath, VmStatReq,
};
use crate::lvm::{Lv, Tag};
use crate::one::tm::{DiskRef, HostPath};

/// The VM id tag.
pub const TAG_VM: &str = "one.vm";
/// The disk id tag.
pub const TAG_DISK: &str = "one.disk";
/// The image id tag (image disks, image LVs).
pub const TAG_IMAGE: &str = "one.image";
/// The snapshot id tag (snapshot LVs).
pub const TAG_SNAPSHOT: &str = "one.snapshot";
/// Set once an LV's content is complete and verified.
pub const TAG_READY: &str = "one.bsud.state=ready";

/// Tags a copy carries over from its source (the ready mark is earned by each copy).
const CARRIED: &[&str] = &[TAG_VM, TAG_DISK, TAG_IMAGE, TAG_SNAPSHOT];

/// An LV on a host's drive of a datastore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLv {
    /// The host.
    pub host: String,
    /// The datastore of the drive (`vg-one-<ds>`).
    pub ds: i64,
    /// The LV name.
    pub lv: String,
}

impl DiskLv {
    /// The LV of disk `disk` of VM `vm` on `host`'s drive of system datastore `ds`.
    pub fn disk(host: &str, ds: i64, vm: i64, disk: u32) -> DiskLv {
        DiskLv {
            host: host.to_string(),
            ds,
            lv: disk_lv(vm, disk),
        }
    }

    /// `vg-one-<ds>`.
    pub fn vg(&self) -> String {
        vg_name(self.ds)
    }

    /// The LV as the agent names it.
    pub fn lv_ref(&self) -> anyhow::Result<LvRef> {
        format!("{}/{}", self.vg(), self.lv).parse()
    }

    /// The LV with its host.
    pub fn loc(&self) -> anyhow::Result<LvLoc> {
        Ok(LvLoc {
            host: self.host.clone(),
            lv: self.lv_ref()?,
        })
    }

    /// Snapshot `snap` of this LV (same drive).
    pub fn snapshot(&self, snap: u32) -> DiskLv {
        DiskLv {
            lv: crate::drive::naming::snapshot_lv(&self.lv, snap),
            ..self.clone()
        }
    }

    /// The snapshot id when `name` is a snapshot of this LV.
    pub fn snapshot_id(&self, name: &str) -> Option<u32> {
        let n = name.strip_prefix(&self.lv)?.strip_prefix("-snap-")?;
        (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .then(|| n.parse().ok())
            .flatten()
    }
}

impl std::fmt::Display for DiskLv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.host, self.vg(), self.lv)
    }
}

/// Where the disk oned names is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// On the host oned names (its path is a host path, or the frontend is also a VM host).
    Here(DiskLv),
    /// Parked: oned names the frontend, the marker there names the host keeping the LV.
    Parked(DiskLv),
    /// The frontend holds no marker for it.
    Unknown,
}

impl Located {
    /// The LV, if known.
    pub fn lv(&self) -> Option<&DiskLv> {
        match self {
            Located::Here(l) | Located::Parked(l) => Some(l),
            Located::Unknown => None,
        }
    }
}

/// The system datastore id of a path `…/<ds>/<vm>[/disk.N]`.
pub fn system_ds(at: &HostPath) -> anyhow::Result<i64> {
    at.system_ds().ok_or_else(|| {
        fail(
            ErrorKind::BadInput,
            format!(
                "{}:{}: the VM directory's parent is not a numeric datastore id",
                at.host, at.path
            ),
        )
    })
}

/// The LV oned's `host:…/<S>/<vm>/disk.N` names on that host, by our naming.
pub fn conventional(d: &DiskRef, vm: i64) -> anyhow::Result<DiskLv> {
    Ok(DiskLv::disk(&d.at.host, system_ds(&d.at)?, vm, d.disk_id))
}

/// `path` as the agent takes it.
pub fn vm_path(p: &str) -> anyhow::Result<VmPath> {
    p.parse()
}

/// Whether an LV carries the ready mark.
pub fn is_ready(lv: &Lv) -> bool {
    lv.has_tag(TAG_READY)
}

/// A `key=value` tag.
pub fn tag(key: &str, value: impl std::fmt::Display) -> String {
    format!("{key}={value}")
}

/// The tags of disk `disk` of VM `vm` (and its image).
pub fn disk_tags(vm: i64, disk: u32, image: Option<i64>) -> Vec<String> {
    let mut t = vec![tag(TAG_VM, vm), tag(TAG_DISK, disk)];
    if let Some(i) = image {
        t.push(tag(TAG_IMAGE, i));
    }
    t
}

/// The tags of `lv` a copy of it carries, plus `extra`.
pub fn carried_tags(lv: &Lv, extra: &[String]) -> Vec<String> {
    let mut t: Vec<String> = lv
        .tags
        .iter()
        .filter(|t| t.split_once('=').is_some_and(|(k, _)| CARRIED.contains(&k)))
        .filter(|t| {
            !extra
                .iter()
                .any(|e| e.split_once('=').map(|x| x.0) == t.split_once('=').map(|x| x.0))
        })
        .cloned()
        .collect();
    t.extend(extra.iter().cloned());
    t
}

impl Tm<'_> {
    /// The drive of `lv`'s datastore on its host.
    pub(super) fn drive_of(&self, lv: &DiskLv) -> anyhow::Result<DriveRef> {
        self.storage.drive_by_id(&lv.host, lv.ds)
    }

    /// The LVs of `lv`'s VG on its host (empty when the VG does not exist there).
    pub(super) fn vg_lvs(&self, lv: &DiskLv) -> anyhow::Result<Vec<Lv>> {
        Ok(self.vg_listing(lv)?.lvs)
    }

    /// The agent's listing of `lv`'s VG on its host (whether the VG exists, its LVs).
    fn vg_listing(&self, lv: &DiskLv) -> anyhow::Result<LvList> {
        let vg = lv.vg().parse()?;
        self.hosts().lv_list(&lv.host, &vg, &[])
    }

    /// The LV as LVM reports it, if it exists. For a place we may be about to fill: a drive
    /// not on the host yet reads as "no LV".
    pub(super) fn lv_info(&self, lv: &DiskLv) -> anyhow::Result<Option<Lv>> {
        Ok(self.vg_lvs(lv)?.into_iter().find(|l| l.name == lv.lv))
    }

    /// Like [`Tm::lv_info`], for an LV we are about to read from or whose absence would
    /// mean "a previous run already finished": a drive missing from its host is an error
    /// there, not an absent LV, because its volumes (and the disk) still exist in the cloud,
    /// detached or on another host, and "already done" would drop the only pointer to them.
    pub(super) fn source_lv(&self, lv: &DiskLv) -> anyhow::Result<Option<Lv>> {
        let list = self.vg_listing(lv)?;
        if !list.vg_exists {
            return Err(fail(
                ErrorKind::Failed,
                format!(
                    "drive {} is not on host {} although {} should be there: its volumes are \
                     detached or on another host; `one-bsud drive reconcile` (or `drive adopt`) \
                     brings it back, then retry",
                    lv.vg(),
                    lv.host,
                    lv.lv
                ),
            ));
        }
        Ok(list.lvs.into_iter().find(|l| l.name == lv.lv))
    }

    /// The snapshots of `lv` present beside it, by id.
    pub(super) fn snapshots(&self, lv: &DiskLv) -> anyhow::Result<Vec<(u32, Lv)>> {
        let mut v: Vec<(u32, Lv)> = self
            .vg_lvs(lv)?
            .into_iter()
            .filter_map(|l| lv.snapshot_id(&l.name).map(|id| (id, l)))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        Ok(v)
    }

    /// What the agent sees at `host:path` (on the frontend: the local view).
    pub(super) fn stat(&self, at: &HostPath) -> anyhow::Result<Entry> {
        self.hosts().call(
            &at.host,
            &VmStatReq {
                path: vm_path(&at.path)?,
            },
        )
    }

    /// Where the disk oned names as `d` is.
    pub(super) fn locate(&self, d: &DiskRef, vm: i64) -> anyhow::Result<Located> {
        if !self.is_frontend(&d.at.host) {
            return Ok(Located::Here(conventional(d, vm)?));
        }
        let e = self.stat(&d.at)?;
        Ok(match (&e.parked, e.kind) {
            (Some(m), _) if m.vm != vm || m.disk != d.disk_id => {
                return Err(fail(
                    ErrorKind::Failed,
                    format!(
                        "{}:{}: its parked-disk marker is for disk {} of VM {}, not disk {} of VM {vm}: not touching it",
                        d.at.host, d.at.path, m.disk, m.vm, d.disk_id
                    ),
                ))
            }
            (Some(m), _) => Located::Parked(DiskLv {
                host: m.host.clone(),
                ds: m.ds,
                lv: m.lv.clone(),
            }),
            // The frontend is also a VM host (all-in-one): a real disk link.
            (None, EntryKind::Symlink) => Located::Here(conventional(d, vm)?),
            _ => Located::Unknown,
        })
    }

    /// Like [`Tm::locate`], but the disk must be known.
    pub(super) fn locate_known(&self, d: &DiskRef, vm: i64) -> anyhow::Result<DiskLv> {
        self.locate(d, vm)?.lv().cloned().ok_or_else(|| {
            fail(
                ErrorKind::Failed,
                format!(
                    "{}:{}: no disk there and no parked-disk marker naming where disk {} of VM {vm} is",
                    d.at.host, d.at.path, d.disk_id
                ),
            )
        })
    }

    /// Writes the parked-disk marker for `lv` at the frontend path `at`.
    pub(super) fn write_marker(
        &self,
        at: &HostPath,
        lv: &DiskLv,
        vm: i64,
        disk: u32,
    ) -> anyhow::Result<()> {
        let m = ParkedDisk {
            bsud_parked: 1,
            host: lv.host.clone(),
            ds: lv.ds,
            lv: lv.lv.clone(),
            vm,
            disk,
        };
        self.hosts().call_with_stdin(
            &at.host,
            &PutFileReq {
                path: vm_path(&at.path)?,
                mode: 0o644,
            },
            serde_json::to_vec(&m)?,
        )?;
        tracing::info!("disk {disk} parked on {} ({})", lv.host, lv);
        Ok(())
    }

    /// Removes the `disk.N` entry at `at` (link, file or marker; absent is fine).
    pub(super) fn remove_entry(&self, at: &HostPath) -> anyhow::Result<()> {
        self.hosts().call(
            &at.host,
            &RemoveDiskReq {
                path: vm_path(&at.path)?,
            },
        )?;
        Ok(())
    }

    /// Points `at` (`<vm dir>/disk.N` on its host) at `lv`, which must be on that host.
    pub(super) fn link(&self, at: &HostPath, lv: &DiskLv) -> anyhow::Result<()> {
        debug_assert_eq!(at.host, lv.host);
        self.hosts().call(
            &at.host,
            &LinkDiskReq {
                path: vm_path(&at.path)?,
                lv: lv.lv_ref()?,
            },
        )?;
        Ok(())
    }

    /// Adds tags to one of our LVs.
    pub(super) fn add_tags(&self, lv: &DiskLv, tags: &[&str]) -> anyhow::Result<()> {
        let add = Tag::parse_all(tags)?;
        self.hosts()
            .lv_tag(&lv.host, &lv.vg().parse()?, &lv.lv.parse()?, &add, &[])?;
        Ok(())
    }

    /// Allocates `dst` (at least `min_bytes` and the source's size `src_size`) on its drive
    /// with `tags`, copies `src` into it, checks the receiver's digest against a separate
    /// checksum of the source when `verify_source`, and marks it ready. Re-runnable: an
    /// existing `dst` is grown if needed and overwritten (its stale ranges zeroed).
    pub(super) fn copy_to_new(
        &self,
        src: &DiskLv,
        src_size: u64,
        dst: &DiskLv,
        min_bytes: u64,
        tags: &[String],
        verify_source: bool,
    ) -> anyhow::Result<()> {
        let want = src_size.max(min_bytes);
        let drive = self.drive_of(dst)?;
        let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
        let created = match self.storage.allocate(&drive, &dst.lv, want, &tag_refs) {
            Ok(c) => c,
            // A smaller LV of that name from an earlier run (or reserved by mkfs): grow it.
            Err(e) => match self.storage.existing(&drive, &dst.lv)? {
                Some(have) if have < want => {
                    self.storage.extend(&drive, &dst.lv, want)?;
                    self.storage.allocate(&drive, &dst.lv, want, &tag_refs)?
                }
                _ => return Err(e),
            },
        };
        self.copy_over(src, dst, created.created, verify_source)
    }

    /// Copies `src` into the existing LV `dst` (not fresh: stale ranges zeroed), verifies as
    /// [`Tm::copy_to_new`] does, and marks `dst` ready.
    pub(super) fn copy_over(
        &self,
        src: &DiskLv,
        dst: &DiskLv,
        fresh: bool,
        verify_source: bool,
    ) -> anyhow::Result<()> {
        let (from, to) = (src.loc()?, dst.loc()?);
        let got = transfer::copy_lv(
            self.hosts(),
            &self.ctx.config,
            &from,
            &to,
            CopyOptions {
                fresh,
                size_bytes: None,
            },
        )?;
        if verify_source {
            let sum = transfer::checksum(self.hosts(), &from, None, false)?;
            if sum.digest != got.digest || sum.logical_bytes != got.logical_bytes {
                return Err(fail(
                    ErrorKind::Failed,
                    format!(
                        "copy of {src} to {dst} does not match its source (source {} over {} bytes, received {} over {}); the source is kept",
                        sum.digest, sum.logical_bytes, got.digest, got.logical_bytes
                    ),
                ));
            }
        }
        self.add_tags(dst, &[TAG_READY])
            .with_context(|| format!("marking {dst} ready"))?;
        tracing::info!(
            "copied {src} to {dst}: {} MiB of data{}",
            got.data_bytes >> 20,
            if verify_source {
                ", verified against the source"
            } else {
                ""
            }
        );
        Ok(())
    }

    /// Removes `lv` and its snapshots (only LVs tagged as VM `vm`'s), then lets the drive
    /// shrink. Absent is fine.
    pub(super) fn remove_with_snapshots(&self, lv: &DiskLv, vm: i64) -> anyhow::Result<()> {
        let mut names: Vec<String> = self
            .snapshots(lv)?
            .into_iter()
            .map(|(_, l)| l.name)
            .collect();
        names.push(lv.lv.clone());
        self.remove_lvs(lv, &names, vm)
    }

    /// Removes LVs `names` of `lv`'s VG (each must carry `one.vm=vm`), then shrinks once.
    pub(super) fn remove_lvs(&self, on: &DiskLv, names: &[String], vm: i64) -> anyhow::Result<()> {
        let vg = on.vg().parse()?;
        let require: Tag = tag(TAG_VM, vm).parse()?;
        let mut removed = false;
        for n in names {
            crate::crashpoint::reached("tm:before-lv-remove");
            let r = self.hosts().lv_remove(
                &on.host,
                &vg,
                &n.parse()?,
                std::slice::from_ref(&require),
            )?;
            if r.removed {
                tracing::info!("removed LV {}:{}/{n}", on.host, on.vg());
            }
            removed |= r.removed;
        }
        if removed {
            self.storage.shrink(&self.drive_of(on)?);
        }
        Ok(())
    }

    /// Hosts the VM has been on, latest first (never the frontend); empty when OpenNebula
    /// cannot say.
    pub(super) fn history_hosts(&self, vm: i64) -> Vec<String> {
        let doc = match self.vm(vm) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("cannot read VM {vm}'s history to find its disks: {e:#}");
                return Vec::new();
            }
        };
        let mut hosts: Vec<String> = Vec::new();
        for h in doc.history.iter().rev() {
            if !h.hostname.is_empty()
                && !self.is_frontend(&h.hostname)
                && !hosts.contains(&h.hostname)
            {
                hosts.push(h.hostname.clone());
            }
        }
        hosts
    }

    /// A frontend disk without its marker: the LVs of that name on the hosts of the VM's
    /// history (in the path's system datastore) that exist, complete (ready) ones first so a
    /// blank leftover (an interrupted premigrate) is never taken for the disk. A history host
    /// that cannot be asked is skipped with a warning: the others may still hold the disk.
    pub(super) fn lost_disk(&self, d: &DiskRef, vm: i64) -> anyhow::Result<Vec<(DiskLv, bool)>> {
        let ds = system_ds(&d.at)?;
        let mut found = Vec::new();
        for host in self.history_hosts(vm) {
            let lv = DiskLv::disk(&host, ds, vm, d.disk_id);
            match self.lv_info(&lv) {
                Ok(Some(l)) => {
                    tracing::warn!(
                        "{}:{} has no marker; found its disk at {lv}",
                        d.at.host,
                        d.at.path
                    );
                    found.push((lv, is_ready(&l)));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("cannot look for {lv}: {e:#}"),
            }
        }
        found.sort_by_key(|(_, ready)| !ready);
        Ok(found)
    }

    /// The VM document (disk sizes, FS, TM_MAD, history).
    pub(super) fn vm(&self, vm: i64) -> anyhow::Result<crate::one::vm::VmXml> {
        self.ctx.one.vm(&self.ctx.config, vm)
    }
}

/// MiB → bytes.
pub fn mib(mb: u64) -> u64 {
    mb.saturating_mul(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_snapshots() {
        let d = DiskLv::disk("kvm1", 101, 7, 2);
        assert_eq!(d.to_string(), "kvm1:vg-one-101/lv-one-7-2");
        assert_eq!(d.snapshot(3).lv, "lv-one-7-2-snap-3");
        assert_eq!(d.snapshot_id("lv-one-7-2-snap-3"), Some(3));
        assert_eq!(d.snapshot_id("lv-one-7-2-snap-"), None);
        assert_eq!(d.snapshot_id("lv-one-7-21-snap-3"), None);
        assert_eq!(d.snapshot_id("lv-one-7-2"), None);
    }

    #[test]
    fn copies_carry_identity_tags_but_not_readiness() {
        let lv = Lv {
            name: "lv-one-7-2".into(),
            vg: "vg-one-101".into(),
            uuid: String::new(),
            size: 1,
            tags: vec![
                "one.vm=7".into(),
                "one.disk=2".into(),
                "one.image=4".into(),
                TAG_READY.into(),
                "one.bsud.zero-from=0".into(),
            ],
            segments: vec![],
            ..Default::default()
        };
        assert_eq!(
            carried_tags(&lv, &[tag(TAG_SNAPSHOT, 3)]),
            ["one.vm=7", "one.disk=2", "one.image=4", "one.snapshot=3"]
        );
        assert_eq!(
            carried_tags(&lv, &[tag(TAG_VM, 9)])[..2],
            ["one.disk=2", "one.image=4"]
        );
    }
}
