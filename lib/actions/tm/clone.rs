//! `clone` (non-persistent image) and `ln` (persistent image, CDROM): the image LV is copied
//! from the image host's drive to the VM host's system drive (host to host), into
//! `lv-one-<vm>-<disk>` sized max(image, DISK SIZE), then linked as `disk.N`. A persistent
//! image also brings back the snapshots `mvds` saved with it (`img-one-<id>-snap-<s>` →
//! `lv-one-<vm>-<disk>-snap-<s>`). `ln` disks are copies that `mvds` writes back.

use super::disk::{conventional, disk_tags, is_ready, mib, tag, DiskLv, TAG_IMAGE, TAG_SNAPSHOT};
use super::Tm;
use crate::drive::naming::{parse_source, Source};
use crate::error::{fail, ErrorKind};
use crate::one::tm::{DiskRef, HostPath};

/// The image id of an image LV name `img-one-<id>`.
pub fn image_id(lv: &str) -> Option<i64> {
    lv.strip_prefix("img-one-")?.parse().ok()
}

/// Our SOURCE from a `host:vg/lv` argument; another driver's SOURCE is not ours to read.
pub fn our_source(s: &str) -> anyhow::Result<(Source, i64)> {
    let src = parse_source(s).ok_or_else(|| {
        fail(
            ErrorKind::NotImplemented,
            format!("image SOURCE {s:?} is not a bsud image (<host>:vg-one-<ds>/img-one-<id>)"),
        )
    })?;
    let id = image_id(&src.lv).ok_or_else(|| {
        fail(
            ErrorKind::NotImplemented,
            format!("image SOURCE {s:?} does not name an image LV img-one-<id>"),
        )
    })?;
    Ok((src, id))
}

/// The image LV as a [`DiskLv`].
pub fn image_lv(src: &Source) -> DiskLv {
    DiskLv {
        host: src.host.clone(),
        ds: src.ds,
        lv: src.lv.clone(),
    }
}

impl Tm<'_> {
    /// `clone` / `ln`.
    pub(super) fn clone_image(
        &self,
        src: &HostPath,
        dst: &DiskRef,
        vm: i64,
        with_snapshots: bool,
    ) -> anyhow::Result<()> {
        let (source, image) = our_source(&format!("{}:{}", src.host, src.path))?;
        let img = image_lv(&source);
        let disk = conventional(dst, vm)?;
        let size_mb = self.vm(vm)?.disk(dst.disk_id).and_then(|d| d.size_mb);
        let image_tag = tag(TAG_IMAGE, image);
        match self.lv_info(&disk)? {
            // A rerun after success (or a crash after the copy): keep it.
            Some(l) if is_ready(&l) && l.has_tag(&image_tag) => {
                tracing::info!("{disk} already holds image {image}")
            }
            _ => {
                let Some(src) = self.lv_info(&img)? else {
                    return Err(fail(
                        ErrorKind::Failed,
                        format!("image {image}: its LV {img} does not exist"),
                    ));
                };
                let tags = disk_tags(vm, dst.disk_id, Some(image));
                let min = mib(size_mb.unwrap_or(0));
                self.copy_to_new(&img, src.size, &disk, min, &tags, false)?;
                crate::crashpoint::reached("clone:copied");
            }
        }
        if with_snapshots {
            for (id, snap) in self.snapshots(&img)? {
                let to = disk.snapshot(id);
                if self.lv_info(&to)?.is_some_and(|x| is_ready(&x)) {
                    continue;
                }
                let mut tags = disk_tags(vm, dst.disk_id, Some(image));
                tags.push(tag(TAG_SNAPSHOT, id));
                self.copy_to_new(&img.snapshot(id), snap.size, &to, 0, &tags, false)?;
            }
        }
        self.link(&dst.at, &disk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        let (s, id) = our_source("kvm1:vg-one-100/img-one-7").unwrap();
        assert_eq!((s.host.as_str(), s.ds, id), ("kvm1", 100, 7));
        for bad in [
            "vm:/var/lib/one/datastores/100/abc",
            "kvm1:vg-one-100/lv-one-1-0",
        ] {
            let e = our_source(bad).unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 4, "{bad}");
        }
        assert_eq!(image_id("img-one-12"), Some(12));
        assert_eq!(image_id("img-one-12-snap-1"), None);
    }
}
