//! `one-bsud decode`: a driver message as pretty JSON — the first tool for debugging a failed
//! action. Accepts base64 or XML, from an argument, a file, or stdin; recognises datastore
//! messages (`DS_DRIVER_ACTION_DATA`) and VM documents (`VM`).

use std::io::Read;
use std::path::Path;

use anyhow::Context;

use crate::cli::DecodeArgs;
use crate::error::{fail, ErrorKind};
use crate::one::input::{decode_message, read_limited};
use crate::one::message::DsMessage;
use crate::one::output::ActionOutput;
use crate::one::vm::VmXml;
use crate::one::xml::Element;

/// Runs `decode`.
pub fn run(args: &DecodeArgs, stdin: &mut dyn Read) -> anyhow::Result<ActionOutput> {
    let raw = match args.input.as_deref() {
        None | Some("-") => read_limited(stdin)?,
        Some(s) if Path::new(s).is_file() => {
            let mut f = std::fs::File::open(s).with_context(|| format!("opening {s}"))?;
            read_limited(&mut f)?
        }
        Some(s) => s.as_bytes().to_vec(),
    };
    let xml = decode_message(&raw)?;
    let root = Element::parse(&xml)?;
    let json = match root.name.as_str() {
        "DS_DRIVER_ACTION_DATA" => serde_json::to_value(DsMessage::from_xml(&xml)?)?,
        "VM" => serde_json::to_value(VmXml::from_xml(&xml)?)?,
        other => {
            return Err(fail(
                ErrorKind::BadInput,
                format!("cannot decode a <{other}> document: expected DS_DRIVER_ACTION_DATA or VM"),
            ))
        }
    };
    Ok(ActionOutput::Document(serde_json::to_string_pretty(&json)?))
}
