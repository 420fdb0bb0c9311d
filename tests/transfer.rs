//! The data path on the testbed: LV to LV between hosts (pulled host to host, and relayed via
//! the frontend), on one host, and from frontend data; format; checksums compared end to end.

mod support;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use bsud::config::{Config, DriveSettings, Env};
use bsud::drive::engine::{DriveRef, Engine};
use bsud::host::client::HostClient;
use bsud::host::data::LvRef;
use bsud::host::fs_ops::FormatReq;
use bsud::host::transfer::{self, CopyOptions, LvLoc};
use bsud::sim::testbed::Testbed;
use bsud::stream::Source;

fn testbed() -> Testbed {
    support::testbed(&["kvm1", "kvm2"], 10)
}

struct Fe {
    config: Config,
    cloud: bsud::cloud::outscale::OutscaleCloud,
    hosts: HostClient,
}

impl Fe {
    fn new(tb: &Testbed, relay: bool) -> Fe {
        let mut config = Config::load(&Env::from_pairs(tb.env())).unwrap();
        config.relay_via_frontend = relay;
        let cloud =
            bsud::cloud::outscale::OutscaleCloud::new(&config.cloud.resolve().unwrap()).unwrap();
        let hosts = HostClient::new(&config).with_local_exe(env!("CARGO_BIN_EXE_one-bsud").into());
        Fe {
            config,
            cloud,
            hosts,
        }
    }

    fn alloc(&self, host: &str, lv: &str, bytes: u64) -> LvLoc {
        let e = Engine {
            cloud: &self.cloud,
            hosts: &self.hosts,
            lock_dir: self.config.lock_dir.clone(),
            timeouts: self.config.timeouts,
        };
        let d = DriveRef {
            host: host.into(),
            ds: 100,
            settings: DriveSettings {
                min_volume_gib: 1,
                ..Default::default()
            },
        };
        e.with_space(&d, bytes, |_| {
            self.hosts.lv_create(
                host,
                &"vg-one-100".parse()?,
                &lv.parse()?,
                bytes,
                &["one.vm=1".parse()?],
            )
        })
        .unwrap();
        LvLoc {
            host: host.into(),
            lv: format!("vg-one-100/{lv}").parse().unwrap(),
        }
    }
}

fn lv_file(tb: &Testbed, loc: &LvLoc) -> PathBuf {
    let h = tb.host(&loc.host).unwrap();
    h.view
        .lv_dir()
        .join(loc.lv.vg.to_string())
        .join(loc.lv.lv.to_string())
}

fn pattern(seed: u8, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn transfer_between_hosts_on_one_host_and_from_the_frontend() {
    let tb = testbed();
    let fe = Fe::new(&tb, false);
    let mib = 1u64 << 20;
    let a = fe.alloc("kvm1", "lv-one-1-0", 64 * mib);
    // Data at the start, a hole, data across the end.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(lv_file(&tb, &a))
        .unwrap();
    f.write_all_at(&pattern(1, 3 << 20), 0).unwrap();
    f.write_all_at(&pattern(2, 1 << 20), 63 * mib).unwrap();
    f.sync_all().unwrap();
    let src_sum = transfer::checksum(&fe.hosts, &a, None, true).unwrap();

    // Host to host, pulled by the destination; the destination LV is fresh.
    let b = fe.alloc("kvm2", "lv-one-1-0", 64 * mib);
    let got = transfer::copy_lv(
        &fe.hosts,
        &fe.config,
        &a,
        &b,
        CopyOptions {
            fresh: true,
            size_bytes: None,
        },
    )
    .unwrap();
    assert_eq!(got.digest, src_sum.digest);
    assert_eq!(got.data_bytes, 4 * mib);
    assert_eq!(
        transfer::checksum(&fe.hosts, &b, None, true).unwrap().md5,
        src_sum.md5
    );

    // Relayed through the frontend into a non-fresh LV holding old bytes: they must be zeroed.
    let fe_relay = Fe::new(&tb, true);
    let c = fe.alloc("kvm2", "lv-one-1-1", 64 * mib);
    let cf = std::fs::OpenOptions::new()
        .write(true)
        .open(lv_file(&tb, &c))
        .unwrap();
    cf.write_all_at(&pattern(9, 8 << 20), 20 * mib).unwrap();
    cf.sync_all().unwrap();
    let got = transfer::copy_lv(
        &fe_relay.hosts,
        &fe_relay.config,
        &a,
        &c,
        CopyOptions::default(),
    )
    .unwrap();
    assert_eq!(got.digest, src_sum.digest);
    assert!(got.zeroed_bytes > 0);
    assert_eq!(
        transfer::checksum(&fe.hosts, &c, None, false)
            .unwrap()
            .digest,
        src_sum.digest
    );

    // Same host.
    let d = fe.alloc("kvm1", "lv-one-1-2", 64 * mib);
    let got = transfer::copy_lv(
        &fe.hosts,
        &fe.config,
        &a,
        &d,
        CopyOptions {
            fresh: true,
            size_bytes: None,
        },
    )
    .unwrap();
    assert_eq!(got.digest, src_sum.digest);

    // From frontend data: a sparse file pushed into an LV.
    let tmp = tempfile::NamedTempFile::new().unwrap();
    tmp.as_file().set_len(64 * mib).unwrap();
    tmp.as_file().write_all_at(&pattern(1, 3 << 20), 0).unwrap();
    tmp.as_file()
        .write_all_at(&pattern(2, 1 << 20), 63 * mib)
        .unwrap();
    let e = fe.alloc("kvm2", "lv-one-1-3", 64 * mib);
    let mut source = Source::open(tmp.path(), None).unwrap();
    let got = transfer::push(&fe.hosts, &fe.config, &mut source, &e, true, true).unwrap();
    assert_eq!(got.digest, src_sum.digest);
    assert_eq!(got.md5, src_sum.md5);

    // A copy into an LV smaller than the source fails before writing.
    let small = fe.alloc("kvm2", "lv-one-1-4", 8 * mib);
    let err =
        transfer::copy_lv(&fe.hosts, &fe.config, &a, &small, CopyOptions::default()).unwrap_err();
    assert!(
        format!("{err:#}").contains("smaller") || format!("{err:#}").contains("larger"),
        "{err:#}"
    );

    // format: ext4 on an LV, idempotent, and refused over another file system.
    let g = fe.alloc("kvm1", "lv-one-1-5", 64 * mib);
    let r = fe
        .hosts
        .call(
            "kvm1",
            &FormatReq {
                lv: g.lv.clone(),
                fs: "ext4".into(),
                label: None,
            },
        )
        .unwrap();
    assert!(r.formatted);
    let r = fe
        .hosts
        .call(
            "kvm1",
            &FormatReq {
                lv: g.lv.clone(),
                fs: "ext4".into(),
                label: None,
            },
        )
        .unwrap();
    assert!(!r.formatted);
    let err = fe
        .hosts
        .call(
            "kvm1",
            &FormatReq {
                lv: g.lv.clone(),
                fs: "swap".into(),
                label: None,
            },
        )
        .unwrap_err();
    assert_eq!(bsud::error::exit_code(&err), 6, "{err:#}");
    let _ = std::io::stderr().flush();
    let _: LvRef = "vg-one-100/x".parse().unwrap();
}
