//! Stale extents: a new LV must never expose bytes of a previously deleted LV.
//!
//! LVM hands freed extents to the next LV as they are (we also create LVs with `-Zn`, and LVM
//! would only zero the first 4 KiB anyway). So the agent keeps, per PV, a **high-water mark**
//! tag `one.bsud.hwm=<pe>`: no extent at or above it has belonged to any LV since the PV joined
//! the VG unused, so it still reads as the new volume did (zeros, "fresh"). Extents below it
//! may hold a deleted LV's bytes ("stale") and are zeroed when an LV gets them.
//!
//! Invariants:
//! - A PV in a VG **without** the tag is stale everywhere (hwm = its extent count): its history
//!   is unknown. `pv-add` sets `hwm=0` only for a device it saw unused (`--fresh`, not a PV yet,
//!   first MiB all zero); otherwise it sets `hwm=<pe_count>`. Orphan PVs cannot carry tags, so
//!   the mark lives and dies with the PV's VG membership.
//! - The hwm of a PV only grows, and it covers an LV's extents before the LV is handed out.
//! - An LV whose zeroing is not done carries `one.bsud.zero-from=<le>`: logical extents from
//!   `le` on may still need zeroing. It is added in the same LVM commit that creates the LV
//!   (`lvcreate --addtag`), or before `lvextend` grows it; it is removed only after the zeroed
//!   ranges were flushed. Only an LV without it is ever reported as created/extended.
//!
//! Steps of `lv-create` (`lv-extend` is the same from the old last extent):
//! 1. `lvcreate` with the caller's tags and `one.bsud.zero-from=0` (one commit);
//! 2. [`plan`]: the LV's extents from `zero-from` on that lie below their PV's hwm are stale;
//! 3. bump each PV's hwm to cover the LV's extents (`pvchange`, one commit per PV);
//! 4. zero the stale byte ranges through the LV's device node ([`zero_ranges`]) and flush;
//! 5. delete the `zero-from` tag.
//!
//! Crash reasoning — the agent killed between any two steps, then the operation rerun (the LV
//! exists, with `zero-from`):
//! - after 1: no hwm moved, so the rerun computes the same plan as the first run and zeroes it;
//! - after 3, fully or partly: a bumped PV now counts all of the LV's extents on it as stale, so
//!   the rerun zeroes more than needed, never less; nobody wrote to the LV meanwhile because only
//!   a successful answer hands it out, and that comes after 5;
//! - after 4: the rerun zeroes again (idempotent) and finishes;
//! - after 5: nothing is pending, and the rerun leaves the LV's bytes alone (by now they may be
//!   the caller's data);
//! - the pending LV removed instead of rerun: its extents above the old hwm were never written
//!   (it was never handed out) and those below stay below the hwm: still stale, still zeroed
//!   by the next LV that gets them.
//!
//! If the LV's device node is not there (no lvfs in a unit test, activation failed) the
//! operation fails after its deadline with `zero-from` still set: zeroing is never skipped.

use std::fs::OpenOptions;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use crate::error::{fail, ErrorKind};
use crate::lvm::{Lv, Pv, Tag};

use super::env::Deadline;

/// Key of the PV high-water-mark tag.
pub const HWM_KEY: &str = "one.bsud.hwm";
/// Key of the LV tag marking pending zeroing.
pub const ZERO_FROM_KEY: &str = "one.bsud.zero-from";
/// Keys only the agent may set.
pub const RESERVED_KEYS: [&str; 2] = [HWM_KEY, ZERO_FROM_KEY];

/// Largest single zeroing request: bounds how late a deadline is noticed.
const ZERO_CHUNK: u64 = 256 << 20;

fn tag_values<'a>(tags: &'a [String], key: &'a str) -> impl Iterator<Item = u64> + 'a {
    tags.iter().filter_map(move |t| {
        t.split_once('=')
            .filter(|(k, _)| *k == key)
            .and_then(|(_, v)| v.parse().ok())
    })
}

fn tags_with_key(tags: &[String], key: &str) -> Vec<Tag> {
    tags.iter()
        .filter(|t| t.split_once('=').is_some_and(|(k, _)| k == key))
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// The PV's high-water mark: its tag (the largest if several), or its whole size without one.
pub fn hwm(pv: &Pv) -> u64 {
    tag_values(&pv.tags, HWM_KEY).max().unwrap_or(pv.pe_count)
}

/// Whether the PV carries an hwm tag.
pub fn has_hwm_tag(pv: &Pv) -> bool {
    tag_values(&pv.tags, HWM_KEY).next().is_some()
}

/// The PV's hwm tags (to delete when replacing them).
pub fn hwm_tags(pv: &Pv) -> Vec<Tag> {
    tags_with_key(&pv.tags, HWM_KEY)
}

/// The first logical extent still pending zeroing, if any.
pub fn zero_from(lv: &Lv) -> Option<u64> {
    tag_values(&lv.tags, ZERO_FROM_KEY).min()
}

/// The LV's zero-from tags.
pub fn zero_from_tags(lv: &Lv) -> Vec<Tag> {
    tags_with_key(&lv.tags, ZERO_FROM_KEY)
}

/// The tag `one.bsud.zero-from=<le>`.
pub fn zero_from_tag(le: u64) -> Tag {
    Tag::new(ZERO_FROM_KEY, le).expect("a number is a valid tag value")
}

/// The tag `one.bsud.hwm=<pe>`.
pub fn hwm_tag(pe: u64) -> Tag {
    Tag::new(HWM_KEY, pe).expect("a number is a valid tag value")
}

/// A PV's mark to raise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bump {
    /// The PV (as LVM names it).
    pub pv: String,
    /// Its current hwm tags.
    pub old: Vec<Tag>,
    /// The new mark.
    pub new: u64,
}

/// What the pending part of an LV needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// LV byte ranges `[start, end)` to zero, ascending and merged.
    pub stale: Vec<(u64, u64)>,
    /// Bytes of the pending part that never held data.
    pub fresh_bytes: u64,
    /// Marks to raise so they cover the pending part.
    pub bumps: Vec<Bump>,
}

impl Plan {
    /// Bytes to zero.
    pub fn stale_bytes(&self) -> u64 {
        self.stale.iter().map(|(a, b)| b - a).sum()
    }
}

/// The plan for logical extents `from_le..` of `lv`, given the VG's PVs and extent size.
/// Only linear segments are supported (the agent creates nothing else); anything else, or an
/// extent on a missing PV, is an error rather than a guess.
pub fn plan(lv: &Lv, from_le: u64, pvs: &[Pv], extent_size: u64) -> anyhow::Result<Plan> {
    let mut p = Plan::default();
    let mut reach: Vec<(&Pv, u64)> = Vec::new();
    for seg in &lv.segments {
        let seg_end = seg.start_le + seg.size_le;
        let first = seg.start_le.max(from_le);
        if first >= seg_end {
            continue;
        }
        let [range] = seg.ranges.as_slice() else {
            return Err(unsupported(lv, &seg.segtype));
        };
        if seg.segtype != "linear" {
            return Err(unsupported(lv, &seg.segtype));
        }
        let pv = pvs
            .iter()
            .find(|pv| pv.name == range.pv && !pv.missing)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "LV {}/{} has extents on PV {} which is missing: cannot zero them",
                    lv.vg,
                    lv.name,
                    range.pv
                )
            })?;
        let mark = hwm(pv);
        let pe_first = range.start + (first - seg.start_le);
        let pe_end = range.end + 1;
        if pe_first < mark {
            let stale_end = pe_end.min(mark);
            let le_a = first;
            let le_b = first + (stale_end - pe_first);
            push_merged(&mut p.stale, le_a * extent_size, le_b * extent_size);
        }
        let fresh_from = pe_first.max(mark);
        if fresh_from < pe_end {
            p.fresh_bytes += (pe_end - fresh_from) * extent_size;
        }
        match reach.iter_mut().find(|(q, _)| q.name == pv.name) {
            Some((_, r)) => *r = (*r).max(pe_end),
            None => reach.push((pv, pe_end)),
        }
    }
    for (pv, end) in reach {
        let new = hwm(pv).max(end);
        if !has_hwm_tag(pv) || new != hwm(pv) {
            p.bumps.push(Bump {
                pv: pv.name.clone(),
                old: hwm_tags(pv),
                new,
            });
        }
    }
    Ok(p)
}

fn unsupported(lv: &Lv, segtype: &str) -> anyhow::Error {
    fail(
        ErrorKind::Refused,
        format!(
            "LV {}/{} has a {segtype} segment: only linear LVs can be zeroed by the agent",
            lv.vg, lv.name
        ),
    )
}

fn push_merged(v: &mut Vec<(u64, u64)>, a: u64, b: u64) {
    if let Some(last) = v.last_mut() {
        if last.1 == a {
            last.1 = b;
            return;
        }
    }
    v.push((a, b));
    v.sort_unstable();
}

/// Zeroes `ranges` of the LV device at `path` (at least `lv_size` bytes) and flushes:
/// BLKZEROOUT on a block device, hole punching on a regular file (the testbed's lvfs; plain
/// zero writes where the file system cannot punch). Returns the bytes zeroed.
pub fn zero_ranges(
    path: &Path,
    lv_size: u64,
    ranges: &[(u64, u64)],
    deadline: Deadline,
) -> anyhow::Result<u64> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot open LV device {} to zero it: {e}", path.display()))?;
    let meta = f.metadata()?;
    let block = meta.file_type().is_block_device();
    let size = if block {
        crate::sys::block_device_size(&f)
            .map_err(|e| anyhow::anyhow!("size of {}: {e}", path.display()))?
    } else if meta.is_file() {
        meta.len()
    } else {
        return Err(anyhow::anyhow!(
            "LV device {} is neither a block device nor a file",
            path.display()
        ));
    };
    if size < lv_size {
        return Err(anyhow::anyhow!(
            "LV device {} is {size} bytes, smaller than the LV's {lv_size}: refusing to zero a partial view",
            path.display()
        ));
    }
    let mut zeroer = crate::zeroing::Zeroer::new(&f, block);
    let mut done = 0;
    for &(start, end) in ranges {
        let mut at = start;
        while at < end {
            if deadline.left().is_zero() {
                return Err(fail(
                    ErrorKind::Timeout,
                    format!(
                        "deadline passed while zeroing {} ({done} of {} bytes done)",
                        path.display(),
                        ranges.iter().map(|(a, b)| b - a).sum::<u64>()
                    ),
                ));
            }
            let len = (end - at).min(ZERO_CHUNK);
            zeroer
                .zero(at, len)
                .map_err(|e| anyhow::anyhow!("zeroing {} at {at}+{len}: {e}", path.display()))?;
            at += len;
            done += len;
        }
    }
    f.sync_all()
        .map_err(|e| anyhow::anyhow!("flushing {}: {e}", path.display()))?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lvm::report::{PeRange, Segment};
    use std::fs::File;
    use std::io::Read;
    use std::time::Duration;

    const E: u64 = 4 << 20;

    fn pv(name: &str, pe_count: u64, tags: &[&str]) -> Pv {
        Pv {
            name: name.into(),
            uuid: "u".into(),
            vg: Some("vg".into()),
            size: pe_count * E,
            free: 0,
            pe_count,
            pe_alloc_count: 0,
            pe_start: 1 << 20,
            extent_size: E,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            missing: false,
        }
    }

    fn seg(start_le: u64, pv: &str, pe: u64, n: u64) -> Segment {
        Segment {
            start_le,
            size_le: n,
            segtype: "linear".into(),
            ranges: vec![PeRange {
                pv: pv.into(),
                start: pe,
                end: pe + n - 1,
            }],
        }
    }

    fn lv(segments: Vec<Segment>) -> Lv {
        Lv {
            name: "lv".into(),
            vg: "vg".into(),
            uuid: "x".into(),
            size: segments.iter().map(|s| s.size_le).sum::<u64>() * E,
            tags: vec![],
            segments,
            ..Default::default()
        }
    }

    #[test]
    fn extents_below_the_mark_are_stale_above_fresh() {
        // PV a: hwm 10; the LV takes a:8..12 (2 stale, 2 fresh) then b:0..3 (b untagged: stale).
        let pvs = [pv("/a", 20, &["one.bsud.hwm=10"]), pv("/b", 5, &[])];
        let l = lv(vec![seg(0, "/a", 8, 4), seg(4, "/b", 0, 3)]);
        let p = plan(&l, 0, &pvs, E).unwrap();
        assert_eq!(p.stale, [(0, 2 * E), (4 * E, 7 * E)]);
        assert_eq!(p.fresh_bytes, 2 * E);
        assert_eq!(p.stale_bytes(), 5 * E);
        assert_eq!(
            p.bumps,
            [
                Bump {
                    pv: "/a".into(),
                    old: vec!["one.bsud.hwm=10".parse().unwrap()],
                    new: 12
                },
                Bump {
                    pv: "/b".into(),
                    old: vec![],
                    new: 5
                },
            ]
        );
    }

    #[test]
    fn only_the_pending_part_counts_and_fresh_pv_needs_nothing() {
        let pvs = [pv("/a", 20, &["one.bsud.hwm=0"])];
        // Extended from 4 to 6 extents: only LE 4..6 (PE 4..6) is looked at.
        let l = lv(vec![seg(0, "/a", 0, 6)]);
        let p = plan(&l, 4, &pvs, E).unwrap();
        assert!(p.stale.is_empty());
        assert_eq!(p.fresh_bytes, 2 * E);
        assert_eq!(p.bumps[0].new, 6);
        // After the bump, a rerun sees the whole pending part as stale (over-zeroing, never less).
        let bumped = [pv("/a", 20, &["one.bsud.hwm=6"])];
        let p = plan(&l, 4, &bumped, E).unwrap();
        assert_eq!(p.stale, [(4 * E, 6 * E)]);
        assert!(p.bumps.is_empty());
        // Nothing pending beyond the end.
        assert_eq!(plan(&l, 6, &bumped, E).unwrap(), Plan::default());
    }

    #[test]
    fn adjacent_stale_ranges_merge() {
        let pvs = [
            pv("/a", 20, &["one.bsud.hwm=20"]),
            pv("/b", 20, &["one.bsud.hwm=20"]),
        ];
        let l = lv(vec![seg(0, "/a", 3, 2), seg(2, "/b", 7, 2)]);
        assert_eq!(plan(&l, 0, &pvs, E).unwrap().stale, [(0, 4 * E)]);
    }

    #[test]
    fn striped_or_missing_is_an_error() {
        let pvs = [pv("/a", 20, &[])];
        let mut s = seg(0, "/a", 0, 2);
        s.segtype = "striped".into();
        s.ranges.push(PeRange {
            pv: "/b".into(),
            start: 0,
            end: 1,
        });
        assert!(plan(&lv(vec![s]), 0, &pvs, E).is_err());
        let mut gone = pv("/a", 20, &[]);
        gone.missing = true;
        let e = plan(&lv(vec![seg(0, "/a", 0, 2)]), 0, &[gone], E).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn zeroing_a_file_clears_exactly_the_ranges() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("lv");
        std::fs::write(&path, vec![0xA5u8; 64 * 1024]).unwrap();
        let far = Deadline::after(Duration::from_secs(30));
        let n = zero_ranges(&path, 64 * 1024, &[(4096, 8192), (16384, 20000)], far).unwrap();
        assert_eq!(n, 4096 + 3616);
        let mut got = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut got).unwrap();
        for (i, b) in got.iter().enumerate() {
            let zero = (4096..8192).contains(&i) || (16384..20000).contains(&i);
            assert_eq!(*b == 0, zero, "byte {i}");
        }
        let e = zero_ranges(&path, 1 << 30, &[(0, 1)], far).unwrap_err();
        assert!(e.to_string().contains("smaller than the LV"), "{e}");
        let e = zero_ranges(&d.path().join("absent"), 1, &[(0, 1)], far).unwrap_err();
        assert!(e.to_string().contains("cannot open LV device"), "{e}");
    }
}
