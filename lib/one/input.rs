//! How a datastore action receives its message, for every OpenNebula version (reference §1.3):
//!
//! | argv after the action | meaning | versions |
//! |---|---|---|
//! | `<b64> <id>` | message in argv[1] | ≤ 6.6 |
//! | `- <id>` | message on stdin | 6.4.5+/6.6.2+ with `-i` |
//! | `<id>` | message on stdin | 6.8+, 7.x |
//!
//! The same rule serves `tm/<tm>/monitor` and `datastore/<ds>/export`. Base64 is decoded
//! tolerantly (whitespace and newlines anywhere, missing padding), like Ruby's `decode64`.

use std::ffi::OsString;
use std::io::Read;

use base64::Engine;
use serde::Serialize;

use super::message::DsMessage;
use crate::error::{fail, ErrorKind};

/// Largest message accepted, base64 included. oned's biggest messages (a datastore listing
/// thousands of images) stay far below; anything larger is refused rather than parsed.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Where the message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputMode {
    /// argv[1] (≤ 6.6).
    Argv,
    /// `-` then stdin (6.4.5+/6.6.2+ `-i`).
    DashStdin,
    /// stdin, argv = id (6.8+).
    Stdin,
}

/// A decoded datastore-action invocation.
#[derive(Debug, Clone, Serialize)]
pub struct DsInput {
    /// How the message arrived.
    pub mode: InputMode,
    /// The id argument: image id, datastore id, or request counter (stat/restore) — its
    /// meaning depends on the action, so it is kept as given.
    pub id: String,
    /// The decoded document.
    pub xml: String,
    /// The typed message.
    pub message: DsMessage,
}

/// Decodes the arguments (everything after the action name) and stdin.
pub fn read_ds_input(args: &[OsString], stdin: &mut dyn Read) -> anyhow::Result<DsInput> {
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            a.to_str()
                .map(str::to_string)
                .ok_or_else(|| fail(ErrorKind::BadInput, "an argument is not valid UTF-8"))
        })
        .collect::<anyhow::Result<_>>()?;
    let (mode, b64, id) = match args.as_slice() {
        [id] => (InputMode::Stdin, read_limited(stdin)?, id.clone()),
        [dash, id] if dash == "-" => (InputMode::DashStdin, read_limited(stdin)?, id.clone()),
        [msg, id] => {
            if msg.len() > MAX_MESSAGE_BYTES {
                return Err(too_big());
            }
            (InputMode::Argv, msg.as_bytes().to_vec(), id.clone())
        }
        [] => {
            return Err(fail(
                ErrorKind::BadInput,
                "missing arguments: expected `<id>` (message on stdin), `- <id>` or `<base64 message> <id>`",
            ))
        }
        more => {
            return Err(fail(
                ErrorKind::BadInput,
                format!(
                    "expected 1 or 2 arguments (`<id>`, `- <id>` or `<base64 message> <id>`), got {}",
                    more.len()
                ),
            ))
        }
    };
    validate_id(&id)?;
    let xml = decode_message(&b64)?;
    let message = DsMessage::from_xml(&xml)?;
    Ok(DsInput {
        mode,
        id,
        xml,
        message,
    })
}

/// The id argument is a (non-negative) integer in every mode.
fn validate_id(id: &str) -> anyhow::Result<()> {
    if !id.is_empty() && id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(fail(
            ErrorKind::BadInput,
            format!("id argument {id:?} is not a non-negative integer"),
        ))
    }
}

fn too_big() -> anyhow::Error {
    fail(
        ErrorKind::BadInput,
        format!("driver message is larger than {} bytes", MAX_MESSAGE_BYTES),
    )
}

/// Reads stdin up to the limit (one byte more tells it was exceeded).
pub fn read_limited(stdin: &mut dyn Read) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    stdin
        .take(MAX_MESSAGE_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| {
            fail(
                ErrorKind::BadInput,
                format!("cannot read the message from stdin: {e}"),
            )
        })?;
    if buf.len() > MAX_MESSAGE_BYTES {
        return Err(too_big());
    }
    Ok(buf)
}

/// Base64 (tolerant) → UTF-8 XML text. Raw XML (starting with `<`) is accepted as is, which
/// is what `decode` users paste and what backup actions receive.
pub fn decode_message(bytes: &[u8]) -> anyhow::Result<String> {
    let trimmed: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if trimmed.is_empty() {
        return Err(fail(ErrorKind::BadInput, "driver message is empty"));
    }
    let raw = if trimmed[0] == b'<' {
        bytes.to_vec()
    } else {
        // Named here rather than by the decoder, which reports symbols as numbers.
        let stray = bytes.iter().enumerate().find(|(_, b)| {
            !(b.is_ascii_alphanumeric()
                || b.is_ascii_whitespace()
                || matches!(b, b'+' | b'/' | b'='))
        });
        if let Some((at, &b)) = stray {
            let what = if b.is_ascii() {
                format!("{:?}", char::from(b))
            } else {
                format!("byte 0x{b:02x}")
            };
            return Err(fail(
                ErrorKind::BadInput,
                format!("driver message is not valid base64: {what} at offset {at}"),
            ));
        }
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
                .with_decode_allow_trailing_bits(true),
        );
        engine.decode(&trimmed).map_err(|e| {
            fail(
                ErrorKind::BadInput,
                format!("driver message is not valid base64: {e}"),
            )
        })?
    };
    let text = String::from_utf8(raw).map_err(|_| {
        fail(
            ErrorKind::BadInput,
            "driver message is neither XML nor base64 of XML: it decodes to binary data",
        )
    })?;
    if !text.trim_start().starts_with('<') {
        return Err(fail(
            ErrorKind::BadInput,
            "driver message decodes to text that is not XML",
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str =
        "<DS_DRIVER_ACTION_DATA><DATASTORE><ID>7</ID></DATASTORE></DS_DRIVER_ACTION_DATA>";

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn three_modes() {
        let m = read_ds_input(&args(&[&b64(XML), "5"]), &mut std::io::empty()).unwrap();
        assert_eq!(
            (m.mode, m.id.as_str(), m.message.datastore.id),
            (InputMode::Argv, "5", 7)
        );
        let m = read_ds_input(&args(&["-", "5"]), &mut b64(XML).as_bytes()).unwrap();
        assert_eq!(m.mode, InputMode::DashStdin);
        let m = read_ds_input(&args(&["5"]), &mut b64(XML).as_bytes()).unwrap();
        assert_eq!(m.mode, InputMode::Stdin);
    }

    #[test]
    fn tolerant_base64() {
        let mut s = b64(XML);
        s.insert(10, '\n');
        let s = s.trim_end_matches('=').to_string() + "\n";
        assert_eq!(decode_message(s.as_bytes()).unwrap(), XML);
    }

    #[test]
    fn bad_inputs_are_named() {
        let err = |a: &[&str], stdin: &[u8]| {
            let e = read_ds_input(&args(a), &mut &stdin[..]).unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 2);
            format!("{e:#}")
        };
        assert!(err(&["5"], b"!!!not base64!!!").contains("not valid base64"));
        assert!(err(&["5"], b64("hello world").as_bytes()).contains("not XML"));
        assert!(err(&["x"], b64(XML).as_bytes()).contains("not a non-negative integer"));
        assert!(err(&[], b"").contains("missing arguments"));
        assert!(err(&["a", "b", "c"], b"").contains("got 3"));
        assert!(err(&["5"], b"").contains("empty"));
        let big = vec![b'A'; MAX_MESSAGE_BYTES + 10];
        assert!(err(&["5"], &big).contains("larger than"));
        assert!(err(&["-", "5"], &big).contains("larger than"));
        // Linux caps one argv string at 128 KiB, but the rule does not depend on it.
        let big = String::from_utf8(big).unwrap();
        assert!(err(&[&big, "5"], b"").contains("larger than"));
        assert_eq!(
            err(&["5"], b"PERT\n X0RS\x01"),
            "driver message is not valid base64: '\\u{1}' at offset 10"
        );
        assert_eq!(
            err(&["5"], "PERT\u{e9}".as_bytes()),
            "driver message is not valid base64: byte 0xc3 at offset 4"
        );
    }
}
