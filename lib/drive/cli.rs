//! Operator commands: `one-bsud drive …` and `one-bsud cloud volumes`.
//!
//! Tables for people by default, `--json` for scripts. Every command works against the real
//! API (credentials the Outscale way) and against `bsud-sim` (the testbed's configuration).
//! A drive's policy comes from its datastore's `BSUD_*` attributes (`onedatastore show -x`);
//! `--policy-defaults` uses the defaults instead (a site without OpenNebula, the demo).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::engine::{DriveRef, Engine};
use super::naming::{TAG_DATASTORE, TAG_DRIVE, TAG_HOST, TAG_VM};
use super::policy::GIB;
use crate::actions::Ctx;
use crate::cloud::{Cloud, VolumeFilter};
use crate::config::DriveSettings;
use crate::error::{fail, ErrorKind};
use crate::host::client::HostClient;
use crate::one::output::ActionOutput;

/// Which drive.
#[derive(Debug, Clone, Args)]
pub struct DriveId {
    /// The OpenNebula host holding the drive.
    #[arg(long)]
    pub host: String,
    /// The datastore id.
    #[arg(long)]
    pub ds: i64,
    /// Use the default BSUD_* policy instead of reading the datastore from OpenNebula.
    #[arg(long)]
    pub policy_defaults: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `one-bsud drive …`.
#[derive(Debug, Subcommand)]
pub enum DriveCmd {
    /// List the drives the cloud knows (volumes grouped by drive tag).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one drive: its volumes in the cloud, its VG, PVs and LVs on the host.
    Show(DriveId),
    /// Grow the drive so that SIZE more GiB fit (plus the headroom).
    Grow {
        #[command(flatten)]
        id: DriveId,
        /// GiB that must fit.
        #[arg(long)]
        gib: u64,
    },
    /// Release the BSUs that hold no data, keeping the headroom.
    Shrink(DriveId),
    /// Thin drives: grow the thin pool (and the drive, when the VG has no room) before it
    /// fills. Once, or every --every-secs for --for-secs (run it from a timer or a service).
    PoolGuard {
        #[command(flatten)]
        id: DriveId,
        /// Check again after this many seconds (0: once).
        #[arg(long, default_value_t = 0)]
        every_secs: u64,
        /// Stop looping after this many seconds.
        #[arg(long, default_value_t = 3600)]
        for_secs: u64,
    },
    /// Bring cloud and LVM in line: finish interrupted growths and releases, link and add
    /// volumes of the drive that are not in its VG.
    Reconcile(DriveId),
    /// Move a drive whose host died to another host (unlink, retag, link, import the VG).
    Adopt {
        /// The datastore id.
        #[arg(long)]
        ds: i64,
        /// The host that held the drive.
        #[arg(long)]
        from_host: String,
        /// The host that takes it.
        #[arg(long)]
        to_host: String,
        /// Force the unlink from the old VM (it is dead or stuck; may lose unflushed writes).
        #[arg(long)]
        force_unlink: bool,
        /// Use the default BSUD_* policy.
        #[arg(long)]
        policy_defaults: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a drive: its VG and its BSUs. Refuses while LVs exist unless --force.
    Delete {
        #[command(flatten)]
        id: DriveId,
        /// Also destroy the LVs it still holds.
        #[arg(long)]
        force: bool,
    },
}

/// `one-bsud cloud …`.
#[derive(Debug, Subcommand)]
pub enum CloudCmd {
    /// List every volume carrying our tags, with its state and link.
    Volumes {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn settings(ctx: &Ctx, ds: i64, defaults: bool) -> anyhow::Result<DriveSettings> {
    if defaults {
        return Ok(DriveSettings::default());
    }
    let d = ctx.one.datastore(&ctx.config, ds).map_err(|e| {
        fail(
            ErrorKind::Config,
            format!("{e:#} (use --policy-defaults to run with the default BSUD_* policy)"),
        )
    })?;
    DriveSettings::from_template(&d.template)
}

fn engine<'a>(ctx: &'a Ctx, cloud: &'a dyn Cloud, hosts: &'a HostClient) -> Engine<'a> {
    Engine {
        cloud,
        hosts,
        lock_dir: ctx.config.lock_dir.clone(),
        timeouts: ctx.config.timeouts,
    }
}

fn drive(ctx: &Ctx, id: &DriveId) -> anyhow::Result<DriveRef> {
    crate::exec::ssh::validate_host(&id.host)?;
    Ok(DriveRef {
        host: id.host.clone(),
        ds: id.ds,
        settings: settings(ctx, id.ds, id.policy_defaults)?,
    })
}

fn out<T: Serialize>(
    json: bool,
    value: &T,
    table: impl FnOnce() -> String,
) -> anyhow::Result<ActionOutput> {
    Ok(ActionOutput::Document(if json {
        serde_json::to_string_pretty(value)?
    } else {
        table()
    }))
}

fn gib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / GIB as f64)
}

/// Renders rows as aligned columns.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut s = String::new();
    let line = |s: &mut String, cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        let _ = writeln!(s, "{}", parts.join("  ").trim_end());
    };
    line(&mut s, header.to_vec());
    for r in rows {
        line(&mut s, r.iter().map(String::as_str).collect());
    }
    s
}

/// Volumes as a table, with their drive tag when `with_drive`.
fn volume_table(vols: &[crate::cloud::Volume], with_drive: bool) -> String {
    let mut header = vec!["VOLUME"];
    if with_drive {
        header.push("DRIVE");
    }
    header.extend(["STATE", "SIZE_GIB", "TYPE", "LINK"]);
    let rows: Vec<Vec<String>> = vols
        .iter()
        .map(|v| {
            let link = v
                .links
                .first()
                .map(|l| format!("{} {} {}", l.vm_id, l.device, l.state.as_str()))
                .unwrap_or_else(|| "-".into());
            let mut r = vec![v.id.clone()];
            if with_drive {
                r.push(v.tags.get(TAG_DRIVE).cloned().unwrap_or_default());
            }
            r.extend([
                v.state.to_string(),
                v.size_gib.to_string(),
                v.volume_type.clone(),
                link,
            ]);
            r
        })
        .collect();
    table(&header, &rows)
}

/// Runs a drive command.
pub fn run_drive(ctx: &Ctx, cmd: DriveCmd) -> anyhow::Result<ActionOutput> {
    let cloud = ctx.cloud()?;
    let hosts = HostClient::new(&ctx.config);
    let e = engine(ctx, cloud, &hosts);
    match cmd {
        DriveCmd::List { json } => {
            let vols = cloud.find_volumes(&VolumeFilter {
                tag_keys: vec![TAG_DRIVE.into()],
                ..Default::default()
            })?;
            #[derive(Serialize, Default)]
            struct Row {
                drive: String,
                host: String,
                datastore: String,
                vm: String,
                volumes: usize,
                size_gib: u64,
            }
            let mut drives: BTreeMap<String, Row> = BTreeMap::new();
            for v in &vols {
                let name = v.tags.get(TAG_DRIVE).cloned().unwrap_or_default();
                let r = drives.entry(name.clone()).or_insert_with(|| Row {
                    drive: name,
                    host: v.tags.get(TAG_HOST).cloned().unwrap_or_default(),
                    datastore: v.tags.get(TAG_DATASTORE).cloned().unwrap_or_default(),
                    vm: v.tags.get(TAG_VM).cloned().unwrap_or_default(),
                    ..Default::default()
                });
                r.volumes += 1;
                r.size_gib += v.size_gib;
            }
            let rows: Vec<Row> = drives.into_values().collect();
            out(json, &rows, || {
                table(
                    &["DRIVE", "HOST", "DS", "VM", "VOLUMES", "SIZE_GIB"],
                    &rows
                        .iter()
                        .map(|r| {
                            vec![
                                r.drive.clone(),
                                r.host.clone(),
                                r.datastore.clone(),
                                r.vm.clone(),
                                r.volumes.to_string(),
                                r.size_gib.to_string(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )
            })
        }
        DriveCmd::Show(id) => {
            let d = drive(ctx, &id)?;
            let vols = cloud.find_volumes(&VolumeFilter {
                tags: vec![(TAG_DRIVE.into(), d.name())],
                ..Default::default()
            })?;
            let vg = crate::drive::engine::HostApi::vg_report(&hosts, &d.host, &d.vg())?;
            let (used, free, total) = Engine::capacity(&d, &vg);
            let doc = serde_json::json!({
                "drive": d.name(), "settings": d.settings, "volumes": vols, "vg": vg,
                "capacity": {"used_bytes": used, "free_bytes": free, "total_bytes": total},
            });
            out(id.json, &doc, || {
                let mut s = format!(
                    "drive {}  (VG {} {}; size {} GiB, free {} GiB; {} LV(s) using {} GiB; limit {} GiB)\n\n",
                    d.name(),
                    d.vg(),
                    if vg.exists { "present" } else { "absent" },
                    gib(vg.size),
                    gib(vg.free),
                    vg.lv_count,
                    gib(vg.lv_bytes),
                    d.settings.max_size_gib
                );
                s.push_str(&volume_table(&vols, false));
                s.push('\n');
                s.push_str(&table(
                    &["PV", "SIZE_GIB", "FREE_GIB", "ALLOCATED_EXTENTS"],
                    &vg.pvs
                        .iter()
                        .map(|p| {
                            vec![
                                p.device.clone(),
                                gib(p.size),
                                gib(p.free),
                                p.allocated_extents.to_string(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                ));
                s.push('\n');
                s.push_str(&table(
                    &["LV", "SIZE_GIB", "TAGS"],
                    &vg.lvs
                        .iter()
                        .map(|l| vec![l.name.clone(), gib(l.size), l.tags.join(",")])
                        .collect::<Vec<_>>(),
                ));
                s
            })
        }
        DriveCmd::Grow { id, gib: g } => {
            let d = drive(ctx, &id)?;
            let r = e.with_space(&d, g * GIB, |r| Ok(r.clone()))?;
            out(
                id.json,
                &serde_json::json!({"drive": d.name(), "vg": r.vg, "volumes": r.volumes}),
                || {
                    format!(
                        "drive {}: {} volume(s), VG free {} GiB\n",
                        d.name(),
                        r.volumes.len(),
                        gib(r.vg.free)
                    )
                },
            )
        }
        DriveCmd::Shrink(id) => {
            let d = drive(ctx, &id)?;
            let rep = e.release(&d)?;
            out(id.json, &rep, || {
                if rep.released.is_empty() {
                    format!("drive {}: nothing to release\n", d.name())
                } else {
                    format!("drive {}: released {}\n", d.name(), rep.released.join(", "))
                }
            })
        }
        DriveCmd::PoolGuard {
            id,
            every_secs,
            for_secs,
        } => {
            let d = drive(ctx, &id)?;
            let storage = crate::drive::storage::Storage::new(ctx);
            let until = std::time::Instant::now() + std::time::Duration::from_secs(for_secs);
            let mut grown = Vec::new();
            loop {
                let t = std::time::Instant::now();
                if let Some(st) = storage.guard_pool(&d)? {
                    // Said as it happens: a guard usually runs until it is stopped.
                    tracing::info!(
                        "drive {}: thin pool grown in {:.1} s to {} MiB",
                        d.name(),
                        t.elapsed().as_secs_f64(),
                        st.data_bytes >> 20
                    );
                    grown.push(st);
                }
                if every_secs == 0 || std::time::Instant::now() >= until {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_secs(every_secs));
            }
            out(id.json, &grown, || match grown.last() {
                None => format!(
                    "drive {}: thin pool under its threshold (or none)\n",
                    d.name()
                ),
                Some(st) => format!(
                    "drive {}: thin pool grown {} time(s), now {} GiB data ({}.{:02} % used)\n",
                    d.name(),
                    grown.len(),
                    st.data_bytes >> 30,
                    st.data_bp / 100,
                    st.data_bp % 100
                ),
            })
        }
        DriveCmd::Reconcile(id) => {
            let d = drive(ctx, &id)?;
            let r = e.reconcile_locked(&d)?;
            out(id.json, &r, || {
                format!(
                    "drive {}: {} volume(s) linked to {}, VG {} with {} PV(s), free {} GiB\n",
                    d.name(),
                    r.volumes.len(),
                    r.identity.vm_id,
                    d.vg(),
                    r.vg.pvs.len(),
                    gib(r.vg.free)
                )
            })
        }
        DriveCmd::Adopt {
            ds,
            from_host,
            to_host,
            force_unlink,
            policy_defaults,
            json,
        } => {
            crate::exec::ssh::validate_host(&from_host)?;
            crate::exec::ssh::validate_host(&to_host)?;
            let to = DriveRef {
                host: to_host,
                ds,
                settings: settings(ctx, ds, policy_defaults)?,
            };
            let rep = e.adopt(&from_host, &to, force_unlink)?;
            out(json, &rep, || {
                format!(
                    "drive {} now on {}: {} volume(s), LVs: {}\n",
                    to.vg(),
                    to.host,
                    rep.volumes.len(),
                    if rep.lvs.is_empty() {
                        "-".to_string()
                    } else {
                        rep.lvs.join(", ")
                    }
                )
            })
        }
        DriveCmd::Delete { id, force } => {
            let d = drive(ctx, &id)?;
            let rep = e.delete(&d, force)?;
            out(id.json, &rep, || {
                format!(
                    "drive {}: deleted {} volume(s)\n",
                    d.name(),
                    rep.volumes.len()
                )
            })
        }
    }
}

/// Runs a cloud command.
pub fn run_cloud(ctx: &Ctx, cmd: CloudCmd) -> anyhow::Result<ActionOutput> {
    let cloud = ctx.cloud()?;
    match cmd {
        CloudCmd::Volumes { json } => {
            let mut vols = cloud.find_volumes(&VolumeFilter {
                tag_keys: vec![TAG_DRIVE.into()],
                ..Default::default()
            })?;
            vols.sort_by(|a, b| {
                a.tags
                    .get(TAG_DRIVE)
                    .cmp(&b.tags.get(TAG_DRIVE))
                    .then(a.id.cmp(&b.id))
            });
            out(json, &vols, || volume_table(&vols, true))
        }
    }
}
