//! Live migration with non-shared storage: `premigrate`, `postmigrate`, `failmigrate`
//! (`SRC DST <vm dir> VM DS [caller tm]`, the VM on stdin). oned calls only the system
//! datastore's TM, and calls it without any per-disk step, so:
//!
//! - `premigrate` creates on the destination every disk LV of ours (as large as the source's,
//!   read as zeros), links them, copies the snapshots (immutable: verified copies) and the VM
//!   directory's other files (context ISO…); libvirt then copies the disks' content
//!   (`--copy-storage-all`).
//! - `failmigrate` removes what `premigrate` made on the destination.
//! - `postmigrate` marks the destination disks ready and removes the source's LVs and
//!   directory.
//!
//! Disks of other transfer managers: when we are the system TM (no 6th argument) each other
//! TM's same action runs once, `<remotes_dir>/tm/<tm>/<action> <same args> bsud`, with the
//! same stdin; called with a 6th argument ourselves we never call others (no recursion).

use base64::Engine as _;

use super::disk::{carried_tags, disk_tags, is_ready, vm_path, DiskLv, TAG_READY};
use super::{Tm, TM_NAME};
use crate::error::{fail, ErrorKind};
use crate::exec::{self, Cmd};
use crate::host::vm_ops::{relay_dir, RemoveDirReq};
use crate::one::tm::{HostPath, MigrateArgs};
use crate::one::vm::VmDisk;

/// Whether a disk is this driver's: TM_MAD bsud, or a volatile disk (system TM = us).
fn ours(d: &VmDisk) -> bool {
    match d.tm_mad.as_deref() {
        Some(t) => t == TM_NAME,
        None => matches!(d.disk_type.to_ascii_lowercase().as_str(), "fs" | "swap"),
    }
}

/// Other transfer managers of the VM's disks, each once.
fn other_tms(m: &MigrateArgs) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for d in &m.vm.disks {
        if let Some(t) = d.tm_mad.as_deref() {
            if t != TM_NAME && !v.iter().any(|x| x == t) {
                v.push(t.to_string());
            }
        }
    }
    v
}

impl Tm<'_> {
    /// Runs `action` of every other TM of the VM's disks (unless we were called by one).
    fn migrate_others(&self, action: &str, m: &MigrateArgs) -> anyhow::Result<()> {
        if m.caller_tm.is_some() {
            return Ok(());
        }
        let stdin = base64::engine::general_purpose::STANDARD.encode(&m.vm.raw);
        for tm in other_tms(m) {
            let ok = !tm.is_empty()
                && tm
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                && !tm.starts_with('-');
            if !ok {
                return Err(fail(
                    ErrorKind::BadInput,
                    format!("disk TM_MAD {tm:?} is not a driver name"),
                ));
            }
            let script = self
                .ctx
                .config
                .remotes_dir
                .join("tm")
                .join(&tm)
                .join(action);
            tracing::info!("running {} for its disks", script.display());
            exec::run(
                &Cmd::new(&script)
                    .args([
                        m.src_host.as_str(),
                        m.dst_host.as_str(),
                        m.vm_dir.as_str(),
                        &m.vm_id.to_string(),
                        &m.ds_id.to_string(),
                        TM_NAME,
                    ])
                    .stdin_bytes(stdin.clone().into_bytes())
                    .timeout(self.ctx.config.timeouts.transfer),
            )
            .map_err(|e| {
                anyhow::Error::new(e).context(format!("{action} of transfer manager {tm}"))
            })?;
        }
        Ok(())
    }

    /// Our disks with their source LV, destination LV and `<vm dir>/disk.N` on the
    /// destination.
    fn our_disks<'m>(&self, m: &'m MigrateArgs) -> Vec<(&'m VmDisk, DiskLv, DiskLv, HostPath)> {
        m.vm.disks
            .iter()
            .filter(|d| ours(d))
            .map(|d| {
                (
                    d,
                    DiskLv::disk(&m.src_host, m.ds_id, m.vm_id, d.disk_id),
                    DiskLv::disk(&m.dst_host, m.ds_id, m.vm_id, d.disk_id),
                    HostPath {
                        host: m.dst_host.clone(),
                        path: format!("{}/disk.{}", m.vm_dir, d.disk_id),
                    },
                )
            })
            .collect()
    }

    fn same_hosts(&self, m: &MigrateArgs) -> anyhow::Result<()> {
        if m.src_host == m.dst_host {
            return Err(fail(
                ErrorKind::BadInput,
                format!("live migration from {} to itself", m.src_host),
            ));
        }
        Ok(())
    }

    /// `premigrate`.
    pub(super) fn premigrate(&self, m: &MigrateArgs) -> anyhow::Result<()> {
        self.same_hosts(m)?;
        for (disk, src, dst, at) in self.our_disks(m) {
            let src_lv = self.source_lv(&src)?;
            let size = src_lv
                .as_ref()
                .map(|l| l.size)
                .unwrap_or(0)
                .max(super::disk::mib(disk.size_mb.unwrap_or(0)));
            if size == 0 {
                return Err(fail(
                    ErrorKind::Failed,
                    format!(
                        "disk {} of VM {}: {src} does not exist and the VM gives no SIZE",
                        disk.disk_id, m.vm_id
                    ),
                ));
            }
            let tags = match &src_lv {
                Some(l) => carried_tags(l, &[]),
                None => disk_tags(m.vm_id, disk.disk_id, disk.image_id),
            };
            let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
            // A leftover of an earlier attempt may hold stale bytes libvirt would not
            // overwrite where the source reads as zeros: start from a fresh LV.
            if self.lv_info(&dst)?.is_some() {
                self.remove_lvs(&dst, std::slice::from_ref(&dst.lv), m.vm_id)?;
            }
            self.storage
                .allocate(&self.drive_of(&dst)?, &dst.lv, size, &tag_refs)?;
            for (id, snap) in self.snapshots(&src)? {
                let to = dst.snapshot(id);
                if !self.lv_info(&to)?.is_some_and(|l| is_ready(&l)) {
                    self.copy_to_new(
                        &src.snapshot(id),
                        snap.size,
                        &to,
                        0,
                        &carried_tags(&snap, &[]),
                        true,
                    )?;
                }
            }
            self.link(&at, &dst)?;
        }
        let dir = vm_path(&m.vm_dir)?;
        relay_dir(self.hosts(), &m.src_host, &dir, &m.dst_host, &dir)?;
        self.migrate_others("premigrate", m)
    }

    /// `postmigrate`: the VM runs on the destination now.
    pub(super) fn postmigrate(&self, m: &MigrateArgs) -> anyhow::Result<()> {
        self.same_hosts(m)?;
        for (disk, src, dst, _) in self.our_disks(m) {
            if self.lv_info(&dst)?.is_some() {
                self.add_tags(&dst, &[TAG_READY])?;
            } else if self.lv_info(&src)?.is_some() {
                // The VM cannot be running from a disk that is not on its new host: the
                // source is the only copy, and oned ignores a failing postmigrate, so say so
                // loudly and keep it.
                return Err(fail(
                    ErrorKind::Failed,
                    format!(
                        "disk {} of VM {}: {dst} does not exist, keeping {src} (the only copy)",
                        disk.disk_id, m.vm_id
                    ),
                ));
            }
            self.remove_with_snapshots(&src, m.vm_id)?;
        }
        self.hosts().call(
            &m.src_host,
            &RemoveDirReq {
                path: vm_path(&m.vm_dir)?,
                with_parked: false,
            },
        )?;
        self.migrate_others("postmigrate", m)
    }

    /// `failmigrate`: the VM still runs on the source; undo the destination.
    pub(super) fn failmigrate(&self, m: &MigrateArgs) -> anyhow::Result<()> {
        self.same_hosts(m)?;
        for (_, _, dst, _) in self.our_disks(m) {
            self.remove_with_snapshots(&dst, m.vm_id)?;
        }
        self.hosts().call(
            &m.dst_host,
            &RemoveDirReq {
                path: vm_path(&m.vm_dir)?,
                with_parked: false,
            },
        )?;
        self.migrate_others("failmigrate", m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::one::vm::VmXml;

    #[test]
    fn which_disks_are_ours() {
        let xml = r#"<VM><ID>3</ID><TEMPLATE>
            <DISK><DISK_ID>0</DISK_ID><TM_MAD>bsud</TM_MAD><TYPE>BLOCK</TYPE></DISK>
            <DISK><DISK_ID>1</DISK_ID><TM_MAD>ceph</TM_MAD><TYPE>RBD</TYPE></DISK>
            <DISK><DISK_ID>2</DISK_ID><TYPE>fs</TYPE></DISK>
            <DISK><DISK_ID>3</DISK_ID><TYPE>swap</TYPE></DISK>
            <DISK><DISK_ID>4</DISK_ID><TM_MAD>ceph</TM_MAD></DISK>
            <DISK><DISK_ID>5</DISK_ID><TM_MAD>ssh</TM_MAD></DISK>
        </TEMPLATE></VM>"#;
        let vm = VmXml::from_xml(xml).unwrap();
        let mine: Vec<u32> = vm
            .disks
            .iter()
            .filter(|d| ours(d))
            .map(|d| d.disk_id)
            .collect();
        assert_eq!(mine, [0, 2, 3]);
        let m = MigrateArgs {
            src_host: "a".into(),
            dst_host: "b".into(),
            vm_dir: "/d/100/3".into(),
            vm_id: 3,
            ds_id: 100,
            caller_tm: None,
            vm,
        };
        assert_eq!(other_tms(&m), ["ceph", "ssh"]);
    }
}
