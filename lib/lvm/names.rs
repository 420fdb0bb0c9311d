//! Validated names: volume groups, logical volumes, tags and device paths.
//!
//! Every value that reaches an LVM command line or a host path is one of these types, and the
//! only way to build one is [`std::str::FromStr`], which checks it. So a name can never be read
//! as an option (no leading `-`), never escape its directory (no `/`, not `.`/`..`) and never
//! carry a character LVM would reject later, after half the work was done.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{fail, ErrorKind};

/// LVM's limit on VG and LV names.
const MAX_NAME_LEN: usize = 127;
/// LVM's limit on a tag.
const MAX_TAG_LEN: usize = 1024;

fn bad(msg: String) -> anyhow::Error {
    fail(ErrorKind::BadInput, msg)
}

fn check_name(what: &str, s: &str) -> anyhow::Result<()> {
    if s.is_empty() {
        return Err(bad(format!("{what} name is empty")));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(bad(format!(
            "{what} name {s:?} is longer than {MAX_NAME_LEN} characters"
        )));
    }
    if s.starts_with('-') {
        return Err(bad(format!("{what} name {s:?} starts with '-'")));
    }
    if s == "." || s == ".." {
        return Err(bad(format!("{what} name {s:?} is not allowed")));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '_' | '.' | '-')))
    {
        return Err(bad(format!(
            "{what} name {s:?} contains {c:?} (allowed: letters, digits, + _ . -)"
        )));
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<std::ffi::OsStr> for $name {
            fn as_ref(&self) -> &std::ffi::OsStr {
                self.0.as_ref()
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(|e: anyhow::Error| serde::de::Error::custom(e))
            }
        }
    };
}

string_newtype!(
    /// A volume group name: `[A-Za-z0-9+_.-]`, not starting with `-`.
    VgName
);
string_newtype!(
    /// A logical volume name: `[A-Za-z0-9+_.-]`, not starting with `-`.
    LvName
);
string_newtype!(
    /// A `key=value` tag in LVM's tag alphabet `[A-Za-z0-9_+.-/=!:&#]`.
    Tag
);
string_newtype!(
    /// An absolute device path made of safe characters (`[A-Za-z0-9/_.:+@-]`, no `..`).
    DevicePath
);

impl FromStr for VgName {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        check_name("volume group", s)?;
        Ok(VgName(s.to_string()))
    }
}

impl FromStr for LvName {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        check_name("logical volume", s)?;
        Ok(LvName(s.to_string()))
    }
}

impl Tag {
    /// Every tag of `tags`, or the first one that is not valid.
    pub fn parse_all<S: AsRef<str>>(tags: &[S]) -> anyhow::Result<Vec<Tag>> {
        tags.iter().map(|t| t.as_ref().parse()).collect()
    }
}

impl FromStr for Tag {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        if s.len() > MAX_TAG_LEN {
            return Err(bad(format!(
                "tag {s:?} is longer than {MAX_TAG_LEN} characters"
            )));
        }
        if s.starts_with('-') {
            return Err(bad(format!("tag {s:?} starts with '-'")));
        }
        if let Some(c) = s.chars().find(|c| !is_tag_char(*c)) {
            return Err(bad(format!(
                "tag {s:?} contains {c:?} (allowed: letters, digits, _ + . - / = ! : & #)"
            )));
        }
        match s.split_once('=') {
            Some((k, _)) if !k.is_empty() => Ok(Tag(s.to_string())),
            _ => Err(bad(format!("tag {s:?} is not of the form key=value"))),
        }
    }
}

impl Tag {
    /// A tag from a key and a value, validated.
    pub fn new(key: &str, value: impl fmt::Display) -> anyhow::Result<Tag> {
        format!("{key}={value}").parse()
    }

    /// The part before the first `=`.
    pub fn key(&self) -> &str {
        self.0.split_once('=').map(|(k, _)| k).unwrap_or(&self.0)
    }

    /// The part after the first `=`.
    pub fn value(&self) -> &str {
        self.0.split_once('=').map(|(_, v)| v).unwrap_or("")
    }
}

fn is_tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '_' | '+' | '.' | '-' | '/' | '=' | '!' | ':' | '&' | '#')
}

impl FromStr for DevicePath {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        if !s.starts_with('/') || s.len() < 2 {
            return Err(bad(format!("device {s:?} is not an absolute path")));
        }
        if s.len() > 4096 {
            return Err(bad(format!("device path {s:?} is too long")));
        }
        if let Some(c) = s.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.' | ':' | '+' | '@' | '-'))
        }) {
            return Err(bad(format!("device path {s:?} contains {c:?}")));
        }
        if s.split('/').any(|part| part == "..") {
            return Err(bad(format!("device path {s:?} contains '..'")));
        }
        Ok(DevicePath(s.to_string()))
    }
}

impl DevicePath {
    /// As a filesystem path.
    pub fn path(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_lvm_alphabet_and_refuse_the_rest() {
        for good in ["vg-one-100", "img-one-7", "a+b_c.d", "X9"] {
            good.parse::<VgName>().unwrap();
            good.parse::<LvName>().unwrap();
        }
        for bad in [
            "",
            "-x",
            ".",
            "..",
            "a/b",
            "a b",
            "a$b",
            "é",
            &"x".repeat(128),
        ] {
            let e = bad.parse::<LvName>().unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 2, "{bad}");
        }
    }

    #[test]
    fn tags_are_key_value_in_lvm_alphabet() {
        let t: Tag = "one.bsud.drive-name=h1:vg-one-1&#!/x".parse().unwrap();
        assert_eq!(t.key(), "one.bsud.drive-name");
        assert_eq!(t.value(), "h1:vg-one-1&#!/x");
        assert_eq!(Tag::new("one.vm", 3).unwrap().as_str(), "one.vm=3");
        for bad in [
            "novalue", "=v", "-a=b", "a=b c", "a=$(x)", "a=b,c", "a=b;c", "a='",
        ] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }

    #[test]
    fn device_paths_are_absolute_and_plain() {
        "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_sdb"
            .parse::<DevicePath>()
            .unwrap();
        for bad in [
            "dev/sdb",
            "/",
            "/dev/../etc/passwd",
            "/dev/sd b",
            "/dev/$(x)",
        ] {
            assert!(bad.parse::<DevicePath>().is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<VgName>("\"-bad\"").is_err());
        let v: VgName = serde_json::from_str("\"vg-one-1\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"vg-one-1\"");
    }
}
