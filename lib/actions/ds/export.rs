//! `export`: what the marketplace needs to import an image (run by one_market; the id argument
//! is the marketplace app). Prints the `IMPORT_INFO` document the stock drivers print:
//!
//! ```text
//! <IMPORT_INFO><IMPORT_SOURCE><![CDATA[ssh://<image host>:<LV device>]]></IMPORT_SOURCE>
//! <MD5><![CDATA[…]]></MD5><SIZE><![CDATA[<MB>]]></SIZE><FORMAT><![CDATA[raw]]></FORMAT>
//! <DISPOSE>NO</DISPOSE></IMPORT_INFO>
//! ```
//!
//! `ssh://host:path` is what OpenNebula's `downloader.sh` reads with `ssh host cat path` (the
//! stock lvm driver exports its LVs the same way; an image host that is the frontend gets the
//! plain path): the bytes go from the image host to the marketplace without a copy, and
//! `DISPOSE NO` says there is none to clean up. The LV is
//! activated by the agent before its MD5 is computed, so the device node exists when the
//! marketplace reads it (oneadmin reads LV nodes as a member of the `disk` group). MD5 and
//! SIZE cover the whole LV: what `cat` of the node yields.

use super::{image_and_id, ImageLv, MIB};
use crate::actions::Ctx;
use crate::drive::storage::Storage;
use crate::host::data::LvRef;
use crate::host::image_ops::{ProbeReq, Probed};
use crate::host::transfer;
use crate::one::message::DsMessage;
use crate::one::output::ActionOutput;

/// Runs `export`.
pub fn run(ctx: &Ctx, m: &DsMessage) -> anyhow::Result<ActionOutput> {
    let (image, id) = image_and_id(m, "export")?;
    let ds = &m.datastore;
    let img = ImageLv::from_source(image, ds, id)?;
    let storage = Storage::new(ctx);
    img.existing(&storage)?;
    let probed: Probed = storage.hosts.call(
        &img.host,
        &ProbeReq {
            lv: LvRef {
                vg: img.vg.clone(),
                lv: img.lv.clone(),
            },
            raw: true,
        },
    )?;
    let sum = transfer::checksum(&storage.hosts, &img.loc(), None, true)?;
    let md5 = sum
        .md5
        .ok_or_else(|| anyhow::anyhow!("host {}: checksum gave no MD5", img.host))?;
    // On the frontend itself the marketplace reads the node directly, as the stock drivers
    // print a plain path without BRIDGE_LIST.
    let source = if img.host == ctx.config.frontend_host {
        probed.path.clone()
    } else {
        format!("ssh://{}:{}", img.host, probed.path)
    };
    tracing::info!("image {id}: exported as {source}");
    Ok(ActionOutput::Document(import_info(
        &source,
        &md5,
        probed.lv_bytes.div_ceil(MIB),
    )))
}

/// The document, one line.
fn import_info(source: &str, md5: &str, size_mb: u64) -> String {
    let cdata = |s: &str| format!("<![CDATA[{}]]>", s.replace("]]>", "]]]]><![CDATA[>"));
    format!(
        "<IMPORT_INFO><IMPORT_SOURCE>{}</IMPORT_SOURCE><MD5>{}</MD5><SIZE>{}</SIZE><FORMAT>{}</FORMAT><DISPOSE>NO</DISPOSE></IMPORT_INFO>",
        cdata(source),
        cdata(md5),
        cdata(&size_mb.to_string()),
        cdata("raw"),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn document_shape() {
        assert_eq!(
            super::import_info("ssh://kvm1:/dev/vg-one-1/img-one-2", "ab", 4),
            "<IMPORT_INFO><IMPORT_SOURCE><![CDATA[ssh://kvm1:/dev/vg-one-1/img-one-2]]></IMPORT_SOURCE><MD5><![CDATA[ab]]></MD5><SIZE><![CDATA[4]]></SIZE><FORMAT><![CDATA[raw]]></FORMAT><DISPOSE>NO</DISPOSE></IMPORT_INFO>"
        );
    }
}
