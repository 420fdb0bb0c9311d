//! Logical-volume operations: create, extend, remove, tag, list, rename.
//!
//! Only LVs carrying a `one.*` tag (other than the agent's own bookkeeping tags) are ever
//! changed; anything else is refused. `lv-create` and `lv-extend` go through the zeroing steps
//! of [`super::zero`], whose module documentation holds the crash reasoning.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{fail, ErrorKind};
use crate::lvm::{Lv, LvName, Tag, Vg, VgName};
use crate::wait::{poll, Poll, Wait};

use super::agent::Agent;
use super::proto::{
    LvCreateReq, LvCreated, LvExtendReq, LvExtended, LvList, LvListReq, LvRemoveReq, LvRemoved,
    LvRenameReq, LvRenamed, LvTagReq, LvTagged, PoolEnsureReq, PoolStatus,
};
use super::zero;

/// Whether a tag marks an object as ours for the callers (bookkeeping tags do not count).
fn is_owner_tag(t: &str) -> bool {
    let key = t.split_once('=').map(|(k, _)| k).unwrap_or(t);
    key.starts_with("one.") && !zero::RESERVED_KEYS.contains(&key)
}

fn is_ours(lv: &Lv) -> bool {
    lv.tags.iter().any(|t| is_owner_tag(t))
}

fn refuse_unless_ours(lv: &Lv, doing: &str) -> anyhow::Result<()> {
    if is_ours(lv) {
        Ok(())
    } else {
        Err(fail(
            ErrorKind::Refused,
            format!(
                "LV {}/{} carries no one.* tag (tags: [{}]): refusing to {doing} an LV that is not ours",
                lv.vg,
                lv.name,
                lv.tags.join(",")
            ),
        ))
    }
}

fn refuse_reserved(tags: &[Tag]) -> anyhow::Result<()> {
    match tags.iter().find(|t| zero::RESERVED_KEYS.contains(&t.key())) {
        Some(t) => Err(fail(
            ErrorKind::BadInput,
            format!("tag {t} is the agent's own bookkeeping and cannot be set or removed"),
        )),
        None => Ok(()),
    }
}

fn require_vg(a: &Agent, vg: &VgName) -> anyhow::Result<Vg> {
    a.lvm.vg(vg)?.ok_or_else(|| {
        fail(
            ErrorKind::Failed,
            format!("volume group {vg} does not exist on this host"),
        )
    })
}

fn require_lv(a: &Agent, vg: &VgName, lv: &LvName) -> anyhow::Result<Lv> {
    a.lvm
        .lv(vg, lv)?
        .ok_or_else(|| fail(ErrorKind::Failed, format!("LV {vg}/{lv} does not exist")))
}

/// The device node of an existing LV of ours, activated and waited for (data operations).
pub(crate) fn device_of(
    a: &Agent,
    vg: &VgName,
    lv: &LvName,
    timeout: Duration,
) -> anyhow::Result<PathBuf> {
    let l = require_lv(a, vg, lv)?;
    refuse_unless_ours(&l, "reading or writing")?;
    if zero::zero_from(&l).is_some() {
        return Err(fail(
            ErrorKind::Failed,
            format!("LV {vg}/{lv} has not finished its zeroing (an interrupted lv-create); rerun lv-create first"),
        ));
    }
    ensure_device(a, vg, &l, timeout)
}

/// Tags as the caller sees them (bookkeeping removed).
fn visible_tags(lv: &Lv) -> Vec<String> {
    lv.tags
        .iter()
        .filter(|t| !t.starts_with(&format!("{}=", zero::ZERO_FROM_KEY)))
        .cloned()
        .collect()
}

fn device_size(p: &Path) -> std::io::Result<u64> {
    let f = std::fs::File::open(p)?;
    let m = f.metadata()?;
    if m.file_type().is_block_device() {
        crate::sys::block_device_size(&f)
    } else {
        Ok(m.len())
    }
}

/// Activates the LV (a no-op under the testbed's `activation = 0`) and waits until its node
/// exists with at least the LV's size.
fn ensure_device(a: &Agent, vg: &VgName, lv: &Lv, timeout: Duration) -> anyhow::Result<PathBuf> {
    let name: LvName = lv.name.parse()?;
    let path = a.env.lv_path(vg, &name);
    // lvcreate activates what it makes: a node of the full size is an active LV, and a
    // needless lvchange costs a device-mapper round trip (most of a fast clone).
    if device_size(&path).is_ok_and(|n| n >= lv.size) {
        return Ok(path);
    }
    a.lvm.lvchange_activate(vg, &name)?;
    poll(
        &format!("device node {} of LV {vg}/{}", path.display(), lv.name),
        Wait::new(a.deadline.cap(timeout), Duration::from_millis(100)),
        || match device_size(&path) {
            Ok(n) if n >= lv.size => Ok(Poll::Ready(())),
            Ok(n) => Ok(Poll::Pending(format!("{n} bytes, LV is {}", lv.size))),
            Err(e) => Ok(Poll::Pending(e.to_string())),
        },
    )?;
    Ok(path)
}

/// Steps 2–5 of [`super::zero`]: plan, raise the marks, zero, clear `zero-from`. Returns
/// (fresh bytes, zeroed bytes) of the pending part; (0, 0) when nothing is pending.
fn finish_zeroing(a: &Agent, vg: &Vg, lv: &Lv, path: &Path) -> anyhow::Result<(u64, u64)> {
    let Some(from) = zero::zero_from(lv) else {
        return Ok((0, 0));
    };
    let vg_name: VgName = vg.name.parse()?;
    let pvs: Vec<_> = a
        .lvm
        .pvs()?
        .into_iter()
        .filter(|p| p.vg.as_deref() == Some(vg.name.as_str()))
        .collect();
    let plan = zero::plan(lv, from, &pvs, vg.extent_size)?;
    for b in &plan.bumps {
        a.lvm
            .pvchange_tags(Path::new(&b.pv), &[zero::hwm_tag(b.new)], &b.old)?;
    }
    let zeroed = zero::zero_ranges(path, lv.size, &plan.stale, a.deadline)?;
    let name: LvName = lv.name.parse()?;
    a.lvm
        .lvchange_tags(&vg_name, &name, &[], &zero::zero_from_tags(lv))?;
    tracing::info!(
        "LV {}/{}: {zeroed} stale bytes zeroed, {} fresh bytes left alone",
        vg.name,
        lv.name,
        plan.fresh_bytes
    );
    Ok((plan.fresh_bytes, zeroed))
}

/// The end of create and extend: the device node, then the pending zeroing. Returns the node
/// and (fresh bytes, zeroed bytes).
fn make_ready(
    a: &Agent,
    vg: &Vg,
    lv: &Lv,
    device_timeout: Duration,
) -> anyhow::Result<(PathBuf, u64, u64)> {
    let vg_name: VgName = vg.name.parse()?;
    let path = ensure_device(a, &vg_name, lv, device_timeout)?;
    let (fresh, zeroed) = finish_zeroing(a, vg, lv, &path)?;
    Ok((path, fresh, zeroed))
}

/// `lv-create`.
pub fn lv_create(a: &Agent, req: &LvCreateReq) -> anyhow::Result<LvCreated> {
    refuse_reserved(&req.tags)?;
    if !req.tags.iter().any(|t| is_owner_tag(t.as_str())) {
        return Err(fail(
            ErrorKind::BadInput,
            format!(
                "LV {}/{}: at least one one.* tag is required (an untagged LV could never be removed)",
                req.vg, req.lv
            ),
        ));
    }
    let _lock = a.lock_vg(&req.vg)?;
    let vg = require_vg(a, &req.vg)?;
    let created = match a.lvm.lv(&req.vg, &req.lv)? {
        Some(existing) => {
            let missing: Vec<&str> = req
                .tags
                .iter()
                .map(Tag::as_str)
                .filter(|t| !existing.has_tag(t))
                .collect();
            if !is_ours(&existing) || !missing.is_empty() {
                return Err(fail(
                    ErrorKind::Refused,
                    format!(
                        "LV {}/{} exists with other tags ([{}]; missing {}): not ours to reuse",
                        req.vg,
                        req.lv,
                        existing.tags.join(","),
                        missing.join(",")
                    ),
                ));
            }
            if existing.size < req.size_bytes && !existing.is_thin() {
                return Err(fail(
                    ErrorKind::Refused,
                    format!(
                        "LV {}/{} exists with {} bytes, less than the {} asked: use lv-extend",
                        req.vg, req.lv, existing.size, req.size_bytes
                    ),
                ));
            }
            false
        }
        None => {
            match (&req.thin_pool, &req.snapshot_of) {
                (_, Some(origin)) => {
                    let o = require_lv(a, &req.vg, origin)?;
                    refuse_unless_ours(&o, "snapshot")?;
                    if !o.is_thin() {
                        return Err(fail(
                            ErrorKind::Refused,
                            format!(
                                "LV {}/{origin} is not a thin volume: only thin volumes get instant snapshots",
                                req.vg
                            ),
                        ));
                    }
                    tracing::info!("lvcreate -s {}/{origin} -n {}", req.vg, req.lv);
                    a.lvm
                        .lvcreate_thin_snapshot(&req.vg, origin, &req.lv, &req.tags)?;
                }
                (Some(pool), None) => {
                    tracing::info!(
                        "lvcreate thin {}/{} ({} bytes) in {pool}",
                        req.vg,
                        req.lv,
                        req.size_bytes
                    );
                    a.lvm
                        .lvcreate_thin(&req.vg, pool, &req.lv, req.size_bytes, &req.tags)?;
                }
                (None, None) => {
                    let mut tags = req.tags.clone();
                    tags.push(zero::zero_from_tag(0));
                    tracing::info!("lvcreate {}/{} ({} bytes)", req.vg, req.lv, req.size_bytes);
                    a.lvm.lvcreate(&req.vg, &req.lv, req.size_bytes, &tags)?;
                }
            }
            true
        }
    };
    let mut lv = require_lv(a, &req.vg, &req.lv)?;
    // A snapshot is its origin's size: the disk may be asked larger. The new range of a thin
    // volume holds no block, so it reads zeroes without any zeroing.
    if lv.is_thin() && lv.size < req.size_bytes {
        a.lvm.lvextend(&req.vg, &req.lv, req.size_bytes)?;
        lv = require_lv(a, &req.vg, &req.lv)?;
    }
    let (path, fresh_bytes, zeroed_bytes) =
        make_ready(a, &vg, &lv, Duration::from_secs(req.device_timeout_secs))?;
    Ok(LvCreated {
        vg: req.vg.to_string(),
        lv: req.lv.to_string(),
        path: path.display().to_string(),
        size_bytes: lv.size,
        tags: visible_tags(&lv),
        created,
        fresh_bytes,
        zeroed_bytes,
    })
}

/// `lv-extend`.
pub fn lv_extend(a: &Agent, req: &LvExtendReq) -> anyhow::Result<LvExtended> {
    let _lock = a.lock_vg(&req.vg)?;
    let vg = require_vg(a, &req.vg)?;
    let mut lv = require_lv(a, &req.vg, &req.lv)?;
    refuse_unless_ours(&lv, "extend")?;
    let mut extended = false;
    if lv.size < req.size_bytes {
        // A pending mark from an unfinished run starts lower: keep it, it covers more. A thin
        // volume's new range has no block yet: it reads zeroes, nothing to zero.
        if zero::zero_from(&lv).is_none() && !lv.is_thin() {
            a.lvm
                .lvchange_tags(&req.vg, &req.lv, &[zero::zero_from_tag(lv.extents())], &[])?;
        }
        tracing::info!(
            "lvextend {}/{} from {} to {} bytes",
            req.vg,
            req.lv,
            lv.size,
            req.size_bytes
        );
        a.lvm.lvextend(&req.vg, &req.lv, req.size_bytes)?;
        extended = true;
        lv = require_lv(a, &req.vg, &req.lv)?;
    }
    let (path, fresh_bytes, zeroed_bytes) =
        make_ready(a, &vg, &lv, Duration::from_secs(req.device_timeout_secs))?;
    Ok(LvExtended {
        vg: req.vg.to_string(),
        lv: req.lv.to_string(),
        path: path.display().to_string(),
        size_bytes: lv.size,
        extended,
        fresh_bytes,
        zeroed_bytes,
    })
}

/// `pool-ensure`: creates the drive's thin pool, or grows its data and metadata to the sizes
/// asked (never shrinks: LVM cannot).
pub fn pool_ensure(a: &Agent, req: &PoolEnsureReq) -> anyhow::Result<PoolStatus> {
    refuse_reserved(&req.tags)?;
    if !req.tags.iter().any(|t| is_owner_tag(t.as_str())) {
        return Err(fail(
            ErrorKind::BadInput,
            format!(
                "pool {}/{}: at least one one.* tag is required",
                req.vg, req.pool
            ),
        ));
    }
    if !req.chunk_bytes.is_power_of_two() {
        return Err(fail(
            ErrorKind::BadInput,
            format!("chunk size {} is not a power of two", req.chunk_bytes),
        ));
    }
    let _lock = a.lock_vg(&req.vg)?;
    require_vg(a, &req.vg)?;
    let (mut created, mut extended) = (false, false);
    let pool = match a.lvm.lv(&req.vg, &req.pool)? {
        Some(p) => p,
        None => {
            tracing::info!(
                "lvcreate thin-pool {}/{} ({} bytes, metadata {} bytes)",
                req.vg,
                req.pool,
                req.data_bytes,
                req.metadata_bytes
            );
            a.lvm.lvcreate_thin_pool(
                &req.vg,
                &req.pool,
                req.data_bytes,
                req.metadata_bytes,
                req.chunk_bytes,
                &req.tags,
            )?;
            created = true;
            require_lv(a, &req.vg, &req.pool)?
        }
    };
    refuse_unless_ours(&pool, "grow")?;
    if !pool.is_thin_pool() {
        return Err(fail(
            ErrorKind::Refused,
            format!("LV {}/{} is not a thin pool", req.vg, req.pool),
        ));
    }
    if pool.size < req.data_bytes {
        tracing::info!(
            "lvextend {}/{} from {} to {} bytes",
            req.vg,
            req.pool,
            pool.size,
            req.data_bytes
        );
        a.lvm.lvextend(&req.vg, &req.pool, req.data_bytes)?;
        extended = true;
    }
    if pool.metadata_size.unwrap_or(0) < req.metadata_bytes {
        tracing::info!(
            "lvextend {}/{} metadata to {} bytes",
            req.vg,
            req.pool,
            req.metadata_bytes
        );
        a.lvm
            .lvextend_pool_metadata(&req.vg, &req.pool, req.metadata_bytes)?;
        extended = true;
    }
    let pool = require_lv(a, &req.vg, &req.pool)?;
    Ok(PoolStatus {
        vg: req.vg.to_string(),
        pool: req.pool.to_string(),
        data_bytes: pool.size,
        metadata_bytes: pool.metadata_size.unwrap_or(0),
        data_bp: pool.data_bp.unwrap_or(0),
        metadata_bp: pool.metadata_bp.unwrap_or(0),
        created,
        extended,
    })
}

/// `lv-remove`.
pub fn lv_remove(a: &Agent, req: &LvRemoveReq) -> anyhow::Result<LvRemoved> {
    let _lock = a.lock_vg(&req.vg)?;
    let mut out = LvRemoved {
        vg: req.vg.to_string(),
        lv: req.lv.to_string(),
        removed: false,
    };
    let Some(lv) = a.lvm.lv(&req.vg, &req.lv)? else {
        tracing::info!("LV {}/{} is already gone", req.vg, req.lv);
        return Ok(out);
    };
    refuse_unless_ours(&lv, "remove")?;
    let missing: Vec<&str> = req
        .require_tags
        .iter()
        .map(Tag::as_str)
        .filter(|t| !lv.has_tag(t))
        .collect();
    if !missing.is_empty() {
        return Err(fail(
            ErrorKind::Refused,
            format!(
                "LV {}/{} lacks the required tags {} (it has [{}]): not removing it",
                req.vg,
                req.lv,
                missing.join(","),
                lv.tags.join(",")
            ),
        ));
    }
    tracing::info!("lvremove {}/{}", req.vg, req.lv);
    a.lvm.lvremove(&req.vg, &req.lv)?;
    out.removed = true;
    Ok(out)
}

/// `lv-tag`.
pub fn lv_tag(a: &Agent, req: &LvTagReq) -> anyhow::Result<LvTagged> {
    refuse_reserved(&req.add)?;
    refuse_reserved(&req.del)?;
    if let Some(t) = req.add.iter().find(|t| req.del.contains(t)) {
        return Err(fail(
            ErrorKind::BadInput,
            format!("tag {t} is both added and deleted"),
        ));
    }
    let _lock = a.lock_vg(&req.vg)?;
    let lv = require_lv(a, &req.vg, &req.lv)?;
    refuse_unless_ours(&lv, "tag")?;
    let add: Vec<Tag> = req
        .add
        .iter()
        .filter(|t| !lv.has_tag(t.as_str()))
        .cloned()
        .collect();
    let del: Vec<Tag> = req
        .del
        .iter()
        .filter(|t| lv.has_tag(t.as_str()))
        .cloned()
        .collect();
    let mut after: Vec<String> = lv
        .tags
        .iter()
        .filter(|t| !del.iter().any(|d| d.as_str() == t.as_str()))
        .cloned()
        .collect();
    after.extend(add.iter().map(|t| t.to_string()));
    after.sort();
    if !after.iter().any(|t| is_owner_tag(t)) {
        return Err(fail(
            ErrorKind::Refused,
            format!(
                "LV {}/{} would be left without a one.* tag: refusing (it could never be removed)",
                req.vg, req.lv
            ),
        ));
    }
    let changed = !(add.is_empty() && del.is_empty());
    if changed {
        tracing::info!(
            "LV {}/{}: tags +[{}] -[{}]",
            req.vg,
            req.lv,
            add.iter().map(Tag::as_str).collect::<Vec<_>>().join(","),
            del.iter().map(Tag::as_str).collect::<Vec<_>>().join(",")
        );
        a.lvm.lvchange_tags(&req.vg, &req.lv, &add, &del)?;
    }
    Ok(LvTagged {
        vg: req.vg.to_string(),
        lv: req.lv.to_string(),
        tags: after,
        changed,
    })
}

/// `lv-list` (no lock: a read).
pub fn lv_list(a: &Agent, req: &LvListReq) -> anyhow::Result<LvList> {
    // One LVM command when the VG has LVs (the common case, and each costs a metadata scan).
    let all = a.lvm.lvs(&req.vg)?;
    let vg_exists = !all.is_empty() || a.lvm.vg(&req.vg)?.is_some();
    let lvs = all
        .into_iter()
        .filter(|lv| req.tags.iter().all(|t| lv.has_tag(t.as_str())))
        .collect();
    Ok(LvList {
        vg: req.vg.to_string(),
        vg_exists,
        lvs,
    })
}

/// `lv-rename`.
pub fn lv_rename(a: &Agent, req: &LvRenameReq) -> anyhow::Result<LvRenamed> {
    let _lock = a.lock_vg(&req.vg)?;
    let from = a.lvm.lv(&req.vg, &req.lv)?;
    let to = a.lvm.lv(&req.vg, &req.new_name)?;
    let mut out = LvRenamed {
        vg: req.vg.to_string(),
        from: req.lv.to_string(),
        to: req.new_name.to_string(),
        renamed: false,
    };
    match (from, to) {
        _ if req.lv == req.new_name => {
            require_lv(a, &req.vg, &req.lv)?;
        }
        (Some(_), Some(_)) => {
            return Err(fail(
                ErrorKind::Refused,
                format!(
                    "cannot rename {}/{} to {}: both exist",
                    req.vg, req.lv, req.new_name
                ),
            ))
        }
        (None, Some(_)) => {
            tracing::info!("{}/{} is already named {}", req.vg, req.lv, req.new_name);
        }
        (None, None) => {
            return Err(fail(
                ErrorKind::Failed,
                format!(
                    "LV {}/{} does not exist (nor {})",
                    req.vg, req.lv, req.new_name
                ),
            ))
        }
        (Some(lv), None) => {
            refuse_unless_ours(&lv, "rename")?;
            tracing::info!("lvrename {}/{} {}", req.vg, req.lv, req.new_name);
            a.lvm.lvrename(&req.vg, &req.lv, &req.new_name)?;
            out.renamed = true;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_ignores_bookkeeping() {
        assert!(is_owner_tag("one.vm=3"));
        assert!(is_owner_tag("one.bsud.state=ready"));
        assert!(!is_owner_tag("one.bsud.zero-from=0"));
        assert!(!is_owner_tag("other=1"));
        assert!(!is_owner_tag("oneish=1"));
    }
}
