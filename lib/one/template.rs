//! OpenNebula templates: an ordered multimap of attributes.
//!
//! oned serialises a template as one element per attribute (alphabetical, repeated names
//! repeat the element); a *vector* attribute has child elements (`DISK = [ ID = 0, … ]`).
//! Values arrive as CDATA or entity-escaped text; [`super::xml`] already unified that.

use serde::Serialize;

use super::xml::Element;

/// An attribute value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// `NAME = "value"`.
    Single(String),
    /// `NAME = [ K = V, … ]`.
    Vector(Vec<(String, String)>),
}

/// An ordered multimap of attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Template {
    attrs: Vec<(String, Value)>,
}

impl Template {
    /// Reads a `<TEMPLATE>` (or any element whose children are attributes).
    pub fn from_element(e: &Element) -> Template {
        let attrs = e
            .children
            .iter()
            .map(|c| {
                let v = if c.children.is_empty() {
                    Value::Single(c.text.clone())
                } else {
                    Value::Vector(
                        c.children
                            .iter()
                            .map(|k| (k.name.clone(), k.text.clone()))
                            .collect(),
                    )
                };
                (c.name.clone(), v)
            })
            .collect();
        Template { attrs }
    }

    /// Builds a template from pairs (tests, synthetic messages).
    pub fn from_pairs<I, K, V>(pairs: I) -> Template
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Template {
            attrs: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), Value::Single(v.into())))
                .collect(),
        }
    }

    /// The first single value of `name` (names are matched exactly, as oned stores them
    /// upper-case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find_map(|(k, v)| match v {
            Value::Single(s) if k == name => Some(s.as_str()),
            _ => None,
        })
    }

    /// The first single value of `name` if present and not empty.
    pub fn get_nonempty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|s| !s.trim().is_empty())
    }

    /// Every single value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.attrs.iter().filter_map(move |(k, v)| match v {
            Value::Single(s) if k == name => Some(s.as_str()),
            _ => None,
        })
    }

    /// Every vector value of `name`, in order.
    pub fn vectors<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a [(String, String)]> + 'a {
        self.attrs.iter().filter_map(move |(k, v)| match v {
            Value::Vector(pairs) if k == name => Some(pairs.as_slice()),
            _ => None,
        })
    }

    /// All attributes in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.attrs.len()
    }

    /// Whether there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }
}

/// A value from a vector attribute.
pub fn vector_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

impl Serialize for Template {
    /// As a JSON object; a repeated name becomes an array of its values.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut names: Vec<&str> = Vec::new();
        for (k, _) in &self.attrs {
            if !names.contains(&k.as_str()) {
                names.push(k);
            }
        }
        let mut m = s.serialize_map(Some(names.len()))?;
        for name in names {
            let vals: Vec<serde_json::Value> = self
                .attrs
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| match v {
                    Value::Single(s) => serde_json::Value::String(s.clone()),
                    Value::Vector(p) => serde_json::Value::Object(
                        p.iter()
                            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                            .collect(),
                    ),
                })
                .collect();
            if vals.len() == 1 {
                m.serialize_entry(name, &vals[0])?;
            } else {
                m.serialize_entry(name, &vals)?;
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multimap_keeps_order_repeats_and_vectors() {
        let e = Element::parse(
            "<TEMPLATE><A><![CDATA[1]]></A><B>x</B><A>2</A><DISK><ID>0</ID><SIZE>10</SIZE></DISK></TEMPLATE>",
        )
        .unwrap();
        let t = Template::from_element(&e);
        assert_eq!(t.get("A"), Some("1"));
        assert_eq!(t.get_all("A").collect::<Vec<_>>(), ["1", "2"]);
        let d: Vec<_> = t.vectors("DISK").collect();
        assert_eq!(vector_get(d[0], "SIZE"), Some("10"));
        let j = serde_json::to_value(&t).unwrap();
        assert_eq!(j["A"], serde_json::json!(["1", "2"]));
        assert_eq!(j["DISK"]["ID"], "0");
    }
}
