//! Agent operations on VM directories (TM actions): owned by the transfer-manager work.

use std::io::Read;

use clap::Subcommand;

use super::env::HostEnv;
use crate::one::output::ActionOutput;

/// VM-directory agent operations (flattened into `one-bsud host …`).
#[derive(Debug, Subcommand)]
#[command(rename_all = "kebab-case")]
pub enum VmCmd {
    /// Point `<vm dir>/disk.N` at an LV.
    LinkDisk,
}

impl VmCmd {
    /// The operation name.
    pub fn name(&self) -> &'static str {
        match self {
            VmCmd::LinkDisk => "link-disk",
        }
    }
}

/// Runs a VM-directory operation.
pub fn run(cmd: VmCmd, _stdin: &mut dyn Read, _host: HostEnv) -> anyhow::Result<ActionOutput> {
    Err(crate::actions::not_implemented("host", cmd.name()))
}
