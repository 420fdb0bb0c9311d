//! `clone` (non-persistent image) and `ln` (persistent image, CDROM): the image LV is copied
//! from the image host's drive to the VM host's system drive (host to host), into
//! `lv-one-<vm>-<disk>` sized max(image, DISK SIZE), then linked as `disk.N`. A persistent
//! image also brings back the snapshots `mvds` saved with it (`img-one-<id>-snap-<s>` →
//! `lv-one-<vm>-<disk>-snap-<s>`). `ln` disks are copies that `mvds` writes back.
//!
//! On a thin system drive (`BSUD_THIN=YES`) `clone` goes through the host's image cache: the
//! first clone of an image to a host copies it once into `img-one-<id>-cache`, a thin volume
//! on that host's drive; every clone (that one included) is a thin snapshot of it, made in
//! constant time whatever the image size. Invariants:
//! - a cached copy is used only when it carries the ready mark and the key of the image's
//!   current content, `one.bsud.cache=<image LV uuid>.<generation>`: a new image under a reused
//!   id has another uuid, and every in-place write of an image LV (mvds, DS snap_revert and
//!   snap_flatten) bumps its `one.bsud.gen` first; a stale copy is removed, and the disks
//!   already cloned from it keep their blocks (thin snapshots outlive their origin);
//! - one fill per (host, datastore, image) at a time (a frontend lock, held through the
//!   snapshot too), so 15 concurrent clones copy the image once, and the drive never evicts a
//!   copy a clone is using (eviction skips a copy whose lock is taken);
//! - the cache carries no `one.vm` tag: no VM action removes it; the drive evicts unused
//!   copies (no snapshot of them left), least recently cloned first, before adding a BSU, and
//!   DS `rm` of the image removes them from every drive that holds one.

use super::disk::{
    conventional, disk_tags, is_ready, mib, tag, DiskLv, TAG_IMAGE, TAG_READY, TAG_SNAPSHOT,
};
use super::Tm;
use crate::drive::naming::{parse_source, Source};
use crate::drive::storage::{cache_lock_name, TAG_CACHE, TAG_GENERATION, TAG_USED};
use crate::error::{fail, ErrorKind};
use crate::lock::FileLock;
use crate::lvm::Lv;
use crate::one::tm::{DiskRef, HostPath};

/// A cached copy is marked used again when its mark is older than this (seconds): LRU order
/// without a metadata write on every clone.
const USED_GRANULARITY_SECS: u64 = 600;

/// The cached copy of image `image` on the drive of `disk`.
pub fn cache_lv(disk: &DiskLv, image: i64) -> DiskLv {
    DiskLv {
        lv: format!("img-one-{image}-cache"),
        ..disk.clone()
    }
}

/// The content key of an image LV: its uuid and generation.
pub fn content_key(img: &Lv) -> String {
    let generation = img
        .tags
        .iter()
        .find_map(|t| t.strip_prefix(TAG_GENERATION)?.strip_prefix('='))
        .unwrap_or("0");
    format!("{}.{generation}", img.uuid)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

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
        // One listing of the VM host's drive answers both "done already?" and "cached?"; the
        // image's, on its own host, is taken meanwhile.
        let (here, image_lv) = std::thread::scope(|s| {
            let image_lv = s.spawn(|| self.lv_info(&img));
            (self.vg_lvs(&disk), image_lv.join())
        });
        let here = here?;
        let image_lv = image_lv.map_err(|_| anyhow::anyhow!("listing {img} panicked"))?;
        let find = |l: &DiskLv| here.iter().find(|x| x.name == l.lv).cloned();
        match find(&disk) {
            // A rerun after success (or a crash after the copy): keep it.
            Some(l) if is_ready(&l) && l.has_tag(&image_tag) => {
                tracing::info!("{disk} already holds image {image}")
            }
            _ => {
                let Some(src) = image_lv? else {
                    return Err(fail(
                        ErrorKind::Failed,
                        format!("image {image}: its LV {img} does not exist"),
                    ));
                };
                let tags = disk_tags(vm, dst.disk_id, Some(image));
                let min = mib(size_mb.unwrap_or(0));
                if !with_snapshots && self.drive_of(&disk)?.settings.thin {
                    let cached = find(&cache_lv(&disk, image));
                    self.clone_from_cache(&img, &src, image, &disk, min, tags, cached)?;
                } else {
                    self.copy_to_new(&img, src.size, &disk, min, &tags, false)?;
                }
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

impl Tm<'_> {
    /// `disk` as a thin snapshot of the host's cached copy of image LV `img` (`src`), filling
    /// the cache first when it has no current copy (`cached`: the copy as listed).
    #[allow(clippy::too_many_arguments)]
    fn clone_from_cache(
        &self,
        img: &DiskLv,
        src: &Lv,
        image: i64,
        disk: &DiskLv,
        min_bytes: u64,
        mut tags: Vec<String>,
        mut cached: Option<Lv>,
    ) -> anyhow::Result<()> {
        let cache = cache_lv(disk, image);
        let key_tag = tag(TAG_CACHE, content_key(src));
        let current = |l: &Lv| l.has_tag(&key_tag) && is_ready(l);
        // Held through the fill and the snapshot: the drive never evicts a copy in use.
        let _using = FileLock::acquire(
            &self.ctx.config.lock_dir,
            &cache_lock_name(&disk.host, disk.ds, image),
            self.ctx.config.timeouts.lock,
        )?;
        if !cached.as_ref().is_some_and(current) {
            // Another clone may have filled it while we waited for the lock.
            cached = self.lv_info(&cache)?;
            if !cached.as_ref().is_some_and(current) {
                self.fill_cache(img, src, image, &cache, &key_tag, cached.as_ref())?;
            }
        }
        tags.push(TAG_READY.to_string());
        self.thin_snapshot(&cache, disk, src.size.max(min_bytes), &tags)?;
        tracing::info!("{disk}: thin snapshot of the cached copy of image {image}");
        let used = cached
            .as_ref()
            .and_then(|c| {
                c.tags
                    .iter()
                    .find_map(|t| t.strip_prefix(TAG_USED)?.strip_prefix('=')?.parse().ok())
            })
            .unwrap_or(0u64);
        let now = now_secs();
        if cached.is_some() && now.saturating_sub(used) > USED_GRANULARITY_SECS {
            let old = tag(TAG_USED, used);
            let new = tag(TAG_USED, now);
            self.hosts().lv_tag(
                &cache.host,
                &cache.vg().parse()?,
                &cache.lv.parse()?,
                &[new.parse()?],
                &[old.parse()?],
            )?;
        }
        Ok(())
    }

    /// Copies image LV `img` into the cache LV (replacing a stale copy), verified, ready.
    fn fill_cache(
        &self,
        img: &DiskLv,
        src: &Lv,
        image: i64,
        cache: &DiskLv,
        key_tag: &str,
        stale: Option<&Lv>,
    ) -> anyhow::Result<()> {
        if let Some(old) = stale.filter(|l| !l.has_tag(key_tag)) {
            tracing::info!(
                "{cache} holds an older content of image {image} ({}): replacing it",
                old.tags.join(",")
            );
            self.hosts().lv_remove(
                &cache.host,
                &cache.vg().parse()?,
                &cache.lv.parse()?,
                &[tag(TAG_IMAGE, image).parse()?],
            )?;
        }
        let drive = self.drive_of(cache)?;
        let tags = [
            tag(TAG_IMAGE, image),
            key_tag.to_string(),
            tag(TAG_USED, now_secs()),
        ];
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        let made = self
            .storage
            .allocate_thin(&drive, &cache.lv, src.size, &tags, None, src.size)?;
        crate::crashpoint::reached("clone:cache-allocated");
        self.copy_over(img, cache, made.created, false)?;
        tracing::info!("image {image} cached on {}", cache.host);
        Ok(())
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
