//! `host format`: make a file system (or swap) on one of our LVs — for empty datablocks (DS
//! mkfs) and volatile disks (TM mkimage/mkswap).
//!
//! Only the file systems an operator can expect on a KVM host are accepted (a fixed list, so
//! no user word ever names a program); mkfs runs on the LV's device node with `-F`/`-f` since a
//! fresh LV is ours by construction, and refuses an LV that already carries a signature unless
//! `--force` (an idempotent rerun after success keeps the data).

use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::agent::Agent;
use super::data::LvRef;
use super::proto::Request;
use crate::error::{fail, ErrorKind};
use crate::exec::{self, Cmd};

/// File systems `format` makes.
pub const FILESYSTEMS: &[&str] = &["ext2", "ext3", "ext4", "xfs", "vfat", "swap"];

/// `host format`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct FormatReq {
    /// The LV (`vg/lv`).
    #[arg(long)]
    pub lv: LvRef,
    /// ext2, ext3, ext4, xfs, vfat or swap.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(FILESYSTEMS))]
    pub fs: String,
    /// Volume label (letters, digits, `-_.`, at most 16).
    #[arg(long)]
    pub label: Option<String>,
}

impl Request for FormatReq {
    const OP: &'static str = "format";
    const LOCKS: bool = false;
    type Response = Formatted;
    fn args(&self) -> Vec<String> {
        let mut a = vec![format!("--lv={}", self.lv), format!("--fs={}", self.fs)];
        if let Some(l) = &self.label {
            a.push(format!("--label={l}"));
        }
        a
    }
}

/// `format`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Formatted {
    /// The LV.
    pub lv: String,
    /// The file system.
    pub fs: String,
    /// Whether mkfs ran (false: it already carried that file system).
    pub formatted: bool,
}

fn check_label(l: &str) -> anyhow::Result<()> {
    if l.is_empty()
        || l.len() > 16
        || !l
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(fail(
            ErrorKind::BadInput,
            format!("format: label {l:?} must be 1-16 of [A-Za-z0-9-_.]"),
        ));
    }
    Ok(())
}

/// The signature blkid sees on `path` (`ext4`, `swap`, …), if any.
fn signature(path: &std::path::Path) -> anyhow::Result<Option<String>> {
    let out = exec::output(
        &Cmd::new("blkid")
            .args(["-p", "-o", "value", "-s", "TYPE"])
            .arg(path)
            .timeout(Duration::from_secs(60)),
    )?;
    // blkid exits 2 when it finds nothing.
    let t = out.stdout_str().trim().to_string();
    Ok((!t.is_empty()).then_some(t))
}

/// Runs `format`.
pub fn format(a: &Agent, req: &FormatReq) -> anyhow::Result<Formatted> {
    if let Some(l) = &req.label {
        check_label(l)?;
    }
    let path = super::lv::device_of(a, &req.lv.vg, &req.lv.lv, Duration::from_secs(60))?;
    if let Some(found) = signature(&path)? {
        if found == req.fs {
            return Ok(Formatted {
                lv: req.lv.to_string(),
                fs: req.fs.clone(),
                formatted: false,
            });
        }
        return Err(fail(
            ErrorKind::Refused,
            format!(
                "LV {} already holds a {found} signature; not formatting it as {}",
                req.lv, req.fs
            ),
        ));
    }
    let label = req.label.clone();
    let cmd = match req.fs.as_str() {
        "swap" => Cmd::new("mkswap").args(label.iter().flat_map(|l| ["-L".to_string(), l.clone()])),
        "xfs" => Cmd::new("mkfs.xfs")
            .arg("-f")
            .args(label.iter().flat_map(|l| ["-L".to_string(), l.clone()])),
        "vfat" => {
            Cmd::new("mkfs.vfat").args(label.iter().flat_map(|l| ["-n".to_string(), l.clone()]))
        }
        // -E nodiscard: the LV already reads as zeros; discarding it all again only costs time.
        ext => Cmd::new(format!("mkfs.{ext}"))
            .args(["-F", "-q", "-E", "nodiscard"])
            .args(label.iter().flat_map(|l| ["-L".to_string(), l.clone()])),
    };
    exec::run(&cmd.arg(&path).timeout(a.deadline.left()))?;
    tracing::info!("formatted LV {} as {}", req.lv, req.fs);
    Ok(Formatted {
        lv: req.lv.to_string(),
        fs: req.fs.clone(),
        formatted: true,
    })
}
