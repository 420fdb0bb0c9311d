//! Agent operations on VM directories (the transfer manager's host side): describe and list
//! entries, point `disk.N` at an LV, remove a disk entry or a whole VM directory, write a file
//! (context ISO, parked-disk marker), and pack/unpack a VM directory as a stream (stop,
//! resume, cold migration).
//!
//! Invariants:
//! - Every path comes from oned (validated by [`VmPath`]: absolute, OpenNebula's alphabet, no
//!   `..`) and is mapped under the host root (`BSUD_HOST_ROOT`); a path whose existing part
//!   resolves outside the root (a symlink escape) is refused. Nothing is ever written through a
//!   symlink: files are written to a temporary name beside the target and renamed over it.
//! - `disk.N` entries are ours: a symlink to an LV node (`<lv dir>/<vg>/<lv>`), a regular file
//!   (the context ISO) or, on the frontend, a *parked-disk marker* ([`ParkedDisk`]) naming the
//!   host whose drive keeps the disk of a stopped/undeployed VM. A VM directory is removed
//!   only when its path has the shape `<…>/<datastore id>/<vm id>`, and never while it holds a
//!   marker unless the caller says it has dealt with them.
//! - Packing skips symlinks and markers (disks move as LVs, never through the archive);
//!   unpacking refuses names with `..`, absolute names, and overwriting a marker or a
//!   directory, and checks the archive's trailer (count, bytes, digest) so a truncated stream
//!   is an error.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use super::agent::Agent;
use super::client::HostClient;
use super::data::LvRef;
use super::env::HostEnv;
use super::proto::{Limits, Request};
use crate::error::{fail, ErrorKind};
use crate::exec::{self, Cmd, Pipe};
use crate::one::output::ActionOutput;

/// Largest file read as a marker candidate (markers are ~150 bytes).
const MARKER_MAX: u64 = 4096;

/// First line of a packed directory.
const PACK_MAGIC: &str = "BSUD-DIR 1";

/// Suffix of temporary files written beside their target.
const TMP_SUFFIX: &str = ".bsud-tmp";

/// A path oned gave us: absolute, normalised, `[A-Za-z0-9._+/@-]`, no `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPath(String);

impl FromStr for VmPath {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<VmPath> {
        Ok(VmPath(crate::one::tm::checked_path(s, "host")?))
    }
}

impl std::fmt::Display for VmPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl VmPath {
    /// The path as oned wrote it (normalised).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a stopped or undeployed VM's disk really is: written at `<frontend>:<vm dir>/disk.N`
/// by `mv` when the VM leaves its host, read back by `mv` (resume), `mvds`, `cpds`, `delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedDisk {
    /// Format version (1); also what tells a marker from any other file.
    pub bsud_parked: u32,
    /// The host whose drive holds the LV.
    pub host: String,
    /// The system datastore of that drive (`vg-one-<ds>`).
    pub ds: i64,
    /// The disk LV (`lv-one-<vm>-<disk>`).
    pub lv: String,
    /// The VM.
    pub vm: i64,
    /// The disk id.
    pub disk: u32,
}

impl ParkedDisk {
    /// Reads a marker from a file's bytes; anything else is `None`.
    pub fn parse(bytes: &[u8]) -> Option<ParkedDisk> {
        serde_json::from_slice::<ParkedDisk>(bytes)
            .ok()
            .filter(|m| m.bsud_parked == 1)
    }
}

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Nothing there.
    Absent,
    /// A regular file.
    File,
    /// A symbolic link (not followed).
    Symlink,
    /// A directory.
    Dir,
    /// Anything else (device, socket…).
    Other,
}

/// One entry of a VM directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// File name.
    pub name: String,
    /// Kind.
    pub kind: EntryKind,
    /// Size (files).
    pub size: u64,
    /// Link target (symlinks).
    pub target: Option<String>,
    /// The parked-disk marker it is, if any.
    pub parked: Option<ParkedDisk>,
}

fn flag(name: &str, v: impl std::fmt::Display) -> String {
    format!("--{name}={v}")
}

/// A request whose only flag is `--path`.
macro_rules! path_request {
    ($(#[$doc:meta])* $name:ident, $op:literal, $resp:ty, moves_data: $md:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Args)]
        pub struct $name {
            /// The path as oned names it.
            #[arg(long)]
            pub path: VmPath,
        }

        impl Request for $name {
            const OP: &'static str = $op;
            const LOCKS: bool = false;
            const MOVES_DATA: bool = $md;
            type Response = $resp;
            fn args(&self) -> Vec<String> {
                vec![flag("path", &self.path)]
            }
        }
    };
}

path_request!(
    /// `host vm-stat`: what a path is.
    VmStatReq, "vm-stat", Entry, moves_data: false
);
path_request!(
    /// `host vm-list`: the entries of a directory.
    VmListReq, "vm-list", VmListing, moves_data: false
);
path_request!(
    /// `host remove-disk`: remove a `disk.N` entry (link, context file or marker).
    RemoveDiskReq, "remove-disk", Removed, moves_data: false
);
path_request!(
    /// `host pack-dir`: the VM directory's files as a stream on stdout.
    PackDirReq, "pack-dir", Unpacked, moves_data: true
);
path_request!(
    /// `host unpack-dir`: a packed stream from stdin into a VM directory (merged).
    UnpackDirReq, "unpack-dir", Unpacked, moves_data: true
);

/// `vm-list`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmListing {
    /// Whether the directory exists.
    pub exists: bool,
    /// Its entries, sorted by name.
    pub entries: Vec<Entry>,
}

/// `host link-disk`: make `<vm dir>/disk.N` a symlink to an LV's node.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct LinkDiskReq {
    /// `<vm dir>/disk.N`.
    #[arg(long)]
    pub path: VmPath,
    /// The LV (`vg/lv`), which must be ours.
    #[arg(long)]
    pub lv: LvRef,
}

/// `link-disk`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Linked {
    /// The link.
    pub path: String,
    /// Its target.
    pub target: String,
    /// false: it already pointed there.
    pub changed: bool,
}

impl Request for LinkDiskReq {
    const OP: &'static str = "link-disk";
    const LOCKS: bool = false;
    type Response = Linked;
    fn args(&self) -> Vec<String> {
        vec![flag("path", &self.path), flag("lv", &self.lv)]
    }
}

/// `remove-disk`/`remove-dir`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// The path.
    pub path: String,
    /// false: it was already absent.
    pub removed: bool,
}

/// `host remove-dir`: remove a VM directory and everything in it.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RemoveDirReq {
    /// `<datastores>/<ds id>/<vm id>`.
    #[arg(long)]
    pub path: VmPath,
    /// Remove it even if it holds parked-disk markers (the caller dealt with their disks).
    #[arg(long)]
    pub with_parked: bool,
}

impl Request for RemoveDirReq {
    const OP: &'static str = "remove-dir";
    const LOCKS: bool = false;
    type Response = Removed;
    fn args(&self) -> Vec<String> {
        let mut a = vec![flag("path", &self.path)];
        if self.with_parked {
            a.push("--with-parked".into());
        }
        a
    }
}

/// `host put-file`: write stdin to a file atomically (never through a symlink).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct PutFileReq {
    /// The file.
    #[arg(long)]
    pub path: VmPath,
    /// Permission bits, octal.
    #[arg(long, default_value = "644", value_parser = parse_mode)]
    pub mode: u32,
}

fn parse_mode(s: &str) -> anyhow::Result<u32> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            fail(
                ErrorKind::BadInput,
                format!("mode {s:?} is not octal 0-777"),
            )
        })
}

/// `put-file`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    /// The file.
    pub path: String,
    /// Bytes written.
    pub bytes: u64,
}

impl Request for PutFileReq {
    const OP: &'static str = "put-file";
    const LOCKS: bool = false;
    const MOVES_DATA: bool = true;
    type Response = Put;
    fn args(&self) -> Vec<String> {
        vec![flag("path", &self.path), format!("--mode={:o}", self.mode)]
    }
}

/// What `unpack-dir` wrote (also the trailer of a packed stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unpacked {
    /// Files and directories.
    pub entries: u64,
    /// File bytes.
    pub bytes: u64,
    /// blake3 of the file bytes in stream order.
    pub digest: String,
}

/// `host domain-pause`: suspend or resume a libvirt domain (point-in-time live snapshots).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct DomainPauseReq {
    /// The domain (DEPLOY_ID, `one-<vm>`): `[A-Za-z0-9_.-]`.
    #[arg(long, value_parser = parse_domain)]
    pub domain: String,
    /// Resume instead of suspend.
    #[arg(long)]
    pub resume: bool,
}

fn parse_domain(s: &str) -> anyhow::Result<String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(fail(
            ErrorKind::BadInput,
            format!("{s:?} is not a libvirt domain name"),
        ))
    }
}

/// `domain-pause`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainPaused {
    /// Whether virsh did it.
    pub done: bool,
    /// Why not.
    pub reason: Option<String>,
}

impl Request for DomainPauseReq {
    const OP: &'static str = "domain-pause";
    const LOCKS: bool = false;
    type Response = DomainPaused;
    fn args(&self) -> Vec<String> {
        let mut a = vec![flag("domain", &self.domain)];
        if self.resume {
            a.push("--resume".into());
        }
        a
    }
}

/// VM-directory agent operations (flattened into `one-bsud host …`).
#[derive(Debug, Subcommand)]
#[command(rename_all = "kebab-case")]
pub enum VmCmd {
    /// Describe a path (absent, file, symlink, directory; parked-disk marker).
    VmStat {
        #[command(flatten)]
        req: VmStatReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// List a directory's entries.
    VmList {
        #[command(flatten)]
        req: VmListReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Point `<vm dir>/disk.N` at one of our LVs (activated first).
    LinkDisk {
        #[command(flatten)]
        req: LinkDiskReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Remove a `disk.N` entry (absent is success).
    RemoveDisk {
        #[command(flatten)]
        req: RemoveDiskReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Remove a VM directory (absent is success).
    RemoveDir {
        #[command(flatten)]
        req: RemoveDirReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Write stdin to a file atomically.
    PutFile {
        #[command(flatten)]
        req: PutFileReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Stream a VM directory's files on stdout (no disks, no markers).
    PackDir {
        #[command(flatten)]
        req: PackDirReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Write a packed stream from stdin into a VM directory.
    UnpackDir {
        #[command(flatten)]
        req: UnpackDirReq,
        #[command(flatten)]
        limits: Limits,
    },
    /// Suspend or resume a libvirt domain (no-op when virsh is absent).
    DomainPause {
        #[command(flatten)]
        req: DomainPauseReq,
        #[command(flatten)]
        limits: Limits,
    },
}

impl VmCmd {
    /// The operation name.
    pub fn name(&self) -> &'static str {
        match self {
            VmCmd::VmStat { .. } => VmStatReq::OP,
            VmCmd::VmList { .. } => VmListReq::OP,
            VmCmd::LinkDisk { .. } => LinkDiskReq::OP,
            VmCmd::RemoveDisk { .. } => RemoveDiskReq::OP,
            VmCmd::RemoveDir { .. } => RemoveDirReq::OP,
            VmCmd::PutFile { .. } => PutFileReq::OP,
            VmCmd::PackDir { .. } => PackDirReq::OP,
            VmCmd::UnpackDir { .. } => UnpackDirReq::OP,
            VmCmd::DomainPause { .. } => DomainPauseReq::OP,
        }
    }
}

fn document<T: Serialize>(v: anyhow::Result<T>) -> anyhow::Result<ActionOutput> {
    Ok(ActionOutput::Document(serde_json::to_string(&v?)?))
}

/// Runs a VM-directory operation.
pub fn run(cmd: VmCmd, stdin: &mut dyn Read, host: HostEnv) -> anyhow::Result<ActionOutput> {
    match cmd {
        VmCmd::VmStat { req, .. } => document(stat(&host, &req.path)),
        VmCmd::VmList { req, .. } => document(list(&host, &req.path)),
        VmCmd::LinkDisk { req, limits } => document(link_disk(&Agent::new(host, &limits), &req)),
        VmCmd::RemoveDisk { req, .. } => document(remove_disk(&host, &req.path)),
        VmCmd::RemoveDir { req, .. } => document(remove_dir(&host, &req)),
        VmCmd::PutFile { req, .. } => document(put_file(&host, &req, stdin)),
        VmCmd::PackDir { req, .. } => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            pack(&host, &req.path, &mut out)?;
            out.flush()?;
            Ok(ActionOutput::Nothing)
        }
        VmCmd::UnpackDir { req, .. } => document(unpack(&host, &req.path, stdin)),
        VmCmd::DomainPause { req, limits } => document(domain_pause(&req, &limits)),
    }
}

fn refused(msg: String) -> anyhow::Error {
    fail(ErrorKind::Refused, msg)
}

/// Maps an oned path under the host root. The existing part of its parent must resolve (after
/// symlinks) inside the root; the last component is returned unresolved, so callers decide
/// what to do with a symlink there.
pub fn under_root(env: &HostEnv, p: &VmPath) -> anyhow::Result<PathBuf> {
    let root = env
        .root
        .canonicalize()
        .with_context(|| format!("host root {}", env.root.display()))?;
    let rel = p.as_str().trim_start_matches('/');
    if rel.is_empty() {
        return Err(refused(format!("{p}: refusing to work on the root itself")));
    }
    let full = root.join(rel);
    let name = full
        .file_name()
        .map(|n| n.to_owned())
        .ok_or_else(|| refused(format!("{p} has no file name")))?;
    let parent = full.parent().unwrap_or(&root).to_path_buf();
    let mut existing = parent.clone();
    while std::fs::symlink_metadata(&existing).is_err() {
        match existing.parent() {
            Some(up) => existing = up.to_path_buf(),
            None => break,
        }
    }
    let resolved = existing
        .canonicalize()
        .with_context(|| format!("resolving {}", existing.display()))?;
    if !resolved.starts_with(&root) {
        return Err(refused(format!(
            "{p}: {} resolves to {}, outside the host root {}",
            existing.display(),
            resolved.display(),
            root.display()
        )));
    }
    let rest = parent.strip_prefix(&existing).unwrap_or(Path::new(""));
    Ok(resolved.join(rest).join(name))
}

fn entry_of(path: &Path, name: String) -> anyhow::Result<Entry> {
    let mut e = Entry {
        name,
        kind: EntryKind::Absent,
        size: 0,
        target: None,
        parked: None,
    };
    let md = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(e),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let ft = md.file_type();
    if ft.is_symlink() {
        e.kind = EntryKind::Symlink;
        e.target = Some(std::fs::read_link(path)?.to_string_lossy().into_owned());
    } else if ft.is_dir() {
        e.kind = EntryKind::Dir;
    } else if ft.is_file() {
        e.kind = EntryKind::File;
        e.size = md.len();
        if md.len() <= MARKER_MAX {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            e.parked = ParkedDisk::parse(&bytes);
        }
    } else {
        e.kind = EntryKind::Other;
    }
    Ok(e)
}

/// `vm-stat`.
pub fn stat(env: &HostEnv, p: &VmPath) -> anyhow::Result<Entry> {
    let path = under_root(env, p)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    entry_of(&path, name)
}

fn read_entries(dir: &Path) -> anyhow::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        out.push(entry_of(&e.path(), name)?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `vm-list`.
pub fn list(env: &HostEnv, p: &VmPath) -> anyhow::Result<VmListing> {
    let path = under_root(env, p)?;
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(VmListing {
            exists: false,
            entries: Vec::new(),
        }),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        Ok(m) if !m.is_dir() => Err(refused(format!("{p} is not a directory"))),
        Ok(_) => Ok(VmListing {
            exists: true,
            entries: read_entries(&path)?,
        }),
    }
}

/// `disk.N` → N, for names of this shape only.
fn disk_name_id(name: &str) -> Option<u32> {
    crate::one::tm::disk_id_of(name)
}

fn require_disk_path(p: &VmPath) -> anyhow::Result<()> {
    if disk_name_id(p.as_str()).is_none() {
        return Err(fail(
            ErrorKind::BadInput,
            format!("{p} is not a <vm dir>/disk.<n> path"),
        ));
    }
    Ok(())
}

fn create_dirs(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let md = std::fs::symlink_metadata(dir)?;
    if !md.is_dir() {
        return Err(refused(format!("{} is not a directory", dir.display())));
    }
    Ok(())
}

fn tmp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}{TMP_SUFFIX}", std::process::id()))
}

/// Writes `data` to `path` by a temporary file and a rename (never through a symlink).
fn write_atomic(path: &Path, mode: u32, data: &mut dyn Read) -> anyhow::Result<u64> {
    if let Some(dir) = path.parent() {
        create_dirs(dir)?;
    }
    let tmp = tmp_beside(path);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let n = std::io::copy(data, &mut f).with_context(|| format!("writing {}", tmp.display()));
    let n = match n.and_then(|n| f.sync_all().map(|_| n).map_err(Into::into)) {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(n)
}

/// `link-disk`.
pub fn link_disk(a: &Agent, req: &LinkDiskReq) -> anyhow::Result<Linked> {
    require_disk_path(&req.path)?;
    let path = under_root(&a.env, &req.path)?;
    // Activates the LV and waits for its node; refuses an LV that is not ours.
    let target = super::lv::device_of(a, &req.lv.vg, &req.lv.lv, Duration::from_secs(60))?;
    let dir = path.parent().expect("a disk path has a parent");
    create_dirs(dir)?;
    let current = entry_of(&path, String::new())?;
    let changed = match current.kind {
        EntryKind::Symlink if current.target.as_deref() == Some(&*target.to_string_lossy()) => {
            false
        }
        EntryKind::Absent | EntryKind::Symlink | EntryKind::File => {
            let tmp = tmp_beside(&path);
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&target, &tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("renaming into {}", path.display()))?;
            true
        }
        EntryKind::Dir | EntryKind::Other => {
            return Err(refused(format!(
                "{} exists and is not a link or a file: not replacing it",
                req.path
            )))
        }
    };
    if changed {
        tracing::info!("linked {} to {}", req.path, target.display());
    }
    Ok(Linked {
        path: req.path.to_string(),
        target: target.to_string_lossy().into_owned(),
        changed,
    })
}

/// `remove-disk`.
pub fn remove_disk(env: &HostEnv, p: &VmPath) -> anyhow::Result<Removed> {
    require_disk_path(p)?;
    let path = under_root(env, p)?;
    let e = entry_of(&path, String::new())?;
    let removed = match e.kind {
        EntryKind::Absent => false,
        EntryKind::Symlink | EntryKind::File => {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            tracing::info!("removed {p}");
            true
        }
        EntryKind::Dir | EntryKind::Other => {
            return Err(refused(format!("{p} is not a disk link or file")))
        }
    };
    Ok(Removed {
        path: p.to_string(),
        removed,
    })
}

/// Whether `p` has the shape of a VM directory: `…/<ds id>/<vm id>`.
fn is_vm_dir_shape(p: &VmPath) -> bool {
    let mut parts = p.as_str().rsplit('/');
    let numeric =
        |s: Option<&str>| s.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    numeric(parts.next()) && numeric(parts.next())
}

/// `remove-dir`.
pub fn remove_dir(env: &HostEnv, req: &RemoveDirReq) -> anyhow::Result<Removed> {
    let p = &req.path;
    if !is_vm_dir_shape(p) {
        return Err(refused(format!(
            "{p} is not a VM directory (<datastores>/<datastore id>/<vm id>): not removing it"
        )));
    }
    let listing = list(env, p)?;
    if !listing.exists {
        return Ok(Removed {
            path: p.to_string(),
            removed: false,
        });
    }
    if !req.with_parked {
        // A marker half-written by a killed run is not a marker (it was never renamed in).
        if let Some(e) = listing
            .entries
            .iter()
            .find(|e| e.parked.is_some() && !e.name.ends_with(TMP_SUFFIX))
        {
            let m = e.parked.as_ref().expect("found");
            return Err(refused(format!(
                "{p}/{} still records disk {} parked on host {} ({}): not removing the directory",
                e.name, m.disk, m.host, m.lv
            )));
        }
    }
    let path = under_root(env, p)?;
    std::fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
    tracing::info!("removed directory {p}");
    Ok(Removed {
        path: p.to_string(),
        removed: true,
    })
}

/// `put-file`.
pub fn put_file(env: &HostEnv, req: &PutFileReq, data: &mut dyn Read) -> anyhow::Result<Put> {
    let path = under_root(env, &req.path)?;
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
        return Err(refused(format!("{} is a directory", req.path)));
    }
    let bytes = write_atomic(&path, req.mode, data)?;
    Ok(Put {
        path: req.path.to_string(),
        bytes,
    })
}

/// One archive member header.
#[derive(Debug, Serialize, Deserialize)]
struct Member {
    path: String,
    dir: bool,
    mode: u32,
    size: u64,
}

/// The archive's last line.
#[derive(Debug, Serialize, Deserialize)]
struct Trailer {
    end: Unpacked,
}

/// The regular files and directories to pack, depth first, relative to `dir`.
fn members(dir: &Path, rel: &Path, out: &mut Vec<(PathBuf, bool)>) -> anyhow::Result<()> {
    for e in read_entries(dir)? {
        if e.name.ends_with(TMP_SUFFIX) || e.parked.is_some() {
            continue;
        }
        let r = rel.join(&e.name);
        match e.kind {
            EntryKind::File => out.push((r, false)),
            EntryKind::Dir => {
                out.push((r.clone(), true));
                members(&dir.join(&e.name), &r, out)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// `pack-dir`: the archive of `p` on `out` (an absent directory packs as an empty archive).
pub fn pack(env: &HostEnv, p: &VmPath, out: &mut dyn Write) -> anyhow::Result<Unpacked> {
    let dir = under_root(env, p)?;
    let mut list = Vec::new();
    if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        members(&dir, Path::new(""), &mut list)?;
    }
    writeln!(out, "{PACK_MAGIC}")?;
    let mut hasher = blake3::Hasher::new();
    let mut total = Unpacked {
        entries: 0,
        bytes: 0,
        digest: String::new(),
    };
    for (rel, is_dir) in list {
        let full = dir.join(&rel);
        let md = std::fs::symlink_metadata(&full)?;
        let m = Member {
            path: rel.to_string_lossy().into_owned(),
            dir: is_dir,
            mode: md.permissions().mode() & 0o777,
            size: if is_dir { 0 } else { md.len() },
        };
        serde_json::to_writer(&mut *out, &m)?;
        out.write_all(b"\n")?;
        if !is_dir {
            let f = std::fs::File::open(&full)
                .with_context(|| format!("opening {}", full.display()))?;
            // Exactly the announced size, even if the file changes meanwhile.
            let mut src = f.take(m.size);
            let mut tee = HashingWriter {
                inner: &mut *out,
                hasher: &mut hasher,
            };
            let n = std::io::copy(&mut src, &mut tee)?;
            if n != m.size {
                return Err(anyhow::anyhow!(
                    "{} shrank while being packed ({n} of {} bytes)",
                    full.display(),
                    m.size
                ));
            }
            total.bytes += n;
        }
        total.entries += 1;
    }
    total.digest = hasher.finalize().to_hex().to_string();
    serde_json::to_writer(&mut *out, &Trailer { end: total.clone() })?;
    out.write_all(b"\n")?;
    tracing::info!(
        "packed {p}: {} entries, {} bytes",
        total.entries,
        total.bytes
    );
    Ok(total)
}

struct HashingWriter<'a> {
    inner: &'a mut dyn Write,
    hasher: &'a mut blake3::Hasher,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A relative archive path with plain components only.
fn safe_relative(s: &str) -> anyhow::Result<PathBuf> {
    let p = Path::new(s);
    let plain = !s.is_empty()
        && !s.contains('\0')
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return Err(fail(
            ErrorKind::BadInput,
            format!("packed directory member {s:?} is not a plain relative path"),
        ));
    }
    Ok(p.to_path_buf())
}

fn read_line(r: &mut dyn BufRead, what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    // Headers are short; a huge "line" is a corrupt stream, not something to buffer.
    let n = r.take(64 * 1024).read_line(&mut line)?;
    if n == 0 || !line.ends_with('\n') {
        return Err(anyhow::anyhow!(
            "packed directory stream ended early (expected {what})"
        ));
    }
    line.pop();
    Ok(line)
}

/// `unpack-dir`: merges the archive on `input` into `p`.
pub fn unpack(env: &HostEnv, p: &VmPath, input: &mut dyn Read) -> anyhow::Result<Unpacked> {
    let dir = under_root(env, p)?;
    create_dirs(&dir)?;
    let mut r = BufReader::with_capacity(1 << 20, input);
    if read_line(&mut r, "the header")? != PACK_MAGIC {
        return Err(fail(
            ErrorKind::BadInput,
            "not a packed VM directory stream",
        ));
    }
    let mut hasher = blake3::Hasher::new();
    let mut got = Unpacked {
        entries: 0,
        bytes: 0,
        digest: String::new(),
    };
    loop {
        let line = read_line(&mut r, "a member or the trailer")?;
        if let Ok(t) = serde_json::from_str::<Trailer>(&line) {
            got.digest = hasher.finalize().to_hex().to_string();
            if t.end != got {
                return Err(anyhow::anyhow!(
                    "packed directory stream is inconsistent: sender wrote {:?}, received {:?}",
                    t.end,
                    got
                ));
            }
            tracing::info!("unpacked {p}: {} entries, {} bytes", got.entries, got.bytes);
            return Ok(got);
        }
        let m: Member = serde_json::from_str(&line).map_err(|e| {
            fail(
                ErrorKind::BadInput,
                format!("packed directory member header is invalid: {e}"),
            )
        })?;
        let rel = safe_relative(&m.path)?;
        let target = dir.join(&rel);
        let parent = target.parent().expect("joined a member");
        // Parents come before their contents; each must be a real directory inside `dir`.
        let pmd = std::fs::symlink_metadata(parent)
            .with_context(|| format!("{} must exist before {}", parent.display(), m.path))?;
        if !pmd.is_dir() {
            return Err(refused(format!(
                "{} is not a directory: not unpacking {} into it",
                parent.display(),
                m.path
            )));
        }
        let existing = entry_of(&target, String::new())?;
        if existing.parked.is_some() {
            return Err(refused(format!(
                "{p}/{} is a parked-disk marker: not overwriting it",
                m.path
            )));
        }
        if m.dir {
            match existing.kind {
                EntryKind::Dir => {}
                EntryKind::Absent => std::fs::create_dir(&target)
                    .with_context(|| format!("creating {}", target.display()))?,
                _ => {
                    return Err(refused(format!(
                        "{p}/{} exists and is not a directory",
                        m.path
                    )))
                }
            }
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(m.mode & 0o777))?;
        } else {
            if existing.kind == EntryKind::Dir {
                return Err(refused(format!("{p}/{} is a directory", m.path)));
            }
            let mut body = HashingReader {
                inner: (&mut r).take(m.size),
                hasher: &mut hasher,
            };
            let n = write_atomic(&target, m.mode & 0o777, &mut body)?;
            if n != m.size {
                return Err(anyhow::anyhow!(
                    "packed directory stream ended inside {} ({n} of {} bytes)",
                    m.path,
                    m.size
                ));
            }
            got.bytes += n;
        }
        got.entries += 1;
    }
}

struct HashingReader<'a, R: Read> {
    inner: R,
    hasher: &'a mut blake3::Hasher,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// `domain-pause`: `virsh suspend|resume <domain>`; without virsh nothing is done.
pub fn domain_pause(req: &DomainPauseReq, limits: &Limits) -> anyhow::Result<DomainPaused> {
    let verb = if req.resume { "resume" } else { "suspend" };
    let cmd = Cmd::new("virsh")
        .args(["-c", "qemu:///system", verb, &req.domain])
        .timeout(Duration::from_secs(limits.deadline_secs.min(120)));
    match exec::run(&cmd) {
        Ok(_) => {
            tracing::info!("virsh {verb} {}", req.domain);
            Ok(DomainPaused {
                done: true,
                reason: None,
            })
        }
        Err(exec::ExecError::Spawn { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(DomainPaused {
                done: false,
                reason: Some("virsh is not installed on this host".into()),
            })
        }
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Frontend side

/// Copies the VM directory `src_path` on `src_host` into `dst_path` on `dst_host` (merged):
/// the source's `pack-dir` piped by this process into the destination's `unpack-dir`.
pub fn relay_dir(
    client: &HostClient,
    src_host: &str,
    src_path: &VmPath,
    dst_host: &str,
    dst_path: &VmPath,
) -> anyhow::Result<Unpacked> {
    let pack_cmd = client.command(
        src_host,
        &PackDirReq {
            path: src_path.clone(),
        },
    )?;
    let unpack_cmd = client.command(
        dst_host,
        &UnpackDirReq {
            path: dst_path.clone(),
        },
    )?;
    let mut sender = exec::spawn(&pack_cmd, Pipe::Null, Pipe::Piped, Pipe::Piped)?;
    let mut receiver = exec::spawn(&unpack_cmd, Pipe::Piped, Pipe::Piped, Pipe::Piped)?;
    let mut from = sender.child.stdout.take().expect("piped");
    let mut to = receiver.child.stdin.take().expect("piped");
    let mut send_err = sender.child.stderr.take().expect("piped");
    let mut recv_out = receiver.child.stdout.take().expect("piped");
    let mut recv_err = receiver.child.stderr.take().expect("piped");
    let (copied, serr, rout, rerr) = std::thread::scope(|s| {
        let serr = s.spawn(move || read_all(&mut send_err));
        let rout = s.spawn(move || read_all(&mut recv_out));
        let rerr = s.spawn(move || read_all(&mut recv_err));
        let copied = std::io::copy(&mut from, &mut to);
        drop(to);
        drop(from);
        (
            copied,
            serr.join().unwrap_or_default(),
            rout.join().unwrap_or_default(),
            rerr.join().unwrap_or_default(),
        )
    });
    super::client::relay_logs(src_host, &String::from_utf8_lossy(&serr));
    super::client::relay_logs(dst_host, &String::from_utf8_lossy(&rerr));
    let sent = sender.finish(&serr);
    let received = receiver.finish(&rerr);
    let what = || format!("copying {src_host}:{src_path} to {dst_host}:{dst_path}");
    match (sent, received) {
        (Ok(()), Ok(())) => {
            match copied {
                // The receiver checked the sender's trailer: the stream was complete, and a
                // pipe closed by a receiver that is done is no loss.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => {
                    other.with_context(what)?;
                }
            }
            serde_json::from_slice(&rout).with_context(|| {
                format!(
                    "host {dst_host}: unpack-dir answered something that is not its JSON document"
                )
            })
        }
        (Err(s), _) => Err(anyhow::Error::new(s).context(format!("packing {src_host}:{src_path}"))),
        (Ok(()), Err(r)) => {
            Err(anyhow::Error::new(r).context(format!("unpacking into {dst_host}:{dst_path}")))
        }
    }
}

fn read_all(r: &mut dyn Read) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = r.read_to_end(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(subcommand)]
        cmd: VmCmd,
    }

    fn parse<R: Request>(req: &R) -> VmCmd {
        let mut argv = vec!["host".to_string(), R::OP.to_string()];
        argv.extend(req.args());
        argv.extend(Limits::default().args());
        Wrap::try_parse_from(argv).unwrap().cmd
    }

    fn vp(s: &str) -> VmPath {
        s.parse().unwrap()
    }

    #[test]
    fn requests_round_trip_through_argv() {
        match parse(&LinkDiskReq {
            path: vp("/var/lib/one//datastores/101/7/disk.0"),
            lv: "vg-one-101/lv-one-7-0".parse().unwrap(),
        }) {
            VmCmd::LinkDisk { req, .. } => {
                assert_eq!(req.path.as_str(), "/var/lib/one/datastores/101/7/disk.0");
            }
            other => panic!("{other:?}"),
        }
        match parse(&PutFileReq {
            path: vp("/d/1/2/disk.3"),
            mode: 0o600,
        }) {
            VmCmd::PutFile { req, .. } => assert_eq!(req.mode, 0o600),
            other => panic!("{other:?}"),
        }
        match parse(&RemoveDirReq {
            path: vp("/d/1/2"),
            with_parked: true,
        }) {
            VmCmd::RemoveDir { req, .. } => assert!(req.with_parked),
            other => panic!("{other:?}"),
        }
        for bad in [
            vec!["host", "vm-stat", "--path=rel/x"],
            vec!["host", "vm-stat", "--path=/a/../etc"],
            vec!["host", "vm-stat", "--path=/a b"],
            vec!["host", "domain-pause", "--domain=one;rm"],
            vec!["host", "put-file", "--path=/a", "--mode=999"],
        ] {
            assert!(Wrap::try_parse_from(&bad).is_err(), "{bad:?}");
        }
    }

    fn host(root: &Path) -> HostEnv {
        HostEnv::from_env(&Env::from_pairs([
            ("BSUD_HOST_ROOT", root.to_str().unwrap()),
            ("BSUD_LV_DIR", root.join("lv").to_str().unwrap()),
        ]))
    }

    #[test]
    fn paths_stay_under_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(root.join("var/lib/one/datastores/101")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let env = host(&root);
        let p = under_root(&env, &vp("/var/lib/one//datastores/101/7/disk.0")).unwrap();
        assert_eq!(
            p,
            root.canonicalize()
                .unwrap()
                .join("var/lib/one/datastores/101/7/disk.0")
        );
        // A symlinked datastore inside the root is fine; one pointing outside is refused.
        std::os::unix::fs::symlink(&outside, root.join("var/lib/one/datastores/102")).unwrap();
        let e = under_root(&env, &vp("/var/lib/one/datastores/102/7/disk.0")).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 6, "{e:#}");
        let e = put_file(
            &env,
            &PutFileReq {
                path: vp("/var/lib/one/datastores/102/7/disk.3"),
                mode: 0o644,
            },
            &mut &b"x"[..],
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("outside the host root"), "{e:#}");
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
    }

    #[test]
    fn put_never_writes_through_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("d/1/2")).unwrap();
        let victim = root.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, root.join("d/1/2/disk.4")).unwrap();
        let env = host(&root);
        put_file(
            &env,
            &PutFileReq {
                path: vp("/d/1/2/disk.4"),
                mode: 0o644,
            },
            &mut &b"iso"[..],
        )
        .unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(root.join("d/1/2/disk.4")).unwrap(), b"iso");
        assert!(!std::fs::symlink_metadata(root.join("d/1/2/disk.4"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn markers_protect_directories_and_are_not_packed() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let env = host(&root);
        let vm = vp("/ds/101/7");
        let m = ParkedDisk {
            bsud_parked: 1,
            host: "kvm1".into(),
            ds: 101,
            lv: "lv-one-7-0".into(),
            vm: 7,
            disk: 0,
        };
        put_file(
            &env,
            &PutFileReq {
                path: vp("/ds/101/7/disk.0"),
                mode: 0o644,
            },
            &mut serde_json::to_vec(&m).unwrap().as_slice(),
        )
        .unwrap();
        put_file(
            &env,
            &PutFileReq {
                path: vp("/ds/101/7/checkpoint"),
                mode: 0o600,
            },
            &mut &b"memory"[..],
        )
        .unwrap();
        std::fs::create_dir_all(root.join("ds/101/7/sub")).unwrap();
        std::fs::write(root.join("ds/101/7/sub/f"), b"nested").unwrap();
        std::os::unix::fs::symlink("/dev/null", root.join("ds/101/7/disk.1")).unwrap();
        let st = stat(&env, &vp("/ds/101/7/disk.0")).unwrap();
        assert_eq!(st.parked.as_ref(), Some(&m));

        let e = remove_dir(
            &env,
            &RemoveDirReq {
                path: vm.clone(),
                with_parked: false,
            },
        )
        .unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 6);

        let mut buf = Vec::new();
        let packed = pack(&env, &vm, &mut buf).unwrap();
        assert_eq!((packed.entries, packed.bytes), (3, 12));
        // Into another directory holding a marker of the same name as nothing packed.
        let other = vp("/ds/102/7");
        let got = unpack(&env, &other, &mut buf.as_slice()).unwrap();
        assert_eq!(got, packed);
        assert_eq!(
            std::fs::read(root.join("ds/102/7/sub/f")).unwrap(),
            b"nested"
        );
        assert_eq!(
            std::fs::metadata(root.join("ds/102/7/checkpoint"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert!(std::fs::symlink_metadata(root.join("ds/102/7/disk.0")).is_err());
        assert!(std::fs::symlink_metadata(root.join("ds/102/7/disk.1")).is_err());

        // A truncated stream is an error, a stream naming `..` is refused.
        let cut = &buf[..buf.len() - 10];
        assert!(unpack(&env, &vp("/ds/103/7"), &mut &cut[..]).is_err());
        let evil = format!(
            "{PACK_MAGIC}\n{}\n",
            serde_json::json!({"path": "../../x", "dir": false, "mode": 420, "size": 1})
        );
        let e = unpack(&env, &vp("/ds/103/8"), &mut evil.as_bytes()).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 2, "{e:#}");
        assert!(!root.join("ds/x").exists());

        // A member named like a marker in the target is refused.
        std::fs::create_dir_all(root.join("ds/104/7")).unwrap();
        std::fs::write(root.join("ds/104/7/disk.0"), b"plain").unwrap();
        let mut with_marker = Vec::new();
        pack(&env, &vp("/ds/104/7"), &mut with_marker).unwrap();
        let e = unpack(&env, &vm, &mut with_marker.as_slice()).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 6, "{e:#}");

        let r = remove_dir(
            &env,
            &RemoveDirReq {
                path: vm.clone(),
                with_parked: true,
            },
        )
        .unwrap();
        assert!(r.removed);
        let e = remove_dir(
            &env,
            &RemoveDirReq {
                path: vp("/ds/notavm"),
                with_parked: true,
            },
        )
        .unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 6);
    }
}
