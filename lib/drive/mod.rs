//! Drives: one LVM volume group per (datastore, host) made of BSU volumes, grown and shrunk by
//! the driver (DESIGN.md §3–§4).

pub mod cli;
pub mod engine;
pub mod hosts;
pub mod naming;
pub mod policy;
pub mod storage;
pub mod thin;
