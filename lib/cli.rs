//! The command line: one clap definition for the three ways `one-bsud` is started.
//!
//! 1. As an action entry: oned executes `remotes/{datastore,tm}/bsud/<action>`, a tiny script
//!    that runs `one-bsud --invoked-as "$0" "$@"` (the remotes tree is copied with symlinks
//!    dereferenced by `onehost sync`, so the entries must not be copies of the binary).
//! 2. Through a symlink named after the action inside a `datastore/<drv>` or `tm/<drv>` folder
//!    (argv[0] is that path).
//! 3. Explicitly by people: `one-bsud ds cp …`, `one-bsud tm clone …`.
//!
//! Forms 1 and 2 are rewritten by [`invocation_argv`] into form 3 before clap sees anything,
//! so the entry forms and the manual form cannot drift apart. The kind (`ds`/`tm`) comes from
//! the folder above the driver folder: `clone`, `monitor` and `resize` exist in both. A TM
//! action may carry a `.<tm>` suffix (`clone.ssh`), which is stripped.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use clap::{Args, Parser, Subcommand};

use crate::error::{fail, ErrorKind};

/// one-bsud: OpenNebula storage driver on self-growing LVM drives of Outscale BSU volumes.
#[derive(Debug, Parser)]
#[command(
    name = "one-bsud",
    version,
    about = "OpenNebula storage driver (DS + TM `bsud`): images and VM disks as LVM volumes on drives made of Outscale BSU volumes that grow and shrink by themselves",
    long_about = None,
    after_help = "oned runs the actions through remotes/{datastore,tm}/bsud/<action>; people run the same code with `one-bsud ds <action> …` / `one-bsud tm <action> …`. Configuration: /etc/one/bsud.toml (or $BSUD_CONFIG). Exit codes: 0 ok, 1 failed, 2 bad input, 3 configuration, 4 not implemented, 5 timed out, 6 refused."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a datastore action exactly as oned would (message as argv, `- id` + stdin, or `id` + stdin).
    #[command(subcommand)]
    Ds(DsAction),
    /// Run a transfer-manager action exactly as oned would.
    #[command(subcommand)]
    Tm(TmAction),
    /// Print a driver message (base64 or XML, from an argument, a file or stdin) as pretty JSON.
    Decode(DecodeArgs),
    /// Host agent: operations run on a host over ssh by the frontend (JSON on stdout).
    #[command(subcommand)]
    Host(crate::host::agent::HostCmd),
    /// Inspect and manage drives (BSU-backed volume groups).
    #[command(subcommand)]
    Drive(crate::drive::cli::DriveCmd),
    /// Inspect what the cloud holds for our tags.
    #[command(subcommand)]
    Cloud(crate::drive::cli::CloudCmd),
    /// Check the site end to end (configuration, credentials, API, every host's ssh, agent, metadata, LVM, sudo, drives, device slots) and say what is wrong.
    Doctor(crate::ops::doctor::DoctorArgs),
    /// Installation steps install.sh runs: register bsud in oned.conf and vmm_execrc, print the hosts' sudoers file.
    #[command(subcommand)]
    Install(crate::ops::install::InstallCmd),
    /// Run the demo: a simulated cloud and two hosts (root, real LVM), one VM's whole life through the real action entries, every byte verified, nothing left.
    Demo(crate::sim::demo::DemoArgs),
    /// Host monitoring probes (run by OpenNebula's monitord on each host): drive capacity, VM disk sizes.
    #[command(subcommand)]
    Probe(crate::ops::probe::ProbeCmd),
}

/// Raw arguments of an action, passed on untouched (they may start with `-`).
#[derive(Debug, Clone, Args)]
pub struct ActionArgs {
    /// The arguments oned passes.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<OsString>,
}

/// Datastore actions.
#[derive(Debug, Subcommand)]
#[command(rename_all = "snake_case")]
pub enum DsAction {
    /// Import an image (file, http(s) URL) into a new image LV; prints `SOURCE raw`.
    Cp(ActionArgs),
    /// Create an empty datablock (optionally formatted); prints `SOURCE`.
    Mkfs(ActionArgs),
    /// Remove an image LV and its snapshots, then let the drive shrink.
    Rm(ActionArgs),
    /// Print the size in MB an import will need.
    Stat(ActionArgs),
    /// Print USED_MB/FREE_MB/TOTAL_MB of the datastore's drive.
    Monitor(ActionArgs),
    /// Copy an image into a new image; prints `SOURCE raw`.
    Clone(ActionArgs),
    /// Print the IMPORT_INFO document for a marketplace export.
    Export(ActionArgs),
    /// Delete an image snapshot.
    SnapDelete(ActionArgs),
    /// Revert an image to a snapshot.
    SnapRevert(ActionArgs),
    /// Make a snapshot the image content and drop the snapshots.
    SnapFlatten(ActionArgs),
}

/// Transfer-manager actions.
#[derive(Debug, Subcommand)]
#[command(rename_all = "snake_case")]
pub enum TmAction {
    /// Copy a non-persistent image to a VM disk LV on the host.
    Clone(ActionArgs),
    /// Copy a persistent image to a VM disk LV (saved back by mvds).
    Ln(ActionArgs),
    /// Move a disk or VM directory (stop, undeploy, resume, cold migrate).
    Mv(ActionArgs),
    /// Save a persistent disk back into its image, then remove the disk LV.
    Mvds(ActionArgs),
    /// Save a disk (or one of its snapshots) into a new image (disk-saveas).
    Cpds(ActionArgs),
    /// Delete a disk or a VM directory.
    Delete(ActionArgs),
    /// Create a volatile disk (formatted when the VM template gives FS).
    Mkimage(ActionArgs),
    /// Create a swap disk.
    Mkswap(ActionArgs),
    /// Build the context ISO and place it as disk.N on the host.
    Context(ActionArgs),
    /// Grow a disk.
    Resize(ActionArgs),
    /// Live migration: prepare disks on the destination host.
    Premigrate(ActionArgs),
    /// Live migration: release disks on the source host.
    Postmigrate(ActionArgs),
    /// Live migration failed: remove what premigrate prepared.
    Failmigrate(ActionArgs),
    /// Snapshot a disk (VM powered off).
    SnapCreate(ActionArgs),
    /// Snapshot a disk of a running VM.
    SnapCreateLive(ActionArgs),
    /// Delete a disk snapshot.
    SnapDelete(ActionArgs),
    /// Revert a disk to a snapshot.
    SnapRevert(ActionArgs),
    /// Print capacity of a (shared) system datastore.
    Monitor(ActionArgs),
    /// Host probe: per-VM disk sizes on this host (run by the monitoring probes).
    MonitorDs(ActionArgs),
}

/// `decode` arguments.
#[derive(Debug, Clone, Args)]
pub struct DecodeArgs {
    /// The message (base64 or XML), or a file holding it; stdin when absent or `-`.
    pub input: Option<String>,
}

impl DsAction {
    /// The action name and its raw arguments.
    pub fn parts(&self) -> (&'static str, &[OsString]) {
        use DsAction::*;
        let (n, a) = match self {
            Cp(a) => ("cp", a),
            Mkfs(a) => ("mkfs", a),
            Rm(a) => ("rm", a),
            Stat(a) => ("stat", a),
            Monitor(a) => ("monitor", a),
            Clone(a) => ("clone", a),
            Export(a) => ("export", a),
            SnapDelete(a) => ("snap_delete", a),
            SnapRevert(a) => ("snap_revert", a),
            SnapFlatten(a) => ("snap_flatten", a),
        };
        (n, &a.args)
    }
}

impl TmAction {
    /// The action name and its raw arguments.
    pub fn parts(&self) -> (&'static str, &[OsString]) {
        use TmAction::*;
        let (n, a) = match self {
            Clone(a) => ("clone", a),
            Ln(a) => ("ln", a),
            Mv(a) => ("mv", a),
            Mvds(a) => ("mvds", a),
            Cpds(a) => ("cpds", a),
            Delete(a) => ("delete", a),
            Mkimage(a) => ("mkimage", a),
            Mkswap(a) => ("mkswap", a),
            Context(a) => ("context", a),
            Resize(a) => ("resize", a),
            Premigrate(a) => ("premigrate", a),
            Postmigrate(a) => ("postmigrate", a),
            Failmigrate(a) => ("failmigrate", a),
            SnapCreate(a) => ("snap_create", a),
            SnapCreateLive(a) => ("snap_create_live", a),
            SnapDelete(a) => ("snap_delete", a),
            SnapRevert(a) => ("snap_revert", a),
            Monitor(a) => ("monitor", a),
            MonitorDs(a) => ("monitor_ds", a),
        };
        (n, &a.args)
    }
}

/// Every command path (`[]`, `["ds"]`, `["ds", "cp"]`, …) with its one-line description, so
/// tests can check that each `--help` says what the command does.
pub fn command_descriptions() -> Vec<(Vec<String>, String)> {
    fn walk(cmd: &clap::Command, prefix: Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
        let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
        out.push((prefix.clone(), about));
        for sub in cmd.get_subcommands() {
            let mut p = prefix.clone();
            p.push(sub.get_name().to_string());
            walk(sub, p, out);
        }
    }
    let mut out = Vec::new();
    walk(
        &<Cli as clap::CommandFactory>::command(),
        Vec::new(),
        &mut out,
    );
    out
}

/// The hidden first argument the action entries pass: `one-bsud --invoked-as "$0" "$@"`.
pub const INVOKED_AS: &str = "--invoked-as";

/// Rewrites an action-entry or symlink invocation into the explicit form
/// (`one-bsud ds cp …`). Other invocations are returned unchanged.
pub fn invocation_argv(argv: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let mut it = argv.into_iter();
    let argv0 = it.next().unwrap_or_else(|| OsString::from("one-bsud"));
    let rest: Vec<OsString> = it.collect();
    if rest.first().map(|a| a.as_os_str()) == Some(OsStr::new(INVOKED_AS)) {
        let path = rest.get(1).ok_or_else(|| {
            fail(
                ErrorKind::BadInput,
                format!("{INVOKED_AS} needs the entry path"),
            )
        })?;
        let (kind, action) = action_of_path(Path::new(path))?.ok_or_else(|| {
            fail(
                ErrorKind::BadInput,
                format!(
                    "{} is not an action entry (expected …/datastore/<driver>/<action> or …/tm/<driver>/<action>)",
                    Path::new(path).display()
                ),
            )
        })?;
        return Ok(explicit(argv0, kind, action, rest[2..].to_vec()));
    }
    match action_of_path(Path::new(&argv0))? {
        Some((kind, action)) => Ok(explicit(argv0, kind, action, rest)),
        None => {
            let mut v = vec![argv0];
            v.extend(rest);
            Ok(v)
        }
    }
}

/// `one-bsud <kind> <action> -- <args>`: the `--` makes every argument oned passes data, even
/// one that looks like an option (`--help` must never turn an action into a help screen that
/// exits 0).
fn explicit(argv0: OsString, kind: &str, action: String, rest: Vec<OsString>) -> Vec<OsString> {
    let mut v = vec![argv0, kind.into(), action.into(), "--".into()];
    v.extend(rest);
    v
}

/// The binary's own file name: it is installed inside `tm/bsud/` beside the entries (and run
/// from there as the host agent), so that name is never an action.
pub const BINARY_NAME: &str = "one-bsud";

/// `(kind, action)` when `path` is `…/datastore/<drv>/<action>` or `…/tm/<drv>/<action[.tm]>`.
/// `Ok(None)` when the path does not look like an action entry at all; an error when it does
/// but names an action this driver does not have.
pub fn action_of_path(path: &Path) -> anyhow::Result<Option<(&'static str, String)>> {
    let Some(name) = path.file_name().and_then(OsStr::to_str) else {
        return Ok(None);
    };
    if name == BINARY_NAME {
        return Ok(None);
    }
    let Some(kind_dir) = path
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(OsStr::to_str)
    else {
        return Ok(None);
    };
    let (kind, known): (&str, &[&str]) = match kind_dir {
        "datastore" => ("ds", crate::one::DS_ACTIONS),
        "tm" => ("tm", crate::one::tm::TM_ACTIONS),
        _ => return Ok(None),
    };
    // `clone.ssh` → `clone` (TM mixed mode); a datastore action never has a suffix.
    let base = if kind == "tm" {
        name.split_once('.').map(|(b, _)| b).unwrap_or(name)
    } else {
        name
    };
    if known.contains(&base) {
        Ok(Some((kind, base.to_string())))
    } else {
        Err(fail(
            ErrorKind::NotImplemented,
            format!(
                "{}: unknown {} action {name:?}",
                path.display(),
                if kind == "ds" {
                    "datastore"
                } else {
                    "transfer-manager"
                }
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn rw(v: &[&str]) -> Vec<String> {
        invocation_argv(v.iter().map(OsString::from).collect())
            .unwrap()
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn kind_comes_from_the_folder() {
        assert_eq!(
            rw(&["/var/lib/one/remotes/datastore/bsud/clone", "b64", "7"]),
            [
                "/var/lib/one/remotes/datastore/bsud/clone",
                "ds",
                "clone",
                "--",
                "b64",
                "7"
            ]
        );
        assert_eq!(
            rw(&["/var/lib/one/remotes/tm/bsud/clone", "a:b", "c:d", "1", "2"])[1..3],
            ["tm", "clone"]
        );
        assert_eq!(rw(&["x/tm/bsud/monitor", "100"])[1..3], ["tm", "monitor"]);
        assert_eq!(
            rw(&["x/datastore/bsud/monitor", "100"])[1..3],
            ["ds", "monitor"]
        );
    }

    #[test]
    fn entry_script_form_and_suffix() {
        assert_eq!(
            rw(&[
                "/opt/one-bsud",
                "--invoked-as",
                "/var/lib/one/remotes/tm/bsud/clone.ssh",
                "a",
                "-"
            ]),
            ["/opt/one-bsud", "tm", "clone", "--", "a", "-"]
        );
    }

    #[test]
    fn option_lookalikes_from_oned_stay_data() {
        for argv0 in ["/r/tm/bsud/delete", "/usr/bin/one-bsud"] {
            let mut argv = vec![argv0];
            if argv0.ends_with("one-bsud") {
                argv.extend([INVOKED_AS, "/r/tm/bsud/delete"]);
            }
            argv.extend(["--help", "1", "2"]);
            let cli = Cli::try_parse_from(rw(&argv)).unwrap();
            match cli.command {
                Command::Tm(a) => assert_eq!(
                    a.parts(),
                    ("delete", &["--help".into(), "1".into(), "2".into()][..])
                ),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_installed_binary_is_not_an_action() {
        assert_eq!(
            rw(&["/var/tmp/one/tm/bsud/one-bsud", "host", "x"]),
            ["/var/tmp/one/tm/bsud/one-bsud", "host", "x"]
        );
        assert!(invocation_argv(vec![
            "x".into(),
            INVOKED_AS.into(),
            "/r/tm/bsud/one-bsud".into()
        ])
        .is_err());
    }

    #[test]
    fn plain_invocations_are_untouched() {
        assert_eq!(rw(&["one-bsud", "decode"]), ["one-bsud", "decode"]);
        assert_eq!(
            rw(&["/usr/bin/one-bsud", "ds", "cp"]),
            ["/usr/bin/one-bsud", "ds", "cp"]
        );
        assert_eq!(rw(&[""]), [""]);
        assert_eq!(rw(&["/"]), ["/"]);
    }

    #[test]
    fn unknown_actions_in_driver_folders_are_refused() {
        let e = invocation_argv(vec!["/r/datastore/bsud/backup".into()]).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 4);
        assert!(invocation_argv(vec!["x".into(), INVOKED_AS.into()]).is_err());
        assert!(
            invocation_argv(vec!["x".into(), INVOKED_AS.into(), "/usr/bin/foo".into()]).is_err()
        );
    }

    #[test]
    fn raw_action_args_keep_dashes() {
        let cli = Cli::try_parse_from(["one-bsud", "ds", "cp", "-", "7"]).unwrap();
        match cli.command {
            Command::Ds(a) => assert_eq!(a.parts(), ("cp", &["-".into(), "7".into()][..])),
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from([
            "one-bsud",
            "tm",
            "snap_create_live",
            "h:/d/disk.0",
            "1",
            "2",
            "3",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Tm(TmAction::SnapCreateLive(_))
        ));
    }
}
