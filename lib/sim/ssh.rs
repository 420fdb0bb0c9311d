//! The testbed's ssh transport: runs a remote command string with `sh -c` in a host's view.

/// `bsud-sim ssh` arguments.
#[derive(Debug, clap::Args)]
pub struct SshArgs {}

/// Runs the command; the exit code is the command's.
pub fn run(_a: SshArgs) -> std::process::ExitCode {
    eprintln!("bsud-sim ssh: not implemented yet");
    std::process::ExitCode::from(4)
}
