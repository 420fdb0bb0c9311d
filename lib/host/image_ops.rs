//! Agent operations for image datastores (DS actions): owned by the image-datastore work.

use std::io::Read;

use clap::Subcommand;

use super::env::HostEnv;
use crate::one::output::ActionOutput;

/// Image-datastore agent operations (flattened into `one-bsud host …`).
#[derive(Debug, Subcommand)]
#[command(rename_all = "kebab-case")]
pub enum ImageCmd {
    /// Convert an image held in a scratch LV (qcow2, vmdk…) to raw into another LV.
    Convert,
}

impl ImageCmd {
    /// The operation name.
    pub fn name(&self) -> &'static str {
        match self {
            ImageCmd::Convert => "convert",
        }
    }
}

/// Runs an image operation.
pub fn run(cmd: ImageCmd, _stdin: &mut dyn Read, _host: HostEnv) -> anyhow::Result<ActionOutput> {
    Err(crate::actions::not_implemented("host", cmd.name()))
}
