//! The drive engine: reconcile, grow, shrink, adopt, delete.
//!
//! Invariants:
//! - **Stateless.** Every operation starts by reconciling what the cloud and the host's LVM say;
//!   nothing relies on a local state file. A crash after any single cloud or LVM step is
//!   finished by the next operation on the drive:
//!   - a CreateVolume is preceded by a VM tag recording its ClientToken (`one.bsud.intent.<vg>`),
//!     so a rerun reuses the token (same volume, never two) and tags the volume if the crash
//!     came before CreateTags (no untagged leftover);
//!   - tagged volumes that are unlinked get linked, linked ones that are not PVs get pvcreate'd,
//!     PVs outside the VG get vgextend'ed;
//!   - a release marks the volume (`one.bsud.releasing`) before vgreduce, so a crash mid-release
//!     is completed instead of undone.
//! - **Locks.** Growth, allocation and release of one drive run under the drive's frontend lock;
//!   choosing a device name and linking run under the host VM's device lock (two drives of one
//!   host never pick the same name); LVM changes on the host run under the agent's VG lock.
//! - **Only our objects.** Volumes are found by the drive tag; a volume of the drive linked to
//!   another VM is never unlinked implicitly (that is `drive adopt`, an operator decision).
//! - Every wait has a deadline from the configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use super::naming::{
    self, device_suffix, drive_tags, free_device, intent_key, vg_name, TAG_DRIVE, TAG_RELEASING,
};
use super::policy::{plan_growth, plan_shrink, DriveState, Growth, ShrinkCandidate, GIB};
use crate::cloud::{
    wait_link, wait_unlinked, wait_volume, Cloud, LinkState, Vm, Volume, VolumeFilter, VolumeSpec,
    VolumeState,
};
use crate::config::{DriveSettings, Timeouts};
use crate::error::{fail, ErrorKind};
use crate::lock::FileLock;
use crate::wait::Wait;

/// Who a host is in the cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostIdentity {
    /// Outscale VM id.
    pub vm_id: String,
    /// Subregion.
    pub subregion: String,
}

/// A PV of the drive's VG as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PvView {
    /// Device path as LVM names it.
    pub device: String,
    /// Size, bytes.
    pub size: u64,
    /// Free, bytes.
    pub free: u64,
    /// Allocated extents.
    pub allocated_extents: u64,
    /// The by-id serial suffix pointing at it (`b` for `…_sdb`), if any.
    pub serial: Option<String>,
}

/// An LV of the drive's VG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LvView {
    /// Name.
    pub name: String,
    /// Size, bytes.
    pub size: u64,
    /// Tags.
    pub tags: Vec<String>,
}

/// The drive's VG on its host, plus what the host sees of attached BSUs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VgView {
    /// Whether the VG exists.
    pub exists: bool,
    /// VG size, bytes.
    pub size: u64,
    /// VG free, bytes.
    pub free: u64,
    /// Number of LVs.
    pub lv_count: usize,
    /// Sum of LV sizes, bytes.
    pub lv_bytes: u64,
    /// The LVs.
    pub lvs: Vec<LvView>,
    /// PVs of the VG.
    pub pvs: Vec<PvView>,
    /// Devices that are PVs of no VG.
    pub orphan_pvs: Vec<String>,
    /// By-id BSU devices present on the host: serial suffix → device path.
    pub devices: BTreeMap<String, String>,
    /// VG tags.
    pub tags: Vec<String>,
}

impl VgView {
    fn pv(&self, device: &str) -> Option<&PvView> {
        self.pvs.iter().find(|p| p.device == device)
    }
}

/// What the engine needs from a host (implemented by the host agent client).
pub trait HostApi: Send + Sync {
    /// The host's cloud identity (metadata server).
    fn identity(&self, host: &str) -> anyhow::Result<HostIdentity>;
    /// The VG report.
    fn vg_report(&self, host: &str, vg: &str) -> anyhow::Result<VgView>;
    /// Waits (with the configured device deadline) for the device of Outscale name `device`
    /// (`/dev/xvdb`) and returns its path.
    fn wait_device(&self, host: &str, device: &str) -> anyhow::Result<String>;
    /// pvcreate + vgcreate/vgextend (idempotent). `fresh`: the BSU was just created by us, so
    /// its extents hold no one's data (the agent double-checks before believing it).
    fn pv_add(&self, host: &str, vg: &str, device_path: &str, fresh: bool) -> anyhow::Result<()>;
    /// vgreduce + pvremove; refuses a PV with allocated extents (idempotent).
    fn pv_remove(&self, host: &str, vg: &str, device_path: &str) -> anyhow::Result<()>;
    /// Removes one of our LVs (idempotent; refuses an LV without our tags).
    fn lv_remove(&self, host: &str, vg: &str, lv: &str) -> anyhow::Result<()>;
    /// Records the growth limit on the VG (tag `one.bsud.max_size_gib`) for the host probe.
    fn set_growth_limit(&self, host: &str, vg: &str, max_size_gib: u64) -> anyhow::Result<()>;
}

/// A drive: a datastore on a host, with its policy.
#[derive(Debug, Clone)]
pub struct DriveRef {
    /// OpenNebula host name.
    pub host: String,
    /// Datastore id.
    pub ds: i64,
    /// Policy.
    pub settings: DriveSettings,
}

impl DriveRef {
    /// `vg-one-<ds>`.
    pub fn vg(&self) -> String {
        vg_name(self.ds)
    }

    /// `<host>:vg-one-<ds>`.
    pub fn name(&self) -> String {
        naming::drive_name(&self.host, self.ds)
    }
}

/// The drive after reconciliation.
#[derive(Debug, Clone, Serialize)]
pub struct Reconciled {
    /// The host's identity.
    pub identity: HostIdentity,
    /// The host VM.
    pub vm: Vm,
    /// The drive's volumes (tagged, not being released).
    pub volumes: Vec<Volume>,
    /// The VG.
    pub vg: VgView,
}

impl Reconciled {
    fn state(&self) -> DriveState {
        DriveState {
            vg_free: if self.vg.exists { self.vg.free } else { 0 },
            volume_sizes_gib: self.volumes.iter().map(|v| v.size_gib).collect(),
            vm_volume_count: self.vm.devices.len() as u32,
        }
    }
}

/// What a release did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShrinkReport {
    /// Volumes deleted.
    pub released: Vec<String>,
}

/// The engine.
pub struct Engine<'a> {
    /// The cloud.
    pub cloud: &'a dyn Cloud,
    /// The hosts.
    pub hosts: &'a dyn HostApi,
    /// Frontend lock directory.
    pub lock_dir: PathBuf,
    /// Deadlines.
    pub timeouts: Timeouts,
}

impl Engine<'_> {
    fn wait(&self, timeout: Duration) -> Wait {
        Wait::new(timeout, self.timeouts.poll_interval)
    }

    /// Takes the drive's frontend lock.
    pub fn lock(&self, d: &DriveRef) -> anyhow::Result<FileLock> {
        FileLock::acquire(
            &self.lock_dir,
            &format!("drive-{}", d.name()),
            self.timeouts.lock,
        )
        .with_context(|| format!("locking drive {}", d.name()))
    }

    fn device_lock(&self, vm_id: &str) -> anyhow::Result<FileLock> {
        FileLock::acquire(
            &self.lock_dir,
            &format!("devices-{vm_id}"),
            self.timeouts.lock,
        )
        .with_context(|| format!("locking device names of VM {vm_id}"))
    }

    fn drive_volumes(&self, d: &DriveRef) -> anyhow::Result<Vec<Volume>> {
        let mut v = self.cloud.find_volumes(&VolumeFilter {
            tags: vec![(TAG_DRIVE.into(), d.name())],
            ..Default::default()
        })?;
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    /// Brings cloud and LVM in line (caller holds the drive lock): finishes interrupted
    /// creates and releases, links, pvcreates and vgextends what is ours.
    pub fn reconcile(&self, d: &DriveRef) -> anyhow::Result<Reconciled> {
        let identity = self.hosts.identity(&d.host)?;
        let mut vm = self.cloud.vm(&identity.vm_id)?;
        self.recover_intent(d, &mut vm)?;
        let mut vg = self.hosts.vg_report(&d.host, &d.vg())?;
        let mut volumes = Vec::new();
        for v in self.drive_volumes(d)? {
            if v.tags.contains_key(TAG_RELEASING) {
                self.finish_release(d, &identity, &vg, &v)?;
                continue;
            }
            let v = match v.state {
                VolumeState::Creating => wait_volume(
                    self.cloud,
                    &v.id,
                    VolumeState::Available,
                    self.wait(self.timeouts.volume_create),
                )?,
                VolumeState::Deleting | VolumeState::Error => {
                    tracing::warn!(
                        "drive {}: volume {} is {}; ignored",
                        d.name(),
                        v.id,
                        v.state
                    );
                    continue;
                }
                _ => v,
            };
            let v = match v.active_link() {
                None => self.link(d, &identity, &v, &vg)?,
                Some(l) if l.vm_id != identity.vm_id => {
                    return Err(fail(
                        ErrorKind::Refused,
                        format!(
                            "volume {} of drive {} is linked to VM {} ({}), not to this host's VM {}; if that host is gone, move the drive with `one-bsud drive adopt`",
                            v.id, d.name(), l.vm_id, l.device, identity.vm_id
                        ),
                    ))
                }
                Some(l) if l.state == LinkState::Attaching => wait_link(self.cloud, &v.id, &identity.vm_id, self.wait(self.timeouts.volume_link))?,
                Some(_) => v,
            };
            volumes.push(v);
        }
        // Every linked volume must be a PV of the VG.
        let mut changed = false;
        for v in &volumes {
            let path = self.device_path(d, &identity, v, &vg)?;
            if vg.pv(&path).is_none() {
                tracing::info!(
                    "drive {}: adding volume {} ({path}) to {}",
                    d.name(),
                    v.id,
                    d.vg()
                );
                self.hosts.pv_add(&d.host, &d.vg(), &path, false)?;
                changed = true;
            }
        }
        if changed {
            vg = self.hosts.vg_report(&d.host, &d.vg())?;
            vm = self.cloud.vm(&identity.vm_id)?;
        }
        // The host capacity probe reads the limit from the VG; it only informs the scheduler,
        // so failing to record it must not fail the operation.
        let limit = format!("{}={}", naming::TAG_MAX_SIZE_GIB, d.settings.max_size_gib);
        if vg.exists && !vg.tags.contains(&limit) {
            if let Err(e) = self
                .hosts
                .set_growth_limit(&d.host, &d.vg(), d.settings.max_size_gib)
            {
                tracing::warn!("drive {}: cannot record its growth limit: {e:#}", d.name());
            }
        }
        Ok(Reconciled {
            identity,
            vm,
            volumes,
            vg,
        })
    }

    fn device_path(
        &self,
        d: &DriveRef,
        id: &HostIdentity,
        v: &Volume,
        vg: &VgView,
    ) -> anyhow::Result<String> {
        let link = v
            .link_to(&id.vm_id)
            .ok_or_else(|| anyhow::anyhow!("volume {} is not linked to {}", v.id, id.vm_id))?;
        if let Some(p) = device_suffix(&link.device).and_then(|s| vg.devices.get(s)) {
            return Ok(p.clone());
        }
        self.hosts
            .wait_device(&d.host, &link.device)
            .with_context(|| {
                format!(
                    "volume {} is attached as {} but its device did not appear on {}",
                    v.id, link.device, d.host
                )
            })
    }

    /// Links an unlinked volume of the drive to the host's VM.
    fn link(
        &self,
        d: &DriveRef,
        id: &HostIdentity,
        v: &Volume,
        vg: &VgView,
    ) -> anyhow::Result<Volume> {
        {
            let _devices = self.device_lock(&id.vm_id)?;
            let vm = self.cloud.vm(&id.vm_id)?;
            // Names other in-flight links of ours hold (attaching, not yet in the VM's mappings).
            let ours = self.cloud.find_volumes(&VolumeFilter {
                linked_vm_ids: vec![id.vm_id.clone()],
                ..Default::default()
            })?;
            let mut taken: Vec<String> = vm.devices.iter().map(|x| x.device.clone()).collect();
            taken.extend(
                ours.iter()
                    .flat_map(|o| o.links.iter().map(|l| l.device.clone())),
            );
            taken.extend(vg.devices.keys().map(|s| format!("sd{s}")));
            let device = free_device(taken.iter().map(String::as_str)).ok_or_else(|| {
                fail(
                    ErrorKind::Failed,
                    format!("no free device name left on VM {}", id.vm_id),
                )
            })?;
            tracing::info!(
                "drive {}: linking volume {} to {} as {device}",
                d.name(),
                v.id,
                id.vm_id
            );
            self.cloud
                .link_volume(&v.id, &id.vm_id, &device)
                .with_context(|| {
                    format!("linking volume {} to VM {} as {device}", v.id, id.vm_id)
                })?;
            crate::crashpoint::reached("link:requested");
        }
        wait_link(
            self.cloud,
            &v.id,
            &id.vm_id,
            self.wait(self.timeouts.volume_link),
        )
    }

    /// Finds the volume of an interrupted create and tags it.
    fn recover_intent(&self, d: &DriveRef, vm: &mut Vm) -> anyhow::Result<()> {
        let key = intent_key(d.ds);
        let Some(token) = vm.tags.get(&key).cloned() else {
            return Ok(());
        };
        let found = self.cloud.find_volumes(&VolumeFilter {
            client_tokens: vec![token.clone()],
            ..Default::default()
        })?;
        if let Some(v) = found.into_iter().find(|v| v.state != VolumeState::Deleting) {
            if v.tags.get(TAG_DRIVE) != Some(&d.name()) {
                tracing::info!(
                    "drive {}: adopting volume {} left untagged by an interrupted growth",
                    d.name(),
                    v.id
                );
                self.cloud.create_tags(
                    std::slice::from_ref(&v.id),
                    &drive_tags(&d.host, d.ds, &vm.id),
                )?;
            }
            self.cloud
                .delete_tags(std::slice::from_ref(&vm.id), &[(key.clone(), token)])?;
            vm.tags.remove(&key);
        }
        // Not found: the create never reached the cloud (or is still in flight); the token
        // stays recorded and the next growth reuses it, so it can never make a second volume.
        Ok(())
    }

    /// Creates, tags, links and adds one BSU of `size_gib`.
    fn grow_once(
        &self,
        d: &DriveRef,
        r: &Reconciled,
        size_gib: u64,
        iops: Option<u32>,
    ) -> anyhow::Result<()> {
        let key = intent_key(d.ds);
        let token = match r.vm.tags.get(&key) {
            Some(t) => t.clone(),
            None => {
                let t = format!("bsud-{}", hex::encode(rand::random::<[u8; 12]>()));
                self.cloud
                    .create_tags(std::slice::from_ref(&r.vm.id), &[(key.clone(), t.clone())])
                    .context("recording the growth intent on the host VM")?;
                crate::crashpoint::reached("grow:intent-recorded");
                t
            }
        };
        tracing::info!(
            "drive {}: creating a {size_gib} GiB {} volume",
            d.name(),
            d.settings.volume_type.as_str()
        );
        let spec = VolumeSpec {
            size_gib,
            volume_type: d.settings.volume_type,
            iops,
            subregion: r.identity.subregion.clone(),
            client_token: token.clone(),
        };
        let created = self.cloud.create_volume(&spec);
        let v = match created {
            Ok(v) => {
                crate::crashpoint::reached("grow:volume-created");
                v
            }
            Err(e) => {
                // A refused create (quota, invalid size) will not succeed with this token later.
                let _ = self.cloud.delete_tags(
                    std::slice::from_ref(&r.vm.id),
                    &[(key.clone(), token.clone())],
                );
                return Err(e.context(format!(
                    "creating a {size_gib} GiB volume for drive {}",
                    d.name()
                )));
            }
        };
        self.cloud
            .create_tags(
                std::slice::from_ref(&v.id),
                &drive_tags(&d.host, d.ds, &r.vm.id),
            )
            .with_context(|| format!("tagging volume {}", v.id))?;
        crate::crashpoint::reached("grow:volume-tagged");
        self.cloud
            .delete_tags(std::slice::from_ref(&r.vm.id), &[(key, token)])
            .context("clearing the growth intent")?;
        crate::crashpoint::reached("grow:intent-cleared");
        let v = wait_volume(
            self.cloud,
            &v.id,
            VolumeState::Available,
            self.wait(self.timeouts.volume_create),
        )?;
        crate::crashpoint::reached("grow:volume-available");
        let v = self.link(d, &r.identity, &v, &r.vg)?;
        let path = self.device_path(d, &r.identity, &v, &r.vg)?;
        crate::crashpoint::reached("grow:device-present");
        self.hosts.pv_add(&d.host, &d.vg(), &path, true)?;
        crate::crashpoint::reached("grow:pv-added");
        Ok(())
    }

    /// Grows the drive until `need` bytes fit with the headroom (caller holds the lock).
    pub fn ensure_space_locked(
        &self,
        d: &DriveRef,
        mut r: Reconciled,
        need: u64,
    ) -> anyhow::Result<Reconciled> {
        // Bounded: each step adds a volume; the policy refuses past the limits.
        for _ in 0..=d.settings.max_volumes {
            match plan_growth(&d.settings, &r.state(), need).with_context(|| {
                format!(
                    "drive {} cannot provide {} MiB",
                    d.name(),
                    need.div_ceil(1 << 20)
                )
            })? {
                Growth::Enough => return Ok(r),
                Growth::Grow(step) => {
                    self.grow_once(d, &r, step.size_gib, step.iops)?;
                    r = self.reconcile(d)?;
                }
            }
        }
        Err(fail(
            ErrorKind::Failed,
            format!("drive {} did not reach the requested size", d.name()),
        ))
    }

    /// Locks, reconciles and grows the drive so that `need` bytes fit, then runs `then` with the
    /// lock still held (the allocation itself, so concurrent callers never race for the space).
    pub fn with_space<T>(
        &self,
        d: &DriveRef,
        need: u64,
        then: impl FnOnce(&Reconciled) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let _lock = self.lock(d)?;
        let r = self.reconcile(d)?;
        let r = self.ensure_space_locked(d, r, need)?;
        then(&r)
    }

    /// Locks and reconciles only.
    pub fn reconcile_locked(&self, d: &DriveRef) -> anyhow::Result<Reconciled> {
        let _lock = self.lock(d)?;
        self.reconcile(d)
    }

    /// Releases BSUs that hold no data while the headroom stays.
    pub fn release(&self, d: &DriveRef) -> anyhow::Result<ShrinkReport> {
        let _lock = self.lock(d)?;
        let r = self.reconcile(d)?;
        let by_path: BTreeMap<String, &Volume> = r
            .volumes
            .iter()
            .filter_map(|v| {
                let l = v.link_to(&r.identity.vm_id)?;
                let s = device_suffix(&l.device)?;
                Some((r.vg.devices.get(s)?.clone(), v))
            })
            .collect();
        let candidates: Vec<ShrinkCandidate> =
            r.vg.pvs
                .iter()
                .filter(|p| by_path.contains_key(&p.device))
                .map(|p| ShrinkCandidate {
                    key: p.device.clone(),
                    size: p.size,
                    allocated_extents: p.allocated_extents,
                })
                .collect();
        let mut report = ShrinkReport::default();
        for dev in plan_shrink(&d.settings, r.vg.free, r.vg.lv_count, &candidates) {
            let v = by_path[&dev];
            tracing::info!(
                "drive {}: releasing empty volume {} ({dev}, {} GiB)",
                d.name(),
                v.id,
                v.size_gib
            );
            self.cloud.create_tags(
                std::slice::from_ref(&v.id),
                &[(TAG_RELEASING.into(), "1".into())],
            )?;
            crate::crashpoint::reached("release:marked");
            self.finish_release(d, &r.identity, &r.vg, v)?;
            report.released.push(v.id.clone());
        }
        Ok(report)
    }

    /// Completes the release of a volume marked releasing: out of the VG (only if empty),
    /// unlinked, deleted. A PV that got data meanwhile cancels the release.
    fn finish_release(
        &self,
        d: &DriveRef,
        id: &HostIdentity,
        vg: &VgView,
        v: &Volume,
    ) -> anyhow::Result<()> {
        if let Some(l) = v
            .link_to(&id.vm_id)
            .filter(|l| l.state != LinkState::Detached)
        {
            let path = device_suffix(&l.device)
                .and_then(|s| vg.devices.get(s))
                .cloned();
            if let Some(path) = path {
                if let Some(pv) = vg.pv(&path) {
                    if pv.allocated_extents > 0 {
                        tracing::warn!(
                            "drive {}: volume {} got data; release cancelled",
                            d.name(),
                            v.id
                        );
                        self.cloud.delete_tags(
                            std::slice::from_ref(&v.id),
                            &[(TAG_RELEASING.into(), "1".into())],
                        )?;
                        return Ok(());
                    }
                }
                self.hosts.pv_remove(&d.host, &d.vg(), &path)?;
                crate::crashpoint::reached("release:pv-removed");
            }
            self.cloud.unlink_volume(&v.id, false)?;
            crate::crashpoint::reached("release:unlink-requested");
        }
        if v.active_link().is_some() || v.state == VolumeState::InUse {
            wait_unlinked(self.cloud, &v.id, self.wait(self.timeouts.volume_unlink))?;
        }
        self.cloud.delete_volume(&v.id)?;
        Ok(())
    }

    /// Total bytes the drive can still give (free now + growth room), for monitoring.
    pub fn capacity(d: &DriveRef, vg: &VgView) -> (u64, u64, u64) {
        let total = d.settings.max_size_gib * GIB;
        let used = vg.lv_bytes;
        (used, total.saturating_sub(used), total)
    }
}

/// What an adopt did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AdoptReport {
    /// Volumes moved.
    pub volumes: Vec<String>,
    /// LVs found on the new host.
    pub lvs: Vec<String>,
}

/// What a delete did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeleteReport {
    /// LVs removed (only with force).
    pub lvs_removed: Vec<String>,
    /// Volumes deleted.
    pub volumes: Vec<String>,
}

impl Engine<'_> {
    /// Moves drive (`from_host`, `to.ds`) to `to.host`: unlinks its volumes from the old VM
    /// (forcing when asked, for a dead host), retags them, links them to the new VM; LVM then
    /// finds the VG, with every LV, on the new host. Refuses when the new host already has a VG
    /// of that name.
    pub fn adopt(
        &self,
        from_host: &str,
        to: &DriveRef,
        force_unlink: bool,
    ) -> anyhow::Result<AdoptReport> {
        let from = DriveRef {
            host: from_host.to_string(),
            ds: to.ds,
            settings: to.settings.clone(),
        };
        if from.host == to.host {
            return Err(fail(
                ErrorKind::BadInput,
                "adopt: source and destination hosts are the same",
            ));
        }
        let _l1 = self.lock(&from)?;
        let _l2 = self.lock(to)?;
        let target = self.hosts.identity(&to.host)?;
        let existing = self.hosts.vg_report(&to.host, &to.vg())?;
        if existing.exists {
            return Err(fail(
                ErrorKind::Refused,
                format!(
                    "host {} already has a volume group {}; adopting a second one would clash (remove or rename it first)",
                    to.host,
                    to.vg()
                ),
            ));
        }
        let vols = self.drive_volumes(&from)?;
        if vols.is_empty() {
            return Err(fail(
                ErrorKind::Failed,
                format!("drive {} has no volume in the cloud", from.name()),
            ));
        }
        let mut report = AdoptReport::default();
        for v in &vols {
            if let Some(l) = v.active_link().filter(|l| l.vm_id != target.vm_id) {
                tracing::info!(
                    "adopt: unlinking {} from {} ({}){}",
                    v.id,
                    l.vm_id,
                    l.device,
                    if force_unlink { " with force" } else { "" }
                );
                self.cloud
                    .unlink_volume(&v.id, force_unlink)
                    .with_context(|| format!("unlinking {} from VM {}", v.id, l.vm_id))?;
            }
        }
        for v in &vols {
            if v.active_link().is_some_and(|l| l.vm_id != target.vm_id) {
                wait_unlinked(self.cloud, &v.id, self.wait(self.timeouts.volume_unlink))
                    .with_context(|| format!("volume {} did not detach; if its host is dead, retry with --force-unlink", v.id))?;
            }
            self.cloud.create_tags(
                std::slice::from_ref(&v.id),
                &drive_tags(&to.host, to.ds, &target.vm_id),
            )?;
            report.volumes.push(v.id.clone());
        }
        let r = self.reconcile(to)?;
        if !r.vg.exists {
            return Err(fail(
                ErrorKind::Failed,
                format!(
                    "the volumes of {} are on {} but LVM there does not see {}",
                    from.name(),
                    to.host,
                    to.vg()
                ),
            ));
        }
        report.lvs = r.vg.lvs.iter().map(|l| l.name.clone()).collect();
        Ok(report)
    }

    /// Deletes a drive: its VG and BSUs. Refuses while LVs exist unless `force` (then removes
    /// them — data loss, on purpose).
    pub fn delete(&self, d: &DriveRef, force: bool) -> anyhow::Result<DeleteReport> {
        let _lock = self.lock(d)?;
        let r = self.reconcile(d)?;
        let mut report = DeleteReport::default();
        if !r.vg.lvs.is_empty() {
            if !force {
                let names: Vec<&str> = r.vg.lvs.iter().map(|l| l.name.as_str()).collect();
                return Err(fail(
                    ErrorKind::Refused,
                    format!(
                        "drive {} still holds {} LV(s): {}; remove them or use --force",
                        d.name(),
                        names.len(),
                        names.join(", ")
                    ),
                ));
            }
            for lv in &r.vg.lvs {
                tracing::warn!("drive delete --force: removing LV {}/{}", d.vg(), lv.name);
                self.hosts.lv_remove(&d.host, &d.vg(), &lv.name)?;
                report.lvs_removed.push(lv.name.clone());
            }
        }
        for v in &r.volumes {
            self.cloud.create_tags(
                std::slice::from_ref(&v.id),
                &[(TAG_RELEASING.into(), "1".into())],
            )?;
        }
        let vg = self.hosts.vg_report(&d.host, &d.vg())?;
        for v in &r.volumes {
            self.finish_release(d, &r.identity, &vg, v)?;
            report.volumes.push(v.id.clone());
        }
        Ok(report)
    }
}
