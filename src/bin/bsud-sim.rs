//! `bsud-sim`: the simulated Outscale cloud and testbed. All logic is in `bsud::sim`.

fn main() -> std::process::ExitCode {
    bsud::sim::cli::main_entry()
}
