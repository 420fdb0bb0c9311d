//! `bsud-sim`: the simulated cloud and testbed tools.

use std::process::ExitCode;

/// Entry point of the `bsud-sim` binary.
pub fn main_entry() -> ExitCode {
    eprintln!("bsud-sim: not implemented yet");
    ExitCode::from(4)
}
