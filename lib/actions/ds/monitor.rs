//! `monitor`: `USED_MB`, `FREE_MB`, `TOTAL_MB` of the datastore's drive on its image host.
//!
//! TOTAL is the drive's growth limit (`BSUD_MAX_SIZE_GIB`), not today's VG size: the drive
//! grows on demand, so the scheduler must see the room it can grow into. USED is what the LVs
//! hold; a host without the VG yet holds nothing. No cloud call: monitoring runs every few
//! minutes and must stay cheap.

use super::MIB;
use crate::actions::Ctx;
use crate::config::DriveSettings;
use crate::drive::naming::vg_name;
use crate::drive::storage::Storage;
use crate::one::message::DsMessage;
use crate::one::output::ActionOutput;

/// Runs `monitor`.
pub fn run(ctx: &Ctx, m: &DsMessage) -> anyhow::Result<ActionOutput> {
    let ds = &m.datastore;
    let settings = DriveSettings::from_template(&ds.template)?;
    let storage = Storage::new(ctx);
    let host = storage.image_host(ds)?;
    let list = storage
        .hosts
        .lv_list(&host, &vg_name(ds.id).parse()?, &[])?;
    let used: u64 = list.lvs.iter().map(|l| l.size).sum();
    let used_mb = used.div_ceil(MIB);
    let total_mb = settings.max_size_gib * 1024;
    Ok(ActionOutput::Monitor {
        used_mb,
        free_mb: total_mb.saturating_sub(used_mb),
        total_mb,
        extra: Vec::new(),
    })
}
