//! `one-bsud install …`: the parts of install.sh that must not be done with sed.
//!
//! - `install conf`: registers the driver in oned.conf and vmm_execrc ([`super::register`]).
//!   Both files are planned before either is written; a file that needs no change is not
//!   touched (no backup, same bytes, same mtime); a file that changes is first copied to
//!   `<file>.bsud-<UTC timestamp>` and then replaced atomically (temporary file in the same
//!   directory, same mode and owner, fsync, rename), so oned never reads half a file.
//! - `install sudoers`: prints the sudoers file for hosts, from
//!   [`crate::lvm::command::PRIVILEGED_PROGRAMS`] with absolute paths.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

use super::register::{self, Plan};
use crate::error::{fail, ErrorKind};
use crate::one::output::ActionOutput;

/// `one-bsud install …`.
#[derive(Debug, Subcommand)]
pub enum InstallCmd {
    /// Register bsud in oned.conf (TM_MAD, DATASTORE_MAD, TM_MAD_CONF, DS_MAD_CONF, INHERIT_DATASTORE_ATTR) and vmm_execrc (LIVE_DISK_SNAPSHOTS), backing each changed file up first.
    Conf(ConfArgs),
    /// Print the sudoers file hosts need: exactly the programs the host agent runs with sudo -n.
    Sudoers(SudoersArgs),
}

/// `install conf` arguments.
#[derive(Debug, Clone, Args)]
pub struct ConfArgs {
    /// oned.conf to edit.
    #[arg(long, value_name = "PATH")]
    pub oned_conf: Option<PathBuf>,
    /// vmm_execrc to edit.
    #[arg(long, value_name = "PATH")]
    pub vmm_execrc: Option<PathBuf>,
    /// Print the changes without writing anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// `install sudoers` arguments.
#[derive(Debug, Clone, Args)]
pub struct SudoersArgs {
    /// The user oned and the host agent run as.
    #[arg(long, default_value = "oneadmin", value_parser = parse_user)]
    pub user: String,
}

fn parse_user(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a plain user name"))
    }
}

/// Runs `one-bsud install …`.
pub fn run(cmd: InstallCmd) -> anyhow::Result<ActionOutput> {
    match cmd {
        InstallCmd::Conf(a) => conf(&a).map(ActionOutput::Document),
        InstallCmd::Sudoers(a) => {
            let (text, missing) = sudoers_text(&a.user, find_program);
            for p in missing {
                tracing::warn!(
                    "{p} is not installed here; the sudoers file names /usr/sbin/{p} (install lvm2 and util-linux)"
                );
            }
            Ok(ActionOutput::Document(text))
        }
    }
}

struct Target {
    path: PathBuf,
    old: String,
    plan: Plan,
}

fn conf(a: &ConfArgs) -> anyhow::Result<String> {
    if a.oned_conf.is_none() && a.vmm_execrc.is_none() {
        return Err(fail(
            ErrorKind::BadInput,
            "install conf: give --oned-conf and/or --vmm-execrc",
        ));
    }
    type Planner = fn(&str) -> anyhow::Result<Plan>;
    let planners: [(&Option<PathBuf>, Planner); 2] = [
        (&a.oned_conf, register::plan_oned_conf),
        (&a.vmm_execrc, register::plan_vmm_execrc),
    ];
    let mut targets = Vec::new();
    for (path, planner) in planners {
        let Some(path) = path else { continue };
        // Edit the file itself, not a symlink pointing at it.
        let path = std::fs::canonicalize(path).map_err(|e| {
            fail(
                ErrorKind::Config,
                format!("cannot read {}: {e}; nothing was changed", path.display()),
            )
        })?;
        let old = std::fs::read_to_string(&path).map_err(|e| {
            fail(
                ErrorKind::Config,
                format!("cannot read {}: {e}; nothing was changed", path.display()),
            )
        })?;
        let plan = planner(&old).map_err(|e| {
            fail(
                ErrorKind::Config,
                format!("{}: {e}; nothing was changed", path.display()),
            )
        })?;
        targets.push(Target { path, old, plan });
    }
    let mut report = String::new();
    for t in &targets {
        for n in &t.plan.notes {
            report.push_str(&format!("{}: note: {n}\n", t.path.display()));
        }
        if t.plan.edits.is_empty() {
            report.push_str(&format!(
                "{}: bsud is already registered; unchanged\n",
                t.path.display()
            ));
        } else if a.dry_run {
            report.push_str(&format!(
                "{}: would change (dry run: nothing written):\n{}",
                t.path.display(),
                register::describe(&t.old, &t.plan.edits)
            ));
        }
    }
    if a.dry_run {
        return Ok(report);
    }
    for t in targets.iter().filter(|t| !t.plan.edits.is_empty()) {
        let new = register::apply(&t.old, &t.plan.edits);
        let backup = replace_with_backup(&t.path, &t.old, &new)?;
        report.push_str(&format!(
            "{}: changed (backup: {}):\n",
            t.path.display(),
            backup.display()
        ));
        for e in &t.plan.edits {
            report.push_str(&format!("  - {}\n", e.what));
        }
    }
    Ok(report)
}

/// `<path>.bsud-<timestamp>`, never an existing file.
fn backup_path(path: &Path) -> PathBuf {
    let stamp = utc_stamp(std::time::SystemTime::now());
    let base = format!("{}.bsud-{stamp}", path.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 2;
    while candidate.symlink_metadata().is_ok() {
        candidate = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    candidate
}

/// Writes `content` to a new file `path` with the mode and owner of `like`.
fn write_like(path: &Path, content: &str, like: &std::fs::Metadata) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(content.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    if crate::sys::is_root() {
        std::os::unix::fs::chown(path, Some(like.uid()), Some(like.gid()))
            .with_context(|| format!("setting the owner of {}", path.display()))?;
    }
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(like.permissions().mode() & 0o7777),
    )
    .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(())
}

/// Backs `path` up, then atomically replaces it by `new` (checking first that nobody changed
/// it since it was read). Returns the backup's path.
fn replace_with_backup(path: &Path, old: &str, new: &str) -> anyhow::Result<PathBuf> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let now =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if now != old {
        return Err(fail(
            ErrorKind::Failed,
            format!(
                "{} changed while it was being edited; nothing was written, run again",
                path.display()
            ),
        ));
    }
    let backup = backup_path(path);
    write_like(&backup, old, &meta)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.bsud-tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let res = write_like(&tmp, new, &meta).and_then(|_| {
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
    });
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(backup)
}

/// `YYYYmmddTHHMMSSZ`.
fn utc_stamp(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Where sudo's `secure_path` looks; the sudoers file names programs found here.
const SECURE_PATH: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// The absolute path of `program` in [`SECURE_PATH`], if installed.
pub fn find_program(program: &str) -> Option<PathBuf> {
    SECURE_PATH
        .iter()
        .map(|d| Path::new(d).join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The sudoers file for `user`, and the programs `find` did not find (named under /usr/sbin,
/// where Debian and RHEL install them).
pub fn sudoers_text(user: &str, find: impl Fn(&str) -> Option<PathBuf>) -> (String, Vec<String>) {
    let mut missing = Vec::new();
    let paths: Vec<String> = crate::lvm::command::PRIVILEGED_PROGRAMS
        .iter()
        .map(|p| match find(p) {
            Some(path) => path.display().to_string(),
            None => {
                missing.push(p.to_string());
                format!("/usr/sbin/{p}")
            }
        })
        .collect();
    let text = format!(
        "# /etc/sudoers.d/one-bsud: written by one-bsud's install.sh (`one-bsud install sudoers`);
# run install.sh again rather than editing it.
#
# The one-bsud host agent runs as {user} over ssh and uses `sudo -n` for exactly these
# programs: the LVM commands and wipefs (the signature check before pvcreate). It reads and
# writes block devices as {user} through the `disk` group, without sudo.
#
# LVM_SYSTEM_DIR is deliberately not kept: an lvm.conf chosen by the caller can name programs
# LVM then runs as root. Production agents never set it (the testbed runs as root, without
# sudo). LVM_SUPPRESS_FD_WARNINGS only silences a warning.
Cmnd_Alias ONE_BSUD_LVM = {list}
Defaults:{user} !requiretty
Defaults:{user} secure_path = \"{secure}\"
Defaults!ONE_BSUD_LVM env_keep += \"LVM_SUPPRESS_FD_WARNINGS\"
{user} ALL=(root) NOPASSWD: ONE_BSUD_LVM
",
        list = paths.join(", \\\n    "),
        secure = SECURE_PATH.join(":"),
    );
    (text, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample install.sh writes parses, and so does every documented value in it.
    #[test]
    fn the_sample_configuration_documents_real_keys() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../share/bsud.toml"))
                .unwrap();
        let parse = |t: &str| {
            toml::from_str::<crate::config::FileConfig>(t).unwrap_or_else(|e| panic!("{e}\n{t}"))
        };
        let as_shipped = parse(&text);
        assert!(as_shipped.frontend_host.is_none() && as_shipped.timeouts.lock.is_none());
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
                {
                    rest.to_string() + "\n"
                }
                _ => l.to_string() + "\n",
            })
            .collect();
        let all = parse(&uncommented);
        let defaults = crate::config::Config::resolve(
            crate::config::FileConfig::default(),
            None,
            &crate::config::Env::default(),
        );
        let documented = crate::config::Config::resolve(all, None, &crate::config::Env::default());
        // The values shown are the defaults (the host name and paths excepted).
        assert_eq!(documented.timeouts.lock, defaults.timeouts.lock);
        assert_eq!(documented.timeouts.transfer, defaults.timeouts.transfer);
        assert_eq!(documented.host_agent, defaults.host_agent);
        assert_eq!(documented.ssh, defaults.ssh);
        assert_eq!(documented.onehost_command, defaults.onehost_command);
        assert_eq!(
            documented.cloud.requests_per_second,
            defaults.cloud.requests_per_second
        );
        assert_eq!(documented.cloud.region.as_deref(), Some("eu-west-2"));
    }

    #[test]
    fn stamps_are_utc_calendar_times() {
        let at = |s: u64| utc_stamp(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_795_400_000), "20261123T021320Z");
        assert_eq!(at(4_107_542_399), "21000228T235959Z");
    }

    #[test]
    fn sudoers_names_every_program_once_with_absolute_paths() {
        let (text, missing) = sudoers_text("oneadmin", |p| {
            (p != "wipefs").then(|| PathBuf::from(format!("/sbin/{p}")))
        });
        assert_eq!(missing, ["wipefs"]);
        for p in crate::lvm::command::PRIVILEGED_PROGRAMS {
            let want = if *p == "wipefs" {
                "/usr/sbin/wipefs".to_string()
            } else {
                format!("/sbin/{p}")
            };
            assert_eq!(
                text.matches(&format!("{want},")).count()
                    + text.matches(&format!("{want}\n")).count(),
                1,
                "{p}"
            );
        }
        assert!(text.contains("oneadmin ALL=(root) NOPASSWD: ONE_BSUD_LVM\n"));
        assert!(text.contains("Defaults:oneadmin !requiretty\n"));
        assert!(!text.contains("SETENV"));
        assert!(parse_user("one admin").is_err() && parse_user("-x").is_err());
    }

    /// Every program this crate runs through the LVM runner (which adds `sudo -n` when not
    /// root) must be in the sudoers list, or hosts fail with "a password is required".
    #[test]
    fn the_sudoers_list_covers_every_privileged_program() {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(Path::new(env!("CARGO_MANIFEST_DIR")), &mut files);
        let mut used = std::collections::BTreeSet::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for marker in ["self.run(", "self.report(", "run_tool("] {
                for (i, _) in text.match_indices(marker) {
                    let rest = text[i + marker.len()..].trim_start();
                    let Some(lit) = rest.strip_prefix('"') else {
                        continue;
                    };
                    let name: String = lit
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                        .collect();
                    // A program name closed by its quote (not this test's own marker strings).
                    if !name.is_empty() && lit[name.len()..].starts_with('"') {
                        used.insert(name);
                    }
                }
            }
        }
        assert!(
            used.contains("lvcreate") && used.contains("wipefs"),
            "{used:?}"
        );
        for p in &used {
            assert!(
                crate::lvm::command::PRIVILEGED_PROGRAMS.contains(&p.as_str()),
                "{p} is run through sudo but missing from PRIVILEGED_PROGRAMS"
            );
        }
    }

    #[test]
    fn conf_changes_a_file_once_and_backs_it_up() {
        let dir = tempfile::tempdir().unwrap();
        let conf_path = dir.path().join("oned.conf");
        let original = "TM_MAD = [ ARGUMENTS = \"-t 15 -d ssh\" ]\nDATASTORE_MAD = [ ARGUMENTS = \"-d fs -s ssh\" ]\n";
        std::fs::write(&conf_path, original).unwrap();
        std::fs::set_permissions(&conf_path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let args = ConfArgs {
            oned_conf: Some(conf_path.clone()),
            vmm_execrc: None,
            dry_run: true,
        };
        let dry = conf(&args).unwrap();
        assert!(dry.contains("would change"), "{dry}");
        assert_eq!(std::fs::read_to_string(&conf_path).unwrap(), original);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let done = conf(&ConfArgs {
            dry_run: false,
            ..args.clone()
        })
        .unwrap();
        assert!(done.contains("changed (backup: "), "{done}");
        let after = std::fs::read_to_string(&conf_path).unwrap();
        assert!(after.contains("-d ssh,bsud"));
        let mode = std::fs::metadata(&conf_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let backup = names
            .iter()
            .find(|n| n.starts_with("oned.conf.bsud-"))
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(backup)).unwrap(),
            original
        );
        let again = conf(&ConfArgs {
            dry_run: false,
            ..args
        })
        .unwrap();
        assert!(again.contains("already registered; unchanged"), "{again}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        assert_eq!(std::fs::read_to_string(&conf_path).unwrap(), after);
    }
}
