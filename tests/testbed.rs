//! The whole testbed through the real client and transport: volumes created and linked with
//! the Outscale API, LVM on the host that sees them, LV bytes following the volumes from one
//! host to another, faults the drive code must survive.

mod support;

use std::os::unix::fs::FileExt;
use std::time::Duration;

use bsud::cloud::outscale::OutscaleCloud;
use bsud::cloud::{wait_link, wait_unlinked, wait_volume, Cloud, VolumeSpec, VolumeState};
use bsud::config::{Config, Env, VolumeType};
use bsud::exec;
use bsud::sim::cloud::client::SimClient;
use bsud::sim::testbed::Testbed;
use bsud::wait::Wait;
use serde_json::json;

fn testbed() -> Testbed {
    support::testbed(&["kvm1", "kvm2"], 20)
}

fn cloud(tb: &Testbed) -> OutscaleCloud {
    let c = Config::load(&Env::from_pairs(tb.env())).unwrap();
    OutscaleCloud::new(&c.cloud.resolve().unwrap()).unwrap()
}

fn w() -> Wait {
    Wait::new(Duration::from_secs(20), Duration::from_millis(20))
}

/// Runs an LVM command "on" a host (its private lvm.conf) and returns stdout.
fn lvm(tb: &Testbed, host: &str, args: &[&str]) -> String {
    let h = tb.host(host).unwrap();
    let out = exec::run(&h.view.cmd("lvm").args(args))
        .unwrap_or_else(|e| panic!("lvm {args:?} on {host}: {e}"));
    out.stdout_str()
}

fn by_id(tb: &Testbed, host: &str, device: &str) -> String {
    let suffix = device.trim_start_matches("/dev/xvd");
    let link = tb
        .host(host)
        .unwrap()
        .view
        .dev_dir()
        .join(format!("scsi-0QEMU_QEMU_HARDDISK_sd{suffix}"));
    std::fs::canonicalize(&link)
        .unwrap_or_else(|e| panic!("{}: {e}", link.display()))
        .to_string_lossy()
        .into_owned()
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + i / 4096) % 251) as u8).collect()
}

/// Issue 3's headline: a pattern written through an LV that spans two PVs (real lvcreate on
/// two linked sim volumes) reads back identical on a second host after both volumes moved.
#[test]
fn sim_lv_bytes_follow_lvm() {
    let tb = testbed();
    let c = cloud(&tb);
    let vm1 = tb.host("kvm1").unwrap().vm_id.clone();
    let vm2 = tb.host("kvm2").unwrap().vm_id.clone();
    let mut vols = Vec::new();
    for (i, dev) in ["/dev/xvdb", "/dev/xvdc"].iter().enumerate() {
        let v = c
            .create_volume(&VolumeSpec {
                size_gib: 1,
                volume_type: VolumeType::Gp2,
                iops: None,
                subregion: "eu-west-2a".into(),
                client_token: format!("lvbytes-{i}"),
            })
            .unwrap();
        wait_volume(&c, &v.id, VolumeState::Available, w()).unwrap();
        c.link_volume(&v.id, &vm1, dev).unwrap();
        wait_link(&c, &v.id, &vm1, w()).unwrap();
        vols.push(v.id);
    }
    let (d1, d2) = (
        by_id(&tb, "kvm1", "/dev/xvdb"),
        by_id(&tb, "kvm1", "/dev/xvdc"),
    );
    lvm(&tb, "kvm1", &["pvcreate", "-q", &d1, &d2]);
    lvm(&tb, "kvm1", &["vgcreate", "-q", "vg-t", &d1, &d2]);
    // 1.5 GiB: cannot fit on one 1 GiB PV, so it spans both.
    lvm(
        &tb,
        "kvm1",
        &[
            "lvcreate", "-q", "-Zn", "-Wn", "-n", "data", "-L", "1536m", "vg-t",
        ],
    );
    let segs = lvm(
        &tb,
        "kvm1",
        &[
            "lvs",
            "--noheadings",
            "--segments",
            "-o",
            "seg_pe_ranges",
            "vg-t/data",
        ],
    );
    assert_eq!(
        segs.lines().filter(|l| !l.trim().is_empty()).count(),
        2,
        "{segs}"
    );

    let lv1 = tb.host("kvm1").unwrap().view.lv_dir().join("vg-t/data");
    let f = std::fs::OpenOptions::new().write(true).open(&lv1).unwrap();
    let data = pattern(16 << 20);
    // Across the PV boundary (1 GiB − 4 MiB of usable extents on the first PV), and at both ends.
    let boundary = (1u64 << 30) - (16 << 20);
    f.write_all_at(&data, boundary).unwrap();
    f.write_all_at(&data[..4096], 0).unwrap();
    f.write_all_at(&data[..4096], (1536u64 << 20) - 4096)
        .unwrap();
    f.sync_all().unwrap();
    drop(f);

    for v in &vols {
        c.unlink_volume(v, false).unwrap();
        wait_unlinked(&c, v, w()).unwrap();
    }
    assert!(lvm(&tb, "kvm1", &["vgs", "--noheadings", "-o", "vg_name"])
        .trim()
        .is_empty());
    // Linked to the other host under other names, in the other order.
    c.link_volume(&vols[1], &vm2, "/dev/xvdf").unwrap();
    c.link_volume(&vols[0], &vm2, "/dev/xvdg").unwrap();
    for v in &vols {
        wait_link(&c, v, &vm2, w()).unwrap();
    }
    assert_eq!(
        lvm(&tb, "kvm2", &["vgs", "--noheadings", "-o", "vg_name"]).trim(),
        "vg-t"
    );
    let lv2 = tb.host("kvm2").unwrap().view.lv_dir().join("vg-t/data");
    let f = std::fs::File::open(&lv2).unwrap();
    let mut got = vec![0u8; data.len()];
    f.read_exact_at(&mut got, boundary).unwrap();
    assert!(
        got == data,
        "bytes across the PV boundary differ after the move"
    );
    let mut head = vec![0u8; 4096];
    f.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, data[..4096]);
    f.read_exact_at(&mut head, (1536u64 << 20) - 4096).unwrap();
    assert_eq!(head, data[..4096]);
}

/// A fault rule attaches the volume in the cloud but the device never appears: the agent's
/// wait-device must end at its deadline naming what it waited for.
#[test]
fn sim_device_that_never_appears_times_out_clearly() {
    let tb = testbed();
    let c = cloud(&tb);
    let sim = SimClient::for_addr(tb.addr()).unwrap();
    sim.set_faults_json(json!({"rules": [{"kind": "no_device"}]}))
        .unwrap();
    let vm1 = tb.host("kvm1").unwrap().vm_id.clone();
    let v = c
        .create_volume(&VolumeSpec {
            size_gib: 1,
            volume_type: VolumeType::Gp2,
            iops: None,
            subregion: "eu-west-2a".into(),
            client_token: "nodev".into(),
        })
        .unwrap();
    wait_volume(&c, &v.id, VolumeState::Available, w()).unwrap();
    c.link_volume(&v.id, &vm1, "/dev/xvdd").unwrap();
    wait_link(&c, &v.id, &vm1, w()).unwrap();
    // On kvm1 itself, through the testbed's ssh: the device never shows up.
    let on_kvm1 = |device: &str| {
        let ssh = tb.ssh_command();
        let words = [
            env!("CARGO_BIN_EXE_one-bsud"),
            "host",
            "wait-device",
            &format!("--device={device}"),
            "--timeout-secs=1",
        ];
        exec::output(
            &bsud::exec::Cmd::new(&ssh[0])
                .args(&ssh[1..])
                .arg("kvm1")
                .arg(words.join(" ")),
        )
        .unwrap()
    };
    let out = on_kvm1("/dev/xvdd");
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scsi-0QEMU_QEMU_HARDDISK_sdd"), "{err}");
    // Control: without the fault, a second volume's device does appear there.
    sim.clear_faults().unwrap();
    let v2 = c
        .create_volume(&VolumeSpec {
            size_gib: 1,
            volume_type: VolumeType::Gp2,
            iops: None,
            subregion: "eu-west-2a".into(),
            client_token: "dev".into(),
        })
        .unwrap();
    wait_volume(&c, &v2.id, VolumeState::Available, w()).unwrap();
    c.link_volume(&v2.id, &vm1, "/dev/xvde").unwrap();
    wait_link(&c, &v2.id, &vm1, w()).unwrap();
    let out = on_kvm1("/dev/xvde");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout_str().contains("/dev/loop"),
        "{}",
        out.stdout_str()
    );
}
