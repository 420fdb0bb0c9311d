//! Thin drives (`BSUD_THIN=YES`): the sizing rules of the one thin pool a drive holds.
//!
//! Invariants:
//! - A drive holds at most one pool, `bsud-pool`, tagged `one.bsud.pool=1`; every thin volume
//!   of the drive lives in it. Its metadata is sized at creation for the pool's maximum (the
//!   drive's `BSUD_MAX_SIZE_GIB`), so the common case never has to grow metadata.
//! - The pool never fills silently: before any allocation (and whenever `drive pool-guard`
//!   looks) data and metadata usage are brought back under `BSUD_POOL_GROW_PERCENT` and the pool
//!   keeps room for what the caller is about to write plus the drive's headroom. Growing the
//!   pool may first grow the VG (a new BSU). The pool zeroes the blocks it provisions and makes
//!   writers wait rather than fail when full (`--errorwhenfull n`), which gives the guard time.
//! - The sum of thin volume sizes may not pass `BSUD_OVERCOMMIT` × `BSUD_MAX_SIZE_GIB`: the
//!   check runs before anything is created and its error says which numbers collide.
//! - Pure functions: the caller reads LVM and applies the plan under the drive lock.

use crate::config::DriveSettings;
use crate::error::{fail, ErrorKind};
use crate::lvm::Lv;

use super::policy::GIB;

/// The pool LV of every thin drive.
pub const POOL_LV: &str = "bsud-pool";
/// The tag that makes the pool ours.
pub const TAG_POOL: &str = "one.bsud.pool=1";
const MIB: u64 = 1 << 20;
/// LVM's own estimate of thin metadata: 64 bytes per chunk of data.
const METADATA_PER_CHUNK: u64 = 64;
/// Largest metadata we size up front; bigger pools get bigger chunks instead.
const METADATA_TARGET_MAX: u64 = GIB;
/// LVM's hard limit for thin pool metadata.
const METADATA_LIMIT: u64 = 16 * GIB - 256 * MIB;
const MIN_CHUNK: u64 = 64 * 1024;
const MIN_METADATA: u64 = 8 * MIB;
/// The smallest pool made: room for a few clones before the first growth.
const MIN_POOL: u64 = GIB;

/// What the pool must become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPlan {
    /// Whether it has to be created.
    pub create: bool,
    /// Data size, bytes.
    pub data_bytes: u64,
    /// Metadata size, bytes.
    pub metadata_bytes: u64,
    /// Chunk size (used at creation only).
    pub chunk_bytes: u64,
    /// VG bytes the change needs (data growth, metadata growth and its spare copy).
    pub vg_bytes: u64,
}

impl PoolPlan {
    /// Whether anything has to change.
    pub fn changes(&self, pool: Option<&Lv>) -> bool {
        match pool {
            None => true,
            Some(p) => {
                p.size < self.data_bytes || p.metadata_size.unwrap_or(0) < self.metadata_bytes
            }
        }
    }
}

/// Chunk and metadata size for a pool that may reach `max_bytes`.
pub fn geometry(max_bytes: u64) -> (u64, u64) {
    let mut chunk = MIN_CHUNK;
    while max_bytes / chunk * METADATA_PER_CHUNK > METADATA_TARGET_MAX {
        chunk *= 2;
    }
    let meta = (max_bytes / chunk * METADATA_PER_CHUNK)
        .clamp(MIN_METADATA, METADATA_LIMIT)
        .next_multiple_of(MIB);
    (chunk, meta)
}

/// Bytes of `pool` in use.
pub fn used_bytes(pool: &Lv) -> u64 {
    pool.size / 10_000 * u64::from(pool.data_bp.unwrap_or(0))
}

/// The sum of the thin volumes' sizes.
pub fn provisioned(lvs: &[Lv]) -> u64 {
    lvs.iter().filter(|l| l.is_thin()).map(|l| l.size).sum()
}

/// Refuses a new thin volume of `new_bytes` that would pass the overcommit limit.
pub fn check_overcommit(s: &DriveSettings, lvs: &[Lv], new_bytes: u64) -> anyhow::Result<()> {
    let limit = (s.max_size_gib as f64 * s.overcommit * GIB as f64) as u64;
    let have = provisioned(lvs);
    if have.saturating_add(new_bytes) > limit {
        return Err(fail(
            ErrorKind::Refused,
            format!(
                "thin overcommit limit: {} GiB already provisioned + {} GiB asked > {} GiB \
                 (BSUD_OVERCOMMIT {} × BSUD_MAX_SIZE_GIB {}); raise either, or free disks",
                have.div_ceil(GIB),
                new_bytes.div_ceil(GIB),
                limit / GIB,
                s.overcommit,
                s.max_size_gib
            ),
        ));
    }
    Ok(())
}

/// What the pool must become so that `will_write` more bytes fit with the headroom and usage
/// stays under the growth threshold. `pool` is the pool as LVM reports it (None: none yet).
pub fn plan(s: &DriveSettings, pool: Option<&Lv>, will_write: u64) -> PoolPlan {
    let max = s.max_size_gib.saturating_mul(GIB);
    let (chunk, meta_for_max) = geometry(max);
    let headroom = s.headroom_gib * GIB;
    let pct = u64::from(s.pool_grow_percent);
    let (size, meta, used, meta_bp) = match pool {
        Some(p) => (
            p.size,
            p.metadata_size.unwrap_or(0),
            used_bytes(p),
            u64::from(p.metadata_bp.unwrap_or(0)),
        ),
        None => (0, 0, 0, 0),
    };
    // Usage must stay under the threshold after the write, with the headroom free.
    let need = used + will_write;
    let mut data = size
        .max(need + headroom)
        .max((need * 100).div_ceil(pct))
        .max(MIN_POOL);
    if data > size {
        // Double at least: a guest writing steadily meets a few growths (logarithmic), not one
        // per guard pass, and each growth leaves it more time before the next.
        data = data.max(size * 2).min(max.max(data)).next_multiple_of(GIB);
    }
    let mut metadata = meta.max(meta_for_max);
    if meta_bp >= pct * 100 {
        metadata = (meta * 2).min(METADATA_LIMIT).max(metadata);
    }
    let vg_bytes = (data - size) + 2 * (metadata - meta);
    PoolPlan {
        create: pool.is_none(),
        data_bytes: data,
        metadata_bytes: metadata,
        chunk_bytes: chunk,
        vg_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(size: u64, data_bp: u32, meta: u64, meta_bp: u32) -> Lv {
        Lv {
            name: POOL_LV.into(),
            size,
            data_bp: Some(data_bp),
            metadata_size: Some(meta),
            metadata_bp: Some(meta_bp),
            ..Default::default()
        }
    }

    fn settings() -> DriveSettings {
        DriveSettings {
            thin: true,
            max_size_gib: 1024,
            headroom_gib: 2,
            ..Default::default()
        }
    }

    #[test]
    fn metadata_is_sized_for_the_maximum_with_bounded_chunks() {
        assert_eq!(geometry(1024 * GIB), (64 * 1024, GIB));
        let (chunk, meta) = geometry(16 * 1024 * GIB);
        assert_eq!((chunk, meta), (1 << 20, GIB));
        assert_eq!(geometry(GIB).1, MIN_METADATA);
    }

    #[test]
    fn a_new_pool_holds_what_is_about_to_be_written_plus_headroom() {
        let p = plan(&settings(), None, 10 * GIB);
        assert!(p.create);
        assert!(p.data_bytes >= 12 * GIB && p.data_bytes * 80 / 100 >= 10 * GIB);
        assert_eq!(p.metadata_bytes, GIB);
        assert_eq!(p.vg_bytes, p.data_bytes + 2 * GIB);
    }

    #[test]
    fn a_pool_under_the_threshold_is_left_alone_and_one_over_it_grows() {
        let s = settings();
        let calm = pool(100 * GIB, 5000, GIB, 100);
        assert!(!plan(&s, Some(&calm), 0).changes(Some(&calm)));
        let busy = pool(100 * GIB, 8100, GIB, 100);
        let p = plan(&s, Some(&busy), 0);
        assert!(p.changes(Some(&busy)));
        assert!(p.data_bytes >= 125 * GIB, "{p:?}");
        assert_eq!(p.vg_bytes, p.data_bytes - 100 * GIB);
        let meta_full = pool(100 * GIB, 100, GIB, 9000);
        let p = plan(&s, Some(&meta_full), 0);
        assert_eq!(p.metadata_bytes, 2 * GIB);
        assert_eq!(p.vg_bytes, 2 * GIB);
    }

    #[test]
    fn overcommit_is_refused_before_anything_is_made() {
        let s = DriveSettings {
            max_size_gib: 10,
            overcommit: 2.0,
            ..settings()
        };
        let thin = |n: &str, size| Lv {
            name: n.into(),
            size,
            segments: vec![crate::lvm::report::Segment {
                start_le: 0,
                size_le: 1,
                segtype: "thin".into(),
                ranges: vec![],
            }],
            ..Default::default()
        };
        let lvs = vec![thin("a", 15 * GIB), pool(5 * GIB, 0, MIB, 0)];
        assert!(check_overcommit(&s, &lvs, 5 * GIB).is_ok());
        let e = check_overcommit(&s, &lvs, 6 * GIB).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 6);
        assert!(e.to_string().contains("BSUD_OVERCOMMIT"), "{e}");
    }
}
