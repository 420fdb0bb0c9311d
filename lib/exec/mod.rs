//! The one place that starts external programs.
//!
//! Invariants:
//! - A command is data ([`Cmd`]): program, argv, environment, stdin, deadline. It is never a
//!   shell line; remote commands are built by [`ssh`] from shell-quoted words.
//! - Every command has a deadline; when it passes, the whole process group is killed and the
//!   error says so ([`ExecError::TimedOut`]).
//! - A failed command's error names the program and arguments, the exit status and the tail of
//!   its stderr ([`STDERR_TAIL`] bytes), which is what an operator needs to act.
//! - Every command is logged at debug level before it runs.
//! - stdin is `/dev/null` unless given: a child never steals the driver's stdin (oned's message).

pub mod ssh;

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How much of a failed command's stderr is kept in the error.
pub const STDERR_TAIL: usize = 2048;

/// Default deadline for a command that does not set one. Long enough for LVM under load,
/// short enough that a hung command does not outlive oned's patience.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// What a child reads on stdin.
#[derive(Debug, Clone, Default)]
pub enum Input {
    /// `/dev/null`.
    #[default]
    Null,
    /// These bytes, then EOF.
    Bytes(Vec<u8>),
    /// Inherit the parent's stdin (streams).
    Inherit,
}

/// A command to run: plain data.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    stdin: Input,
    cwd: Option<PathBuf>,
    timeout: Duration,
}

impl Cmd {
    /// A command running `program` with no arguments.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            stdin: Input::Null,
            cwd: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the child only.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.env
            .push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    /// Removes an environment variable for the child only.
    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Self {
        self.env_remove.push(k.as_ref().to_owned());
        self
    }

    /// Feeds these bytes on stdin.
    pub fn stdin_bytes(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.stdin = Input::Bytes(b.into());
        self
    }

    /// Sets what the child reads.
    pub fn stdin(mut self, i: Input) -> Self {
        self.stdin = i;
        self
    }

    /// Runs in this directory.
    pub fn cwd(mut self, d: impl Into<PathBuf>) -> Self {
        self.cwd = Some(d.into());
        self
    }

    /// Sets the deadline.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The program.
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// The arguments.
    pub fn get_args(&self) -> &[OsString] {
        &self.args
    }

    /// The deadline.
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }

    /// The command as a shell-quoted line, for logs and errors only (never executed).
    pub fn display(&self) -> String {
        let mut words = vec![quote_for_display(&self.program)];
        words.extend(self.args.iter().map(|a| quote_for_display(a)));
        let line = words.join(" ");
        // A remote command can embed a whole script; keep errors readable.
        if line.len() > 600 {
            let mut cut = 600;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}…", &line[..cut])
        } else {
            line
        }
    }

    fn to_command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        for k in &self.env_remove {
            c.env_remove(k);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        // Own process group, so a deadline kills the whole tree (ssh and what it started).
        c.process_group(0);
        c
    }
}

fn quote_for_display(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    shlex::try_quote(&s)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| format!("{s:?}"))
}

/// A finished command's result.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything written on stdout.
    pub stdout: Vec<u8>,
    /// Everything written on stderr.
    pub stderr: Vec<u8>,
}

impl Output {
    /// stdout as UTF-8 (lossy).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The program could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It exited non-zero or was killed by a signal.
    #[error("`{command}` {status}{}", tail_suffix(.stderr_tail))]
    Failed {
        /// The command line.
        command: String,
        /// "exited with status N" / "was killed by signal N".
        status: String,
        /// Exit code when it exited.
        code: Option<i32>,
        /// The end of its stderr.
        stderr_tail: String,
    },
    /// The deadline passed and it was killed.
    #[error("`{command}` did not finish within {}s and was killed{}", .after.as_secs(), tail_suffix(.stderr_tail))]
    TimedOut {
        /// The command line.
        command: String,
        /// The deadline.
        after: Duration,
        /// The end of its stderr.
        stderr_tail: String,
    },
    /// Reading or writing its pipes failed.
    #[error("i/o with `{command}` failed: {source}")]
    Io {
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
}

fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

impl ExecError {
    /// The exit code when the command ran and exited.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            ExecError::Failed { code, .. } => *code,
            _ => None,
        }
    }

    /// The captured stderr tail, if any.
    pub fn stderr_tail(&self) -> &str {
        match self {
            ExecError::Failed { stderr_tail, .. } | ExecError::TimedOut { stderr_tail, .. } => {
                stderr_tail
            }
            _ => "",
        }
    }
}

/// The last [`STDERR_TAIL`] bytes of `stderr`, lines folded to `; ` so the error stays one line,
/// without the LEVEL: log lines a one-bsud child writes (they were already relayed).
pub fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| !is_log_line(l))
        .collect();
    let joined = lines.join("; ");
    if joined.len() <= STDERR_TAIL {
        return joined;
    }
    let mut start = joined.len() - STDERR_TAIL;
    while !joined.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &joined[start..])
}

fn is_log_line(l: &str) -> bool {
    ["INFO:", "WARN:", "DEBUG:"]
        .iter()
        .any(|p| l.starts_with(p))
}

fn describe_status(status: &ExitStatus) -> (String, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(c), _) => (format!("exited with status {c}"), Some(c)),
        (None, Some(s)) => (format!("was killed by signal {s}"), None),
        _ => ("ended abnormally".to_string(), None),
    }
}

/// Runs the command and returns its output whatever the exit status (still an error when it
/// cannot start or the deadline passes).
pub fn output(cmd: &Cmd) -> Result<Output, ExecError> {
    let command = cmd.display();
    tracing::debug!(target: "exec", "run: {command}");
    let started = std::time::Instant::now();
    let mut c = cmd.to_command();
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c.stdin(match cmd.stdin {
        Input::Null => Stdio::null(),
        Input::Bytes(_) => Stdio::piped(),
        Input::Inherit => Stdio::inherit(),
    });
    let mut child = c.spawn().map_err(|source| ExecError::Spawn {
        command: command.clone(),
        source,
    })?;
    let io_err = |source| ExecError::Io {
        command: command.clone(),
        source,
    };
    let feeder = match (&cmd.stdin, child.stdin.take()) {
        (Input::Bytes(b), Some(mut pipe)) => {
            let b = b.clone();
            // A child that exits without reading its stdin is not an error here: its status is.
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&b);
            }))
        }
        _ => None,
    };
    let mut out_pipe = child.stdout.take().expect("stdout is piped");
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        out_pipe.read_to_end(&mut v).map(|_| v)
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        err_pipe.read_to_end(&mut v).map(|_| v)
    });
    let waited = wait_with_deadline(&mut child, cmd.timeout);
    let stdout = out_reader
        .join()
        .unwrap_or_else(|_| Ok(Vec::new()))
        .map_err(io_err)?;
    let stderr = err_reader
        .join()
        .unwrap_or_else(|_| Ok(Vec::new()))
        .map_err(io_err)?;
    if let Some(f) = feeder {
        let _ = f.join();
    }
    // Which step of a slow action took the time.
    tracing::debug!(
        target: "exec",
        "took {:.2}s: {}",
        started.elapsed().as_secs_f64(),
        command.chars().take(160).collect::<String>()
    );
    match waited {
        Ok(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        Err(WaitError::TimedOut) => Err(ExecError::TimedOut {
            command,
            after: cmd.timeout,
            stderr_tail: stderr_tail(&stderr),
        }),
        Err(WaitError::Io(source)) => Err(ExecError::Io { command, source }),
    }
}

/// Runs the command; a non-zero exit is an error carrying the stderr tail.
pub fn run(cmd: &Cmd) -> Result<Output, ExecError> {
    let out = output(cmd)?;
    if out.status.success() {
        Ok(out)
    } else {
        let (status, code) = describe_status(&out.status);
        Err(ExecError::Failed {
            command: cmd.display(),
            status,
            code,
            stderr_tail: stderr_tail(&out.stderr),
        })
    }
}

/// Checks a finished child's status the way [`run`] does (for streamed children).
pub fn check_status(cmd: &Cmd, status: ExitStatus, stderr: &[u8]) -> Result<(), ExecError> {
    if status.success() {
        return Ok(());
    }
    let (status, code) = describe_status(&status);
    Err(ExecError::Failed {
        command: cmd.display(),
        status,
        code,
        stderr_tail: stderr_tail(stderr),
    })
}

/// How stdio of a streamed child is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipe {
    /// A pipe the caller reads or writes.
    Piped,
    /// The parent's own descriptor.
    Inherit,
    /// `/dev/null`.
    Null,
}

impl Pipe {
    fn stdio(self) -> Stdio {
        match self {
            Pipe::Piped => Stdio::piped(),
            Pipe::Inherit => Stdio::inherit(),
            Pipe::Null => Stdio::null(),
        }
    }
}

/// A started child whose pipes the caller drives (data streams). Dropping it kills the
/// process group, so an early return never leaves a stream running.
#[derive(Debug)]
pub struct Running {
    /// The child; its piped handles are available.
    pub child: Child,
    cmd: Cmd,
    finished: bool,
}

impl Running {
    /// The command that started it.
    pub fn cmd(&self) -> &Cmd {
        &self.cmd
    }

    /// Waits (with the command's deadline) and checks the status; `stderr` is what the caller
    /// collected from the child's stderr, used for the error message.
    pub fn finish(mut self, stderr: &[u8]) -> Result<(), ExecError> {
        let res = wait_with_deadline(&mut self.child, self.cmd.timeout);
        self.finished = true;
        match res {
            Ok(status) => check_status(&self.cmd, status, stderr),
            Err(WaitError::TimedOut) => Err(ExecError::TimedOut {
                command: self.cmd.display(),
                after: self.cmd.timeout,
                stderr_tail: stderr_tail(stderr),
            }),
            Err(WaitError::Io(source)) => Err(ExecError::Io {
                command: self.cmd.display(),
                source,
            }),
        }
    }

    /// Kills the process group now.
    pub fn kill(&mut self) {
        kill_group(&self.child);
        let _ = self.child.wait();
        self.finished = true;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            self.kill();
        }
    }
}

/// Starts a command with the given stdio wiring, for streaming.
pub fn spawn(cmd: &Cmd, stdin: Pipe, stdout: Pipe, stderr: Pipe) -> Result<Running, ExecError> {
    let command = cmd.display();
    tracing::debug!(target: "exec", "spawn: {command}");
    let mut c = cmd.to_command();
    c.stdin(stdin.stdio())
        .stdout(stdout.stdio())
        .stderr(stderr.stdio());
    let child = c
        .spawn()
        .map_err(|source| ExecError::Spawn { command, source })?;
    Ok(Running {
        child,
        cmd: cmd.clone(),
        finished: false,
    })
}

enum WaitError {
    TimedOut,
    Io(std::io::Error),
}

/// Waits for the child; past the deadline kills its process group. A watchdog thread sleeps
/// on a channel so the common case (child exits first) costs no polling.
fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Result<ExitStatus, WaitError> {
    let pid = child.id() as i32;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (fired_tx, fired_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(timeout) {
            crate::sys::kill_process_group(pid);
            let _ = fired_tx.send(());
        }
    });
    let status = child.wait();
    let _ = done_tx.send(());
    let _ = watchdog.join();
    let fired = fired_rx.try_recv().is_ok();
    match status {
        Ok(_) if fired => Err(WaitError::TimedOut),
        Ok(s) => Ok(s),
        Err(e) => Err(WaitError::Io(e)),
    }
}

fn kill_group(child: &Child) {
    crate::sys::kill_process_group(child.id() as i32);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_captures() {
        let out = run(&Cmd::new("sh").args(["-c", "printf hi; printf err >&2"])).unwrap();
        assert_eq!(out.stdout, b"hi");
        assert_eq!(out.stderr, b"err");
    }

    #[test]
    fn failure_carries_status_and_tail() {
        let e = run(&Cmd::new("sh").args(["-c", "echo 'INFO: noise' >&2; echo boom >&2; exit 3"]))
            .unwrap_err();
        assert_eq!(e.exit_code(), Some(3));
        let msg = e.to_string();
        assert!(msg.contains("exited with status 3"), "{msg}");
        assert!(msg.ends_with("exited with status 3: boom"), "{msg}");
        assert_eq!(e.stderr_tail(), "boom");
    }

    #[test]
    fn stdin_is_fed_then_closed() {
        let out = run(&Cmd::new("cat").stdin_bytes(b"abc".to_vec())).unwrap();
        assert_eq!(out.stdout, b"abc");
        // Without stdin bytes, the child sees EOF at once instead of oned's message.
        let out = run(&Cmd::new("cat")).unwrap();
        assert!(out.stdout.is_empty());
    }

    #[test]
    fn deadline_kills_the_whole_group() {
        let t0 = std::time::Instant::now();
        let e = run(&Cmd::new("sh")
            .args(["-c", "sleep 30 & sleep 30"])
            .timeout(Duration::from_millis(200)))
        .unwrap_err();
        assert!(matches!(e, ExecError::TimedOut { .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let e = run(&Cmd::new("/nonexistent/prog")).unwrap_err();
        assert!(matches!(e, ExecError::Spawn { .. }));
        assert!(e.to_string().contains("/nonexistent/prog"));
    }

    #[test]
    fn display_quotes_hostile_words() {
        let c = Cmd::new("echo").arg("a b").arg("$(rm -rf /)").arg("it's");
        assert_eq!(c.display(), r#"echo 'a b' '$(rm -rf /)' "it's""#);
    }
}
