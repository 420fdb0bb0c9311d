//! The program: argv + stdin + environment in, stdout bytes + exit code out.
//!
//! [`run`] does all the work and returns an [`Outcome`]; [`main_entry`] is the only place that
//! touches the real stdout, writing it once at the end, then prints the human error message as
//! the last stderr line. Because argv, stdin and the environment are parameters, the whole
//! program runs inside unit tests.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::{Config, Env};
use crate::error::{exit_code, one_line};
use crate::logging;
use crate::one::output::ActionOutput;

/// What the process should do on exit.
#[derive(Debug)]
pub struct Outcome {
    /// Bytes for stdout.
    pub stdout: Vec<u8>,
    /// The failure, if any.
    pub error: Option<anyhow::Error>,
    /// Wrap the error in the ≤ 6.0 markers.
    pub error_markers: bool,
    /// clap's own output (help, version, usage errors), printed as clap wants.
    pub clap: Option<clap::Error>,
}

impl Outcome {
    /// The process exit code.
    pub fn code(&self) -> u8 {
        if let Some(c) = &self.clap {
            return if c.use_stderr() { 2 } else { 0 };
        }
        self.error.as_ref().map(exit_code).unwrap_or(0)
    }

    /// The final stderr text for the error (empty on success).
    pub fn error_text(&self) -> String {
        let Some(e) = &self.error else {
            return String::new();
        };
        let msg = one_line(e);
        if self.error_markers {
            format!("ERROR MESSAGE --8<------\n{msg}\nERROR MESSAGE ------>8--\n")
        } else {
            format!("{msg}\n")
        }
    }
}

fn ok(out: ActionOutput) -> Outcome {
    Outcome {
        stdout: out.render(),
        error: None,
        error_markers: false,
        clap: None,
    }
}

fn err(e: anyhow::Error, markers: bool) -> Outcome {
    Outcome {
        stdout: Vec::new(),
        error: Some(e),
        error_markers: markers,
        clap: None,
    }
}

/// Runs one invocation.
pub fn run(argv: Vec<OsString>, stdin: &mut dyn Read, env: &Env) -> Outcome {
    let argv = match crate::cli::invocation_argv(argv) {
        Ok(a) => a,
        Err(e) => return err(e, false),
    };
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                stdout: Vec::new(),
                error: None,
                error_markers: false,
                clap: Some(e),
            }
        }
    };
    match cli.command {
        // decode needs no configuration: it must work on a machine where nothing is set up.
        Command::Decode(a) => {
            logging::init("warn", false);
            match crate::actions::decode::run(&a, stdin) {
                Ok(o) => ok(o),
                Err(e) => err(e, false),
            }
        }
        // Installing runs before any configuration exists.
        Command::Install(cmd) => {
            logging::init(env.get("BSUD_LOG").unwrap_or("info"), false);
            match crate::ops::install::run(cmd) {
                Ok(o) => ok(o),
                Err(e) => err(e, false),
            }
        }
        // Probes run on hosts like the agent; monitord ignores their stderr unless they fail.
        Command::Probe(cmd) => {
            logging::init(env.get("BSUD_LOG").unwrap_or("warn"), false);
            match crate::ops::probe::run(cmd, stdin, env) {
                Ok(o) => ok(o),
                Err(e) => err(e, false),
            }
        }
        // doctor reports a broken configuration as one of its checks instead of failing on it.
        Command::Doctor(a) => {
            logging::init(env.get("BSUD_LOG").unwrap_or("error"), false);
            let report = crate::ops::doctor::run(&a, env);
            let stdout = if a.json {
                serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
            } else {
                report.text()
            };
            let failed = report.count(crate::ops::doctor::Status::Fail);
            Outcome {
                stdout: stdout.into_bytes(),
                error: (failed > 0).then(|| {
                    crate::error::fail(
                        crate::error::ErrorKind::Failed,
                        format!("doctor: {failed} check(s) failed"),
                    )
                }),
                error_markers: false,
                clap: None,
            }
        }
        // The demo reports as it goes (it runs for seconds), so it writes stdout itself.
        Command::Demo(a) => {
            logging::init(env.get("BSUD_LOG").unwrap_or("error"), false);
            let mut stdout = std::io::stdout();
            match crate::sim::demo::run(&a, &mut stdout) {
                Ok(()) => ok(ActionOutput::Nothing),
                Err(e) => err(e, false),
            }
        }
        // The host agent runs on hosts, which have no frontend configuration.
        Command::Host(cmd) => {
            // The journal is where an operator looks on a host: the agent logs there too.
            logging::init(env.get("BSUD_LOG").unwrap_or("info"), true);
            logging::set_context(|c| c.action = format!("host {}", cmd.name()));
            match crate::host::agent::run(cmd, stdin, env) {
                Ok(o) => ok(o),
                Err(e) => err(e, false),
            }
        }
        other => {
            let config = match Config::load(env) {
                Ok(c) => c,
                Err(e) => {
                    logging::init("info", false);
                    return err(e, false);
                }
            };
            logging::init(&config.log_level, config.journald);
            let markers = config.error_markers;
            let ctx = crate::actions::Ctx::new(config, env.clone());
            let res = match other {
                Command::Ds(a) => {
                    let (name, args) = a.parts();
                    logging::set_context(|c| c.action = name.to_string());
                    crate::actions::ds::run(&ctx, name, args, stdin).map_err(|e| named(name, e))
                }
                Command::Tm(a) => {
                    let (name, args) = a.parts();
                    logging::set_context(|c| c.action = name.to_string());
                    crate::actions::tm::run(&ctx, name, args, stdin).map_err(|e| named(name, e))
                }
                Command::Drive(cmd) => crate::drive::cli::run_drive(&ctx, cmd),
                Command::Cloud(cmd) => crate::drive::cli::run_cloud(&ctx, cmd),
                Command::Decode(_)
                | Command::Host(_)
                | Command::Install(_)
                | Command::Probe(_)
                | Command::Demo(_)
                | Command::Doctor(_) => unreachable!("handled above"),
            };
            match res {
                Ok(o) => ok(o),
                Err(e) => {
                    tracing::debug!("failed: {e:?}");
                    err(e, markers)
                }
            }
        }
    }
}

/// Every action error line starts with the action name (`cp: …`, `clone: …`): oned shows the
/// line alone (image or VM error, oned.log), so it must say which step failed. Messages that
/// already name it are left alone.
fn named(action: &str, e: anyhow::Error) -> anyhow::Error {
    if one_line(&e).starts_with(&format!("{action}: ")) {
        e
    } else {
        e.context(action.to_string())
    }
}

/// The real process entry: argv, stdin and environment of this process; writes stdout once.
pub fn main_entry() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let env = Env::from_process();
    let stdin = std::io::stdin();
    let mut lock = stdin.lock();
    let outcome = run(argv, &mut lock, &env);
    if let Some(c) = &outcome.clap {
        let _ = c.print();
        return ExitCode::from(outcome.code());
    }
    if !outcome.stdout.is_empty() {
        let mut out = std::io::stdout().lock();
        if out
            .write_all(&outcome.stdout)
            .and_then(|_| out.flush())
            .is_err()
        {
            let _ = writeln!(std::io::stderr(), "cannot write the result on stdout");
            return ExitCode::from(1);
        }
    }
    let text = outcome.error_text();
    if !text.is_empty() {
        let _ = std::io::stderr().write_all(text.as_bytes());
    }
    ExitCode::from(outcome.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with_config(dir: &std::path::Path, extra: &str) -> Env {
        let config = dir.join("bsud.toml");
        std::fs::write(
            &config,
            format!(
                "journald = false\nlock_dir = {:?}\n{extra}\n",
                dir.join("locks")
            ),
        )
        .unwrap();
        Env::from_pairs([("BSUD_CONFIG", config.to_str().unwrap())])
    }

    fn run_args(args: &[&str], stdin: &[u8], env: &Env) -> Outcome {
        run(
            args.iter().map(OsString::from).collect(),
            &mut &stdin[..],
            env,
        )
    }

    #[test]
    fn action_errors_name_the_action_once() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with_config(dir.path(), "");
        let o = run_args(&["one-bsud", "ds", "cp", "7"], b"!!", &env);
        assert_eq!(
            (o.code(), o.error_text()),
            (
                2,
                "cp: driver message is not valid base64: '!' at offset 0\n".to_string()
            )
        );
        let o = run_args(&["/r/tm/bsud/delete", "h:/d/1/2", "x", "1"], b"", &env);
        assert_eq!(
            o.error_text(),
            "delete: vm id \"x\" is not a non-negative integer\n"
        );
        let o = run_args(
            &[
                "/r/tm/bsud/mkimage",
                "10",
                "qcow2",
                "h:/d/1/2/disk.0",
                "2",
                "1",
            ],
            b"",
            &env,
        );
        assert_eq!(
            (o.code(), o.error_text()),
            (
                4,
                "mkimage: volatile disks are raw LVs; FORMAT qcow2 is not supported (set DRIVER=raw)\n"
                    .to_string()
            )
        );
        assert!(o.stdout.is_empty());
    }

    #[test]
    fn markers_wrap_the_final_message() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with_config(dir.path(), "error_markers = true");
        let o = run_args(
            &["/r/tm/bsud/mkswap", "0", "h:/d/1/2/disk.1", "2", "1"],
            b"",
            &env,
        );
        assert_eq!(
            (o.code(), o.error_text()),
            (
                2,
                "ERROR MESSAGE --8<------\nmkswap: size must be at least 1 MB\nERROR MESSAGE ------>8--\n"
                    .to_string()
            )
        );
    }

    #[test]
    fn configuration_errors_exit_3() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with_config(dir.path(), "no_such_key = 1");
        let o = run_args(&["one-bsud", "ds", "monitor", "1"], b"", &env);
        assert_eq!(o.code(), 3);
        assert!(o.error_text().contains("no_such_key"), "{}", o.error_text());
        let env = Env::from_pairs([("BSUD_CONFIG", "/nonexistent/bsud.toml")]);
        let o = run_args(&["one-bsud", "ds", "monitor", "1"], b"", &env);
        assert_eq!(o.code(), 3);
        assert!(o
            .error_text()
            .starts_with("cannot read configuration /nonexistent/bsud.toml: "));
    }
}
