//! `cp`: import an image (a frontend file or an http(s) URL) into a new raw LV
//! `img-one-<id>`; prints `<SOURCE> raw`.
//!
//! The pipeline, read by the frontend and streamed to the image host (nothing lands on the
//! frontend's disk):
//!
//! ```text
//! origin ─▶ hash (MD5/SHA1 of the bytes as served) ─▶ rate limit ─▶ decompress (gz/xz/bz2/zst)
//!        ─▶ sparse, checksummed stream ─▶ image host:
//!             raw     → img-one-<id>          (sized to the content, grown first)
//!             non-raw → img-one-<id>-import ─▶ qemu-img convert on the host ─▶ img-one-<id>
//! ```
//!
//! A local uncompressed file is read by position, its holes skipped (and hashed by the stream
//! itself when the template asks for MD5). The image LV is tagged ready only after the stream
//! was verified by the host, the hash matched and the conversion ended; any failure removes
//! the LVs made so far.

use anyhow::Context;

use super::content::{self, peek, Expected, HashTap, RateLimited, HEAD_BYTES};
use super::origin::{Http, Origin};
use super::{
    image_and_id, lock_image, prepare, source_and_format, Existing, ImageLv, Partial, MIB,
};
use crate::actions::Ctx;
use crate::drive::engine::DriveRef;
use crate::drive::storage::Storage;
use crate::error::{fail, ErrorKind};
use crate::host::data::{LvRef, Received};
use crate::host::image_ops::format::{self, DiskFormat};
use crate::host::image_ops::{ConvertReq, ProbeReq, Probed};
use crate::host::transfer::{self, LvLoc};
use crate::one::message::{Datastore, DsMessage, Image};
use crate::one::output::ActionOutput;
use crate::stream::Source;

/// Scratch space kept beyond the estimate when a non-raw image's stored size is unknown.
const SCRATCH_MARGIN: u64 = 64 * MIB;

/// What cp will do, decided from the message before anything is touched.
struct Plan {
    origin: Origin,
    expected: Option<Expected>,
    decompress: bool,
    rate: Option<u64>,
    /// `IMAGE/SIZE` (what stat measured), in bytes.
    size_hint: Option<u64>,
}

impl Plan {
    fn new(ctx: &Ctx, image: &Image, ds: &Datastore) -> anyhow::Result<Plan> {
        let origin = Origin::resolve(&image.path, ds, &ctx.config.frontend_root)?;
        let expected = Expected::from_template(&image.template)?;
        let decompress = !ds
            .template
            .get_nonempty("NO_DECOMPRESS")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("yes"));
        let rate = ds
            .template
            .get_nonempty("LIMIT_TRANSFER_BW")
            .map(content::parse_rate)
            .transpose()?;
        Ok(Plan {
            origin,
            expected,
            decompress,
            rate,
            size_hint: image.size_mb.filter(|&s| s > 0).map(|s| s * MIB),
        })
    }
}

/// Runs `cp`.
pub fn run(ctx: &Ctx, m: &DsMessage) -> anyhow::Result<ActionOutput> {
    let (image, id) = image_and_id(m, "cp")?;
    let ds = &m.datastore;
    let plan = Plan::new(ctx, image, ds)?;
    let storage = Storage::new(ctx);
    let img = ImageLv::for_new(&storage, ds, id)?;
    let drive = img.drive(&storage, ds)?;
    let _lock = lock_image(ctx, ds.id, id)?;
    if let Existing::Ready = prepare(&storage, &img)? {
        return Ok(source_and_format(&img));
    }
    let mut partial = Partial::new(&storage, &img, &drive);
    import(ctx, &storage, &plan, &img, &drive, &mut partial)?;
    img.mark_ready(&storage)?;
    partial.keep();
    Ok(source_and_format(&img))
}

/// How the hash of the download is computed.
enum Hashing {
    None,
    /// A tap on the bytes as read.
    Tap(HashTap),
    /// The stream's own MD5 of the content (which is the file, uncompressed).
    StreamMd5,
}

fn import(
    ctx: &Ctx,
    storage: &Storage<'_>,
    plan: &Plan,
    img: &ImageLv,
    drive: &DriveRef,
    partial: &mut Partial<'_, '_>,
) -> anyhow::Result<()> {
    let what = plan.origin.describe();
    let http = Http::new();
    let opened = plan.origin.open(&http)?;
    let tap = plan.expected.as_ref().map(HashTap::new);
    let mut reader = opened.reader;
    if let Some(t) = &tap {
        reader = Box::new(t.reader(reader));
    }
    if let Some(rate) = plan.rate {
        reader = Box::new(RateLimited::new(reader, rate));
    }
    let (raw_head, reader) = peek(reader, 16).with_context(|| format!("reading {what}"))?;
    let compression = if plan.decompress {
        content::compression(&raw_head)
    } else {
        None
    };
    let reader = content::decoder(compression, reader)?;
    let (head, reader) = peek(reader, HEAD_BYTES).with_context(|| format!("reading {what}"))?;
    let fmt = format::detect(&head).with_context(|| what.clone())?;
    // The stored size when the data states it (never by reading it twice).
    let exact = match compression {
        None => opened.len,
        Some(c) => plan.origin.stated_size(&http, c, opened.len)?,
    };
    tracing::info!(
        "importing {what}: {fmt}{}{}",
        compression
            .map(|c| format!(", {c}-compressed"))
            .unwrap_or_default(),
        exact.map(|n| format!(", {n} bytes")).unwrap_or_default()
    );
    // A plain local file is read by position so its holes are skipped, not read.
    let by_position = plan
        .origin
        .file()
        .filter(|_| compression.is_none() && plan.rate.is_none())
        .filter(|_| !matches!(plan.expected, Some(Expected::Sha1(_))));
    let (mut source, hashing) = match by_position {
        Some(path) => {
            drop(reader);
            let h = if plan.expected.is_some() {
                Hashing::StreamMd5
            } else {
                Hashing::None
            };
            (Source::open(path, None)?, h)
        }
        None => (
            Source::from_reader(reader, exact),
            tap.map_or(Hashing::None, Hashing::Tap),
        ),
    };
    let md5_by_stream = matches!(hashing, Hashing::StreamMd5);
    let tag = img.tag();
    let tags = [tag.as_str()];
    let push = |source: &mut Source<'_>, lv: &LvLoc, fresh: bool| -> anyhow::Result<Received> {
        let got = transfer::push(
            &storage.hosts,
            &ctx.config,
            source,
            lv,
            fresh,
            md5_by_stream,
        )?;
        tracing::info!(
            "image {}: {what} into {lv}: {} MiB of data, {} MiB on the wire in {:.1}s (data_bytes={} wire_bytes={})",
            img.id,
            got.data_bytes >> 20,
            got.wire_bytes >> 20,
            got.elapsed_secs,
            got.data_bytes,
            got.wire_bytes
        );
        if let Some(e) = &plan.expected {
            let actual = match &hashing {
                Hashing::Tap(t) => t.hex(),
                Hashing::StreamMd5 => got.md5.clone().ok_or_else(|| {
                    anyhow::anyhow!("the stream did not report the MD5 it was asked for")
                })?,
                Hashing::None => unreachable!("a hash is expected, so it is computed"),
            };
            e.verify(&actual, &what)?;
        }
        Ok(got)
    };

    if fmt == DiskFormat::Raw {
        let size = exact.or(plan.size_hint).ok_or_else(|| {
            fail(
                ErrorKind::BadInput,
                format!("cannot tell the size of {what} before reading it, and the message has no IMAGE/SIZE"),
            )
        })?;
        if size == 0 {
            return Err(fail(ErrorKind::BadInput, format!("{what} is empty")));
        }
        let created = storage.allocate(drive, img.lv.as_str(), size, &tags)?;
        partial.track(&img.lv);
        push(&mut source, &img.loc(), created.created)?;
        crate::crashpoint::reached("cp:pushed");
        return Ok(());
    }

    // Non-raw: the image file goes into a scratch LV, qemu-img converts it on the host.
    let scratch = img.scratch();
    let scratch_size = match exact {
        Some(n) => n,
        None => {
            let estimate = format::header_virtual_size(fmt, &head)
                .or(plan.size_hint)
                .ok_or_else(|| {
                    fail(
                        ErrorKind::BadInput,
                        format!("cannot tell the size of the {fmt} image {what}, and the message has no IMAGE/SIZE"),
                    )
                })?;
            estimate + estimate / 8 + SCRATCH_MARGIN
        }
    };
    let created = storage.allocate(drive, scratch.as_str(), scratch_size.max(1), &tags)?;
    partial.track(&scratch);
    push(&mut source, &img.loc_of(&scratch), created.created)?;
    crate::crashpoint::reached("cp:pushed");
    let scratch_ref = LvRef {
        vg: img.vg.clone(),
        lv: scratch.clone(),
    };
    let probed: Probed = storage.hosts.call(
        &img.host,
        &ProbeReq {
            lv: scratch_ref.clone(),
            raw: false,
        },
    )?;
    if probed.format != fmt {
        return Err(fail(
            ErrorKind::Failed,
            format!(
                "{what} read as a {fmt} image on the frontend but as {} once stored",
                probed.format
            ),
        ));
    }
    let created = storage.allocate(drive, img.lv.as_str(), probed.virtual_size, &tags)?;
    partial.track(&img.lv);
    storage.hosts.call(
        &img.host,
        &ConvertReq {
            from_lv: scratch_ref,
            to_lv: LvRef {
                vg: img.vg.clone(),
                lv: img.lv.clone(),
            },
            format: fmt,
            fresh: created.created,
        },
    )?;
    crate::crashpoint::reached("cp:converted");
    img.remove(storage, &scratch)?;
    partial.untrack(&scratch);
    // The scratch space may have been the only thing on a volume.
    storage.shrink(drive);
    Ok(())
}
