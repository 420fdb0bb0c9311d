//! `mkfs`: an empty datablock of `IMAGE/SIZE` MB as a new LV, formatted when `IMAGE/FS` names
//! a file system (ext2/3/4, xfs, vfat) or swap (`FS` or `FORMAT` = `swap`); prints SOURCE.
//!
//! `FORMAT=save_as` (disk-saveas) creates nothing: it prints the SOURCE the image will have,
//! and TM `cpds` creates and fills that LV. Images are raw LVs, so any other FORMAT but raw is
//! refused before anything is made (oned would otherwise record a qcow2 image over raw bytes).

use super::{image_and_id, lock_image, prepare, Existing, ImageLv, Partial, MIB};
use crate::actions::Ctx;
use crate::drive::storage::Storage;
use crate::error::{fail, ErrorKind};
use crate::host::data::LvRef;
use crate::host::fs_ops::{FormatReq, FILESYSTEMS};
use crate::one::message::DsMessage;
use crate::one::output::ActionOutput;

/// Runs `mkfs`.
pub fn run(ctx: &Ctx, m: &DsMessage) -> anyhow::Result<ActionOutput> {
    let (image, id) = image_and_id(m, "mkfs")?;
    let ds = &m.datastore;
    let format = image.format.trim().to_ascii_lowercase();
    let fs = image.fs.trim().to_ascii_lowercase();
    let storage = Storage::new(ctx);
    let img = ImageLv::for_new(&storage, ds, id)?;
    let fs = match (format.as_str(), fs.as_str()) {
        ("save_as", _) => {
            tracing::info!("image {id}: save_as, {} will be made by cpds", img.source());
            return Ok(ActionOutput::Line(img.source()));
        }
        ("swap", _) | (_, "swap") => Some("swap".to_string()),
        ("" | "raw", "") => None,
        ("" | "raw", f) if FILESYSTEMS.contains(&f) => Some(f.to_string()),
        ("" | "raw", _) => {
            return Err(fail(
                ErrorKind::BadInput,
                format!(
                    "file system {:?} is not supported ({})",
                    image.fs.trim(),
                    FILESYSTEMS.join(", ")
                ),
            ))
        }
        (other, _) => {
            return Err(fail(
                ErrorKind::BadInput,
                format!(
                    "FORMAT {other:?} is not supported: bsud images are raw LVs (set DRIVER=raw on the datastore)"
                ),
            ))
        }
    };
    let size = image
        .size_mb
        .filter(|&s| s > 0)
        .ok_or_else(|| fail(ErrorKind::BadInput, "IMAGE/SIZE must be at least 1 MB"))?
        * MIB;
    let drive = img.drive(&storage, ds)?;
    let _lock = lock_image(ctx, ds.id, id)?;
    if let Existing::Ready = prepare(&storage, &img)? {
        return Ok(ActionOutput::Line(img.source()));
    }
    let mut partial = Partial::new(&storage, &img, &drive);
    let tag = img.tag();
    storage.allocate(&drive, img.lv.as_str(), size, &[tag.as_str()])?;
    partial.track(&img.lv);
    if let Some(fs) = fs {
        storage.hosts.call(
            &img.host,
            &FormatReq {
                lv: LvRef {
                    vg: img.vg.clone(),
                    lv: img.lv.clone(),
                },
                fs,
                label: None,
            },
        )?;
    }
    img.mark_ready(&storage)?;
    partial.keep();
    Ok(ActionOutput::Line(img.source()))
}
