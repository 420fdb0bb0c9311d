//! The data stream outside the agent, for benchmarks and manual tests (`scripts/bench-stream`):
//!
//! ```text
//! stream send PATH [--size-bytes N] [--compress] [--md5]     > stream
//! stream recv PATH [--fresh] [--expect-size N] [--create-file] < stream
//! stream checksum PATH [--size-bytes N] [--md5]
//! ```
//! The same stream as `one-bsud host send|recv|checksum`, on files (lib/stream/agent.rs).

use std::path::PathBuf;
use std::process::ExitCode;

use bsud::stream::agent::{self, ChecksumArgs, RecvArgs, SendArgs};

fn main() -> ExitCode {
    bsud::logging::init("info", false);
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", bsud::error::one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> anyhow::Result<()> {
    let (op, path, flags) = match args.as_slice() {
        [op, path, flags @ ..] => (op.as_str(), PathBuf::from(path), flags),
        _ => anyhow::bail!("usage: stream send|recv|checksum PATH [flags]"),
    };
    let has = |f: &str| flags.iter().any(|a| a == f);
    let number = |f: &str| -> anyhow::Result<Option<u64>> {
        match flags.iter().position(|a| a == f) {
            Some(i) => {
                let v = flags.get(i + 1).map(String::as_str).unwrap_or("");
                Ok(Some(v.parse().map_err(|_| {
                    anyhow::anyhow!("{f} wants a number, not '{v}'")
                })?))
            }
            None => Ok(None),
        }
    };
    let output = match op {
        "send" => {
            let args = SendArgs {
                path,
                size_bytes: number("--size-bytes")?,
                compress: has("--compress"),
                md5: has("--md5"),
            };
            agent::send_op(&args, &mut std::io::stdout().lock())?;
            return Ok(());
        }
        "recv" => {
            let args = RecvArgs {
                path,
                fresh: has("--fresh"),
                expect_size: number("--expect-size")?,
                create_file: has("--create-file"),
            };
            agent::recv_op(&args, &mut std::io::stdin().lock())?
        }
        "checksum" => agent::checksum_op(&ChecksumArgs {
            path,
            size_bytes: number("--size-bytes")?,
            md5: has("--md5"),
        })?,
        other => anyhow::bail!("unknown operation '{other}' (send, recv, checksum)"),
    };
    print!("{}", String::from_utf8_lossy(&output.render()));
    Ok(())
}
