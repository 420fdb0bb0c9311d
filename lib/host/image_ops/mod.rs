//! Agent operations for image datastores (DS actions):
//!
//! - `probe`: what an LV holds — its format (told from its first bytes, see [`format`]), its
//!   virtual size (qemu-img info for non-raw content), its device node on this host.
//! - `convert`: a non-raw image held in a scratch LV, converted to raw into the image LV by
//!   `qemu-img convert` on this host, so the image bytes never cross the network twice and
//!   never land on the frontend's disk.
//!
//! Invariants:
//! - qemu-img is always told the format (`-f`), decided by [`format::detect`] from the content:
//!   it never probes, and an image naming another file (backing file, data file, extents) is
//!   refused before qemu opens anything.
//! - `convert` writes only into an existing LV of ours at least the virtual size; with
//!   `--fresh` (the LV was just created and reads as zeros) zero ranges are skipped, otherwise
//!   qemu-img writes them as zeros, so no byte of an earlier LV survives in the image.
//! - Neither op changes LVM metadata: no VG lock is taken (a conversion can take long).

pub mod format;

use std::io::Read;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::builder::TypedValueParser as _;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use self::format::DiskFormat;
use super::agent::Agent;
use super::data::LvRef;
use super::env::HostEnv;
use super::proto::{Limits, Request};
use crate::error::{fail, ErrorKind};
use crate::exec::{self, Cmd};
use crate::one::output::ActionOutput;

/// Image-datastore agent operations (flattened into `one-bsud host …`).
#[derive(Debug, Subcommand)]
#[command(rename_all = "kebab-case")]
pub enum ImageCmd {
    /// Tell the format, virtual size and device node of the content of an LV.
    Probe {
        #[command(flatten)]
        req: ProbeReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Convert an image held in a scratch LV (qcow2, vmdk…) to raw into another LV.
    Convert {
        #[command(flatten)]
        req: ConvertReq,
        #[command(flatten)]
        limits: Limits,
    },
}

impl ImageCmd {
    /// The operation name.
    pub fn name(&self) -> &'static str {
        match self {
            ImageCmd::Probe { .. } => ProbeReq::OP,
            ImageCmd::Convert { .. } => ConvertReq::OP,
        }
    }
}

/// `host probe`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ProbeReq {
    /// The LV (`vg/lv`).
    #[arg(long)]
    pub lv: LvRef,
    /// Take the content as raw data whatever it looks like (an image LV: only its node and
    /// size are wanted).
    #[arg(long)]
    pub raw: bool,
}

/// `probe`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probed {
    /// The LV.
    pub lv: String,
    /// Its device node on this host (what `ssh <host> cat <path>` reads).
    pub path: String,
    /// Its size in bytes.
    pub lv_bytes: u64,
    /// The format of its content.
    pub format: DiskFormat,
    /// The guest-visible size of that content (the LV size for raw content).
    pub virtual_size: u64,
}

impl Request for ProbeReq {
    const OP: &'static str = "probe";
    const LOCKS: bool = false;
    type Response = Probed;
    fn args(&self) -> Vec<String> {
        let mut a = vec![format!("--lv={}", self.lv)];
        if self.raw {
            a.push("--raw".into());
        }
        a
    }
}

/// `host convert`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ConvertReq {
    /// The LV holding the image (`vg/lv`).
    #[arg(long)]
    pub from_lv: LvRef,
    /// The raw LV to write (`vg/lv`), at least the image's virtual size.
    #[arg(long)]
    pub to_lv: LvRef,
    /// The format the image must be (the frontend's probe said so; a mismatch is refused).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(format::FORMATS).map(|s| s.parse::<DiskFormat>().expect("listed")))]
    pub format: DiskFormat,
    /// The target reads as zeros already (just created): zero ranges are skipped.
    #[arg(long)]
    pub fresh: bool,
}

/// `convert`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Converted {
    /// Source LV.
    pub from_lv: String,
    /// Target LV.
    pub to_lv: String,
    /// The source format.
    pub format: DiskFormat,
    /// Bytes of raw content written (the virtual size).
    pub virtual_size: u64,
    /// Seconds.
    pub elapsed_secs: f64,
}

impl Request for ConvertReq {
    const OP: &'static str = "convert";
    const LOCKS: bool = false;
    const MOVES_DATA: bool = true;
    type Response = Converted;
    fn args(&self) -> Vec<String> {
        let mut a = vec![
            format!("--from-lv={}", self.from_lv),
            format!("--to-lv={}", self.to_lv),
            format!("--format={}", self.format),
        ];
        if self.fresh {
            a.push("--fresh".into());
        }
        a
    }
}

/// Runs an image operation.
pub fn run(cmd: ImageCmd, _stdin: &mut dyn Read, host: HostEnv) -> anyhow::Result<ActionOutput> {
    let json = match cmd {
        ImageCmd::Probe { req, limits } => {
            serde_json::to_string(&probe(&Agent::new(host, &limits), &req)?)?
        }
        ImageCmd::Convert { req, limits } => {
            serde_json::to_string(&convert(&Agent::new(host, &limits), &req)?)?
        }
    };
    Ok(ActionOutput::Document(json))
}

fn size_of(path: &Path, f: &std::fs::File) -> anyhow::Result<u64> {
    let m = f
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    if m.file_type().is_block_device() {
        Ok(crate::sys::block_device_size(f)?)
    } else {
        Ok(m.len())
    }
}

/// The first [`format::HEAD_BYTES`] of `path` (fewer when it is shorter) and its size.
fn head_of(path: &Path) -> anyhow::Result<(Vec<u8>, u64)> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = size_of(path, &f)?;
    let mut head = vec![0u8; format::HEAD_BYTES.min(size as usize)];
    f.read_exact_at(&mut head, 0)
        .with_context(|| format!("reading the start of {}", path.display()))?;
    Ok((head, size))
}

/// `qemu-img info` of `path`, told its format.
pub fn qemu_info(
    path: &Path,
    fmt: DiskFormat,
    timeout: Duration,
) -> anyhow::Result<format::QemuInfo> {
    let out = exec::run(
        &Cmd::new("qemu-img")
            .args(["info", "--output=json", "-U", "-f", fmt.as_str()])
            .arg(path)
            .timeout(timeout),
    )?;
    format::parse_qemu_info(&out.stdout_str())
}

/// `probe`.
pub fn probe(a: &Agent, req: &ProbeReq) -> anyhow::Result<Probed> {
    let path = super::lv::device_of(a, &req.lv.vg, &req.lv.lv, Duration::from_secs(60))?;
    let (head, lv_bytes) = head_of(&path)?;
    let fmt = if req.raw {
        DiskFormat::Raw
    } else {
        format::detect(&head).with_context(|| format!("LV {}", req.lv))?
    };
    let virtual_size = match fmt {
        DiskFormat::Raw => lv_bytes,
        f => {
            qemu_info(&path, f, a.deadline.left())
                .with_context(|| format!("LV {} ({f})", req.lv))?
                .virtual_size
        }
    };
    Ok(Probed {
        lv: req.lv.to_string(),
        path: path.display().to_string(),
        lv_bytes,
        format: fmt,
        virtual_size,
    })
}

/// `convert`.
pub fn convert(a: &Agent, req: &ConvertReq) -> anyhow::Result<Converted> {
    if req.from_lv == req.to_lv {
        return Err(fail(
            ErrorKind::BadInput,
            "convert: source and target are the same LV",
        ));
    }
    if req.format == DiskFormat::Raw {
        return Err(fail(
            ErrorKind::BadInput,
            "convert: the image is raw already; copy it instead",
        ));
    }
    let probed = probe(
        a,
        &ProbeReq {
            lv: req.from_lv.clone(),
            raw: false,
        },
    )?;
    if probed.format != req.format {
        return Err(fail(
            ErrorKind::Refused,
            format!(
                "LV {} holds a {} image, not the {} expected",
                req.from_lv, probed.format, req.format
            ),
        ));
    }
    let dst = super::lv::device_of(a, &req.to_lv.vg, &req.to_lv.lv, Duration::from_secs(60))?;
    let dst_size = {
        let f = std::fs::File::open(&dst).with_context(|| format!("opening {}", dst.display()))?;
        size_of(&dst, &f)?
    };
    if dst_size < probed.virtual_size {
        return Err(fail(
            ErrorKind::Failed,
            format!(
                "LV {} holds {dst_size} bytes, less than the image's virtual size of {} bytes",
                req.to_lv, probed.virtual_size
            ),
        ));
    }
    let start = Instant::now();
    let mut cmd = Cmd::new("qemu-img").args([
        "convert",
        "-q",
        "-n",
        "-f",
        req.format.as_str(),
        "-O",
        "raw",
    ]);
    if req.fresh {
        cmd = cmd.arg("--target-is-zero");
    }
    exec::run(&cmd.arg(&probed.path).arg(&dst).timeout(a.deadline.left())).with_context(|| {
        format!(
            "converting LV {} ({}) to raw into LV {}",
            req.from_lv, req.format, req.to_lv
        )
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    tracing::info!(
        "converted LV {} ({}, {} MiB virtual) into LV {} in {elapsed:.1}s",
        req.from_lv,
        req.format,
        probed.virtual_size >> 20,
        req.to_lv
    );
    Ok(Converted {
        from_lv: req.from_lv.to_string(),
        to_lv: req.to_lv.to_string(),
        format: req.format,
        virtual_size: probed.virtual_size,
        elapsed_secs: elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(subcommand)]
        cmd: ImageCmd,
    }

    #[test]
    fn requests_round_trip_through_their_argv() {
        let limits = Limits::default();
        let req = ConvertReq {
            from_lv: "vg-one-1/img-one-2-import".parse().unwrap(),
            to_lv: "vg-one-1/img-one-2".parse().unwrap(),
            format: DiskFormat::Qcow2,
            fresh: true,
        };
        let mut argv = vec!["x".to_string(), ConvertReq::OP.into()];
        argv.extend(req.args());
        argv.extend(limits.args());
        match Wrap::try_parse_from(argv).unwrap().cmd {
            ImageCmd::Convert { req: got, .. } => assert_eq!(got, req),
            other => panic!("{other:?}"),
        }
        let req = ProbeReq {
            lv: "vg-one-1/img-one-2".parse().unwrap(),
            raw: true,
        };
        let mut argv = vec!["x".to_string(), ProbeReq::OP.into()];
        argv.extend(req.args());
        match Wrap::try_parse_from(argv).unwrap().cmd {
            ImageCmd::Probe { req: got, .. } => assert_eq!(got, req),
            other => panic!("{other:?}"),
        }
        for bad in [
            vec![
                "x",
                "convert",
                "--from-lv=vg/a",
                "--to-lv=vg/b",
                "--format=luks",
            ],
            vec![
                "x",
                "convert",
                "--from-lv=vg/a",
                "--to-lv=vg/b",
                "--format=$(id)",
            ],
            vec!["x", "probe", "--lv=../x"],
        ] {
            assert!(Wrap::try_parse_from(bad).is_err());
        }
    }
}
