//! Storage for actions: allocate, grow and remove LVs on drives, growing and shrinking the
//! drives around them. The one place actions go through, so every allocation happens under
//! the drive lock with the growth it needs (no two actions race for the same free space) and
//! every removal lets the drive shrink.

use anyhow::Context;

use super::engine::{DriveRef, Engine};
use crate::actions::Ctx;
use crate::config::DriveSettings;
use crate::host::client::HostClient;
use crate::host::proto::{LvCreated, LvExtended};
use crate::lvm::{LvName, Tag, VgName};
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
        let vg: VgName = d.vg().parse()?;
        let name: LvName = lv.parse()?;
        let tags: Vec<Tag> = tags
            .iter()
            .map(|t| t.parse())
            .collect::<anyhow::Result<_>>()?;
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

    /// Grows LV `lv` to `bytes`, growing the drive first.
    pub fn extend(&self, d: &DriveRef, lv: &str, bytes: u64) -> anyhow::Result<LvExtended> {
        let vg: VgName = d.vg().parse()?;
        let name: LvName = lv.parse()?;
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
