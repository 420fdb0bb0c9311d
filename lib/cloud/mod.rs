//! The cloud seam: what the drive engine needs from Outscale, in our own verbs.
//!
//! Invariants:
//! - [`Cloud`] is synchronous; the implementation over `outscale_api` ([`outscale`]) calls the
//!   SDK's blocking functions on the caller's thread. No code path runs it inside a tokio
//!   runtime (the crate's core has none).
//! - No retry layer here: the SDK already retries 409/429/5xx and transport errors with backoff
//!   and rate-limits; we add only *waits* for state changes, each with a deadline
//!   ([`wait_volume`], [`wait_link`], [`wait_unlinked`]).
//! - Errors are [`CloudError`]s that keep the HTTP status and Outscale's error code, decided on
//!   the status (the SDK's typed error enum is untagged and misleading), and map to exit-code
//!   kinds: authentication → Config, throttling/5xx → Failed with "throttled"/"unavailable".
//! - Volumes are created with a ClientToken so a retried or re-run create never makes two.

pub mod outscale;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::config::VolumeType;
use crate::error::{fail, ErrorKind};
use crate::wait::{poll, Poll, Wait};

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeSpec {
    /// Size, GiB.
    pub size_gib: u64,
    /// Type.
    pub volume_type: VolumeType,
    /// IOPS (io1 only).
    pub iops: Option<u32>,
    /// Subregion (the host VM's).
    pub subregion: String,
    /// Idempotency token: the same token always yields the same volume.
    pub client_token: String,
}

/// A volume's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeState {
    /// Being created.
    Creating,
    /// Ready, not linked.
    Available,
    /// Linked to a VM.
    InUse,
    /// Being deleted.
    Deleting,
    /// Failed.
    Error,
    /// Anything else the API says.
    Other(String),
}

impl VolumeState {
    fn parse(s: &str) -> VolumeState {
        match s {
            "creating" => VolumeState::Creating,
            "available" => VolumeState::Available,
            "in-use" => VolumeState::InUse,
            "deleting" => VolumeState::Deleting,
            "error" => VolumeState::Error,
            o => VolumeState::Other(o.to_string()),
        }
    }

    /// The API spelling.
    pub fn as_str(&self) -> &str {
        match self {
            VolumeState::Creating => "creating",
            VolumeState::Available => "available",
            VolumeState::InUse => "in-use",
            VolumeState::Deleting => "deleting",
            VolumeState::Error => "error",
            VolumeState::Other(s) => s,
        }
    }
}

impl fmt::Display for VolumeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A link's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkState {
    /// Being attached.
    Attaching,
    /// Attached.
    Attached,
    /// Being detached.
    Detaching,
    /// Detached.
    Detached,
    /// Anything else.
    Other(String),
}

impl LinkState {
    fn parse(s: &str) -> LinkState {
        match s {
            "attaching" => LinkState::Attaching,
            "attached" => LinkState::Attached,
            "detaching" => LinkState::Detaching,
            "detached" => LinkState::Detached,
            o => LinkState::Other(o.to_string()),
        }
    }

    /// The API spelling.
    pub fn as_str(&self) -> &str {
        match self {
            LinkState::Attaching => "attaching",
            LinkState::Attached => "attached",
            LinkState::Detaching => "detaching",
            LinkState::Detached => "detached",
            LinkState::Other(s) => s,
        }
    }
}

/// A volume's link to a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// The VM.
    pub vm_id: String,
    /// Device name (`/dev/xvdb`).
    pub device: String,
    /// State.
    pub state: LinkState,
}

/// A volume as the cloud reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// `vol-…`.
    pub id: String,
    /// State.
    pub state: VolumeState,
    /// Size, GiB.
    pub size_gib: u64,
    /// Type name.
    pub volume_type: String,
    /// IOPS.
    pub iops: Option<u32>,
    /// Subregion.
    pub subregion: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Links (at most one in practice).
    pub links: Vec<Link>,
    /// The ClientToken it was created with.
    pub client_token: Option<String>,
}

impl Volume {
    /// The link to `vm_id`, if any.
    pub fn link_to(&self, vm_id: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.vm_id == vm_id)
    }

    /// The first link that is attaching or attached (a volume is usable by one VM at a time).
    pub fn active_link(&self) -> Option<&Link> {
        self.links
            .iter()
            .find(|l| matches!(l.state, LinkState::Attaching | LinkState::Attached))
    }
}

/// One entry of a VM's block device mappings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmDevice {
    /// Device name.
    pub device: String,
    /// The volume.
    pub volume_id: String,
    /// Link state.
    pub state: String,
}

/// A VM as the cloud reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vm {
    /// `i-…`.
    pub id: String,
    /// Subregion.
    pub subregion: String,
    /// running, stopped…
    pub state: String,
    /// Block device mappings, root included.
    pub devices: Vec<VmDevice>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// A volume search; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct VolumeFilter {
    /// Volume ids.
    pub ids: Vec<String>,
    /// Tags `k=v`.
    pub tags: Vec<(String, String)>,
    /// Tag keys present.
    pub tag_keys: Vec<String>,
    /// States.
    pub states: Vec<String>,
    /// ClientTokens.
    pub client_tokens: Vec<String>,
    /// Linked to these VMs.
    pub linked_vm_ids: Vec<String>,
}

/// The calls the driver makes.
pub trait Cloud: Send + Sync {
    /// CreateVolume with the spec's ClientToken.
    fn create_volume(&self, spec: &VolumeSpec) -> anyhow::Result<Volume>;
    /// CreateTags on volumes or VMs (overwrites values of existing keys).
    fn create_tags(&self, resource_ids: &[String], tags: &[(String, String)])
        -> anyhow::Result<()>;
    /// DeleteTags.
    fn delete_tags(&self, resource_ids: &[String], tags: &[(String, String)])
        -> anyhow::Result<()>;
    /// ReadVolumes (all pages).
    fn find_volumes(&self, filter: &VolumeFilter) -> anyhow::Result<Vec<Volume>>;
    /// LinkVolume.
    fn link_volume(&self, volume_id: &str, vm_id: &str, device: &str) -> anyhow::Result<()>;
    /// UnlinkVolume.
    fn unlink_volume(&self, volume_id: &str, force: bool) -> anyhow::Result<()>;
    /// DeleteVolume.
    fn delete_volume(&self, volume_id: &str) -> anyhow::Result<()>;
    /// ReadVms for one VM.
    fn vm(&self, vm_id: &str) -> anyhow::Result<Vm>;

    /// One volume by id, `None` when it does not exist.
    fn volume(&self, id: &str) -> anyhow::Result<Option<Volume>> {
        let mut v = self.find_volumes(&VolumeFilter {
            ids: vec![id.to_string()],
            ..Default::default()
        })?;
        Ok(v.pop())
    }
}

/// A failed API call.
#[derive(Debug, Clone, thiserror::Error)]
pub struct CloudError {
    /// The call (`CreateVolume`).
    pub call: &'static str,
    /// HTTP status, when a response came.
    pub status: Option<u16>,
    /// Outscale error code.
    pub code: Option<String>,
    /// Outscale error type.
    pub error_type: Option<String>,
    /// Details or transport error text.
    pub details: String,
}

impl fmt::Display for CloudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Outscale {} failed", self.call)?;
        if let Some(s) = self.status {
            write!(f, " (HTTP {s}")?;
            if let Some(c) = &self.code {
                write!(f, ", code {c}")?;
            }
            if let Some(t) = &self.error_type {
                write!(f, " {t}")?;
            }
            write!(f, ")")?;
        }
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        if matches!(self.status, Some(429) | Some(503)) {
            write!(f, " — throttled by the API even after the SDK's retries; try again later or lower cloud.requests_per_second")?;
        }
        Ok(())
    }
}

impl CloudError {
    /// The kind for the exit code.
    pub fn kind(&self) -> ErrorKind {
        match self.status {
            Some(401) | Some(403) => ErrorKind::Config,
            _ => ErrorKind::Failed,
        }
    }

    /// Wraps into a classified error.
    pub fn into_error(self) -> anyhow::Error {
        let kind = self.kind();
        fail(kind, self.to_string())
    }

    /// Whether the API said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
            || self
                .error_type
                .as_deref()
                .is_some_and(|t| t.contains("NotFound"))
    }
}

/// Waits until volume `id` is in `want`; fails at once on `error`/`deleting`/disappearance.
pub fn wait_volume(
    cloud: &dyn Cloud,
    id: &str,
    want: VolumeState,
    wait: Wait,
) -> anyhow::Result<Volume> {
    poll(&format!("volume {id} to be {want}"), wait, || {
        let Some(v) = cloud.volume(id)? else {
            return Err(fail(ErrorKind::Failed, format!("volume {id} disappeared")));
        };
        if v.state == want {
            return Ok(Poll::Ready(v));
        }
        if matches!(v.state, VolumeState::Error | VolumeState::Deleting)
            && want != VolumeState::Deleting
        {
            return Err(fail(
                ErrorKind::Failed,
                format!("volume {id} is in state {}", v.state),
            ));
        }
        Ok(Poll::Pending(v.state.to_string()))
    })
}

/// Waits until volume `id` is attached to `vm_id`.
pub fn wait_link(cloud: &dyn Cloud, id: &str, vm_id: &str, wait: Wait) -> anyhow::Result<Volume> {
    poll(
        &format!("volume {id} to be attached to {vm_id}"),
        wait,
        || {
            let Some(v) = cloud.volume(id)? else {
                return Err(fail(ErrorKind::Failed, format!("volume {id} disappeared")));
            };
            match v.link_to(vm_id) {
                Some(l) if l.state == LinkState::Attached => Ok(Poll::Ready(v)),
                Some(l) if l.state == LinkState::Attaching => Ok(Poll::Pending("attaching".into())),
                Some(l) => Err(fail(
                    ErrorKind::Failed,
                    format!("volume {id} link to {vm_id} is {}", l.state.as_str()),
                )),
                None => Err(fail(
                    ErrorKind::Failed,
                    format!("volume {id} is no longer linked to {vm_id}"),
                )),
            }
        },
    )
}

/// Waits until volume `id` has no link left (state `available`).
pub fn wait_unlinked(cloud: &dyn Cloud, id: &str, wait: Wait) -> anyhow::Result<Volume> {
    poll(&format!("volume {id} to be unlinked"), wait, || {
        let Some(v) = cloud.volume(id)? else {
            return Err(fail(ErrorKind::Failed, format!("volume {id} disappeared")));
        };
        if v.links.iter().all(|l| l.state == LinkState::Detached)
            && v.state == VolumeState::Available
        {
            return Ok(Poll::Ready(v));
        }
        let seen = v
            .links
            .first()
            .map(|l| l.state.as_str().to_string())
            .unwrap_or_else(|| v.state.to_string());
        Ok(Poll::Pending(seen))
    })
}
