//! The host agent on real LVM: loop devices on sparse files, a private LVM_SYSTEM_DIR whose
//! filter accepts only this test's loops, a temporary host root. Every operation is run twice
//! (idempotence), the refusals are checked by exit code and message, and the zeroing of stale
//! extents is checked byte by byte.
//!
//! LVs cannot be activated on this kernel (no device-mapper), so an LV's device node is played
//! by a regular file at `$BSUD_LV_DIR/<vg>/<lv>` that the test creates (filled with a pattern);
//! the testbed's lvfs provides the real thing, mapped onto the PV extents. The agent zeroes
//! through that node exactly as it would through /dev/<vg>/<lv>.
//!
//! Needs root, losetup and lvm2 (CI runs as root); every loop device is detached by a Drop
//! guard even when a test fails.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bsud::config::{Config, Env, FileConfig};
use bsud::error::{find_kind, ErrorKind};
use bsud::host::client::HostClient;
use bsud::host::proto::Request;
use bsud::lvm::{LvName, Tag, VgName};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_one-bsud");
const MIB: u64 = 1 << 20;
const EXTENT: u64 = 4 * MIB;

/// A loop device, detached on drop.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// One simulated host: its root, its loops and the environment the agent gets.
struct Host {
    // Declared first: loops are detached before the directory holding their files goes.
    loops: Vec<Loop>,
    env: Vec<(String, String)>,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

struct Out {
    code: i32,
    json: Value,
    stderr: String,
}

impl Out {
    fn ok(self) -> Value {
        assert_eq!(self.code, 0, "agent failed: {}", self.stderr);
        self.json
    }

    fn last_line(&self) -> &str {
        self.stderr.lines().last().unwrap_or("")
    }
}

impl Host {
    fn new(loops: usize) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let mut devs = Vec::new();
        for i in 0..loops {
            let f = root.join(format!("bsu{i}.img"));
            std::fs::File::create(&f)
                .unwrap()
                .set_len(64 * MIB)
                .unwrap();
            let out = Command::new("losetup")
                .args(["-f", "--show"])
                .arg(&f)
                .output()
                .unwrap();
            assert!(out.status.success(), "losetup: {:?}", out);
            devs.push(Loop(
                String::from_utf8(out.stdout).unwrap().trim().to_string(),
            ));
        }
        let etc = root.join("etc/lvm");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::create_dir_all(root.join("run/lvm")).unwrap();
        std::fs::create_dir_all(root.join("lv")).unwrap();
        std::fs::create_dir_all(root.join("dev/disk/by-id")).unwrap();
        let filter: String = devs.iter().map(|l| format!("\"a|^{}$|\", ", l.0)).collect();
        std::fs::write(
            etc.join("lvm.conf"),
            format!(
                "devices {{ scan = [ \"/dev\" ] filter = [ {filter}\"r|.*|\" ] obtain_device_list_from_udev = 0 use_devicesfile = 0 hints = \"none\" external_device_info_source = \"none\" }}\n\
                 global {{ activation = 0 locking_dir = \"{}/run/lvm\" use_lvmlockd = 0 }}\n\
                 backup {{ backup = 0 archive = 0 }}\n",
                root.display()
            ),
        )
        .unwrap();
        let env = vec![
            ("BSUD_HOST_ROOT".into(), root.display().to_string()),
            ("LVM_SYSTEM_DIR".into(), etc.display().to_string()),
            ("BSUD_LV_DIR".into(), root.join("lv").display().to_string()),
            (
                "BSUD_DEV_DIR".into(),
                root.join("dev/disk/by-id").display().to_string(),
            ),
        ];
        Host {
            loops: devs,
            env,
            root,
            _dir: dir,
        }
    }

    fn dev(&self, i: usize) -> &str {
        &self.loops[i].0
    }

    fn agent<S: AsRef<str>>(&self, args: &[S]) -> Out {
        let out = Command::new(BIN)
            .arg("host")
            .args(args.iter().map(|a| a.as_ref()))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            json: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs an LVM command directly in this host's view (to set up what the agent must face).
    fn lvm(&self, args: &[&str]) {
        let out = Command::new(args[0])
            .args(&args[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    }

    /// `lv-create` in vg-one-1 with one tag.
    fn create(&self, lv: &str, bytes: u64, tag: &str) -> Out {
        self.agent(&[
            "lv-create",
            "--vg=vg-one-1",
            &format!("--lv={lv}"),
            &format!("--size-bytes={bytes}"),
            &format!("--tag={tag}"),
        ])
    }

    fn lv_file(&self, vg: &str, lv: &str) -> PathBuf {
        self.root.join("lv").join(vg).join(lv)
    }

    /// Stands in for the LV's device node: `size` bytes of `pattern`.
    fn make_lv_file(&self, vg: &str, lv: &str, size: u64, pattern: u8) {
        let p = self.lv_file(vg, lv);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, vec![pattern; size as usize]).unwrap();
    }

    fn by_id(&self, serial: &str, dev: &str) {
        std::os::unix::fs::symlink(
            dev,
            self.root
                .join("dev/disk/by-id")
                .join(format!("scsi-0QEMU_QEMU_HARDDISK_{serial}")),
        )
        .unwrap();
    }

    fn pv_tags(&self, dev: &str, vg: &str) -> Vec<String> {
        let r = self.agent(&["vg-report", &format!("--vg={vg}")]).ok();
        r["pvs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == dev)
            .map(|p| {
                p["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Asserts the file reads `pattern` everywhere except in `zero` (byte ranges), which read 0.
fn assert_bytes(path: &Path, zero: &[(u64, u64)], pattern: u8) {
    let data = std::fs::read(path).unwrap();
    for (i, b) in data.iter().enumerate() {
        let i = i as u64;
        let want = if zero.iter().any(|(a, z)| (*a..*z).contains(&i)) {
            0
        } else {
            pattern
        };
        assert_eq!(*b, want, "{} byte {i}", path.display());
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn pv_add_and_remove_are_idempotent_and_reported() {
    let h = Host::new(2);
    let (a, b) = (h.dev(0).to_string(), h.dev(1).to_string());
    h.by_id("sdb", &a);
    let first = h
        .agent(&[
            "pv-add",
            "--vg=vg-one-1",
            &format!("--device={a}"),
            "--fresh",
        ])
        .ok();
    assert_eq!(first["pv_created"], true);
    assert_eq!(first["vg_created"], true);
    assert_eq!(u(&first["hwm"]), 0, "a new zeroed device starts fresh");
    let again = h
        .agent(&[
            "pv-add",
            "--vg=vg-one-1",
            &format!("--device={a}"),
            "--fresh",
        ])
        .ok();
    assert_eq!(
        (
            &again["pv_created"],
            &again["vg_created"],
            &again["vg_extended"]
        ),
        (
            &Value::Bool(false),
            &Value::Bool(false),
            &Value::Bool(false)
        )
    );
    // Without --fresh the device's past is unknown: every extent counts as stale.
    let second = h
        .agent(&["pv-add", "--vg=vg-one-1", &format!("--device={b}")])
        .ok();
    assert_eq!(second["vg_extended"], true);
    assert_eq!(u(&second["hwm"]), u(&second["pe_count"]));
    assert!(u(&second["pe_count"]) > 10);

    let r = h.agent(&["vg-report", "--vg=vg-one-1"]).ok();
    assert_eq!(r["vg"]["name"], "vg-one-1");
    assert_eq!(u(&r["vg"]["pv_count"]), 2);
    let pvs = r["pvs"].as_array().unwrap();
    let pa = pvs.iter().find(|p| p["name"] == a.as_str()).unwrap();
    assert_eq!(pa["serial"], "sdb");
    assert_eq!(u(&pa["hwm"]), 0);
    assert_eq!(pa["tags"][0], "one.bsud.hwm=0");
    let pb = pvs.iter().find(|p| p["name"] == b.as_str()).unwrap();
    assert_eq!(pb["serial"], Value::Null);
    assert_eq!(r["bsu_devices"][0]["serial"], "sdb");
    assert_eq!(r["bsu_devices"][0]["path"], a.as_str());
    assert_eq!(r["bsu_devices"][0]["vg"], "vg-one-1");
    assert!(r["orphan_pvs"].as_array().unwrap().is_empty());
    assert!(r["lvs"].as_array().unwrap().is_empty());

    for round in 0..2 {
        let rm = h
            .agent(&["pv-remove", "--vg=vg-one-1", &format!("--device={b}")])
            .ok();
        assert_eq!(rm["vg_reduced"], round == 0);
        assert_eq!(rm["pv_removed"], round == 0);
    }
    let rm = h
        .agent(&["pv-remove", "--vg=vg-one-1", &format!("--device={a}")])
        .ok();
    assert_eq!(rm["vg_removed"], true);
    assert_eq!(rm["pv_removed"], true);
    let r = h.agent(&["vg-report", "--vg=vg-one-1"]).ok();
    assert_eq!(r["vg"], Value::Null);
    assert!(r["pvs"].as_array().unwrap().is_empty());
    assert!(r["orphan_pvs"].as_array().unwrap().is_empty());
    assert_eq!(r["bsu_devices"][0]["is_pv"], false);
}

#[test]
fn pv_add_refuses_a_filesystem_and_another_vg() {
    let h = Host::new(2);
    let (a, b) = (h.dev(0).to_string(), h.dev(1).to_string());
    let mk = Command::new("mkfs.ext4")
        .args(["-q", "-F", &a])
        .output()
        .unwrap();
    assert!(mk.status.success(), "{mk:?}");
    let o = h.agent(&["pv-add", "--vg=vg-one-1", &format!("--device={a}")]);
    assert_eq!(o.code, 6, "{}", o.stderr);
    assert!(o.last_line().contains("ext4"), "{}", o.last_line());
    assert!(o.last_line().contains(&a), "{}", o.last_line());

    h.agent(&["pv-add", "--vg=vg-other", &format!("--device={b}")])
        .ok();
    let o = h.agent(&["pv-add", "--vg=vg-one-1", &format!("--device={b}")]);
    assert_eq!(o.code, 6, "{}", o.stderr);
    assert!(o.last_line().contains("vg-other"), "{}", o.last_line());
    let o = h.agent(&["pv-remove", "--vg=vg-one-1", &format!("--device={b}")]);
    assert_eq!(o.code, 6, "{}", o.stderr);
    // Nothing was touched: the other VG still has its PV, the file system is still there.
    let r = h.agent(&["vg-report", "--vg=vg-other"]).ok();
    assert_eq!(u(&r["vg"]["pv_count"]), 1);
    let sig = Command::new("wipefs").args(["-n", &a]).output().unwrap();
    assert!(String::from_utf8_lossy(&sig.stdout).contains("ext4"));
}

#[test]
fn pv_remove_refuses_a_pv_holding_extents() {
    let h = Host::new(1);
    let a = h.dev(0).to_string();
    h.agent(&[
        "pv-add",
        "--vg=vg-one-1",
        &format!("--device={a}"),
        "--fresh",
    ])
    .ok();
    h.make_lv_file("vg-one-1", "lv-one-3-0", 2 * EXTENT, 0xA5);
    h.create("lv-one-3-0", 2 * EXTENT, "one.vm=3").ok();
    let o = h.agent(&["pv-remove", "--vg=vg-one-1", &format!("--device={a}")]);
    assert_eq!(o.code, 6, "{}", o.stderr);
    assert!(o.last_line().contains("lv-one-3-0"), "{}", o.last_line());
    let r = h.agent(&["vg-report", "--vg=vg-one-1"]).ok();
    assert_eq!(r["lvs"][0]["name"], "lv-one-3-0");
}

#[test]
fn lv_operations_are_idempotent_and_refuse_what_is_not_ours() {
    let h = Host::new(1);
    let vg = "--vg=vg-one-1";
    h.agent(&["pv-add", vg, &format!("--device={}", h.dev(0)), "--fresh"])
        .ok();
    let size = 3 * EXTENT - 1000;
    h.make_lv_file("vg-one-1", "lv-one-3-0", 3 * EXTENT, 0);
    let create = |extra: &[&str]| {
        let mut args = vec![
            "lv-create".to_string(),
            vg.to_string(),
            "--lv=lv-one-3-0".into(),
            format!("--size-bytes={size}"),
            "--tag=one.vm=3".into(),
            "--tag=one.disk=0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        h.agent(&args)
    };
    let c1 = create(&[]).ok();
    assert_eq!(c1["created"], true);
    assert_eq!(u(&c1["size_bytes"]), 3 * EXTENT, "rounded up to extents");
    assert_eq!(
        c1["path"],
        h.lv_file("vg-one-1", "lv-one-3-0").display().to_string()
    );
    assert_eq!(c1["tags"], serde_json::json!(["one.disk=0", "one.vm=3"]));
    let c2 = create(&[]).ok();
    assert_eq!(c2["created"], false);
    // Same name, other tags: refused; asking for more than exists: refused.
    let o = h.agent(&[
        "lv-create",
        vg,
        "--lv=lv-one-3-0",
        "--size-bytes=4096",
        "--tag=one.vm=4",
    ]);
    assert_eq!(o.code, 6, "{}", o.stderr);
    let o = h.create("lv-one-3-0", 10 * EXTENT, "one.vm=3");
    assert_eq!(o.code, 6, "{}", o.stderr);
    // A tag-less LV would be untouchable later: refused up front; bookkeeping tags are ours.
    let o = h.agent(&["lv-create", vg, "--lv=x", "--size-bytes=1", "--tag=foo=1"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    let o = h.agent(&[
        "lv-create",
        vg,
        "--lv=x",
        "--size-bytes=1",
        "--tag=one.vm=1",
        "--tag=one.bsud.zero-from=0",
    ]);
    assert_eq!(o.code, 2, "{}", o.stderr);

    // Extend twice.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(h.lv_file("vg-one-1", "lv-one-3-0"))
        .unwrap();
    f.set_len(5 * EXTENT).unwrap();
    for round in 0..2 {
        let e = h
            .agent(&[
                "lv-extend",
                vg,
                "--lv=lv-one-3-0",
                &format!("--size-bytes={}", 5 * EXTENT),
            ])
            .ok();
        assert_eq!(e["extended"], round == 0);
        assert_eq!(u(&e["size_bytes"]), 5 * EXTENT);
    }

    // Tags.
    for round in 0..2 {
        let t = h
            .agent(&[
                "lv-tag",
                vg,
                "--lv=lv-one-3-0",
                "--add=one.bsud.state=ready",
                "--del=one.disk=0",
            ])
            .ok();
        assert_eq!(t["changed"], round == 0);
        assert_eq!(
            t["tags"],
            serde_json::json!(["one.bsud.state=ready", "one.vm=3"])
        );
    }
    let o = h.agent(&[
        "lv-tag",
        vg,
        "--lv=lv-one-3-0",
        "--del=one.vm=3",
        "--del=one.bsud.state=ready",
    ]);
    assert_eq!(o.code, 6, "leaving no one.* tag: {}", o.stderr);

    // List with and without a filter.
    let l = h.agent(&["lv-list", vg]).ok();
    assert_eq!(l["vg_exists"], true);
    assert_eq!(l["lvs"].as_array().unwrap().len(), 1);
    let l = h.agent(&["lv-list", vg, "--tag=one.vm=9"]).ok();
    assert!(l["lvs"].as_array().unwrap().is_empty());
    let l = h.agent(&["lv-list", "--vg=vg-absent"]).ok();
    assert_eq!(l["vg_exists"], false);

    // Rename twice.
    for round in 0..2 {
        let r = h
            .agent(&["lv-rename", vg, "--lv=lv-one-3-0", "--new-name=lv-one-3-1"])
            .ok();
        assert_eq!(r["renamed"], round == 0);
    }

    // Remove: a required tag that is not there refuses; then twice.
    let o = h.agent(&["lv-remove", vg, "--lv=lv-one-3-1", "--require-tag=one.vm=4"]);
    assert_eq!(o.code, 6, "{}", o.stderr);
    for round in 0..2 {
        let r = h
            .agent(&["lv-remove", vg, "--lv=lv-one-3-1", "--require-tag=one.vm=3"])
            .ok();
        assert_eq!(r["removed"], round == 0);
    }

    // An LV someone else made is never changed.
    h.lvm(&[
        "lvcreate", "-n", "foreign", "-L", "4m", "-Zn", "-Wn", "--yes", "vg-one-1",
    ]);
    for args in [
        vec!["lv-remove", vg, "--lv=foreign"],
        vec!["lv-tag", vg, "--lv=foreign", "--add=one.vm=1"],
        vec!["lv-extend", vg, "--lv=foreign", "--size-bytes=999999999"],
        vec!["lv-rename", vg, "--lv=foreign", "--new-name=mine"],
    ] {
        let o = h.agent(&args);
        assert_eq!(o.code, 6, "{args:?}: {}", o.stderr);
        assert!(o.last_line().contains("not ours"), "{}", o.last_line());
    }
    let l = h.agent(&["lv-list", vg]).ok();
    assert_eq!(l["lvs"][0]["name"], "foreign");
    assert_eq!(u(&l["lvs"][0]["size"]), EXTENT);
}

#[test]
fn new_lv_over_a_deleted_one_gets_its_stale_extents_zeroed() {
    let h = Host::new(1);
    let vg = "--vg=vg-one-1";
    let dev = h.dev(0).to_string();
    h.agent(&["pv-add", vg, &format!("--device={dev}"), "--fresh"])
        .ok();

    // 1st LV on a fresh PV: nothing to zero, and the mark moves past it.
    h.make_lv_file("vg-one-1", "old", 3 * EXTENT, 0xA5);
    let c = h.create("old", 3 * EXTENT, "one.image=1").ok();
    assert_eq!(
        (u(&c["fresh_bytes"]), u(&c["zeroed_bytes"])),
        (3 * EXTENT, 0)
    );
    assert_bytes(&h.lv_file("vg-one-1", "old"), &[], 0xA5);
    assert!(h
        .pv_tags(&dev, "vg-one-1")
        .contains(&"one.bsud.hwm=3".to_string()));
    h.agent(&["lv-remove", vg, "--lv=old"]).ok();

    // 2nd LV reuses extents 0..3: those are stale and zeroed, 3..5 are fresh and left alone.
    h.make_lv_file("vg-one-1", "new", 5 * EXTENT, 0xA5);
    let c = h.create("new", 5 * EXTENT, "one.image=2").ok();
    assert_eq!(u(&c["zeroed_bytes"]), 3 * EXTENT);
    assert_eq!(u(&c["fresh_bytes"]), 2 * EXTENT);
    assert_bytes(&h.lv_file("vg-one-1", "new"), &[(0, 3 * EXTENT)], 0xA5);
    assert!(h
        .pv_tags(&dev, "vg-one-1")
        .contains(&"one.bsud.hwm=5".to_string()));

    // A rerun of a completed create leaves the LV's (now the caller's) bytes alone.
    h.make_lv_file("vg-one-1", "new", 5 * EXTENT, 0x5A);
    let c = h.create("new", 5 * EXTENT, "one.image=2").ok();
    assert_eq!(
        (c["created"].clone(), u(&c["zeroed_bytes"])),
        (Value::Bool(false), 0)
    );
    assert_bytes(&h.lv_file("vg-one-1", "new"), &[], 0x5A);

    // Extending over fresh extents zeroes nothing; the new part is reported fresh.
    h.make_lv_file("vg-one-1", "new", 7 * EXTENT, 0x5A);
    let e = h
        .agent(&[
            "lv-extend",
            vg,
            "--lv=new",
            &format!("--size-bytes={}", 7 * EXTENT),
        ])
        .ok();
    assert_eq!(
        (u(&e["fresh_bytes"]), u(&e["zeroed_bytes"])),
        (2 * EXTENT, 0)
    );
    assert_bytes(&h.lv_file("vg-one-1", "new"), &[], 0x5A);
}

#[test]
fn a_pv_of_unknown_past_is_zeroed_wherever_an_lv_lands() {
    let h = Host::new(1);
    let vg = "--vg=vg-one-1";
    // The device is dirty: --fresh must not be believed.
    std::fs::write(h.root.join("garbage"), vec![7u8; 4096]).unwrap();
    let dd = Command::new("dd")
        .arg(format!("if={}", h.root.join("garbage").display()))
        .arg(format!("of={}", h.dev(0)))
        .arg("bs=4096")
        .arg("seek=100")
        .arg("conv=notrunc")
        .output()
        .unwrap();
    assert!(dd.status.success());
    let a = h
        .agent(&["pv-add", vg, &format!("--device={}", h.dev(0)), "--fresh"])
        .ok();
    assert_eq!(u(&a["hwm"]), u(&a["pe_count"]));
    h.make_lv_file("vg-one-1", "lv", 2 * EXTENT, 0xA5);
    let c = h.create("lv", 2 * EXTENT, "one.vm=1").ok();
    assert_eq!(
        (u(&c["zeroed_bytes"]), u(&c["fresh_bytes"])),
        (2 * EXTENT, 0)
    );
    assert_bytes(&h.lv_file("vg-one-1", "lv"), &[(0, 2 * EXTENT)], 0xA5);
}

#[test]
fn an_interrupted_create_is_finished_by_the_rerun_never_skipped() {
    let h = Host::new(1);
    let vg = "--vg=vg-one-1";
    let dev = h.dev(0).to_string();
    h.agent(&["pv-add", vg, &format!("--device={dev}"), "--fresh"])
        .ok();
    h.make_lv_file("vg-one-1", "old", 4 * EXTENT, 0xA5);
    h.create("old", 4 * EXTENT, "one.image=1").ok();
    h.agent(&["lv-remove", vg, "--lv=old"]).ok();

    // No device node (lvfs "not mounted"): the LV is created but the operation fails clearly
    // instead of skipping the zeroing; the LV keeps its pending mark.
    let new_args = [
        "lv-create".to_string(),
        vg.to_string(),
        "--lv=new".into(),
        format!("--size-bytes={}", 2 * EXTENT),
        "--tag=one.image=2".into(),
        "--device-timeout-secs=1".into(),
    ];
    let o = h.agent(&new_args);
    assert_eq!(o.code, 5, "{}", o.stderr);
    assert!(o.last_line().contains("device node"), "{}", o.last_line());
    let l = h.agent(&["lv-list", vg]).ok();
    assert!(l["lvs"][0]["tags"]
        .as_array()
        .unwrap()
        .contains(&Value::from("one.bsud.zero-from=0")));

    // Rerun once the node exists: the LV exists, the stale extents are zeroed all the same.
    h.make_lv_file("vg-one-1", "new", 2 * EXTENT, 0xA5);
    let c = h.agent(&new_args).ok();
    assert_eq!(c["created"], false);
    assert_eq!(u(&c["zeroed_bytes"]), 2 * EXTENT);
    assert_bytes(&h.lv_file("vg-one-1", "new"), &[(0, 2 * EXTENT)], 0xA5);
    let l = h.agent(&["lv-list", vg]).ok();
    assert_eq!(l["lvs"][0]["tags"], serde_json::json!(["one.image=2"]));

    // Killed after the marks were raised but before zeroing (simulated: an LV made by hand with
    // its pending tag, on extents 2..6 of which 4 and 5 are fresh, and the mark raised over
    // them): the rerun counts the whole pending part as stale — more zeroing, never less.
    h.lvm(&[
        "lvcreate",
        "-n",
        "mid",
        "-L",
        "16m",
        "-Zn",
        "-Wn",
        "--yes",
        "--addtag",
        "one.vm=5",
        "--addtag",
        "one.bsud.zero-from=0",
        "vg-one-1",
    ]);
    h.lvm(&[
        "pvchange",
        "--deltag",
        "one.bsud.hwm=4",
        "--addtag",
        "one.bsud.hwm=6",
        &dev,
    ]);
    h.make_lv_file("vg-one-1", "mid", 4 * EXTENT, 0xA5);
    let c = h.create("mid", 4 * EXTENT, "one.vm=5").ok();
    assert_eq!(
        (u(&c["zeroed_bytes"]), u(&c["fresh_bytes"])),
        (4 * EXTENT, 0)
    );
    assert_bytes(&h.lv_file("vg-one-1", "mid"), &[(0, 4 * EXTENT)], 0xA5);
}

#[test]
fn concurrent_creates_on_one_vg_all_succeed_without_overlap() {
    let h = Host::new(2);
    let vg = "--vg=vg-one-1";
    for i in 0..2 {
        h.agent(&["pv-add", vg, &format!("--device={}", h.dev(i)), "--fresh"])
            .ok();
    }
    let n = 8;
    for i in 0..n {
        h.make_lv_file("vg-one-1", &format!("lv-{i}"), 3 * EXTENT, 0);
    }
    std::thread::scope(|s| {
        for i in 0..n {
            let h = &h;
            s.spawn(move || {
                h.create(&format!("lv-{i}"), 3 * EXTENT, &format!("one.vm={i}"))
                    .ok();
            });
        }
    });
    let r = h.agent(&["vg-report", vg]).ok();
    let mut used: Vec<(String, u64)> = Vec::new();
    for lv in r["lvs"].as_array().unwrap() {
        assert!(!lv["tags"].to_string().contains("zero-from"), "{lv}");
        for seg in lv["segments"].as_array().unwrap() {
            for range in seg["ranges"].as_array().unwrap() {
                for pe in u(&range["start"])..=u(&range["end"]) {
                    let key = (range["pv"].as_str().unwrap().to_string(), pe);
                    assert!(!used.contains(&key), "extent {key:?} given twice");
                    used.push(key);
                }
            }
        }
    }
    assert_eq!(used.len(), n * 3);
    // Every allocated extent lies below its PV's mark.
    for pv in r["pvs"].as_array().unwrap() {
        let name = pv["name"].as_str().unwrap();
        let top = used
            .iter()
            .filter(|(p, _)| p == name)
            .map(|(_, e)| e + 1)
            .max();
        assert!(top.unwrap_or(0) <= u(&pv["hwm"]), "{pv}");
    }
}

#[test]
fn wait_device_finds_the_by_id_link_or_names_what_it_waited_for() {
    let h = Host::new(1);
    let dev = h.dev(0).to_string();
    let o = h.agent(&["wait-device", "--device=/dev/xvdf", "--timeout-secs=1"]);
    assert_eq!(o.code, 5, "{}", o.stderr);
    assert!(
        o.last_line().contains("scsi-0QEMU_QEMU_HARDDISK_sdf"),
        "{}",
        o.last_line()
    );
    let link_dir = h.root.join("dev/disk/by-id");
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        std::os::unix::fs::symlink(&dev, link_dir.join("scsi-0QEMU_QEMU_HARDDISK_sdf")).unwrap();
    });
    let f = h
        .agent(&["wait-device", "--device=/dev/xvdf", "--timeout-secs=20"])
        .ok();
    t.join().unwrap();
    assert_eq!(f["path"], h.dev(0));
    assert_eq!(
        (f["serial"].as_str(), f["via"].as_str()),
        (Some("sdf"), Some("by-id"))
    );
}

#[test]
fn identity_comes_from_the_metadata_server() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let mut line = String::new();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let _ = r.read_line(&mut line);
            loop {
                let mut hdr = String::new();
                if r.read_line(&mut hdr).unwrap_or(0) == 0 || hdr == "\r\n" {
                    break;
                }
            }
            let body = if line.contains("instance-id") {
                "i-4e2f1a9c"
            } else {
                "cloudgouv-eu-west-1c"
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let mut h = Host::new(0);
    h.env.push(("BSUD_METADATA_URL".into(), url));
    let id = h.agent(&["identity", "--timeout-secs=5"]).ok();
    assert_eq!(id["vm_id"], "i-4e2f1a9c");
    assert_eq!(id["subregion"], "cloudgouv-eu-west-1c");
    assert_eq!(id["region"], "cloudgouv-eu-west-1");
    assert_eq!(id["version"], bsud::VERSION);
}

/// An ssh stand-in: drops the host name and re-parses the remote string with `sh -c`, exactly
/// as sshd hands it to the login shell, in the host's environment.
fn ssh_standin(h: &Host) -> PathBuf {
    let script = h.root.join("fake-ssh");
    let exports: String = h
        .env
        .iter()
        .map(|(k, v)| format!("export {k}='{v}'\n"))
        .collect();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nshift\n{exports}cd \"$BSUD_HOST_ROOT\" || exit 255\nexec sh -c \"$*\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn client_for(h: &Host) -> HostClient {
    let f = FileConfig {
        frontend_host: Some("frontend".into()),
        frontend_root: Some(h.root.clone()),
        ssh_command: Some(vec![ssh_standin(h).display().to_string()]),
        host_agent: Some(BIN.into()),
        ..Default::default()
    };
    HostClient::new(&Config::resolve(f, None, &Env::default())).with_local_exe(BIN.into())
}

/// A request with words the typed API would never build, to prove what reaches the agent.
struct RawLvList(Vec<String>);

impl Request for RawLvList {
    const OP: &'static str = "lv-list";
    const LOCKS: bool = false;
    type Response = Value;
    fn args(&self) -> Vec<String> {
        self.0.clone()
    }
}

#[test]
fn client_over_ssh_keeps_hostile_values_intact_and_relays_errors() {
    let h = Host::new(1);
    let c = client_for(&h);
    let vg: VgName = "vg-one-1".parse().unwrap();
    let dev = h.dev(0).parse().unwrap();
    let added = c.pv_add("kvm1", &vg, &dev, true).unwrap();
    assert!(added.vg_created);

    // Tag values with every shell-special character LVM allows.
    let lv: LvName = "img+one.7_x".parse().unwrap();
    let tags: Vec<Tag> = vec![
        "one.image=7".parse().unwrap(),
        "one.bsud.drive-name=kvm1:vg-one-1".parse().unwrap(),
        "one.note=a&b#c!d/e=f:g".parse().unwrap(),
    ];
    h.make_lv_file("vg-one-1", lv.as_str(), EXTENT, 0);
    let created = c.lv_create("kvm1", &vg, &lv, 4096, &tags).unwrap();
    assert!(created.created);
    let list = c.lv_list("kvm1", &vg, &tags[2..]).unwrap();
    assert_eq!(list.lvs.len(), 1);
    assert_eq!(list.lvs[0].name, lv.as_str());
    let mut want: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    want.sort();
    assert_eq!(list.lvs[0].tags, want);

    // Words a shell would act on arrive as plain data and are refused as bad input.
    let canary = h.root.join("pwned");
    let hostile = format!("--vg=$(touch {})", canary.display());
    let e = c
        .call(
            "kvm1",
            &RawLvList(vec![hostile.clone(), "--tag=`id`;x".into()]),
        )
        .unwrap_err();
    assert_eq!(find_kind(&e), Some(ErrorKind::BadInput), "{e:#}");
    let msg = format!("{e:#}");
    assert!(msg.contains("host kvm1: lv-list failed"), "{msg}");
    assert!(
        msg.contains(&format!("$(touch {})", canary.display())),
        "{msg}"
    );
    assert!(!canary.exists(), "the remote shell ran an embedded command");

    // A refusal keeps its kind and the agent's message across ssh.
    h.lvm(&[
        "lvcreate", "-n", "foreign", "-L", "4m", "-Zn", "-Wn", "--yes", "vg-one-1",
    ]);
    let e = c
        .lv_remove("kvm1", &vg, &"foreign".parse().unwrap(), &[])
        .unwrap_err();
    assert_eq!(find_kind(&e), Some(ErrorKind::Refused), "{e:#}");
    assert!(format!("{e:#}").contains("not ours"), "{e:#}");

    let report = c.vg_report("kvm1", &vg).unwrap();
    assert_eq!(report.vg.unwrap().lv_count, 2);

    // The frontend itself runs the agent locally.
    assert_eq!(c.version("frontend").unwrap().version, bsud::VERSION);
}
