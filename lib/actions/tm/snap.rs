//! Disk snapshots (`snap_create`, `snap_create_live`, `snap_revert`, `snap_delete`) and
//! `resize`.
//!
//! Drives are thick VGs, so a snapshot is a **full copy**: `lv-one-<vm>-<disk>-snap-<id>` beside
//! the disk on the same drive, as large as the disk, holding a copy of all its allocated data.
//! Cost: creating one reads and writes the disk's data once (minutes for hundreds of GiB) and
//! takes as much space as the disk; revert copies it back. A live snapshot suspends the domain
//! (`virsh suspend`) for the copy so it is one point in time, and resumes it whatever happens;
//! on a host without virsh the copy is taken while the guest runs (consistent only if the
//! guest is idle). [`SnapshotStore`] is the seam for cheaper snapshots (thin pools, LVM
//! copy-on-write snapshots) on hosts with device-mapper: only [`ThickCopies`] exists today.

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
        let to = disk.snapshot(snap);
        // Ids are never reused: a ready one is this very snapshot, taken by an earlier run.
        if tm.lv_info(&to)?.is_some_and(|l| super::disk::is_ready(&l)) {
            return Ok(());
        }
        let src = tm
            .lv_info(disk)?
            .ok_or_else(|| fail(ErrorKind::Failed, format!("LV {disk} does not exist")))?;
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

impl Tm<'_> {
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

    fn snapshots_store(&self) -> ThickCopies<'_, '_> {
        ThickCopies(self)
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
        self.snapshots_store()
            .create(&disk, snap, vm, domain.as_deref())
    }

    /// `snap_revert`.
    pub(super) fn snap_revert(&self, d: &DiskRef, snap: u32, vm: i64) -> anyhow::Result<()> {
        let disk = self.locate_known(d, vm)?;
        self.snapshots_store().revert(&disk, snap)
    }

    /// `snap_delete`.
    pub(super) fn snap_delete(&self, d: &DiskRef, snap: u32, vm: i64) -> anyhow::Result<()> {
        let disk = self.locate_known(d, vm)?;
        self.snapshots_store().delete(&disk, snap, vm)
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
