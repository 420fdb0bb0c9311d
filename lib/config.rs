//! Configuration, read once per process.
//!
//! Three sources, each with one job:
//! 1. the **frontend file** (`/etc/one/bsud.toml`, or `$BSUD_CONFIG`): how this site runs the
//!    driver — ssh, paths, deadlines, logging. Every key is optional; see [`FileConfig`] and
//!    README.md ("Configuration") for the list. Unknown keys are an error (a typo must not be
//!    silently ignored).
//! 2. **Outscale credentials the Outscale way**: `OSC_ACCESS_KEY`, `OSC_SECRET_KEY`,
//!    `OSC_REGION`, `OSC_ENDPOINT_API`, `OSC_PROFILE`, `OSC_CONFIG_FILE` over the profile in
//!    `~/.osc/config.json`. Resolved only by actions that call the cloud ([`CloudSettings::resolve`]),
//!    never logged (the secret is redacted from `Debug`).
//! 3. **per-datastore `BSUD_*` attributes** from the datastore template ([`DriveSettings`]),
//!    with defaults; an invalid value is a [`ErrorKind::Config`] error naming the attribute.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::error::{fail, ErrorKind};
use crate::exec::ssh::SshCommand;
use crate::one::template::Template;

/// Where the frontend file is looked for when `$BSUD_CONFIG` is not set.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/one/bsud.toml";

/// The frontend file as written (all keys optional).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Name oned uses for the frontend in TM arguments (oned.conf HOSTNAME); default: this
    /// machine's host name. Paths on this host are handled locally, not over ssh.
    pub frontend_host: Option<String>,
    /// Prefix applied to every frontend filesystem path (VM directories, datastores). `/` in
    /// production; the testbed gives each simulated machine its own root.
    pub frontend_root: Option<PathBuf>,
    /// The ssh client command line, e.g. `["ssh", "-o", "BatchMode=yes"]`.
    pub ssh_command: Option<Vec<String>>,
    /// Path of the `one-bsud` binary on the hosts (installed by `install.sh --node`, or
    /// shipped by `onehost sync`).
    pub host_agent: Option<String>,
    /// Frontend lock directory (drive locks).
    pub lock_dir: Option<PathBuf>,
    /// Command printing a VM's XML: `<cmd…> <vmid>`; default `["onevm", "show", "-x"]`.
    pub onevm_command: Option<Vec<String>>,
    /// Command printing a datastore's XML: default `["onedatastore", "show", "-x"]`.
    pub onedatastore_command: Option<Vec<String>>,
    /// Command printing every host's XML (`doctor` checks them): default
    /// `["onehost", "list", "-x"]`.
    pub onehost_command: Option<Vec<String>>,
    /// Log level on stderr: error, warn, info, debug, trace (`RUST_LOG` overrides).
    pub log_level: Option<String>,
    /// Also log to journald when its socket exists (default true).
    pub journald: Option<bool>,
    /// Wrap the final error in the `ERROR MESSAGE --8<------` markers OpenNebula ≤ 6.0.2 needs.
    pub error_markers: Option<bool>,
    /// Relay host-to-host copies through the frontend instead of host-to-host ssh.
    pub relay_via_frontend: Option<bool>,
    /// Compress host-to-host streams with zstd (worth it on links slower than ~200 MB/s).
    pub compress: Option<bool>,
    /// oned's remotes directory on the frontend, where the other transfer managers live
    /// (`<remotes_dir>/tm/<tm>/premigrate`): live migration calls them for their disks.
    /// Default `$ONE_LOCATION/var/remotes` when ONE_LOCATION is set, else
    /// `/var/lib/one/remotes`.
    pub remotes_dir: Option<PathBuf>,
    /// Deadlines, in seconds.
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    /// Outscale API settings (not credentials).
    #[serde(default)]
    pub cloud: CloudFile,
}

/// `[timeouts]` (seconds).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    /// Waiting for a drive or VG lock.
    pub lock: Option<u64>,
    /// A new volume becoming `available`.
    pub volume_create: Option<u64>,
    /// A link becoming `attached`.
    pub volume_link: Option<u64>,
    /// The device appearing on the host after `attached`.
    pub device: Option<u64>,
    /// An unlink completing.
    pub volume_unlink: Option<u64>,
    /// One host command (LVM, mkfs, …).
    pub command: Option<u64>,
    /// One data copy (send/recv) between hosts.
    pub transfer: Option<u64>,
    /// Interval between cloud state polls, in milliseconds.
    pub poll_interval_ms: Option<u64>,
}

/// `[cloud]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CloudFile {
    /// Profile of `~/.osc/config.json` (`OSC_PROFILE` overrides).
    pub profile: Option<String>,
    /// Path of the profiles file (`OSC_CONFIG_FILE` overrides).
    pub config_file: Option<PathBuf>,
    /// API endpoint (`OSC_ENDPOINT_API` overrides), normalised to `https://…/api/v1`.
    pub endpoint: Option<String>,
    /// Region (`OSC_REGION` overrides).
    pub region: Option<String>,
    /// Client-side request rate limit (the SDK's limiter).
    pub requests_per_second: Option<u32>,
    /// Retries of the SDK on 409/429/5xx/transport errors.
    pub max_retries: Option<u32>,
}

/// Deadlines.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timeouts {
    /// Lock waits.
    pub lock: Duration,
    /// creating → available.
    pub volume_create: Duration,
    /// attaching → attached.
    pub volume_link: Duration,
    /// Device node after attach.
    pub device: Duration,
    /// detaching → available.
    pub volume_unlink: Duration,
    /// One host command.
    pub command: Duration,
    /// One data copy.
    pub transfer: Duration,
    /// Poll interval for cloud states.
    pub poll_interval: Duration,
}

/// The resolved configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file that was read, if any.
    pub path: Option<PathBuf>,
    /// Frontend host name as oned writes it.
    pub frontend_host: String,
    /// Prefix of frontend paths.
    pub frontend_root: PathBuf,
    /// ssh client.
    #[serde(serialize_with = "ser_ssh")]
    pub ssh: SshCommand,
    /// Agent path on hosts.
    pub host_agent: String,
    /// Frontend lock directory.
    pub lock_dir: PathBuf,
    /// VM XML command.
    pub onevm_command: Vec<String>,
    /// Datastore XML command.
    pub onedatastore_command: Vec<String>,
    /// Host list XML command.
    pub onehost_command: Vec<String>,
    /// Log level.
    pub log_level: String,
    /// journald on/off.
    pub journald: bool,
    /// ≤ 6.0 error markers.
    pub error_markers: bool,
    /// Relay copies through the frontend.
    pub relay_via_frontend: bool,
    /// zstd on streams.
    pub compress: bool,
    /// oned's remotes directory (other transfer managers).
    pub remotes_dir: PathBuf,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// Cloud settings.
    pub cloud: CloudSettings,
}

fn ser_ssh<S: serde::Serializer>(s: &SshCommand, ser: S) -> Result<S::Ok, S::Error> {
    s.0.serialize(ser)
}

/// Environment the configuration is read from (passed in so tests never touch the process
/// environment).
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// The process environment.
    pub fn from_process() -> Env {
        Env {
            vars: std::env::vars().collect(),
        }
    }

    /// A given environment.
    pub fn from_pairs<I, K, V>(pairs: I) -> Env
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// A variable, if set and not empty.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.vars
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

impl Config {
    /// Reads `$BSUD_CONFIG` (must exist) or [`DEFAULT_CONFIG_PATH`] (may be absent).
    pub fn load(env: &Env) -> anyhow::Result<Config> {
        let (path, required) = match env.get("BSUD_CONFIG") {
            Some(p) => (PathBuf::from(p), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => Some(Self::parse_file(&text, &path)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => None,
            Err(e) => {
                return Err(fail(
                    ErrorKind::Config,
                    format!("cannot read configuration {}: {e}", path.display()),
                ))
            }
        };
        let read = file.is_some().then_some(path);
        Ok(Self::resolve(file.unwrap_or_default(), read, env))
    }

    fn parse_file(text: &str, path: &Path) -> anyhow::Result<FileConfig> {
        toml::from_str(text).map_err(|e| {
            fail(
                ErrorKind::Config,
                format!("configuration {}: {}", path.display(), e.message()),
            )
        })
    }

    /// Builds the configuration from a parsed file and the environment.
    pub fn resolve(f: FileConfig, path: Option<PathBuf>, env: &Env) -> Config {
        let secs = |v: Option<u64>, d: u64| Duration::from_secs(v.unwrap_or(d));
        let t = &f.timeouts;
        Config {
            path,
            frontend_host: f.frontend_host.clone().unwrap_or_else(local_hostname),
            frontend_root: f
                .frontend_root
                .clone()
                .unwrap_or_else(|| PathBuf::from("/")),
            ssh: f.ssh_command.clone().map(SshCommand).unwrap_or_default(),
            host_agent: f
                .host_agent
                .clone()
                .unwrap_or_else(|| "/var/tmp/one/tm/bsud/one-bsud".to_string()),
            lock_dir: f
                .lock_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/var/lock/one/bsud")),
            onevm_command: f
                .onevm_command
                .clone()
                .unwrap_or_else(|| vec!["onevm".into(), "show".into(), "-x".into()]),
            onedatastore_command: f
                .onedatastore_command
                .clone()
                .unwrap_or_else(|| vec!["onedatastore".into(), "show".into(), "-x".into()]),
            onehost_command: f
                .onehost_command
                .clone()
                .unwrap_or_else(|| vec!["onehost".into(), "list".into(), "-x".into()]),
            log_level: f.log_level.clone().unwrap_or_else(|| "info".into()),
            journald: f.journald.unwrap_or(true),
            error_markers: f.error_markers.unwrap_or(false),
            relay_via_frontend: f.relay_via_frontend.unwrap_or(false),
            compress: f.compress.unwrap_or(false),
            remotes_dir: f.remotes_dir.clone().unwrap_or_else(|| {
                env.get("ONE_LOCATION")
                    .map(|l| Path::new(l).join("var/remotes"))
                    .unwrap_or_else(|| PathBuf::from("/var/lib/one/remotes"))
            }),
            timeouts: Timeouts {
                lock: secs(t.lock, 900),
                volume_create: secs(t.volume_create, 300),
                volume_link: secs(t.volume_link, 300),
                device: secs(t.device, 120),
                volume_unlink: secs(t.volume_unlink, 300),
                command: secs(t.command, 600),
                transfer: secs(t.transfer, 6 * 3600),
                poll_interval: Duration::from_millis(t.poll_interval_ms.unwrap_or(1000)),
            },
            cloud: CloudSettings {
                profile: env
                    .get("OSC_PROFILE")
                    .map(str::to_string)
                    .or_else(|| f.cloud.profile.clone())
                    .unwrap_or_else(|| "default".into()),
                config_file: env
                    .get("OSC_CONFIG_FILE")
                    .map(PathBuf::from)
                    .or_else(|| f.cloud.config_file.clone())
                    .or_else(|| {
                        env.get("HOME")
                            .map(|h| Path::new(h).join(".osc/config.json"))
                    }),
                endpoint: env
                    .get("OSC_ENDPOINT_API")
                    .map(str::to_string)
                    .or_else(|| f.cloud.endpoint.clone()),
                region: env
                    .get("OSC_REGION")
                    .map(str::to_string)
                    .or_else(|| f.cloud.region.clone()),
                protocol: env.get("OSC_PROTOCOL").map(str::to_string),
                access_key: env.get("OSC_ACCESS_KEY").map(str::to_string),
                secret_key: env.get("OSC_SECRET_KEY").map(|s| Secret(s.to_string())),
                requests_per_second: f.cloud.requests_per_second.unwrap_or(5),
                max_retries: f.cloud.max_retries.unwrap_or(3),
            },
        }
    }
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// A secret string: never printed.
#[derive(Clone)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Cloud settings before credentials are resolved.
#[derive(Debug, Clone, Serialize)]
pub struct CloudSettings {
    /// Profile name.
    pub profile: String,
    /// Profiles file.
    pub config_file: Option<PathBuf>,
    /// Endpoint override.
    pub endpoint: Option<String>,
    /// Region override.
    pub region: Option<String>,
    /// `OSC_PROTOCOL` (http/https) for scheme-less endpoints.
    pub protocol: Option<String>,
    /// `OSC_ACCESS_KEY`.
    pub access_key: Option<String>,
    /// `OSC_SECRET_KEY`.
    pub secret_key: Option<Secret>,
    /// Client rate limit.
    pub requests_per_second: u32,
    /// SDK retries.
    pub max_retries: u32,
}

/// Credentials and endpoint, ready for the client.
#[derive(Debug, Clone)]
pub struct CloudCredentials {
    /// Full API base URL, `…/api/v1`.
    pub endpoint: String,
    /// Region (signing).
    pub region: String,
    /// Access key.
    pub access_key: String,
    /// Secret key.
    pub secret_key: Secret,
    /// Client rate limit.
    pub requests_per_second: u32,
    /// SDK retries.
    pub max_retries: u32,
}

#[derive(Debug, Default, Deserialize)]
struct OscProfile {
    access_key: Option<String>,
    secret_key: Option<String>,
    region: Option<String>,
    protocol: Option<String>,
    #[serde(default)]
    endpoints: BTreeMap<String, String>,
}

impl CloudSettings {
    /// Resolves credentials: environment over the profile file; errors name what is missing.
    pub fn resolve(&self) -> anyhow::Result<CloudCredentials> {
        let profile = self.read_profile()?;
        let access_key = self
            .access_key
            .clone()
            .or(profile.access_key)
            .ok_or_else(|| {
                fail(
                    ErrorKind::Config,
                    format!(
                        "no Outscale access key: set OSC_ACCESS_KEY or profile {:?} in {}",
                        self.profile,
                        self.config_file_display()
                    ),
                )
            })?;
        let secret_key = self
            .secret_key
            .clone()
            .or(profile.secret_key.map(Secret))
            .ok_or_else(|| {
                fail(
                    ErrorKind::Config,
                    format!(
                        "no Outscale secret key: set OSC_SECRET_KEY or profile {:?} in {}",
                        self.profile,
                        self.config_file_display()
                    ),
                )
            })?;
        let region = self
            .region
            .clone()
            .or(profile.region)
            .unwrap_or_else(|| "eu-west-2".into());
        let protocol = self
            .protocol
            .clone()
            .or(profile.protocol)
            .unwrap_or_else(|| "https".into());
        let endpoint = match self
            .endpoint
            .clone()
            .or_else(|| profile.endpoints.get("api").cloned())
        {
            Some(e) => normalize_endpoint(&e, &protocol)?,
            None => format!("{protocol}://api.{region}.outscale.com/api/v1"),
        };
        Ok(CloudCredentials {
            endpoint,
            region,
            access_key,
            secret_key,
            requests_per_second: self.requests_per_second.max(1),
            max_retries: self.max_retries,
        })
    }

    fn config_file_display(&self) -> String {
        self.config_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "~/.osc/config.json".into())
    }

    fn read_profile(&self) -> anyhow::Result<OscProfile> {
        let Some(path) = &self.config_file else {
            return Ok(OscProfile::default());
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OscProfile::default()),
            Err(e) => {
                return Err(fail(
                    ErrorKind::Config,
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
        };
        let mut all: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| {
                fail(
                    ErrorKind::Config,
                    format!("{}: invalid JSON: {e}", path.display()),
                )
            })?;
        match all.remove(&self.profile) {
            None => Ok(OscProfile::default()),
            Some(v) => serde_json::from_value(v)
                .with_context(|| format!("{}: profile {:?}", path.display(), self.profile))
                .map_err(|e| fail(ErrorKind::Config, format!("{e:#}"))),
        }
    }
}

/// `OSC_ENDPOINT_API` comes in several shapes depending on the tool that wrote it
/// (`host:port`, `host/api/v1`, `http://host:port`); the SDK needs the full URL.
pub fn normalize_endpoint(e: &str, protocol: &str) -> anyhow::Result<String> {
    let e = e.trim().trim_end_matches('/');
    if e.is_empty() || e.chars().any(char::is_whitespace) {
        return Err(fail(
            ErrorKind::Config,
            format!("invalid Outscale endpoint {e:?}"),
        ));
    }
    let with_scheme = if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else {
        format!("{protocol}://{e}")
    };
    Ok(if with_scheme.ends_with("/api/v1") {
        with_scheme
    } else {
        format!("{with_scheme}/api/v1")
    })
}

/// BSU volume types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    /// Magnetic.
    Standard,
    /// General purpose SSD.
    Gp2,
    /// Provisioned IOPS.
    Io1,
}

impl VolumeType {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeType::Standard => "standard",
            VolumeType::Gp2 => "gp2",
            VolumeType::Io1 => "io1",
        }
    }
}

/// Largest BSU volume, GiB.
pub const MAX_VOLUME_GIB: u64 = 14_901;
/// Most volumes a VM can have, root included.
pub const MAX_VOLUMES_PER_VM: u32 = 40;
/// io1 IOPS cap per volume.
pub const MAX_IO1_IOPS: u32 = 13_000;
/// io1 IOPS per GiB cap.
pub const MAX_IOPS_PER_GIB: u32 = 300;

/// A drive's growth policy, from the datastore's `BSUD_*` attributes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriveSettings {
    /// `BSUD_VOLUME_TYPE` (standard, gp2, io1; default gp2).
    pub volume_type: VolumeType,
    /// `BSUD_IOPS_PER_GIB` (io1 only; 1–300; default 100): IOPS = min(size × this, 13,000).
    pub iops_per_gib: u32,
    /// `BSUD_MIN_VOLUME_GIB` (default 10): smallest BSU created.
    pub min_volume_gib: u64,
    /// `BSUD_GROWTH_FACTOR` (1.0–10; default 1.5): a new BSU is at least this × the largest.
    pub growth_factor: f64,
    /// `BSUD_HEADROOM_GIB` (default 2): free space kept in the VG after an allocation.
    pub headroom_gib: u64,
    /// `BSUD_MAX_VOLUMES` (1–39; default 16): BSUs in this drive.
    pub max_volumes: u32,
    /// `BSUD_MAX_SIZE_GIB` (default 4096): capacity limit of the drive; monitor reports it as TOTAL.
    pub max_size_gib: u64,
    /// `BSUD_SHRINK` (YES/NO; default YES): release empty BSUs after removals.
    pub shrink: bool,
    /// `BSUD_IMAGE_HOST`: host holding an image datastore's drive (default: first BRIDGE_LIST host).
    pub image_host: Option<String>,
    /// `BSUD_THIN` (YES/NO; default NO): LVs are thin volumes of one pool per drive; clones of
    /// cached images and disk snapshots are instant thin snapshots.
    pub thin: bool,
    /// `BSUD_OVERCOMMIT` (1.0–100; default 2): thin volumes may add up to this × the drive's
    /// `BSUD_MAX_SIZE_GIB`; an allocation past it is refused before anything is created.
    pub overcommit: f64,
    /// `BSUD_POOL_GROW_PERCENT` (10–95; default 80): the thin pool's data or metadata usage at
    /// which the drive grows the pool (adding a BSU when the VG has no room).
    pub pool_grow_percent: u32,
}

impl Default for DriveSettings {
    fn default() -> Self {
        DriveSettings {
            volume_type: VolumeType::Gp2,
            iops_per_gib: 100,
            min_volume_gib: 10,
            growth_factor: 1.5,
            headroom_gib: 2,
            max_volumes: 16,
            max_size_gib: 4096,
            shrink: true,
            image_host: None,
            thin: false,
            overcommit: 2.0,
            pool_grow_percent: 80,
        }
    }
}

impl DriveSettings {
    /// Reads and validates the `BSUD_*` attributes of a datastore template.
    pub fn from_template(t: &Template) -> anyhow::Result<DriveSettings> {
        let d = DriveSettings::default();
        let get = |k: &str| t.get_nonempty(k).map(str::trim);
        let bad = |k: &str, v: &str, why: &str| {
            fail(
                ErrorKind::Config,
                format!("datastore attribute {k} = {v:?}: {why}"),
            )
        };
        let int = |k: &str, lo: u64, hi: u64, default: u64| -> anyhow::Result<u64> {
            match get(k) {
                None => Ok(default),
                Some(v) => {
                    let n: u64 = v.parse().map_err(|_| bad(k, v, "not a whole number"))?;
                    if n < lo || n > hi {
                        return Err(bad(k, v, &format!("must be between {lo} and {hi}")));
                    }
                    Ok(n)
                }
            }
        };
        let volume_type = match get("BSUD_VOLUME_TYPE") {
            None => d.volume_type,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "standard" => VolumeType::Standard,
                "gp2" => VolumeType::Gp2,
                "io1" => VolumeType::Io1,
                _ => return Err(bad("BSUD_VOLUME_TYPE", v, "must be standard, gp2 or io1")),
            },
        };
        let growth_factor = match get("BSUD_GROWTH_FACTOR") {
            None => d.growth_factor,
            Some(v) => {
                let f: f64 = v
                    .parse()
                    .map_err(|_| bad("BSUD_GROWTH_FACTOR", v, "not a number"))?;
                if !(1.0..=10.0).contains(&f) {
                    return Err(bad("BSUD_GROWTH_FACTOR", v, "must be between 1.0 and 10"));
                }
                f
            }
        };
        let yes_no = |k: &str, default: bool| -> anyhow::Result<bool> {
            match get(k) {
                None => Ok(default),
                Some(v) => match v.to_ascii_uppercase().as_str() {
                    "YES" | "TRUE" | "1" => Ok(true),
                    "NO" | "FALSE" | "0" => Ok(false),
                    _ => Err(bad(k, v, "must be YES or NO")),
                },
            }
        };
        let shrink = yes_no("BSUD_SHRINK", d.shrink)?;
        let thin = yes_no("BSUD_THIN", d.thin)?;
        let overcommit = match get("BSUD_OVERCOMMIT") {
            None => d.overcommit,
            Some(v) => {
                let f: f64 = v
                    .parse()
                    .map_err(|_| bad("BSUD_OVERCOMMIT", v, "not a number"))?;
                if !(1.0..=100.0).contains(&f) {
                    return Err(bad("BSUD_OVERCOMMIT", v, "must be between 1.0 and 100"));
                }
                f
            }
        };
        let image_host = match get("BSUD_IMAGE_HOST") {
            None => None,
            Some(h) => {
                crate::exec::ssh::validate_host(h)
                    .map_err(|_| bad("BSUD_IMAGE_HOST", h, "not a valid host name"))?;
                Some(h.to_string())
            }
        };
        let s = DriveSettings {
            volume_type,
            iops_per_gib: int(
                "BSUD_IOPS_PER_GIB",
                1,
                MAX_IOPS_PER_GIB as u64,
                d.iops_per_gib as u64,
            )? as u32,
            min_volume_gib: int("BSUD_MIN_VOLUME_GIB", 1, MAX_VOLUME_GIB, d.min_volume_gib)?,
            growth_factor,
            headroom_gib: int("BSUD_HEADROOM_GIB", 0, MAX_VOLUME_GIB, d.headroom_gib)?,
            max_volumes: int(
                "BSUD_MAX_VOLUMES",
                1,
                (MAX_VOLUMES_PER_VM - 1) as u64,
                d.max_volumes as u64,
            )? as u32,
            max_size_gib: int(
                "BSUD_MAX_SIZE_GIB",
                1,
                MAX_VOLUME_GIB * (MAX_VOLUMES_PER_VM as u64 - 1),
                d.max_size_gib,
            )?,
            shrink,
            image_host,
            thin,
            overcommit,
            pool_grow_percent: int("BSUD_POOL_GROW_PERCENT", 10, 95, d.pool_grow_percent as u64)?
                as u32,
        };
        if s.max_size_gib < s.min_volume_gib {
            return Err(fail(
                ErrorKind::Config,
                format!(
                    "datastore attributes: BSUD_MAX_SIZE_GIB ({}) is smaller than BSUD_MIN_VOLUME_GIB ({})",
                    s.max_size_gib, s.min_volume_gib
                ),
            ));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit_code;

    #[test]
    fn endpoint_shapes() {
        for (given, want) in [
            ("127.0.0.1:3000", "https://127.0.0.1:3000/api/v1"),
            (
                "api.eu-west-2.outscale.com/api/v1",
                "https://api.eu-west-2.outscale.com/api/v1",
            ),
            ("http://127.0.0.1:3000", "http://127.0.0.1:3000/api/v1"),
            (
                "http://127.0.0.1:3000/api/v1/",
                "http://127.0.0.1:3000/api/v1",
            ),
        ] {
            assert_eq!(normalize_endpoint(given, "https").unwrap(), want);
        }
        assert!(normalize_endpoint(" ", "https").is_err());
    }

    #[test]
    fn env_over_profile_and_secret_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.json");
        std::fs::write(
            &f,
            r#"{"default":{"access_key":"AKFILE","secret_key":"SKFILE","region":"us-east-2","endpoints":{"api":"api.us-east-2.outscale.com/api/v1"}}}"#,
        )
        .unwrap();
        let env = Env::from_pairs([
            ("OSC_CONFIG_FILE", f.to_str().unwrap()),
            ("OSC_SECRET_KEY", "SKENV"),
        ]);
        let c = Config::resolve(FileConfig::default(), None, &env);
        let cred = c.cloud.resolve().unwrap();
        assert_eq!(cred.access_key, "AKFILE");
        assert_eq!(cred.secret_key.0, "SKENV");
        assert_eq!(cred.region, "us-east-2");
        assert_eq!(cred.endpoint, "https://api.us-east-2.outscale.com/api/v1");
        let dbg = format!("{cred:?} {c:?} {}", serde_json::to_string(&c).unwrap());
        assert!(!dbg.contains("SKENV") && !dbg.contains("SKFILE"), "{dbg}");
    }

    #[test]
    fn missing_credentials_is_a_config_error() {
        let env = Env::from_pairs([("OSC_CONFIG_FILE", "/nonexistent/x.json")]);
        let c = Config::resolve(FileConfig::default(), None, &env);
        let e = c.cloud.resolve().unwrap_err();
        assert_eq!(exit_code(&e), 3);
        assert!(e.to_string().contains("OSC_ACCESS_KEY"));
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let e = Config::parse_file("ssh_comand = ['ssh']", Path::new("x.toml")).unwrap_err();
        assert_eq!(exit_code(&e), 3);
        assert!(e.to_string().contains("ssh_comand"), "{e}");
    }

    #[test]
    fn drive_settings_defaults_and_errors_name_the_attribute() {
        assert_eq!(
            DriveSettings::from_template(&Template::default()).unwrap(),
            DriveSettings::default()
        );
        let t = Template::from_pairs([
            ("BSUD_VOLUME_TYPE", "io1"),
            ("BSUD_IOPS_PER_GIB", "300"),
            ("BSUD_SHRINK", "no"),
            ("BSUD_THIN", "YES"),
            ("BSUD_OVERCOMMIT", "3.5"),
            ("BSUD_POOL_GROW_PERCENT", "70"),
        ]);
        let s = DriveSettings::from_template(&t).unwrap();
        assert_eq!(
            (s.volume_type, s.iops_per_gib, s.shrink, s.thin),
            (VolumeType::Io1, 300, false, true)
        );
        assert_eq!((s.overcommit, s.pool_grow_percent), (3.5, 70));
        for (k, v) in [
            ("BSUD_VOLUME_TYPE", "ssd"),
            ("BSUD_IOPS_PER_GIB", "301"),
            ("BSUD_GROWTH_FACTOR", "abc"),
            ("BSUD_GROWTH_FACTOR", "0.5"),
            ("BSUD_MAX_VOLUMES", "40"),
            ("BSUD_MIN_VOLUME_GIB", "-1"),
            ("BSUD_SHRINK", "maybe"),
            ("BSUD_THIN", "sometimes"),
            ("BSUD_OVERCOMMIT", "0.5"),
            ("BSUD_OVERCOMMIT", "lots"),
            ("BSUD_POOL_GROW_PERCENT", "99"),
            ("BSUD_IMAGE_HOST", "-oProxy"),
        ] {
            let e = DriveSettings::from_template(&Template::from_pairs([(k, v)])).unwrap_err();
            assert_eq!(exit_code(&e), 3);
            assert!(e.to_string().contains(k), "{e}");
        }
    }
}
