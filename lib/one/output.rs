//! What actions print on stdout. Handlers return one of these; only the entry point renders
//! and writes it, once.

use serde::Serialize;

/// An action's stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum ActionOutput {
    /// Nothing (rm, snap_*, every TM action but monitor).
    Nothing,
    /// One line: `SOURCE FORMAT` (cp, clone), `SOURCE` (mkfs), `SIZE_MB` (stat).
    Line(String),
    /// Datastore capacity, in MB.
    Monitor {
        /// USED_MB.
        used_mb: u64,
        /// FREE_MB.
        free_mb: u64,
        /// TOTAL_MB.
        total_mb: u64,
        /// Extra lines (per-VM disk sizes for a system datastore).
        extra: Vec<String>,
    },
    /// A multi-line document printed as is (export's IMPORT_INFO, host agent JSON).
    Document(String),
}

impl ActionOutput {
    /// The bytes for stdout. A line never contains a newline inside (the protocol reads one
    /// line per message) and always ends with one.
    pub fn render(&self) -> Vec<u8> {
        match self {
            ActionOutput::Nothing => Vec::new(),
            ActionOutput::Line(l) => {
                let mut s: String = l
                    .chars()
                    .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
                    .collect();
                s.push('\n');
                s.into_bytes()
            }
            ActionOutput::Monitor {
                used_mb,
                free_mb,
                total_mb,
                extra,
            } => {
                let mut s = format!("USED_MB={used_mb}\nFREE_MB={free_mb}\nTOTAL_MB={total_mb}\n");
                for l in extra {
                    s.push_str(l);
                    s.push('\n');
                }
                s.into_bytes()
            }
            ActionOutput::Document(d) => {
                let mut s = d.clone();
                if !s.ends_with('\n') {
                    s.push('\n');
                }
                s.into_bytes()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(ActionOutput::Nothing.render(), b"");
        assert_eq!(
            ActionOutput::Line("h:vg-one-1/img-one-2 raw".into()).render(),
            b"h:vg-one-1/img-one-2 raw\n"
        );
        assert_eq!(ActionOutput::Line("a\nb".into()).render(), b"a b\n");
        let m = ActionOutput::Monitor {
            used_mb: 1,
            free_mb: 2,
            total_mb: 3,
            extra: vec![],
        };
        assert_eq!(m.render(), b"USED_MB=1\nFREE_MB=2\nTOTAL_MB=3\n");
    }
}
