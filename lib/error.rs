//! Error classification and exit codes.
//!
//! Inside the crate errors are `anyhow::Error` with context naming the objects involved. Where
//! the caller (oned, an operator, a script) must be able to tell *kinds* of failure apart, the
//! error carries an [`ErrorKind`] somewhere in its chain (attach it with [`Classify::kind`] or
//! [`fail`]). [`exit_code`] finds it; an unclassified error is a plain failure (exit 1).
//!
//! The exit codes are part of the interface and documented in README.md:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the operation failed (cloud, LVM, ssh, data); nothing half-done was left that a rerun cannot finish |
//! | 2 | bad input: argv, stdin or the driver message is malformed or names something invalid |
//! | 3 | configuration: config file, credentials or a `BSUD_*` attribute is invalid |
//! | 4 | not implemented yet / not supported by this driver |
//! | 5 | a deadline passed (lock, cloud state, device, command) |
//! | 6 | refused: the request is valid but would destroy data or touch objects that are not ours |

use std::fmt;

/// What kind of failure an error is; decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Generic operational failure.
    Failed,
    /// Malformed argv, stdin or message.
    BadInput,
    /// Invalid configuration, credentials or datastore attribute.
    Config,
    /// The action is not implemented (yet) or not supported.
    NotImplemented,
    /// A deadline passed.
    Timeout,
    /// Refused to protect data or foreign objects.
    Refused,
}

impl ErrorKind {
    /// The process exit code for this kind.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Failed => 1,
            ErrorKind::BadInput => 2,
            ErrorKind::Config => 3,
            ErrorKind::NotImplemented => 4,
            ErrorKind::Timeout => 5,
            ErrorKind::Refused => 6,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::Failed => "failed",
            ErrorKind::BadInput => "bad input",
            ErrorKind::Config => "configuration error",
            ErrorKind::NotImplemented => "not implemented",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Refused => "refused",
        };
        f.write_str(s)
    }
}

/// A classified error: the message plus its kind. It is usually the innermost error of an
/// anyhow chain, so `{:#}` of the chain still reads as one sentence.
#[derive(Debug)]
pub struct Classified {
    /// The kind that decides the exit code.
    pub kind: ErrorKind,
    /// The human message.
    pub message: String,
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Classified {}

/// Builds a classified `anyhow::Error`.
pub fn fail(kind: ErrorKind, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Classified {
        kind,
        message: message.into(),
    })
}

/// `bail!` with a kind: `bail_kind!(BadInput, "disk id '{}' is not a number", s)`.
#[macro_export]
macro_rules! bail_kind {
    ($kind:ident, $($arg:tt)*) => {
        return Err($crate::error::fail($crate::error::ErrorKind::$kind, format!($($arg)*)))
    };
}

/// Attaches a kind to an existing error (keeping its chain) when it has none yet.
pub trait Classify<T> {
    /// Classifies the error as `kind` unless something deeper already classified it.
    fn kind(self, kind: ErrorKind) -> anyhow::Result<T>;
}

impl<T, E> Classify<T> for Result<T, E>
where
    E: Into<anyhow::Error>,
{
    fn kind(self, kind: ErrorKind) -> anyhow::Result<T> {
        self.map_err(|e| {
            let e: anyhow::Error = e.into();
            if find_kind(&e).is_some() {
                e
            } else {
                let message = format!("{e:#}");
                // The chain is folded into the message so the kind wraps the whole sentence.
                fail(kind, message)
            }
        })
    }
}

/// The first kind found in the chain, outermost first.
pub fn find_kind(e: &anyhow::Error) -> Option<ErrorKind> {
    e.chain()
        .find_map(|c| c.downcast_ref::<Classified>().map(|c| c.kind))
}

/// The exit code for an error.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    find_kind(e).unwrap_or(ErrorKind::Failed).exit_code()
}

/// The one-line human message for an error: the whole chain, control characters folded to
/// spaces, and never starting with `-` (oned discards such messages).
pub fn one_line(e: &anyhow::Error) -> String {
    sanitize_line(&format!("{e:#}"))
}

/// Makes any text safe as one stderr line for oned: no control characters, no leading `-`.
pub fn sanitize_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = out.trim();
    if trimmed.len() != out.len() {
        out = trimmed.to_string();
    }
    if out.starts_with('-') {
        out.insert_str(0, "error: ");
    }
    if out.is_empty() {
        out.push_str("error: (no message)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn kind_survives_context() {
        let e: anyhow::Result<()> = Err(fail(ErrorKind::BadInput, "bad id"));
        let e = e.context("decoding message").unwrap_err();
        assert_eq!(exit_code(&e), 2);
        assert_eq!(one_line(&e), "decoding message: bad id");
    }

    #[test]
    fn unclassified_is_failure() {
        let e = anyhow::anyhow!("boom");
        assert_eq!(exit_code(&e), 1);
    }

    #[test]
    fn classify_keeps_inner_kind() {
        let r: anyhow::Result<()> = Err(fail(ErrorKind::Timeout, "waited"));
        let e = r.kind(ErrorKind::Config).unwrap_err();
        assert_eq!(exit_code(&e), 5);
    }

    #[test]
    fn sanitize_never_starts_with_dash_nor_spans_lines() {
        assert_eq!(sanitize_line("-x\nnext"), "error: -x next");
        assert_eq!(sanitize_line(""), "error: (no message)");
        assert_eq!(sanitize_line("  ok  "), "ok");
    }
}
