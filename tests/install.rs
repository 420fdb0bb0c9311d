//! install.sh into staging roots holding copies of the stock oned.conf (6.10.5 and master) and
//! vmm_execrc, and the host capacity probe it installs, run on a testbed host with a real
//! drive. Tests named `install_*` (issue 7).

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use bsud::exec::{self, ssh::SshCommand};
use bsud::sim::one::DatastoreSpec;
use bsud::sim::testbed::{Testbed, TestbedOpts};

const ONED_CONFS: [&str; 2] = ["oned.conf-6.10.5.conf", "oned.conf-master-f847cf2e.conf"];
const VMM_EXECRC: &str = "vmm_execrc-master-f847cf2e";
const REMOTES: &str = "var/lib/one/remotes";

/// A staging root with `/etc/one/oned.conf` and `/etc/one/vmm_exec/vmm_execrc`.
struct Staging {
    dir: tempfile::TempDir,
}

impl Staging {
    fn new(oned_conf: &[u8]) -> Staging {
        let dir = tempfile::Builder::new()
            .prefix("install-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let s = Staging { dir };
        std::fs::create_dir_all(s.path("etc/one/vmm_exec")).unwrap();
        std::fs::write(s.path("etc/one/oned.conf"), oned_conf).unwrap();
        std::fs::write(
            s.path("etc/one/vmm_exec/vmm_execrc"),
            support::fixture(&format!("opennebula/{VMM_EXECRC}")),
        )
        .unwrap();
        s
    }

    fn stock(name: &str) -> Staging {
        Staging::new(&support::fixture(&format!("opennebula/{name}")))
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `install.sh --root <root> --binary <the built one-bsud> <args>`.
    fn install(&self, args: &[&str]) -> support::Out {
        let mut all: Vec<&str> = vec![
            "--root",
            self.root().to_str().unwrap(),
            "--binary",
            env!("CARGO_BIN_EXE_one-bsud"),
        ];
        all.extend(args);
        install_sh(&all)
    }

    /// Every file under the root: relative path → (bytes, mode).
    fn snapshot(&self) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
        fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (Vec<u8>, u32)>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let meta = std::fs::symlink_metadata(&p).unwrap();
                if meta.is_dir() {
                    walk(base, &p, out);
                } else {
                    let bytes = if meta.file_type().is_symlink() {
                        std::fs::read_link(&p)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned()
                            .into_bytes()
                    } else {
                        std::fs::read(&p).unwrap()
                    };
                    out.insert(
                        p.strip_prefix(base).unwrap().to_path_buf(),
                        (bytes, meta.permissions().mode()),
                    );
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.root(), self.root(), &mut out);
        out
    }

    fn backups(&self, dir: &str, prefix: &str) -> Vec<PathBuf> {
        std::fs::read_dir(self.path(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .collect()
    }
}

fn install_sh(args: &[&str]) -> support::Out {
    let out = Command::new("bash")
        .arg(support::repo().join("install.sh"))
        .args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .output()
        .unwrap();
    support::Out {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

#[track_caller]
fn ok(out: &support::Out) -> String {
    assert_eq!(
        out.code,
        0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout_text(),
        out.stderr_text()
    );
    out.stdout_text()
}

#[test]
fn install_help_exits_0_and_unknown_options_fail() {
    let out = install_sh(&["--help"]);
    let text = ok(&out);
    assert!(text.starts_with("Usage: install.sh"), "{text}");
    for opt in [
        "--node",
        "--binary",
        "--remotes",
        "--oned-conf",
        "--dry-run",
        "--root",
    ] {
        assert!(text.contains(opt), "--help does not explain {opt}");
    }
    let out = install_sh(&["--frobnicate"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr_text(),
        "install.sh: unknown option --frobnicate (see --help)\n"
    );
    assert_eq!(install_sh(&["--binary"]).code, 1);
}

#[test]
fn install_twice_changes_nothing_the_second_time() {
    for name in ONED_CONFS {
        let s = Staging::stock(name);
        let original = std::fs::read(s.path("etc/one/oned.conf")).unwrap();
        let first = ok(&s.install(&[]));
        assert!(
            first.contains("oned.conf: changed (backup: "),
            "{name}: {first}"
        );
        assert!(first.contains("restart oned"), "{name}: {first}");
        let after_first = s.snapshot();

        let second = ok(&s.install(&[]));
        assert!(
            second.contains("everything already installed; nothing changed"),
            "{name}: {second}"
        );
        assert!(!second.contains("would") && !second.contains("changed (backup"));
        assert_eq!(
            s.snapshot(),
            after_first,
            "{name}: the second run changed files"
        );

        // One backup of each edited file, holding the original bytes.
        let oned_backups = s.backups("etc/one", "oned.conf.bsud-");
        assert_eq!(oned_backups.len(), 1, "{name}: {oned_backups:?}");
        assert_eq!(std::fs::read(&oned_backups[0]).unwrap(), original);
        assert_eq!(s.backups("etc/one/vmm_exec", "vmm_execrc.bsud-").len(), 1);

        // Every entry exactly once, and nothing left to do for the planner.
        let conf = std::fs::read_to_string(s.path("etc/one/oned.conf")).unwrap();
        assert_eq!(
            conf.matches("NAME = \"bsud\", LN_TARGET = \"SYSTEM\"")
                .count(),
            1
        );
        assert_eq!(
            conf.matches("NAME = \"bsud\", REQUIRED_ATTRS = \"\"")
                .count(),
            1
        );
        assert_eq!(
            conf.matches("INHERIT_DATASTORE_ATTR  = \"BSUD_MAX_SIZE_GIB\"")
                .count(),
            1
        );
        assert!(bsud::ops::register::plan_oned_conf(&conf)
            .unwrap()
            .edits
            .is_empty());
        let rc = std::fs::read_to_string(s.path("etc/one/vmm_exec/vmm_execrc")).unwrap();
        assert_eq!(rc.matches("kvm-bsud").count(), 1);
        assert_eq!(rc.matches("qemu-bsud").count(), 1);

        // The sample configuration is written once and never again.
        let cfg = s.path("etc/one/bsud.toml");
        assert_eq!(
            std::fs::read(&cfg).unwrap(),
            std::fs::read(support::repo().join("share/bsud.toml")).unwrap()
        );
        std::fs::write(&cfg, "log_level = \"debug\"\n").unwrap();
        ok(&s.install(&[]));
        assert_eq!(
            std::fs::read_to_string(&cfg).unwrap(),
            "log_level = \"debug\"\n"
        );
    }
}

#[test]
fn install_dry_run_changes_nothing() {
    let s = Staging::stock(ONED_CONFS[1]);
    let before = s.snapshot();
    let out = ok(&s.install(&["--dry-run"]));
    assert_eq!(s.snapshot(), before, "--dry-run changed files");
    for want in [
        "would install ",
        "/var/lib/one/remotes/tm/bsud/one-bsud",
        "/var/lib/one/remotes/im/kvm-probes.d/host/system/bsud-capacity",
        "/etc/sudoers.d/one-bsud",
        "oned.conf: would change (dry run: nothing written):",
        "@@ line 573: add bsud to DATASTORE_MAD's -d list; add bsud to DATASTORE_MAD's -s list @@",
        "+    ARGUMENTS  = \"-t 15 -d dummy,fs,lvm,ceph,dev,iscsi_libvirt,restic,rsync,netapp,purefa,virtiofs,interactive,bsud -s dummy,lvm,shared,ssh,local,ceph,fs_lvm,fs_lvm_ssh,qcow2,netapp,purefa,bsud\"",
        "+TM_MAD_CONF = [",
        "vmm_execrc: would change",
        "dry run: nothing was changed",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // After a real install, a dry run has nothing to show.
    ok(&s.install(&[]));
    let installed = s.snapshot();
    let out = ok(&s.install(&["--dry-run"]));
    assert!(!out.contains("would"), "{out}");
    assert_eq!(s.snapshot(), installed);
}

#[test]
fn install_refuses_a_malformed_oned_conf_without_changes() {
    let stock =
        String::from_utf8(support::fixture(&format!("opennebula/{}", ONED_CONFS[0]))).unwrap();
    let broken_bracket = stock.replacen(
        "ARGUMENTS = \"-t 15 -d dummy,lvm,shared,fs_lvm,fs_lvm_ssh,qcow2,ssh,ceph,dev,vcenter,iscsi_libvirt\"\n]",
        "ARGUMENTS = \"-t 15 -d dummy,lvm,shared,fs_lvm,fs_lvm_ssh,qcow2,ssh,ceph,dev,vcenter,iscsi_libvirt\"\n",
        1,
    );
    assert_ne!(broken_bracket, stock);
    let no_tm_mad = stock.replacen("TM_MAD = [", "#TM_MAD = [", 1).replacen(
        "    EXECUTABLE = \"one_tm\",\n    ARGUMENTS = \"-t 15 -d dummy,lvm,shared,fs_lvm,fs_lvm_ssh,qcow2,ssh,ceph,dev,vcenter,iscsi_libvirt\"\n]",
        "",
        1,
    );
    assert_ne!(no_tm_mad, stock);
    for (text, want) in [
        (
            broken_bracket.as_str(),
            "oned.conf: line 613: TM_MAD (from line 593): expected ',' or ']', found 'D'",
        ),
        (no_tm_mad.as_str(), "oned.conf: no TM_MAD entry"),
    ] {
        let s = Staging::new(text.as_bytes());
        let before = s.snapshot();
        let out = s.install(&[]);
        assert_eq!(out.code, 1, "{}", out.stdout_text());
        let err = out.stderr_text();
        assert!(err.contains(want), "{err}");
        assert!(err.contains("nothing was changed"), "{err}");
        assert_eq!(s.snapshot(), before, "a refused install changed files");
        assert!(!s.path(REMOTES).exists());
    }
}

#[test]
fn install_puts_one_binary_in_the_remotes_tree_and_the_entries_find_it() {
    let s = Staging::stock(ONED_CONFS[1]);
    // A stale copy of the binary beside the datastore entries is removed.
    std::fs::create_dir_all(s.path(&format!("{REMOTES}/datastore/bsud"))).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_one-bsud"),
        s.path(&format!("{REMOTES}/datastore/bsud/one-bsud")),
    )
    .unwrap();
    ok(&s.install(&[]));
    let binary = std::fs::read(env!("CARGO_BIN_EXE_one-bsud")).unwrap();
    let mut binaries = Vec::new();
    for (path, (bytes, mode)) in s.snapshot() {
        if !path.starts_with(REMOTES) {
            continue;
        }
        assert_eq!(mode & 0o777, 0o755, "{}", path.display());
        if bytes.starts_with(b"\x7fELF") {
            assert_eq!(bytes, binary, "{}", path.display());
            binaries.push(path);
        } else {
            assert!(bytes.starts_with(b"#!/bin/sh\n"), "{}", path.display());
        }
    }
    assert_eq!(
        binaries,
        [PathBuf::from(format!("{REMOTES}/tm/bsud/one-bsud"))]
    );
    for (kind, actions) in [
        ("datastore", support::DS_ACTIONS),
        ("tm", support::TM_ACTIONS),
    ] {
        for a in actions {
            assert!(
                s.path(&format!("{REMOTES}/{kind}/bsud/{a}")).is_file(),
                "{kind}/{a}"
            );
        }
    }
    // The entries reach the binary: a datastore action runs it (and refuses a bad message).
    let out = Command::new(s.path(&format!("{REMOTES}/datastore/bsud/stat")))
        .args(["!!", "7"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("BSUD_CONFIG", s.path("etc/one/bsud.toml"))
        .output()
        .unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned()
        ),
        (
            Some(2),
            "stat: driver message is not valid base64: '!' at offset 0\n".to_string()
        )
    );
}

#[test]
fn install_sudoers_passes_visudo() {
    let s = Staging::stock(ONED_CONFS[0]);
    ok(&s.install(&[]));
    let path = s.path("etc/sudoers.d/one-bsud");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o440);
    let visudo = ["/usr/sbin/visudo", "/sbin/visudo"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("visudo is needed (package sudo; scripts/test installs it)");
    let out = Command::new(visudo).arg("-cf").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    for p in bsud::lvm::command::PRIVILEGED_PROGRAMS {
        let found = bsud::ops::install::find_program(p)
            .unwrap_or_else(|| panic!("{p} is not installed on this machine"));
        assert!(text.contains(&found.display().to_string()), "{p}: {text}");
    }
}

#[test]
fn install_node_installs_the_agent_and_the_sudoers_file_once() {
    let s = Staging::stock(ONED_CONFS[0]);
    let out = ok(&s.install(&["--node", "--agent-path", "/opt/one-bsud/one-bsud"]));
    assert!(out.contains("installed "), "{out}");
    assert_eq!(
        std::fs::read(s.path("opt/one-bsud/one-bsud")).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_one-bsud")).unwrap()
    );
    assert!(s.path("etc/sudoers.d/one-bsud").is_file());
    // A node install leaves the frontend's files alone.
    assert!(!s.path(REMOTES).exists());
    assert_eq!(s.backups("etc/one", "oned.conf.bsud-").len(), 0);
    let snap = s.snapshot();
    let again = ok(&s.install(&["--node", "--agent-path", "/opt/one-bsud/one-bsud"]));
    assert!(
        again.contains("host already prepared; nothing changed"),
        "{again}"
    );
    assert_eq!(s.snapshot(), snap);
}

fn testbed() -> Testbed {
    let mut o = TestbedOpts::new(
        env!("CARGO_BIN_EXE_bsud-sim"),
        env!("CARGO_BIN_EXE_one-bsud"),
    );
    o.hosts = vec!["kvm1".into()];
    o.serve_args = ["--create-delay-ms", "20", "--attach-delay-ms", "20"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    Testbed::start(o).expect("testbed starts")
}

/// `words` run on `host` through the testbed's ssh transport; (exit code, stdout, stderr).
fn on_host(tb: &Testbed, host: &str, words: &[&str]) -> (i32, String, String) {
    let cmd = SshCommand(tb.ssh_command()).remote(host, words).unwrap();
    let out = exec::output(&cmd).unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout_str(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn frontend(tb: &Testbed, args: &[&str]) -> String {
    let out = exec::output(&tb.one_bsud().args(args)).unwrap();
    assert!(
        out.status.success(),
        "one-bsud {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout_str()
}

#[test]
fn install_probe_reports_drive_capacity_on_a_testbed_host() {
    let tb = testbed();
    let s = Staging::stock(ONED_CONFS[1]);
    ok(&s.install(&[]));
    let probe = s.path(&format!(
        "{REMOTES}/im/kvm-probes.d/host/system/bsud-capacity"
    ));
    let probe = probe.to_str().unwrap();
    let vm_probe = s.path(&format!(
        "{REMOTES}/im/kvm-probes.d/vm/monitor/bsud-vm-disks"
    ));

    // No drive yet: nothing to report, and still success.
    assert_eq!(on_host(&tb, "kvm1", &[probe]).0, 0);
    assert_eq!(on_host(&tb, "kvm1", &[probe]).1, "");

    tb.put_datastore(
        &DatastoreSpec::system(100)
            .attr("BSUD_MAX_SIZE_GIB", "50")
            .attr("BSUD_MIN_VOLUME_GIB", "1")
            .attr("BSUD_HEADROOM_GIB", "0"),
    )
    .unwrap();
    frontend(
        &tb,
        &[
            "drive", "grow", "--host", "kvm1", "--ds", "100", "--gib", "1",
        ],
    );
    let agent = env!("CARGO_BIN_EXE_one-bsud");
    for (lv, bytes) in [("lv-one-1-0", "536870912"), ("lv-one-1-1", "268435456")] {
        let (code, _, err) = on_host(
            &tb,
            "kvm1",
            &[
                agent,
                "host",
                "lv-create",
                "--vg=vg-one-100",
                &format!("--lv={lv}"),
                &format!("--size-bytes={bytes}"),
                "--tag=one.vm=1",
            ],
        );
        assert_eq!(code, 0, "{err}");
    }
    // The growth limit is on the VG: TOTAL is 50 GiB, USED the two LVs (768 MiB).
    let (code, out, err) = on_host(&tb, "kvm1", &[probe]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "DS = [ ID = 100, TOTAL_MB = 51200, FREE_MB = 50432, USED_MB = 768 ]\n"
    );

    // Without the tag (a drive made before it existed) TOTAL falls back to the VG size…
    let (code, _, err) = on_host(
        &tb,
        "kvm1",
        &[
            "vgchange",
            "--deltag",
            "one.bsud.max_size_gib=50",
            "vg-one-100",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (_, size, _) = on_host(
        &tb,
        "kvm1",
        &[
            "vgs",
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "vg_size",
            "vg-one-100",
        ],
    );
    let vg_mb = size.trim().parse::<u64>().unwrap() >> 20;
    assert_eq!(
        on_host(&tb, "kvm1", &[probe]).1,
        format!(
            "DS = [ ID = 100, TOTAL_MB = {vg_mb}, FREE_MB = {}, USED_MB = 768 ]\n",
            vg_mb - 768
        )
    );
    // …and the next operation on the drive records it again.
    frontend(
        &tb,
        &["drive", "reconcile", "--host", "kvm1", "--ds", "100"],
    );
    assert_eq!(
        on_host(&tb, "kvm1", &[probe]).1,
        "DS = [ ID = 100, TOTAL_MB = 51200, FREE_MB = 50432, USED_MB = 768 ]\n"
    );

    // The VM probe skips drives whose datastore directory does not exist here, and never fails.
    let (code, out, err) = on_host(&tb, "kvm1", &[vm_probe.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
}
