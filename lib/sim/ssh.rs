//! The testbed's ssh transport: `bsud-sim ssh --testbed DIR [ssh options] <host> <words…>`.
//!
//! It behaves like OpenSSH's client where the driver can tell: the remote words are joined with
//! single spaces and the resulting string is run by `/bin/sh -c` — the same re-parsing sshd
//! does, so a word the caller forgot to quote breaks here as it would in production. The
//! command runs in the host's view (environment of [`HostView::env`] plus the host's registered
//! variables, working directory = the host root), with stdin, stdout and stderr passed through
//! as streams. The exit code is the command's; an unknown host, a usage error or a broken
//! registry exit 255, as ssh does.
//!
//! Like sshd, it does not pass the caller's environment: the remote side gets a login-like
//! environment (`PATH`, `HOME`, `USER`, locale, and the logging knobs `RUST_LOG`, `BSUD_LOG`,
//! `RUST_BACKTRACE`) plus the host view. It also sets `BSUD_SSH_COMMAND` to this transport's
//! own command line (JSON array), so a host can reach another host the same way
//! (host-to-host copies), and `BSUD_SIM_HOST` to the host's name.
//!
//! The registry: `DIR/hosts/<name>/host.json` = `{"root": "<host root>", "env": {…}}`, written
//! by [`register_host`]. Unlike real ssh, a remote command killed by a signal shows as killed
//! by that signal (the shell replaces this process), not as exit status 255.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::error::{fail, ErrorKind};
use crate::sim::hostview::HostView;

/// ssh's own failure status.
pub const SSH_FAILURE: u8 = 255;

/// Caller variables a login on the host still gets (what sshd and PAM would provide, plus the
/// logging knobs tests and operators rely on).
const KEPT_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TERM",
    "RUST_BACKTRACE",
    "RUST_LOG",
    "BSUD_LOG",
    "LLVM_PROFILE_FILE",
];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `bsud-sim ssh` arguments: ssh's own options are accepted and ignored (except `-n`).
#[derive(Debug, clap::Args)]
pub struct SshArgs {
    /// Testbed directory; its files DIR/hosts/NAME/host.json name the simulated hosts.
    #[arg(long, value_name = "DIR")]
    pub testbed: PathBuf,
    /// An ssh option taking a value, ignored: -o OPTION, and likewise -p PORT, -i FILE,
    /// -l USER, -F FILE, -c CIPHERS, -m MACS, -J DEST, -S PATH, -b ADDR, -E FILE.
    #[arg(
        short = 'o',
        value_name = "OPTION",
        short_aliases = ['p', 'i', 'l', 'F', 'c', 'm', 'J', 'S', 'b', 'E']
    )]
    pub ignored_option: Vec<String>,
    /// An ssh flag, ignored: -q, and likewise -v, -t, -T, -x, -X, -Y, -a, -A, -C, -k, -4, -6
    /// (no tty, agent, X11 or compression exists here).
    #[arg(
        short = 'q',
        action = clap::ArgAction::Count,
        short_aliases = ['v', 't', 'T', 'x', 'X', 'Y', 'a', 'A', 'C', 'k', '4', '6']
    )]
    pub ignored_flag: u8,
    /// Read stdin from /dev/null, as ssh -n.
    #[arg(short = 'n')]
    pub null_stdin: bool,
    /// The simulated host (`user@` is accepted and ignored).
    #[arg(value_name = "HOST")]
    pub host: String,
    /// The remote command: joined with spaces and run by `/bin/sh -c` in the host's view, stdio
    /// streamed; its exit status is ours (255: unknown host or transport failure, as ssh).
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

/// A host as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredHost {
    /// The host root.
    pub root: PathBuf,
    /// Variables added to the host view's environment (e.g. `BSUD_METADATA_URL`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Host names double as registry directory names: a conservative alphabet only.
fn check_host_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(fail(
            ErrorKind::BadInput,
            format!("invalid simulated host name {name:?}"),
        ))
    }
}

fn host_file(testbed_dir: &Path, name: &str) -> PathBuf {
    testbed_dir.join("hosts").join(name).join("host.json")
}

/// Registers (or re-registers) a simulated host in a testbed's ssh registry.
pub fn register_host(
    testbed_dir: &Path,
    name: &str,
    root: &Path,
    extra_env: &[(String, String)],
) -> anyhow::Result<()> {
    check_host_name(name)?;
    for (k, _) in extra_env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(fail(
                ErrorKind::BadInput,
                format!("invalid environment variable name {k:?}"),
            ));
        }
    }
    let root = root
        .canonicalize()
        .with_context(|| format!("host root {}", root.display()))?;
    let host = RegisteredHost {
        root,
        env: extra_env.iter().cloned().collect(),
    };
    let path = host_file(testbed_dir, name);
    let dir = path.parent().expect("host file has a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!("host.json.tmp{}", std::process::id()));
    let text = serde_json::to_string_pretty(&host).expect("host entry serialises");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A registered host, `None` when the name is unknown (or not a valid host name).
pub fn lookup_host(testbed_dir: &Path, name: &str) -> anyhow::Result<Option<RegisteredHost>> {
    if check_host_name(name).is_err() {
        return Ok(None);
    }
    let path = host_file(testbed_dir, name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let host =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Some(host))
}

/// The environment the remote command gets.
fn remote_env(
    name: &str,
    host: &RegisteredHost,
    transport: &[String],
    caller: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for k in KEPT_ENV {
        if let Some(v) = caller(k) {
            env.insert(k.to_string(), v);
        }
    }
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.to_string());
    env.extend(HostView::new(host.root.clone()).env());
    env.extend(host.env.clone());
    env.insert(
        "BSUD_SSH_COMMAND".into(),
        serde_json::to_string(transport).expect("strings serialise"),
    );
    env.insert("BSUD_SIM_HOST".into(), name.to_string());
    env.into_iter().collect()
}

/// Runs the command; the exit code is the command's (this process becomes its shell).
pub fn run(a: SshArgs) -> ExitCode {
    let err = match exec_remote(&a) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    eprintln!("{}", crate::error::one_line(&err));
    ExitCode::from(SSH_FAILURE)
}

fn exec_remote(a: &SshArgs) -> anyhow::Result<std::convert::Infallible> {
    let testbed = a
        .testbed
        .canonicalize()
        .with_context(|| format!("ssh: testbed {}", a.testbed.display()))?;
    let name = a.host.rsplit_once('@').map_or(a.host.as_str(), |(_, h)| h);
    let Some(host) = lookup_host(&testbed, name)? else {
        anyhow::bail!("ssh: Could not resolve hostname {name}: Name or service not known");
    };
    if a.command.is_empty() {
        anyhow::bail!("ssh: {name}: no remote command (interactive sessions are not simulated)");
    }
    let line = a.command.join(" ");
    let exe = std::env::current_exe().context("ssh: locating bsud-sim")?;
    let transport = vec![
        exe.to_string_lossy().into_owned(),
        "ssh".to_string(),
        "--testbed".to_string(),
        testbed.to_string_lossy().into_owned(),
    ];
    let env = remote_env(name, &host, &transport, |k| std::env::var(k).ok());
    // Replacing this process (rather than running a child) keeps the stdio streams, the
    // process group and the pid: a caller that kills "ssh" kills the remote command.
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&line)
        .current_dir(&host.root)
        .env_clear()
        .envs(env);
    if a.null_stdin {
        cmd.stdin(std::process::Stdio::null());
    }
    let e = cmd.exec();
    Err(anyhow::Error::new(e).context(format!("ssh: {name}: starting /bin/sh")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_round_trip_and_bad_names() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("r");
        std::fs::create_dir(&root).unwrap();
        let env = vec![("BSUD_METADATA_URL".to_string(), "http://x".to_string())];
        register_host(d.path(), "kvm-1", &root, &env).unwrap();
        let h = lookup_host(d.path(), "kvm-1").unwrap().unwrap();
        assert_eq!(h.root, root.canonicalize().unwrap());
        assert_eq!(h.env["BSUD_METADATA_URL"], "http://x");
        assert_eq!(lookup_host(d.path(), "kvm-2").unwrap(), None);
        for bad in ["..", "../x", "a/b", "-o", "", ".hidden"] {
            assert!(register_host(d.path(), bad, &root, &[]).is_err(), "{bad}");
            assert_eq!(lookup_host(d.path(), bad).unwrap(), None);
        }
    }

    #[test]
    fn remote_env_is_a_login_plus_the_host_view() {
        let host = RegisteredHost {
            root: "/tb/h1".into(),
            env: [("BSUD_METADATA_URL".to_string(), "http://m".to_string())].into(),
        };
        let caller = |k: &str| match k {
            "HOME" => Some("/root".to_string()),
            "OSC_SECRET_KEY" => Some("secret".to_string()),
            _ => None,
        };
        let t = vec!["/bin/bsud-sim".to_string(), "ssh".to_string()];
        let env: BTreeMap<String, String> =
            remote_env("h1", &host, &t, caller).into_iter().collect();
        assert_eq!(env["HOME"], "/root");
        assert_eq!(env["PATH"], DEFAULT_PATH);
        assert!(!env.contains_key("OSC_SECRET_KEY"));
        assert_eq!(env["BSUD_HOST_ROOT"], "/tb/h1");
        assert_eq!(env["LVM_SYSTEM_DIR"], "/tb/h1/etc/lvm");
        assert_eq!(env["BSUD_METADATA_URL"], "http://m");
        assert_eq!(env["BSUD_SSH_COMMAND"], r#"["/bin/bsud-sim","ssh"]"#);
        assert_eq!(env["BSUD_SIM_HOST"], "h1");
    }

    fn parse(argv: &[&str]) -> SshArgs {
        use clap::Parser;
        let mut full = vec!["bsud-sim", "ssh"];
        full.extend(argv);
        match crate::sim::cli::SimCli::try_parse_from(full)
            .unwrap()
            .command
        {
            crate::sim::cli::SimCommand::Ssh(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ssh_options_are_accepted_and_the_command_kept_verbatim() {
        let a = parse(&[
            "--testbed",
            "/tb",
            "-o",
            "BatchMode=yes",
            "-oConnectTimeout=20",
            "-p",
            "22",
            "-qT",
            "-i",
            "/k",
            "-n",
            "root@kvm1",
            "one-bsud",
            "-rf",
            "--x",
            "a b",
        ]);
        assert_eq!(a.testbed, Path::new("/tb"));
        assert_eq!(a.host, "root@kvm1");
        assert!(a.null_stdin);
        assert_eq!(a.command, ["one-bsud", "-rf", "--x", "a b"]);
        assert_eq!(a.ignored_option.len(), 4);
    }
}
