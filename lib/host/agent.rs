//! The host agent: `one-bsud host <op>`, run on a host over ssh by the frontend; answers JSON on
//! stdout.

use std::io::Read;

use clap::Subcommand;

use crate::config::Env;
use crate::one::output::ActionOutput;

/// Host agent operations.
#[derive(Debug, Subcommand)]
#[command(rename_all = "kebab-case")]
pub enum HostCmd {
    /// Print this agent's version (the frontend refuses a mismatch).
    Version,
}

impl HostCmd {
    /// The operation name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            HostCmd::Version => "version",
        }
    }
}

/// Runs one agent operation.
pub fn run(cmd: HostCmd, _stdin: &mut dyn Read, _env: &Env) -> anyhow::Result<ActionOutput> {
    match cmd {
        HostCmd::Version => Ok(ActionOutput::Document(
            serde_json::json!({ "version": crate::VERSION }).to_string(),
        )),
    }
}
