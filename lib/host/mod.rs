//! Hosts: the agent that runs on each host (`one-bsud host <op>`) and the frontend's client
//! that reaches it over ssh.
//!
//! - [`proto`]: requests (clap flags) and responses (JSON), shared by both sides.
//! - [`agent`]: the operation dispatcher; [`vg`], [`lv`]: the LVM operations; [`zero`]: the
//!   high-water marks that keep deleted LVs' bytes from reappearing; [`devices`]: by-id device
//!   discovery and the checks before pvcreate; [`metadata`]: identity from the metadata server;
//!   [`env`]: the host view and the operation's deadline.
//! - [`client`]: [`client::HostClient`], the frontend's typed calls over ssh.

pub mod agent;
pub mod client;
pub mod data;
pub mod devices;
pub mod env;
pub mod fs_ops;
pub mod image_ops;
pub mod lv;
pub mod metadata;
pub mod proto;
pub mod transfer;
pub mod vg;
pub mod vm_ops;
pub mod zero;
