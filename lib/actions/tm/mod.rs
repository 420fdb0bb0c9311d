//! Transfer-manager actions (reference §4, §5): parse and validate argv, then act.
//!
//! Layout of a VM on drives (README.md, "VM disks on drives"):
//! - Disk N of VM V on host H in system datastore S is the LV `vg-one-S/lv-one-V-N` on H's
//!   drive of S, S being taken from the path (`…/datastores/S/V/disk.N`), never from the
//!   datastore argument (the image datastore for image disks). It carries `one.vm=V`,
//!   `one.disk=N`, `one.image=I` (image disks) and `one.bsud.state=ready` once its content is
//!   complete; `<vm dir>/disk.N` is a symlink to its node. Snapshot K is the thick copy
//!   `lv-one-V-N-snap-K` beside it.
//! - A STOPPED or UNDEPLOYED VM's disks stay on the drive of the host they left: `mv` to the
//!   frontend writes a *parked-disk marker* at the frontend path (JSON naming host, datastore
//!   and LV) and removes the host's link; resume moves the LV only if the new host or system
//!   datastore differs. Everything that accepts a frontend disk path (`mv`, `mvds`, `cpds`,
//!   `delete`, `resize`) follows the marker, so terminating an undeployed VM removes its LVs
//!   (OpenNebula #5385, #2981). The VM directory itself (checkpoint…) really moves.
//!
//! Invariants:
//! - Every action is idempotent and converges when re-run after a crash at any point.
//! - Data is removed only after its copy is verified: `mv` and `mvds` compare the receiver's
//!   digest with a separate checksum of the source before removing it.
//! - Only LVs carrying our tags are removed (the agent refuses others; removal asks for
//!   `one.vm=V`).

mod clone;
mod context;
mod delete;
mod disk;
mod migrate;
mod monitor;
mod mv;
mod save;
mod snap;
mod volatile;

use std::ffi::OsString;
use std::io::Read;

use super::Ctx;
use crate::drive::storage::Storage;
use crate::host::client::HostClient;
use crate::one::input::read_ds_input;
use crate::one::output::ActionOutput;
use crate::one::tm::TmArgs;

/// The name this driver has in oned (`TM_MAD`), passed as
/// the 6th argument when calling other transfer managers.
pub const TM_NAME: &str = "bsud";

/// What the actions share: the context and storage (drives and host agents).
pub(crate) struct Tm<'a> {
    ctx: &'a Ctx,
    storage: Storage<'a>,
}

impl<'a> Tm<'a> {
    fn new(ctx: &'a Ctx) -> Tm<'a> {
        Tm {
            ctx,
            storage: Storage::new(ctx),
        }
    }

    fn hosts(&self) -> &HostClient {
        &self.storage.hosts
    }

    /// Whether oned names the frontend (the place of STOPPED/UNDEPLOYED VMs).
    fn is_frontend(&self, host: &str) -> bool {
        host == self.ctx.config.frontend_host
    }
}

/// Runs transfer-manager action `action`.
pub fn run(
    ctx: &Ctx,
    action: &str,
    args: &[OsString],
    stdin: &mut dyn Read,
) -> anyhow::Result<ActionOutput> {
    if action == "monitor" {
        // tm/<tm>/monitor receives a datastore message, like datastore/<ds>/monitor.
        let input = read_ds_input(args, stdin)?;
        crate::logging::set_context(|c| c.datastore_id = Some(input.message.datastore.id));
        return monitor::monitor(ctx, &input.message.datastore);
    }
    let parsed = TmArgs::parse(action, args, stdin)?;
    crate::logging::set_context(|c| c.vm_id = parsed.vm_id());
    if let TmArgs::MonitorDs { ds_path } = &parsed {
        // Runs on a host, from the probes: no frontend, no configuration.
        return monitor::monitor_ds(&ctx.env, ds_path);
    }
    let tm = Tm::new(ctx);
    match parsed {
        TmArgs::Clone {
            src, dst, vm_id, ..
        } => tm.clone_image(&src, &dst, vm_id, false)?,
        TmArgs::Ln {
            src, dst, vm_id, ..
        } => tm.clone_image(&src, &dst, vm_id, true)?,
        TmArgs::Mv {
            src, dst, vm_id, ..
        } => tm.mv(&src, &dst, vm_id)?,
        TmArgs::Mvds {
            src, source, vm_id, ..
        } => tm.mvds(&src, &source, vm_id)?,
        TmArgs::Cpds {
            src,
            source,
            snap_id,
            vm_id,
            ..
        } => tm.cpds(&src, &source, snap_id, vm_id)?,
        TmArgs::Delete { target, vm_id, .. } => tm.delete(&target, vm_id)?,
        TmArgs::Mkimage {
            size_mb,
            format,
            dst,
            vm_id,
            ..
        } => tm.mkimage(size_mb, &format, &dst, vm_id)?,
        TmArgs::Mkswap {
            size_mb,
            dst,
            vm_id,
            ..
        } => tm.mkswap(size_mb, &dst, vm_id)?,
        TmArgs::Context {
            files, dst, vm_id, ..
        } => tm.context(&files, &dst, vm_id)?,
        TmArgs::Resize {
            disk,
            size_mb,
            vm_id,
            ..
        } => tm.resize(&disk, size_mb, vm_id)?,
        TmArgs::Premigrate(m) => tm.premigrate(&m)?,
        TmArgs::Postmigrate(m) => tm.postmigrate(&m)?,
        TmArgs::Failmigrate(m) => tm.failmigrate(&m)?,
        TmArgs::SnapCreate {
            disk,
            snap_id,
            vm_id,
            ..
        } => tm.snap_create(&disk, snap_id, vm_id, false)?,
        TmArgs::SnapCreateLive {
            disk,
            snap_id,
            vm_id,
            ..
        } => tm.snap_create(&disk, snap_id, vm_id, true)?,
        TmArgs::SnapRevert {
            disk,
            snap_id,
            vm_id,
            ..
        } => tm.snap_revert(&disk, snap_id, vm_id)?,
        TmArgs::SnapDelete {
            disk,
            snap_id,
            vm_id,
            ..
        } => tm.snap_delete(&disk, snap_id, vm_id)?,
        TmArgs::MonitorDs { .. } => unreachable!("handled above"),
    }
    Ok(ActionOutput::Nothing)
}
