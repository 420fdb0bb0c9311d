//! LVM's segment map of a host, read with its own commands, and the arithmetic from an LV byte
//! offset to a byte of a volume file.
//!
//! An LV is a list of linear segments; segment `s` covers LV extents
//! `[s.start_pe, s.start_pe + s.size_pe)` and lives on PV `p` from physical extent `a`, so LV
//! byte `x` in it is PV byte `pe_start(p) + (a + x/ext - s.start_pe) * ext + x % ext`, which is
//! contiguous over the whole segment: one [`Piece`] per segment. The PV is a loop device over a
//! volume file; the bytes are read and written in that *file* (the loop device does buffered
//! I/O on it, so both see the same page cache).
//!
//! Only linear LVs (segment type `linear`, or `striped` with one stripe) are served: thin
//! volumes, pools, RAID, mirrors and snapshots need device-mapper logic this map does not do, and
//! are left out of the tree rather than served wrong.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Deserialize;

use crate::exec;
use crate::sim::hostview::{loop_backing_file, HostView};

/// Deadline of one `lvs`/`pvs` (they wait for the VG lock of a running lvcreate).
const LVM_TIMEOUT: Duration = Duration::from_secs(120);

/// A contiguous part of an LV on one PV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    /// First LV byte.
    pub lv_start: u64,
    /// Length in bytes.
    pub len: u64,
    /// The PV as LVM names it (`/dev/loop3`); `None` when LVM reports it missing.
    pub pv: Option<String>,
    /// Byte offset on the PV of `lv_start`.
    pub pv_offset: u64,
}

/// An LV as planned from the reports (no file opened yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LvPlan {
    /// Size in bytes.
    pub size: u64,
    /// Pieces sorted by `lv_start`.
    pub pieces: Vec<Piece>,
}

/// `vg → lv → plan`, every VG this host's LVM sees (empty ones included).
pub(crate) type Plan = BTreeMap<String, BTreeMap<String, LvPlan>>;

/// One row of `lvs --segments`.
#[derive(Debug, Deserialize)]
pub(crate) struct SegRow {
    vg_name: String,
    lv_name: String,
    lv_attr: String,
    lv_size: String,
    segtype: String,
    stripes: String,
    seg_start_pe: String,
    seg_size_pe: String,
    seg_pe_ranges: String,
    vg_extent_size: String,
}

/// One row of `pvs`.
#[derive(Debug, Deserialize)]
pub(crate) struct PvRow {
    pv_name: String,
    pe_start: String,
    vg_name: String,
}

#[derive(Debug, Deserialize)]
struct Report<T> {
    report: Vec<BTreeMap<String, Vec<T>>>,
}

const LVS_FIELDS: &str = "vg_name,lv_name,lv_attr,lv_size,segtype,stripes,seg_start_pe,seg_size_pe,seg_pe_ranges,vg_extent_size";
const PVS_FIELDS: &str = "pv_name,pe_start,vg_name";

fn parse_report<T: for<'de> Deserialize<'de>>(text: &str, key: &str) -> anyhow::Result<Vec<T>> {
    let r: Report<T> = serde_json::from_str(text).context("parsing an LVM JSON report")?;
    Ok(r.report
        .into_iter()
        .flat_map(|mut m| m.remove(key).unwrap_or_default())
        .collect())
}

fn num(field: &str, v: &str) -> anyhow::Result<u64> {
    v.trim()
        .parse()
        .with_context(|| format!("LVM reported {field} = {v:?}, not a number"))
}

/// Builds the plan from the two reports. LVs that are not plain linear are left out (and
/// listed in the second value, for the log).
pub(crate) fn plan(segs: &[SegRow], pvs: &[PvRow]) -> anyhow::Result<(Plan, Vec<String>)> {
    let mut pe_start: HashMap<&str, u64> = HashMap::new();
    let mut out: Plan = BTreeMap::new();
    for pv in pvs {
        pe_start.insert(pv.pv_name.as_str(), num("pe_start", &pv.pe_start)?);
        if !pv.vg_name.is_empty() {
            out.entry(pv.vg_name.clone()).or_default();
        }
    }
    let mut skipped: Vec<String> = Vec::new();
    for s in segs {
        let key = format!("{}/{}", s.vg_name, s.lv_name);
        if skipped.contains(&key) {
            continue;
        }
        match piece_of(s, &pe_start) {
            Ok(Some(piece)) => {
                let lv = out
                    .entry(s.vg_name.clone())
                    .or_default()
                    .entry(s.lv_name.clone())
                    .or_insert(LvPlan {
                        size: num("lv_size", &s.lv_size)?,
                        pieces: Vec::new(),
                    });
                lv.pieces.push(piece);
            }
            Ok(None) => {
                if let Some(vg) = out.get_mut(&s.vg_name) {
                    vg.remove(&s.lv_name);
                }
                skipped.push(key);
            }
            Err(e) => return Err(e.context(format!("segment of LV {key}"))),
        }
    }
    for vg in out.values_mut() {
        for lv in vg.values_mut() {
            lv.pieces.sort_by_key(|p| p.lv_start);
        }
    }
    Ok((out, skipped))
}

/// The piece of one segment; `None` when the segment is not something lvfs can serve.
fn piece_of(s: &SegRow, pe_start: &HashMap<&str, u64>) -> anyhow::Result<Option<Piece>> {
    let linear = s.segtype == "linear" || (s.segtype == "striped" && s.stripes.trim() == "1");
    // Snapshots (s/S) and their origins' copy-on-write are device-mapper work.
    let snapshot = matches!(s.lv_attr.chars().next(), Some('s' | 'S'));
    if !linear || snapshot {
        return Ok(None);
    }
    let ext = num("vg_extent_size", &s.vg_extent_size)?;
    let start_pe = num("seg_start_pe", &s.seg_start_pe)?;
    let size_pe = num("seg_size_pe", &s.seg_size_pe)?;
    let range = s.seg_pe_ranges.trim();
    let (dev, pes) = range
        .rsplit_once(':')
        .with_context(|| format!("unexpected seg_pe_ranges {range:?}"))?;
    let (first, last) = pes
        .split_once('-')
        .with_context(|| format!("unexpected seg_pe_ranges {range:?}"))?;
    let (first, last) = (num("PE", first)?, num("PE", last)?);
    if last < first || last - first + 1 != size_pe {
        anyhow::bail!("seg_pe_ranges {range:?} does not cover {size_pe} extents");
    }
    // LVM names a missing PV `[unknown]`: the LV stays listed, its I/O fails.
    let pv = (dev != "[unknown]" && pe_start.contains_key(dev)).then(|| dev.to_string());
    let pv_offset = pe_start.get(dev).copied().unwrap_or(0) + first * ext;
    Ok(Some(Piece {
        lv_start: start_pe * ext,
        len: size_pe * ext,
        pv,
        pv_offset,
    }))
}

/// Runs `lvs` and `pvs` (concurrently) with the host's LVM configuration.
pub(crate) fn read_plan(view: &HostView) -> anyhow::Result<(Plan, Vec<String>)> {
    let lvs = view
        .cmd("lvs")
        .args(["--reportformat", "json", "--units", "b", "--nosuffix"])
        .args(["--segments", "-o", LVS_FIELDS])
        .timeout(LVM_TIMEOUT);
    let pvs = view
        .cmd("pvs")
        .args(["--reportformat", "json", "--units", "b", "--nosuffix"])
        .args(["-o", PVS_FIELDS])
        .timeout(LVM_TIMEOUT);
    let (segs, pvs) = std::thread::scope(|sc| {
        let l = sc.spawn(|| exec::run(&lvs));
        let p = exec::run(&pvs);
        (l.join().expect("lvs thread does not panic"), p)
    });
    let segs: Vec<SegRow> = parse_report(&segs?.stdout_str(), "seg")?;
    let pvs: Vec<PvRow> = parse_report(&pvs?.stdout_str(), "pv")?;
    plan(&segs, &pvs)
}

/// An open volume file (or device) behind a PV.
#[derive(Debug)]
pub(crate) struct Backing {
    /// Its path.
    pub path: PathBuf,
    /// Opened read-write.
    pub file: File,
    id: (u64, u64),
}

/// Where a piece's bytes are.
#[derive(Debug, Clone)]
pub(crate) struct Extent {
    /// First LV byte.
    pub lv_start: u64,
    /// Length.
    pub len: u64,
    /// Backing file and the file offset of `lv_start`; `None`: the PV is missing (I/O error).
    pub target: Option<(Arc<Backing>, u64)>,
}

/// A servable LV.
#[derive(Debug)]
pub(crate) struct LvMap {
    /// Size in bytes.
    pub size: u64,
    /// Sorted, contiguous extents.
    pub extents: Vec<Extent>,
}

impl LvMap {
    /// The extents overlapping `[off, off + len)`, each with the overlapping LV range.
    pub fn overlapping(&self, off: u64, len: u64) -> impl Iterator<Item = (&Extent, u64, u64)> {
        let end = off.saturating_add(len);
        self.extents.iter().filter_map(move |e| {
            let s = off.max(e.lv_start);
            let t = end.min(e.lv_start + e.len);
            (s < t).then_some((e, s, t))
        })
    }

    /// Every distinct backing file.
    pub fn backings(&self) -> Vec<Arc<Backing>> {
        let mut v: Vec<Arc<Backing>> = Vec::new();
        for e in &self.extents {
            if let Some((b, _)) = &e.target {
                if !v.iter().any(|x| Arc::ptr_eq(x, b)) {
                    v.push(b.clone());
                }
            }
        }
        v
    }
}

/// A file's identity and modification time: `(inode, mtime seconds, mtime nanoseconds)`.
pub(crate) type FileStamp = Option<(u64, i64, i64)>;

/// The stamp of a file now.
pub(crate) fn file_stamp(path: &Path) -> FileStamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.mtime(), m.mtime_nsec()))
}

/// Time stamps are coarse (one clock tick): a file modified less than this before a stamp was
/// taken may be modified again with the same mtime, so such a stamp proves nothing.
const COARSE_TIME: Duration = Duration::from_millis(20);

/// What changes whenever LVM's view of the host may have changed: lvm.conf (replaced on every
/// attach and detach) and the volume files of the attached PVs (every LVM metadata update writes
/// to the PVs of its VG, through the loop devices, which updates the files' mtimes). Writes
/// through lvfs change it too; that only costs a refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostStamp {
    /// lvm.conf.
    pub conf: FileStamp,
    volumes: Vec<(PathBuf, FileStamp)>,
    /// Whether everything was last modified long enough ago for a later change to show.
    settled: bool,
}

impl HostStamp {
    /// The stamp of a host now.
    pub fn of(view: &HostView) -> HostStamp {
        let conf = file_stamp(&view.lvm_conf());
        let mut volumes: Vec<(PathBuf, FileStamp)> = view
            .attached()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, dev)| loop_backing_file(&dev))
            .map(|f| {
                let st = file_stamp(&f);
                (f, st)
            })
            .collect();
        volumes.sort();
        let now = SystemTime::now();
        let settled = std::iter::once(&conf)
            .chain(volumes.iter().map(|(_, st)| st))
            .all(|st| match st {
                Some((_, sec, nsec)) => {
                    let t = UNIX_EPOCH + Duration::new(*sec as u64, *nsec as u32);
                    now.duration_since(t).is_ok_and(|age| age >= COARSE_TIME)
                }
                None => true,
            });
        HostStamp {
            conf,
            volumes,
            settled,
        }
    }

    /// A stamp that matches nothing (forces the first refresh).
    pub fn never() -> HostStamp {
        HostStamp {
            conf: None,
            volumes: Vec::new(),
            settled: false,
        }
    }

    /// Whether a snapshot taken at `self` still describes a host stamped `now`.
    pub fn still(&self, now: &HostStamp) -> bool {
        self.settled && self == now
    }
}

/// Every LV of the host at one moment.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// `vg → lv → map`.
    pub vgs: BTreeMap<String, BTreeMap<String, Arc<LvMap>>>,
    /// When the reading began: changes made before that are in it.
    pub started: Instant,
    /// The host when the reading began.
    pub stamp: HostStamp,
}

impl Snapshot {
    /// An empty snapshot that any request made after `at` will refresh.
    pub fn empty(at: Instant) -> Snapshot {
        Snapshot {
            vgs: BTreeMap::new(),
            started: at,
            stamp: HostStamp::never(),
        }
    }

    /// One LV.
    pub fn lv(&self, vg: &str, lv: &str) -> Option<Arc<LvMap>> {
        self.vgs.get(vg)?.get(lv).cloned()
    }
}

/// Open backing files, kept across snapshots so a refresh does not reopen them.
#[derive(Debug, Default)]
pub(crate) struct Backings {
    open: HashMap<PathBuf, Arc<Backing>>,
}

impl Backings {
    /// Opens the files a plan needs (reusing open ones that are still the same file) and
    /// closes the others.
    pub fn resolve(
        &mut self,
        plan: Plan,
        started: Instant,
        stamp: HostStamp,
    ) -> anyhow::Result<Snapshot> {
        let mut used: HashMap<PathBuf, Arc<Backing>> = HashMap::new();
        let mut vgs = BTreeMap::new();
        for (vg, lvs) in plan {
            let mut maps = BTreeMap::new();
            for (name, lv) in lvs {
                let mut extents = Vec::with_capacity(lv.pieces.len());
                for p in lv.pieces {
                    let target = match &p.pv {
                        None => None,
                        Some(pv) => {
                            let b = self.open_for(pv, &mut used)?;
                            Some((b, p.pv_offset))
                        }
                    };
                    extents.push(Extent {
                        lv_start: p.lv_start,
                        len: p.len,
                        target,
                    });
                }
                maps.insert(
                    name,
                    Arc::new(LvMap {
                        size: lv.size,
                        extents,
                    }),
                );
            }
            vgs.insert(vg, maps);
        }
        self.open = used;
        Ok(Snapshot {
            vgs,
            started,
            stamp,
        })
    }

    fn open_for(
        &self,
        pv: &str,
        used: &mut HashMap<PathBuf, Arc<Backing>>,
    ) -> anyhow::Result<Arc<Backing>> {
        // A loop device is read through its file; anything else (a real disk) directly.
        let path = loop_backing_file(pv).unwrap_or_else(|| PathBuf::from(pv));
        if let Some(b) = used.get(&path) {
            return Ok(b.clone());
        }
        let meta = std::fs::metadata(&path)
            .with_context(|| format!("backing of PV {pv}: {}", path.display()))?;
        let id = (meta.dev(), meta.ino());
        let b = match self.open.get(&path) {
            Some(b) if b.id == id => b.clone(),
            _ => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .with_context(|| format!("opening {} (PV {pv})", path.display()))?;
                Arc::new(Backing {
                    path: path.clone(),
                    file,
                    id,
                })
            }
        };
        used.insert(path, b.clone());
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LVS: &str = r#"{"report":[{"seg":[
      {"vg_name":"vg1","lv_name":"big","lv_attr":"-wi-XX----","lv_size":"104857600","segtype":"linear","stripes":"1","seg_start_pe":"0","seg_size_pe":"15","seg_pe_ranges":"/dev/loop5:0-14","vg_extent_size":"4194304"},
      {"vg_name":"vg1","lv_name":"big","lv_attr":"-wi-XX----","lv_size":"104857600","segtype":"linear","stripes":"1","seg_start_pe":"15","seg_size_pe":"10","seg_pe_ranges":"/dev/loop6:2-11","vg_extent_size":"4194304"},
      {"vg_name":"vg1","lv_name":"small","lv_attr":"-wi-XX----","lv_size":"8388608","segtype":"striped","stripes":"1","seg_start_pe":"0","seg_size_pe":"2","seg_pe_ranges":"/dev/loop6:0-1","vg_extent_size":"4194304"},
      {"vg_name":"vg1","lv_name":"pool","lv_attr":"twi-XX----","lv_size":"8388608","segtype":"thin-pool","stripes":"1","seg_start_pe":"0","seg_size_pe":"2","seg_pe_ranges":"","vg_extent_size":"4194304"},
      {"vg_name":"vg1","lv_name":"gone","lv_attr":"-wi-XX-p--","lv_size":"4194304","segtype":"linear","stripes":"1","seg_start_pe":"0","seg_size_pe":"1","seg_pe_ranges":"[unknown]:0-0","vg_extent_size":"4194304"}
    ]}]}"#;
    const PVS: &str = r#"{"report":[{"pv":[
      {"pv_name":"/dev/loop5","pe_start":"1048576","vg_name":"vg1"},
      {"pv_name":"/dev/loop6","pe_start":"1048576","vg_name":"vg1"},
      {"pv_name":"/dev/loop7","pe_start":"1048576","vg_name":"vg2"}
    ]}]}"#;

    #[test]
    fn segments_map_to_pv_bytes() {
        let segs: Vec<SegRow> = parse_report(LVS, "seg").unwrap();
        let pvs: Vec<PvRow> = parse_report(PVS, "pv").unwrap();
        let (plan, skipped) = plan(&segs, &pvs).unwrap();
        let mib = 1 << 20;
        let big = &plan["vg1"]["big"];
        assert_eq!(big.size, 100 * mib);
        assert_eq!(
            big.pieces,
            vec![
                Piece {
                    lv_start: 0,
                    len: 60 * mib,
                    pv: Some("/dev/loop5".into()),
                    pv_offset: mib
                },
                Piece {
                    lv_start: 60 * mib,
                    len: 40 * mib,
                    pv: Some("/dev/loop6".into()),
                    pv_offset: mib + 8 * mib
                },
            ]
        );
        assert_eq!(plan["vg1"]["small"].pieces[0].pv_offset, mib);
        // A missing PV keeps the LV (its I/O fails); a thin pool is not served.
        assert_eq!(plan["vg1"]["gone"].pieces[0].pv, None);
        assert!(!plan["vg1"].contains_key("pool"));
        assert_eq!(skipped, vec!["vg1/pool".to_string()]);
        // An empty VG is listed.
        assert!(plan["vg2"].is_empty());
    }

    #[test]
    fn inconsistent_ranges_are_errors() {
        let bad = LVS.replace("/dev/loop5:0-14", "/dev/loop5:0-13");
        let segs: Vec<SegRow> = parse_report(&bad, "seg").unwrap();
        let pvs: Vec<PvRow> = parse_report(PVS, "pv").unwrap();
        assert!(plan(&segs, &pvs).is_err());
    }

    #[test]
    fn overlapping_clips_to_extents() {
        let m = LvMap {
            size: 30,
            extents: vec![
                Extent {
                    lv_start: 0,
                    len: 10,
                    target: None,
                },
                Extent {
                    lv_start: 10,
                    len: 20,
                    target: None,
                },
            ],
        };
        let got: Vec<(u64, u64)> = m.overlapping(5, 10).map(|(_, s, t)| (s, t)).collect();
        assert_eq!(got, vec![(5, 10), (10, 15)]);
        assert_eq!(m.overlapping(30, 5).count(), 0);
    }
}
