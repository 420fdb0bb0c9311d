//! The testbed: a simulated Outscale cloud (`bsud-sim serve`) and simulated hosts with real
//! LVM on loop devices and byte-accurate LV access (lvfs). Part of the product: `one-bsud demo`
//! and the tests run on it. See docs/ARCHITECTURE.md ("Host view") for the layout.

pub mod cli;
pub mod cloud;
pub mod demo;
pub mod hostview;
pub mod lvfs;
pub mod one;
pub mod rk;
pub mod ssh;
pub mod testbed;
