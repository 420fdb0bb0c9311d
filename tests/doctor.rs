//! `one-bsud doctor` on the testbed: all OK on a healthy site, and a FAIL naming the broken
//! piece (credentials, ssh, agent, configuration) otherwise. Tests named `doctor_*` (issue 7).

mod support;

use std::path::{Path, PathBuf};

use bsud::exec;
use bsud::ops::doctor::{Report, Status};
use bsud::sim::one::DatastoreSpec;
use bsud::sim::testbed::{Testbed, TestbedOpts};

fn testbed(hosts: &[&str]) -> Testbed {
    let mut o = TestbedOpts::new(
        env!("CARGO_BIN_EXE_bsud-sim"),
        env!("CARGO_BIN_EXE_one-bsud"),
    );
    o.hosts = hosts.iter().map(|h| h.to_string()).collect();
    o.serve_args = ["--create-delay-ms", "20", "--attach-delay-ms", "20"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    Testbed::start(o).expect("testbed starts")
}

struct Doctor {
    code: i32,
    text: String,
}

impl Doctor {
    /// The lines of checks with this status.
    fn lines(&self, status: &str) -> Vec<&str> {
        self.text
            .lines()
            .filter(|l| l.starts_with(&format!("{status} ")))
            .collect()
    }

    /// The run failed (exit 1) on exactly one check, which starts with `start` and whose
    /// remedy contains `remedy`.
    #[track_caller]
    fn fails_once(&self, start: &str, remedy: &str) {
        assert_eq!(self.code, 1, "{}", self.text);
        let fails = self.lines("FAIL");
        assert_eq!(fails.len(), 1, "{}", self.text);
        assert!(fails[0].starts_with(start), "{}", self.text);
        assert!(fails[0].contains(&format!("→ {remedy}")), "{}", fails[0]);
    }
}

/// `one-bsud doctor <args>` as the testbed's frontend, with `env` overriding its variables.
fn doctor(tb: &Testbed, args: &[&str], env: &[(&str, &str)]) -> Doctor {
    let mut cmd = tb.one_bsud().arg("doctor").args(args);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let out = exec::output(&cmd).unwrap();
    Doctor {
        code: out.status.code().unwrap_or(-1),
        text: out.stdout_str(),
    }
}

/// A copy of the stock oned.conf with bsud registered by `one-bsud install conf`.
fn registered_oned_conf(dir: &Path) -> PathBuf {
    let p = dir.join("oned.conf");
    std::fs::write(
        &p,
        support::fixture("opennebula/oned.conf-master-f847cf2e.conf"),
    )
    .unwrap();
    let out = exec::output(
        &exec::Cmd::new(env!("CARGO_BIN_EXE_one-bsud"))
            .args(["install", "conf", "--oned-conf"])
            .arg(&p),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p
}

/// The testbed's configuration with `top` prepended (top-level keys) and its lines starting
/// with `drop` removed, written beside it; its path.
fn config_with(tb: &Testbed, name: &str, top: &str, drop: &str) -> String {
    let text = std::fs::read_to_string(tb.config_path()).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| drop.is_empty() || !l.starts_with(drop))
        .collect();
    let path = tb.dir().join(name);
    std::fs::write(&path, format!("{top}\n{}\n", kept.join("\n"))).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn doctor_all_ok_on_a_healthy_testbed() {
    let tb = testbed(&["kvm1", "kvm2"]);
    tb.put_datastore(
        &DatastoreSpec::system(100)
            .attr("BSUD_MIN_VOLUME_GIB", "1")
            .attr("BSUD_MAX_SIZE_GIB", "64"),
    )
    .unwrap();
    let out = exec::output(&tb.one_bsud().args([
        "drive", "grow", "--host", "kvm1", "--ds", "100", "--gib", "1",
    ]))
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf_dir = tempfile::tempdir().unwrap();
    let oned_conf = registered_oned_conf(conf_dir.path());
    let args = [
        "--host",
        "kvm1",
        "--host",
        "kvm2",
        "--oned-conf",
        oned_conf.to_str().unwrap(),
    ];
    let d = doctor(&tb, &args, &[]);
    assert_eq!(d.code, 0, "{}", d.text);
    let not_ok: Vec<&str> = d
        .text
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("OK ") && !l.contains(" checks: "))
        .collect();
    assert!(not_ok.is_empty(), "{}", d.text);
    for want in [
        "OK    config: ",
        "OK    oned.conf: ",
        "OK    credentials: access key AKTB…, secret key set, region eu-west-2",
        "OK    cloud API: ReadSubregions accepted the signature",
        "OK    host kvm1: ssh: commands run; the agent ",
        "OK    host kvm1: agent: version ",
        "OK    host kvm1: metadata: VM i-",
        "OK    host kvm1: LVM: LVM version:",
        "OK    host kvm1: sudo: the agent runs as root",
        "OK    host kvm1: drive vg-one-100: ",
        "growth limit 64 GiB",
        "probe: DS = [ ID = 100, TOTAL_MB = 65536, FREE_MB = 65536, USED_MB = 0 ]",
        "OK    host kvm1: device slots: 38 of 40 device slots free",
        "OK    host kvm2: drives: no drive on this host yet",
        "OK    host kvm2: device slots: 39 of 40 device slots free",
    ] {
        assert!(d.text.contains(want), "missing {want:?} in:\n{}", d.text);
    }
    assert!(!d.text.contains("SKTB"), "the secret key was printed");

    let j = doctor(&tb, &[&args[..], &["--json"]].concat(), &[]);
    assert_eq!(j.code, 0);
    let report: Report = serde_json::from_str(&j.text).unwrap();
    assert!(report.ok);
    assert!(report.checks.iter().all(|c| c.status == Status::Ok));
    assert_eq!(report.checks.len(), d.text.lines().count() - 2);
}

#[test]
fn doctor_names_the_credentials_when_the_secret_key_is_wrong() {
    let tb = testbed(&["kvm1"]);
    let d = doctor(
        &tb,
        &["--host", "kvm1"],
        &[("OSC_SECRET_KEY", "not-the-secret")],
    );
    d.fails_once(
        "FAIL  cloud API: the API rejected the credentials: ",
        "check the access key and secret key",
    );
    assert!(!d.text.contains("not-the-secret"));
    // The hosts are still checked; what needs the cloud is skipped, not failed.
    assert!(d.text.contains("OK    host kvm1: metadata: "), "{}", d.text);
    assert!(
        d.text.contains("SKIP  host kvm1: device slots: "),
        "{}",
        d.text
    );

    let d = doctor(
        &tb,
        &["--host", "kvm1"],
        &[
            ("OSC_ACCESS_KEY", ""),
            ("OSC_CONFIG_FILE", "/nonexistent.json"),
        ],
    );
    assert_eq!(d.code, 1);
    assert!(
        d.text
            .contains("FAIL  credentials: no Outscale access key: set OSC_ACCESS_KEY"),
        "{}",
        d.text
    );
}

#[test]
fn doctor_names_ssh_and_the_agent_when_a_host_cannot_be_used() {
    let tb = testbed(&["kvm1"]);
    // A host the ssh transport does not know.
    let d = doctor(&tb, &["--host", "ghost"], &[]);
    d.fails_once(
        "FAIL  host ghost: ssh: cannot run a command on ghost over ssh",
        "set up passwordless ssh",
    );

    // Reachable, but the agent is not where the configuration says.
    let cfg = config_with(
        &tb,
        "no-agent.toml",
        "host_agent = \"/nonexistent/one-bsud\"",
        "host_agent =",
    );
    let d = doctor(&tb, &["--host", "kvm1"], &[("BSUD_CONFIG", &cfg)]);
    assert_eq!(d.code, 1, "{}", d.text);
    assert!(
        d.text.contains("OK    host kvm1: ssh: commands run\n"),
        "{}",
        d.text
    );
    let fails = d.lines("FAIL");
    assert_eq!(
        fails,
        ["FAIL  host kvm1: agent: /nonexistent/one-bsud is missing or not executable → run `onehost sync --force` on the frontend (or install.sh --node on the host), or fix host_agent in the configuration"],
        "{}",
        d.text
    );
}

/// The agent of a host where the sudoers file is missing: it runs as an ordinary user, and
/// self-check says which sudo rights it lacks instead of failing.
#[test]
fn doctor_self_check_names_the_sudo_rights_an_unprivileged_agent_lacks() {
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_one-bsud"))
        .args(["host", "self-check"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sc: bsud::ops::selfcheck::SelfCheck = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!sc.root);
    assert!(sc.lvm_version.is_none());
    assert!(
        sc.lvm_error.as_deref().unwrap().contains("sudo -n"),
        "{sc:?}"
    );
    let programs: Vec<&str> = sc.sudo.iter().map(|s| s.program.as_str()).collect();
    assert_eq!(programs, bsud::lvm::command::PRIVILEGED_PROGRAMS);
    for s in &sc.sudo {
        assert!(!s.allowed, "{s:?}");
        assert!(s.detail.contains("password is required"), "{s:?}");
    }
}

#[test]
fn doctor_reports_a_broken_configuration_and_lists_hosts_with_onehost() {
    let tb = testbed(&["kvm1"]);
    let bad = tb.dir().join("bad.toml");
    std::fs::write(&bad, "ssh_comand = [\"ssh\"]\n").unwrap();
    let d = doctor(&tb, &[], &[("BSUD_CONFIG", bad.to_str().unwrap())]);
    assert_eq!(d.code, 1);
    assert!(
        d.text.contains("FAIL  config: configuration "),
        "{}",
        d.text
    );
    assert!(d.text.contains("ssh_comand"), "{}", d.text);
    assert!(d.text.contains("SKIP  everything else"), "{}", d.text);

    // Hosts come from `onehost list -x`; an OFFLINE host is skipped, not failed.
    let pool = tb.dir().join("hosts.xml");
    std::fs::write(
        &pool,
        "<HOST_POOL><HOST><ID>0</ID><NAME>kvm1</NAME><STATE>2</STATE></HOST><HOST><ID>1</ID><NAME>kvm9</NAME><STATE>8</STATE></HOST></HOST_POOL>",
    )
    .unwrap();
    let cfg = config_with(
        &tb,
        "onehost.toml",
        &format!("onehost_command = [\"cat\", {:?}]", pool.to_string_lossy()),
        "",
    );
    let d = doctor(&tb, &[], &[("BSUD_CONFIG", &cfg)]);
    assert_eq!(d.code, 0, "{}", d.text);
    assert!(
        d.text.contains("SKIP  host kvm9: OFFLINE in OpenNebula"),
        "{}",
        d.text
    );
    assert!(d.text.contains("OK    host kvm1: metadata: "), "{}", d.text);
}
