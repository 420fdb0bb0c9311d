//! `mvds` (a persistent disk goes back into its image at terminate/detach) and `cpds`
//! (disk-saveas into the image `mkfs` reserved with FORMAT `save_as`).
//!
//! `mvds` never removes the disk before its copy is verified: the image LV is grown if the
//! disk was resized, the disk is copied into it, the receiver's digest is compared with a
//! separate checksum of the disk, and only then are the disk LV, its snapshots (saved as
//! image snapshots `img-one-<id>-snap-<s>`, ones the VM deleted dropped) and its link or
//! marker removed. A frontend path without a marker is looked for on the hosts of the VM's
//! history. A disk already gone means a previous run finished the copy: nothing left to save,
//! the step succeeds.

use super::clone::{image_lv, our_source};
use super::disk::{tag, DiskLv, Located, TAG_IMAGE, TAG_SNAPSHOT};
use super::Tm;
use crate::error::{fail, ErrorKind};
use crate::one::tm::DiskRef;

impl Tm<'_> {
    /// `mvds H:D/disk.N SOURCE`.
    pub(super) fn mvds(&self, src: &DiskRef, source: &str, vm: i64) -> anyhow::Result<()> {
        let (source, image) = our_source(source)?;
        let img = image_lv(&source);
        let found = match self.locate(src, vm)? {
            Located::Here(l) | Located::Parked(l) => Some(l),
            Located::Unknown => {
                let lost = self.lost_disk(src, vm)?;
                match lost.iter().find(|(_, ready)| *ready) {
                    Some((l, _)) => Some(l.clone()),
                    None if lost.is_empty() => None,
                    // Saving a blank or half-copied leftover would overwrite the image
                    // with garbage: an operator must say which copy is the disk.
                    None => {
                        return Err(fail(
                            ErrorKind::Failed,
                            format!(
                                "disk {} of VM {vm}: no marker at {}:{}, and the only copies found ({}) are incomplete: not saving them into image {image}",
                                src.disk_id,
                                src.at.host,
                                src.at.path,
                                lost.iter().map(|(l, _)| l.to_string()).collect::<Vec<_>>().join(", ")
                            ),
                        ))
                    }
                }
            }
        };
        let disk = match found {
            Some(l) => l,
            None => {
                tracing::info!(
                    "disk {} of VM {vm}: no disk and no marker at {}:{}: already saved",
                    src.disk_id,
                    src.at.host,
                    src.at.path
                );
                return Ok(());
            }
        };
        let Some(d) = self.source_lv(&disk)? else {
            tracing::info!("{disk} is gone: image {image} was already saved");
            return self.remove_entry(&src.at);
        };
        let img_drive = self.drive_of(&img)?;
        let have = self.storage.existing(&img_drive, &img.lv)?.ok_or_else(|| {
            fail(
                ErrorKind::Failed,
                format!("image {image}: its LV {img} does not exist; keeping the disk {disk}"),
            )
        })?;
        if have < d.size {
            self.storage.extend(&img_drive, &img.lv, d.size)?;
        }
        self.storage.bump_generation(&img.loc()?)?;
        self.copy_over(&disk, &img, false, true)?;
        self.save_snapshots(&disk, &img, image, vm)?;
        crate::crashpoint::reached("mvds:copied");
        self.remove_with_snapshots(&disk, vm)?;
        self.remove_entry(&src.at)
    }

    /// The disk's snapshots become the image's; image snapshots the disk no longer has are
    /// dropped (the VM deleted them).
    fn save_snapshots(
        &self,
        disk: &DiskLv,
        img: &DiskLv,
        image: i64,
        vm: i64,
    ) -> anyhow::Result<()> {
        let keep = self.snapshots(disk)?;
        for (id, snap) in &keep {
            let tags = [tag(TAG_IMAGE, image), tag(TAG_SNAPSHOT, *id)];
            self.copy_to_new(
                &disk.snapshot(*id),
                snap.size,
                &img.snapshot(*id),
                0,
                &tags,
                true,
            )?;
        }
        let stale: Vec<String> = self
            .snapshots(img)?
            .into_iter()
            .filter(|(id, _)| !keep.iter().any(|(k, _)| k == id))
            .map(|(_, l)| l.name)
            .collect();
        if !stale.is_empty() {
            let vg = img.vg().parse()?;
            let require: crate::lvm::Tag = tag(TAG_IMAGE, image).parse()?;
            for n in &stale {
                self.hosts().lv_remove(
                    &img.host,
                    &vg,
                    &n.parse()?,
                    std::slice::from_ref(&require),
                )?;
                tracing::info!("image {image}: snapshot LV {n} dropped (deleted by VM {vm})");
            }
        }
        Ok(())
    }

    /// `cpds H:D/disk.N SOURCE SNAP`.
    pub(super) fn cpds(
        &self,
        src: &DiskRef,
        source: &str,
        snap: Option<u32>,
        vm: i64,
    ) -> anyhow::Result<()> {
        let (source, image) = our_source(source)?;
        let img = image_lv(&source);
        let disk = self.locate_known(src, vm)?;
        let from = match snap {
            Some(s) => disk.snapshot(s),
            None => disk.clone(),
        };
        let Some(from_lv) = self.source_lv(&from)? else {
            return Err(fail(
                ErrorKind::Failed,
                format!(
                    "disk {} of VM {vm}{}: LV {from} does not exist",
                    src.disk_id,
                    snap.map(|s| format!(", snapshot {s}")).unwrap_or_default()
                ),
            ));
        };
        let copy =
            || self.copy_to_new(&from, from_lv.size, &img, 0, &[tag(TAG_IMAGE, image)], true);
        // Disk-saveas of a RUNNING VM (HOTPLUG_SAVEAS): the copy is verified against a second
        // read of the source, which a writing guest would change in between; suspended, the
        // disk is one point in time and the check means something. A snapshot never changes.
        if snap.is_none() && !self.is_frontend(&from.host) {
            self.with_domain_paused(&from.host, &self.domain_of(vm), copy)
        } else {
            copy()
        }
    }
}
