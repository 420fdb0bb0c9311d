//! The OpenNebula side, pure (no I/O beyond reading the given stdin): how oned calls us and
//! what it expects back.
//!
//! - [`input`]: the three ways a datastore action receives its message;
//! - [`message`]: the `DS_DRIVER_ACTION_DATA` document, typed;
//! - [`tm`]: transfer-manager argv, typed and validated;
//! - [`vm`]: the VM document (`onevm show -x`, migrate stdin);
//! - [`output`]: what each action prints on stdout;
//! - [`xml`], [`template`]: the generic document model under the typed values.

pub mod input;
pub mod message;
pub mod output;
pub mod template;
pub mod tm;
pub mod vm;
pub mod xml;

#[cfg(test)]
mod fixtures_tests;
#[cfg(test)]
mod trace_tests;

/// Datastore actions this driver answers, as named in `remotes/datastore/bsud/`.
pub const DS_ACTIONS: &[&str] = &[
    "cp",
    "mkfs",
    "rm",
    "stat",
    "monitor",
    "clone",
    "export",
    "snap_delete",
    "snap_revert",
    "snap_flatten",
];

/// Collapses repeated `/` (oned's `/var/lib/one//datastores`) and drops a trailing `/` and
/// `.` components. Does not resolve `..` (callers refuse it) nor symlinks.
pub fn normalize_path(p: &str) -> String {
    let absolute = p.starts_with('/');
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_path;

    #[test]
    fn normalizes() {
        assert_eq!(
            normalize_path("/var/lib/one//datastores/101/"),
            "/var/lib/one/datastores/101"
        );
        assert_eq!(normalize_path("//a/./b"), "/a/b");
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(normalize_path("vg/lv"), "vg/lv");
    }
}
