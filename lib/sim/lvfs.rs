//! lvfs: a host's LVs as files over FUSE, following LVM's segment map.

/// `bsud-sim lvfs` arguments.
#[derive(Debug, clap::Args)]
pub struct LvfsArgs {}

/// Mounts and serves until unmounted.
pub fn run(_a: LvfsArgs) -> anyhow::Result<()> {
    Err(crate::actions::not_implemented("sim", "lvfs"))
}
