//! Host monitoring probes: what OpenNebula's monitord learns about our drives.
//!
//! A bsud system datastore is `SHARED = NO`, so oned never calls `tm/bsud/monitor` for it: its
//! capacity on each host comes from the host "system" probes, which print
//! `DS = [ ID = <id>, TOTAL_MB = …, FREE_MB = …, USED_MB = … ]`, and the scheduler places VMs
//! against each host's FREE_MB (reference §8.3). `one-bsud probe ds` prints that line for every
//! drive of the host:
//! - the drives are the VGs named `vg-one-<id>` (the probe cannot ask OpenNebula which
//!   datastores exist; oned keeps only the ids of non-shared system datastores, so the line of
//!   an image datastore's drive is ignored by oned);
//! - TOTAL is the drive's growth limit, `BSUD_MAX_SIZE_GIB`, which the drive engine records on
//!   the VG as the tag `one.bsud.max_size_gib=<n>` (the VG size when the tag is absent or
//!   smaller), USED is what the LVs hold (allocated extents), FREE = TOTAL − USED: what a VM can
//!   still get here, growth included. Not `df`.
//!
//! The rule that keeps this the only capacity oned sees for a bsud datastore: **no `.monitor`
//! file in a bsud system datastore directory.** The stock `monitor_ds.rb` probe prints a `df`
//! line for every directory holding one, and with two `DS` vectors for one id the scheduler
//! keeps whichever came last — the probes run in directory order, which nobody controls. The
//! per-VM disk sizes that `.monitor` would have brought (through `monitor_ds_vm.rb`) come
//! instead from `one-bsud probe vm-disks`, the vm/monitor probe that runs `tm/bsud/monitor_ds`
//! for each drive's datastore directory (skipping directories that do hold a `.monitor`, which
//! the stock probe already covers).
//!
//! Probes must never fail: monitord drops the whole host report when one probe exits non-zero.
//! The shell entries (`remotes/im/kvm-probes.d/…/bsud-*`) therefore exit 0 whatever happens;
//! problems go to stderr.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use crate::config::Env;
use crate::drive::naming::TAG_MAX_SIZE_GIB;
use crate::exec::{self, Cmd};
use crate::host::env::HostEnv;
use crate::lvm::{Lvm, Vg};
use crate::one::output::ActionOutput;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// How long one probe run may take (monitord runs host probes every few minutes).
const PROBE_DEADLINE: Duration = Duration::from_secs(60);

/// Where oned keeps datastore directories unless monitord says otherwise.
pub const DEFAULT_DATASTORE_LOCATION: &str = "/var/lib/one/datastores";

/// `one-bsud probe …`.
#[derive(Debug, Subcommand)]
pub enum ProbeCmd {
    /// host/system probe: print DS = [ ID, TOTAL_MB, FREE_MB, USED_MB ] for every drive (VG vg-one-ID) on this host; TOTAL is the drive's growth limit.
    Ds,
    /// vm/monitor probe: run the driver's monitor_ds for each drive's datastore directory (monitord's configuration on stdin) and print its VM = [ … ] lines.
    VmDisks(VmDisksArgs),
}

/// `probe vm-disks` arguments.
#[derive(Debug, Clone, Args)]
pub struct VmDisksArgs {
    /// The monitor_ds entry to run (default: `monitor_ds` beside this binary, in tm/bsud/).
    #[arg(long, value_name = "PATH")]
    pub monitor_ds: Option<PathBuf>,
}

/// One drive's capacity as oned wants it, in MB (MiB).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DriveCapacity {
    /// The datastore id.
    pub id: i64,
    /// Growth limit (or VG size), MB.
    pub total_mb: u64,
    /// TOTAL − USED, MB.
    pub free_mb: u64,
    /// Allocated to LVs, MB.
    pub used_mb: u64,
    /// Whether TOTAL came from the limit tag.
    pub limit_recorded: bool,
}

impl DriveCapacity {
    /// The probe line.
    pub fn line(&self) -> String {
        format!(
            "DS = [ ID = {}, TOTAL_MB = {}, FREE_MB = {}, USED_MB = {} ]",
            self.id, self.total_mb, self.free_mb, self.used_mb
        )
    }
}

/// The datastore id of a drive VG: `vg-one-<id>` with `<id>` written as oned writes it.
pub fn drive_id(vg: &str) -> Option<i64> {
    let digits = vg.strip_prefix("vg-one-")?;
    let id: i64 = digits.parse().ok()?;
    (id.to_string() == digits).then_some(id)
}

/// The growth limit recorded on a VG, GiB.
pub fn recorded_limit(vg: &Vg) -> Option<u64> {
    let prefix = format!("{TAG_MAX_SIZE_GIB}=");
    vg.tags
        .iter()
        .filter_map(|t| t.strip_prefix(&prefix)?.parse::<u64>().ok())
        .max()
}

/// The capacity of every drive among `vgs`, by datastore id.
pub fn drive_capacities(vgs: &[Vg]) -> Vec<DriveCapacity> {
    let mut out: Vec<DriveCapacity> = vgs
        .iter()
        .filter_map(|vg| {
            let id = drive_id(&vg.name)?;
            let used = vg.size.saturating_sub(vg.free);
            let limit = recorded_limit(vg).map(|g| g.saturating_mul(GIB));
            let total = limit.unwrap_or(0).max(vg.size);
            let total_mb = total / MIB;
            let used_mb = used / MIB;
            Some(DriveCapacity {
                id,
                total_mb,
                used_mb,
                free_mb: total_mb.saturating_sub(used_mb),
                limit_recorded: limit.is_some(),
            })
        })
        .collect();
    out.sort_by_key(|d| d.id);
    out
}

/// `DATASTORE_LOCATION` from monitord's `<MONITOR_CONFIGURATION>` (stdin of every probe).
pub fn datastore_location(xml: &str) -> Option<String> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(xml);
    let mut depth = 0usize;
    let mut inside = false;
    let mut value = String::new();
    loop {
        match r.read_event().ok()? {
            Event::Start(e) => {
                depth += 1;
                inside = depth == 2 && e.name().as_ref() == b"DATASTORE_LOCATION";
            }
            Event::End(_) => {
                if inside {
                    let v = value.trim().to_string();
                    return (!v.is_empty()).then_some(v);
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(t) if inside => value.push_str(&String::from_utf8_lossy(t.as_ref())),
            Event::CData(t) if inside => value.push_str(&String::from_utf8_lossy(&t)),
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// Usage at which the probe warns and grows a thin pool from the VG's free space (the
/// frontend's `drive pool-guard` grows the drive itself, at the datastore's threshold).
const POOL_ALERT_BP: u32 = 8000;

/// A thin drive: USED becomes what the pool holds (not its size), and a pool past
/// [`POOL_ALERT_BP`] is grown at once from the VG's free extents, which needs no cloud call.
fn check_pool(lvm: &Lvm, d: &mut DriveCapacity) -> anyhow::Result<()> {
    let vg: crate::lvm::VgName = format!("vg-one-{}", d.id).parse()?;
    let lvs = lvm.lvs(&vg)?;
    let Some(pool) = lvs
        .iter()
        .find(|l| l.name == crate::drive::thin::POOL_LV && l.is_thin_pool())
    else {
        return Ok(());
    };
    let held = crate::drive::thin::used_bytes(pool);
    d.used_mb = d.used_mb.saturating_sub(pool.size / MIB) + held / MIB;
    d.free_mb = d.total_mb.saturating_sub(d.used_mb);
    let (data, meta) = (pool.data_bp.unwrap_or(0), pool.metadata_bp.unwrap_or(0));
    if data.max(meta) < POOL_ALERT_BP {
        return Ok(());
    }
    eprintln!(
        "bsud probe: thin pool {vg}/{} is {}.{:02} % full (metadata {}.{:02} %): growing it \
         from the VG's free space; `one-bsud drive pool-guard` on the frontend adds BSUs",
        pool.name,
        data / 100,
        data % 100,
        meta / 100,
        meta % 100
    );
    let name: crate::lvm::LvName = pool.name.parse()?;
    let r = if data >= POOL_ALERT_BP {
        lvm.lvextend_free_share(&vg, &name, 50)
    } else {
        lvm.lvextend_pool_metadata(
            &vg,
            &name,
            pool.metadata_size.unwrap_or(0).saturating_mul(2),
        )
    };
    r.map_err(|e| e.context("the VG has no room left: the frontend must add a BSU"))
}

/// `path` (an OpenNebula host path) as seen in this host view.
fn on_host(h: &HostEnv, path: &str) -> PathBuf {
    h.root.join(path.trim_start_matches('/'))
}

/// Runs a probe.
pub fn run(cmd: ProbeCmd, stdin: &mut dyn Read, env: &Env) -> anyhow::Result<ActionOutput> {
    let h = HostEnv::from_env(env);
    let lvm = Lvm::new(h.lvm_system_dir.clone(), Instant::now() + PROBE_DEADLINE);
    let mut drives = drive_capacities(&lvm.vgs_all()?);
    for d in &mut drives {
        if let Err(e) = check_pool(&lvm, d) {
            eprintln!("bsud probe: thin pool of vg-one-{}: {e:#}", d.id);
        }
    }
    let lines: Vec<String> = match cmd {
        ProbeCmd::Ds => drives.iter().map(DriveCapacity::line).collect(),
        ProbeCmd::VmDisks(a) => {
            let mut xml = String::new();
            // monitord always writes its configuration; a probe run by hand may get none.
            let _ = stdin.read_to_string(&mut xml);
            let location =
                datastore_location(&xml).unwrap_or_else(|| DEFAULT_DATASTORE_LOCATION.to_string());
            let monitor_ds = match a.monitor_ds {
                Some(p) => p,
                None => std::env::current_exe()?
                    .parent()
                    .map(|d| d.join("monitor_ds"))
                    .unwrap_or_else(|| PathBuf::from("monitor_ds")),
            };
            vm_disk_lines(&h, &location, &drives, &monitor_ds)
        }
    };
    Ok(if lines.is_empty() {
        ActionOutput::Nothing
    } else {
        ActionOutput::Document(lines.join("\n"))
    })
}

fn vm_disk_lines(
    h: &HostEnv,
    location: &str,
    drives: &[DriveCapacity],
    monitor_ds: &Path,
) -> Vec<String> {
    let mut lines = Vec::new();
    for d in drives {
        let dir = format!("{}/{}", location.trim_end_matches('/'), d.id);
        let here = on_host(h, &dir);
        if !here.is_dir() || here.join(".monitor").exists() {
            continue;
        }
        let out = exec::run(&Cmd::new(monitor_ds).arg(&dir).timeout(PROBE_DEADLINE));
        match out {
            Ok(o) => lines.extend(
                o.stdout_str()
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string),
            ),
            Err(e) => tracing::warn!("{} {dir}: {e}", monitor_ds.display()),
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vg(name: &str, size: u64, free: u64, tags: &[&str]) -> Vg {
        Vg {
            name: name.into(),
            uuid: "u".into(),
            size,
            free,
            extent_size: 4 * MIB,
            extent_count: size / (4 * MIB),
            free_count: free / (4 * MIB),
            pv_count: 1,
            lv_count: 1,
            missing_pv_count: 0,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn capacity_is_the_limit_minus_what_lvs_hold() {
        let vgs = [
            vg(
                "vg-one-101",
                10 * GIB,
                6 * GIB,
                &["one.bsud.max_size_gib=2000"],
            ),
            vg("vg-one-7", 3 * GIB, GIB, &[]),
            vg("vg-one-8", 30 * GIB, 0, &["one.bsud.max_size_gib=10"]),
            vg("vg-one-007", GIB, 0, &[]),
            vg("vg-other", GIB, 0, &[]),
            vg("vg-one-x", GIB, 0, &[]),
        ];
        let lines: Vec<String> = drive_capacities(&vgs).iter().map(|d| d.line()).collect();
        assert_eq!(
            lines,
            [
                "DS = [ ID = 7, TOTAL_MB = 3072, FREE_MB = 1024, USED_MB = 2048 ]",
                // The limit was lowered below what the VG already holds: no growth room left.
                "DS = [ ID = 8, TOTAL_MB = 30720, FREE_MB = 0, USED_MB = 30720 ]",
                "DS = [ ID = 101, TOTAL_MB = 2048000, FREE_MB = 2043904, USED_MB = 4096 ]",
            ]
        );
    }

    #[test]
    fn datastore_location_from_monitord_configuration() {
        let text = std::fs::read_to_string(format!(
            "{}/../tests/fixtures/oned-traces-nonshared/monitoring/probe-stdin-MONITOR_CONFIGURATION.xml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        // The fixture starts with comment lines; the XML is the last line.
        let xml = text.lines().last().unwrap();
        assert_eq!(
            datastore_location(xml).as_deref(),
            Some("/var/lib/one//datastores")
        );
        assert_eq!(
            datastore_location("<MONITOR_CONFIGURATION><X><DATASTORE_LOCATION>/no</DATASTORE_LOCATION></X><DATASTORE_LOCATION>/d</DATASTORE_LOCATION></MONITOR_CONFIGURATION>").as_deref(),
            Some("/d")
        );
        assert_eq!(datastore_location(""), None);
        assert_eq!(
            datastore_location("<A><DATASTORE_LOCATION></DATASTORE_LOCATION></A>"),
            None
        );
    }
}
