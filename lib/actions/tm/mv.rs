//! `mv`: a disk or the VM directory, between a host and the frontend (stop/undeploy and
//! resume) or between hosts (cold migration, possibly into another system datastore).
//!
//! Disks:
//! - host → frontend: the LV stays on the host's drive; a marker at the frontend path records
//!   where (parking), then the host's link goes. Nothing is copied.
//! - frontend → host: the marker names the LV; same host and datastore: re-linked in place;
//!   otherwise moved like a migration. Then the marker goes.
//! - host → host: the LV (and its snapshots) is copied to the new host's drive, verified
//!   against a checksum of the source, and only then the source is removed.
//!
//! The source is the truth while it exists: a rerun copies again over whatever a crashed run
//! left at the destination; once the source is gone, the ready destination is the disk.
//!
//! Directories: packed on the source and unpacked at the destination through this process
//! (a checkpoint file of a stopped VM really moves to the frontend), then the source is
//! removed — refused while it still records parked disks.

use super::disk::{carried_tags, conventional, is_ready, vm_path, DiskLv, Located};
use super::Tm;
use crate::error::{fail, ErrorKind};
use crate::host::vm_ops::{relay_dir, RemoveDirReq, VmListReq};
use crate::one::tm::{DiskRef, HostPath, Target};

impl Tm<'_> {
    /// `mv`.
    pub(super) fn mv(&self, src: &Target, dst: &Target, vm: i64) -> anyhow::Result<()> {
        match (src, dst) {
            (Target::Disk(s), Target::Disk(d)) => self.mv_disk(s, d, vm),
            (Target::Dir(s), Target::Dir(d)) => self.mv_dir(s, d),
            _ => Err(fail(
                ErrorKind::BadInput,
                "mv: one side is a disk and the other a directory",
            )),
        }
    }

    fn mv_disk(&self, s: &DiskRef, d: &DiskRef, vm: i64) -> anyhow::Result<()> {
        if s.at == d.at {
            tracing::info!("{}:{} stays where it is", s.at.host, s.at.path);
            return Ok(());
        }
        let (from_fe, to_fe) = (self.is_frontend(&s.at.host), self.is_frontend(&d.at.host));
        if to_fe && !from_fe {
            return self.park(s, d, vm);
        }
        let from = match self.locate(s, vm)? {
            Located::Here(l) | Located::Parked(l) => Some(l),
            Located::Unknown => None,
        };
        let to = if to_fe {
            // frontend → frontend (another system datastore while stopped): only the marker.
            let l = from.ok_or_else(|| missing(s, vm))?;
            self.write_marker(&d.at, &l, vm, d.disk_id)?;
            return self.remove_entry(&s.at);
        } else {
            conventional(d, vm)?
        };
        match from {
            Some(from) => self.move_lv(&from, &to, vm)?,
            None if self.lv_info(&to)?.is_some_and(|l| is_ready(&l)) => {
                tracing::info!("{to} was already moved")
            }
            None => return Err(missing(s, vm)),
        }
        self.link(&d.at, &to)?;
        crate::crashpoint::reached("mv:linked");
        self.remove_entry(&s.at)
    }

    /// host → frontend: the LV stays; a marker at the frontend says where.
    fn park(&self, s: &DiskRef, d: &DiskRef, vm: i64) -> anyhow::Result<()> {
        let lv = conventional(s, vm)?;
        if self.source_lv(&lv)?.is_none() {
            // A rerun after success finds the marker already naming it.
            if self.locate(d, vm)?.lv() == Some(&lv) {
                return Ok(());
            }
            return Err(missing(s, vm));
        }
        self.write_marker(&d.at, &lv, vm, d.disk_id)?;
        crate::crashpoint::reached("mv:parked");
        self.remove_entry(&s.at)
    }

    /// Moves `from` (with its snapshots) to `to`: copy, verify, then remove the source.
    fn move_lv(&self, from: &DiskLv, to: &DiskLv, vm: i64) -> anyhow::Result<()> {
        if from == to {
            return Ok(());
        }
        let Some(src) = self.source_lv(from)? else {
            if self.lv_info(to)?.is_some_and(|l| is_ready(&l)) {
                tracing::info!("{to} was already moved");
                return Ok(());
            }
            return Err(fail(
                ErrorKind::Failed,
                format!("neither {from} nor a ready {to} exists"),
            ));
        };
        // One machine known under two host names: the "destination" is the source itself,
        // and removing the source after the copy would remove the only copy.
        if self
            .lv_info(to)?
            .is_some_and(|l| !l.uuid.is_empty() && l.uuid == src.uuid)
        {
            tracing::warn!("{from} and {to} are the same LV (one host, two names): not moving");
            return Ok(());
        }
        self.copy_to_new(from, src.size, to, 0, &carried_tags(&src, &[]), true)?;
        for (id, snap) in self.snapshots(from)? {
            self.copy_to_new(
                &from.snapshot(id),
                snap.size,
                &to.snapshot(id),
                0,
                &carried_tags(&snap, &[]),
                true,
            )?;
        }
        crate::crashpoint::reached("mv:copied");
        self.remove_with_snapshots(from, vm)
    }

    fn mv_dir(&self, s: &HostPath, d: &HostPath) -> anyhow::Result<()> {
        if s == d {
            return Ok(());
        }
        let (sp, dp) = (vm_path(&s.path)?, vm_path(&d.path)?);
        let listing = self
            .hosts()
            .call(&s.host, &VmListReq { path: sp.clone() })?;
        if !listing.exists {
            tracing::info!("{}:{} is already gone (moved before)", s.host, s.path);
            return Ok(());
        }
        let got = relay_dir(self.hosts(), &s.host, &sp, &d.host, &dp)?;
        tracing::info!(
            "VM directory {}:{} copied to {}:{} ({} entries, {} bytes)",
            s.host,
            s.path,
            d.host,
            d.path,
            got.entries,
            got.bytes
        );
        crate::crashpoint::reached("mv:dir-copied");
        self.hosts().call(
            &s.host,
            &RemoveDirReq {
                path: sp,
                with_parked: false,
            },
        )?;
        Ok(())
    }
}

fn missing(s: &DiskRef, vm: i64) -> anyhow::Error {
    fail(
        ErrorKind::Failed,
        format!(
            "disk {} of VM {vm}: nothing at {}:{} to move (no LV, no parked-disk marker)",
            s.disk_id, s.at.host, s.at.path
        ),
    )
}
