//! Volume-group operations: `vg-report`, `vg-limit`, `pv-add`, `pv-remove`.
//!
//! Devices are compared by their resolved path (LVM may name a PV `/dev/sdc` while the caller
//! passes the by-id link). A device carrying another VG, a file system, a partition table or
//! any other signature is never made a PV; a PV holding allocated extents is never removed.

use std::path::Path;

use crate::drive::naming::TAG_MAX_SIZE_GIB;
use crate::error::{fail, ErrorKind};
use crate::lvm::{Pv, Tag, VgName};

use super::agent::Agent;
use super::devices;
use super::proto::{
    BsuDevice, PvAddReq, PvAdded, PvInfo, PvRemoveReq, PvRemoved, VgLimitReq, VgLimited, VgReport,
    VgReportReq,
};
use super::zero;

/// The PV whose device resolves to `dev`, if any.
fn find_pv<'a>(pvs: &'a [Pv], dev: &Path) -> Option<&'a Pv> {
    pvs.iter()
        .find(|p| !p.missing && devices::canonical(&p.name) == dev)
}

/// Everything the frontend needs to reconcile a drive on this host, in one report.
pub fn vg_report(a: &Agent, req: &VgReportReq) -> anyhow::Result<VgReport> {
    let pvs = a.lvm.pvs()?;
    let vg = a.lvm.vg(&req.vg)?;
    let lvs = if vg.is_some() {
        a.lvm.lvs(&req.vg)?
    } else {
        Vec::new()
    };
    let links = devices::bsu_links(&a.env)?;
    let serial_of = |pv: &Pv| {
        if pv.missing {
            return None;
        }
        let path = devices::canonical(&pv.name);
        links
            .iter()
            .find(|l| l.path == path)
            .map(|l| l.serial.clone())
    };
    let info = |pv: &Pv| PvInfo {
        serial: serial_of(pv),
        hwm: pv.vg.is_some().then(|| zero::hwm(pv)),
        pv: pv.clone(),
    };
    Ok(VgReport {
        vg_name: req.vg.to_string(),
        vg,
        pvs: pvs
            .iter()
            .filter(|p| p.vg.as_deref() == Some(req.vg.as_str()))
            .map(info)
            .collect(),
        lvs,
        orphan_pvs: pvs.iter().filter(|p| p.vg.is_none()).map(info).collect(),
        bsu_devices: links
            .iter()
            .map(|l| {
                let pv = find_pv(&pvs, &l.path);
                BsuDevice {
                    serial: l.serial.clone(),
                    link: l.link.display().to_string(),
                    path: l.path.display().to_string(),
                    is_pv: pv.is_some(),
                    vg: pv.and_then(|p| p.vg.clone()),
                }
            })
            .collect(),
    })
}

/// Makes `one.bsud.max_size_gib=<n>` the VG's only limit tag (one vgchange, only when needed).
pub fn vg_limit(a: &Agent, req: &VgLimitReq) -> anyhow::Result<VgLimited> {
    let _lock = a.lock_vg(&req.vg)?;
    let vg = a.lvm.vg(&req.vg)?.ok_or_else(|| {
        fail(
            ErrorKind::Failed,
            format!("volume group {} does not exist on this host", req.vg),
        )
    })?;
    let want = Tag::new(TAG_MAX_SIZE_GIB, req.max_size_gib)?;
    let prefix = format!("{TAG_MAX_SIZE_GIB}=");
    let stale: Vec<Tag> = vg
        .tags
        .iter()
        .filter(|t| t.starts_with(&prefix) && t.as_str() != want.as_str())
        .map(|t| t.parse())
        .collect::<anyhow::Result<_>>()?;
    let add: Vec<Tag> = if vg.tags.iter().any(|t| t == want.as_str()) {
        Vec::new()
    } else {
        vec![want.clone()]
    };
    let changed = !(add.is_empty() && stale.is_empty());
    if changed {
        tracing::info!("{}: growth limit tag {want}", req.vg);
        a.lvm.vgchange_tags(&req.vg, &add, &stale)?;
    }
    let mut tags: Vec<String> = vg
        .tags
        .into_iter()
        .filter(|t| !stale.iter().any(|s| s.as_str() == t))
        .collect();
    if !add.is_empty() {
        tags.push(want.to_string());
    }
    tags.sort();
    Ok(VgLimited {
        vg: req.vg.to_string(),
        tags,
        changed,
    })
}

fn refuse_foreign(pv: &Pv, dev: &Path, vg: &VgName, doing: &str) -> anyhow::Result<()> {
    match pv.vg.as_deref() {
        Some(other) if other != vg.as_str() => Err(fail(
            ErrorKind::Refused,
            format!(
                "device {} is a PV of volume group {other}, not {vg}: refusing to {doing} it",
                dev.display()
            ),
        )),
        _ => Ok(()),
    }
}

/// Makes the device a PV of the VG; creates the VG with it when the VG does not exist.
pub fn pv_add(a: &Agent, req: &PvAddReq) -> anyhow::Result<PvAdded> {
    let _lock = a.lock_vg(&req.vg)?;
    let dev = devices::resolve(req.device.path())?;
    let pvs = a.lvm.pvs()?;
    let mut pv_created = false;
    // Some(fresh) when the device joins the VG in this run (or a rerun of a crashed one).
    let joining_fresh = match find_pv(&pvs, &dev) {
        Some(pv) => {
            refuse_foreign(pv, &dev, &req.vg, "add")?;
            if pv.vg.is_some() {
                None
            } else {
                if req.fresh {
                    tracing::warn!(
                        "{} is already a PV outside any VG: its past is unknown, all its extents will be zeroed before use",
                        dev.display()
                    );
                }
                Some(false)
            }
        }
        None => {
            let sigs = devices::signatures(&a.lvm, &dev)?;
            if !sigs.is_empty() {
                return Err(fail(
                    ErrorKind::Refused,
                    format!(
                        "device {} holds {}: refusing to make it a PV (wipe it first if it is really unused)",
                        dev.display(),
                        sigs.join(", ")
                    ),
                ));
            }
            let fresh = req.fresh && devices::reads_all_zero_at_start(&dev);
            if req.fresh && !fresh {
                tracing::warn!(
                    "{} was said to be new but its first MiB is not all zero: all its extents will be zeroed before use",
                    dev.display()
                );
            }
            tracing::info!("pvcreate {}", dev.display());
            a.lvm.pvcreate(&dev)?;
            pv_created = true;
            Some(fresh)
        }
    };
    let mut vg_created = false;
    let mut vg_extended = false;
    if let Some(fresh) = joining_fresh {
        if a.lvm.vg(&req.vg)?.is_some() {
            tracing::info!("vgextend {} {}", req.vg, dev.display());
            a.lvm.vgextend(&req.vg, &dev)?;
            vg_extended = true;
        } else {
            tracing::info!("vgcreate {} {}", req.vg, dev.display());
            a.lvm.vgcreate(&req.vg, &dev)?;
            vg_created = true;
        }
        let pvs = a.lvm.pvs()?;
        let pv = find_pv(&pvs, &dev).ok_or_else(|| {
            anyhow::anyhow!("{} is not a PV after joining {}", dev.display(), req.vg)
        })?;
        // Until this tag exists the PV counts as stale everywhere, so a crash here costs
        // zeroing, never data.
        let mark = if fresh { 0 } else { pv.pe_count };
        a.lvm
            .pvchange_tags(&dev, &[zero::hwm_tag(mark)], &zero::hwm_tags(pv))?;
    }
    let pvs = a.lvm.pvs()?;
    let pv = find_pv(&pvs, &dev)
        .filter(|p| p.vg.as_deref() == Some(req.vg.as_str()))
        .ok_or_else(|| {
            anyhow::anyhow!("{} is not a PV of {} after pv-add", dev.display(), req.vg)
        })?;
    Ok(PvAdded {
        vg: req.vg.to_string(),
        device: req.device.to_string(),
        path: dev.display().to_string(),
        pv_created,
        vg_created,
        vg_extended,
        hwm: zero::hwm(pv),
        pe_count: pv.pe_count,
    })
}

/// Takes an empty PV out of the VG (removing the VG with its last PV) and wipes its label.
pub fn pv_remove(a: &Agent, req: &PvRemoveReq) -> anyhow::Result<PvRemoved> {
    let _lock = a.lock_vg(&req.vg)?;
    let mut out = PvRemoved {
        vg: req.vg.to_string(),
        device: req.device.to_string(),
        vg_reduced: false,
        vg_removed: false,
        pv_removed: false,
    };
    let Ok(dev) = std::fs::canonicalize(req.device.path()) else {
        tracing::info!("{} is not on this host: nothing to remove", req.device);
        return Ok(out);
    };
    let pvs = a.lvm.pvs()?;
    let Some(pv) = find_pv(&pvs, &dev) else {
        tracing::info!("{} is not a PV: nothing to remove", dev.display());
        return Ok(out);
    };
    refuse_foreign(pv, &dev, &req.vg, "remove")?;
    if pv.vg.is_some() {
        if pv.pe_alloc_count > 0 {
            let users: Vec<String> = a
                .lvm
                .lvs(&req.vg)?
                .into_iter()
                .filter(|lv| {
                    lv.segments
                        .iter()
                        .any(|s| s.ranges.iter().any(|r| r.pv == pv.name))
                })
                .map(|lv| lv.name)
                .collect();
            return Err(fail(
                ErrorKind::Refused,
                format!(
                    "PV {} of {} still holds {} allocated extents (LVs: {}): move or remove them first",
                    dev.display(),
                    req.vg,
                    pv.pe_alloc_count,
                    users.join(", ")
                ),
            ));
        }
        let vg = a
            .lvm
            .vg(&req.vg)?
            .ok_or_else(|| anyhow::anyhow!("volume group {} vanished", req.vg))?;
        if vg.pv_count <= 1 {
            if vg.lv_count > 0 {
                return Err(fail(
                    ErrorKind::Refused,
                    format!(
                        "{} is the last PV of {} which still has {} LVs",
                        dev.display(),
                        req.vg,
                        vg.lv_count
                    ),
                ));
            }
            tracing::info!("vgremove {} (its last PV {} goes)", req.vg, dev.display());
            a.lvm.vgremove(&req.vg)?;
            out.vg_removed = true;
        } else {
            tracing::info!("vgreduce {} {}", req.vg, dev.display());
            a.lvm.vgreduce(&req.vg, &dev)?;
            out.vg_reduced = true;
        }
    }
    tracing::info!("pvremove {}", dev.display());
    a.lvm.pvremove(&dev)?;
    out.pv_removed = true;
    Ok(out)
}
