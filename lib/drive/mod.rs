//! Drives: one LVM volume group per (datastore, host) made of BSU volumes, grown and shrunk by
//! the driver.

pub mod cli;
