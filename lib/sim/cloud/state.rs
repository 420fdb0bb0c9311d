//! The simulated cloud's persistent state and its state machine.
//!
//! Invariants:
//! - Everything a restart must keep is in [`State`], saved as `<dir>/state.json` by writing a
//!   temporary file and renaming it over the old one, so a crash (SIGKILL) at any point leaves
//!   either the old or the new state, never a torn one. (No fsync: a process crash keeps the
//!   page cache; a power loss may lose the last mutations.)
//! - A volume's data is the sparse file `<dir>/volumes/<vol-id>.img`, created with the volume
//!   and removed after its record is gone from the saved state. Files without a record are
//!   orphans of a crash and are removed at load.
//! - Pending transitions are stored as *due times* computed from the delays in force when the
//!   operation was accepted, so they survive restarts; [`State::advance`] applies every due
//!   transition that needs no host effect, and reports the host effects (loop device set-up)
//!   that must run before a link may become `attached` or disappear.
//! - A link has `host_attached == true` exactly when the host effect of attaching was carried
//!   out and not yet reversed; a detach runs the host effect only then.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::faults::{self, Installed, Transition};

/// The state file inside the state directory.
pub const STATE_FILE: &str = "state.json";
/// The directory of volume files inside the state directory.
pub const VOLUMES_DIR: &str = "volumes";
/// Volumes per VM, root included (Outscale's documented limit).
pub const MAX_VOLUMES_PER_VM: usize = 40;
/// The root volume's device name.
pub const ROOT_DEVICE: &str = "/dev/sda1";
/// Size of every VM's root volume, GiB.
pub const ROOT_SIZE_GIB: u32 = 10;
/// Access key accepted when none was ever configured.
pub const DEFAULT_ACCESS_KEY: &str = "AKSIM";
/// Secret key of [`DEFAULT_ACCESS_KEY`].
pub const DEFAULT_SECRET_KEY: &str = "SKSIM";
/// Region when none was ever configured.
pub const DEFAULT_REGION: &str = "eu-west-2";
/// Bytes per GiB.
pub const GIB: u64 = 1 << 30;

const STATE_VERSION: u32 = 1;

/// An access key pair accepted for request signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// Access key id.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
}

/// Transition delays, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delays {
    /// `creating → available`.
    pub create_ms: u64,
    /// `attaching → attached`.
    pub attach_ms: u64,
    /// `detaching → gone`.
    pub detach_ms: u64,
    /// `deleting → gone`.
    pub delete_ms: u64,
}

impl Default for Delays {
    fn default() -> Self {
        Delays {
            create_ms: 200,
            attach_ms: 200,
            detach_ms: 200,
            delete_ms: 200,
        }
    }
}

/// A partial update of [`Delays`] (`POST /_sim/delays`, CLI flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelayUpdate {
    /// New create delay.
    #[serde(default)]
    pub create_ms: Option<u64>,
    /// New attach delay.
    #[serde(default)]
    pub attach_ms: Option<u64>,
    /// New detach delay.
    #[serde(default)]
    pub detach_ms: Option<u64>,
    /// New delete delay.
    #[serde(default)]
    pub delete_ms: Option<u64>,
}

impl Delays {
    /// Applies the fields present in `u`.
    pub fn update(&mut self, u: &DelayUpdate) {
        if let Some(v) = u.create_ms {
            self.create_ms = v;
        }
        if let Some(v) = u.attach_ms {
            self.attach_ms = v;
        }
        if let Some(v) = u.detach_ms {
            self.detach_ms = v;
        }
        if let Some(v) = u.delete_ms {
            self.delete_ms = v;
        }
    }
}

/// A simulated VM (a host, when it has a `root` directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vm {
    /// `i-xxxxxxxx`.
    pub id: String,
    /// Testbed name (unique), also its `Name` tag.
    pub name: String,
    /// Subregion (`eu-west-2a`).
    pub subregion: String,
    /// The simulated host's root directory; `None` for an API-only VM (no host effects).
    pub root: Option<PathBuf>,
    /// Creation instant, epoch ms.
    pub created_ms: u64,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Its root volume's id.
    pub root_volume: String,
}

/// Where a volume is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// `creating` until `due_ms`.
    Creating {
        /// When it becomes available.
        due_ms: u64,
    },
    /// `available`, or `in-use` while linked.
    Ready,
    /// `deleting` until `due_ms`, then gone.
    Deleting {
        /// When it disappears.
        due_ms: u64,
    },
}

/// A link's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Requested; becomes attached at `due_ms` (and after the host effect).
    Attaching,
    /// Attached.
    Attached,
    /// Unlink requested; disappears at `due_ms` (and after the host effect).
    Detaching,
}

impl LinkState {
    /// The API's word.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Attaching => "attaching",
            LinkState::Attached => "attached",
            LinkState::Detaching => "detaching",
        }
    }
}

/// A volume's link to a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The VM.
    pub vm_id: String,
    /// Device name as requested (`/dev/xvdb`).
    pub device: String,
    /// State.
    pub state: LinkState,
    /// When LinkVolume was accepted (the API's LinkDate), epoch ms.
    pub linked_ms: u64,
    /// When the pending transition (attaching/detaching) is due.
    pub due_ms: u64,
    /// Whether the host effect of attaching is in place.
    pub host_attached: bool,
    /// Whether the unlink was forced (skips a detach stall).
    pub forced: bool,
    /// DeleteOnVmDeletion (true only for root volumes).
    pub delete_on_vm_deletion: bool,
}

/// A BSU volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    /// `vol-xxxxxxxx`.
    pub id: String,
    /// Size, GiB.
    pub size_gib: u32,
    /// `standard`, `gp2` or `io1`.
    pub volume_type: String,
    /// Provisioned IOPS (io1 only).
    pub iops: Option<u32>,
    /// Subregion.
    pub subregion: String,
    /// ClientToken of the CreateVolume that made it.
    pub client_token: Option<String>,
    /// Creation instant, epoch ms.
    pub created_ms: u64,
    /// Life phase.
    pub phase: Phase,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// The link, if linked (any link state).
    pub link: Option<Link>,
    /// Whether this is a VM's root volume.
    pub root: bool,
}

impl Volume {
    /// The API's volume state.
    pub fn state_str(&self) -> &'static str {
        match self.phase {
            Phase::Creating { .. } => "creating",
            Phase::Deleting { .. } => "deleting",
            Phase::Ready if self.link.is_some() => "in-use",
            Phase::Ready => "available",
        }
    }
}

/// Everything the simulated cloud keeps across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Format version of this file.
    pub version: u32,
    /// Region (`eu-west-2`); subregions are `<region>a` and `<region>b`.
    pub region: String,
    /// Accepted keys.
    pub keys: Vec<Key>,
    /// Delays for new operations.
    pub delays: Delays,
    /// The address last listened on (reused by a restart without `--listen`).
    #[serde(default)]
    pub listen: Option<String>,
    /// VMs by id.
    pub vms: BTreeMap<String, Vm>,
    /// Volumes by id (root volumes included).
    pub volumes: BTreeMap<String, Volume>,
    /// Installed fault rules.
    #[serde(default)]
    pub faults: Vec<Installed>,
}

/// A host effect due before a link transition may complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Make the volume appear on the host (then the link becomes `attached`).
    Attach {
        /// Volume.
        volume_id: String,
        /// VM.
        vm_id: String,
        /// Device name.
        device: String,
        /// The host's root directory.
        host_root: PathBuf,
    },
    /// Make the volume disappear from the host (then the link goes away).
    Detach {
        /// Volume.
        volume_id: String,
        /// VM.
        vm_id: String,
        /// Device name.
        device: String,
        /// The host's root directory.
        host_root: PathBuf,
    },
}

impl Effect {
    /// The volume concerned.
    pub fn volume_id(&self) -> &str {
        match self {
            Effect::Attach { volume_id, .. } | Effect::Detach { volume_id, .. } => volume_id,
        }
    }
}

/// What [`State::advance`] did and wants done.
#[derive(Debug, Default)]
pub struct Advanced {
    /// Whether the state changed (must be saved).
    pub changed: bool,
    /// Host effects now due (not carried out).
    pub effects: Vec<Effect>,
    /// Volumes that disappeared (their files must be removed after saving).
    pub gone: Vec<String>,
}

impl State {
    /// A fresh cloud.
    pub fn new(region: &str) -> Self {
        State {
            version: STATE_VERSION,
            region: region.to_string(),
            keys: vec![Key {
                access_key: DEFAULT_ACCESS_KEY.into(),
                secret_key: DEFAULT_SECRET_KEY.into(),
            }],
            delays: Delays::default(),
            listen: None,
            vms: BTreeMap::new(),
            volumes: BTreeMap::new(),
            faults: Vec::new(),
        }
    }

    /// The region's subregions.
    pub fn subregions(&self) -> Vec<String> {
        ["a", "b"]
            .iter()
            .map(|s| format!("{}{s}", self.region))
            .collect()
    }

    /// The secret of an access key.
    pub fn secret_of(&self, access_key: &str) -> Option<&str> {
        self.keys
            .iter()
            .find(|k| k.access_key == access_key)
            .map(|k| k.secret_key.as_str())
    }

    /// Links (any state) on a VM: (volume id, link).
    pub fn links_of<'a>(&'a self, vm_id: &'a str) -> impl Iterator<Item = (&'a str, &'a Link)> {
        self.volumes.values().filter_map(move |v| {
            v.link
                .as_ref()
                .filter(|l| l.vm_id == vm_id)
                .map(|l| (v.id.as_str(), l))
        })
    }

    /// A new unused id `<prefix>-xxxxxxxx`.
    pub fn new_id(&self, prefix: &str) -> String {
        use rand::Rng as _;
        let mut rng = rand::rng();
        loop {
            let id = format!("{prefix}-{:08x}", rng.random::<u32>());
            if !self.volumes.contains_key(&id) && !self.vms.contains_key(&id) {
                return id;
            }
        }
    }

    /// Registers a VM with its root volume (no file: the root disk is never a host device).
    pub fn add_vm(
        &mut self,
        name: &str,
        subregion: &str,
        root: Option<PathBuf>,
        now: u64,
    ) -> String {
        let id = self.new_id("i");
        let root_volume = self.new_id("vol");
        self.volumes.insert(
            root_volume.clone(),
            Volume {
                id: root_volume.clone(),
                size_gib: ROOT_SIZE_GIB,
                volume_type: "gp2".into(),
                iops: None,
                subregion: subregion.into(),
                client_token: None,
                created_ms: now,
                phase: Phase::Ready,
                tags: BTreeMap::new(),
                link: Some(Link {
                    vm_id: id.clone(),
                    device: ROOT_DEVICE.into(),
                    state: LinkState::Attached,
                    linked_ms: now,
                    due_ms: now,
                    host_attached: false,
                    forced: false,
                    delete_on_vm_deletion: true,
                }),
                root: true,
            },
        );
        self.vms.insert(
            id.clone(),
            Vm {
                id: id.clone(),
                name: name.into(),
                subregion: subregion.into(),
                root,
                created_ms: now,
                tags: BTreeMap::from([("Name".to_string(), name.to_string())]),
                root_volume,
            },
        );
        id
    }

    /// Applies every transition due at `now` that needs no host effect, skipping volumes in
    /// `busy` (a host effect is running for them), and lists the host effects now due.
    pub fn advance(&mut self, now: u64, busy: &HashSet<String>) -> Advanced {
        let mut out = Advanced::default();
        let ids: Vec<String> = self.volumes.keys().cloned().collect();
        for id in ids {
            if busy.contains(&id) {
                continue;
            }
            let Some(vol) = self.volumes.get(&id) else {
                continue;
            };
            let vm_id = vol.link.as_ref().map(|l| l.vm_id.clone());
            let stalled = |t: Transition| faults::stalled(&self.faults, t, &id, vm_id.as_deref());
            let (hold_create, hold_delete, hold_attach, hold_detach) = (
                stalled(Transition::Create),
                stalled(Transition::Delete),
                stalled(Transition::Attach),
                stalled(Transition::Detach),
            );
            match vol.phase {
                Phase::Creating { due_ms } if now >= due_ms && !hold_create => {
                    self.set_phase(&id, Phase::Ready);
                    out.changed = true;
                }
                Phase::Deleting { due_ms } if now >= due_ms && !hold_delete => {
                    self.volumes.remove(&id);
                    out.gone.push(id.clone());
                    out.changed = true;
                    continue;
                }
                _ => {}
            }
            let Some(link) = self.volumes.get(&id).and_then(|v| v.link.clone()) else {
                continue;
            };
            if now < link.due_ms {
                continue;
            }
            let host_root = self.vms.get(&link.vm_id).and_then(|vm| vm.root.clone());
            match link.state {
                LinkState::Attaching if !hold_attach => {
                    let wants_device = host_root.is_some()
                        && !link.host_attached
                        && !faults::no_device(&self.faults, &id, &link.vm_id);
                    match host_root {
                        Some(host_root) if wants_device => out.effects.push(Effect::Attach {
                            volume_id: id.clone(),
                            vm_id: link.vm_id.clone(),
                            device: link.device.clone(),
                            host_root,
                        }),
                        _ => {
                            self.set_link_state(&id, LinkState::Attached);
                            out.changed = true;
                        }
                    }
                }
                LinkState::Detaching if link.forced || !hold_detach => match host_root {
                    Some(host_root) if link.host_attached => out.effects.push(Effect::Detach {
                        volume_id: id.clone(),
                        vm_id: link.vm_id.clone(),
                        device: link.device.clone(),
                        host_root,
                    }),
                    _ => {
                        if let Some(v) = self.volumes.get_mut(&id) {
                            v.link = None;
                        }
                        out.changed = true;
                    }
                },
                _ => {}
            }
        }
        out
    }

    fn set_phase(&mut self, id: &str, phase: Phase) {
        if let Some(v) = self.volumes.get_mut(id) {
            v.phase = phase;
        }
    }

    fn set_link_state(&mut self, id: &str, state: LinkState) {
        if let Some(l) = self.volumes.get_mut(id).and_then(|v| v.link.as_mut()) {
            l.state = state;
        }
    }

    /// Records a completed attach effect; returns whether the state changed. A link that was
    /// meanwhile turned to `detaching` keeps that state (its detach will undo the effect).
    pub fn complete_attach(&mut self, volume_id: &str, vm_id: &str, device: &str) -> bool {
        let Some(link) = self
            .volumes
            .get_mut(volume_id)
            .and_then(|v| v.link.as_mut())
            .filter(|l| l.vm_id == vm_id && l.device == device)
        else {
            return false;
        };
        link.host_attached = true;
        if link.state == LinkState::Attaching {
            link.state = LinkState::Attached;
        }
        true
    }

    /// Records a completed detach effect: the link disappears.
    pub fn complete_detach(&mut self, volume_id: &str, vm_id: &str, device: &str) -> bool {
        let Some(vol) = self.volumes.get_mut(volume_id) else {
            return false;
        };
        match &vol.link {
            Some(l) if l.vm_id == vm_id && l.device == device => {
                vol.link = None;
                true
            }
            _ => false,
        }
    }
}

/// The state plus where it lives; the only place that touches the state directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// The state.
    pub state: State,
    /// Set by mutations; cleared by [`Store::save`].
    pub dirty: bool,
}

impl Store {
    /// Loads `<dir>/state.json`, or starts a fresh cloud in `dir` (created if missing).
    /// Removes orphan volume files.
    pub fn open(dir: &Path, region_if_new: &str) -> anyhow::Result<Store> {
        fs::create_dir_all(dir.join(VOLUMES_DIR))
            .with_context(|| format!("creating state directory {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        let path = dir.join(STATE_FILE);
        let (state, dirty) = match fs::read(&path) {
            Ok(bytes) => {
                let state: State = serde_json::from_slice(&bytes)
                    .with_context(|| format!("reading simulator state {}", path.display()))?;
                if state.version != STATE_VERSION {
                    anyhow::bail!(
                        "simulator state {} has format version {}, this bsud-sim reads {}",
                        path.display(),
                        state.version,
                        STATE_VERSION
                    );
                }
                (state, false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (State::new(region_if_new), true),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let store = Store { dir, state, dirty };
        store.remove_orphans()?;
        Ok(store)
    }

    /// The state directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data file of a volume.
    pub fn volume_file(&self, id: &str) -> PathBuf {
        self.dir.join(VOLUMES_DIR).join(format!("{id}.img"))
    }

    /// Creates a volume's sparse data file of `size_gib` GiB.
    pub fn create_volume_file(&self, id: &str, size_gib: u32) -> anyhow::Result<()> {
        let path = self.volume_file(id);
        let f = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        f.set_len(u64::from(size_gib) * GIB)
            .with_context(|| format!("sizing {}", path.display()))
    }

    /// Removes a volume's data file (absent is fine).
    pub fn remove_volume_file(&self, id: &str) -> anyhow::Result<()> {
        let path = self.volume_file(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }

    fn remove_orphans(&self) -> anyhow::Result<()> {
        let dir = self.dir.join(VOLUMES_DIR);
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let known = name
                .strip_suffix(".img")
                .is_some_and(|id| self.state.volumes.contains_key(id));
            if !known {
                tracing::info!("removing orphan volume file {}", entry.path().display());
                fs::remove_file(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
        Ok(())
    }

    /// Writes the state atomically if it changed.
    pub fn save(&mut self) -> anyhow::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(&self.state)?;
        fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
        self.dirty = false;
        Ok(())
    }
}

/// Writes `contents` to `path` atomically (temporary file in the same directory + rename).
pub fn write_atomic(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::cloud::faults::FaultRule;

    fn volume(st: &mut State, phase: Phase) -> String {
        let id = st.new_id("vol");
        st.volumes.insert(
            id.clone(),
            Volume {
                id: id.clone(),
                size_gib: 1,
                volume_type: "standard".into(),
                iops: None,
                subregion: "eu-west-2a".into(),
                client_token: None,
                created_ms: 0,
                phase,
                tags: BTreeMap::new(),
                link: None,
                root: false,
            },
        );
        id
    }

    fn link(st: &mut State, vol: &str, vm: &str, state: LinkState, due_ms: u64) {
        st.volumes.get_mut(vol).unwrap().link = Some(Link {
            vm_id: vm.into(),
            device: "/dev/xvdb".into(),
            state,
            linked_ms: 0,
            due_ms,
            host_attached: false,
            forced: false,
            delete_on_vm_deletion: false,
        });
    }

    #[test]
    fn creating_becomes_available_when_due_unless_stalled() {
        let mut st = State::new("eu-west-2");
        let v = volume(&mut st, Phase::Creating { due_ms: 100 });
        assert!(!st.advance(99, &HashSet::new()).changed);
        assert_eq!(st.volumes[&v].state_str(), "creating");
        st.faults.push(Installed {
            rule: FaultRule::Stall {
                transition: Transition::Create,
                volume: Some(v.clone()),
                vm: None,
            },
            seen: 0,
        });
        assert!(!st.advance(100, &HashSet::new()).changed);
        st.faults.clear();
        assert!(st.advance(100, &HashSet::new()).changed);
        assert_eq!(st.volumes[&v].state_str(), "available");
    }

    #[test]
    fn api_only_vm_links_attach_and_detach_without_effects() {
        let mut st = State::new("eu-west-2");
        let vm = st.add_vm("h", "eu-west-2a", None, 0);
        let v = volume(&mut st, Phase::Ready);
        link(&mut st, &v, &vm, LinkState::Attaching, 50);
        assert_eq!(st.volumes[&v].state_str(), "in-use");
        let a = st.advance(50, &HashSet::new());
        assert!(a.changed && a.effects.is_empty());
        assert_eq!(
            st.volumes[&v].link.as_ref().unwrap().state,
            LinkState::Attached
        );
        link(&mut st, &v, &vm, LinkState::Detaching, 60);
        st.advance(60, &HashSet::new());
        assert_eq!(st.volumes[&v].state_str(), "available");
    }

    #[test]
    fn host_vm_link_waits_for_effect_and_busy_volumes_are_skipped() {
        let mut st = State::new("eu-west-2");
        let vm = st.add_vm("h", "eu-west-2a", Some("/tmp/h".into()), 0);
        let v = volume(&mut st, Phase::Ready);
        link(&mut st, &v, &vm, LinkState::Attaching, 0);
        let a = st.advance(1, &HashSet::new());
        assert!(!a.changed);
        assert!(matches!(&a.effects[..], [Effect::Attach { volume_id, .. }] if *volume_id == v));
        let busy = HashSet::from([v.clone()]);
        assert!(st.advance(1, &busy).effects.is_empty());
        assert!(st.complete_attach(&v, &vm, "/dev/xvdb"));
        let l = st.volumes[&v].link.clone().unwrap();
        assert!(l.host_attached && l.state == LinkState::Attached);
        // Detach needs the reverse effect because the device is in place.
        st.volumes.get_mut(&v).unwrap().link.as_mut().unwrap().state = LinkState::Detaching;
        let a = st.advance(2, &HashSet::new());
        assert!(matches!(&a.effects[..], [Effect::Detach { .. }]));
        assert!(st.complete_detach(&v, &vm, "/dev/xvdb"));
        assert_eq!(st.volumes[&v].state_str(), "available");
    }

    #[test]
    fn no_device_rule_attaches_without_effect() {
        let mut st = State::new("eu-west-2");
        let vm = st.add_vm("h", "eu-west-2a", Some("/tmp/h".into()), 0);
        let v = volume(&mut st, Phase::Ready);
        link(&mut st, &v, &vm, LinkState::Attaching, 0);
        st.faults.push(Installed {
            rule: FaultRule::NoDevice {
                volume: None,
                vm: Some(vm.clone()),
            },
            seen: 0,
        });
        let a = st.advance(1, &HashSet::new());
        assert!(a.changed && a.effects.is_empty());
        assert!(!st.volumes[&v].link.as_ref().unwrap().host_attached);
    }

    #[test]
    fn deleting_disappears_when_due() {
        let mut st = State::new("eu-west-2");
        let v = volume(&mut st, Phase::Deleting { due_ms: 10 });
        let a = st.advance(10, &HashSet::new());
        assert_eq!(a.gone, vec![v.clone()]);
        assert!(!st.volumes.contains_key(&v));
    }

    #[test]
    fn store_saves_atomically_and_drops_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), "eu-west-2").unwrap();
        let vm = s.state.add_vm("h", "eu-west-2a", None, 5);
        s.dirty = true;
        s.save().unwrap();
        s.create_volume_file("vol-deadbeef", 1).unwrap();
        let meta = fs::metadata(s.volume_file("vol-deadbeef")).unwrap();
        assert_eq!(meta.len(), GIB);
        let s2 = Store::open(dir.path(), "other").unwrap();
        assert_eq!(s2.state.region, "eu-west-2");
        assert!(s2.state.vms.contains_key(&vm));
        assert!(!s2.volume_file("vol-deadbeef").exists());
    }
}
