//! A locating parser for OpenNebula's configuration template language (oned.conf): it finds
//! where each top-level attribute is, byte for byte, so that an edit can touch exactly the
//! bytes it means to and leave every comment, blank and ordering alone.
//!
//! The grammar follows OpenNebula's own lexer (`src/parsers/template_parser.l`):
//! - `NAME = value` where NAME is `[A-Za-z0-9_]+`;
//! - a value is a double-quoted string (it may span lines; `\"` is an escaped quote), an
//!   unquoted word (anything but `= # , [ ]`, blanks and newlines), nothing (`NAME =` at the end
//!   of a line), or a vector `[ K = v, K = v ]` whose elements may be spread over lines;
//! - `#` starts a comment running to the end of the line, wherever a token may start.
//!
//! Invariants: parsing never guesses. Anything the lexer above would not accept (an unclosed
//! quote or bracket, a stray character) is an error naming the line, so an edit is refused
//! before anything is written. Names are compared case-insensitively, as oned does.

use std::ops::Range;

use crate::error::{fail, ErrorKind};

/// A value and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The text as written, quotes included.
    pub span: Range<usize>,
    /// The text inside the quotes (the whole word when unquoted).
    pub inner: Range<usize>,
    /// Whether it was double-quoted.
    pub quoted: bool,
}

/// A top-level attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Its name as written.
    pub name: String,
    /// From the first byte of the name to the last byte of the value (`]` or the closing quote).
    pub span: Range<usize>,
    /// The value.
    pub body: Body,
}

/// What an attribute holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `NAME = value`.
    Single(Value),
    /// `NAME = [ K = v, … ]`, elements in order.
    Vector(Vec<(String, Value)>),
}

/// A parsed file: the text and its top-level attributes in order.
#[derive(Debug, Clone)]
pub struct Parsed<'a> {
    /// The text.
    pub text: &'a str,
    /// The attributes.
    pub attrs: Vec<Attribute>,
}

impl Parsed<'_> {
    /// The attributes named `name` (case-insensitive), in file order.
    pub fn named<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s Attribute> + 's {
        let name = name.to_string();
        self.attrs
            .iter()
            .filter(move |a| a.name.eq_ignore_ascii_case(&name))
    }

    /// The unquoted content of a value.
    pub fn inner(&self, v: &Value) -> &str {
        &self.text[v.inner.clone()]
    }

    /// The value of key `key` in a vector attribute (case-insensitive), if exactly one.
    pub fn vector_value<'s>(&'s self, a: &'s Attribute, key: &str) -> Option<&'s Value> {
        match &a.body {
            Body::Vector(items) => {
                let mut found = items.iter().filter(|(k, _)| k.eq_ignore_ascii_case(key));
                let first = found.next()?;
                found.next().is_none().then_some(&first.1)
            }
            Body::Single(_) => None,
        }
    }

    /// The 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        line_of(self.text, offset)
    }

    /// Where text inserted "after" an attribute goes: the end of the line its value ends on
    /// (before that line's newline), so a trailing comment stays with its attribute.
    pub fn end_of_line_after(&self, a: &Attribute) -> usize {
        self.text[a.span.end..]
            .find('\n')
            .map(|i| a.span.end + i)
            .unwrap_or(self.text.len())
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_word_byte(b: u8) -> bool {
    !matches!(
        b,
        b'=' | b'#' | b',' | b'[' | b']' | b' ' | b'\t' | b'\n' | b'\r'
    )
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn error(&self, at: usize, what: &str) -> anyhow::Error {
        fail(
            ErrorKind::BadInput,
            format!("line {}: {what}", line_of(self.text, at)),
        )
    }

    /// Skips blanks, newlines and comments.
    fn skip_space(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => self.pos += 1,
                b'#' => {
                    self.pos = self.text[self.pos..]
                        .find('\n')
                        .map(|i| self.pos + i)
                        .unwrap_or(self.text.len())
                }
                _ => break,
            }
        }
    }

    /// Skips blanks only (not newlines).
    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.pos += 1;
        }
    }

    fn name(&mut self) -> anyhow::Result<(String, usize)> {
        let start = self.pos;
        while self.peek().is_some_and(is_name_byte) {
            self.pos += 1;
        }
        if self.pos == start {
            let shown: String = self.text[start..].chars().take(20).collect();
            return Err(self.error(
                start,
                &format!("expected an attribute name, found {shown:?}"),
            ));
        }
        Ok((self.text[start..self.pos].to_string(), start))
    }

    fn equals(&mut self, name: &str) -> anyhow::Result<()> {
        self.skip_blanks();
        if self.peek() != Some(b'=') {
            return Err(self.error(self.pos, &format!("expected '=' after {name}")));
        }
        self.pos += 1;
        self.skip_blanks();
        Ok(())
    }

    /// A quoted or unquoted value, or an empty one when the line ends.
    fn scalar(&mut self, name: &str) -> anyhow::Result<Value> {
        let start = self.pos;
        match self.peek() {
            Some(b'"') => {
                let bytes = self.text.as_bytes();
                let mut i = start + 1;
                loop {
                    match bytes.get(i) {
                        None => {
                            return Err(self.error(
                                start,
                                &format!("the quoted value of {name} is never closed"),
                            ))
                        }
                        Some(b'\\') if bytes.get(i + 1) == Some(&b'"') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                self.pos = i + 1;
                Ok(Value {
                    span: start..self.pos,
                    inner: start + 1..i,
                    quoted: true,
                })
            }
            _ => {
                while self.peek().is_some_and(is_word_byte) {
                    self.pos += 1;
                }
                Ok(Value {
                    span: start..self.pos,
                    inner: start..self.pos,
                    quoted: false,
                })
            }
        }
    }

    fn vector(&mut self, name: &str, open: usize) -> anyhow::Result<Vec<(String, Value)>> {
        let mut items = Vec::new();
        self.skip_space();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(items);
        }
        loop {
            self.skip_space();
            if self.peek().is_none() {
                return Err(self.error(open, &format!("the '[' of {name} is never closed")));
            }
            let (key, _) = self.name()?;
            self.equals(&key)?;
            if self.peek() == Some(b'[') {
                return Err(self.error(self.pos, &format!("{name}: a vector inside a vector")));
            }
            let v = self.scalar(&key)?;
            items.push((key, v));
            self.skip_space();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(items);
                }
                None => return Err(self.error(open, &format!("the '[' of {name} is never closed"))),
                Some(c) => {
                    return Err(self.error(
                        self.pos,
                        &format!(
                            "{name} (from line {}): expected ',' or ']', found {:?}",
                            line_of(self.text, open),
                            c as char
                        ),
                    ))
                }
            }
        }
    }
}

/// Parses a whole file.
pub fn parse(text: &str) -> anyhow::Result<Parsed<'_>> {
    let mut lx = Lexer { text, pos: 0 };
    let mut attrs = Vec::new();
    loop {
        lx.skip_space();
        if lx.peek().is_none() {
            break;
        }
        let (name, start) = lx.name()?;
        lx.equals(&name)?;
        let body = if lx.peek() == Some(b'[') {
            let open = lx.pos;
            lx.pos += 1;
            Body::Vector(lx.vector(&name, open)?)
        } else {
            Body::Single(lx.scalar(&name)?)
        };
        let end = lx.pos;
        // After a value only blanks, a comment or the end of the line may follow.
        lx.skip_blanks();
        match lx.peek() {
            None | Some(b'\n') | Some(b'#') => {}
            Some(c) => {
                return Err(lx.error(
                    lx.pos,
                    &format!("unexpected {:?} after the value of {name}", c as char),
                ))
            }
        }
        attrs.push(Attribute {
            name,
            span: start..end,
            body,
        });
    }
    Ok(Parsed { text, attrs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_with_their_exact_spans() {
        let text = "# c\nA = 1\nB = \"x # y\" # trailing\nC = [\n  K = \"v\", # c\n  L = w\n]\nD =\nE = \"multi\nline \\\" q\"\n";
        let p = parse(text).unwrap();
        let names: Vec<&str> = p.attrs.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["A", "B", "C", "D", "E"]);
        assert_eq!(&text[p.attrs[1].span.clone()], "B = \"x # y\"");
        let b = p.named("b").next().unwrap();
        match &b.body {
            Body::Single(v) => assert_eq!(p.inner(v), "x # y"),
            other => panic!("{other:?}"),
        }
        let c = p.named("C").next().unwrap();
        assert_eq!(p.inner(p.vector_value(c, "l").unwrap()), "w");
        assert_eq!(p.line_of(c.span.end), 7);
        assert_eq!(&text[p.end_of_line_after(&p.attrs[1])..][..1], "\n");
        match &p.named("D").next().unwrap().body {
            Body::Single(v) => assert!(v.inner.is_empty()),
            other => panic!("{other:?}"),
        }
        let e = p.named("E").next().unwrap();
        match &e.body {
            Body::Single(v) => assert_eq!(p.inner(v), "multi\nline \\\" q"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_input_names_the_line() {
        for (text, want) in [
            (
                "A = \"open\n",
                "line 1: the quoted value of A is never closed",
            ),
            (
                "A = 1\nB = [ K = 1,\n",
                "line 2: the '[' of B is never closed",
            ),
            ("A = 1\n= 2\n", "line 2: expected an attribute name"),
            ("A 1\n", "line 1: expected '=' after A"),
            (
                "A = [ K = 1 L = 2 ]\n",
                "line 1: A (from line 1): expected ',' or ']'",
            ),
            (
                "A = \"x\" y\n",
                "line 1: unexpected 'y' after the value of A",
            ),
            ("A = [ K = [ ] ]\n", "line 1: A: a vector inside a vector"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_stock_files_parse() {
        for f in ["oned.conf-6.10.5.conf", "oned.conf-master-f847cf2e.conf"] {
            let path = format!(
                "{}/../tests/fixtures/opennebula/{f}",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(&path).unwrap();
            let p = parse(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert_eq!(p.named("TM_MAD").count(), 1, "{f}");
            assert!(p.named("TM_MAD_CONF").count() > 5, "{f}");
            assert!(p.named("INHERIT_DATASTORE_ATTR").count() > 5, "{f}");
        }
    }
}
