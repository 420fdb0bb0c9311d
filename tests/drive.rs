//! Drives on the testbed (bsud-sim + simulated hosts with real LVM): growth, concurrency,
//! crashes at every step, cloud faults, shrink, adopt. Tests named `drive_*` (issue 4).

mod support;

use std::time::{Duration, Instant};

use bsud::cloud::{Cloud, VolumeFilter};
use bsud::config::{Config, DriveSettings, Env};
use bsud::drive::engine::{DriveRef, Engine};
use bsud::drive::naming::TAG_DRIVE;
use bsud::drive::policy::GIB;
use bsud::exec;
use bsud::host::client::HostClient;
use bsud::sim::cloud::client::SimClient;
use bsud::sim::testbed::{Testbed, TestbedOpts};
use serde_json::json;

fn testbed(hosts: &[&str]) -> Testbed {
    let mut o = TestbedOpts::new(
        env!("CARGO_BIN_EXE_bsud-sim"),
        env!("CARGO_BIN_EXE_one-bsud"),
    );
    o.hosts = hosts.iter().map(|h| h.to_string()).collect();
    o.serve_args = [
        "--create-delay-ms",
        "20",
        "--attach-delay-ms",
        "20",
        "--detach-delay-ms",
        "20",
        "--delete-delay-ms",
        "20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Testbed::start(o).expect("testbed starts")
}

/// The library's own view of the testbed, as the frontend process would build it.
struct Frontend {
    config: Config,
    cloud: bsud::cloud::outscale::OutscaleCloud,
    hosts: HostClient,
}

impl Frontend {
    fn new(tb: &Testbed) -> Frontend {
        let env = Env::from_pairs(tb.env());
        let config = Config::load(&env).unwrap();
        let cloud =
            bsud::cloud::outscale::OutscaleCloud::new(&config.cloud.resolve().unwrap()).unwrap();
        let hosts = HostClient::new(&config).with_local_exe(env!("CARGO_BIN_EXE_one-bsud").into());
        Frontend {
            config,
            cloud,
            hosts,
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
}

fn drive(host: &str, ds: i64, s: DriveSettings) -> DriveRef {
    DriveRef {
        host: host.into(),
        ds,
        settings: s,
    }
}

fn drive_volumes(c: &dyn Cloud, name: &str) -> Vec<bsud::cloud::Volume> {
    c.find_volumes(&VolumeFilter {
        tags: vec![(TAG_DRIVE.into(), name.into())],
        ..Default::default()
    })
    .unwrap()
}

#[allow(dead_code)]
fn all_volumes(c: &dyn Cloud) -> Vec<bsud::cloud::Volume> {
    c.find_volumes(&VolumeFilter::default()).unwrap()
}

#[test]
fn drive_grows_from_empty_with_logarithmic_volumes() {
    let tb = testbed(&["kvm1"]);
    let fe = Frontend::new(&tb);
    let e = fe.engine();
    let s = DriveSettings {
        min_volume_gib: 1,
        growth_factor: 2.0,
        headroom_gib: 0,
        max_volumes: 20,
        max_size_gib: 2000,
        ..Default::default()
    };
    let d = drive("kvm1", 100, s);
    // Allocate 1 GiB LVs until 60 GiB are used: the drive must grow 1, 2, 4, 8… GiB.
    for i in 0..60 {
        e.with_space(&d, GIB, |_| {
            fe.hosts.lv_create(
                "kvm1",
                &"vg-one-100".parse()?,
                &format!("lv-one-{i}-0").parse()?,
                GIB,
                &["one.vm=1".parse()?],
            )?;
            Ok(())
        })
        .unwrap();
    }
    let vols = drive_volumes(&fe.cloud, "kvm1:vg-one-100");
    let mut sizes: Vec<u64> = vols.iter().map(|v| v.size_gib).collect();
    sizes.sort();
    assert!(
        vols.len() <= 7,
        "60 GiB took {} volumes: {sizes:?}",
        vols.len()
    );
    let total: u64 = sizes.iter().sum();
    assert!((60..130).contains(&total), "{sizes:?}");
    for v in &vols {
        assert_eq!(v.tags["one.bsud.datastore"], "100");
        assert_eq!(v.tags["one.bsud.host"], "kvm1");
    }
    // Every volume is a PV of the VG on the host.
    let vg = bsud::drive::engine::HostApi::vg_report(&fe.hosts, "kvm1", "vg-one-100").unwrap();
    assert_eq!(vg.pvs.len(), vols.len());
    assert_eq!(vg.lv_count, 60);
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
    let out = run(&["drive", "list"]);
    assert!(
        out.stdout_str().contains("kvm1:vg-one-7"),
        "{}",
        out.stdout_str()
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
    let out = run(&[
        "drive",
        "delete",
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
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .len();
    while left > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let out = run(&["cloud", "volumes", "--json"]);
        left = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len();
    }
    assert_eq!(left, 0);
    let _ = json!(null);
    let _ = SimClient::for_addr(tb.addr());
}
