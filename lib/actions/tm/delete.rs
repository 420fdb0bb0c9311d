//! `delete`: a disk (`H:D/disk.N`) or the whole VM directory (`H:D`, always last).
//!
//! - A host disk: its link, then its LV and snapshots (only LVs tagged `one.vm=<vm>`).
//! - A frontend disk (terminate of a STOPPED/UNDEPLOYED VM): the LV the marker names, on the
//!   host keeping it, then the marker. Without a marker the hosts of the VM's history are
//!   searched, so a disk is never left behind because a marker is missing.
//! - A host directory: every LV of the VM left on that host's drive of the system datastore,
//!   then the directory. A frontend directory: the disks its markers still name, then the
//!   directory.
//!
//! Absent things are fine (oned retries, `recover --delete` deletes what may never have been
//! made); each removal lets the drive shrink.

use super::disk::{system_ds, tag, DiskLv, Located, TAG_VM};
use super::Tm;
use crate::host::vm_ops::{EntryKind, RemoveDirReq, VmListReq};
use crate::one::tm::{disk_id_of, DiskRef, HostPath, Target};

impl Tm<'_> {
    /// `delete`.
    pub(super) fn delete(&self, target: &Target, vm: i64) -> anyhow::Result<()> {
        match target {
            Target::Disk(d) => self.delete_disk(d, vm),
            Target::Dir(at) => self.delete_dir(at, vm),
        }
    }

    fn delete_disk(&self, d: &DiskRef, vm: i64) -> anyhow::Result<()> {
        match self.locate(d, vm)? {
            Located::Here(lv) => {
                self.remove_entry(&d.at)?;
                self.remove_with_snapshots(&lv, vm)
            }
            Located::Parked(lv) => {
                // The marker is the only record of where the disk is: keep it unless its
                // drive is there to remove the disk from.
                self.source_lv(&lv)?;
                self.remove_with_snapshots(&lv, vm)?;
                self.remove_entry(&d.at)
            }
            Located::Unknown => {
                for (lv, _) in self.lost_disk(d, vm)? {
                    self.remove_with_snapshots(&lv, vm)?;
                }
                self.remove_entry(&d.at)
            }
        }
    }

    fn delete_dir(&self, at: &HostPath, vm: i64) -> anyhow::Result<()> {
        let ds = system_ds(at)?;
        let path = super::disk::vm_path(&at.path)?;
        // Everything below removes by the VM id: a directory of another VM is refused.
        if at.path.rsplit('/').find(|c| !c.is_empty()) != Some(&vm.to_string()) {
            return Err(crate::error::fail(
                crate::error::ErrorKind::BadInput,
                format!("{}:{} is not the directory of VM {vm}", at.host, at.path),
            ));
        }
        if self.is_frontend(&at.host) {
            let listing = self
                .hosts()
                .call(&at.host, &VmListReq { path: path.clone() })?;
            for e in &listing.entries {
                if let Some(m) = &e.parked {
                    let lv = DiskLv {
                        host: m.host.clone(),
                        ds: m.ds,
                        lv: m.lv.clone(),
                    };
                    self.source_lv(&lv)?;
                    self.remove_with_snapshots(&lv, vm)?;
                } else if e.kind == EntryKind::Symlink {
                    // All-in-one: the frontend is also this VM's host.
                    if let Some(n) = disk_id_of(&e.name) {
                        self.remove_with_snapshots(&DiskLv::disk(&at.host, ds, vm, n), vm)?;
                    }
                }
            }
        } else {
            let probe = DiskLv::disk(&at.host, ds, vm, 0);
            let prefix = format!("lv-one-{vm}-");
            let vm_tag = tag(TAG_VM, vm);
            let names: Vec<String> = self
                .vg_lvs(&probe)?
                .into_iter()
                .filter(|l| l.name.starts_with(&prefix) && l.has_tag(&vm_tag))
                .map(|l| l.name)
                .collect();
            if !names.is_empty() {
                tracing::info!(
                    "removing LVs left by VM {vm} on {}: {}",
                    at.host,
                    names.join(", ")
                );
                self.remove_lvs(&probe, &names, vm)?;
            }
        }
        self.hosts().call(
            &at.host,
            &RemoveDirReq {
                path,
                with_parked: true,
            },
        )?;
        Ok(())
    }
}
