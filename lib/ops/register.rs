//! Registering the driver in oned.conf and vmm_execrc: the edits, planned on the text.
//!
//! Invariants:
//! - **Only the bytes that must change change.** Every edit is an insertion or a replacement
//!   located by the template parser ([`super::template`]); comments, blanks and the order of
//!   everything else stay as they were.
//! - **Idempotent.** An edit is planned only when what it adds is absent, so planning on an
//!   edited file yields nothing and a second run writes nothing.
//! - **All or nothing.** Planning fails (naming the file's line and what was expected) when an
//!   entry that must be edited is missing, ambiguous or written in a form this code does not
//!   edit; the caller then writes nothing at all.
//! - An existing `bsud` TM_MAD_CONF / DS_MAD_CONF is the site's decision: it is never
//!   rewritten, only reported when it differs from what the design needs.

use std::ops::Range;

use super::template::{self, Attribute, Body, Parsed};
use crate::error::{fail, ErrorKind};

/// The driver's name in OpenNebula (TM_MAD and DS_MAD).
pub const DRIVER: &str = "bsud";

/// The system-datastore TMs one_datastore uses when `-s` is absent (its built-in default):
/// they stay when `-s` is created for us.
pub const DEFAULT_SYSTEM_TMS: &str = "shared,ssh,ceph";

/// Datastore attributes oned must copy into every VM disk (INHERIT_DATASTORE_ATTR): the TM
/// actions read a disk's drive policy from the VM document.
pub const INHERITED_ATTRS: &[&str] = &[
    "BSUD_VOLUME_TYPE",
    "BSUD_IOPS_PER_GIB",
    "BSUD_MIN_VOLUME_GIB",
    "BSUD_GROWTH_FACTOR",
    "BSUD_HEADROOM_GIB",
    "BSUD_MAX_VOLUMES",
    "BSUD_MAX_SIZE_GIB",
    "BSUD_SHRINK",
    "BSUD_IMAGE_HOST",
];

/// The TM_MAD_CONF the design needs (the block below writes exactly these).
pub const TM_MAD_CONF: &[(&str, &str)] = &[
    ("NAME", DRIVER),
    ("LN_TARGET", "SYSTEM"),
    ("CLONE_TARGET", "SYSTEM"),
    ("SHARED", "NO"),
    ("DS_MIGRATE", "YES"),
    ("DRIVER", "raw"),
    ("DISK_TYPE", "BLOCK"),
    ("ALLOW_ORPHANS", "YES"),
    ("PERSISTENT_SNAPSHOTS", "YES"),
];

/// The DS_MAD_CONF the design needs.
pub const DS_MAD_CONF: &[(&str, &str)] = &[
    ("NAME", DRIVER),
    ("REQUIRED_ATTRS", ""),
    ("PERSISTENT_ONLY", "NO"),
    ("MARKETPLACE_ACTIONS", "export"),
];

const TM_MAD_CONF_BLOCK: &str = r#"# ---- one-bsud (added by install.sh) ------------------------------------------------
# bsud: images and VM disks are LVM logical volumes on "drives", one volume group
# vg-one-<datastore> per (datastore, host), made of Outscale BSU volumes that the driver
# creates, attaches, adds and releases by itself.
#   LN_TARGET, CLONE_TARGET = SYSTEM: every VM disk, persistent or not, is its own LV on
#       the system datastore's drive of the VM's host; it counts against that datastore.
#   SHARED = NO: each host has its own drive. oned never calls tm/bsud/monitor for it; the
#       host probe im/kvm-probes.d/host/system/bsud-capacity reports each drive as
#       DS = [ ID, TOTAL_MB (its growth limit BSUD_MAX_SIZE_GIB), FREE_MB, USED_MB ].
#       Live migration gives only pre/postmigrate: the driver copies the disks itself.
#   DS_MIGRATE = YES: cold migration and resume may change the system datastore (the
#       disks are copied between drives). DS_LIVE_MIGRATE and DS_MIGRATE_SNAP are left
#       out (oned's default NO): a live move between system datastores and moving disks
#       that carry snapshots across datastores are refused by oned.
#   DRIVER = raw: datablocks and volatile disks are raw LVs.
#   DISK_TYPE = BLOCK: disk.N on the host is a symlink to the LV's block device.
#   ALLOW_ORPHANS = YES: a disk snapshot is an LV of its own; none depends on another.
#   PERSISTENT_SNAPSHOTS = YES: snapshots of a persistent disk stay with its image.
#   TM_MAD_SYSTEM is not set: bsud disks live only on bsud drives, so no other system
#       datastore TM can hold them.
TM_MAD_CONF = [
    NAME = "bsud", LN_TARGET = "SYSTEM", CLONE_TARGET = "SYSTEM", SHARED = "NO",
    DS_MIGRATE = "YES", DRIVER = "raw", DISK_TYPE = "BLOCK", ALLOW_ORPHANS = "YES",
    PERSISTENT_SNAPSHOTS = "YES"
]"#;

const DS_MAD_CONF_BLOCK: &str = r#"# ---- one-bsud (added by install.sh) ------------------------------------------------
# bsud image datastores: no attribute is required (the drive lives on BSUD_IMAGE_HOST, else
# the first BRIDGE_LIST host, else the frontend); persistent and non-persistent images are
# both supported; images can be exported to a marketplace.
DS_MAD_CONF = [
    NAME = "bsud", REQUIRED_ATTRS = "", PERSISTENT_ONLY = "NO",
    MARKETPLACE_ACTIONS = "export"
]"#;

const INHERIT_COMMENT: &str = "# one-bsud (added by install.sh): the drive policy of a bsud datastore, copied into\n# every VM disk so the transfer-manager actions read it from the VM.";

/// The live-snapshot pairs vmm_execrc must list for running VMs' disk snapshots.
pub const LIVE_SNAPSHOT_PAIRS: &[&str] = &["kvm-bsud", "qemu-bsud"];

/// One planned change: replace `range` (empty for an insertion) by `text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// Bytes replaced.
    pub range: Range<usize>,
    /// New text.
    pub text: String,
    /// What it does, for people.
    pub what: String,
}

/// The edits for one file, and remarks about what was left alone.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Edits, in file order (insertions at the same place in the order they must appear).
    pub edits: Vec<Edit>,
    /// Things a person should look at (never changed by us).
    pub notes: Vec<String>,
}

fn bad(msg: String) -> anyhow::Error {
    fail(ErrorKind::Config, msg)
}

/// The text with the edits applied.
pub fn apply(text: &str, edits: &[Edit]) -> String {
    let mut order: Vec<(usize, &Edit)> = edits.iter().enumerate().collect();
    order.sort_by_key(|(i, e)| (e.range.start, *i));
    let mut out = String::with_capacity(text.len() + 4096);
    let mut at = 0;
    for (_, e) in order {
        out.push_str(&text[at..e.range.start]);
        out.push_str(&e.text);
        at = e.range.end;
    }
    out.push_str(&text[at..]);
    out
}

/// A readable listing of the edits: for each group of edits touching the same lines, those
/// lines before (`-`) and after (`+`).
pub fn describe(text: &str, edits: &[Edit]) -> String {
    let line_start = |at: usize| text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_end = |at: usize| text[at..].find('\n').map(|i| at + i).unwrap_or(text.len());
    let mut order: Vec<&Edit> = edits.iter().collect();
    order.sort_by_key(|e| e.range.start);
    // Groups of edits whose lines overlap: (region start, region end, edits).
    let mut groups: Vec<(usize, usize, Vec<&Edit>)> = Vec::new();
    for e in order {
        let (s, t) = (line_start(e.range.start), line_end(e.range.end));
        match groups.last_mut() {
            Some(g) if s <= g.1 => {
                g.1 = g.1.max(t);
                g.2.push(e);
            }
            _ => groups.push((s, t, vec![e])),
        }
    }
    let mut out = String::new();
    for (start, end, group) in groups {
        let mut after = String::new();
        let mut at = start;
        for e in &group {
            after.push_str(&text[at..e.range.start]);
            after.push_str(&e.text);
            at = e.range.end;
        }
        after.push_str(&text[at..end]);
        let whats: Vec<&str> = group.iter().map(|e| e.what.as_str()).collect();
        let line = text[..start].matches('\n').count() + 1;
        out.push_str(&format!("@@ line {line}: {} @@\n", whats.join("; ")));
        for l in text[start..end].split('\n') {
            out.push_str(&format!("-{l}\n"));
        }
        for l in after.split('\n') {
            out.push_str(&format!("+{l}\n"));
        }
    }
    out
}

/// Whitespace-separated words of `s` with their byte ranges.
fn words(s: &str) -> Vec<(Range<usize>, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(st)) => {
                out.push((st..i, &s[st..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(st) = start {
        out.push((st..s.len(), &s[st..]));
    }
    out
}

/// The only attribute named `name`, which must be a vector with one quoted ARGUMENTS.
fn mad_arguments<'p>(p: &'p Parsed<'_>, name: &str) -> anyhow::Result<&'p template::Value> {
    let found: Vec<&Attribute> = p.named(name).collect();
    let a = match found.as_slice() {
        [a] => *a,
        [] => {
            return Err(bad(format!(
                "no {name} entry (expected {name} = [ EXECUTABLE = …, ARGUMENTS = \"…\" ])"
            )))
        }
        many => {
            return Err(bad(format!(
                "{} {name} entries (lines {}): cannot tell which one oned uses",
                many.len(),
                many.iter()
                    .map(|a| p.line_of(a.span.start).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    if !matches!(a.body, Body::Vector(_)) {
        return Err(bad(format!(
            "line {}: {name} is not a [ … ] entry",
            p.line_of(a.span.start)
        )));
    }
    let v = p.vector_value(a, "ARGUMENTS").ok_or_else(|| {
        bad(format!(
            "line {}: {name} has no single ARGUMENTS = \"…\"",
            p.line_of(a.span.start)
        ))
    })?;
    if !v.quoted {
        return Err(bad(format!(
            "line {}: the ARGUMENTS of {name} are not a quoted string",
            p.line_of(v.span.start)
        )));
    }
    Ok(v)
}

/// Plans adding `bsud` to the driver list after option `flag` (`-d`, `-s`) of a MAD's
/// ARGUMENTS. `absent`: the list to create when the option is missing (None: leave it missing,
/// which for `-d` means every driver is enabled).
fn list_option(
    p: &Parsed<'_>,
    mad: &str,
    flag: &str,
    long: &str,
    absent: Option<&str>,
) -> anyhow::Result<Option<Edit>> {
    let v = mad_arguments(p, mad)?;
    let args = p.inner(v);
    let ws = words(args);
    let line = p.line_of(v.span.start);
    if let Some((_, w)) = ws.iter().find(|(_, w)| {
        (w.starts_with(flag) && *w != flag) || *w == long || w.starts_with(&format!("{long}="))
    }) {
        return Err(bad(format!(
            "line {line}: {mad} ARGUMENTS give {w:?}; only the form `{flag} a,b,c` is edited here: add {DRIVER} to that list by hand"
        )));
    }
    let at: Vec<usize> = ws
        .iter()
        .enumerate()
        .filter(|(_, (_, w))| *w == flag)
        .map(|(i, _)| i)
        .collect();
    match at.as_slice() {
        [] => Ok(absent.map(|list| {
            let end = ws.last().map(|(r, _)| r.end).unwrap_or(0);
            Edit {
                range: v.inner.start + end..v.inner.start + end,
                text: format!("{}{flag} {list},{DRIVER}", if end == 0 { "" } else { " " }),
                what: format!("add {flag} {list},{DRIVER} to {mad}'s ARGUMENTS"),
            }
        })),
        [i] => {
            let Some((r, list)) = ws.get(i + 1) else {
                return Err(bad(format!(
                    "line {line}: {mad} ARGUMENTS end with {flag} and no list"
                )));
            };
            if list.starts_with('-') {
                return Err(bad(format!(
                    "line {line}: {mad} ARGUMENTS give {flag} without a list"
                )));
            }
            if list.split(',').any(|d| d == DRIVER) {
                return Ok(None);
            }
            let sep = if list.ends_with(',') { "" } else { "," };
            Ok(Some(Edit {
                range: v.inner.start + r.end..v.inner.start + r.end,
                text: format!("{sep}{DRIVER}"),
                what: format!("add {DRIVER} to {mad}'s {flag} list"),
            }))
        }
        _ => Err(bad(format!(
            "line {line}: {mad} ARGUMENTS give {flag} more than once"
        ))),
    }
}

/// Where a block goes: after the last attribute named `after`, else at the end of the file.
fn insertion(p: &Parsed<'_>, after: &str, block: &str, what: String) -> Edit {
    match p.named(after).last() {
        Some(a) => {
            let at = p.end_of_line_after(a);
            Edit {
                range: at..at,
                text: format!("\n\n{block}"),
                what,
            }
        }
        None => {
            let at = p.text.len();
            let lead = if p.text.is_empty() || p.text.ends_with('\n') {
                ""
            } else {
                "\n"
            };
            Edit {
                range: at..at,
                text: format!("{lead}\n{block}\n"),
                what,
            }
        }
    }
}

/// Plans the `<kind>_MAD_CONF` block for bsud, or notes how an existing one differs.
fn mad_conf(p: &Parsed<'_>, name: &str, wanted: &[(&str, &str)], block: &str, plan: &mut Plan) {
    let ours: Vec<&Attribute> = p
        .named(name)
        .filter(|a| p.vector_value(a, "NAME").map(|v| p.inner(v)) == Some(DRIVER))
        .collect();
    match ours.first() {
        None => plan.edits.push(insertion(
            p,
            name,
            block,
            format!("add the {name} of {DRIVER}"),
        )),
        Some(a) => {
            if ours.len() > 1 {
                plan.notes.push(format!(
                    "there are {} {name} entries for {DRIVER}; oned reads only one",
                    ours.len()
                ));
            }
            for (k, want) in wanted {
                let have = p.vector_value(a, k).map(|v| p.inner(v));
                if !have.is_some_and(|h| h.eq_ignore_ascii_case(want)) {
                    plan.notes.push(format!(
                        "line {}: the {name} of {DRIVER} has {k} = {} where the driver expects {k} = \"{want}\"; left as it is",
                        p.line_of(a.span.start),
                        have.map(|h| format!("\"{h}\"")).unwrap_or_else(|| "nothing".into())
                    ));
                }
            }
        }
    }
}

/// Plans registering the driver in oned.conf.
pub fn plan_oned_conf(text: &str) -> anyhow::Result<Plan> {
    let p = template::parse(text).map_err(|e| bad(e.to_string()))?;
    let mut plan = Plan::default();
    plan.edits
        .extend(list_option(&p, "TM_MAD", "-d", "--tm-types", None)?);
    plan.edits
        .extend(list_option(&p, "DATASTORE_MAD", "-d", "--ds-types", None)?);
    plan.edits.extend(list_option(
        &p,
        "DATASTORE_MAD",
        "-s",
        "--system-ds-types",
        Some(DEFAULT_SYSTEM_TMS),
    )?);
    mad_conf(&p, "TM_MAD_CONF", TM_MAD_CONF, TM_MAD_CONF_BLOCK, &mut plan);
    mad_conf(&p, "DS_MAD_CONF", DS_MAD_CONF, DS_MAD_CONF_BLOCK, &mut plan);

    let inherited: Vec<&str> = p
        .named("INHERIT_DATASTORE_ATTR")
        .filter_map(|a| match &a.body {
            Body::Single(v) => Some(p.inner(v)),
            Body::Vector(_) => None,
        })
        .collect();
    let missing: Vec<&str> = INHERITED_ATTRS
        .iter()
        .copied()
        .filter(|a| !inherited.contains(a))
        .collect();
    if !missing.is_empty() {
        let mut block = String::new();
        if missing.len() == INHERITED_ATTRS.len() {
            block.push_str(INHERIT_COMMENT);
            block.push('\n');
        }
        let lines: Vec<String> = missing
            .iter()
            .map(|a| format!("INHERIT_DATASTORE_ATTR  = \"{a}\""))
            .collect();
        block.push_str(&lines.join("\n"));
        plan.edits.push(insertion(
            &p,
            "INHERIT_DATASTORE_ATTR",
            &block,
            format!("inherit {} into VM disks", missing.join(", ")),
        ));
    }
    Ok(plan)
}

/// Plans adding the live-snapshot pairs to vmm_execrc's `LIVE_DISK_SNAPSHOTS="…"` line.
pub fn plan_vmm_execrc(text: &str) -> anyhow::Result<Plan> {
    let mut found = Vec::new();
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let body = line.trim_end_matches('\n');
        let trimmed = body.trim_start();
        let assignment = trimmed
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(trimmed);
        if assignment.starts_with("LIVE_DISK_SNAPSHOTS=") {
            found.push((n + 1, offset + (body.len() - assignment.len()), assignment));
        }
        offset += line.len();
    }
    let (line, at, assignment) = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(bad(
                "no LIVE_DISK_SNAPSHOTS=\"…\" line: add LIVE_DISK_SNAPSHOTS=\"kvm-bsud qemu-bsud\" by hand if live disk snapshots are wanted".into(),
            ))
        }
        many => {
            return Err(bad(format!(
                "LIVE_DISK_SNAPSHOTS is set on {} lines ({}): cannot tell which one counts",
                many.len(),
                many.iter()
                    .map(|(l, _, _)| l.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    let value = &assignment["LIVE_DISK_SNAPSHOTS=".len()..];
    let close = value
        .strip_prefix('"')
        .and_then(|rest| rest.find('"').map(|i| i + 1))
        .filter(|&i| {
            let after = value[i + 1..].trim();
            after.is_empty() || after.starts_with('#')
        })
        .ok_or_else(|| {
            bad(format!(
                "line {line}: LIVE_DISK_SNAPSHOTS is not a single \"…\" value on one line"
            ))
        })?;
    let inner = &value[1..close];
    if inner.contains(['$', '`', '\\']) {
        return Err(bad(format!(
            "line {line}: LIVE_DISK_SNAPSHOTS uses shell expansions; add {} by hand",
            LIVE_SNAPSHOT_PAIRS.join(" ")
        )));
    }
    let present: Vec<&str> = inner.split_whitespace().collect();
    let missing: Vec<&str> = LIVE_SNAPSHOT_PAIRS
        .iter()
        .copied()
        .filter(|p| !present.contains(p))
        .collect();
    let mut plan = Plan::default();
    if !missing.is_empty() {
        let pos = at + "LIVE_DISK_SNAPSHOTS=".len() + close;
        let lead = if inner.trim_end().len() < inner.len() || inner.is_empty() {
            ""
        } else {
            " "
        };
        plan.edits.push(Edit {
            range: pos..pos,
            text: format!("{lead}{}", missing.join(" ")),
            what: format!("allow live disk snapshots for {}", missing.join(", ")),
        });
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/../tests/fixtures/opennebula/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn the_written_blocks_say_what_the_constants_say() {
        for (block, name, wanted) in [
            (TM_MAD_CONF_BLOCK, "TM_MAD_CONF", TM_MAD_CONF),
            (DS_MAD_CONF_BLOCK, "DS_MAD_CONF", DS_MAD_CONF),
        ] {
            let p = template::parse(block).unwrap();
            let a = p.named(name).next().unwrap();
            let Body::Vector(items) = &a.body else {
                panic!("{name}")
            };
            let got: Vec<(&str, &str)> = items
                .iter()
                .map(|(k, v)| (k.as_str(), p.inner(v)))
                .collect();
            assert_eq!(got, wanted.to_vec(), "{name}");
        }
    }

    fn register(text: &str) -> (String, Plan) {
        let plan = plan_oned_conf(text).unwrap();
        (apply(text, &plan.edits), plan)
    }

    #[test]
    fn stock_files_get_every_entry_once_and_a_second_plan_is_empty() {
        for f in ["oned.conf-6.10.5.conf", "oned.conf-master-f847cf2e.conf"] {
            let text = fixture(f);
            let (once, plan) = register(&text);
            assert_eq!(plan.edits.len(), 6, "{f}: {:?}", plan.edits);
            assert!(plan.notes.is_empty(), "{f}: {:?}", plan.notes);
            let again = plan_oned_conf(&once).unwrap();
            assert!(again.edits.is_empty(), "{f}: {:?}", again.edits);
            let p = template::parse(&once).unwrap();
            let args = |mad: &str| p.inner(mad_arguments(&p, mad).unwrap()).to_string();
            assert!(
                args("TM_MAD").ends_with(",purefa,bsud")
                    || args("TM_MAD").ends_with(",iscsi_libvirt,bsud"),
                "{f}"
            );
            let ds = args("DATASTORE_MAD");
            assert_eq!(ds.matches(",bsud").count(), 2, "{f}: {ds}");
            let count = |name: &str| {
                p.named(name)
                    .filter(|a| p.vector_value(a, "NAME").map(|v| p.inner(v)) == Some("bsud"))
                    .count()
            };
            assert_eq!((count("TM_MAD_CONF"), count("DS_MAD_CONF")), (1, 1), "{f}");
            for attr in INHERITED_ATTRS {
                let n = p
                    .named("INHERIT_DATASTORE_ATTR")
                    .filter(|a| matches!(&a.body, Body::Single(v) if p.inner(v) == *attr))
                    .count();
                assert_eq!(n, 1, "{f}: {attr}");
            }
            // Nothing else moved: removing the inserted text gives the original back.
            let removed_len: usize = plan.edits.iter().map(|e| e.text.len()).sum();
            assert_eq!(once.len(), text.len() + removed_len, "{f}");
        }
    }

    #[test]
    fn a_missing_s_list_keeps_the_built_in_default() {
        let text = "TM_MAD = [ EXECUTABLE = \"one_tm\", ARGUMENTS = \"-t 15\" ]\nDATASTORE_MAD = [\n    EXECUTABLE = \"one_datastore\",\n    ARGUMENTS  = \"-t 15 -d fs,ceph\"\n]\n";
        let (out, _) = register(text);
        assert!(
            out.contains("ARGUMENTS  = \"-t 15 -d fs,ceph,bsud -s shared,ssh,ceph,bsud\""),
            "{out}"
        );
        // TM_MAD without -d enables every driver: left alone.
        assert!(out.contains("ARGUMENTS = \"-t 15\" ]"), "{out}");
        // No *_MAD_CONF or INHERIT entries at all: appended at the end.
        assert!(out.ends_with("MARKETPLACE_ACTIONS = \"export\"\n]\n\n# one-bsud (added by install.sh): the drive policy of a bsud datastore, copied into\n# every VM disk so the transfer-manager actions read it from the VM.\nINHERIT_DATASTORE_ATTR  = \"BSUD_VOLUME_TYPE\"\nINHERIT_DATASTORE_ATTR  = \"BSUD_IOPS_PER_GIB\"\nINHERIT_DATASTORE_ATTR  = \"BSUD_MIN_VOLUME_GIB\"\nINHERIT_DATASTORE_ATTR  = \"BSUD_GROWTH_FACTOR\"\nINHERIT_DATASTORE_ATTR  = \"BSUD_HEADROOM_GIB\"\nINHERIT_DATASTORE_ATTR  = \"BSUD_MAX_VOLUMES\"\nINHERIT_DATASTORE_ATTR  = \"BSUD_MAX_SIZE_GIB\"\nINHERIT_DATASTORE_ATTR  = \"BSUD_SHRINK\"\nINHERIT_DATASTORE_ATTR  = \"BSUD_IMAGE_HOST\"\n"), "{out}");
        assert!(plan_oned_conf(&out).unwrap().edits.is_empty());
        template::parse(&out).unwrap();
    }

    #[test]
    fn partial_registrations_are_completed_and_differences_reported() {
        let text = "TM_MAD = [ ARGUMENTS = \"-t 15 -d ssh,bsud\" ]\nDATASTORE_MAD = [ ARGUMENTS = \"-d fs,bsud -s ssh,bsud\" ]\nTM_MAD_CONF = [ NAME = \"bsud\", LN_TARGET = \"NONE\", CLONE_TARGET = \"SYSTEM\", SHARED = \"no\" ]\nINHERIT_DATASTORE_ATTR = \"BSUD_SHRINK\"\n";
        let plan = plan_oned_conf(text).unwrap();
        let whats: Vec<&str> = plan.edits.iter().map(|e| e.what.as_str()).collect();
        assert_eq!(whats.len(), 2, "{whats:?}");
        assert!(whats[0].starts_with("add the DS_MAD_CONF"));
        assert!(
            whats[1].starts_with("inherit BSUD_VOLUME_TYPE"),
            "{whats:?}"
        );
        let out = apply(text, &plan.edits);
        assert!(!out.contains("INHERIT_DATASTORE_ATTR  = \"BSUD_SHRINK\""));
        assert!(!out.contains("# one-bsud (added by install.sh): the drive policy"));
        let notes = plan.notes.join("\n");
        assert!(
            notes.contains("LN_TARGET = \"NONE\" where the driver expects LN_TARGET = \"SYSTEM\""),
            "{notes}"
        );
        assert!(notes.contains("DS_MIGRATE = nothing"), "{notes}");
        assert!(!notes.contains("SHARED"), "{notes}");
    }

    #[test]
    fn entries_in_unexpected_forms_are_refused() {
        for (text, want) in [
            (
                "DATASTORE_MAD = [ ARGUMENTS = \"-d fs\" ]\n",
                "no TM_MAD entry",
            ),
            (
                "TM_MAD = [ ARGUMENTS = \"-d a\" ]\nTM_MAD = [ ARGUMENTS = \"-d b\" ]\n",
                "2 TM_MAD entries (lines 1, 2)",
            ),
            ("TM_MAD = \"x\"\n", "line 1: TM_MAD is not a [ … ] entry"),
            (
                "TM_MAD = [ EXECUTABLE = \"one_tm\" ]\n",
                "line 1: TM_MAD has no single ARGUMENTS",
            ),
            (
                "TM_MAD = [ ARGUMENTS = \"-t 15 -dssh\" ]\n",
                "line 1: TM_MAD ARGUMENTS give \"-dssh\"",
            ),
            (
                "TM_MAD = [ ARGUMENTS = \"-t 15 --tm-types ssh\" ]\n",
                "give \"--tm-types\"",
            ),
            (
                "TM_MAD = [ ARGUMENTS = \"-t 15 -d\" ]\n",
                "end with -d and no list",
            ),
            (
                "TM_MAD = [ ARGUMENTS = \"-d -t 15\" ]\n",
                "give -d without a list",
            ),
            (
                "TM_MAD = [ ARGUMENTS = \"-d a -d b\" ]\n",
                "give -d more than once",
            ),
            (
                "TM_MAD = [ ARGUMENTS = \"-d a\" ]\nDATASTORE_MAD = [ ARGUMENTS = -t ]\n",
                "line 2: the ARGUMENTS of DATASTORE_MAD are not a quoted string",
            ),
            (
                "TM_MAD = [ ARGUMENTS = \"-d a\"\n",
                "line 1: the '[' of TM_MAD is never closed",
            ),
        ] {
            let e = plan_oned_conf(text).unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 3);
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn vmm_execrc_gets_the_pairs_once() {
        let text = fixture("vmm_execrc-master-f847cf2e");
        let plan = plan_vmm_execrc(&text).unwrap();
        let out = apply(&text, &plan.edits);
        assert!(
            out.contains("lxc-lvm_thin lxc-lvm kvm-bsud qemu-bsud\"\n"),
            "{out}"
        );
        assert_eq!(out.len(), text.len() + " kvm-bsud qemu-bsud".len());
        assert!(plan_vmm_execrc(&out).unwrap().edits.is_empty());

        let partial = "# x\nexport LIVE_DISK_SNAPSHOTS=\"kvm-qcow2 kvm-bsud\"  # c\n";
        let out = apply(partial, &plan_vmm_execrc(partial).unwrap().edits);
        assert_eq!(
            out,
            "# x\nexport LIVE_DISK_SNAPSHOTS=\"kvm-qcow2 kvm-bsud qemu-bsud\"  # c\n"
        );
        let empty = "LIVE_DISK_SNAPSHOTS=\"\"\n";
        assert_eq!(
            apply(empty, &plan_vmm_execrc(empty).unwrap().edits),
            "LIVE_DISK_SNAPSHOTS=\"kvm-bsud qemu-bsud\"\n"
        );
        for (t, want) in [
            ("# LIVE_DISK_SNAPSHOTS=\"a\"\n", "no LIVE_DISK_SNAPSHOTS"),
            (
                "LIVE_DISK_SNAPSHOTS=\"a\"\nLIVE_DISK_SNAPSHOTS=\"b\"\n",
                "2 lines (1, 2)",
            ),
            (
                "LIVE_DISK_SNAPSHOTS=a\n",
                "line 1: LIVE_DISK_SNAPSHOTS is not a single",
            ),
            (
                "LIVE_DISK_SNAPSHOTS=\"a\nb\"\n",
                "line 1: LIVE_DISK_SNAPSHOTS is not a single",
            ),
            ("LIVE_DISK_SNAPSHOTS=\"$X kvm-a\"\n", "shell expansions"),
        ] {
            let e = plan_vmm_execrc(t).unwrap_err();
            assert!(e.to_string().contains(want), "{t:?}: {e}");
        }
    }

    #[test]
    fn describe_shows_each_touched_line() {
        let text = "A = 1\nTM_MAD = [ ARGUMENTS = \"-d ssh\" ]\nB = 2\n";
        let plan = Plan {
            edits: list_option(
                &template::parse(text).unwrap(),
                "TM_MAD",
                "-d",
                "--tm-types",
                None,
            )
            .unwrap()
            .into_iter()
            .collect(),
            notes: vec![],
        };
        assert_eq!(
            describe(text, &plan.edits),
            "@@ line 2: add bsud to TM_MAD's -d list @@\n-TM_MAD = [ ARGUMENTS = \"-d ssh\" ]\n+TM_MAD = [ ARGUMENTS = \"-d ssh,bsud\" ]\n"
        );
    }
}
