//! `one-bsud host self-check`: what `doctor` needs to know about a host, in one ssh round trip.
//!
//! It changes nothing. It reports the agent's version, whether it runs as root, LVM's version
//! (run through `sudo -n` like every LVM command, so it fails the way real work would), which
//! of the programs the agent runs with `sudo -n` sudo allows (`sudo -n -l <program>`, which
//! asks the policy without running anything), and the state of every drive VG on the host.

use std::path::Path;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::probe::{self, DriveCapacity};
use crate::exec::{self, Cmd};
use crate::host::agent::Agent;
use crate::host::proto::Request;

/// `self-check`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct SelfCheckReq {
    /// The hosts' datastore directory (oned.conf DATASTORE_LOCATION), to look for `.monitor`.
    #[arg(long, default_value = probe::DEFAULT_DATASTORE_LOCATION)]
    pub datastore_location: String,
}

impl Request for SelfCheckReq {
    const OP: &'static str = "self-check";
    const LOCKS: bool = false;
    type Response = SelfCheck;
    fn args(&self) -> Vec<String> {
        vec![format!("--datastore-location={}", self.datastore_location)]
    }
}

/// One program's sudo right.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SudoRight {
    /// The program.
    pub program: String,
    /// Whether `sudo -n` may run it.
    pub allowed: bool,
    /// sudo's answer (the resolved path, or why not).
    pub detail: String,
}

/// One drive VG on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveState {
    /// `vg-one-<id>`.
    pub vg: String,
    /// The datastore id.
    pub datastore: i64,
    /// VG size, bytes.
    pub size: u64,
    /// VG free, bytes.
    pub free: u64,
    /// PVs (BSU volumes).
    pub pv_count: u64,
    /// LVs.
    pub lv_count: u64,
    /// PVs whose device is missing.
    pub missing_pv_count: u64,
    /// The recorded growth limit, GiB.
    pub limit_gib: Option<u64>,
    /// Whether `<datastore location>/<id>/.monitor` exists (the stock probe then reports df).
    pub monitor_file: bool,
    /// The line the capacity probe prints for it.
    pub probe_line: String,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfCheck {
    /// The agent's version.
    pub version: String,
    /// Whether the agent runs as root (no sudo needed).
    pub root: bool,
    /// `LVM_SYSTEM_DIR` as the agent sees it.
    pub lvm_system_dir: Option<String>,
    /// LVM's version line, when `vgs --version` worked.
    pub lvm_version: Option<String>,
    /// Why `vgs --version` failed.
    pub lvm_error: Option<String>,
    /// sudo rights (empty when root).
    pub sudo: Vec<SudoRight>,
    /// The drive VGs.
    pub drives: Vec<DriveState>,
    /// Why the VGs could not be listed.
    pub drives_error: Option<String>,
}

fn sudo_right(program: &str, timeout: Duration) -> SudoRight {
    let out = exec::output(
        &Cmd::new("sudo")
            .args(["-n", "-l", program])
            .timeout(timeout),
    );
    let (allowed, detail) = match out {
        Ok(o) if o.status.success() => (true, o.stdout_str().trim().to_string()),
        Ok(o) => (false, exec::stderr_tail(&o.stderr)),
        Err(e) => (false, e.to_string()),
    };
    SudoRight {
        program: program.to_string(),
        allowed,
        detail,
    }
}

/// Runs the checks.
pub fn self_check(a: &Agent, req: &SelfCheckReq) -> anyhow::Result<SelfCheck> {
    let root = crate::sys::is_root();
    let (lvm_version, lvm_error) = match a.lvm.run_tool("vgs", &["--version"]) {
        Ok(out) => (
            Some(
                String::from_utf8_lossy(&out)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            None,
        ),
        Err(e) => (None, Some(crate::error::one_line(&e))),
    };
    let sudo = if root {
        Vec::new()
    } else {
        crate::lvm::command::PRIVILEGED_PROGRAMS
            .iter()
            .map(|p| sudo_right(p, a.deadline.cap(Duration::from_secs(15))))
            .collect()
    };
    let (drives, drives_error) = match a.lvm.vgs_all() {
        Ok(vgs) => {
            let caps = probe::drive_capacities(&vgs);
            let location = a
                .env
                .root
                .join(req.datastore_location.trim_start_matches('/'));
            let drives = vgs
                .iter()
                .filter_map(|vg| {
                    let id = probe::drive_id(&vg.name)?;
                    let cap: &DriveCapacity = caps.iter().find(|c| c.id == id)?;
                    Some(DriveState {
                        vg: vg.name.clone(),
                        datastore: id,
                        size: vg.size,
                        free: vg.free,
                        pv_count: vg.pv_count,
                        lv_count: vg.lv_count,
                        missing_pv_count: vg.missing_pv_count,
                        limit_gib: probe::recorded_limit(vg),
                        monitor_file: Path::new(&location)
                            .join(id.to_string())
                            .join(".monitor")
                            .exists(),
                        probe_line: cap.line(),
                    })
                })
                .collect();
            (drives, None)
        }
        Err(e) => (Vec::new(), Some(crate::error::one_line(&e))),
    };
    Ok(SelfCheck {
        version: crate::VERSION.to_string(),
        root,
        lvm_system_dir: a
            .env
            .lvm_system_dir
            .as_ref()
            .map(|p| p.display().to_string()),
        lvm_version,
        lvm_error,
        sudo,
        drives,
        drives_error,
    })
}
