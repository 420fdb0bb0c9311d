//! What the agent knows about its surroundings: the host view variables of
//! `docs/ARCHITECTURE.md`, read once from the [`Env`] the agent was given (never from the
//! process environment directly), and the operation's deadline.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Env;
use crate::lvm::{LvName, VgName};

/// Default metadata server.
pub const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";

/// The host view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEnv {
    /// `BSUD_HOST_ROOT` (`/`).
    pub root: PathBuf,
    /// `BSUD_DEV_DIR` (`<root>/dev/disk/by-id`).
    pub dev_dir: PathBuf,
    /// Whether `BSUD_DEV_DIR` was set: only production (unset) may fall back to the literal
    /// `/dev/xvd<x>` name, which in a testbed would be the machine's own device.
    pub dev_dir_set: bool,
    /// `BSUD_LV_DIR` (`/dev`): LV nodes are `<lv_dir>/<vg>/<lv>`.
    pub lv_dir: PathBuf,
    /// `BSUD_LOCK_DIR` (`<root>/var/lock/one/bsud`).
    pub lock_dir: PathBuf,
    /// `BSUD_METADATA_URL` (`http://169.254.169.254`).
    pub metadata_url: String,
    /// `LVM_SYSTEM_DIR` (unset: LVM's own default).
    pub lvm_system_dir: Option<PathBuf>,
}

impl HostEnv {
    /// Reads the host view from `env`, with the production defaults.
    pub fn from_env(env: &Env) -> HostEnv {
        let root = PathBuf::from(env.get("BSUD_HOST_ROOT").unwrap_or("/"));
        let under_root = |p: &str| root.join(p);
        HostEnv {
            dev_dir: env
                .get("BSUD_DEV_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| under_root("dev/disk/by-id")),
            dev_dir_set: env.get("BSUD_DEV_DIR").is_some(),
            lv_dir: PathBuf::from(env.get("BSUD_LV_DIR").unwrap_or("/dev")),
            lock_dir: env
                .get("BSUD_LOCK_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| under_root("var/lock/one/bsud")),
            metadata_url: env
                .get("BSUD_METADATA_URL")
                .unwrap_or(DEFAULT_METADATA_URL)
                .to_string(),
            lvm_system_dir: env.get("LVM_SYSTEM_DIR").map(PathBuf::from),
            root,
        }
    }

    /// The LV's device node.
    pub fn lv_path(&self, vg: &VgName, lv: &LvName) -> PathBuf {
        self.lv_dir.join(vg.as_str()).join(lv.as_str())
    }

    /// The by-id directory.
    pub fn dev_dir(&self) -> &Path {
        &self.dev_dir
    }
}

/// When the current operation must be over.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    /// `d` from now.
    pub fn after(d: Duration) -> Deadline {
        Deadline(Instant::now() + d)
    }

    /// The instant.
    pub fn at(&self) -> Instant {
        self.0
    }

    /// Time left (zero when passed).
    pub fn left(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// `d`, or less if the deadline comes first.
    pub fn cap(&self, d: Duration) -> Duration {
        d.min(self.left())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_defaults_and_testbed_overrides() {
        let p = HostEnv::from_env(&Env::from_pairs(Vec::<(String, String)>::new()));
        assert_eq!(p.dev_dir, Path::new("/dev/disk/by-id"));
        assert!(!p.dev_dir_set);
        assert_eq!(p.lv_dir, Path::new("/dev"));
        assert_eq!(p.lock_dir, Path::new("/var/lock/one/bsud"));
        assert_eq!(p.metadata_url, DEFAULT_METADATA_URL);
        assert_eq!(p.lvm_system_dir, None);

        let t = HostEnv::from_env(&Env::from_pairs([
            ("BSUD_HOST_ROOT", "/tb/h1"),
            ("BSUD_LV_DIR", "/tb/h1/lv"),
            ("LVM_SYSTEM_DIR", "/tb/h1/etc/lvm"),
        ]));
        assert_eq!(t.dev_dir, Path::new("/tb/h1/dev/disk/by-id"));
        assert!(!t.dev_dir_set);
        assert_eq!(t.lock_dir, Path::new("/tb/h1/var/lock/one/bsud"));
        assert_eq!(
            t.lv_path(&"vg-one-1".parse().unwrap(), &"img-one-2".parse().unwrap()),
            Path::new("/tb/h1/lv/vg-one-1/img-one-2")
        );
        let d = HostEnv::from_env(&Env::from_pairs([("BSUD_DEV_DIR", "/x/by-id")]));
        assert!(d.dev_dir_set);
    }
}
