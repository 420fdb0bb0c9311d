//! The simulated Outscale API server.

/// `bsud-sim serve` arguments.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

/// Runs the server until killed.
pub fn serve(_a: ServeArgs) -> anyhow::Result<()> {
    Err(crate::actions::not_implemented("sim", "serve"))
}
