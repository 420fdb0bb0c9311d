//! Operator tooling around the driver: registering it in OpenNebula (`install conf`, `install
//! sudoers`, called by install.sh), the host monitoring probes (`probe ds`, `probe vm-disks`),
//! and `doctor`, which checks a whole site.
//!
//! - [`template`]: a locating parser for oned.conf's template language.
//! - [`register`]: the oned.conf and vmm_execrc edits, planned on the text.
//! - [`install`]: applying them with a backup; the sudoers file.
//! - [`probe`]: drive capacity as `DS = [ … ]` lines for monitord.
//! - [`selfcheck`]: the host agent's read-only report for doctor.
//! - [`doctor`]: the checks and their report.

pub mod doctor;
pub mod install;
pub mod probe;
pub mod register;
pub mod selfcheck;
pub mod template;
