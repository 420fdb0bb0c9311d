//! The testbed: a simulated Outscale cloud (`bsud-sim`) and simulated hosts with real LVM.

pub mod cli;
