//! `one-bsud doctor`: checks a site end to end and says, in words, what is wrong and what to do.
//!
//! One line per check: `OK`, `WARN`, `FAIL` (or `SKIP` when a check could not apply), the
//! check's name, what was found and, when something is wrong, the remedy after `→`. `--json`
//! prints the same checks as one JSON document. The exit status is 1 when any check failed.
//!
//! Invariants:
//! - Read-only: nothing on the frontend, the hosts or the cloud is changed (the host part is
//!   the agent's `self-check`, which changes nothing, and ReadSubregions/ReadVms calls).
//! - Secrets are never printed: the access key is shortened, the secret key only said present.
//! - Every remote step has the `--timeout-secs` deadline; hosts are checked in parallel, and a
//!   failing step skips only the steps of that host that depend on it.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::register;
use super::selfcheck::{SelfCheck, SelfCheckReq};
use crate::cloud::outscale::OutscaleCloud;
use crate::cloud::Cloud;
use crate::config::{Config, Env, MAX_VOLUMES_PER_VM};
use crate::error::{exit_code, one_line};
use crate::exec::{self, Cmd};
use crate::host::client::HostClient;

/// `doctor` arguments.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// A host to check (repeat for several); default: every host `onehost list -x` lists.
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Print the checks as JSON.
    #[arg(long)]
    pub json: bool,
    /// The oned.conf whose registration of bsud is checked (skipped when absent).
    #[arg(long, value_name = "PATH", default_value = "/etc/one/oned.conf")]
    pub oned_conf: PathBuf,
    /// The hosts' datastore directory (oned.conf DATASTORE_LOCATION).
    #[arg(long, value_name = "PATH", default_value = super::probe::DEFAULT_DATASTORE_LOCATION)]
    pub datastore_location: String,
    /// Longest time each remote step (ssh, agent, cloud call) may take.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_secs: u64,
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but a person should look.
    Warn,
    /// Broken: the driver will fail.
    Fail,
    /// Not checked (a prerequisite is missing or the check does not apply).
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Verdict.
    pub status: Status,
    /// What was checked (`config`, `host kvm1: sudo`).
    pub check: String,
    /// What was found.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

/// Every check, in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// The frontend's version.
    pub version: String,
    /// The checks.
    pub checks: Vec<Check>,
    /// No check failed.
    pub ok: bool,
}

impl Report {
    fn push(&mut self, status: Status, check: impl Into<String>, message: impl Into<String>) {
        self.checks.push(Check {
            status,
            check: check.into(),
            message: message.into(),
            remedy: None,
        });
    }

    fn push_fix(
        &mut self,
        status: Status,
        check: impl Into<String>,
        message: impl Into<String>,
        remedy: impl Into<String>,
    ) {
        self.checks.push(Check {
            status,
            check: check.into(),
            message: message.into(),
            remedy: Some(remedy.into()),
        });
    }

    /// How many checks have this status.
    pub fn count(&self, s: Status) -> usize {
        self.checks.iter().filter(|c| c.status == s).count()
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut out = format!("one-bsud doctor {}\n", self.version);
        for c in &self.checks {
            out.push_str(&format!(
                "{:<5} {}: {}",
                c.status.label(),
                c.check,
                c.message
            ));
            if let Some(r) = &c.remedy {
                out.push_str(&format!(" → {r}"));
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "{} checks: {} OK, {} warnings, {} failed, {} skipped\n",
            self.checks.len(),
            self.count(Status::Ok),
            self.count(Status::Warn),
            self.count(Status::Fail),
            self.count(Status::Skip)
        ));
        out
    }
}

/// An access key shown without giving it away.
fn shorten(key: &str) -> String {
    let head: String = key.chars().take(4).collect();
    format!("{head}…")
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Runs every check.
pub fn run(args: &DoctorArgs, env: &Env) -> Report {
    let mut r = Report {
        version: crate::VERSION.to_string(),
        ..Report::default()
    };
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut config = match Config::load(env) {
        Ok(c) => {
            let source = match &c.path {
                Some(p) => format!("{} read", p.display()),
                None => format!(
                    "no {} (BSUD_CONFIG unset): built-in defaults",
                    crate::config::DEFAULT_CONFIG_PATH
                ),
            };
            r.push(
                Status::Ok,
                "config",
                format!(
                    "{source}; frontend host {:?}, host agent {}",
                    c.frontend_host, c.host_agent
                ),
            );
            c
        }
        Err(e) => {
            r.push_fix(
                Status::Fail,
                "config",
                one_line(&e),
                "fix the file: every key is optional, unknown keys are refused (README, Configuration)",
            );
            r.push(
                Status::Skip,
                "everything else",
                "needs a readable configuration",
            );
            r.ok = false;
            return r;
        }
    };
    // Doctor must answer promptly: its remote steps get its own deadline, not an action's.
    config.timeouts.command = timeout;
    config.timeouts.lock = Duration::ZERO;

    check_oned_conf(args, &mut r);
    let cloud = check_cloud(&config, &mut r);
    let hosts = hosts_to_check(args, &config, timeout, &mut r).unwrap_or_default();
    let client = HostClient::new(&config);
    let per_host: Vec<Vec<Check>> = std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|h| {
                let (client, config, cloud) = (&client, &config, cloud.as_ref());
                s.spawn(move || check_host(h, client, config, cloud, args, timeout))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![Check {
                        status: Status::Fail,
                        check: "doctor".into(),
                        message: "a host check panicked".into(),
                        remedy: None,
                    }]
                })
            })
            .collect()
    });
    for checks in per_host {
        r.checks.extend(checks);
    }
    r.ok = r.count(Status::Fail) == 0;
    r
}

fn check_oned_conf(args: &DoctorArgs, r: &mut Report) {
    let name = "oned.conf";
    let text = match std::fs::read_to_string(&args.oned_conf) {
        Ok(t) => t,
        Err(e) => {
            r.push(
                Status::Skip,
                name,
                format!(
                    "{} not read ({e}); give --oned-conf to check the registration",
                    args.oned_conf.display()
                ),
            );
            return;
        }
    };
    match register::plan_oned_conf(&text) {
        Ok(plan) if plan.edits.is_empty() => {
            r.push(
                Status::Ok,
                name,
                format!("{} registers bsud", args.oned_conf.display()),
            );
            for n in plan.notes {
                r.push(Status::Warn, name, n);
            }
        }
        Ok(plan) => r.push_fix(
            Status::Fail,
            name,
            format!(
                "{} does not fully register bsud: missing {}",
                args.oned_conf.display(),
                plan.edits
                    .iter()
                    .map(|e| e.what.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            "run install.sh on the frontend, then restart oned",
        ),
        Err(e) => r.push_fix(
            Status::Warn,
            name,
            format!("{}: {}", args.oned_conf.display(), one_line(&e)),
            "check the file by hand",
        ),
    }
}

/// Credentials and the API; the client when both work.
fn check_cloud(config: &Config, r: &mut Report) -> Option<OutscaleCloud> {
    let mut creds = match config.cloud.resolve() {
        Ok(c) => c,
        Err(e) => {
            r.push_fix(
                Status::Fail,
                "credentials",
                one_line(&e),
                "give oneadmin an Outscale access key and secret key (environment or ~/.osc/config.json)",
            );
            r.push(Status::Skip, "cloud API", "no credentials");
            return None;
        }
    };
    r.push(
        Status::Ok,
        "credentials",
        format!(
            "access key {}, secret key set, region {}, endpoint {}",
            shorten(&creds.access_key),
            creds.region,
            creds.endpoint
        ),
    );
    // One answer is enough to judge: no SDK retries behind doctor's back.
    creds.max_retries = 0;
    let cloud = match OutscaleCloud::new(&creds) {
        Ok(c) => c,
        Err(e) => {
            r.push(Status::Fail, "cloud API", one_line(&e));
            return None;
        }
    };
    match cloud.subregions() {
        Ok(subregions) => {
            r.push(
                Status::Ok,
                "cloud API",
                format!(
                    "ReadSubregions accepted the signature at {}: {}",
                    creds.endpoint,
                    subregions.join(", ")
                ),
            );
            Some(cloud)
        }
        Err(e) if exit_code(&e) == crate::error::ErrorKind::Config.exit_code() => {
            r.push_fix(
                Status::Fail,
                "cloud API",
                format!("the API rejected the credentials: {}", one_line(&e)),
                "check the access key and secret key (OSC_ACCESS_KEY/OSC_SECRET_KEY or the profile) and the region they belong to",
            );
            None
        }
        Err(e) => {
            r.push_fix(
                Status::Fail,
                "cloud API",
                format!("cannot use {}: {}", creds.endpoint, one_line(&e)),
                "check the endpoint (cloud.endpoint / OSC_ENDPOINT_API), DNS and outbound HTTPS",
            );
            None
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct HostPool {
    #[serde(rename = "HOST", default)]
    hosts: Vec<HostEntry>,
}

#[derive(Debug, Deserialize)]
struct HostEntry {
    #[serde(rename = "NAME")]
    name: String,
    #[serde(rename = "STATE", default)]
    state: Option<i64>,
}

/// oned's host state OFFLINE: monitoring and deployment are off, ssh may fail legitimately.
const HOST_OFFLINE: i64 = 8;

/// The hosts named on the command line, or those `onehost list -x` lists.
pub fn parse_host_pool(xml: &str) -> anyhow::Result<Vec<(String, bool)>> {
    let pool: HostPool = quick_xml::de::from_str(xml)
        .map_err(|e| anyhow::anyhow!("not a HOST_POOL document: {e}"))?;
    Ok(pool
        .hosts
        .into_iter()
        .map(|h| (h.name, h.state == Some(HOST_OFFLINE)))
        .collect())
}

fn hosts_to_check(
    args: &DoctorArgs,
    config: &Config,
    timeout: Duration,
    r: &mut Report,
) -> Option<Vec<String>> {
    if !args.hosts.is_empty() {
        return Some(args.hosts.clone());
    }
    let shown = config.onehost_command.join(" ");
    let listed = config
        .onehost_command
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("onehost_command is empty"))
        .and_then(|(prog, rest)| {
            Ok(exec::run(&Cmd::new(prog).args(rest).timeout(timeout))?.stdout_str())
        })
        .and_then(|xml| parse_host_pool(&xml));
    match listed {
        Ok(hosts) if hosts.is_empty() => {
            r.push(Status::Warn, "hosts", format!("`{shown}` lists no host"));
            None
        }
        Ok(hosts) => {
            let mut names = Vec::new();
            for (name, offline) in hosts {
                if offline {
                    r.push(
                        Status::Skip,
                        format!("host {name}"),
                        "OFFLINE in OpenNebula",
                    );
                } else {
                    names.push(name);
                }
            }
            Some(names)
        }
        Err(e) => {
            r.push_fix(
                Status::Warn,
                "hosts",
                format!("cannot list hosts with `{shown}`: {}", one_line(&e)),
                "run doctor as oneadmin on the frontend, or name hosts with --host",
            );
            None
        }
    }
}

fn check_host(
    host: &str,
    client: &HostClient,
    config: &Config,
    cloud: Option<&OutscaleCloud>,
    args: &DoctorArgs,
    timeout: Duration,
) -> Vec<Check> {
    let mut r = Report::default();
    let name = |what: &str| format!("host {host}: {what}");
    if !reach_agent(host, config, timeout, &mut r) {
        return r.checks;
    }
    match client.version(host) {
        Ok(v) if v.version == crate::VERSION => {
            r.push(
                Status::Ok,
                name("agent"),
                format!("version {} answers, as on the frontend", v.version),
            );
        }
        Ok(v) => {
            r.push_fix(
                Status::Fail,
                name("agent"),
                format!(
                    "the agent is version {}, the frontend {}",
                    v.version,
                    crate::VERSION
                ),
                "run `onehost sync --force` on the frontend (or install.sh --node on the host)",
            );
            return r.checks;
        }
        Err(e) => {
            r.push_fix(
                Status::Fail,
                name("agent"),
                format!(
                    "`{} host version` failed: {}",
                    config.host_agent,
                    one_line(&e)
                ),
                "run `onehost sync --force` on the frontend (or install.sh --node on the host)",
            );
            return r.checks;
        }
    }
    let identity = match client.identity(host) {
        Ok(id) => {
            r.push(
                Status::Ok,
                name("metadata"),
                format!("VM {} in {}", id.vm_id, id.subregion),
            );
            Some(id)
        }
        Err(e) => {
            r.push_fix(
                Status::Fail,
                name("metadata"),
                one_line(&e),
                "the host must be an Outscale VM that reaches its metadata server (169.254.169.254)",
            );
            None
        }
    };
    match client.call(
        host,
        &SelfCheckReq {
            datastore_location: args.datastore_location.clone(),
        },
    ) {
        Ok(sc) => self_check_lines(host, &sc, &mut r),
        Err(e) => r.push(Status::Fail, name("self-check"), one_line(&e)),
    }
    match (cloud, identity) {
        (Some(cloud), Some(id)) => match cloud.vm(&id.vm_id) {
            Ok(vm) => {
                let used = vm.devices.len() as u32;
                let free = MAX_VOLUMES_PER_VM.saturating_sub(used);
                let msg = format!(
                    "{free} of {MAX_VOLUMES_PER_VM} device slots free on VM {} ({used} mapped)",
                    vm.id
                );
                let remedy = "detach volumes that are not needed, or move drives to another host";
                match free {
                    0 => r.push_fix(
                        Status::Fail,
                        name("device slots"),
                        format!("{msg}: no drive of this host can grow"),
                        remedy,
                    ),
                    1..=3 => r.push_fix(Status::Warn, name("device slots"), msg, remedy),
                    _ => r.push(Status::Ok, name("device slots"), msg),
                }
            }
            Err(e) => r.push(Status::Fail, name("device slots"), one_line(&e)),
        },
        _ => r.push(
            Status::Skip,
            name("device slots"),
            "needs the cloud API and the host's identity",
        ),
    }
    r.checks
}

/// ssh to the host and the agent's presence; false when nothing else can be checked.
fn reach_agent(host: &str, config: &Config, timeout: Duration, r: &mut Report) -> bool {
    let check = format!("host {host}: ssh");
    if host == config.frontend_host {
        r.push(
            Status::Ok,
            check,
            "this is the frontend: the agent runs locally, without ssh",
        );
        return true;
    }
    let cmd = match config
        .ssh
        .remote(host, &["test", "-x", config.host_agent.as_str()])
    {
        Ok(c) => c.timeout(timeout),
        Err(e) => {
            r.push(Status::Fail, check, one_line(&e));
            return false;
        }
    };
    match exec::output(&cmd) {
        Ok(o) if o.status.success() => {
            r.push(
                Status::Ok,
                check,
                format!("commands run; the agent {} is there", config.host_agent),
            );
            true
        }
        Ok(o) if o.status.code() == Some(1) => {
            r.push(Status::Ok, check, "commands run");
            r.push_fix(
                Status::Fail,
                format!("host {host}: agent"),
                format!("{} is missing or not executable", config.host_agent),
                "run `onehost sync --force` on the frontend (or install.sh --node on the host), or fix host_agent in the configuration",
            );
            false
        }
        Ok(o) => {
            r.push_fix(
                Status::Fail,
                check,
                format!(
                    "cannot run a command on {host} over ssh ({}): {}",
                    o.status,
                    exec::stderr_tail(&o.stderr)
                ),
                "set up passwordless ssh for this user to the host (BatchMode) and accept its host key",
            );
            false
        }
        Err(e) => {
            r.push_fix(
                Status::Fail,
                check,
                e.to_string(),
                "check ssh_command in the configuration",
            );
            false
        }
    }
}

fn self_check_lines(host: &str, sc: &SelfCheck, r: &mut Report) {
    let name = |what: &str| format!("host {host}: {what}");
    match (&sc.lvm_version, &sc.lvm_error) {
        (Some(v), _) => r.push(Status::Ok, name("LVM"), v.clone()),
        (None, e) => r.push_fix(
            Status::Fail,
            name("LVM"),
            format!(
                "`vgs --version` failed: {}",
                e.as_deref().unwrap_or("no answer")
            ),
            "install lvm2 (install.sh --node --install-packages) and the sudoers file",
        ),
    }
    if sc.root {
        r.push(
            Status::Ok,
            name("sudo"),
            "the agent runs as root: no sudo needed",
        );
    } else {
        let refused: Vec<&str> = sc
            .sudo
            .iter()
            .filter(|s| !s.allowed)
            .map(|s| s.program.as_str())
            .collect();
        if refused.is_empty() {
            r.push(
                Status::Ok,
                name("sudo"),
                format!(
                    "sudo -n allows the {} programs the agent needs",
                    sc.sudo.len()
                ),
            );
        } else {
            let why = sc
                .sudo
                .iter()
                .find(|s| !s.allowed)
                .map(|s| s.detail.clone())
                .unwrap_or_default();
            r.push_fix(
                Status::Fail,
                name("sudo"),
                format!("sudo -n refuses {} ({why})", refused.join(", ")),
                "install /etc/sudoers.d/one-bsud on the host (install.sh --node)",
            );
        }
        if let Some(d) = &sc.lvm_system_dir {
            r.push_fix(
                Status::Warn,
                name("sudo"),
                format!("LVM_SYSTEM_DIR={d} is set for the agent, and sudo will not pass it"),
                "unset LVM_SYSTEM_DIR in oneadmin's environment on the host",
            );
        }
    }
    if let Some(e) = &sc.drives_error {
        r.push(Status::Fail, name("drives"), e.clone());
        return;
    }
    if sc.drives.is_empty() {
        r.push(Status::Ok, name("drives"), "no drive on this host yet");
    }
    for d in &sc.drives {
        let check = name(&format!("drive {}", d.vg));
        let summary = format!(
            "{} in {} BSU volume(s), {} free, {} LV(s); probe: {}",
            gib(d.size),
            d.pv_count,
            gib(d.free),
            d.lv_count,
            d.probe_line
        );
        if d.missing_pv_count > 0 {
            r.push_fix(
                Status::Fail,
                check,
                format!("{} PV(s) missing: {summary}", d.missing_pv_count),
                "a BSU volume of the drive is detached or gone: `one-bsud drive show`, then `one-bsud drive reconcile`",
            );
            continue;
        }
        if d.monitor_file {
            r.push_fix(
                Status::Warn,
                check.clone(),
                format!(
                    "a .monitor file in the datastore directory makes the stock probe report df for datastore {}",
                    d.datastore
                ),
                "remove <datastore location>/<id>/.monitor on this host",
            );
        }
        match d.limit_gib {
            Some(g) => r.push(
                Status::Ok,
                check,
                format!("{summary}; growth limit {g} GiB"),
            ),
            None => r.push_fix(
                Status::Warn,
                check,
                format!("{summary}; no growth limit recorded, so the probe reports the VG size"),
                "any allocation on the drive records it (or `one-bsud drive reconcile`)",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_pools_as_onehost_prints_them() {
        let xml = "<HOST_POOL><HOST><ID>0</ID><NAME>kvm1</NAME><STATE>2</STATE><IM_MAD><![CDATA[kvm]]></IM_MAD><HOST_SHARE><DATASTORES><DS><ID>0</ID></DS></DATASTORES></HOST_SHARE><TEMPLATE><NAME>x</NAME></TEMPLATE></HOST><HOST><ID>3</ID><NAME>kvm2</NAME><STATE>8</STATE></HOST></HOST_POOL>";
        assert_eq!(
            parse_host_pool(xml).unwrap(),
            [("kvm1".to_string(), false), ("kvm2".to_string(), true)]
        );
        assert!(parse_host_pool("<HOST_POOL/>").unwrap().is_empty());
        assert!(parse_host_pool("not xml").is_err());
    }

    fn self_check(root: bool) -> SelfCheck {
        SelfCheck {
            version: "0.1.0".into(),
            root,
            lvm_system_dir: None,
            lvm_version: None,
            lvm_error: Some(
                "`sudo -n vgs --version` exited with status 1: sudo: a password is required".into(),
            ),
            sudo: ["lvcreate", "vgs"]
                .iter()
                .map(|p| super::super::selfcheck::SudoRight {
                    program: p.to_string(),
                    allowed: *p == "vgs",
                    detail: if *p == "vgs" {
                        "/usr/sbin/vgs".into()
                    } else {
                        "sudo: a password is required".into()
                    },
                })
                .collect(),
            drives: vec![super::super::selfcheck::DriveState {
                vg: "vg-one-5".into(),
                datastore: 5,
                size: 10 << 30,
                free: 4 << 30,
                pv_count: 2,
                lv_count: 3,
                missing_pv_count: 1,
                limit_gib: None,
                monitor_file: true,
                probe_line: "DS = [ ID = 5, TOTAL_MB = 10240, FREE_MB = 4096, USED_MB = 6144 ]"
                    .into(),
            }],
            drives_error: None,
        }
    }

    #[test]
    fn host_self_checks_become_failures_with_remedies() {
        let mut r = Report::default();
        self_check_lines("kvm1", &self_check(false), &mut r);
        let text = r.text();
        for want in [
            "FAIL  host kvm1: LVM: `vgs --version` failed: `sudo -n vgs --version` exited with status 1: sudo: a password is required → install lvm2",
            "FAIL  host kvm1: sudo: sudo -n refuses lvcreate (sudo: a password is required) → install /etc/sudoers.d/one-bsud on the host (install.sh --node)",
            "FAIL  host kvm1: drive vg-one-5: 1 PV(s) missing: 10.0 GiB in 2 BSU volume(s), 4.0 GiB free, 3 LV(s); probe: DS = [ ID = 5, TOTAL_MB = 10240, FREE_MB = 4096, USED_MB = 6144 ] → a BSU volume of the drive is detached or gone",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        let mut healthy = self_check(true);
        healthy.drives[0].missing_pv_count = 0;
        let mut r = Report::default();
        self_check_lines("kvm1", &healthy, &mut r);
        let text = r.text();
        assert!(
            text.contains("OK    host kvm1: sudo: the agent runs as root"),
            "{text}"
        );
        assert!(text.contains("WARN  host kvm1: drive vg-one-5: a .monitor file in the datastore directory makes the stock probe report df for datastore 5"), "{text}");
        assert!(text.contains("WARN  host kvm1: drive vg-one-5: 10.0 GiB in 2 BSU volume(s), 4.0 GiB free, 3 LV(s); probe: DS = [ ID = 5, TOTAL_MB = 10240, FREE_MB = 4096, USED_MB = 6144 ]; no growth limit recorded"), "{text}");
    }

    #[test]
    fn the_text_report_reads_line_by_line() {
        let mut r = Report {
            version: "9.9.9".into(),
            ..Report::default()
        };
        r.push(Status::Ok, "config", "fine");
        r.push_fix(
            Status::Fail,
            "cloud API",
            "the API rejected the credentials",
            "check the keys",
        );
        assert_eq!(
            r.text(),
            "one-bsud doctor 9.9.9\nOK    config: fine\nFAIL  cloud API: the API rejected the credentials → check the keys\n2 checks: 1 OK, 0 warnings, 1 failed, 0 skipped\n"
        );
        assert_eq!(shorten("AKIAXXXXXXXXXXXXXXXX"), "AKIA…");
    }
}
