//! `snap_delete`: removes snapshot `TARGET_SNAPSHOT` of the image — the LV
//! `img-one-<id>-snap-<sid>` next to the image LV — then lets the drive shrink. A snapshot
//! without its LV is an error naming it (exit 1): oned keeps its record, the operator looks.

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
    let snap = s.require_snapshot()?;
    s.img.remove(&storage, &snap)?;
    tracing::info!("image {id}: snapshot {} removed", s.sid);
    storage.shrink(&s.img.drive(&storage, &m.datastore)?);
    Ok(ActionOutput::Nothing)
}
