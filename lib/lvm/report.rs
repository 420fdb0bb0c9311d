//! LVM's JSON reports (`--reportformat json --units b --nosuffix -o <fields>`) as typed values.
//!
//! LVM prints every value as a string (numbers included), tags as one comma-separated string
//! (commas are outside the tag alphabet, so the split is exact) and the VG of an orphan PV as
//! `""`. The raw rows are deserialised with the exact field names we asked for (the lists below,
//! shared with `fixtures/capture.sh`), then converted; a value that does not parse is an error
//! naming the field, never a silent zero.

use serde::{Deserialize, Serialize};

use anyhow::Context;

/// `pvs -o` fields.
pub const PV_FIELDS: &str = "pv_name,pv_uuid,vg_name,pv_size,pv_free,pv_pe_count,pv_pe_alloc_count,pe_start,pv_tags,vg_extent_size,pv_missing";
/// `vgs -o` fields.
pub const VG_FIELDS: &str = "vg_name,vg_uuid,vg_size,vg_free,vg_extent_size,vg_extent_count,vg_free_count,pv_count,lv_count,vg_missing_pv_count,vg_tags";
/// `lvs --segments -o` fields.
pub const SEG_FIELDS: &str =
    "lv_name,vg_name,lv_uuid,lv_size,lv_tags,segtype,seg_start_pe,seg_size_pe,seg_pe_ranges,pool_lv,origin,data_percent,metadata_percent,lv_metadata_size";

/// The name LVM gives a PV whose device is missing.
pub const MISSING_PV_NAME: &str = "[unknown]";

/// A physical volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pv {
    /// Device path as LVM names it (`[unknown]` when missing).
    pub name: String,
    /// PV UUID.
    pub uuid: String,
    /// Its VG; `None` for an orphan.
    pub vg: Option<String>,
    /// Size in bytes (the usable part for a PV in a VG).
    pub size: u64,
    /// Free bytes.
    pub free: u64,
    /// Physical extents (0 for an orphan).
    pub pe_count: u64,
    /// Allocated physical extents.
    pub pe_alloc_count: u64,
    /// Offset of the first extent on the device, in bytes.
    pub pe_start: u64,
    /// Extent size of its VG in bytes (0 for an orphan).
    pub extent_size: u64,
    /// Tags.
    pub tags: Vec<String>,
    /// The VG metadata names it but its device is not there.
    pub missing: bool,
}

/// A volume group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vg {
    /// Name.
    pub name: String,
    /// UUID.
    pub uuid: String,
    /// Size in bytes.
    pub size: u64,
    /// Free bytes.
    pub free: u64,
    /// Extent size in bytes.
    pub extent_size: u64,
    /// Extents.
    pub extent_count: u64,
    /// Free extents.
    pub free_count: u64,
    /// PVs.
    pub pv_count: u64,
    /// LVs.
    pub lv_count: u64,
    /// PVs whose device is missing.
    pub missing_pv_count: u64,
    /// Tags.
    pub tags: Vec<String>,
}

/// A logical volume with its segment map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lv {
    /// Name.
    pub name: String,
    /// Its VG.
    pub vg: String,
    /// UUID.
    pub uuid: String,
    /// Size in bytes.
    pub size: u64,
    /// Tags.
    pub tags: Vec<String>,
    /// Segments in logical order.
    pub segments: Vec<Segment>,
    /// The thin pool of a thin volume.
    #[serde(default)]
    pub pool: Option<String>,
    /// The origin of a snapshot.
    #[serde(default)]
    pub origin: Option<String>,
    /// Metadata size of a thin pool, bytes.
    #[serde(default)]
    pub metadata_size: Option<u64>,
    /// Data usage of a thin pool or thin volume, in hundredths of a percent.
    #[serde(default)]
    pub data_bp: Option<u32>,
    /// Metadata usage of a thin pool, in hundredths of a percent.
    #[serde(default)]
    pub metadata_bp: Option<u32>,
}

/// One segment of an LV: logical extents `[start_le, start_le + size_le)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// First logical extent.
    pub start_le: u64,
    /// Length in extents.
    pub size_le: u64,
    /// `linear`, `striped`, …
    pub segtype: String,
    /// Physical extent ranges backing it (one for a linear segment).
    pub ranges: Vec<PeRange>,
}

/// Physical extents `[start, end]` (inclusive, as LVM prints them) on one PV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeRange {
    /// PV device path.
    pub pv: String,
    /// First extent.
    pub start: u64,
    /// Last extent (inclusive).
    pub end: u64,
}

impl Lv {
    /// Whether it carries this exact tag.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// Whether it is a thin volume (its blocks live in a pool: no extents of its own).
    pub fn is_thin(&self) -> bool {
        self.segments.iter().any(|s| s.segtype == "thin")
    }

    /// Whether it is a thin pool.
    pub fn is_thin_pool(&self) -> bool {
        self.segments.iter().any(|s| s.segtype == "thin-pool")
    }

    /// Size in extents (sum of segments).
    pub fn extents(&self) -> u64 {
        self.segments.iter().map(|s| s.size_le).sum()
    }
}

impl Pv {
    /// Whether it carries this exact tag.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

#[derive(Deserialize)]
struct Report<T> {
    report: Vec<T>,
}

#[derive(Deserialize)]
struct PvSection {
    #[serde(default)]
    pv: Vec<RawPv>,
}

#[derive(Deserialize)]
struct VgSection {
    #[serde(default)]
    vg: Vec<RawVg>,
}

#[derive(Deserialize)]
struct SegSection {
    #[serde(default)]
    seg: Vec<RawSeg>,
}

#[derive(Deserialize)]
struct RawPv {
    pv_name: String,
    pv_uuid: String,
    vg_name: String,
    pv_size: String,
    pv_free: String,
    pv_pe_count: String,
    pv_pe_alloc_count: String,
    pe_start: String,
    pv_tags: String,
    vg_extent_size: String,
    pv_missing: String,
}

#[derive(Deserialize)]
struct RawVg {
    vg_name: String,
    vg_uuid: String,
    vg_size: String,
    vg_free: String,
    vg_extent_size: String,
    vg_extent_count: String,
    vg_free_count: String,
    pv_count: String,
    lv_count: String,
    vg_missing_pv_count: String,
    vg_tags: String,
}

#[derive(Deserialize)]
struct RawSeg {
    lv_name: String,
    vg_name: String,
    lv_uuid: String,
    lv_size: String,
    lv_tags: String,
    segtype: String,
    seg_start_pe: String,
    seg_size_pe: String,
    seg_pe_ranges: String,
    // Absent from reports captured before thin support: read as empty.
    #[serde(default)]
    pool_lv: String,
    #[serde(default)]
    origin: String,
    #[serde(default)]
    lv_metadata_size: String,
    #[serde(default)]
    data_percent: String,
    #[serde(default)]
    metadata_percent: String,
}

fn num(field: &str, v: &str) -> anyhow::Result<u64> {
    // `--units b` can still print a fraction on some versions (`4194304.00`).
    let whole = v.strip_suffix(".00").unwrap_or(v);
    whole
        .parse()
        .map_err(|_| anyhow::anyhow!("LVM report field {field} = {v:?} is not a whole number"))
}

/// A percentage as LVM prints it (`12.34`, `""` when not applicable) in hundredths.
fn basis_points(field: &str, v: &str) -> anyhow::Result<Option<u32>> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let bad = || anyhow::anyhow!("LVM report field {field} = {v:?} is not a percentage");
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    let whole: u32 = whole.parse().map_err(|_| bad())?;
    let frac2: String = frac.chars().chain("00".chars()).take(2).collect();
    let frac2: u32 = frac2.parse().map_err(|_| bad())?;
    Ok(Some(whole * 100 + frac2))
}

fn tags(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn sections<T: for<'de> Deserialize<'de>>(json: &[u8], what: &str) -> anyhow::Result<Vec<T>> {
    let r: Report<T> = serde_json::from_slice(json)
        .with_context(|| format!("LVM {what} report is not the JSON expected"))?;
    Ok(r.report)
}

/// Parses `pvs` output.
pub fn parse_pvs(json: &[u8]) -> anyhow::Result<Vec<Pv>> {
    let mut out = Vec::new();
    for s in sections::<PvSection>(json, "pvs")? {
        for r in s.pv {
            out.push(Pv {
                size: num("pv_size", &r.pv_size)?,
                free: num("pv_free", &r.pv_free)?,
                pe_count: num("pv_pe_count", &r.pv_pe_count)?,
                pe_alloc_count: num("pv_pe_alloc_count", &r.pv_pe_alloc_count)?,
                pe_start: num("pe_start", &r.pe_start)?,
                extent_size: num("vg_extent_size", &r.vg_extent_size)?,
                tags: tags(&r.pv_tags),
                missing: !r.pv_missing.is_empty(),
                vg: Some(r.vg_name).filter(|v| !v.is_empty()),
                name: r.pv_name,
                uuid: r.pv_uuid,
            });
        }
    }
    Ok(out)
}

/// Parses `vgs` output.
pub fn parse_vgs(json: &[u8]) -> anyhow::Result<Vec<Vg>> {
    let mut out = Vec::new();
    for s in sections::<VgSection>(json, "vgs")? {
        for r in s.vg {
            out.push(Vg {
                size: num("vg_size", &r.vg_size)?,
                free: num("vg_free", &r.vg_free)?,
                extent_size: num("vg_extent_size", &r.vg_extent_size)?,
                extent_count: num("vg_extent_count", &r.vg_extent_count)?,
                free_count: num("vg_free_count", &r.vg_free_count)?,
                pv_count: num("pv_count", &r.pv_count)?,
                lv_count: num("lv_count", &r.lv_count)?,
                missing_pv_count: num("vg_missing_pv_count", &r.vg_missing_pv_count)?,
                tags: tags(&r.vg_tags),
                name: r.vg_name,
                uuid: r.vg_uuid,
            });
        }
    }
    Ok(out)
}

/// Parses `lvs --segments` output into LVs, segments grouped per LV in report order.
pub fn parse_lv_segments(json: &[u8]) -> anyhow::Result<Vec<Lv>> {
    let mut out: Vec<Lv> = Vec::new();
    for s in sections::<SegSection>(json, "lvs --segments")? {
        for r in s.seg {
            let seg = Segment {
                start_le: num("seg_start_pe", &r.seg_start_pe)?,
                size_le: num("seg_size_pe", &r.seg_size_pe)?,
                ranges: parse_pe_ranges(&r.seg_pe_ranges)?,
                segtype: r.segtype,
            };
            match out.iter_mut().find(|l| l.uuid == r.lv_uuid) {
                Some(lv) => lv.segments.push(seg),
                None => out.push(Lv {
                    size: num("lv_size", &r.lv_size)?,
                    tags: tags(&r.lv_tags),
                    pool: (!r.pool_lv.is_empty()).then(|| r.pool_lv.clone()),
                    origin: (!r.origin.is_empty()).then(|| r.origin.clone()),
                    metadata_size: match r.lv_metadata_size.as_str() {
                        "" => None,
                        v => Some(num("lv_metadata_size", v)?),
                    },
                    data_bp: basis_points("data_percent", &r.data_percent)?,
                    metadata_bp: basis_points("metadata_percent", &r.metadata_percent)?,
                    name: r.lv_name,
                    vg: r.vg_name,
                    uuid: r.lv_uuid,
                    segments: vec![seg],
                }),
            }
        }
    }
    for lv in &mut out {
        lv.segments.sort_by_key(|s| s.start_le);
    }
    Ok(out)
}

/// `seg_pe_ranges`: space-separated `<pv>:<first>-<last>`. The PV is split at the *last* `:`
/// because device paths may contain one.
pub fn parse_pe_ranges(v: &str) -> anyhow::Result<Vec<PeRange>> {
    v.split_whitespace()
        .map(|item| {
            let bad = || {
                anyhow::anyhow!(
                    "LVM report field seg_pe_ranges: {item:?} is not <pv>:<first>-<last>"
                )
            };
            let (pv, range) = item.rsplit_once(':').ok_or_else(bad)?;
            let (a, b) = range.split_once('-').ok_or_else(bad)?;
            let start: u64 = a.parse().map_err(|_| bad())?;
            let end: u64 = b.parse().map_err(|_| bad())?;
            if pv.is_empty() || end < start {
                return Err(bad());
            }
            Ok(PeRange {
                pv: pv.to_string(),
                start,
                end,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PVS: &[u8] = include_bytes!("fixtures/pvs.json");
    const PVS_MISSING: &[u8] = include_bytes!("fixtures/pvs-missing.json");
    const VGS: &[u8] = include_bytes!("fixtures/vgs.json");
    const VGS_EMPTY: &[u8] = include_bytes!("fixtures/vgs-empty.json");
    const VGS_MISSING: &[u8] = include_bytes!("fixtures/vgs-missing.json");
    const SEGS: &[u8] = include_bytes!("fixtures/lvs-segments.json");
    const SEGS_STRIPED: &[u8] = include_bytes!("fixtures/lvs-segments-striped.json");

    #[test]
    fn pvs_in_a_vg_and_orphans() {
        let pvs = parse_pvs(PVS).unwrap();
        assert_eq!(pvs.len(), 3);
        let a = &pvs[0];
        assert_eq!(a.vg.as_deref(), Some("vg-one-100"));
        assert_eq!(
            (a.size, a.pe_count, a.pe_start, a.extent_size),
            (62914560, 15, 1048576, 4194304)
        );
        assert_eq!(a.tags, ["one.bsud.hwm=10"]);
        assert!(!a.missing);
        assert_eq!(a.pe_alloc_count * a.extent_size + a.free, a.size);
        let orphan = &pvs[2];
        assert_eq!(orphan.vg, None);
        assert_eq!((orphan.pe_count, orphan.extent_size), (0, 0));
        assert!(orphan.tags.is_empty());
    }

    #[test]
    fn missing_pv_is_flagged() {
        let pvs = parse_pvs(PVS_MISSING).unwrap();
        let gone: Vec<_> = pvs.iter().filter(|p| p.missing).collect();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].name, MISSING_PV_NAME);
        let vg = &parse_vgs(VGS_MISSING).unwrap()[0];
        assert_eq!(vg.missing_pv_count, 1);
    }

    #[test]
    fn vgs_numbers_and_absent_vg() {
        let vgs = parse_vgs(VGS).unwrap();
        assert_eq!(vgs.len(), 1);
        let v = &vgs[0];
        assert_eq!(v.name, "vg-one-100");
        assert_eq!(v.extent_size * v.extent_count, v.size);
        assert_eq!(v.extent_size * v.free_count, v.free);
        assert_eq!((v.pv_count, v.lv_count, v.missing_pv_count), (2, 2, 0));
        assert!(parse_vgs(VGS_EMPTY).unwrap().is_empty());
    }

    #[test]
    fn segments_are_grouped_per_lv_with_tags() {
        let lvs = parse_lv_segments(SEGS).unwrap();
        assert_eq!(lvs.len(), 2);
        let by_name = |n: &str| lvs.iter().find(|l| l.name == n).unwrap();
        let disk = by_name("lv-one-3-0");
        assert_eq!(disk.tags, ["one.disk=0", "one.vm=3"]);
        assert!(disk.has_tag("one.vm=3"));
        let img = by_name("img-one-7");
        assert_eq!(img.tags, ["one.bsud.state=ready", "one.image=7"]);
        assert_eq!(img.segments.len(), 2);
        assert_eq!(img.extents() * 4194304, img.size);
        // Logical order; each linear segment on one PV range of the same length.
        let mut next = 0;
        for s in &img.segments {
            assert_eq!(s.start_le, next);
            assert_eq!(s.segtype, "linear");
            assert_eq!(s.ranges.len(), 1);
            assert_eq!(s.ranges[0].end - s.ranges[0].start + 1, s.size_le);
            next += s.size_le;
        }
        assert_ne!(img.segments[0].ranges[0].pv, img.segments[1].ranges[0].pv);
    }

    #[test]
    fn striped_segment_lists_every_stripe() {
        let lvs = parse_lv_segments(SEGS_STRIPED).unwrap();
        let s = &lvs.iter().find(|l| l.name == "striped").unwrap().segments[0];
        assert_eq!(s.segtype, "striped");
        assert_eq!(s.ranges.len(), 2);
    }

    #[test]
    fn pe_ranges_split_at_the_last_colon_and_reject_garbage() {
        let r = parse_pe_ranges("/dev/disk/by-path/pci-0:0:1:0:3-7").unwrap();
        assert_eq!(r[0].pv, "/dev/disk/by-path/pci-0:0:1:0");
        assert_eq!((r[0].start, r[0].end), (3, 7));
        for bad in ["/dev/x", "/dev/x:a-b", "/dev/x:7-3", ":1-2"] {
            assert!(parse_pe_ranges(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn thin_pools_and_volumes_report_usage() {
        let json = br#"{"report":[{"seg":[
          {"lv_name":"bsud-pool","vg_name":"vg-one-1","lv_uuid":"p","lv_size":"1073741824","lv_tags":"one.bsud.pool=1","segtype":"thin-pool","seg_start_pe":"0","seg_size_pe":"256","seg_pe_ranges":"bsud-pool_tdata:0-255","pool_lv":"","data_percent":"72.05","metadata_percent":"10.5"},
          {"lv_name":"lv-one-7-0","vg_name":"vg-one-1","lv_uuid":"t","lv_size":"10737418240","lv_tags":"one.vm=7","segtype":"thin","seg_start_pe":"0","seg_size_pe":"2560","seg_pe_ranges":"","pool_lv":"bsud-pool","data_percent":"0.00","metadata_percent":""}]}]}"#;
        let lvs = parse_lv_segments(json).unwrap();
        assert!(lvs[0].is_thin_pool() && !lvs[0].is_thin());
        assert_eq!(
            (lvs[0].data_bp, lvs[0].metadata_bp),
            (Some(7205), Some(1050))
        );
        assert!(lvs[1].is_thin());
        assert_eq!(lvs[1].pool.as_deref(), Some("bsud-pool"));
        assert_eq!((lvs[1].data_bp, lvs[1].metadata_bp), (Some(0), None));
        assert!(basis_points("data_percent", "lots").is_err());
    }

    #[test]
    fn bad_numbers_name_the_field() {
        let bad = br#"{"report":[{"vg":[{"vg_name":"v","vg_uuid":"u","vg_size":"x","vg_free":"0","vg_extent_size":"1","vg_extent_count":"0","vg_free_count":"0","pv_count":"0","lv_count":"0","vg_missing_pv_count":"0","vg_tags":""}]}]}"#;
        let e = parse_vgs(bad).unwrap_err();
        assert!(e.to_string().contains("vg_size"), "{e}");
        assert!(parse_vgs(b"not json").is_err());
    }
}
