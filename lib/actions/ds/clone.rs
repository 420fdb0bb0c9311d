//! `clone`: copies image `CLONING_ID` (its SOURCE arrives as `IMAGE/PATH`) into a new LV
//! `img-one-<id>` on this datastore's drive; prints `<SOURCE> raw`.
//!
//! The original may live on another datastore and another host (a clone across datastores:
//! oned adds `SOURCE_BRIDGE_LIST`, but the SOURCE names the host already). Same host: the
//! agent copies LV to LV; two hosts: the new image's host pulls from the original's, host to
//! host. Both skip zero blocks, and the copy is verified before the LV is tagged ready.

use super::{image_and_id, lock_image, prepare, source_and_format, Existing, ImageLv, Partial};
use crate::actions::Ctx;
use crate::drive::naming::{image_lv, parse_source};
use crate::drive::storage::Storage;
use crate::error::{fail, ErrorKind};
use crate::host::transfer::{self, CopyOptions};
use crate::one::message::DsMessage;
use crate::one::output::ActionOutput;

/// Runs `clone`.
pub fn run(ctx: &Ctx, m: &DsMessage) -> anyhow::Result<ActionOutput> {
    let (image, id) = image_and_id(m, "clone")?;
    let ds = &m.datastore;
    let original_id = image.cloning_id.unwrap_or(-1);
    let path = image.path.trim();
    let from = parse_source(path)
        .filter(|s| s.lv == image_lv(original_id))
        .ok_or_else(|| {
            fail(
                ErrorKind::Refused,
                format!(
                    "the image to clone, {path:?}, is not image {original_id} of this driver (expected <host>:vg-one-<ds>/{})",
                    image_lv(original_id)
                ),
            )
        })?;
    let original = ImageLv::new(&from.host, from.ds, original_id)?;
    let storage = Storage::new(ctx);
    let img = ImageLv::for_new(&storage, ds, id)?;
    if img.source() == original.source() {
        return Err(fail(
            ErrorKind::BadInput,
            "an image cannot be cloned onto itself",
        ));
    }
    let drive = img.drive(&storage, ds)?;
    let _lock = lock_image(ctx, ds.id, id)?;
    if let Existing::Ready = prepare(&storage, &img)? {
        return Ok(source_and_format(&img));
    }
    let src = original.existing(&storage)?;
    let mut partial = Partial::new(&storage, &img, &drive);
    let tag = img.tag();
    let created = storage.allocate(&drive, img.lv.as_str(), src.size, &[tag.as_str()])?;
    partial.track(&img.lv);
    let got = transfer::copy_lv(
        &storage.hosts,
        &ctx.config,
        &original.loc(),
        &img.loc(),
        CopyOptions {
            fresh: created.created,
            size_bytes: Some(src.size),
        },
    )?;
    tracing::info!(
        "image {id}: cloned {} ({} MiB, {} MiB of data) in {:.1}s",
        original.source(),
        got.logical_bytes >> 20,
        got.data_bytes >> 20,
        got.elapsed_secs
    );
    img.mark_ready(&storage)?;
    partial.keep();
    Ok(source_and_format(&img))
}
