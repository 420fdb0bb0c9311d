//! `rm`: removes the image LV, its snapshot LVs and any import scratch, then lets the drive
//! shrink, and removes the hosts' cached copies of the image (thin drives). Refuses (exit 6) a SOURCE that is not one of ours: not
//! `<host>:vg-one-<this ds>/img-one-<this image>`, or an LV without this image's tag. An image
//! already gone is success (oned may retry).

use super::{image_and_id, lock_image, ImageLv};
use crate::actions::Ctx;
use crate::drive::storage::Storage;
use crate::lvm::LvName;
use crate::one::message::DsMessage;
use crate::one::output::ActionOutput;

/// Runs `rm`.
pub fn run(ctx: &Ctx, m: &DsMessage) -> anyhow::Result<ActionOutput> {
    let (image, id) = image_and_id(m, "rm")?;
    let ds = &m.datastore;
    let img = ImageLv::from_source(image, ds, id)?;
    let storage = Storage::new(ctx);
    let drive = img.drive(&storage, ds)?;
    let _lock = lock_image(ctx, ds.id, id)?;
    let lvs = img.list(&storage)?;
    if let Some(lv) = lvs.iter().find(|l| l.name == img.lv.as_str()) {
        img.check_owned(lv)?;
    }
    // Snapshots and the scratch first: the image LV goes last, so a failure part-way leaves
    // an image oned can still remove.
    let mut doomed: Vec<LvName> = img
        .snapshots(&lvs)
        .into_iter()
        .map(|(_, l)| l.name.parse())
        .collect::<anyhow::Result<_>>()?;
    let scratch = img.scratch();
    if lvs.iter().any(|l| l.name == scratch.as_str()) {
        doomed.push(scratch);
    }
    doomed.push(img.lv.clone());
    let mut removed = 0;
    for lv in &doomed {
        if img.remove(&storage, lv)? {
            removed += 1;
        }
    }
    // Hosts' cached copies go too, even on a retry: a copy is useless without its image.
    storage.evict_image_caches(id);
    if removed == 0 {
        tracing::info!("image {id}: {} is already gone", img.source());
    } else {
        tracing::info!("image {id}: removed {removed} LV(s) of {}", img.source());
        storage.shrink(&drive);
    }
    Ok(ActionOutput::Nothing)
}
