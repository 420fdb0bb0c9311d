//! The actions oned calls, one module per kind, and `decode`.
//!
//! Every action first validates its whole input (message, argv) and only then acts, so bad
//! input never leaves anything half-done. Handlers return an [`ActionOutput`]; they never print.
//!
//! [`ActionOutput`]: crate::one::output::ActionOutput

pub mod decode;
pub mod ds;
pub mod one_api;
pub mod tm;

use std::sync::OnceLock;

use crate::cloud::outscale::OutscaleCloud;
use crate::cloud::Cloud;
use crate::config::{Config, Env};

/// What every action gets: the configuration and the environment. Clients for the cloud and
/// the hosts are built from it on first use, so an action that needs neither never fails on
/// missing credentials.
#[derive(Debug)]
pub struct Ctx {
    /// The configuration.
    pub config: Config,
    /// The environment.
    pub env: Env,
    /// OpenNebula lookups (cached).
    pub one: one_api::OneApi,
    cloud: OnceLock<OutscaleCloud>,
}

impl Ctx {
    /// A context.
    pub fn new(config: Config, env: Env) -> Ctx {
        Ctx {
            config,
            env,
            one: one_api::OneApi::default(),
            cloud: OnceLock::new(),
        }
    }

    /// The cloud client, built on first use (one per process: it carries the SDK's limiter).
    pub fn cloud(&self) -> anyhow::Result<&dyn Cloud> {
        if let Some(c) = self.cloud.get() {
            return Ok(c);
        }
        let creds = self.config.cloud.resolve()?;
        let c = OutscaleCloud::new(&creds)?;
        Ok(self.cloud.get_or_init(|| c))
    }
}

/// The error for an action that later work will implement: never a fake success.
pub fn not_implemented(kind: &str, action: &str) -> anyhow::Error {
    let _ = kind;
    crate::error::fail(
        crate::error::ErrorKind::NotImplemented,
        format!("{action}: not implemented yet"),
    )
}
