//! `snap_revert`: the image's content becomes snapshot `TARGET_SNAPSHOT`'s: the snapshot LV is
//! copied over the image LV on the image host. The image LV is not fresh, so every range the
//! copy skips (zero blocks) is zeroed: nothing of the reverted-from content survives. The
//! image LV grows first if the snapshot is larger. A crash part-way leaves the snapshot intact
//! and a rerun copies again.

use super::{image_and_id, lock_image, snapshot_parts, SnapshotParts};
use crate::actions::Ctx;
use crate::drive::storage::Storage;
use crate::host::transfer::{self, CopyOptions};
use crate::lvm::LvName;
use crate::one::message::{Datastore, DsMessage};
use crate::one::output::ActionOutput;

/// Runs `snap_revert`.
pub fn run(ctx: &Ctx, m: &DsMessage) -> anyhow::Result<ActionOutput> {
    let (image, id) = image_and_id(m, "snap_revert")?;
    let storage = Storage::new(ctx);
    let _lock = lock_image(ctx, m.datastore.id, id)?;
    let s = snapshot_parts(&storage, image, &m.datastore, id)?;
    let snap = s.require_snapshot()?;
    copy_back(ctx, &storage, &m.datastore, &s, &snap)?;
    Ok(ActionOutput::Nothing)
}

/// Copies snapshot LV `snap` over the image LV (grown first when smaller).
pub(super) fn copy_back(
    ctx: &Ctx,
    storage: &Storage<'_>,
    ds: &Datastore,
    s: &SnapshotParts,
    snap: &LvName,
) -> anyhow::Result<()> {
    let image_lv = s.require_image()?;
    let snap_size = s
        .lvs
        .iter()
        .find(|l| l.name == snap.as_str())
        .map(|l| l.size)
        .unwrap_or_default();
    if image_lv.size < snap_size {
        let drive = s.img.drive(storage, ds)?;
        storage.extend(&drive, s.img.lv.as_str(), snap_size)?;
    } else if image_lv.size > snap_size {
        tracing::warn!(
            "image {}: snapshot {} holds {snap_size} bytes, the image {}: the bytes beyond the snapshot are kept",
            s.img.id,
            s.sid,
            image_lv.size
        );
    }
    storage.bump_generation(&s.img.loc())?;
    let got = transfer::copy_lv(
        &storage.hosts,
        &ctx.config,
        &s.img.loc_of(snap),
        &s.img.loc(),
        CopyOptions {
            fresh: false,
            size_bytes: Some(snap_size),
        },
    )?;
    tracing::info!(
        "image {}: reverted to snapshot {} ({} MiB of data, {} MiB zeroed)",
        s.img.id,
        s.sid,
        got.data_bytes >> 20,
        got.zeroed_bytes >> 20
    );
    Ok(())
}
