//! `stat`: the size in MB (rounded up) of the LV cp will make for `IMAGE/PATH`, printed as one
//! integer. The id argument is a request counter, not an image id.
//!
//! | content | size |
//! |---|---|
//! | non-raw (qcow2, vmdk…), local, uncompressed | `qemu-img info` virtual size (told its format) |
//! | non-raw, at a URL or compressed | the virtual size its header states (a range request: the image is not downloaded) |
//! | raw, uncompressed | the file size / `Content-Length` |
//! | raw, xz or zstd | the size the compressed data states (xz index, zstd frame headers) |
//! | raw, gzip or bzip2 (or no stated size) | decompressed as a stream and counted, never stored |
//!
//! Images cp would refuse (backing files, encryption…) are refused here already.

use super::content::{self, decompressed_prefix, HEAD_BYTES};
use super::origin::{Http, Origin};
use super::MIB;
use crate::actions::Ctx;
use crate::error::{fail, ErrorKind};
use crate::host::image_ops::format::{self, DiskFormat};
use crate::one::message::DsMessage;
use crate::one::output::ActionOutput;

/// Compressed bytes fetched to read a compressed image's header.
const COMPRESSED_HEAD: usize = 1 << 20;

/// Runs `stat`.
pub fn run(ctx: &Ctx, m: &DsMessage) -> anyhow::Result<ActionOutput> {
    let image = m.require_image("stat")?;
    let ds = &m.datastore;
    let origin = Origin::resolve(&image.path, ds, &ctx.config.frontend_root)?;
    let decompress = !ds
        .template
        .get_nonempty("NO_DECOMPRESS")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("yes"));
    let http = Http::new();
    let bytes = measure(&origin, &http, decompress)?;
    if bytes == 0 {
        return Err(fail(
            ErrorKind::BadInput,
            format!("{} is empty", origin.describe()),
        ));
    }
    tracing::info!("{}: {bytes} bytes", origin.describe());
    Ok(ActionOutput::Line(bytes.div_ceil(MIB).to_string()))
}

/// The bytes cp will store for `origin`.
fn measure(origin: &Origin, http: &Http, decompress: bool) -> anyhow::Result<u64> {
    let what = origin.describe();
    let head = origin.head(http, COMPRESSED_HEAD)?;
    let compression = if decompress {
        content::compression(&head.bytes)
    } else {
        None
    };
    let plain_head = match compression {
        None => head.bytes.clone(),
        Some(c) => decompressed_prefix(c, &head.bytes, HEAD_BYTES),
    };
    let fmt = format::detect(&plain_head).map_err(|e| e.context(what.clone()))?;
    if fmt != DiskFormat::Raw {
        if let (Some(path), None) = (origin.file(), compression) {
            let info =
                crate::host::image_ops::qemu_info(path, fmt, std::time::Duration::from_secs(120))
                    .map_err(|e| e.context(what.clone()))?;
            return Ok(info.virtual_size);
        }
        return format::header_virtual_size(fmt, &plain_head).ok_or_else(|| {
            fail(
                ErrorKind::Failed,
                format!(
                    "cannot tell the virtual size of the {fmt} image {what} without reading it all{}",
                    if compression.is_some() { " (decompress it first)" } else { "" }
                ),
            )
        });
    }
    match compression {
        None => {
            if let Some(n) = head.len {
                return Ok(n);
            }
        }
        Some(c) => {
            if let Some(n) = origin.stated_size(http, c, head.len)? {
                return Ok(n);
            }
        }
    }
    // Counted as a stream: the bytes pass through, none is kept.
    tracing::info!("counting the bytes of {what}");
    let opened = origin.open(http)?;
    let mut r = content::decoder(compression, opened.reader)?;
    content::count(&mut r).map_err(|e| {
        fail(
            ErrorKind::Failed,
            format!(
                "reading {what}{}: {e}",
                compression.map(|c| format!(" ({c})")).unwrap_or_default()
            ),
        )
    })
}
