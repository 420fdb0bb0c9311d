//! `snap_delete`: removes snapshot `TARGET_SNAPSHOT` of the image — the LV
//! `img-one-<id>-snap-<sid>` next to the image LV — then lets the drive shrink. A snapshot
//! whose LV is already gone is success with a warning naming it: oned retries an action whose
//! answer it lost, and the state it asks for (no such snapshot) holds.

use super::{image_and_id, lock_image, snapshot_parts};
use crate::actions::Ctx;
use crate::drive::storage::Storage;
use crate::one::message::DsMessage;
use crate::one::output::ActionOutput;

/// Runs `snap_delete`.
pub fn run(ctx: &Ctx, m: &DsMessage) -> anyhow::Result<ActionOutput> {
    let (image, id) = image_and_id(m, "snap_delete")?;
    let storage = Storage::new(ctx);
    let _lock = lock_image(ctx, m.datastore.id, id)?;
    let s = snapshot_parts(&storage, image, &m.datastore, id)?;
    let snap = match s.require_snapshot() {
        Ok(snap) => snap,
        Err(e) => {
            tracing::warn!("{e:#}; nothing to delete");
            return Ok(ActionOutput::Nothing);
        }
    };
    s.img.remove(&storage, &snap)?;
    tracing::info!("image {id}: snapshot {} removed", s.sid);
    storage.shrink(&s.img.drive(&storage, &m.datastore)?);
    Ok(ActionOutput::Nothing)
}
