//! Typed LVM commands and their JSON reports.
//!
//! - [`names`]: the validated VG/LV names, tags and device paths every command takes.
//! - [`command`]: [`Lvm`], the runner (sudo, environment, deadline) with one method per command.
//! - [`report`]: `pvs`/`vgs`/`lvs --segments` JSON as typed [`Pv`], [`Vg`], [`Lv`]; tested on
//!   real outputs of lvm 2.03.16 kept in `fixtures/` (re-captured by `fixtures/capture.sh`).

pub mod command;
pub mod names;
pub mod report;

pub use command::Lvm;
pub use names::{DevicePath, LvName, Tag, VgName};
pub use report::{Lv, PeRange, Pv, Segment, Vg};
