//! The real-kernel tier (issue 8): simulated hosts that are QEMU guests with Debian's kernel.
//! These tests need root, qemu-system-x86 and either a warm image cache or network access to
//! a Debian mirror (the image is built on a cache miss): they fail loudly, never skip.

mod support;

use std::time::{Duration, Instant};

use bsud::cloud::outscale::OutscaleCloud;
use bsud::cloud::{wait_link, wait_unlinked, wait_volume, Cloud, VolumeSpec, VolumeState};
use bsud::config::{Config, Env, VolumeType};
use bsud::sim::testbed::{Testbed, Tier};
use bsud::wait::Wait;

fn cloud(tb: &Testbed) -> OutscaleCloud {
    let c = Config::load(&Env::from_pairs(tb.env())).unwrap();
    OutscaleCloud::new(&c.cloud.resolve().unwrap()).unwrap()
}

fn w() -> Wait {
    Wait::new(Duration::from_secs(30), Duration::from_millis(50))
}

#[track_caller]
fn sh(tb: &Testbed, host: &str, script: &str) -> String {
    tb.host_sh(host, script)
        .unwrap_or_else(|e| panic!("{host}: {script}: {e:#}"))
        .stdout_str()
}

/// A guest restored from the golden snapshot answers over real OpenSSH, runs the product's
/// agent from the tools disk, reaches its metadata, and sees a linked BSU under the Outscale
/// by-id name with real device-mapper under LVM; the unlink removes it.
#[test]
fn rk_guest_links_volumes_and_runs_the_agent() {
    let started = Instant::now();
    let tb = support::testbed_tier(&["kvm1"], 5, Tier::Rk);
    eprintln!("testbed up in {:.1}s", started.elapsed().as_secs_f64());
    let vm = tb.host("kvm1").unwrap().vm_id.clone();
    let kernel = sh(&tb, "kvm1", "uname -r");
    assert!(kernel.trim_end().ends_with("cloud-amd64"), "{kernel}");
    let meta = sh(&tb, "kvm1", "/opt/bsud/one-bsud host identity");
    assert!(meta.contains(&vm), "{meta}");
    for script in ["true", "/opt/bsud/one-bsud --version", "lvs", "lvm version"] {
        let t = Instant::now();
        sh(&tb, "kvm1", script);
        eprintln!("TIMING {script}: {:.2}s", t.elapsed().as_secs_f64());
    }
    let c = cloud(&tb);
    let v = c
        .create_volume(&VolumeSpec {
            size_gib: 2,
            volume_type: VolumeType::Gp2,
            iops: None,
            subregion: "eu-west-2a".into(),
            client_token: "rk-smoke".into(),
        })
        .unwrap();
    wait_volume(&c, &v.id, VolumeState::Available, w()).unwrap();
    let t = Instant::now();
    c.link_volume(&v.id, &vm, "/dev/xvdc").unwrap();
    wait_link(&c, &v.id, &vm, w()).unwrap();
    let link = "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_sdc";
    sh(&tb, "kvm1", &format!("udevadm wait --timeout=30 {link}"));
    eprintln!("link visible after {:.2}s", t.elapsed().as_secs_f64());
    let out = sh(
        &tb,
        "kvm1",
        &format!(
            "set -e; pvcreate -q {link}; vgcreate -q vg-smoke {link}; \
             lvcreate -q -L 64m -n lv vg-smoke; dmsetup ls; lvs --noheadings -o lv_attr vg-smoke/lv; \
             vgchange -q -an vg-smoke"
        ),
    );
    assert!(out.contains("vg--smoke-lv"), "{out}");
    c.unlink_volume(&v.id, false).unwrap();
    wait_unlinked(&c, &v.id, w()).unwrap();
    sh(
        &tb,
        "kvm1",
        &format!("udevadm wait --removed --timeout=30 {link}"),
    );
}
