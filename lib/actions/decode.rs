//! `one-bsud decode`: a driver message as pretty JSON — the first tool for debugging a failed
//! action. Accepts base64 or XML, from an argument, a file, or stdin; recognises datastore
//! messages (`DS_DRIVER_ACTION_DATA`), VM documents (`VM`, the stdin of pre/post/failmigrate
//! and `onevm show -x`) and datastore documents (`DATASTORE`, `onedatastore show -x`).
//!
//! The JSON is the typed value the actions work on, so what it shows is exactly what the
//! driver understood (template attributes keep their document order). Bad input fails like it
//! would in an action: exit 2 and one line naming the problem.

use std::io::Read;
use std::path::Path;

use crate::cli::DecodeArgs;
use crate::error::{fail, ErrorKind};
use crate::one::input::{decode_message, read_limited};
use crate::one::message::{Datastore, DsMessage};
use crate::one::output::ActionOutput;
use crate::one::vm::VmXml;
use crate::one::xml::Element;

/// Runs `decode`.
pub fn run(args: &DecodeArgs, stdin: &mut dyn Read) -> anyhow::Result<ActionOutput> {
    let raw = match args.input.as_deref() {
        None | Some("-") => read_limited(stdin)?,
        Some(s) if Path::new(s).is_file() => {
            let mut f = std::fs::File::open(s)
                .map_err(|e| fail(ErrorKind::BadInput, format!("cannot open {s}: {e}")))?;
            read_limited(&mut f)?
        }
        // Base64 of an XML document starts with `P` (`<`) or `I`/`C`/`D` (whitespace), never
        // with `/` or `.`: such an argument is a file name that does not exist.
        Some(s) if s.starts_with('/') || s.starts_with('.') => {
            return Err(fail(
                ErrorKind::BadInput,
                format!(
                    "{s}: no such file (give a file, a base64 or XML message, or `-` for stdin)"
                ),
            ))
        }
        Some(s) => s.as_bytes().to_vec(),
    };
    let xml = decode_message(&raw)?;
    let root = Element::parse(&xml)?;
    let json = match root.name.as_str() {
        "DS_DRIVER_ACTION_DATA" => serde_json::to_string_pretty(&DsMessage::from_xml(&xml)?)?,
        "VM" => serde_json::to_string_pretty(&VmXml::from_xml(&xml)?)?,
        "DATASTORE" => serde_json::to_string_pretty(&Datastore::from_xml(&xml)?)?,
        other => {
            return Err(fail(
                ErrorKind::BadInput,
                format!(
                    "cannot decode a <{other}> document: expected DS_DRIVER_ACTION_DATA, VM or DATASTORE"
                ),
            ))
        }
    };
    Ok(ActionOutput::Document(json))
}
