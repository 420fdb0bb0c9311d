//! `bsud-sim`: the simulated Outscale cloud and the testbed tools, one clap definition.
//!
//! Each subcommand's arguments and behaviour live in the module that implements it; this file
//! only wires them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// bsud-sim: an Outscale-compatible cloud on loopback, and simulated hosts with real LVM.
#[derive(Debug, Parser)]
#[command(
    name = "bsud-sim",
    version,
    about = "Simulated Outscale cloud (BSU volumes, VMs, metadata) and testbed hosts with real LVM, for one-bsud's tests, demo and people without an Outscale account"
)]
pub struct SimCli {
    /// What to do.
    #[command(subcommand)]
    pub command: SimCommand,
}

/// `bsud-sim` commands.
// Parsed once per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Serve the Outscale API (/api/v1/<Call>), the admin API (/_sim/…) and per-VM metadata.
    Serve(crate::sim::cloud::ServeArgs),
    /// Run a remote command in a simulated host's view, like `ssh <host> <command>`.
    Ssh(crate::sim::ssh::SshArgs),
    /// Serve a host's LVs as files (FUSE), byte-accurate over LVM's segment map.
    Lvfs(crate::sim::lvfs::LvfsArgs),
    /// Print a VM or datastore document like `onevm show -x` / `onedatastore show -x`.
    One(crate::sim::one::OneArgs),
    /// Join stdin/stdout to a TCP address (how a QEMU guest reaches the simulated cloud).
    Relay(crate::sim::rk::relay::RelayArgs),
}

/// Entry point of the `bsud-sim` binary.
pub fn main_entry() -> ExitCode {
    let cli = match SimCli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let level = std::env::var("BSUD_LOG").unwrap_or_else(|_| "info".into());
    crate::logging::init(&level, false);
    let res = match cli.command {
        SimCommand::Serve(a) => crate::sim::cloud::serve(a),
        SimCommand::Ssh(a) => return crate::sim::ssh::run(a),
        SimCommand::One(a) => return crate::sim::one::run(a),
        SimCommand::Lvfs(a) => crate::sim::lvfs::run(a),
        SimCommand::Relay(a) => crate::sim::rk::relay::run(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bsud-sim: {}", crate::error::one_line(&e));
            ExitCode::from(crate::error::exit_code(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        SimCli::command().debug_assert();
    }
}
