//! `snap_flatten`: snapshot `TARGET_SNAPSHOT` becomes the image's content and every snapshot
//! LV of the image is removed (oned clears all its snapshot records on success).
//!
//! Crash-safe order: copy the snapshot over the image, mark the image
//! (`one.bsud.flatten=<sid>`), remove the snapshot LVs, unmark. A rerun that finds the mark
//! and no snapshot LV knows the copy was done and only finishes the removals.

use super::snap_revert::copy_back;
use super::{image_and_id, lock_image, snapshot_parts};
use crate::actions::Ctx;
use crate::drive::storage::Storage;
use crate::lvm::{LvName, Tag};
use crate::one::message::DsMessage;
use crate::one::output::ActionOutput;

/// Runs `snap_flatten`.
pub fn run(ctx: &Ctx, m: &DsMessage) -> anyhow::Result<ActionOutput> {
    let (image, id) = image_and_id(m, "snap_flatten")?;
    let ds = &m.datastore;
    let storage = Storage::new(ctx);
    let _lock = lock_image(ctx, ds.id, id)?;
    let s = snapshot_parts(&storage, image, ds, id)?;
    let image_lv = s.require_image()?;
    let mark: Tag = format!("one.bsud.flatten={}", s.sid).parse()?;
    let resumed = s.snapshot.is_none() && image_lv.has_tag(mark.as_str());
    if !resumed {
        let snap = s.require_snapshot()?;
        copy_back(ctx, &storage, ds, &s, &snap)?;
        storage.hosts.lv_tag(
            &s.img.host,
            &s.img.vg,
            &s.img.lv,
            std::slice::from_ref(&mark),
            &[],
        )?;
    } else {
        tracing::info!(
            "image {id}: resuming the flatten onto snapshot {} (content copied already)",
            s.sid
        );
    }
    let snapshots: Vec<LvName> = s
        .img
        .snapshots(&s.lvs)
        .into_iter()
        .map(|(_, l)| l.name.parse())
        .collect::<anyhow::Result<_>>()?;
    for lv in &snapshots {
        s.img.remove(&storage, lv)?;
    }
    storage
        .hosts
        .lv_tag(&s.img.host, &s.img.vg, &s.img.lv, &[], &[mark])?;
    tracing::info!(
        "image {id}: flattened onto snapshot {}, {} snapshot LV(s) removed",
        s.sid,
        snapshots.len()
    );
    storage.shrink(&s.img.drive(&storage, ds)?);
    Ok(ActionOutput::Nothing)
}
