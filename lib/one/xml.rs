//! A small read-only XML tree over quick-xml.
//!
//! oned's documents mix two escaping styles (CDATA for attribute values, entities elsewhere),
//! repeat element names for multi-valued attributes and are otherwise schema-less, so we read
//! them into a generic tree and pick the fields we need; unknown elements are ignored. Text is
//! the concatenation of an element's text and CDATA pieces, trimmed.

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::error::{fail, ErrorKind};

/// An element: name, text (trimmed) and children in document order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// Tag name.
    pub name: String,
    /// Text content (text and CDATA, unescaped, trimmed).
    pub text: String,
    /// Child elements, in order.
    pub children: Vec<Element>,
}

/// Deepest nesting accepted; oned's documents are shallow (< 10), this only stops abuse.
const MAX_DEPTH: usize = 64;

impl Element {
    /// Parses a document and returns its root element.
    pub fn parse(xml: &str) -> anyhow::Result<Element> {
        let mut reader = Reader::from_str(xml);
        let mut stack: Vec<Element> = Vec::new();
        let mut root: Option<Element> = None;
        loop {
            let ev = reader.read_event().map_err(|e| {
                fail(
                    ErrorKind::BadInput,
                    format!("invalid XML at byte {}: {e}", reader.buffer_position()),
                )
            })?;
            match ev {
                Event::Start(s) => {
                    if root.is_some() {
                        return Err(fail(
                            ErrorKind::BadInput,
                            "invalid XML: content after the root element",
                        ));
                    }
                    if stack.len() >= MAX_DEPTH {
                        return Err(fail(ErrorKind::BadInput, "invalid XML: nested too deeply"));
                    }
                    stack.push(Element {
                        name: String::from_utf8_lossy(s.name().as_ref()).into_owned(),
                        ..Default::default()
                    });
                }
                Event::Empty(s) => {
                    let e = Element {
                        name: String::from_utf8_lossy(s.name().as_ref()).into_owned(),
                        ..Default::default()
                    };
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(e),
                        None if root.is_none() => root = Some(e),
                        None => {
                            return Err(fail(
                                ErrorKind::BadInput,
                                "invalid XML: content after the root element",
                            ))
                        }
                    }
                }
                Event::End(_) => {
                    let mut e = stack.pop().ok_or_else(|| {
                        fail(ErrorKind::BadInput, "invalid XML: unbalanced end tag")
                    })?;
                    e.text = e.text.trim().to_string();
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(e),
                        None => root = Some(e),
                    }
                }
                Event::Text(t) => {
                    let raw = String::from_utf8_lossy(t.as_ref()).into_owned();
                    let text = unescape(&raw)?;
                    match stack.last_mut() {
                        Some(cur) => cur.text.push_str(&text),
                        None if text.trim().is_empty() => {}
                        None => {
                            return Err(fail(
                                ErrorKind::BadInput,
                                "invalid XML: text outside the root element",
                            ))
                        }
                    }
                }
                Event::GeneralRef(r) => {
                    let name = String::from_utf8_lossy(r.as_ref()).into_owned();
                    let text = unescape(&format!("&{name};"))?;
                    if let Some(cur) = stack.last_mut() {
                        cur.text.push_str(&text);
                    }
                }
                Event::CData(c) => {
                    if let Some(cur) = stack.last_mut() {
                        cur.text.push_str(&String::from_utf8_lossy(c.as_ref()));
                    }
                }
                Event::Eof => break,
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
            }
        }
        if !stack.is_empty() {
            return Err(fail(
                ErrorKind::BadInput,
                format!("invalid XML: element <{}> is not closed", stack[0].name),
            ));
        }
        root.ok_or_else(|| fail(ErrorKind::BadInput, "invalid XML: no root element"))
    }

    /// Parses a document whose root element must be `<root>`; `what` names the document in
    /// the error (`driver message has root element <VM>, expected <DS_DRIVER_ACTION_DATA>`).
    pub fn parse_document(xml: &str, root: &str, what: &str) -> anyhow::Result<Element> {
        let e = Element::parse(xml)?;
        if e.name != root {
            return Err(fail(
                ErrorKind::BadInput,
                format!("{what} has root element <{}>, expected <{root}>", e.name),
            ));
        }
        Ok(e)
    }

    /// First child with this name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// All children with this name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Text of the first child with this name.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// Follows a `/`-separated path of child names.
    pub fn at(&self, path: &str) -> Option<&Element> {
        path.split('/')
            .filter(|p| !p.is_empty())
            .try_fold(self, |e, name| e.child(name))
    }
}

/// Resolves the five XML entities and numeric character references.
fn unescape(s: &str) -> anyhow::Result<String> {
    if !s.contains('&') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after
            .find(';')
            .filter(|&e| e <= 12)
            .ok_or_else(|| fail(ErrorKind::BadInput, "invalid XML: unterminated entity"))?;
        let name = &after[..end];
        let ch = match name {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "apos" => '\'',
            "quot" => '"',
            n if n.starts_with("#x") || n.starts_with("#X") => {
                char_ref(u32::from_str_radix(&n[2..], 16).ok())?
            }
            n if n.starts_with('#') => char_ref(n[1..].parse().ok())?,
            other => {
                return Err(fail(
                    ErrorKind::BadInput,
                    format!("invalid XML: unknown entity &{other};"),
                ))
            }
        };
        out.push(ch);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn char_ref(code: Option<u32>) -> anyhow::Result<char> {
    code.and_then(char::from_u32)
        .ok_or_else(|| fail(ErrorKind::BadInput, "invalid XML: bad character reference"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdata_and_entities_both_decode() {
        let e = Element::parse(
            "<A><B><![CDATA[ x&y ]]></B><C>p?a=1&amp;b=2&#x0d;</C><D/><B>two</B></A>",
        )
        .unwrap();
        assert_eq!(e.child_text("B"), Some("x&y"));
        assert_eq!(e.child_text("C"), Some("p?a=1&b=2"));
        assert_eq!(e.child_text("D"), Some(""));
        assert_eq!(e.children_named("B").count(), 2);
    }

    #[test]
    fn malformed_documents_are_bad_input() {
        for bad in ["", "<A>", "<A></B>", "<A/><B/>", "text", "<A>&bogus;</A>"] {
            let err = Element::parse(bad).unwrap_err();
            assert_eq!(crate::error::exit_code(&err), 2, "{bad}: {err}");
        }
    }
}
