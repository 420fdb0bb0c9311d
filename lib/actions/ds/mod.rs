//! Datastore actions (reference §2): decode the message in whichever of the three modes it
//! came, check it for the action, then act — one module per action.
//!
//! Images live as raw LVs `img-one-<id>` on the image datastore's drive on its image host
//! (`BSUD_IMAGE_HOST` ▸ first `BRIDGE_LIST` host ▸ frontend); their SOURCE is
//! `<host>:vg-one-<ds>/img-one-<id>`. Invariants every action keeps:
//! - **Only our LVs.** An LV is touched only under our names (`img-one-<id>`, its snapshots
//!   `img-one-<id>-snap-<sid>`, the import scratch `img-one-<id>-import`) and the image LV only
//!   with its `one.image=<id>` tag; a SOURCE that is not of this shape is refused (exit 6).
//! - **Ready means complete.** An image LV gets `one.bsud.state=ready` only once its content is
//!   verified; a rerun finds a ready LV and answers the same line, finds a partial one (a crash)
//!   and redoes the work from scratch.
//! - **Failures leave nothing.** LVs an action created are removed when it fails
//!   ([`Partial`]), and the drive may shrink after.
//! - **One action per image at a time.** Actions that write an image hold the image's frontend
//!   lock, so a retry racing a still-running attempt waits for it instead of interleaving.

mod clone;
mod content;
mod cp;
mod export;
mod mkfs;
mod monitor;
mod origin;
mod rm;
mod snap_delete;
mod snap_flatten;
mod snap_revert;
mod stat;

use std::ffi::OsString;
use std::io::Read;
use std::time::Instant;

use super::Ctx;
use crate::drive::engine::DriveRef;
use crate::drive::naming::{image_lv, image_source, parse_source, snapshot_lv, vg_name};
use crate::drive::storage::Storage;
use crate::error::{fail, ErrorKind};
use crate::host::data::LvRef;
use crate::host::transfer::LvLoc;
use crate::lock::FileLock;
use crate::lvm::{Lv, LvName, Tag, VgName};
use crate::one::input::read_ds_input;
use crate::one::message::{Datastore, DsMessage, Image};
use crate::one::output::ActionOutput;

/// One MiB: OpenNebula's "MB".
pub(crate) const MIB: u64 = 1 << 20;

/// The tag an image LV gets once its content is complete.
pub(crate) const READY_TAG: &str = "one.bsud.state=ready";

/// Runs datastore action `action`.
pub fn run(
    ctx: &Ctx,
    action: &str,
    args: &[OsString],
    stdin: &mut dyn Read,
) -> anyhow::Result<ActionOutput> {
    let started = Instant::now();
    let input = read_ds_input(args, stdin)?;
    input.message.check_for(action)?;
    let image_id = input.message.image.as_ref().and_then(|i| i.id);
    let ds_id = input.message.datastore.id;
    crate::logging::set_context(|c| {
        c.image_id = image_id;
        c.datastore_id = Some(ds_id);
    });
    tracing::debug!(
        "message via {:?}, id {}, decoded in {:.1} ms",
        input.mode,
        input.id,
        started.elapsed().as_secs_f64() * 1e3
    );
    let m = &input.message;
    let out = match action {
        "stat" => stat::run(ctx, m),
        "cp" => cp::run(ctx, m),
        "mkfs" => mkfs::run(ctx, m),
        "rm" => rm::run(ctx, m),
        "clone" => clone::run(ctx, m),
        "monitor" => monitor::run(ctx, m),
        "export" => export::run(ctx, m),
        "snap_delete" => snap_delete::run(ctx, m),
        "snap_revert" => snap_revert::run(ctx, m),
        "snap_flatten" => snap_flatten::run(ctx, m),
        other => Err(super::not_implemented("datastore", other)),
    };
    tracing::debug!(
        "{} in {:.1} ms",
        if out.is_ok() { "done" } else { "failed" },
        started.elapsed().as_secs_f64() * 1e3
    );
    out
}

/// The image of a message with its id (checked by `check_for` already).
pub(crate) fn image_and_id<'m>(m: &'m DsMessage, action: &str) -> anyhow::Result<(&'m Image, i64)> {
    let image = m.require_image(action)?;
    Ok((image, image.require_id()?))
}

/// An image LV and where it lives.
#[derive(Debug, Clone)]
pub(crate) struct ImageLv {
    /// The image host.
    pub host: String,
    /// The datastore whose VG holds it.
    pub ds: i64,
    /// The image id.
    pub id: i64,
    /// `vg-one-<ds>`.
    pub vg: VgName,
    /// `img-one-<id>`.
    pub lv: LvName,
}

impl ImageLv {
    /// Image `id` on datastore `ds`'s drive on `host`.
    pub fn new(host: &str, ds: i64, id: i64) -> anyhow::Result<ImageLv> {
        Ok(ImageLv {
            host: host.to_string(),
            ds,
            id,
            vg: vg_name(ds).parse()?,
            lv: image_lv(id).parse()?,
        })
    }

    /// Where a new image of datastore `ds` goes.
    pub fn for_new(storage: &Storage<'_>, ds: &Datastore, id: i64) -> anyhow::Result<ImageLv> {
        ImageLv::new(&storage.image_host(ds)?, ds.id, id)
    }

    /// The image `IMAGE/SOURCE` names, refused (exit 6) unless it is ours: the shape
    /// `<host>:vg-one-<ds>/img-one-<id>` with this datastore and this image id.
    pub fn from_source(image: &Image, ds: &Datastore, id: i64) -> anyhow::Result<ImageLv> {
        let src = image.source.trim();
        if src.is_empty() {
            return Err(fail(
                ErrorKind::BadInput,
                "driver message has no IMAGE/SOURCE",
            ));
        }
        let expected = image_source("<host>", ds.id, id);
        let parsed = parse_source(src).ok_or_else(|| {
            fail(
                ErrorKind::Refused,
                format!("SOURCE {src:?} is not an image of this driver (expected {expected})"),
            )
        })?;
        if parsed.ds != ds.id || parsed.lv != image_lv(id) {
            return Err(fail(
                ErrorKind::Refused,
                format!(
                    "SOURCE {src:?} does not name image {id} of datastore {} (expected {expected})",
                    ds.id
                ),
            ));
        }
        ImageLv::new(&parsed.host, parsed.ds, id)
    }

    /// `<host>:vg-one-<ds>/img-one-<id>`.
    pub fn source(&self) -> String {
        image_source(&self.host, self.ds, self.id)
    }

    /// `one.image=<id>`.
    pub fn tag(&self) -> Tag {
        format!("one.image={}", self.id)
            .parse()
            .expect("a number makes a valid tag")
    }

    /// The drive the LV lives on, with datastore `ds`'s policy.
    pub fn drive(&self, storage: &Storage<'_>, ds: &Datastore) -> anyhow::Result<DriveRef> {
        storage.drive(&self.host, ds)
    }

    /// An LV of the same VG on the same host.
    pub fn loc_of(&self, lv: &LvName) -> LvLoc {
        LvLoc {
            host: self.host.clone(),
            lv: LvRef {
                vg: self.vg.clone(),
                lv: lv.clone(),
            },
        }
    }

    /// The image LV.
    pub fn loc(&self) -> LvLoc {
        self.loc_of(&self.lv)
    }

    /// Snapshot `sid`'s LV name.
    pub fn snapshot(&self, sid: i64) -> anyhow::Result<LvName> {
        let sid = u32::try_from(sid).map_err(|_| {
            fail(
                ErrorKind::BadInput,
                format!("snapshot id {sid} is out of range"),
            )
        })?;
        snapshot_lv(self.lv.as_str(), sid).parse()
    }

    /// The import scratch LV name.
    pub fn scratch(&self) -> LvName {
        format!("{}-import", self.lv)
            .parse()
            .expect("an image LV name plus a suffix is an LV name")
    }

    /// The LVs of the image's VG on its host (none when the VG does not exist).
    pub fn list(&self, storage: &Storage<'_>) -> anyhow::Result<Vec<Lv>> {
        Ok(storage.hosts.lv_list(&self.host, &self.vg, &[])?.lvs)
    }

    /// The image's snapshot LVs among `lvs`, with their snapshot ids.
    pub fn snapshots<'l>(&self, lvs: &'l [Lv]) -> Vec<(u32, &'l Lv)> {
        let prefix = format!("{}-snap-", self.lv);
        lvs.iter()
            .filter_map(|l| {
                let sid = l.name.strip_prefix(&prefix)?;
                (!sid.is_empty() && sid.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| sid.parse().ok().map(|s| (s, l)))
                    .flatten()
            })
            .collect()
    }

    /// The image LV among `lvs`, which must exist and be this image's.
    pub fn find_in<'l>(&self, lvs: &'l [Lv]) -> anyhow::Result<&'l Lv> {
        let lv = lvs
            .iter()
            .find(|l| l.name == self.lv.as_str())
            .ok_or_else(|| {
                fail(
                    ErrorKind::Failed,
                    format!("image {} ({}) does not exist", self.id, self.source()),
                )
            })?;
        self.check_owned(lv)?;
        Ok(lv)
    }

    /// The image LV as its host reports it, which must exist and be this image's.
    pub fn existing(&self, storage: &Storage<'_>) -> anyhow::Result<Lv> {
        self.find_in(&self.list(storage)?).cloned()
    }

    /// Whether `lv` carries this image's tag.
    pub fn owns(&self, lv: &Lv) -> bool {
        lv.has_tag(self.tag().as_str())
    }

    /// Refuses an existing image LV that lacks this image's tag.
    pub fn check_owned(&self, lv: &Lv) -> anyhow::Result<()> {
        if self.owns(lv) {
            Ok(())
        } else {
            Err(fail(
                ErrorKind::Refused,
                format!(
                    "LV {}/{} on {} lacks the tag {} (it has [{}]): not image {}'s, not touching it",
                    self.vg,
                    lv.name,
                    self.host,
                    self.tag(),
                    lv.tags.join(","),
                    self.id
                ),
            ))
        }
    }

    /// Marks the image LV complete.
    pub fn mark_ready(&self, storage: &Storage<'_>) -> anyhow::Result<()> {
        storage
            .hosts
            .lv_tag(&self.host, &self.vg, &self.lv, &[READY_TAG.parse()?], &[])?;
        Ok(())
    }

    /// Removes an LV of this image (absent is fine): only with this image's tag.
    pub fn remove(&self, storage: &Storage<'_>, lv: &LvName) -> anyhow::Result<bool> {
        Ok(storage
            .hosts
            .lv_remove(&self.host, &self.vg, lv, &[self.tag()])?
            .removed)
    }
}

/// The frontend lock of one image: actions writing it never overlap.
pub(crate) fn lock_image(ctx: &Ctx, ds: i64, id: i64) -> anyhow::Result<FileLock> {
    FileLock::acquire(
        &ctx.config.lock_dir,
        &format!("image-{ds}-{id}"),
        ctx.config.timeouts.lock,
    )
}

/// What the image LV looks like before a creating action (cp, mkfs, clone).
pub(crate) enum Existing {
    /// Nothing there.
    Absent,
    /// Complete: the action's work is done.
    Ready,
}

/// Looks at an image's LVs before creating it: a ready image LV means done; leftovers of an
/// interrupted run (the image LV without the ready tag, the import scratch) are removed so the
/// work starts over on fresh LVs. An image LV without this image's tag is refused.
pub(crate) fn prepare(storage: &Storage<'_>, img: &ImageLv) -> anyhow::Result<Existing> {
    let lvs = img.list(storage)?;
    if let Some(lv) = lvs.iter().find(|l| l.name == img.lv.as_str()) {
        img.check_owned(lv)?;
        if lv.has_tag(READY_TAG) {
            tracing::info!(
                "LV {}/{} on {} is complete already",
                img.vg,
                img.lv,
                img.host
            );
            return Ok(Existing::Ready);
        }
        tracing::warn!(
            "LV {}/{} on {} is left from an interrupted run: starting over",
            img.vg,
            img.lv,
            img.host
        );
        img.remove(storage, &img.lv)?;
    }
    let scratch = img.scratch();
    if lvs.iter().any(|l| l.name == scratch.as_str()) {
        img.remove(storage, &scratch)?;
    }
    Ok(Existing::Absent)
}

/// LVs an action created, removed (then the drive may shrink) unless the action succeeded.
pub(crate) struct Partial<'s, 'c> {
    storage: &'s Storage<'c>,
    img: ImageLv,
    drive: DriveRef,
    lvs: Vec<LvName>,
    done: bool,
}

impl<'s, 'c> Partial<'s, 'c> {
    /// Nothing created yet.
    pub fn new(storage: &'s Storage<'c>, img: &ImageLv, drive: &DriveRef) -> Partial<'s, 'c> {
        Partial {
            storage,
            img: img.clone(),
            drive: drive.clone(),
            lvs: Vec::new(),
            done: false,
        }
    }

    /// `lv` was created.
    pub fn track(&mut self, lv: &LvName) {
        if !self.lvs.contains(lv) {
            self.lvs.push(lv.clone());
        }
    }

    /// `lv` was removed by the action itself.
    pub fn untrack(&mut self, lv: &LvName) {
        self.lvs.retain(|l| l != lv);
    }

    /// The action succeeded: keep what it made.
    pub fn keep(mut self) {
        self.done = true;
    }
}

impl Drop for Partial<'_, '_> {
    fn drop(&mut self) {
        if self.done || self.lvs.is_empty() {
            return;
        }
        for lv in self.lvs.iter().rev() {
            tracing::info!(
                "removing the partial LV {}/{lv} on {}",
                self.img.vg,
                self.img.host
            );
            if let Err(e) = self.img.remove(self.storage, lv) {
                tracing::error!(
                    "could not remove the partial LV {}/{lv} on {}: {e:#}",
                    self.img.vg,
                    self.img.host
                );
            }
        }
        self.storage.shrink(&self.drive);
    }
}

/// What a snapshot action works on: the image (from its SOURCE), the VG's LVs, the target
/// snapshot id and its LV when it exists.
pub(crate) struct SnapshotParts {
    /// The image.
    pub img: ImageLv,
    /// The LVs of its VG.
    pub lvs: Vec<Lv>,
    /// `TARGET_SNAPSHOT`.
    pub sid: i64,
    /// The snapshot LV's name, when that LV exists.
    pub snapshot: Option<LvName>,
    name: LvName,
}

/// Reads the parts of a snapshot action (`TARGET_SNAPSHOT` checked ≥ 0 by `check_for`).
pub(crate) fn snapshot_parts(
    storage: &Storage<'_>,
    image: &Image,
    ds: &Datastore,
    id: i64,
) -> anyhow::Result<SnapshotParts> {
    let img = ImageLv::from_source(image, ds, id)?;
    let sid = image.target_snapshot.unwrap_or(-1);
    let name = img.snapshot(sid)?;
    let lvs = img.list(storage)?;
    if let Some(lv) = lvs.iter().find(|l| l.name == img.lv.as_str()) {
        img.check_owned(lv)?;
    }
    let snapshot = lvs
        .iter()
        .any(|l| l.name == name.as_str())
        .then(|| name.clone());
    Ok(SnapshotParts {
        img,
        lvs,
        sid,
        snapshot,
        name,
    })
}

impl SnapshotParts {
    /// The snapshot LV, or an error naming it.
    pub fn require_snapshot(&self) -> anyhow::Result<LvName> {
        self.snapshot.clone().ok_or_else(|| {
            fail(
                ErrorKind::Failed,
                format!(
                    "snapshot {} of image {} does not exist (no LV {}/{} on {})",
                    self.sid, self.img.id, self.img.vg, self.name, self.img.host
                ),
            )
        })
    }

    /// The image LV, or an error naming it.
    pub fn require_image(&self) -> anyhow::Result<&Lv> {
        self.img.find_in(&self.lvs)
    }
}

/// `<SOURCE> raw`, what cp and clone print.
pub(crate) fn source_and_format(img: &ImageLv) -> ActionOutput {
    ActionOutput::Line(format!("{} raw", img.source()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(source: &str) -> Image {
        let m = DsMessage::from_xml(&format!(
            "<DS_DRIVER_ACTION_DATA><IMAGE><ID>7</ID><SOURCE><![CDATA[{source}]]></SOURCE></IMAGE><DATASTORE><ID>100</ID></DATASTORE></DS_DRIVER_ACTION_DATA>"
        ))
        .unwrap();
        m.image.unwrap()
    }

    #[test]
    fn only_our_sources_are_accepted() {
        let ds = Datastore::from_xml("<DATASTORE><ID>100</ID></DATASTORE>").unwrap();
        let ok = ImageLv::from_source(&image("kvm1:vg-one-100/img-one-7"), &ds, 7).unwrap();
        assert_eq!(ok.source(), "kvm1:vg-one-100/img-one-7");
        assert_eq!(ok.snapshot(3).unwrap().as_str(), "img-one-7-snap-3");
        assert_eq!(ok.scratch().as_str(), "img-one-7-import");
        for bad in [
            "/var/lib/one//datastores/100/abc",
            "kvm1:vg-one-101/img-one-7",
            "kvm1:vg-one-100/img-one-8",
            "kvm1:vg-one-100/lv-one-7-0",
            "kvm1:vg-one-100/img-one-7-snap-0",
            "$(reboot):vg-one-100/img-one-7",
            "kvm1:vg-one-100/../img-one-7",
        ] {
            let e = ImageLv::from_source(&image(bad), &ds, 7).unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 6, "{bad}: {e:#}");
        }
        let e = ImageLv::from_source(&image(""), &ds, 7).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 2);
    }

    #[test]
    fn snapshots_are_told_by_name() {
        let img = ImageLv::new("kvm1", 100, 7).unwrap();
        let lv = |n: &str| Lv {
            name: n.into(),
            vg: "vg-one-100".into(),
            uuid: String::new(),
            size: 1,
            tags: vec![],
            segments: vec![],
            ..Default::default()
        };
        let lvs = vec![
            lv("img-one-7"),
            lv("img-one-7-snap-0"),
            lv("img-one-7-snap-12"),
            lv("img-one-7-snap-x"),
            lv("img-one-70-snap-1"),
            lv("img-one-7-import"),
        ];
        let s: Vec<u32> = img.snapshots(&lvs).iter().map(|(s, _)| *s).collect();
        assert_eq!(s, [0, 12]);
    }
}
