//! The LVM command runner and one typed method per command the agent uses.
//!
//! Invariants:
//! - Every LVM program runs through [`crate::exec`], as argv, with `LVM_SUPPRESS_FD_WARNINGS=1`
//!   and, when the host view sets one, `LVM_SYSTEM_DIR` (the testbed's private lvm.conf). Not
//!   root → `sudo -n <program>` (never a password prompt); LVM_SYSTEM_DIR then crosses sudo with
//!   `--preserve-env`, which the sudoers entry must allow (`SETENV:`), and is never needed in
//!   production where it is unset.
//! - Each command gets the time left before the runner's deadline; none may outlive it.
//! - A failure is an error naming the command, its exit status and the tail of its stderr
//!   (LVM's warnings such as "Activation disabled" are not errors: only the status counts).
//! - Names and tags are the validated types of [`super::names`]; an LV is always addressed as
//!   `<vg>/<lv>`, never by a path LVM would resolve through the filesystem.
//! - Nothing here prompts: commands that could ask a question either get `--yes` where the
//!   answer is known to be safe, or read `/dev/null` so LVM's default answer (no) applies.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{fail, ErrorKind};
use crate::exec::{self, Cmd};

use super::names::{LvName, Tag, VgName};
use super::report::{self, Lv, Pv, Vg};

/// Every program the agent runs through `sudo -n` when it is not root: the LVM commands below
/// and the tools passed to [`Lvm::run_tool`]. install.sh writes the sudoers file from this list
/// (`one-bsud install sudoers`), and a test checks that every program this crate runs that way
/// is in it.
pub const PRIVILEGED_PROGRAMS: &[&str] = &[
    "lvchange", "lvcreate", "lvextend", "lvremove", "lvrename", "lvs", "pvchange", "pvcreate",
    "pvremove", "pvs", "vgchange", "vgcreate", "vgextend", "vgreduce", "vgremove", "vgs", "wipefs",
];

/// Runs LVM commands for one host view until a deadline.
#[derive(Debug, Clone)]
pub struct Lvm {
    system_dir: Option<PathBuf>,
    sudo: bool,
    deadline: Instant,
}

impl Lvm {
    /// A runner for the given `LVM_SYSTEM_DIR` (None: LVM's default `/etc/lvm`) whose commands
    /// must all finish before `deadline`. Uses `sudo -n` unless we are root.
    pub fn new(system_dir: Option<PathBuf>, deadline: Instant) -> Lvm {
        Lvm {
            system_dir,
            sudo: !crate::sys::is_root(),
            deadline,
        }
    }

    /// Forces (or not) the `sudo -n` prefix.
    pub fn with_sudo(mut self, sudo: bool) -> Lvm {
        self.sudo = sudo;
        self
    }

    /// The command for `program args…`, with environment, sudo prefix and the time left.
    pub fn command<S: AsRef<std::ffi::OsStr>>(
        &self,
        program: &str,
        args: &[S],
    ) -> anyhow::Result<Cmd> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(fail(
                ErrorKind::Timeout,
                format!("no time left to run {program}: the operation's deadline has passed"),
            ));
        }
        let mut cmd = if self.sudo {
            let mut c = Cmd::new("sudo").arg("-n");
            if self.system_dir.is_some() {
                c = c.arg("--preserve-env=LVM_SYSTEM_DIR,LVM_SUPPRESS_FD_WARNINGS");
            }
            c.arg(program)
        } else {
            Cmd::new(program)
        };
        cmd = cmd
            .args(args)
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .timeout(left.max(Duration::from_millis(1)));
        if let Some(d) = &self.system_dir {
            cmd = cmd.env("LVM_SYSTEM_DIR", d);
        }
        Ok(cmd)
    }

    fn run<S: AsRef<std::ffi::OsStr>>(&self, program: &str, args: &[S]) -> anyhow::Result<Vec<u8>> {
        let cmd = self.command(program, args)?;
        match exec::run(&cmd) {
            Ok(out) => Ok(out.stdout),
            Err(e @ exec::ExecError::TimedOut { .. }) => {
                Err(fail(ErrorKind::Timeout, e.to_string()))
            }
            Err(e) => Err(anyhow::Error::new(e)),
        }
    }

    /// Runs another privileged tool (wipefs, blkid) the same way; returns its stdout.
    pub fn run_tool<S: AsRef<std::ffi::OsStr>>(
        &self,
        program: &str,
        args: &[S],
    ) -> anyhow::Result<Vec<u8>> {
        self.run(program, args)
    }

    fn report(&self, program: &str, fields: &str, extra: &[&str]) -> anyhow::Result<Vec<u8>> {
        let mut args = vec![
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            fields,
        ];
        args.extend_from_slice(extra);
        self.run(program, &args)
    }

    /// All PVs LVM sees, orphans included.
    pub fn pvs(&self) -> anyhow::Result<Vec<Pv>> {
        report::parse_pvs(&self.report("pvs", report::PV_FIELDS, &[])?)
    }

    /// The VG, or None when it does not exist.
    pub fn vg(&self, vg: &VgName) -> anyhow::Result<Option<Vg>> {
        let sel = format!("vg_name={vg}");
        let vgs = report::parse_vgs(&self.report("vgs", report::VG_FIELDS, &["-S", &sel])?)?;
        Ok(vgs.into_iter().find(|v| v.name == vg.as_str()))
    }

    /// Every VG this host's LVM sees.
    pub fn vgs_all(&self) -> anyhow::Result<Vec<Vg>> {
        report::parse_vgs(&self.report("vgs", report::VG_FIELDS, &[])?)
    }

    /// `vgchange [--deltag t]… [--addtag t]… <vg>`: one metadata commit.
    pub fn vgchange_tags(&self, vg: &VgName, add: &[Tag], del: &[Tag]) -> anyhow::Result<()> {
        self.run("vgchange", &tag_args(add, del, vg.as_str()))
            .map(drop)
    }

    /// The VG's LVs with their segments (empty when the VG does not exist).
    pub fn lvs(&self, vg: &VgName) -> anyhow::Result<Vec<Lv>> {
        let sel = format!("vg_name={vg}");
        let out = self.report("lvs", report::SEG_FIELDS, &["--segments", "-S", &sel])?;
        let lvs = report::parse_lv_segments(&out)?;
        Ok(lvs.into_iter().filter(|l| l.vg == vg.as_str()).collect())
    }

    /// One LV, or None.
    pub fn lv(&self, vg: &VgName, lv: &LvName) -> anyhow::Result<Option<Lv>> {
        Ok(self.lvs(vg)?.into_iter().find(|l| l.name == lv.as_str()))
    }

    /// `pvcreate <dev>`. No `--yes`: a signature on the device makes LVM ask, read "no" from
    /// /dev/null and fail, which is the safe answer.
    pub fn pvcreate(&self, dev: &Path) -> anyhow::Result<()> {
        self.run("pvcreate", &[dev.as_os_str()]).map(drop)
    }

    /// `vgcreate <vg> <dev>`.
    pub fn vgcreate(&self, vg: &VgName, dev: &Path) -> anyhow::Result<()> {
        self.run("vgcreate", &[vg.as_ref(), dev.as_os_str()])
            .map(drop)
    }

    /// `vgextend <vg> <dev>`.
    pub fn vgextend(&self, vg: &VgName, dev: &Path) -> anyhow::Result<()> {
        self.run("vgextend", &[vg.as_ref(), dev.as_os_str()])
            .map(drop)
    }

    /// `vgreduce <vg> <dev>`.
    pub fn vgreduce(&self, vg: &VgName, dev: &Path) -> anyhow::Result<()> {
        self.run("vgreduce", &[vg.as_ref(), dev.as_os_str()])
            .map(drop)
    }

    /// `pvremove <dev>`.
    pub fn pvremove(&self, dev: &Path) -> anyhow::Result<()> {
        self.run("pvremove", &[dev.as_os_str()]).map(drop)
    }

    /// `vgremove <vg>` (callers check it holds no LV; no `-f`).
    pub fn vgremove(&self, vg: &VgName) -> anyhow::Result<()> {
        self.run("vgremove", &[vg.as_str()]).map(drop)
    }

    /// `lvcreate -n <lv> -L <bytes>b -Zn -Wn --yes [--addtag t]… <vg>`: LVM neither zeroes nor
    /// wipes signatures; the agent zeroes stale extents itself (see `host::zero`).
    pub fn lvcreate(
        &self,
        vg: &VgName,
        lv: &LvName,
        size_bytes: u64,
        tags: &[Tag],
    ) -> anyhow::Result<()> {
        let size = size_arg(size_bytes)?;
        let mut args: Vec<&str> = vec!["-n", lv.as_str(), "-L", &size, "-Zn", "-Wn", "--yes"];
        for t in tags {
            args.extend(["--addtag", t.as_str()]);
        }
        args.push(vg.as_str());
        self.run("lvcreate", &args).map(drop)
    }

    /// `lvcreate --type thin-pool -L <data> --poolmetadatasize <meta> --chunksize <chunk> -Zy`:
    /// the pool zeroes every block it provisions (a thin volume never shows bytes of a deleted
    /// one). LVM's default `errorwhenfull n` stays: a write to a full pool waits (the kernel's
    /// `no_space_timeout`, 60 s) for the drive to grow instead of failing at once.
    pub fn lvcreate_thin_pool(
        &self,
        vg: &VgName,
        pool: &LvName,
        data_bytes: u64,
        metadata_bytes: u64,
        chunk_bytes: u64,
        tags: &[Tag],
    ) -> anyhow::Result<()> {
        let (size, meta, chunk) = (
            size_arg(data_bytes)?,
            size_arg(metadata_bytes)?,
            size_arg(chunk_bytes)?,
        );
        let mut args: Vec<&str> = vec![
            "--type",
            "thin-pool",
            "-n",
            pool.as_str(),
            "-L",
            &size,
            "--poolmetadatasize",
            &meta,
            "--chunksize",
            &chunk,
            "-Zy",
            "--yes",
        ];
        for t in tags {
            args.extend(["--addtag", t.as_str()]);
        }
        args.push(vg.as_str());
        self.run("lvcreate", &args).map(drop)
    }

    /// `lvcreate --type thin -V <bytes>b -n <lv> --thinpool <pool> <vg>`: a thin volume, which
    /// reads zeroes until written.
    pub fn lvcreate_thin(
        &self,
        vg: &VgName,
        pool: &LvName,
        lv: &LvName,
        size_bytes: u64,
        tags: &[Tag],
    ) -> anyhow::Result<()> {
        let size = size_arg(size_bytes)?;
        let mut args: Vec<&str> = vec![
            "--type",
            "thin",
            "-V",
            &size,
            "-n",
            lv.as_str(),
            "--thinpool",
            pool.as_str(),
            "--yes",
        ];
        for t in tags {
            args.extend(["--addtag", t.as_str()]);
        }
        args.push(vg.as_str());
        self.run("lvcreate", &args).map(drop)
    }

    /// `lvcreate -s -kn -n <lv> <vg>/<origin>`: a thin snapshot of a thin volume, activated
    /// like any other LV (`-kn`: no activation skip).
    pub fn lvcreate_thin_snapshot(
        &self,
        vg: &VgName,
        origin: &LvName,
        lv: &LvName,
        tags: &[Tag],
    ) -> anyhow::Result<()> {
        let target = lv_arg(vg, origin);
        let mut args: Vec<&str> = vec!["-s", "-kn", "-n", lv.as_str(), "--yes"];
        for t in tags {
            args.extend(["--addtag", t.as_str()]);
        }
        args.push(&target);
        self.run("lvcreate", &args).map(drop)
    }

    /// `lvextend --poolmetadatasize <bytes>b <vg>/<pool>`.
    pub fn lvextend_pool_metadata(
        &self,
        vg: &VgName,
        pool: &LvName,
        metadata_bytes: u64,
    ) -> anyhow::Result<()> {
        let size = size_arg(metadata_bytes)?;
        self.run(
            "lvextend",
            &["--poolmetadatasize", &size, &lv_arg(vg, pool)],
        )
        .map(drop)
    }

    /// `lvextend -l +<percent>%FREE <vg>/<lv>`: a share of the VG's free extents.
    pub fn lvextend_free_share(&self, vg: &VgName, lv: &LvName, percent: u8) -> anyhow::Result<()> {
        let share = format!("+{}%FREE", percent.min(100));
        self.run("lvextend", &["-l", &share, &lv_arg(vg, lv)])
            .map(drop)
    }

    /// `lvextend -L <bytes>b <vg>/<lv>`.
    pub fn lvextend(&self, vg: &VgName, lv: &LvName, size_bytes: u64) -> anyhow::Result<()> {
        let size = size_arg(size_bytes)?;
        self.run("lvextend", &["-L", &size, &lv_arg(vg, lv)])
            .map(drop)
    }

    /// `lvremove -f <vg>/<lv>` (no prompt; an LV in use still makes it fail).
    pub fn lvremove(&self, vg: &VgName, lv: &LvName) -> anyhow::Result<()> {
        self.run("lvremove", &["-f", &lv_arg(vg, lv)]).map(drop)
    }

    /// `lvrename <vg> <from> <to>`.
    pub fn lvrename(&self, vg: &VgName, from: &LvName, to: &LvName) -> anyhow::Result<()> {
        self.run("lvrename", &[vg.as_str(), from.as_str(), to.as_str()])
            .map(drop)
    }

    /// `lvchange [--deltag t]… [--addtag t]… <vg>/<lv>`: one metadata commit.
    pub fn lvchange_tags(
        &self,
        vg: &VgName,
        lv: &LvName,
        add: &[Tag],
        del: &[Tag],
    ) -> anyhow::Result<()> {
        let target = lv_arg(vg, lv);
        self.run("lvchange", &tag_args(add, del, &target)).map(drop)
    }

    /// `pvchange [--deltag t]… [--addtag t]… <dev>` (PV in a VG: orphans cannot hold tags).
    pub fn pvchange_tags(&self, dev: &Path, add: &[Tag], del: &[Tag]) -> anyhow::Result<()> {
        let target = dev.to_string_lossy();
        self.run("pvchange", &tag_args(add, del, &target)).map(drop)
    }

    /// `lvchange -ay <vg>/<lv>`: production activation (a no-op with the testbed's
    /// `activation = 0`).
    pub fn lvchange_activate(&self, vg: &VgName, lv: &LvName) -> anyhow::Result<()> {
        self.run("lvchange", &["-ay", &lv_arg(vg, lv)]).map(drop)
    }
}

/// `-L` takes bytes only in whole 512-byte sectors; LVM rounds further up to extents anyway.
fn size_arg(bytes: u64) -> anyhow::Result<String> {
    bytes
        .div_ceil(512)
        .checked_mul(512)
        .map(|b| format!("{b}b"))
        .ok_or_else(|| {
            fail(
                ErrorKind::BadInput,
                format!("size {bytes} bytes is too large"),
            )
        })
}

fn lv_arg(vg: &VgName, lv: &LvName) -> String {
    format!("{vg}/{lv}")
}

fn tag_args<'a>(add: &'a [Tag], del: &'a [Tag], target: &'a str) -> Vec<&'a str> {
    let mut args = Vec::new();
    for t in del {
        args.extend(["--deltag", t.as_str()]);
    }
    for t in add {
        args.extend(["--addtag", t.as_str()]);
    }
    args.push(target);
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(c: &Cmd) -> Vec<String> {
        std::iter::once(c.program())
            .chain(c.get_args().iter().map(|a| a.as_os_str()))
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn sudo_prefix_and_environment() {
        let far = Instant::now() + Duration::from_secs(60);
        let lvm = Lvm::new(Some("/h/etc/lvm".into()), far).with_sudo(true);
        let c = lvm.command("lvs", &["-o", "lv_name"]).unwrap();
        assert_eq!(
            argv(&c),
            [
                "sudo",
                "-n",
                "--preserve-env=LVM_SYSTEM_DIR,LVM_SUPPRESS_FD_WARNINGS",
                "lvs",
                "-o",
                "lv_name"
            ]
        );
        assert!(c.get_timeout() <= Duration::from_secs(60));
        let root = Lvm::new(None, far).with_sudo(false);
        assert_eq!(argv(&root.command("pvs", &["x"]).unwrap()), ["pvs", "x"]);
        let plain_sudo = Lvm::new(None, far).with_sudo(true);
        assert_eq!(
            argv(&plain_sudo.command("pvs", &["x"]).unwrap()),
            ["sudo", "-n", "pvs", "x"]
        );
    }

    #[test]
    fn past_deadline_refuses_to_start() {
        let lvm = Lvm::new(None, Instant::now() - Duration::from_secs(1));
        let e = lvm.command("lvs", &["x"]).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 5);
    }

    #[test]
    fn sizes_round_up_to_sectors() {
        assert_eq!(size_arg(1).unwrap(), "512b");
        assert_eq!(size_arg(4096).unwrap(), "4096b");
        assert_eq!(size_arg(12581912).unwrap(), "12582400b");
        assert!(size_arg(u64::MAX).is_err());
    }

    #[test]
    fn tag_changes_are_one_command() {
        let add: Vec<Tag> = vec!["one.bsud.hwm=12".parse().unwrap()];
        let del: Vec<Tag> = vec!["one.bsud.hwm=5".parse().unwrap()];
        assert_eq!(
            tag_args(&add, &del, "/dev/sdb"),
            [
                "--deltag",
                "one.bsud.hwm=5",
                "--addtag",
                "one.bsud.hwm=12",
                "/dev/sdb"
            ]
        );
    }
}
