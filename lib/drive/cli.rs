//! Operator commands over drives and the cloud.

use clap::Subcommand;

use crate::actions::Ctx;
use crate::one::output::ActionOutput;

/// `one-bsud drive …`.
#[derive(Debug, Subcommand)]
pub enum DriveCmd {
    /// List drives.
    List,
}

/// `one-bsud cloud …`.
#[derive(Debug, Subcommand)]
pub enum CloudCmd {
    /// List the volumes carrying our tags.
    Volumes,
}

/// Runs a drive command.
pub fn run_drive(_ctx: &Ctx, _cmd: DriveCmd) -> anyhow::Result<ActionOutput> {
    Err(crate::actions::not_implemented("drive", "drive"))
}

/// Runs a cloud command.
pub fn run_cloud(_ctx: &Ctx, _cmd: CloudCmd) -> anyhow::Result<ActionOutput> {
    Err(crate::actions::not_implemented("cloud", "cloud"))
}
