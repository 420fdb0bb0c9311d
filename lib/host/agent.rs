//! The host agent: `one-bsud host <op> --flags…`, run on a host over ssh by the frontend
//! (or locally when the host is the frontend). It prints one JSON document on stdout (the
//! response types of [`super::proto`]) and its log lines (`INFO: …`) on stderr; a failure is a
//! non-zero exit (the codes of [`crate::error`]) with the message as the last stderr line.
//!
//! Invariants:
//! - Everything about the surroundings comes from the [`Env`] given to [`run`], read once into
//!   [`HostEnv`]; the process environment is never consulted.
//! - Every operation runs under a deadline (`--deadline-secs`); every LVM command, lock wait,
//!   device wait and zeroing pass gets only the time left.
//! - Every metadata change runs under the VG's host lock (`<lock dir>/vg-<vg>.lock`), so
//!   concurrent agents on one host never interleave their read-decide-change sequences.
//! - Every operation is idempotent: it first reads what LVM says, then does only what is
//!   missing, and its answer says what it did.

use std::io::Read;
use std::time::Duration;

use clap::Subcommand;

use crate::config::Env;
use crate::lock::FileLock;
use crate::lvm::{Lvm, VgName};
use crate::one::output::ActionOutput;

use super::data::{self, ChecksumReq, CopyReq, RecvReq, SendReq};
use super::env::{Deadline, HostEnv};
use super::fs_ops::FormatReq;
use super::proto::{
    IdentityReq, Limits, LvCreateReq, LvExtendReq, LvListReq, LvRemoveReq, LvRenameReq, LvTagReq,
    PoolEnsureReq, PvAddReq, PvRemoveReq, Request, VersionInfo, VersionReq, VgLimitReq,
    VgReportReq, WaitDeviceReq,
};
use super::{devices, lv, metadata, vg};

/// Host agent operations.
#[derive(Debug, Subcommand)]
#[command(rename_all = "kebab-case")]
pub enum HostCmd {
    /// Print this agent's version (the frontend refuses a mismatch).
    Version,
    /// Print this host's VM id, subregion and region from the metadata server.
    Identity {
        #[command(flatten)]
        req: IdentityReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Wait for a linked BSU (`--device /dev/xvdb`) and print the real device it is.
    WaitDevice {
        #[command(flatten)]
        req: WaitDeviceReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Print a VG with its PVs, LVs and segments, the orphan PVs and the BSUs present.
    VgReport {
        #[command(flatten)]
        req: VgReportReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Make a device a PV of the VG (pvcreate, vgcreate or vgextend as needed).
    PvAdd {
        #[command(flatten)]
        req: PvAddReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Record the drive's growth limit on the VG (tag one.bsud.max_size_gib=N) for the probe.
    VgLimit {
        #[command(flatten)]
        req: VgLimitReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Take an empty PV out of the VG and wipe its label (refused while it holds extents).
    PvRemove {
        #[command(flatten)]
        req: PvRemoveReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Create a tagged LV; extents a deleted LV may have used are zeroed.
    LvCreate {
        #[command(flatten)]
        req: LvCreateReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Create the drive's thin pool, or grow its data and metadata.
    PoolEnsure {
        #[command(flatten)]
        req: PoolEnsureReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Grow one of our LVs; new extents a deleted LV may have used are zeroed.
    LvExtend {
        #[command(flatten)]
        req: LvExtendReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Remove one of our LVs (absent is success).
    LvRemove {
        #[command(flatten)]
        req: LvRemoveReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Add or delete tags of one of our LVs.
    LvTag {
        #[command(flatten)]
        req: LvTagReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// List the VG's LVs, optionally those carrying every given tag.
    LvList {
        #[command(flatten)]
        req: LvListReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Rename one of our LVs.
    LvRename {
        #[command(flatten)]
        req: LvRenameReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Stream an LV on stdout (sparse, checksummed; see `recv`).
    Send {
        #[command(flatten)]
        req: SendReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Write a stream into an LV, from stdin or pulled from another host; verifies the digest.
    Recv {
        #[command(flatten)]
        req: RecvReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Print the stream digest (and optionally MD5) of an LV.
    Checksum {
        #[command(flatten)]
        req: ChecksumReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Copy an LV into another LV of this host.
    Copy {
        #[command(flatten)]
        req: CopyReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Make a file system or swap on an LV.
    Format {
        #[command(flatten)]
        req: FormatReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Report what doctor checks on a host (versions, sudo rights, drive VGs); changes nothing.
    SelfCheck {
        #[command(flatten)]
        req: crate::ops::selfcheck::SelfCheckReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Image-datastore operations.
    #[command(flatten)]
    Image(super::image_ops::ImageCmd),
    /// VM-directory operations.
    #[command(flatten)]
    Vm(super::vm_ops::VmCmd),
}

impl HostCmd {
    /// The operation name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            HostCmd::Version => VersionReq::OP,
            HostCmd::Identity { .. } => IdentityReq::OP,
            HostCmd::WaitDevice { .. } => WaitDeviceReq::OP,
            HostCmd::VgReport { .. } => VgReportReq::OP,
            HostCmd::PvAdd { .. } => PvAddReq::OP,
            HostCmd::VgLimit { .. } => VgLimitReq::OP,
            HostCmd::PvRemove { .. } => PvRemoveReq::OP,
            HostCmd::LvCreate { .. } => LvCreateReq::OP,
            HostCmd::LvExtend { .. } => LvExtendReq::OP,
            HostCmd::PoolEnsure { .. } => PoolEnsureReq::OP,
            HostCmd::LvRemove { .. } => LvRemoveReq::OP,
            HostCmd::LvTag { .. } => LvTagReq::OP,
            HostCmd::LvList { .. } => LvListReq::OP,
            HostCmd::LvRename { .. } => LvRenameReq::OP,
            HostCmd::Send { .. } => SendReq::OP,
            HostCmd::Recv { .. } => RecvReq::OP,
            HostCmd::Checksum { .. } => ChecksumReq::OP,
            HostCmd::Copy { .. } => CopyReq::OP,
            HostCmd::Format { .. } => FormatReq::OP,
            HostCmd::SelfCheck { .. } => crate::ops::selfcheck::SelfCheckReq::OP,
            HostCmd::Image(c) => c.name(),
            HostCmd::Vm(c) => c.name(),
        }
    }
}

/// One operation's working set: the host view, its deadline and the LVM runner bound to it.
#[derive(Debug)]
pub struct Agent {
    /// The host view.
    pub env: HostEnv,
    /// When the operation must be over.
    pub deadline: Deadline,
    /// LVM, with the time left.
    pub lvm: Lvm,
    lock_timeout: Duration,
}

impl Agent {
    /// The agent for one operation under `limits`.
    pub fn new(env: HostEnv, limits: &Limits) -> Agent {
        let deadline = Deadline::after(Duration::from_secs(limits.deadline_secs));
        Agent {
            lvm: Lvm::new(env.lvm_system_dir.clone(), deadline.at()),
            env,
            deadline,
            lock_timeout: Duration::from_secs(limits.lock_timeout_secs),
        }
    }

    /// Takes the VG's host lock (bounded by the lock timeout and the deadline).
    pub fn lock_vg(&self, vg: &VgName) -> anyhow::Result<FileLock> {
        FileLock::acquire(
            &self.env.lock_dir,
            &format!("vg-{vg}"),
            self.deadline.cap(self.lock_timeout),
        )
    }
}

fn document<T: serde::Serialize>(v: &T) -> anyhow::Result<ActionOutput> {
    Ok(ActionOutput::Document(serde_json::to_string(v)?))
}

/// Runs `op` with an agent built for `limits` and prints its answer.
fn with_agent<T: serde::Serialize>(
    host: HostEnv,
    limits: &Limits,
    op: impl FnOnce(&Agent) -> anyhow::Result<T>,
) -> anyhow::Result<ActionOutput> {
    document(&op(&Agent::new(host, limits))?)
}

/// Runs one agent operation.
pub fn run(cmd: HostCmd, stdin: &mut dyn Read, env: &Env) -> anyhow::Result<ActionOutput> {
    let host = HostEnv::from_env(env);
    match cmd {
        HostCmd::Version => document(&VersionInfo {
            version: crate::VERSION.to_string(),
        }),
        HostCmd::Identity { req, limits } => with_agent(host, &limits, |a| {
            let timeout = a.deadline.cap(Duration::from_secs(req.timeout_secs));
            metadata::identity(&a.env.metadata_url, timeout)
        }),
        HostCmd::WaitDevice { req, limits } => with_agent(host, &limits, |a| {
            let timeout = a.deadline.cap(Duration::from_secs(req.timeout_secs));
            devices::wait_device(&a.env, &req.device, timeout)
        }),
        HostCmd::VgReport { req, limits } => with_agent(host, &limits, |a| vg::vg_report(a, &req)),
        HostCmd::PvAdd { req, limits } => with_agent(host, &limits, |a| vg::pv_add(a, &req)),
        HostCmd::VgLimit { req, limits } => with_agent(host, &limits, |a| vg::vg_limit(a, &req)),
        HostCmd::PvRemove { req, limits } => with_agent(host, &limits, |a| vg::pv_remove(a, &req)),
        HostCmd::LvCreate { req, limits } => with_agent(host, &limits, |a| lv::lv_create(a, &req)),
        HostCmd::LvExtend { req, limits } => with_agent(host, &limits, |a| lv::lv_extend(a, &req)),
        HostCmd::PoolEnsure { req, limits } => {
            with_agent(host, &limits, |a| lv::pool_ensure(a, &req))
        }
        HostCmd::LvRemove { req, limits } => with_agent(host, &limits, |a| lv::lv_remove(a, &req)),
        HostCmd::LvTag { req, limits } => with_agent(host, &limits, |a| lv::lv_tag(a, &req)),
        HostCmd::LvList { req, limits } => with_agent(host, &limits, |a| lv::lv_list(a, &req)),
        HostCmd::LvRename { req, limits } => with_agent(host, &limits, |a| lv::lv_rename(a, &req)),
        HostCmd::Send { req, limits } => {
            // The stream goes to the real stdout as it is produced: images do not fit in memory.
            let a = Agent::new(host, &limits);
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            data::send(&a, &req, &mut out)?;
            std::io::Write::flush(&mut out)?;
            Ok(ActionOutput::Nothing)
        }
        HostCmd::Recv { req, limits } => with_agent(host, &limits, |a| data::recv(a, &req, stdin)),
        HostCmd::Checksum { req, limits } => with_agent(host, &limits, |a| data::checksum(a, &req)),
        HostCmd::Copy { req, limits } => with_agent(host, &limits, |a| data::copy(a, &req)),
        HostCmd::Format { req, limits } => {
            with_agent(host, &limits, |a| super::fs_ops::format(a, &req))
        }
        HostCmd::SelfCheck { req, limits } => with_agent(host, &limits, |a| {
            crate::ops::selfcheck::self_check(a, &req)
        }),
        HostCmd::Image(c) => super::image_ops::run(c, stdin, host),
        HostCmd::Vm(c) => super::vm_ops::run(c, stdin, host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(subcommand)]
        cmd: HostCmd,
    }

    fn parse<R: Request>(req: &R, limits: &Limits) -> HostCmd {
        let mut argv = vec!["host".to_string(), R::OP.to_string()];
        argv.extend(req.args());
        argv.extend(limits.args());
        Wrap::try_parse_from(argv).unwrap().cmd
    }

    #[test]
    fn every_request_round_trips_through_its_argv() {
        let limits = Limits {
            deadline_secs: 77,
            lock_timeout_secs: 5,
        };
        let vg: VgName = "vg-one-1".parse().unwrap();
        let lv: crate::lvm::LvName = "lv-one-3-0".parse().unwrap();
        let tags: Vec<crate::lvm::Tag> = vec![
            "one.vm=3".parse().unwrap(),
            "one.x=a&b#c!d:e/f=g".parse().unwrap(),
        ];
        macro_rules! check {
            ($variant:ident, $req:expr) => {{
                let req = $req;
                match parse(&req, &limits) {
                    HostCmd::$variant {
                        req: got,
                        limits: l,
                    } => {
                        assert_eq!(got, req);
                        assert_eq!(l, limits);
                    }
                    other => panic!("{other:?}"),
                }
            }};
        }
        check!(Identity, IdentityReq { timeout_secs: 3 });
        check!(
            WaitDevice,
            WaitDeviceReq {
                device: "/dev/xvdbc".parse().unwrap(),
                timeout_secs: 9
            }
        );
        check!(VgReport, VgReportReq { vg: vg.clone() });
        for fresh in [false, true] {
            check!(
                PvAdd,
                PvAddReq {
                    vg: vg.clone(),
                    device: "/dev/loop3".parse().unwrap(),
                    fresh
                }
            );
        }
        check!(
            VgLimit,
            VgLimitReq {
                vg: vg.clone(),
                max_size_gib: 4096
            }
        );
        check!(
            PvRemove,
            PvRemoveReq {
                vg: vg.clone(),
                device: "/dev/sdc".parse().unwrap()
            }
        );
        check!(
            LvCreate,
            LvCreateReq {
                vg: vg.clone(),
                lv: lv.clone(),
                size_bytes: 12345,
                tags: tags.clone(),
                device_timeout_secs: 4,
                thin_pool: None,
                snapshot_of: Some(lv.clone()),
            }
        );
        check!(
            PoolEnsure,
            PoolEnsureReq {
                vg: vg.clone(),
                pool: lv.clone(),
                data_bytes: 1 << 30,
                metadata_bytes: 1 << 22,
                chunk_bytes: 1 << 16,
                tags: tags.clone(),
            }
        );
        check!(
            LvExtend,
            LvExtendReq {
                vg: vg.clone(),
                lv: lv.clone(),
                size_bytes: 1 << 40,
                device_timeout_secs: 60
            }
        );
        check!(
            LvRemove,
            LvRemoveReq {
                vg: vg.clone(),
                lv: lv.clone(),
                require_tags: tags.clone()
            }
        );
        check!(
            LvTag,
            LvTagReq {
                vg: vg.clone(),
                lv: lv.clone(),
                add: tags[..1].to_vec(),
                del: tags[1..].to_vec()
            }
        );
        check!(
            LvList,
            LvListReq {
                vg: vg.clone(),
                tags: vec![]
            }
        );
        check!(
            LvRename,
            LvRenameReq {
                vg,
                lv,
                new_name: "img-one-9".parse().unwrap()
            }
        );
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for argv in [
            vec![
                "host",
                "lv-create",
                "--vg=vg",
                "--lv=a/b",
                "--size-bytes=1",
                "--tag=one.vm=1",
            ],
            vec![
                "host",
                "lv-create",
                "--vg=vg",
                "--lv=x",
                "--size-bytes=0",
                "--tag=one.vm=1",
            ],
            vec![
                "host",
                "lv-create",
                "--vg=vg",
                "--lv=x",
                "--size-bytes=1",
                "--tag=one.vm=$(id)",
            ],
            vec!["host", "pv-add", "--vg=vg", "--device=relative"],
            vec!["host", "wait-device", "--device=/dev/xvda"],
        ] {
            let e = Wrap::try_parse_from(&argv).unwrap_err();
            assert!(e.use_stderr(), "{argv:?}");
        }
    }
}
