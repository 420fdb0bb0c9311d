//! Growth and shrink decisions, as pure functions of what the cloud and LVM report.
//!
//! Growth (DESIGN.md §4): the next BSU is large enough for the request plus the headroom, at
//! least `BSUD_MIN_VOLUME_GIB`, and at least `BSUD_GROWTH_FACTOR` × the largest BSU of the
//! drive, so N GiB takes O(log N) volumes; it never exceeds the volume limit (14,901 GiB) nor
//! the drive's `BSUD_MAX_SIZE_GIB`, and is refused when the drive or the VM has no volume slot
//! left. Every refusal says which limit and which attribute to change.
//!
//! Shrink: only PVs with no allocated extent are released, largest first, and only while the
//! free space left stays at or above the headroom.

use serde::Serialize;

use crate::config::{DriveSettings, VolumeType, MAX_IO1_IOPS, MAX_VOLUMES_PER_VM, MAX_VOLUME_GIB};
use crate::error::{fail, ErrorKind};

/// One GiB.
pub const GIB: u64 = 1 << 30;

/// LVM's cost on a fresh BSU: the PV label and metadata area before the first extent (1 MiB by
/// default) plus the unusable tail smaller than an extent. Counted so a BSU sized for a request
/// really holds it.
pub const PV_OVERHEAD_BYTES: u64 = 8 << 20;

/// What the drive looks like now.
#[derive(Debug, Clone, Serialize)]
pub struct DriveState {
    /// Free bytes in the VG (0 when there is no VG yet).
    pub vg_free: u64,
    /// Sizes (GiB) of the drive's BSUs.
    pub volume_sizes_gib: Vec<u64>,
    /// Volumes linked to the host VM, root and foreign ones included.
    pub vm_volume_count: u32,
}

/// One growth step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrowStep {
    /// Size of the BSU to create, GiB.
    pub size_gib: u64,
    /// Its IOPS (io1).
    pub iops: Option<u32>,
}

/// What [`plan_growth`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Growth {
    /// The request fits with the headroom kept.
    Enough,
    /// Create this BSU (then look again: one step may not be enough).
    Grow(GrowStep),
}

/// IOPS for an io1 volume: `min(size × ratio, 13,000)`, never below 100 (the API's floor),
/// never above 300/GiB. (bsud used max instead of min: see reference §A.9.)
pub fn io1_iops(size_gib: u64, per_gib: u32) -> u32 {
    let wanted = size_gib
        .saturating_mul(per_gib as u64)
        .min(MAX_IO1_IOPS as u64) as u32;
    let cap = size_gib.saturating_mul(300).min(MAX_IO1_IOPS as u64) as u32;
    wanted.max(100).min(cap.max(100))
}

fn ceil_gib(bytes: u64) -> u64 {
    bytes.div_ceil(GIB)
}

/// Decides whether `need` more bytes fit and, if not, the next BSU to add.
pub fn plan_growth(s: &DriveSettings, state: &DriveState, need: u64) -> anyhow::Result<Growth> {
    let headroom = s.headroom_gib * GIB;
    if state.vg_free >= need.saturating_add(headroom) {
        return Ok(Growth::Enough);
    }
    let total_gib: u64 = state.volume_sizes_gib.iter().sum();
    let room_gib = s.max_size_gib.saturating_sub(total_gib);
    // Without headroom, does the request still fit? Then a full drive is not an error yet.
    let deficit_strict = need.saturating_sub(state.vg_free);
    let deficit = need.saturating_add(headroom).saturating_sub(state.vg_free);
    let count = state.volume_sizes_gib.len() as u32;
    let limit_err = |what: String| -> anyhow::Result<Growth> {
        if deficit_strict == 0 {
            // The request fits, only the headroom cannot be restored: proceed without it.
            Ok(Growth::Enough)
        } else {
            Err(fail(ErrorKind::Failed, what))
        }
    };
    if count >= s.max_volumes {
        return limit_err(format!(
            "the drive already has {count} BSU volumes, the limit set by BSUD_MAX_VOLUMES ({}); raise it (at most 39) or free space",
            s.max_volumes
        ));
    }
    if state.vm_volume_count >= MAX_VOLUMES_PER_VM {
        return limit_err(format!(
            "the host VM already has {} volumes linked (Outscale allows {MAX_VOLUMES_PER_VM} per VM, root included); free a slot or move disks to another host",
            state.vm_volume_count
        ));
    }
    if room_gib == 0 {
        return limit_err(format!(
            "the drive reached BSUD_MAX_SIZE_GIB ({} GiB) and needs {} more MiB; raise BSUD_MAX_SIZE_GIB or free space",
            s.max_size_gib,
            deficit_strict.div_ceil(1 << 20)
        ));
    }
    let largest = state.volume_sizes_gib.iter().copied().max().unwrap_or(0);
    let for_request = ceil_gib(deficit + PV_OVERHEAD_BYTES);
    let by_factor = (largest as f64 * s.growth_factor).ceil() as u64;
    let mut size = for_request.max(s.min_volume_gib).max(by_factor);
    size = size.min(MAX_VOLUME_GIB).min(room_gib);
    // Capped below what the request strictly needs, and no further step can help?
    let strict_gib = ceil_gib(deficit_strict + PV_OVERHEAD_BYTES);
    if size < strict_gib && size == room_gib {
        return limit_err(format!(
            "the request needs {strict_gib} GiB more but BSUD_MAX_SIZE_GIB ({} GiB) leaves only {room_gib} GiB; raise BSUD_MAX_SIZE_GIB",
            s.max_size_gib
        ));
    }
    let iops = (s.volume_type == VolumeType::Io1).then(|| io1_iops(size, s.iops_per_gib));
    Ok(Growth::Grow(GrowStep {
        size_gib: size,
        iops,
    }))
}

/// A PV as the shrink decision sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShrinkCandidate {
    /// Key the caller uses to find it again (device path).
    pub key: String,
    /// PV size, bytes.
    pub size: u64,
    /// Allocated extents.
    pub allocated_extents: u64,
}

/// The PVs to release: empty ones, largest first, while free space stays ≥ headroom.
/// `vg_free` is the VG's free bytes, `lv_count` the number of LVs in it.
pub fn plan_shrink(
    s: &DriveSettings,
    vg_free: u64,
    lv_count: usize,
    pvs: &[ShrinkCandidate],
) -> Vec<String> {
    if !s.shrink {
        return Vec::new();
    }
    let headroom = s.headroom_gib * GIB;
    let mut empty: Vec<&ShrinkCandidate> =
        pvs.iter().filter(|p| p.allocated_extents == 0).collect();
    empty.sort_by(|a, b| b.size.cmp(&a.size).then(a.key.cmp(&b.key)));
    let mut free = vg_free;
    let mut remaining = pvs.len();
    let mut out = Vec::new();
    for p in empty {
        // The last PV goes only when the VG is empty and no headroom is asked for.
        if remaining == 1 && (lv_count > 0 || headroom > 0) {
            continue;
        }
        if free.saturating_sub(p.size) >= headroom
            || (remaining == 1 && lv_count == 0 && headroom == 0)
        {
            free -= p.size.min(free);
            remaining -= 1;
            out.push(p.key.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DriveSettings {
        DriveSettings::default()
    }

    fn grow_to(s: &DriveSettings, target_gib: u64) -> Vec<u64> {
        // Simulates repeated allocations of 1 GiB until `target_gib` is allocated.
        let mut sizes: Vec<u64> = Vec::new();
        let mut used: u64 = 0;
        while used < target_gib * GIB {
            let total: u64 = sizes.iter().map(|g| g * GIB - PV_OVERHEAD_BYTES).sum();
            let st = DriveState {
                vg_free: total - used,
                volume_sizes_gib: sizes.clone(),
                vm_volume_count: 1 + sizes.len() as u32,
            };
            match plan_growth(s, &st, GIB).unwrap() {
                Growth::Enough => used += GIB,
                Growth::Grow(g) => sizes.push(g.size_gib),
            }
        }
        sizes
    }

    #[test]
    fn growth_is_logarithmic() {
        let s = DriveSettings {
            max_size_gib: 20_000,
            max_volumes: 39,
            ..settings()
        };
        let sizes = grow_to(&s, 1024);
        // 10, 15, 23, 35, 53, 80, 120, 180, 270, 405 … ≈ log_1.5(1024/10·0.5) steps.
        assert!(sizes.len() <= 12, "{sizes:?}");
        for w in sizes.windows(2) {
            assert!(w[1] as f64 >= w[0] as f64 * 1.5 - 1.0, "{sizes:?}");
        }
        let s2 = DriveSettings {
            growth_factor: 2.0,
            ..s
        };
        assert!(grow_to(&s2, 1024).len() <= 8);
    }

    #[test]
    fn a_big_request_gets_one_big_volume() {
        let st = DriveState {
            vg_free: 0,
            volume_sizes_gib: vec![],
            vm_volume_count: 1,
        };
        match plan_growth(&settings(), &st, 500 * GIB).unwrap() {
            Growth::Grow(g) => assert_eq!(g.size_gib, 503), // 500 + 2 headroom + overhead
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn enough_when_headroom_kept() {
        let st = DriveState {
            vg_free: 5 * GIB,
            volume_sizes_gib: vec![10],
            vm_volume_count: 2,
        };
        assert_eq!(
            plan_growth(&settings(), &st, 3 * GIB).unwrap(),
            Growth::Enough
        );
        assert!(matches!(
            plan_growth(&settings(), &st, 4 * GIB).unwrap(),
            Growth::Grow(_)
        ));
    }

    #[test]
    fn limits_name_the_attribute() {
        let s = DriveSettings {
            max_volumes: 2,
            ..settings()
        };
        let st = DriveState {
            vg_free: 0,
            volume_sizes_gib: vec![10, 15],
            vm_volume_count: 3,
        };
        let e = plan_growth(&s, &st, GIB).unwrap_err().to_string();
        assert!(e.contains("BSUD_MAX_VOLUMES"), "{e}");
        let st = DriveState {
            vg_free: 0,
            volume_sizes_gib: vec![10],
            vm_volume_count: 40,
        };
        let e = plan_growth(&settings(), &st, GIB).unwrap_err().to_string();
        assert!(e.contains("40 per VM"), "{e}");
        let s = DriveSettings {
            max_size_gib: 20,
            ..settings()
        };
        let st = DriveState {
            vg_free: 0,
            volume_sizes_gib: vec![10],
            vm_volume_count: 2,
        };
        let e = plan_growth(&s, &st, 30 * GIB).unwrap_err().to_string();
        assert!(e.contains("BSUD_MAX_SIZE_GIB"), "{e}");
        // At the size limit but the request fits without headroom: not an error.
        let st = DriveState {
            vg_free: GIB + 1,
            volume_sizes_gib: vec![20],
            vm_volume_count: 2,
        };
        assert_eq!(plan_growth(&s, &st, GIB).unwrap(), Growth::Enough);
    }

    #[test]
    fn caps_at_volume_and_drive_limits() {
        let s = DriveSettings {
            max_size_gib: 100_000,
            max_volumes: 39,
            ..settings()
        };
        let st = DriveState {
            vg_free: 0,
            volume_sizes_gib: vec![12_000],
            vm_volume_count: 2,
        };
        match plan_growth(&s, &st, GIB).unwrap() {
            Growth::Grow(g) => assert_eq!(g.size_gib, MAX_VOLUME_GIB),
            other => panic!("{other:?}"),
        }
        let s = DriveSettings {
            max_size_gib: 40,
            ..settings()
        };
        let st = DriveState {
            vg_free: 0,
            volume_sizes_gib: vec![30],
            vm_volume_count: 2,
        };
        match plan_growth(&s, &st, GIB).unwrap() {
            Growth::Grow(g) => assert_eq!(g.size_gib, 10),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn io1_iops_rules() {
        assert_eq!(io1_iops(10, 100), 1000);
        assert_eq!(io1_iops(200, 100), 13_000);
        assert_eq!(io1_iops(1, 50), 100);
        assert_eq!(io1_iops(4, 300), 1200);
        let s = DriveSettings {
            volume_type: VolumeType::Io1,
            iops_per_gib: 300,
            ..settings()
        };
        let st = DriveState {
            vg_free: 0,
            volume_sizes_gib: vec![],
            vm_volume_count: 1,
        };
        match plan_growth(&s, &st, GIB).unwrap() {
            Growth::Grow(g) => assert_eq!(g.iops, Some(3000)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shrink_releases_only_empty_pvs_and_keeps_headroom() {
        let s = settings();
        let pv = |k: &str, gib: u64, alloc: u64| ShrinkCandidate {
            key: k.into(),
            size: gib * GIB,
            allocated_extents: alloc,
        };
        let pvs = [pv("a", 10, 5), pv("b", 15, 0), pv("c", 23, 0)];
        // free = 40 GiB: both empty ones can go while 2 GiB headroom remains.
        assert_eq!(plan_shrink(&s, 40 * GIB, 1, &pvs), ["c", "b"]);
        // free = 24 GiB: dropping c (23) leaves 1 < 2; dropping b (15) leaves 9.
        assert_eq!(plan_shrink(&s, 24 * GIB, 1, &pvs), ["b"]);
        assert!(plan_shrink(
            &DriveSettings {
                shrink: false,
                ..s.clone()
            },
            40 * GIB,
            1,
            &pvs
        )
        .is_empty());
        // An empty VG keeps its last PV while headroom is asked for…
        assert!(plan_shrink(&s, 10 * GIB, 0, &[pv("a", 10, 0)]).is_empty());
        // …and releases it when no headroom is asked for.
        let s0 = DriveSettings {
            headroom_gib: 0,
            ..s
        };
        assert_eq!(plan_shrink(&s0, 10 * GIB, 0, &[pv("a", 10, 0)]), ["a"]);
    }
}
