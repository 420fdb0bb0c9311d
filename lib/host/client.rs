//! The frontend side of the host agent: runs an operation on a host and returns its typed
//! answer.
//!
//! Invariants:
//! - A remote call is `ssh <host> '<quoted words>'` where the words are
//!   `<host_agent> host <op> --flag=value…`, each shell-quoted ([`crate::exec::ssh`]); the host
//!   named as the frontend runs the same binary locally with `BSUD_HOST_ROOT=<frontend_root>`.
//! - The agent's own deadline (`--deadline-secs`) is the configured command time plus the
//!   lock and device waits the operation may do; the ssh call gets [`TRANSPORT_MARGIN`] more,
//!   so the agent gives up first and says why.
//! - The agent's `INFO:`/`WARN:`/`ERROR:` stderr lines are re-logged here with the host name;
//!   a failure is an error naming the host and the operation, carrying the agent's message and
//!   the kind its exit code stands for (so `Refused` stays `Refused` across ssh).

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, Timeouts};
use crate::error::{fail, ErrorKind};
use crate::exec::ssh::SshCommand;
use crate::exec::{self, Cmd, ExecError};
use crate::lvm::{DevicePath, LvName, Tag, VgName};

use super::proto::*;

/// What kind of LV `lv-create` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LvKind {
    /// Extents of its own (stale ones zeroed).
    Thick,
    /// A thin volume of this pool.
    Thin {
        /// The pool LV.
        pool: LvName,
    },
    /// A thin snapshot of this thin volume.
    Snapshot {
        /// The origin LV.
        origin: LvName,
    },
}

/// What the ssh call gets beyond the agent's own deadline.
pub const TRANSPORT_MARGIN: Duration = Duration::from_secs(30);

/// Runs host agent operations for the frontend.
#[derive(Debug, Clone)]
pub struct HostClient {
    ssh: SshCommand,
    host_agent: String,
    frontend_host: String,
    frontend_root: PathBuf,
    timeouts: Timeouts,
    local_exe: Option<PathBuf>,
}

impl HostClient {
    /// A client from the configuration.
    pub fn new(config: &Config) -> HostClient {
        HostClient {
            ssh: config.ssh.clone(),
            host_agent: config.host_agent.clone(),
            frontend_host: config.frontend_host.clone(),
            frontend_root: config.frontend_root.clone(),
            timeouts: config.timeouts,
            local_exe: None,
        }
    }

    /// Uses this binary for operations on the frontend host itself (default: the current
    /// executable, which in tests is not `one-bsud`).
    pub fn with_local_exe(mut self, exe: PathBuf) -> HostClient {
        self.local_exe = Some(exe);
        self
    }

    /// The limits sent with a request.
    fn limits<R: Request>(&self, req: &R) -> Limits {
        let lock = if R::LOCKS {
            self.timeouts.lock
        } else {
            Duration::ZERO
        };
        let work = if R::MOVES_DATA {
            self.timeouts.transfer
        } else {
            self.timeouts.command
        };
        let total = work + lock + req.waits();
        Limits {
            deadline_secs: total.as_secs().max(1),
            lock_timeout_secs: self.timeouts.lock.as_secs(),
        }
    }

    /// The command that runs `req` on `host`.
    pub fn command<R: Request>(&self, host: &str, req: &R) -> anyhow::Result<Cmd> {
        let limits = self.limits(req);
        let mut args = vec!["host".to_string(), R::OP.to_string()];
        args.extend(req.args());
        if R::OP != VersionReq::OP {
            args.extend(limits.args());
        }
        let timeout = Duration::from_secs(limits.deadline_secs) + TRANSPORT_MARGIN;
        let cmd = if host == self.frontend_host {
            let exe = match &self.local_exe {
                Some(e) => e.clone(),
                None => std::env::current_exe()
                    .map_err(|e| anyhow::anyhow!("cannot find this program's path: {e}"))?,
            };
            Cmd::new(exe)
                .args(&args)
                .env("BSUD_HOST_ROOT", &self.frontend_root)
        } else {
            let mut words = vec![self.host_agent.clone()];
            words.extend(args);
            self.ssh.remote(host, &words)?
        };
        Ok(cmd.timeout(timeout))
    }

    /// Runs `req` on `host` and parses its answer.
    pub fn call<R: Request>(&self, host: &str, req: &R) -> anyhow::Result<R::Response> {
        self.run::<R>(host, self.command(host, req)?)
    }

    /// Runs `req` on `host` with `stdin` as its input (a file to write) and parses its answer.
    pub fn call_with_stdin<R: Request>(
        &self,
        host: &str,
        req: &R,
        stdin: Vec<u8>,
    ) -> anyhow::Result<R::Response> {
        self.run::<R>(host, self.command(host, req)?.stdin_bytes(stdin))
    }

    fn run<R: Request>(&self, host: &str, cmd: Cmd) -> anyhow::Result<R::Response> {
        let op = R::OP;
        let out = match exec::output(&cmd) {
            Ok(o) => o,
            Err(ExecError::TimedOut {
                after, stderr_tail, ..
            }) => {
                return Err(fail(
                    ErrorKind::Timeout,
                    format!(
                        "host {host}: {op} did not answer within {}s{}",
                        after.as_secs(),
                        if stderr_tail.is_empty() {
                            String::new()
                        } else {
                            format!(" ({stderr_tail})")
                        }
                    ),
                ))
            }
            Err(e) => return Err(anyhow::anyhow!("host {host}: {op}: {e}")),
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        relay_logs(host, &stderr);
        if !out.status.success() {
            let code = out.status.code();
            let kind = match code {
                Some(2) => ErrorKind::BadInput,
                Some(3) => ErrorKind::Config,
                Some(4) => ErrorKind::NotImplemented,
                Some(5) => ErrorKind::Timeout,
                Some(6) => ErrorKind::Refused,
                _ => ErrorKind::Failed,
            };
            let status = match code {
                Some(c) => format!("exit status {c}"),
                None => "killed by a signal".to_string(),
            };
            let msg = last_message(&stderr).unwrap_or_else(|| format!("no message ({status})"));
            return Err(fail(kind, format!("host {host}: {op} failed: {msg}")));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            anyhow::anyhow!(
                "host {host}: {op} answered something that is not its JSON document ({e}): {:?}",
                String::from_utf8_lossy(&out.stdout)
                    .chars()
                    .take(300)
                    .collect::<String>()
            )
        })
    }

    /// `version`.
    pub fn version(&self, host: &str) -> anyhow::Result<VersionInfo> {
        self.call(host, &VersionReq {})
    }

    /// `identity`.
    pub fn identity(&self, host: &str) -> anyhow::Result<Identity> {
        self.call(host, &IdentityReq { timeout_secs: 10 })
    }

    /// `wait-device`, with the configured device deadline.
    pub fn wait_device(&self, host: &str, device: &BsuDeviceName) -> anyhow::Result<DeviceFound> {
        self.call(
            host,
            &WaitDeviceReq {
                device: device.clone(),
                timeout_secs: self.timeouts.device.as_secs().max(1),
            },
        )
    }

    /// `vg-report`.
    pub fn vg_report(&self, host: &str, vg: &VgName) -> anyhow::Result<VgReport> {
        self.call(host, &VgReportReq { vg: vg.clone() })
    }

    /// `pv-add`.
    pub fn pv_add(
        &self,
        host: &str,
        vg: &VgName,
        device: &DevicePath,
        fresh: bool,
    ) -> anyhow::Result<PvAdded> {
        self.call(
            host,
            &PvAddReq {
                vg: vg.clone(),
                device: device.clone(),
                fresh,
            },
        )
    }

    /// `vg-limit`.
    pub fn vg_limit(
        &self,
        host: &str,
        vg: &VgName,
        max_size_gib: u64,
    ) -> anyhow::Result<VgLimited> {
        self.call(
            host,
            &VgLimitReq {
                vg: vg.clone(),
                max_size_gib,
            },
        )
    }

    /// `pv-remove`.
    pub fn pv_remove(
        &self,
        host: &str,
        vg: &VgName,
        device: &DevicePath,
    ) -> anyhow::Result<PvRemoved> {
        self.call(
            host,
            &PvRemoveReq {
                vg: vg.clone(),
                device: device.clone(),
            },
        )
    }

    /// `lv-create`, with the configured device deadline.
    pub fn lv_create(
        &self,
        host: &str,
        vg: &VgName,
        lv: &LvName,
        size_bytes: u64,
        tags: &[Tag],
    ) -> anyhow::Result<LvCreated> {
        self.lv_create_as(host, vg, lv, size_bytes, tags, LvKind::Thick)
    }

    /// `lv-create` of a thick LV, a thin volume or a thin snapshot.
    pub fn lv_create_as(
        &self,
        host: &str,
        vg: &VgName,
        lv: &LvName,
        size_bytes: u64,
        tags: &[Tag],
        kind: LvKind,
    ) -> anyhow::Result<LvCreated> {
        let (thin_pool, snapshot_of) = match kind {
            LvKind::Thick => (None, None),
            LvKind::Thin { pool } => (Some(pool), None),
            LvKind::Snapshot { origin } => (None, Some(origin)),
        };
        self.call(
            host,
            &LvCreateReq {
                vg: vg.clone(),
                lv: lv.clone(),
                size_bytes,
                tags: tags.to_vec(),
                device_timeout_secs: self.timeouts.device.as_secs().max(1),
                thin_pool,
                snapshot_of,
            },
        )
    }

    /// `pool-ensure`.
    pub fn pool_ensure(&self, host: &str, req: &PoolEnsureReq) -> anyhow::Result<PoolStatus> {
        self.call(host, req)
    }

    /// `lv-extend`, with the configured device deadline.
    pub fn lv_extend(
        &self,
        host: &str,
        vg: &VgName,
        lv: &LvName,
        size_bytes: u64,
    ) -> anyhow::Result<LvExtended> {
        self.call(
            host,
            &LvExtendReq {
                vg: vg.clone(),
                lv: lv.clone(),
                size_bytes,
                device_timeout_secs: self.timeouts.device.as_secs().max(1),
            },
        )
    }

    /// `lv-remove`.
    pub fn lv_remove(
        &self,
        host: &str,
        vg: &VgName,
        lv: &LvName,
        require_tags: &[Tag],
    ) -> anyhow::Result<LvRemoved> {
        self.call(
            host,
            &LvRemoveReq {
                vg: vg.clone(),
                lv: lv.clone(),
                require_tags: require_tags.to_vec(),
            },
        )
    }

    /// `lv-tag`.
    pub fn lv_tag(
        &self,
        host: &str,
        vg: &VgName,
        lv: &LvName,
        add: &[Tag],
        del: &[Tag],
    ) -> anyhow::Result<LvTagged> {
        self.call(
            host,
            &LvTagReq {
                vg: vg.clone(),
                lv: lv.clone(),
                add: add.to_vec(),
                del: del.to_vec(),
            },
        )
    }

    /// `lv-list`.
    pub fn lv_list(&self, host: &str, vg: &VgName, tags: &[Tag]) -> anyhow::Result<LvList> {
        self.call(
            host,
            &LvListReq {
                vg: vg.clone(),
                tags: tags.to_vec(),
            },
        )
    }

    /// `lv-rename`.
    pub fn lv_rename(
        &self,
        host: &str,
        vg: &VgName,
        lv: &LvName,
        new_name: &LvName,
    ) -> anyhow::Result<LvRenamed> {
        self.call(
            host,
            &LvRenameReq {
                vg: vg.clone(),
                lv: lv.clone(),
                new_name: new_name.clone(),
            },
        )
    }
}

/// Re-logs the agent's log lines (`LEVEL: <context>: message`) under the host's name.
pub(crate) fn relay_logs(host: &str, stderr: &str) {
    for line in stderr.lines() {
        if let Some(m) = line.strip_prefix("INFO: ") {
            tracing::info!("{host}: {m}");
        } else if let Some(m) = line.strip_prefix("WARN: ") {
            tracing::warn!("{host}: {m}");
        } else if let Some(m) = line.strip_prefix("ERROR: ") {
            tracing::error!("{host}: {m}");
        } else if let Some(m) = line.strip_prefix("DEBUG: ") {
            tracing::debug!("{host}: {m}");
        }
    }
}

/// The agent's error message: its last stderr line that is not a log line. A usage error
/// from clap ends with a hint line; its `error:` line is the message then.
fn last_message(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| {
            !["INFO:", "WARN:", "ERROR:", "DEBUG:"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    let last = lines.last()?;
    if last.starts_with("For more information") {
        if let Some(e) = lines.iter().rev().find(|l| l.starts_with("error:")) {
            return Some(e.to_string());
        }
    }
    Some(last.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Env, FileConfig};

    fn client(frontend: &str) -> HostClient {
        let f = FileConfig {
            frontend_host: Some(frontend.into()),
            host_agent: Some("/opt/one bsud/one-bsud".into()),
            ssh_command: Some(vec!["ssh".into(), "-q".into()]),
            ..Default::default()
        };
        HostClient::new(&Config::resolve(f, None, &Env::default()))
            .with_local_exe("/usr/bin/one-bsud".into())
    }

    fn words(c: &Cmd) -> Vec<String> {
        c.get_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn remote_call_is_one_quoted_string_with_limits() {
        let c = client("fe");
        let req = LvRemoveReq {
            vg: "vg-one-1".parse().unwrap(),
            lv: "lv-one-3-0".parse().unwrap(),
            require_tags: vec!["one.x=a&b#c".parse().unwrap()],
        };
        let cmd = c.command("kvm1", &req).unwrap();
        assert_eq!(cmd.program(), "ssh");
        let w = words(&cmd);
        assert_eq!(&w[..2], ["-q", "kvm1"]);
        assert_eq!(w.len(), 3);
        assert!(
            w[2].starts_with("'/opt/one bsud/one-bsud' host lv-remove '--vg=vg-one-1'"),
            "{}",
            w[2]
        );
        assert!(w[2].contains("'--require-tag=one.x=a&b#c'"), "{}", w[2]);
        // command 600 + lock 900 (lv-remove locks).
        assert!(
            w[2].ends_with("'--deadline-secs=1500' '--lock-timeout-secs=900'"),
            "{}",
            w[2]
        );
        assert_eq!(
            cmd.get_timeout(),
            Duration::from_secs(1500) + TRANSPORT_MARGIN
        );
    }

    #[test]
    fn frontend_runs_locally_with_its_root() {
        let c = client("fe");
        let cmd = c.command("fe", &VersionReq {}).unwrap();
        assert_eq!(cmd.program(), "/usr/bin/one-bsud");
        assert_eq!(words(&cmd), ["host", "version"]);
    }

    #[test]
    fn error_message_is_the_last_plain_line() {
        assert_eq!(
            last_message("INFO: host lv-remove: x\nrefused: not ours\n").as_deref(),
            Some("refused: not ours")
        );
        assert_eq!(
            last_message("error: invalid value 'a/b' for '--lv <LV>': bad\n\nFor more information, try '--help'.\n")
                .as_deref(),
            Some("error: invalid value 'a/b' for '--lv <LV>': bad")
        );
        assert_eq!(last_message("INFO: only logs\n"), None);
    }
}
