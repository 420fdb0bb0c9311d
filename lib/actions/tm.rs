//! Transfer-manager actions (reference §4): parse and validate argv, then act.

use std::ffi::OsString;
use std::io::Read;

use super::Ctx;
use crate::one::input::read_ds_input;
use crate::one::output::ActionOutput;
use crate::one::tm::TmArgs;

/// Runs transfer-manager action `action`.
pub fn run(
    _ctx: &Ctx,
    action: &str,
    args: &[OsString],
    stdin: &mut dyn Read,
) -> anyhow::Result<ActionOutput> {
    if action == "monitor" {
        // tm/<tm>/monitor receives a datastore message, like datastore/<ds>/monitor.
        let input = read_ds_input(args, stdin)?;
        crate::logging::set_context(|c| c.datastore_id = Some(input.message.datastore.id));
        return Err(super::not_implemented("tm", action));
    }
    let parsed = TmArgs::parse(action, args, stdin)?;
    crate::logging::set_context(|c| c.vm_id = parsed.vm_id());
    Err(super::not_implemented("tm", action))
}
