//! Shared helpers for the integration tests: the built `one-bsud` installed in a temporary
//! directory exactly as oned finds it, run the ways oned and people run it, with results
//! compared byte for byte.
//!
//! Every [`Install`] is its own temporary directory (removed on drop, also when a test fails)
//! and every child gets a cleared environment, so tests never share state nor depend on the
//! caller's environment.

#![allow(dead_code)] // each test binary uses its own subset

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file of `tests/fixtures/`.
pub fn fixture(rel: &str) -> Vec<u8> {
    let p = repo().join("tests/fixtures").join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Base64, one line, as oned writes it.
pub fn b64(data: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The datastore actions and the transfer-manager actions of the driver.
pub use bsud::one::tm::TM_ACTIONS;
pub use bsud::one::DS_ACTIONS;

/// How the binary is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// oned's way: the `remotes/<kind>/bsud/<action>` entry script.
    Entry,
    /// A symlink named after the action inside a `<kind>/bsud/` folder.
    Symlink,
    /// `one-bsud ds <action> …` / `one-bsud tm <action> …`.
    Explicit,
}

impl Via {
    /// All three.
    pub const ALL: [Via; 3] = [Via::Entry, Via::Symlink, Via::Explicit];
}

/// Datastore or transfer-manager action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `remotes/datastore/bsud/`.
    Ds,
    /// `remotes/tm/bsud/`.
    Tm,
}

impl Kind {
    fn folder(self) -> &'static str {
        match self {
            Kind::Ds => "datastore",
            Kind::Tm => "tm",
        }
    }

    fn word(self) -> &'static str {
        match self {
            Kind::Ds => "ds",
            Kind::Tm => "tm",
        }
    }
}

/// What a process did.
#[derive(Debug)]
pub struct Out {
    /// Exit code.
    pub code: i32,
    /// stdout bytes.
    pub stdout: Vec<u8>,
    /// stderr bytes.
    pub stderr: Vec<u8>,
}

impl Out {
    /// stderr as text.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// stdout as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Exit code, stdout and stderr are exactly these.
    #[track_caller]
    pub fn assert_exact(&self, code: i32, stdout: &str, stderr: &str, what: &str) {
        assert_eq!(
            (
                self.code,
                self.stdout_text().as_str(),
                self.stderr_text().as_str()
            ),
            (code, stdout, stderr),
            "{what}"
        );
        assert_eq!(self.stdout, stdout.as_bytes(), "{what}");
        assert_eq!(self.stderr, stderr.as_bytes(), "{what}");
    }

    /// A failure as oned must see it: this code, nothing on stdout, and exactly `line` as the
    /// only stderr line (which therefore never starts with `-`).
    #[track_caller]
    pub fn assert_fails_with(&self, code: i32, line: &str, what: &str) {
        assert!(
            !line.contains('\n') && !line.is_empty() && !line.starts_with('-'),
            "bad expectation {line:?}"
        );
        self.assert_exact(code, "", &format!("{line}\n"), what);
    }
}

/// `one-bsud` installed the way oned sees it:
///
/// ```text
/// <dir>/remotes/datastore/bsud/<action>   entry scripts (copied from the repository)
/// <dir>/remotes/tm/bsud/<action>
/// <dir>/remotes/tm/bsud/one-bsud          the built binary
/// <dir>/x/{datastore,tm}/bsud/<action>    symlinks to the binary
/// <dir>/bsud.toml                         configuration (BSUD_CONFIG)
/// ```
pub struct Install {
    dir: tempfile::TempDir,
}

impl Install {
    /// An install with the default test configuration.
    pub fn new() -> Install {
        Install::with_config("")
    }

    /// An install whose configuration file also holds `extra` (TOML lines).
    pub fn with_config(extra: &str) -> Install {
        // Inside the target directory, so the binary can be hard-linked rather than copied.
        let dir = tempfile::Builder::new()
            .prefix("contract-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let install = Install { dir };
        copy_tree(&repo().join("remotes"), &install.path("remotes"));
        let bin = install.binary();
        if std::fs::hard_link(env!("CARGO_BIN_EXE_one-bsud"), &bin).is_err() {
            std::fs::copy(env!("CARGO_BIN_EXE_one-bsud"), &bin).unwrap();
        }
        for (kind, actions) in [(Kind::Ds, DS_ACTIONS), (Kind::Tm, TM_ACTIONS)] {
            let folder = install.path(&format!("x/{}/bsud", kind.folder()));
            std::fs::create_dir_all(&folder).unwrap();
            for a in actions {
                std::os::unix::fs::symlink(&bin, folder.join(a)).unwrap();
            }
        }
        let config = format!(
            "journald = false\nlock_dir = {:?}\n{extra}\n",
            install.path("locks")
        );
        std::fs::write(install.config(), config).unwrap();
        install
    }

    /// A path inside the install directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The installed binary.
    pub fn binary(&self) -> PathBuf {
        self.path("remotes/tm/bsud/one-bsud")
    }

    /// The configuration file.
    pub fn config(&self) -> PathBuf {
        self.path("bsud.toml")
    }

    /// The entry script oned would run.
    pub fn entry(&self, kind: Kind, action: &str) -> PathBuf {
        self.path(&format!("remotes/{}/bsud/{action}", kind.folder()))
    }

    /// The symlink named after the action.
    pub fn symlink(&self, kind: Kind, action: &str) -> PathBuf {
        self.path(&format!("x/{}/bsud/{action}", kind.folder()))
    }

    /// Runs action `action` with `args` and `stdin`, started `via`.
    pub fn run(&self, via: Via, kind: Kind, action: &str, args: &[&str], stdin: &[u8]) -> Out {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        match via {
            Via::Entry => self.exec(&self.entry(kind, action), &args, stdin),
            Via::Symlink => self.exec(&self.symlink(kind, action), &args, stdin),
            Via::Explicit => {
                let mut all: Vec<OsString> = vec![kind.word().into(), action.into()];
                all.extend(args);
                self.exec(&self.binary(), &all, stdin)
            }
        }
    }

    /// Runs `program` with a cleared environment holding only PATH (the entry scripts need
    /// `sh` and `dirname`) and BSUD_CONFIG.
    pub fn exec(&self, program: &Path, args: &[OsString], stdin: &[u8]) -> Out {
        self.exec_env(
            program,
            args,
            stdin,
            &[("BSUD_CONFIG", self.config().as_os_str())],
        )
    }

    /// Like [`Install::exec`] with the given variables besides PATH.
    pub fn exec_env(
        &self,
        program: &Path,
        args: &[OsString],
        stdin: &[u8],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Out {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        let mut pipe = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        // The program may stop reading early (a refused oversized message): a broken pipe
        // is its right, not a test failure.
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        Out {
            code: out
                .status
                .code()
                .unwrap_or_else(|| panic!("{} killed: {:?}", program.display(), out.status)),
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            // std::fs::copy keeps the permission bits (the entries are executable).
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// A testbed (bsud-sim + simulated hosts) with fast cloud state changes (`delay_ms` each).
pub fn testbed(hosts: &[&str], delay_ms: u64) -> bsud::sim::testbed::Testbed {
    testbed_tier(hosts, delay_ms, bsud::sim::testbed::Tier::Sim)
}

/// A testbed of the given tier (the real-kernel tier starts QEMU guests); fails loudly when
/// it cannot start.
pub fn testbed_tier(
    hosts: &[&str],
    delay_ms: u64,
    tier: bsud::sim::testbed::Tier,
) -> bsud::sim::testbed::Testbed {
    let mut o = bsud::sim::testbed::TestbedOpts::new(
        env!("CARGO_BIN_EXE_bsud-sim"),
        env!("CARGO_BIN_EXE_one-bsud"),
    );
    o.hosts = hosts.iter().map(|h| h.to_string()).collect();
    o.tier = tier;
    match bsud::sim::testbed::Testbed::start(o.with_cloud_delay_ms(delay_ms)) {
        Ok(tb) => tb,
        Err(e) => panic!("testbed ({tier:?}) does not start: {e:#}"),
    }
}
