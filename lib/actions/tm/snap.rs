//! Disk snapshots (`snap_create`, `snap_create_live`, `snap_revert`, `snap_delete`) and
//! `resize`.
//!
//! Drives are thick VGs, so a snapshot is a **full copy**: `lv-one-<vm>-<disk>-snap-<id>` beside
//! the disk on the same drive, as large as the disk, holding a copy of all its allocated data.
//! Cost: creating one reads and writes the disk's data once (minutes for hundreds of GiB) and
//! takes as much space as the disk; revert copies it back. A live snapshot suspends the domain
//! (`virsh suspend`) for the copy so it is one point in time, and resumes it whatever happens;
//! on a host without virsh the copy is taken while the guest runs (consistent only if the
//! guest is idle).
//!
//! A thin disk (drive with `BSUD_THIN=YES`) gets [`ThinSnapshots`] instead: a snapshot is a
//! thin snapshot of the disk, taken in constant time whatever the size, sharing blocks until
//! either side is written. Revert makes a thin snapshot of the snapshot under a temporary name,
//! then swaps it in for the disk (remove, rename): a crash between the steps is finished by
//! the rerun, which finds the temporary LV. The store is chosen per disk (a thick disk on a
//! drive turned thin keeps full copies).

use super::disk::{carried_tags, mib, tag, DiskLv, TAG_SNAPSHOT};
use super::Tm;
use crate::error::{fail, ErrorKind};
use crate::host::vm_ops::DomainPauseReq;
use crate::one::tm::DiskRef;

/// How disk snapshots are kept.
pub(super) trait SnapshotStore {
    /// Takes snapshot `snap` of `disk` (`pause`: the domain to suspend meanwhile).
    fn create(&self, disk: &DiskLv, snap: u32, vm: i64, pause: Option<&str>) -> anyhow::Result<()>;
    /// Makes the disk's content snapshot `snap`'s again.
    fn revert(&self, disk: &DiskLv, snap: u32) -> anyhow::Result<()>;
    /// Drops snapshot `snap`.
    fn delete(&self, disk: &DiskLv, snap: u32, vm: i64) -> anyhow::Result<()>;
}

/// Snapshot `snap`'s LV and the disk as LVM reports it, or None when an earlier run already
/// took it (ids are never reused: a ready one is this very snapshot).
fn snapshot_to_take(
    tm: &Tm<'_>,
    disk: &DiskLv,
    snap: u32,
) -> anyhow::Result<Option<(DiskLv, crate::lvm::Lv)>> {
    let to = disk.snapshot(snap);
    if tm.lv_info(&to)?.is_some_and(|l| super::disk::is_ready(&l)) {
        return Ok(None);
    }
    let src = tm
        .lv_info(disk)?
        .ok_or_else(|| fail(ErrorKind::Failed, format!("LV {disk} does not exist")))?;
    Ok(Some((to, src)))
}

/// Snapshots as full copies on the same drive.
pub(super) struct ThickCopies<'a, 'b>(pub &'a Tm<'b>);

impl SnapshotStore for ThickCopies<'_, '_> {
    fn create(
        &self,
        disk: &DiskLv,
        snap: u32,
        _vm: i64,
        pause: Option<&str>,
    ) -> anyhow::Result<()> {
        let tm = self.0;
        let Some((to, src)) = snapshot_to_take(tm, disk, snap)? else {
            return Ok(());
        };
        let tags = carried_tags(&src, &[tag(TAG_SNAPSHOT, snap)]);
        match pause {
            Some(domain) => tm.with_domain_paused(&disk.host, domain, || {
                tm.copy_to_new(disk, src.size, &to, 0, &tags, false)
            }),
            None => tm.copy_to_new(disk, src.size, &to, 0, &tags, false),
        }
    }

    fn revert(&self, disk: &DiskLv, snap: u32) -> anyhow::Result<()> {
        let tm = self.0;
        let from = disk.snapshot(snap);
        if tm.lv_info(&from)?.is_none() {
            return Err(fail(
                ErrorKind::Failed,
                format!("snapshot {snap} of {disk}: LV {from} does not exist"),
            ));
        }
        tm.copy_over(&from, disk, false, false)
    }

    fn delete(&self, disk: &DiskLv, snap: u32, vm: i64) -> anyhow::Result<()> {
        self.0.remove_lvs(disk, &[disk.snapshot(snap).lv], vm)
    }
}

/// Snapshots as thin snapshots in the drive's pool.
pub(super) struct ThinSnapshots<'a, 'b>(pub &'a Tm<'b>);

/// The temporary name of a revert in progress.
fn reverting(disk: &DiskLv) -> DiskLv {
    DiskLv {
        lv: format!("{}-revert", disk.lv),
        ..disk.clone()
    }
}

impl SnapshotStore for ThinSnapshots<'_, '_> {
    fn create(
        &self,
        disk: &DiskLv,
        snap: u32,
        _vm: i64,
        pause: Option<&str>,
    ) -> anyhow::Result<()> {
        let tm = self.0;
        let Some((to, src)) = snapshot_to_take(tm, disk, snap)? else {
            return Ok(());
        };
        // Complete the moment it exists: the ready mark goes on with the snapshot.
        let mut tags = carried_tags(&src, &[tag(TAG_SNAPSHOT, snap)]);
        tags.push(super::disk::TAG_READY.to_string());
        let take = || tm.thin_snapshot(disk, &to, src.size, &tags);
        match pause {
            Some(domain) => tm.with_domain_paused(&disk.host, domain, take),
            None => take(),
        }
    }

    fn revert(&self, disk: &DiskLv, snap: u32) -> anyhow::Result<()> {
        let tm = self.0;
        let from = disk.snapshot(snap);
        let tmp = reverting(disk);
        let lvs = tm.vg_lvs(disk)?;
        let find = |l: &DiskLv| lvs.iter().find(|x| x.name == l.lv).cloned();
        let Some(snap_lv) = find(&from) else {
            return Err(fail(
                ErrorKind::Failed,
                format!("snapshot {snap} of {disk}: LV {from} does not exist"),
            ));
        };
        let current = find(disk);
        if find(&tmp).is_none() {
            let Some(cur) = &current else {
                return Err(fail(
                    ErrorKind::Failed,
                    format!("LV {disk} does not exist: nothing to revert"),
                ));
            };
            let mut tags = carried_tags(cur, &[]);
            tags.push(super::disk::TAG_READY.to_string());
            tm.thin_snapshot(&from, &tmp, cur.size.max(snap_lv.size), &tags)?;
            crate::crashpoint::reached("snap-revert:copy-made");
        }
        if let Some(cur) = current {
            let vm = tag_value(&cur, super::disk::TAG_VM);
            let vm: i64 = vm.and_then(|v| v.parse().ok()).ok_or_else(|| {
                fail(
                    ErrorKind::Refused,
                    format!("LV {disk} carries no one.vm tag: not replacing it"),
                )
            })?;
            // No shrink here: the replacement is already in the pool.
            tm.hosts().lv_remove(
                &disk.host,
                &disk.vg().parse()?,
                &disk.lv.parse()?,
                &[tag(super::disk::TAG_VM, vm).parse()?],
            )?;
            crate::crashpoint::reached("snap-revert:old-removed");
        }
        tm.hosts().lv_rename(
            &disk.host,
            &disk.vg().parse()?,
            &tmp.lv.parse()?,
            &disk.lv.parse()?,
        )?;
        tracing::info!("{disk} reverted to snapshot {snap} (thin)");
        Ok(())
    }

    fn delete(&self, disk: &DiskLv, snap: u32, vm: i64) -> anyhow::Result<()> {
        self.0.remove_lvs(disk, &[disk.snapshot(snap).lv], vm)
    }
}

/// The value of tag `key` on `lv`.
fn tag_value<'a>(lv: &'a crate::lvm::Lv, key: &str) -> Option<&'a str> {
    lv.tags
        .iter()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
}

impl Tm<'_> {
    /// Thin snapshot `to` of `origin` (same drive), `size` bytes at least, with `tags`.
    pub(super) fn thin_snapshot(
        &self,
        origin: &DiskLv,
        to: &DiskLv,
        size: u64,
        tags: &[String],
    ) -> anyhow::Result<()> {
        let drive = self.drive_of(to)?;
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        self.storage
            .allocate_thin(&drive, &to.lv, size, &tags, Some(&origin.lv), 0)?;
        Ok(())
    }

    /// Runs `f` with `domain` suspended on `host` so what it reads is one point in time, and
    /// resumes the domain whatever `f` did. A domain that cannot be suspended (not running
    /// there, no virsh on the host) is logged and `f` runs anyway.
    pub(super) fn with_domain_paused<T>(
        &self,
        host: &str,
        domain: &str,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let paused = self.hosts().call(
            host,
            &DomainPauseReq {
                domain: domain.to_string(),
                resume: false,
            },
        )?;
        if !paused.done {
            tracing::warn!(
                "{domain} on {host} was not suspended ({}): reading its disk while it may run",
                paused.reason.as_deref().unwrap_or("it could not be")
            );
        }
        let result = f();
        if paused.done {
            self.hosts().call(
                host,
                &DomainPauseReq {
                    domain: domain.to_string(),
                    resume: true,
                },
            )?;
        }
        result
    }

    /// The libvirt domain of VM `vm` (its DEPLOY_ID, `one-<vm>` when OpenNebula cannot say).
    pub(super) fn domain_of(&self, vm: i64) -> String {
        self.vm(vm)
            .ok()
            .and_then(|d| d.deploy_id)
            .unwrap_or_else(|| format!("one-{vm}"))
    }

    /// The snapshot store of `disk`: thin snapshots for a thin volume, full copies otherwise.
    fn snapshots_store(&self, disk: &DiskLv) -> anyhow::Result<Box<dyn SnapshotStore + '_>> {
        let thin = match self.lv_info(disk)? {
            Some(l) => l.is_thin(),
            // Mid-revert (the disk removed, its replacement not yet renamed): thin.
            None => self.lv_info(&reverting(disk))?.is_some(),
        };
        Ok(if thin {
            Box::new(ThinSnapshots(self))
        } else {
            Box::new(ThickCopies(self))
        })
    }

    /// `snap_create` / `snap_create_live`.
    pub(super) fn snap_create(
        &self,
        d: &DiskRef,
        snap: u32,
        vm: i64,
        live: bool,
    ) -> anyhow::Result<()> {
        let disk = self.locate_known(d, vm)?;
        let domain = if live {
            Some(
                self.vm(vm)?
                    .deploy_id
                    .unwrap_or_else(|| format!("one-{vm}")),
            )
        } else {
            None
        };
        self.snapshots_store(&disk)?
            .create(&disk, snap, vm, domain.as_deref())
    }

    /// `snap_revert`.
    pub(super) fn snap_revert(&self, d: &DiskRef, snap: u32, vm: i64) -> anyhow::Result<()> {
        let disk = self.locate_known(d, vm)?;
        self.snapshots_store(&disk)?.revert(&disk, snap)
    }

    /// `snap_delete`.
    pub(super) fn snap_delete(&self, d: &DiskRef, snap: u32, vm: i64) -> anyhow::Result<()> {
        let disk = self.locate_known(d, vm)?;
        self.snapshots_store(&disk)?.delete(&disk, snap, vm)
    }

    /// `resize H:D/disk.N SIZE`: grows the drive first, then the LV; data kept.
    pub(super) fn resize(&self, d: &DiskRef, size_mb: u64, vm: i64) -> anyhow::Result<()> {
        let disk = self.locate_known(d, vm)?;
        let drive = self.drive_of(&disk)?;
        let r = self.storage.extend(&drive, &disk.lv, mib(size_mb))?;
        tracing::info!("{disk} is {} MiB", r.size_bytes >> 20);
        Ok(())
    }
}
