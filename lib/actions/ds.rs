//! Datastore actions (reference §2): decode the message in whichever of the three modes it
//! came, then act.

use std::ffi::OsString;
use std::io::Read;

use super::Ctx;
use crate::one::input::read_ds_input;
use crate::one::output::ActionOutput;

/// Runs datastore action `action`.
pub fn run(
    _ctx: &Ctx,
    action: &str,
    args: &[OsString],
    stdin: &mut dyn Read,
) -> anyhow::Result<ActionOutput> {
    let input = read_ds_input(args, stdin)?;
    input.message.check_for(action)?;
    let image_id = input.message.image.as_ref().and_then(|i| i.id);
    let ds_id = input.message.datastore.id;
    crate::logging::set_context(|c| {
        c.image_id = image_id;
        c.datastore_id = Some(ds_id);
    });
    tracing::debug!("{action}: message via {:?}, id {}", input.mode, input.id);
    Err(super::not_implemented("datastore", action))
}
