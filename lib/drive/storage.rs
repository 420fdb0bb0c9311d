//! Storage for actions: allocate, grow and remove LVs on drives, growing and shrinking the
//! drives around them. The one place actions go through, so every allocation happens under
//! the drive lock with the growth it needs (no two actions race for the same free space) and
//! every removal lets the drive shrink.

use anyhow::Context;

use super::engine::{DriveRef, Engine};
use super::thin::{self, POOL_LV, TAG_POOL};
use crate::actions::Ctx;
use crate::config::DriveSettings;
use crate::host::client::{HostClient, LvKind};
use crate::host::proto::{LvCreated, LvExtended, PoolEnsureReq, PoolStatus};
use crate::lvm::{Lv, LvName, Tag, VgName};

/// The tag of a host's cached copy of an image: `one.bsud.cache=<image LV uuid>.<generation>`.
pub const TAG_CACHE: &str = "one.bsud.cache";
/// The generation tag of an image LV, bumped before every in-place write of it.
pub const TAG_GENERATION: &str = "one.bsud.gen";
/// When a cached image was last cloned (unix seconds): the LRU order of eviction.
pub const TAG_USED: &str = "one.bsud.used";
use crate::one::message::Datastore;

/// Actions' access to drives.
pub struct Storage<'a> {
    /// The action context.
    pub ctx: &'a Ctx,
    /// Host agent client.
    pub hosts: HostClient,
}

impl<'a> Storage<'a> {
    /// Storage for an action.
    pub fn new(ctx: &'a Ctx) -> Storage<'a> {
        Storage {
            ctx,
            hosts: HostClient::new(&ctx.config),
        }
    }

    fn engine(&self) -> anyhow::Result<Engine<'_>> {
        Ok(Engine {
            cloud: self.ctx.cloud()?,
            hosts: &self.hosts,
            lock_dir: self.ctx.config.lock_dir.clone(),
            timeouts: self.ctx.config.timeouts,
        })
    }

    /// The drive of datastore `ds` on `host`, with the datastore's policy.
    pub fn drive(&self, host: &str, ds: &Datastore) -> anyhow::Result<DriveRef> {
        Ok(DriveRef {
            host: host.to_string(),
            ds: ds.id,
            settings: DriveSettings::from_template(&ds.template)?,
        })
    }

    /// The drive of datastore id `ds` (policy read from OpenNebula) on `host`.
    pub fn drive_by_id(&self, host: &str, ds: i64) -> anyhow::Result<DriveRef> {
        let d = self.ctx.one.datastore(&self.ctx.config, ds)?;
        self.drive(host, &d)
    }

    /// Where an image datastore's drive lives: `BSUD_IMAGE_HOST`, else the first host of
    /// `BRIDGE_LIST`, else the frontend.
    pub fn image_host(&self, ds: &Datastore) -> anyhow::Result<String> {
        let s = DriveSettings::from_template(&ds.template)?;
        Ok(s.image_host
            .or_else(|| ds.bridge_list().into_iter().next())
            .unwrap_or_else(|| self.ctx.config.frontend_host.clone()))
    }

    /// Creates LV `lv` of `bytes` with `tags` on drive `d`, growing the drive first; the whole
    /// under the drive lock. Idempotent (an existing LV with these tags is returned).
    pub fn allocate(
        &self,
        d: &DriveRef,
        lv: &str,
        bytes: u64,
        tags: &[&str],
    ) -> anyhow::Result<LvCreated> {
        if d.settings.thin {
            return self.allocate_thin(d, lv, bytes, tags, None, bytes);
        }
        let vg: VgName = d.vg().parse()?;
        let name: LvName = lv.parse()?;
        let tags = Tag::parse_all(tags)?;
        // An LV that already exists needs no space: idempotent reruns must not grow the drive.
        if let Some(existing) = self.existing(d, lv)? {
            if existing >= bytes {
                return self.hosts.lv_create(&d.host, &vg, &name, bytes, &tags);
            }
        }
        self.engine()?
            .with_space(d, bytes, |_| {
                self.hosts.lv_create(&d.host, &vg, &name, bytes, &tags)
            })
            .with_context(|| format!("creating LV {}/{lv} on {}", d.vg(), d.host))
    }

    /// The size of an existing LV of the drive, if any.
    pub fn existing(&self, d: &DriveRef, lv: &str) -> anyhow::Result<Option<u64>> {
        let vg: VgName = d.vg().parse()?;
        let list = self.hosts.lv_list(&d.host, &vg, &[])?;
        Ok(list.lvs.iter().find(|l| l.name == lv).map(|l| l.size))
    }

    /// On a thin drive: creates thin volume `lv` of `bytes` (or, with `origin`, a thin snapshot
    /// of that LV grown to `bytes`) with `tags`, after the overcommit check and with the pool
    /// grown so that `will_write` more bytes fit; the whole under the drive lock. Idempotent.
    pub fn allocate_thin(
        &self,
        d: &DriveRef,
        lv: &str,
        bytes: u64,
        tags: &[&str],
        origin: Option<&str>,
        will_write: u64,
    ) -> anyhow::Result<LvCreated> {
        let vg: VgName = d.vg().parse()?;
        let name: LvName = lv.parse()?;
        let tags = Tag::parse_all(tags)?;
        let kind = match origin {
            Some(o) => LvKind::Snapshot { origin: o.parse()? },
            None => LvKind::Thin {
                pool: POOL_LV.parse()?,
            },
        };
        let engine = self.engine()?;
        let _lock = engine.lock(d)?;
        let lvs = self.hosts.lv_list(&d.host, &vg, &[])?.lvs;
        let (new_bytes, will_write) = match lvs.iter().find(|l| l.name == lv) {
            Some(l) => (bytes.saturating_sub(l.size), 0),
            None => (bytes, will_write),
        };
        thin::check_overcommit(&d.settings, &lvs, new_bytes)?;
        self.ensure_pool_locked(&engine, d, lvs, will_write)
            .with_context(|| format!("thin pool of drive {}", d.name()))?;
        self.hosts
            .lv_create_as(&d.host, &vg, &name, bytes, &tags, kind)
            .with_context(|| format!("creating thin LV {}/{lv} on {}", d.vg(), d.host))
    }

    /// Checks the drive's thin pool and grows it (and the drive, when the VG has no room)
    /// until its usage is under the threshold: what `drive pool-guard` runs. None: nothing
    /// needed doing.
    pub fn guard_pool(&self, d: &DriveRef) -> anyhow::Result<Option<PoolStatus>> {
        let vg: VgName = d.vg().parse()?;
        let engine = self.engine()?;
        let _lock = engine.lock(d)?;
        let list = self.hosts.lv_list(&d.host, &vg, &[])?;
        if !list.lvs.iter().any(|l| l.name == POOL_LV) {
            return Ok(None);
        }
        self.ensure_pool_locked(&engine, d, list.lvs, 0)
    }

    /// [`Storage::guard_pool`] under the lock, from a listing of the VG. Unused cached images
    /// are evicted, least recently used first, while that spares adding a BSU.
    fn ensure_pool_locked(
        &self,
        engine: &Engine<'_>,
        d: &DriveRef,
        mut lvs: Vec<Lv>,
        will_write: u64,
    ) -> anyhow::Result<Option<PoolStatus>> {
        let vg: VgName = d.vg().parse()?;
        let pool_of = |lvs: &[Lv]| lvs.iter().find(|l| l.name == POOL_LV).cloned();
        let mut plan = thin::plan(&d.settings, pool_of(&lvs).as_ref(), will_write);
        if !plan.changes(pool_of(&lvs).as_ref()) {
            return Ok(None);
        }
        let r = engine.reconcile(d)?;
        let fits = |plan: &thin::PoolPlan, free: u64| {
            plan.vg_bytes + d.settings.headroom_gib * super::policy::GIB <= free
        };
        if !plan.create && !fits(&plan, r.vg.free) {
            for victim in unused_caches(&lvs) {
                // A clone of that image is filling or snapshotting it right now: not a victim.
                let Some(_busy) = cache_image_id(&victim).and_then(|image| {
                    crate::lock::FileLock::acquire(
                        &self.ctx.config.lock_dir,
                        &cache_lock_name(&d.host, d.ds, image),
                        std::time::Duration::ZERO,
                    )
                    .ok()
                }) else {
                    continue;
                };
                tracing::info!(
                    "drive {}: evicting unused cached image {victim} before growing",
                    d.name()
                );
                self.hosts.lv_remove(&d.host, &vg, &victim.parse()?, &[])?;
                lvs = self.hosts.lv_list(&d.host, &vg, &[])?.lvs;
                plan = thin::plan(&d.settings, pool_of(&lvs).as_ref(), will_write);
                if !plan.changes(pool_of(&lvs).as_ref()) {
                    return Ok(None);
                }
                if fits(&plan, r.vg.free) {
                    break;
                }
            }
        }
        engine.ensure_space_locked(d, r, plan.vg_bytes)?;
        let status = self.hosts.pool_ensure(
            &d.host,
            &PoolEnsureReq {
                vg,
                pool: POOL_LV.parse()?,
                data_bytes: plan.data_bytes,
                metadata_bytes: plan.metadata_bytes,
                chunk_bytes: plan.chunk_bytes,
                tags: vec![TAG_POOL.parse()?],
            },
        )?;
        tracing::info!(
            "drive {}: thin pool {} GiB data ({}.{:02} % used), {} MiB metadata",
            d.name(),
            status.data_bytes >> 30,
            status.data_bp / 100,
            status.data_bp % 100,
            status.metadata_bytes >> 20
        );
        Ok(Some(status))
    }

    /// Grows LV `lv` to `bytes`, growing the drive first.
    pub fn extend(&self, d: &DriveRef, lv: &str, bytes: u64) -> anyhow::Result<LvExtended> {
        let vg: VgName = d.vg().parse()?;
        let name: LvName = lv.parse()?;
        if d.settings.thin {
            // A thin volume grows in name only: check the overcommit, keep the pool ahead.
            let engine = self.engine()?;
            let _lock = engine.lock(d)?;
            let lvs = self.hosts.lv_list(&d.host, &vg, &[])?.lvs;
            let thin_size = lvs
                .iter()
                .find(|l| l.name == lv && l.is_thin())
                .map(|l| l.size);
            if let Some(current) = thin_size {
                thin::check_overcommit(&d.settings, &lvs, bytes.saturating_sub(current))?;
                self.ensure_pool_locked(&engine, d, lvs, 0)?;
                return self.hosts.lv_extend(&d.host, &vg, &name, bytes);
            }
        }
        let current = self.existing(d, lv)?.unwrap_or(0);
        self.engine()?
            .with_space(d, bytes.saturating_sub(current), |_| {
                self.hosts.lv_extend(&d.host, &vg, &name, bytes)
            })
            .with_context(|| format!("growing LV {}/{lv} on {}", d.vg(), d.host))
    }

    /// Removes LV `lv` (absent is fine), then lets the drive shrink. A failed shrink is only a
    /// warning: the data is gone, the drive just keeps a volume longer.
    pub fn remove(&self, d: &DriveRef, lv: &str) -> anyhow::Result<bool> {
        let vg: VgName = d.vg().parse()?;
        let name: LvName = lv.parse()?;
        let removed = self.hosts.lv_remove(&d.host, &vg, &name, &[])?.removed;
        if removed {
            self.shrink(d);
        }
        Ok(removed)
    }

    /// Marks image LV `loc` as about to be written in place: a new `one.bsud.gen`, so no host
    /// clones a cached copy of the old content once the write has begun.
    pub fn bump_generation(&self, loc: &crate::host::transfer::LvLoc) -> anyhow::Result<()> {
        let key = TAG_GENERATION;
        let list = self.hosts.lv_list(&loc.host, &loc.lv.vg, &[])?;
        let old: Vec<Tag> = list
            .lvs
            .iter()
            .filter(|l| l.name == loc.lv.lv.as_str())
            .flat_map(|l| l.tags.iter())
            .filter(|t| t.starts_with(&format!("{key}=")))
            .map(|t| t.parse())
            .collect::<anyhow::Result<_>>()?;
        let new: Tag = format!("{key}={}", hex::encode(rand::random::<[u8; 6]>())).parse()?;
        self.hosts
            .lv_tag(&loc.host, &loc.lv.vg, &loc.lv.lv, &[new], &old)?;
        Ok(())
    }

    /// Removes the cached copies of image `image` from every drive the cloud knows (best
    /// effort: a copy left on an unreachable host is stale by its key and evicted later).
    pub fn evict_image_caches(&self, image: i64) {
        let drives = match self.ctx.cloud().and_then(|c| {
            c.find_volumes(&crate::cloud::VolumeFilter {
                tag_keys: vec![super::naming::TAG_DRIVE.into()],
                ..Default::default()
            })
        }) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(
                    "image {image}: cannot list drives to evict its cached copies: {e:#}"
                );
                return;
            }
        };
        let mut seen = std::collections::BTreeSet::new();
        for v in drives {
            let (Some(host), Some(ds)) = (
                v.tags.get(super::naming::TAG_HOST),
                v.tags.get(super::naming::TAG_DATASTORE),
            ) else {
                continue;
            };
            if !seen.insert((host.clone(), ds.clone())) {
                continue;
            }
            let name = format!("img-one-{image}-cache");
            let r = (|| -> anyhow::Result<bool> {
                let vg: VgName = format!("vg-one-{ds}").parse()?;
                let image_tag: Tag = format!("one.image={image}").parse()?;
                let list = self
                    .hosts
                    .lv_list(host, &vg, std::slice::from_ref(&image_tag))?;
                if !list.lvs.iter().any(|l| l.name == name) {
                    return Ok(false);
                }
                Ok(self
                    .hosts
                    .lv_remove(host, &vg, &name.parse()?, &[image_tag])?
                    .removed)
            })();
            match r {
                Ok(true) => tracing::info!("image {image}: cached copy removed from {host}"),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    "image {image}: cannot check {host}'s drive of datastore {ds} for a cached copy: {e:#}"
                ),
            }
        }
    }

    /// Lets the drive release empty BSUs (best effort, logged).
    pub fn shrink(&self, d: &DriveRef) {
        if !d.settings.shrink {
            return;
        }
        match self.engine().and_then(|e| e.release(d)) {
            Ok(r) if !r.released.is_empty() => {
                tracing::info!("drive {} released {}", d.name(), r.released.join(", "))
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("drive {} could not shrink: {e:#}", d.name()),
        }
    }
}

/// The frontend lock a clone holds on host `host`'s cached copy of `image` (drive of `ds`)
/// while it fills or snapshots it; eviction skips a copy whose lock is taken.
pub fn cache_lock_name(host: &str, ds: i64, image: i64) -> String {
    format!("cache-{host}-{ds}-{image}")
}

/// The image id of a cached copy `img-one-<id>-cache`.
fn cache_image_id(lv: &str) -> Option<i64> {
    lv.strip_prefix("img-one-")?
        .strip_suffix("-cache")?
        .parse()
        .ok()
}

/// Cached images no LV is a snapshot of, least recently cloned first.
fn unused_caches(lvs: &[Lv]) -> Vec<String> {
    let prefix = format!("{TAG_USED}=");
    let mut v: Vec<(u64, String)> = lvs
        .iter()
        .filter(|l| {
            l.tags
                .iter()
                .any(|t| t.starts_with(&format!("{TAG_CACHE}=")))
        })
        .filter(|l| !lvs.iter().any(|o| o.origin.as_deref() == Some(&l.name)))
        .map(|l| {
            let used = l
                .tags
                .iter()
                .filter_map(|t| t.strip_prefix(&prefix)?.parse().ok())
                .max()
                .unwrap_or(0);
            (used, l.name.clone())
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_takes_unused_caches_oldest_first() {
        let lv = |name: &str, tags: &[&str], origin: Option<&str>| Lv {
            name: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            origin: origin.map(str::to_string),
            ..Default::default()
        };
        let lvs = vec![
            lv(
                "img-one-1-cache",
                &["one.bsud.cache=u1.0", "one.bsud.used=300"],
                None,
            ),
            lv(
                "img-one-2-cache",
                &["one.bsud.cache=u2.0", "one.bsud.used=100"],
                None,
            ),
            lv(
                "img-one-3-cache",
                &["one.bsud.cache=u3.0", "one.bsud.used=50"],
                None,
            ),
            lv("lv-one-9-0", &["one.vm=9"], Some("img-one-3-cache")),
            lv("lv-one-9-1", &["one.vm=9"], None),
        ];
        assert_eq!(unused_caches(&lvs), ["img-one-2-cache", "img-one-1-cache"]);
        assert_eq!(cache_image_id("img-one-2-cache"), Some(2));
        assert_eq!(cache_image_id("img-one-2"), None);
    }
}
