//! Monitoring of system datastores (reference §8).
//!
//! - `monitor_ds <ds path>` runs **on a host**: our vm/monitor probe (`one-bsud probe
//!   vm-disks`, lib/ops/probe.rs) calls it for every drive's datastore directory; no `.monitor`
//!   file is ever written, so the stock probe never reports `df` for our datastores. It prints one
//!   `VM = [ ID = <vm>, MONITOR = "<base64>" ]` line per VM whose directory is on this host,
//!   the payload being `DISK_SIZE = [ ID = <disk>, SIZE = <MiB> ]` and
//!   `SNAPSHOT_SIZE = [ ID = <snap>, DISK_ID = <disk>, SIZE = <MiB> ]` lines from the LVs of
//!   `vg-one-<ds>` (thick LVs: the size is the space they take). No configuration is read.
//! - `monitor` (oned calls it only for SHARED=YES system datastores; ours are SHARED=NO and
//!   get their capacity from the hosts) answers anyway: USED is the LV space of the drives of
//!   the BRIDGE_LIST hosts, TOTAL is `BSUD_MAX_SIZE_GIB` per such host (one when the list is
//!   empty), FREE the difference.

use std::collections::BTreeMap;

use base64::Engine as _;

use crate::actions::Ctx;
use crate::config::{DriveSettings, Env};
use crate::drive::naming::vg_name;
use crate::drive::policy::GIB;
use crate::error::{fail, ErrorKind};
use crate::host::agent::Agent;
use crate::host::env::HostEnv;
use crate::host::proto::Limits;
use crate::host::vm_ops::{list, VmPath};
use crate::lvm::VgName;
use crate::one::message::Datastore;
use crate::one::output::ActionOutput;

fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `lv-one-<vm>-<disk>[-snap-<snap>]` → (vm, disk, snap).
pub fn parse_disk_lv(name: &str) -> Option<(i64, u32, Option<u32>)> {
    let rest = name.strip_prefix("lv-one-")?;
    let (main, snap) = match rest.split_once("-snap-") {
        Some((m, s)) => (m, Some(digits(s)?)),
        None => (rest, None),
    };
    let (vm, disk) = main.split_once('-')?;
    Some((digits(vm)?, digits(disk)?, snap))
}

/// The per-VM lines for `(lv name, bytes)` pairs, for VMs in `vms` only.
pub fn vm_lines(lvs: &[(String, u64)], vms: &[i64]) -> Vec<String> {
    let mut per_vm: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (name, bytes) in lvs {
        let Some((vm, disk, snap)) = parse_disk_lv(name) else {
            continue;
        };
        if !vms.contains(&vm) {
            continue;
        }
        let mb = bytes.div_ceil(1 << 20);
        per_vm.entry(vm).or_default().push(match snap {
            None => format!("DISK_SIZE = [ ID = {disk}, SIZE = {mb} ]"),
            Some(s) => format!("SNAPSHOT_SIZE = [ ID = {s}, DISK_ID = {disk}, SIZE = {mb} ]"),
        });
    }
    per_vm
        .into_iter()
        .map(|(vm, lines)| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(lines.join("\n") + "\n");
            format!("VM = [ ID = {vm}, MONITOR = \"{b64}\" ]")
        })
        .collect()
}

/// `monitor_ds <ds path>`, on the host.
pub fn monitor_ds(env: &Env, ds_path: &str) -> anyhow::Result<ActionOutput> {
    let ds: i64 = ds_path
        .rsplit('/')
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            fail(
                ErrorKind::BadInput,
                format!("{ds_path} does not end with a datastore id"),
            )
        })?;
    let host = HostEnv::from_env(env);
    let dir: VmPath = ds_path.parse()?;
    let vms: Vec<i64> = list(&host, &dir)?
        .entries
        .iter()
        .filter(|e| e.kind == crate::host::vm_ops::EntryKind::Dir)
        .filter_map(|e| e.name.parse().ok())
        .collect();
    if vms.is_empty() {
        return Ok(ActionOutput::Nothing);
    }
    let agent = Agent::new(
        host,
        &Limits {
            deadline_secs: 60,
            lock_timeout_secs: 1,
        },
    );
    let vg: VgName = vg_name(ds).parse()?;
    let lvs: Vec<(String, u64)> = if agent.lvm.vg(&vg)?.is_some() {
        agent
            .lvm
            .lvs(&vg)?
            .into_iter()
            .map(|l| (l.name, l.size))
            .collect()
    } else {
        Vec::new()
    };
    let lines = vm_lines(&lvs, &vms);
    if lines.is_empty() {
        return Ok(ActionOutput::Nothing);
    }
    Ok(ActionOutput::Document(lines.join("\n")))
}

/// `monitor` of a system datastore (SHARED=YES only; see the module documentation).
pub fn monitor(ctx: &Ctx, ds: &Datastore) -> anyhow::Result<ActionOutput> {
    let settings = DriveSettings::from_template(&ds.template)?;
    let hosts = ds.bridge_list();
    let client = crate::host::client::HostClient::new(&ctx.config);
    let vg: VgName = vg_name(ds.id).parse()?;
    let mut used: u64 = 0;
    for h in &hosts {
        let l = client.lv_list(h, &vg, &[])?;
        used += l.lvs.iter().map(|x| x.size).sum::<u64>();
    }
    let total = settings.max_size_gib * GIB * (hosts.len().max(1) as u64);
    let mb = |b: u64| b / (1 << 20);
    Ok(ActionOutput::Monitor {
        used_mb: mb(used),
        free_mb: mb(total.saturating_sub(used)),
        total_mb: mb(total),
        extra: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lv_names() {
        assert_eq!(parse_disk_lv("lv-one-7-2"), Some((7, 2, None)));
        assert_eq!(parse_disk_lv("lv-one-7-2-snap-3"), Some((7, 2, Some(3))));
        for bad in [
            "img-one-7",
            "lv-one-7",
            "lv-one-7-x",
            "lv-one-7-2-snap-",
            "lv-one--2",
        ] {
            assert_eq!(parse_disk_lv(bad), None, "{bad}");
        }
    }

    #[test]
    fn lines_are_oned_s_shape() {
        let lvs = vec![
            ("lv-one-7-0".to_string(), 12 << 20),
            ("lv-one-7-0-snap-1".to_string(), 12 << 20),
            ("lv-one-8-0".to_string(), 5 << 20),
            ("lv-one-9-0".to_string(), 1),
            ("img-one-3".to_string(), 1 << 30),
        ];
        let l = vm_lines(&lvs, &[7, 9]);
        assert_eq!(l.len(), 2);
        assert!(l[0].starts_with("VM = [ ID = 7, MONITOR = \""));
        let b64 = l[0].split('"').nth(1).unwrap();
        let text = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            text,
            "DISK_SIZE = [ ID = 0, SIZE = 12 ]\nSNAPSHOT_SIZE = [ ID = 1, DISK_ID = 0, SIZE = 12 ]\n"
        );
        assert!(l[1].starts_with("VM = [ ID = 9,"));
    }
}
