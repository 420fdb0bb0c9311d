//! one-bsud: an OpenNebula storage driver (DS_MAD + TM_MAD named `bsud`) whose images and VM
//! disks are LVM logical volumes on *drives*: one volume group per (datastore, host), made of
//! Outscale BSU volumes, grown and shrunk by the driver itself.
//!
//! Everything lives in this library; the binaries in `src/bin/` only call [`app::main_entry`]
//! and [`sim::cli::main_entry`].
//!
//! Invariants the whole crate keeps:
//! - **stdout is the protocol.** Only [`app`] writes stdout, once, at the end, in the exact
//!   shape oned expects for the action. Every diagnostic goes to stderr (and journald).
//! - **Every external program runs through [`exec`]**, as argv data; a remote command is one
//!   string built from shell-quoted words ([`exec::ssh`]). Nothing is ever joined unquoted.
//! - **Every wait has a deadline** ([`wait`]); every lock is taken with a timeout ([`lock`]).
//! - **The core is synchronous.** Actions are short-lived processes doing sequential ssh, LVM and
//!   cloud steps; the `outscale_api` client is blocking, so it is simply called on the action's
//!   thread. Parallel work uses scoped std threads. tokio is used only where a server multiplexes
//!   many connections: the simulated cloud ([`sim`]).
//! - **Only tagged objects are touched**: BSU volumes carry `osc.bsud.drive-name` and `one.bsud.*`
//!   tags, LVs carry `one.*` tags; anything else is left alone.

pub mod actions;
pub mod app;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod crashpoint;
pub mod drive;
pub mod error;
pub mod exec;
pub mod host;
pub mod lock;
pub mod logging;
pub mod lvm;
pub mod one;
pub mod ops;
pub mod sim;
pub mod stream;
pub mod sys;
pub mod wait;
pub mod zeroing;

/// Version string shared by the frontend and the host agent; a mismatch between them is
/// reported by `doctor` and refused by the agent protocol.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
