//! `one-bsud`: every action, the host agent and the operator CLI in one multicall binary.
//! All logic is in the library; see `bsud::app`.

fn main() -> std::process::ExitCode {
    bsud::app::main_entry()
}
