//! Drives on the testbed (bsud-sim + simulated hosts with real LVM): growth, concurrency,
//! crashes after every step, cloud faults, shrink, adopt. Tests named `drive_*` (issue 4).

mod support;

use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use bsud::cloud::outscale::OutscaleCloud;
use bsud::cloud::{Cloud, Volume, VolumeFilter};
use bsud::config::{Config, DriveSettings, Env};
use bsud::drive::engine::{DriveRef, Engine, HostApi, VgView};
use bsud::drive::naming::TAG_DRIVE;
use bsud::drive::policy::GIB;
use bsud::error::exit_code;
use bsud::exec;
use bsud::host::client::HostClient;
use bsud::sim::cloud::client::SimClient;
use bsud::sim::testbed::Testbed;
use serde_json::json;

/// SIGABRT: what a crash point dies of.
const SIGABRT: i32 = 6;

fn testbed(hosts: &[&str]) -> Testbed {
    support::testbed(hosts, 20)
}

/// The library's own view of the testbed, as the frontend process builds it.
struct Frontend {
    config: Config,
    cloud: OutscaleCloud,
    hosts: HostClient,
    sim: SimClient,
}

impl Frontend {
    fn new(tb: &Testbed) -> Frontend {
        Frontend::with(tb, |_| {})
    }

    fn with(tb: &Testbed, tweak: impl FnOnce(&mut Config)) -> Frontend {
        let mut config = Config::load(&Env::from_pairs(tb.env())).unwrap();
        tweak(&mut config);
        let cloud = OutscaleCloud::new(&config.cloud.resolve().unwrap()).unwrap();
        let hosts = HostClient::new(&config).with_local_exe(env!("CARGO_BIN_EXE_one-bsud").into());
        Frontend {
            config,
            cloud,
            hosts,
            sim: SimClient::for_addr(tb.addr()).unwrap(),
        }
    }

    fn engine(&self) -> Engine<'_> {
        Engine {
            cloud: &self.cloud,
            hosts: &self.hosts,
            lock_dir: self.config.lock_dir.clone(),
            timeouts: self.config.timeouts,
        }
    }

    fn alloc(&self, d: &DriveRef, lv: &str, bytes: u64) -> anyhow::Result<()> {
        self.engine().with_space(d, bytes, |_| {
            self.hosts.lv_create(
                &d.host,
                &d.vg().parse()?,
                &lv.parse()?,
                bytes,
                &["one.vm=1".parse()?],
            )?;
            Ok(())
        })
    }

    fn vg(&self, d: &DriveRef) -> VgView {
        HostApi::vg_report(&self.hosts, &d.host, &d.vg()).unwrap()
    }

    fn volumes(&self, d: &DriveRef) -> Vec<Volume> {
        self.cloud
            .find_volumes(&VolumeFilter {
                tags: vec![(TAG_DRIVE.into(), d.name())],
                ..Default::default()
            })
            .unwrap()
    }

    /// Every data volume of the account (the VMs' root volumes excluded).
    fn all_volumes(&self) -> Vec<Volume> {
        let mut v = self.cloud.find_volumes(&VolumeFilter::default()).unwrap();
        v.retain(|v| !v.links.iter().any(|l| l.device == "/dev/sda1"));
        v
    }

    fn creates(&self) -> u64 {
        self.sim
            .stats()
            .unwrap()
            .calls
            .get("CreateVolume")
            .map(|c| c.ok)
            .unwrap_or(0)
    }
}

fn small(host: &str, ds: i64) -> DriveRef {
    DriveRef {
        host: host.into(),
        ds,
        settings: DriveSettings {
            min_volume_gib: 1,
            growth_factor: 2.0,
            headroom_gib: 1,
            max_volumes: 20,
            max_size_gib: 4000,
            ..Default::default()
        },
    }
}

/// Every volume of the drive is tagged, linked to the host's VM under a distinct device, and a
/// PV of the VG; no volume in the account is untagged; the VM carries no leftover intent.
fn assert_consistent(fe: &Frontend, tb: &Testbed, d: &DriveRef) {
    let vols = fe.volumes(d);
    let vm = &tb.host(&d.host).unwrap().vm_id;
    let mut devices: Vec<String> = vols
        .iter()
        .map(|v| v.link_to(vm).expect("linked to the host").device.clone())
        .collect();
    devices.sort();
    devices.dedup();
    assert_eq!(devices.len(), vols.len(), "device names collide: {vols:?}");
    let vg = fe.vg(d);
    assert_eq!(
        vg.pvs.len(),
        vols.len(),
        "every volume must be a PV of the VG: {vg:?}"
    );
    for v in fe.all_volumes() {
        assert!(
            v.tags.contains_key(TAG_DRIVE),
            "untagged volume left behind: {v:?}"
        );
    }
    let vmv = fe.cloud.vm(vm).unwrap();
    assert!(
        !vmv.tags.keys().any(|k| k.starts_with("one.bsud.intent")),
        "intent left: {:?}",
        vmv.tags
    );
}

#[test]
fn drive_grows_from_empty_with_logarithmic_volumes() {
    let tb = testbed(&["kvm1"]);
    let fe = Frontend::new(&tb);
    let d = small("kvm1", 100);
    // 15 allocations of 4 GiB: 60 GiB in volumes growing by the factor (1, 2, 4, 8… GiB).
    for i in 0..15 {
        fe.alloc(&d, &format!("lv-one-{i}-0"), 4 * GIB).unwrap();
    }
    let vols = fe.volumes(&d);
    let mut sizes: Vec<u64> = vols.iter().map(|v| v.size_gib).collect();
    sizes.sort();
    assert!(
        vols.len() <= 6,
        "60 GiB took {} volumes: {sizes:?}",
        vols.len()
    );
    for w in sizes.windows(2) {
        assert!(
            w[1] >= w[0] * 2 || w[1] >= 5,
            "each volume at least factor × the largest: {sizes:?}"
        );
    }
    let total: u64 = sizes.iter().sum();
    assert!((61..=130).contains(&total), "{sizes:?}");
    for v in &vols {
        assert_eq!(v.tags["one.bsud.datastore"], "100");
        assert_eq!(v.tags["one.bsud.host"], "kvm1");
        assert_eq!(v.volume_type, "gp2");
    }
    assert_eq!(
        fe.creates(),
        vols.len() as u64,
        "one CreateVolume per volume"
    );
    assert_eq!(fe.vg(&d).lv_count, 15);
    assert_consistent(&fe, &tb, &d);

    // Limits produce errors that name what to change.
    let capped = DriveRef {
        settings: DriveSettings {
            max_size_gib: 70,
            ..d.settings.clone()
        },
        ..d.clone()
    };
    let e = fe.alloc(&capped, "lv-one-99-0", 40 * GIB).unwrap_err();
    assert!(format!("{e:#}").contains("BSUD_MAX_SIZE_GIB"), "{e:#}");
    let few = DriveRef {
        settings: DriveSettings {
            max_volumes: vols.len() as u32,
            ..d.settings.clone()
        },
        ..d.clone()
    };
    let e = fe.alloc(&few, "lv-one-99-0", 500 * GIB).unwrap_err();
    assert!(format!("{e:#}").contains("BSUD_MAX_VOLUMES"), "{e:#}");
}

#[test]
fn drive_32_concurrent_allocations_share_one_growth_path() {
    let tb = testbed(&["kvm1"]);
    let fe = Frontend::new(&tb);
    let d = small("kvm1", 101);
    let started = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let (fe, d) = (&fe, &d);
                s.spawn(move || fe.alloc(d, &format!("lv-one-{i}-0"), GIB))
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    });
    eprintln!(
        "32 concurrent allocations: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let vols = fe.volumes(&d);
    let total: u64 = vols.iter().map(|v| v.size_gib).sum();
    // What the sum needs (32 GiB + headroom), grown by the factor: never two growths racing.
    assert!(
        (33..=64).contains(&total),
        "total {total} GiB for 32 GiB: {vols:?}"
    );
    assert!(vols.len() <= 7, "{} volumes for 32 GiB", vols.len());
    assert_eq!(fe.creates(), vols.len() as u64, "no orphan volume");
    assert_eq!(fe.vg(&d).lv_count, 32);
    assert_consistent(&fe, &tb, &d);
}

/// Runs `drive grow` as oned's child would run, optionally crashing after a step.
fn grow_cli(tb: &Testbed, ds: i64, gib: u64, crash_at: Option<&str>) -> std::process::Output {
    let mut cmd = tb.one_bsud().args([
        "drive",
        "grow",
        "--host",
        "kvm1",
        "--ds",
        &ds.to_string(),
        "--gib",
        &gib.to_string(),
        "--policy-defaults",
    ]);
    if let Some(c) = crash_at {
        cmd = cmd.env("BSUD_CRASH_AT", c);
    }
    let out = exec::output(&cmd).unwrap();
    std::process::Output {
        status: out.status,
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

#[test]
fn drive_crash_after_each_step_then_rerun_converges() {
    let tb = testbed(&["kvm1"]);
    let fe = Frontend::new(&tb);
    let steps = [
        "grow:intent-recorded",
        "grow:volume-created",
        "grow:volume-tagged",
        "grow:intent-cleared",
        "grow:volume-available",
        "link:requested",
        "grow:device-present",
        "grow:pv-added",
    ];
    // A drive with data already on it: a crash during its next growth must not lose an LV.
    let d0 = DriveRef {
        host: "kvm1".into(),
        ds: 300,
        settings: DriveSettings::default(),
    };
    fe.alloc(&d0, "lv-one-7-0", GIB).unwrap();
    let before = fe.vg(&d0).lvs;
    for (i, step) in steps.iter().enumerate() {
        // The first step grows the drive that already holds data; the others start empty.
        let ds = if i == 0 { 300 } else { 310 + i as i64 };
        let d = DriveRef {
            host: "kvm1".into(),
            ds,
            settings: DriveSettings::default(),
        };
        // First growth of the drive (or, for ds 300, a second one past its data).
        let need = if ds == 300 { 20 } else { 3 };
        let out = grow_cli(&tb, ds, need, Some(step));
        assert_eq!(
            out.status.signal(),
            Some(SIGABRT),
            "{step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = grow_cli(&tb, ds, need, None);
        assert!(
            out.status.success(),
            "{step}: rerun failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_consistent(&fe, &tb, &d);
        let vg = fe.vg(&d);
        assert!(vg.free >= need * GIB, "{step}: {vg:?}");
        if ds == 300 {
            assert_eq!(fe.vg(&d0).lvs, before, "{step}: an LV changed");
        }
    }
    // Half-done at the LVM level: a linked volume of the drive pvcreate'd but outside the VG
    // (a crash between pvcreate and vgextend) is adopted by the next reconcile.
    let d = DriveRef {
        host: "kvm1".into(),
        ds: 330,
        settings: DriveSettings::default(),
    };
    let out = grow_cli(&tb, 330, 3, Some("grow:device-present"));
    assert_eq!(out.status.signal(), Some(SIGABRT));
    let view = &tb.host("kvm1").unwrap().view;
    let dev = std::fs::read_dir(view.dev_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| std::fs::canonicalize(e.path()).unwrap())
        .find(|p| {
            let v = exec::output(
                &view
                    .cmd("lvm")
                    .args(["pvs", "--noheadings", "-o", "pv_name"])
                    .arg(p),
            )
            .unwrap();
            !v.status.success()
        });
    let dev = dev.expect("the new volume's device, not yet a PV");
    exec::run(&view.cmd("lvm").args(["pvcreate", "-q"]).arg(&dev)).unwrap();
    let r = fe.engine().reconcile_locked(&d).unwrap();
    assert!(r.vg.exists && r.vg.pvs.len() == 1, "{:?}", r.vg);
    assert_consistent(&fe, &tb, &d);
}

#[test]
fn drive_cloud_faults_end_in_clear_errors_and_the_next_reconcile_adopts() {
    let tb = testbed(&["kvm1"]);
    // Short deadlines so a stuck state ends quickly.
    let fe = Frontend::with(&tb, |c| {
        c.timeouts.volume_create = Duration::from_secs(2);
        c.timeouts.volume_link = Duration::from_secs(2);
        c.timeouts.device = Duration::from_secs(2);
        c.cloud.max_retries = 1;
    });
    let sim = &fe.sim;
    let timed = |f: &dyn Fn() -> anyhow::Result<()>| {
        let t = Instant::now();
        let r = f();
        (r, t.elapsed())
    };

    // Throttling beyond the SDK's retries.
    let d = small("kvm1", 400);
    sim.set_faults_json(json!({"rules": [{"kind": "throttle", "call": "CreateVolume", "nth": 1, "count": 10, "scope": "account"}]})).unwrap();
    let (r, took) = timed(&|| fe.alloc(&d, "lv-one-1-0", GIB));
    let e = r.unwrap_err();
    assert!(format!("{e:#}").contains("throttled"), "{e:#}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    sim.clear_faults().unwrap();
    fe.alloc(&d, "lv-one-1-0", GIB).unwrap();
    assert_consistent(&fe, &tb, &d);

    // A 5xx on LinkVolume: the volume exists, tagged, unlinked; the next call links it.
    let d = small("kvm1", 401);
    sim.set_faults_json(json!({"rules": [{"kind": "fail", "call": "LinkVolume", "nth": 1, "count": 5, "status": 500, "code": "2000", "type": "InternalError"}]})).unwrap();
    let e = fe.alloc(&d, "lv-one-1-0", GIB).unwrap_err();
    assert!(
        format!("{e:#}").contains("LinkVolume") && format!("{e:#}").contains("500"),
        "{e:#}"
    );
    sim.clear_faults().unwrap();
    fe.alloc(&d, "lv-one-1-0", GIB).unwrap();
    assert_eq!(
        fe.volumes(&d).len(),
        1,
        "the failed growth's volume is adopted, not doubled"
    );
    assert_consistent(&fe, &tb, &d);

    // Stuck in `creating`, a link that never attaches, a device that never appears: each is a
    // timeout (exit 5) naming what it waited for, within its deadline.
    for (ds, rule, want) in [
        (
            402,
            json!({"kind": "stall", "transition": "create"}),
            "available",
        ),
        (
            403,
            json!({"kind": "stall", "transition": "attach"}),
            "attached",
        ),
        (
            404,
            json!({"kind": "no_device"}),
            "scsi-0QEMU_QEMU_HARDDISK_sd",
        ),
    ] {
        let d = small("kvm1", ds);
        sim.set_faults_json(json!({"rules": [rule]})).unwrap();
        let (r, took) = timed(&|| fe.alloc(&d, "lv-one-1-0", GIB));
        let e = r.unwrap_err();
        assert_eq!(exit_code(&e), 5, "{ds}: {e:#}");
        assert!(format!("{e:#}").contains(want), "{ds}: {e:#}");
        assert!(took < Duration::from_secs(20), "{ds}: {took:?}");
        sim.clear_faults().unwrap();
        // A device that never appeared stays absent: relink it (the volume keeps its tag).
        if ds == 404 {
            let v = &fe.volumes(&d)[0];
            fe.cloud.unlink_volume(&v.id, false).unwrap();
            bsud::cloud::wait_unlinked(
                &fe.cloud,
                &v.id,
                bsud::wait::Wait::new(Duration::from_secs(10), Duration::from_millis(20)),
            )
            .unwrap();
        }
        fe.alloc(&d, "lv-one-1-0", GIB).unwrap();
        assert_eq!(fe.volumes(&d).len(), 1, "{ds}: adopted, not doubled");
        assert_consistent(&fe, &tb, &d);
    }
}

#[test]
fn drive_shrink_releases_only_empty_pvs_and_keeps_the_headroom() {
    let tb = testbed(&["kvm1"]);
    let fe = Frontend::new(&tb);
    let d = small("kvm1", 500);
    for i in 0..6 {
        fe.alloc(&d, &format!("lv-one-{i}-0"), 2 * GIB).unwrap();
    }
    let before = fe.volumes(&d).len();
    assert!(before >= 3, "{before}");
    // Remove the LVs that sit on the later (larger) PVs: their PVs become empty.
    let vg = fe.vg(&d);
    for i in 3..6 {
        fe.hosts
            .lv_remove(
                "kvm1",
                &d.vg().parse().unwrap(),
                &format!("lv-one-{i}-0").parse().unwrap(),
                &[],
            )
            .unwrap();
    }
    let rep = fe.engine().release(&d).unwrap();
    let after = fe.vg(&d);
    assert!(
        !rep.released.is_empty(),
        "something should be released: {vg:?} → {after:?}"
    );
    assert!(
        after.free >= d.settings.headroom_gib * GIB,
        "headroom kept: {after:?}"
    );
    assert_eq!(after.lv_count, 3, "no LV lost");
    for p in &after.pvs {
        let _ = p;
    }
    assert_eq!(fe.volumes(&d).len(), before - rep.released.len());
    // Released volumes are gone from the cloud (after the delete delay).
    let deadline = Instant::now() + Duration::from_secs(5);
    while fe.all_volumes().len() != fe.volumes(&d).len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fe.all_volumes().len(), fe.volumes(&d).len());
    assert_consistent(&fe, &tb, &d);
    // A crash mid-release is completed by the next release, not undone: a drive whose second
    // volume holds one LV; remove it, crash right after the PV left the VG, rerun.
    let d = small("kvm1", 501);
    fe.alloc(&d, "lv-one-1-0", GIB).unwrap();
    fe.alloc(&d, "lv-one-2-0", 3 * GIB).unwrap();
    assert_eq!(fe.volumes(&d).len(), 2);
    fe.hosts
        .lv_remove(
            "kvm1",
            &d.vg().parse().unwrap(),
            &"lv-one-2-0".parse().unwrap(),
            &[],
        )
        .unwrap();
    // The CLI reads the drive's policy from the datastore, as in production.
    tb.put_datastore(
        &bsud::sim::one::DatastoreSpec::system(501)
            .attr("BSUD_MIN_VOLUME_GIB", "1")
            .attr("BSUD_GROWTH_FACTOR", "2")
            .attr("BSUD_HEADROOM_GIB", "1"),
    )
    .unwrap();
    let shrink = |crash: Option<&str>| {
        let mut c = tb
            .one_bsud()
            .args(["drive", "shrink", "--host", "kvm1", "--ds", "501"]);
        if let Some(step) = crash {
            c = c.env("BSUD_CRASH_AT", step);
        }
        exec::output(&c).unwrap()
    };
    let out = shrink(Some("release:pv-removed"));
    assert_eq!(
        out.status.signal(),
        Some(SIGABRT),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The volume is out of the VG but still linked and marked: the next shrink finishes it.
    let out = shrink(None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while fe.volumes(&d).len() != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fe.volumes(&d).len(), 1);
    assert_eq!(fe.vg(&d).lv_count, 1);
    assert_consistent(&fe, &tb, &d);
}

#[test]
fn drive_adopt_moves_a_drive_with_data_between_hosts() {
    let tb = testbed(&["kvm1", "kvm2"]);
    let fe = Frontend::new(&tb);
    let d1 = small("kvm1", 600);
    fe.alloc(&d1, "lv-one-5-0", 2 * GIB).unwrap();
    fe.alloc(&d1, "lv-one-5-1", 3 * GIB).unwrap();
    let lv = |host: &str, name: &str| {
        tb.host(host)
            .unwrap()
            .view
            .lv_dir()
            .join("vg-one-600")
            .join(name)
    };
    let data: Vec<u8> = (0..(8 << 20))
        .map(|i: usize| (i * 13 % 253) as u8)
        .collect();
    for name in ["lv-one-5-0", "lv-one-5-1"] {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(lv("kvm1", name))
            .unwrap();
        f.write_all_at(&data, GIB - (4 << 20)).unwrap();
        f.sync_all().unwrap();
    }
    // kvm2 already has a drive of that datastore: refused.
    let d2 = small("kvm2", 600);
    fe.alloc(&d2, "lv-one-9-0", GIB).unwrap();
    let e = fe.engine().adopt("kvm1", &d2, false).unwrap_err();
    assert_eq!(exit_code(&e), 6, "{e:#}");
    assert!(
        format!("{e:#}").contains("already has a volume group"),
        "{e:#}"
    );
    // A third host takes kvm1's drive (forced unlink, as for a dead host).
    let d3 = DriveRef {
        host: "kvm2".into(),
        ds: 601,
        settings: d1.settings.clone(),
    };
    let _ = d3;
    // Move it to kvm2 under its own datastore id: free kvm2 of its drive 600 first.
    fe.engine().delete(&d2, true).unwrap();
    let rep = fe.engine().adopt("kvm1", &d2, true).unwrap();
    let mut lvs = rep.lvs.clone();
    lvs.sort();
    assert_eq!(lvs, ["lv-one-5-0", "lv-one-5-1"]);
    for name in ["lv-one-5-0", "lv-one-5-1"] {
        let f = std::fs::File::open(lv("kvm2", name)).unwrap();
        let mut got = vec![0u8; data.len()];
        f.read_exact_at(&mut got, GIB - (4 << 20)).unwrap();
        assert!(got == data, "{name}: bytes differ after adopt");
    }
    for v in fe.volumes(&d2) {
        assert_eq!(v.tags["one.bsud.host"], "kvm2");
    }
    assert!(fe.volumes(&d1).is_empty());
    assert_consistent(&fe, &tb, &d2);
}

#[test]
fn drive_cli_grow_show_shrink_delete() {
    let tb = testbed(&["kvm1"]);
    let run = |args: &[&str]| exec::output(&tb.one_bsud().args(args)).unwrap();
    let out = run(&[
        "drive",
        "grow",
        "--host",
        "kvm1",
        "--ds",
        "7",
        "--gib",
        "3",
        "--policy-defaults",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout_str()
            .contains("drive kvm1:vg-one-7: 1 volume(s)"),
        "{}",
        out.stdout_str()
    );
    let out = run(&[
        "drive",
        "show",
        "--host",
        "kvm1",
        "--ds",
        "7",
        "--policy-defaults",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["volumes"].as_array().unwrap().len(), 1);
    assert_eq!(doc["vg"]["exists"], true);
    let out = run(&[
        "drive",
        "show",
        "--host",
        "kvm1",
        "--ds",
        "7",
        "--policy-defaults",
    ]);
    assert!(
        out.stdout_str().starts_with("drive kvm1:vg-one-7"),
        "{}",
        out.stdout_str()
    );
    let out = run(&["drive", "list"]);
    assert!(
        out.stdout_str().contains("kvm1:vg-one-7"),
        "{}",
        out.stdout_str()
    );
    let out = run(&[
        "drive",
        "reconcile",
        "--host",
        "kvm1",
        "--ds",
        "7",
        "--policy-defaults",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["cloud", "volumes", "--json"]);
    let vols: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(vols.as_array().unwrap().len(), 1);
    // Headroom (2 GiB default) keeps the only volume.
    let out = run(&[
        "drive",
        "shrink",
        "--host",
        "kvm1",
        "--ds",
        "7",
        "--policy-defaults",
    ]);
    assert!(
        out.stdout_str().contains("nothing to release"),
        "{}",
        out.stdout_str()
    );
    // Refused while an LV exists, then forced.
    let fe = Frontend::new(&tb);
    fe.hosts
        .lv_create(
            "kvm1",
            &"vg-one-7".parse().unwrap(),
            &"lv-one-1-0".parse().unwrap(),
            GIB,
            &["one.vm=1".parse().unwrap()],
        )
        .unwrap();
    let out = run(&[
        "drive",
        "delete",
        "--host",
        "kvm1",
        "--ds",
        "7",
        "--policy-defaults",
    ]);
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("lv-one-1-0"));
    let out = run(&[
        "drive",
        "delete",
        "--host",
        "kvm1",
        "--ds",
        "7",
        "--policy-defaults",
        "--force",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fe.all_volumes().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(fe.all_volumes().is_empty());
    // Help documents every command.
    let out = run(&["drive", "--help"]);
    let help = out.stdout_str();
    for c in [
        "list",
        "show",
        "grow",
        "shrink",
        "reconcile",
        "adopt",
        "delete",
    ] {
        assert!(help.contains(c), "{help}");
    }
}

/// Benchmark (not run by default: `scripts/bench-drive`): grow a drive from empty to 1 TiB on
/// the simulator with its default delays (200 ms per state change), once as one 1 TiB request
/// and once as 64 allocations of 16 GiB (disks arriving one by one); prints cloud calls and
/// wall time.
#[test]
#[ignore = "benchmark: run with scripts/bench-drive"]
fn drive_bench_growth_to_1tib() {
    let mut o = bsud::sim::testbed::TestbedOpts::new(
        env!("CARGO_BIN_EXE_bsud-sim"),
        env!("CARGO_BIN_EXE_one-bsud"),
    );
    o.hosts = vec!["kvm1".into()];
    let tb = Testbed::start(o).unwrap();
    let fe = Frontend::new(&tb);
    let settings = DriveSettings {
        max_size_gib: 4096,
        max_volumes: 39,
        ..DriveSettings::default()
    };

    fe.sim.reset_stats().unwrap();
    let d = DriveRef {
        host: "kvm1".into(),
        ds: 1,
        settings: settings.clone(),
    };
    let t = Instant::now();
    fe.alloc(&d, "lv-one-1-0", 1024 * GIB).unwrap();
    let one = t.elapsed();
    let calls_one = fe.sim.stats().unwrap();
    let vols_one = fe.volumes(&d);

    fe.sim.reset_stats().unwrap();
    let d = DriveRef {
        host: "kvm1".into(),
        ds: 2,
        settings,
    };
    let t = Instant::now();
    for i in 0..64 {
        fe.alloc(&d, &format!("lv-one-{i}-0"), 16 * GIB).unwrap();
    }
    let many = t.elapsed();
    let calls_many = fe.sim.stats().unwrap();
    let vols_many = fe.volumes(&d);
    let sizes = |v: &[Volume]| {
        v.iter()
            .map(|v| v.size_gib.to_string())
            .collect::<Vec<_>>()
            .join("+")
    };
    println!(
        "BENCH one request of 1 TiB: {:.1}s, {} volume(s) [{} GiB], {} API calls ({} CreateVolume)",
        one.as_secs_f64(),
        vols_one.len(),
        sizes(&vols_one),
        calls_one.total,
        calls_one
            .calls
            .get("CreateVolume")
            .map(|c| c.ok)
            .unwrap_or(0)
    );
    println!("BENCH 64 x 16 GiB allocations: {:.1}s, {} volume(s) [{} GiB], {} API calls ({} CreateVolume)", many.as_secs_f64(), vols_many.len(), sizes(&vols_many), calls_many.total, calls_many.calls.get("CreateVolume").map(|c| c.ok).unwrap_or(0));
}
