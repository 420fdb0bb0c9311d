//! `bsud-sim relay <addr>`: joins stdin/stdout to a TCP connection. QEMU's slirp runs it for
//! each guest connection to the cloud address (`guestfwd=…-cmd:`), so a guest reaches the
//! simulated cloud and its metadata although its network is restricted to forwarded ports.
//!
//! Invariant: ends when either side closes; the half-close of stdin is passed on, so an HTTP
//! client that shuts down its writing side still gets the answer.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use anyhow::Context;

/// `bsud-sim relay` arguments.
#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// `host:port` to connect to.
    pub addr: String,
}

/// Relays until both directions are done.
pub fn run(a: RelayArgs) -> anyhow::Result<()> {
    let stream =
        TcpStream::connect(&a.addr).with_context(|| format!("connecting to {}", a.addr))?;
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    let mut up = stream.try_clone()?;
    let to_server = std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut up);
        let _ = up.shutdown(Shutdown::Write);
    });
    let mut down = stream;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match down.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    drop(to_server);
    Ok(())
}
