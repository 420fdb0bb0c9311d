//! Transfer-manager argv, parsed into typed values (reference §4.2).
//!
//! oned passes positional arguments only (each shell-escaped by one_tm, so they arrive intact);
//! stdin is empty except for pre/post/failmigrate (base64 VM XML). Every action is validated
//! here, before anything is touched: argument counts, `host:path` shapes, numeric ids and sizes,
//! `disk.N` names. Paths are normalised (`//` collapsed) and limited to the characters
//! OpenNebula's own paths use, `[A-Za-z0-9._+/@-]`, without `..`: nothing that a shell or ssh
//! could ever read as syntax gets past this module.

use std::ffi::OsString;
use std::io::Read;

use serde::Serialize;

use super::vm::VmXml;
use crate::error::{fail, ErrorKind};

/// A `host:path` argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostPath {
    /// The host (text before the first `:`).
    pub host: String,
    /// The absolute, normalised path.
    pub path: String,
}

impl HostPath {
    /// Parses `host:path`.
    pub fn parse(arg: &str, what: &str) -> anyhow::Result<HostPath> {
        let (host, path) = arg
            .split_once(':')
            .ok_or_else(|| bad(format!("{what} {arg:?} is not of the form host:path")))?;
        if host.is_empty() {
            return Err(bad(format!("{what} {arg:?} has no host before ':'")));
        }
        crate::exec::ssh::validate_host(host)
            .map_err(|_| bad(format!("{what} {arg:?} has an invalid host name {host:?}")))?;
        if path.is_empty() {
            return Err(bad(format!("{what} {arg:?} has an empty path")));
        }
        Ok(HostPath {
            host: host.to_string(),
            path: checked_path(path, what)?,
        })
    }

    /// The `disk.N` id when the path ends with it.
    pub fn disk_id(&self) -> Option<u32> {
        disk_id_of(&self.path)
    }

    /// The VM directory: the parent of `disk.N`, or the path itself.
    pub fn vm_dir(&self) -> String {
        match self.disk_id() {
            Some(_) => parent(&self.path).to_string(),
            None => self.path.clone(),
        }
    }

    /// The system datastore id: the name of the VM directory's parent, when numeric.
    pub fn system_ds(&self) -> Option<i64> {
        let vm_dir = self.vm_dir();
        parent(&vm_dir).rsplit('/').next()?.parse().ok()
    }
}

fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) => "/",
        Some(i) => &p[..i],
        None => "",
    }
}

/// `…/disk.N` → N.
pub fn disk_id_of(path: &str) -> Option<u32> {
    let name = path.rsplit('/').next()?;
    let n = name.strip_prefix("disk.")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.len() > 6 {
        return None;
    }
    n.parse().ok()
}

/// Whether `c` may appear in a path oned gives us. OpenNebula builds every TM path from
/// `DATASTORE_LOCATION`, numeric ids and `disk.N` (`/var/lib/one//datastores/101/7/disk.0`),
/// context paths from `/var/lib/one/vms/<id>/`, and image SOURCEs from hashes or our own
/// `vg-one-<D>/img-one-<N>`; nothing legitimate needs quotes, `$`, spaces or separators, so
/// refusing them here keeps every later shell and ssh string free of them.
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '/' | '@' | '-')
}

/// The first character of `s` that `allowed` refuses, as an error naming the argument.
fn refuse_chars(s: &str, what: &str, allowed: fn(char) -> bool) -> anyhow::Result<()> {
    match s.chars().find(|c| !allowed(*c)) {
        None => Ok(()),
        Some(c) => Err(bad(format!(
            "{what} {s:?} contains the character {c:?}, which is not allowed (only letters, digits and . _ + / @ -)"
        ))),
    }
}

/// Normalises an absolute path; refuses `..` and any character outside [`is_path_char`].
pub(crate) fn checked_path(p: &str, what: &str) -> anyhow::Result<String> {
    refuse_chars(p, &format!("{what} path"), is_path_char)?;
    if !p.starts_with('/') {
        return Err(bad(format!("{what} path {p:?} is not absolute")));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(bad(format!("{what} path {p:?} contains '..'")));
    }
    Ok(super::normalize_path(p))
}

fn bad(msg: String) -> anyhow::Error {
    fail(ErrorKind::BadInput, msg)
}

/// A disk location: `host:<vm dir>/disk.N`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskRef {
    /// Where it is.
    pub at: HostPath,
    /// N of `disk.N`.
    pub disk_id: u32,
}

impl DiskRef {
    fn parse(arg: &str, what: &str) -> anyhow::Result<DiskRef> {
        let at = HostPath::parse(arg, what)?;
        let disk_id = at
            .disk_id()
            .ok_or_else(|| bad(format!("{what} {arg:?} does not end with disk.<number>")))?;
        Ok(DiskRef { at, disk_id })
    }
}

/// A `host:path` that is either a disk or a whole VM directory (mv, delete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// `…/disk.N`.
    Disk(DiskRef),
    /// The VM directory.
    Dir(HostPath),
}

impl Target {
    fn parse(arg: &str, what: &str) -> anyhow::Result<Target> {
        let at = HostPath::parse(arg, what)?;
        Ok(match at.disk_id() {
            Some(disk_id) => Target::Disk(DiskRef { at, disk_id }),
            None => Target::Dir(at),
        })
    }

    /// The location.
    pub fn at(&self) -> &HostPath {
        match self {
            Target::Disk(d) => &d.at,
            Target::Dir(h) => h,
        }
    }
}

/// One `context` input file: `path` or `path:'name'`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContextFile {
    /// Frontend path.
    pub path: String,
    /// Name inside the ISO (defaults to the file name).
    pub name: Option<String>,
}

/// Arguments common to pre/post/failmigrate.
#[derive(Debug, Clone, Serialize)]
pub struct MigrateArgs {
    /// Source host.
    pub src_host: String,
    /// Destination host.
    pub dst_host: String,
    /// VM directory on the destination.
    pub vm_dir: String,
    /// VM id.
    pub vm_id: i64,
    /// System datastore id.
    pub ds_id: i64,
    /// 6th argument: the system TM that called us (we must not fan out again).
    pub caller_tm: Option<String>,
    /// The VM (stdin).
    pub vm: VmXml,
}

/// A parsed TM invocation.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum TmArgs {
    /// `clone FE:SOURCE H:D/disk.N vmid img_ds`
    Clone {
        src: HostPath,
        dst: DiskRef,
        vm_id: i64,
        ds_id: i64,
    },
    /// `ln FE:SOURCE H:D/disk.N vmid img_ds`
    Ln {
        src: HostPath,
        dst: DiskRef,
        vm_id: i64,
        ds_id: i64,
    },
    /// `mv SRC:path DST:path vmid ds` (disk or directory)
    Mv {
        src: Target,
        dst: Target,
        vm_id: i64,
        ds_id: i64,
    },
    /// `mvds H:D/disk.N SOURCE vmid img_ds`
    Mvds {
        src: DiskRef,
        source: String,
        vm_id: i64,
        ds_id: i64,
    },
    /// `cpds H:D/disk.N SOURCE SNAP_ID vmid img_ds` (snap −1 = current state)
    Cpds {
        src: DiskRef,
        source: String,
        snap_id: Option<u32>,
        vm_id: i64,
        ds_id: i64,
    },
    /// `delete H:path vmid ds`
    Delete {
        target: Target,
        vm_id: i64,
        ds_id: i64,
    },
    /// `mkimage SIZE FORMAT H:D/disk.N vmid ds`
    Mkimage {
        size_mb: u64,
        format: String,
        dst: DiskRef,
        vm_id: i64,
        ds_id: i64,
    },
    /// `mkswap SIZE H:D/disk.N vmid ds`
    Mkswap {
        size_mb: u64,
        dst: DiskRef,
        vm_id: i64,
        ds_id: i64,
    },
    /// `context FILE… H:D/disk.N vmid ds`
    Context {
        files: Vec<ContextFile>,
        dst: DiskRef,
        vm_id: i64,
        ds_id: i64,
    },
    /// `resize H:D/disk.N SIZE vmid ds`
    Resize {
        disk: DiskRef,
        size_mb: u64,
        vm_id: i64,
        ds_id: i64,
    },
    /// `premigrate SRC DST D vmid ds [tm]` + VM on stdin
    Premigrate(MigrateArgs),
    /// `postmigrate …`
    Postmigrate(MigrateArgs),
    /// `failmigrate …`
    Failmigrate(MigrateArgs),
    /// `snap_create H:D/disk.N SNAP vmid ds`
    SnapCreate {
        disk: DiskRef,
        snap_id: u32,
        vm_id: i64,
        ds_id: i64,
    },
    /// `snap_create_live …`
    SnapCreateLive {
        disk: DiskRef,
        snap_id: u32,
        vm_id: i64,
        ds_id: i64,
    },
    /// `snap_delete …`
    SnapDelete {
        disk: DiskRef,
        snap_id: u32,
        vm_id: i64,
        ds_id: i64,
    },
    /// `snap_revert …`
    SnapRevert {
        disk: DiskRef,
        snap_id: u32,
        vm_id: i64,
        ds_id: i64,
    },
    /// `monitor_ds <ds path>` (host probe)
    MonitorDs { ds_path: String },
}

/// The TM actions this driver answers, as named in `remotes/tm/bsud/`.
pub const TM_ACTIONS: &[&str] = &[
    "clone",
    "ln",
    "mv",
    "mvds",
    "cpds",
    "delete",
    "mkimage",
    "mkswap",
    "context",
    "resize",
    "premigrate",
    "postmigrate",
    "failmigrate",
    "snap_create",
    "snap_create_live",
    "snap_delete",
    "snap_revert",
    "monitor",
    "monitor_ds",
];

impl TmArgs {
    /// The VM id the action concerns (for log lines routed to the VM log).
    pub fn vm_id(&self) -> Option<i64> {
        use TmArgs::*;
        match self {
            Clone { vm_id, .. }
            | Ln { vm_id, .. }
            | Mv { vm_id, .. }
            | Mvds { vm_id, .. }
            | Cpds { vm_id, .. }
            | Delete { vm_id, .. }
            | Mkimage { vm_id, .. }
            | Mkswap { vm_id, .. }
            | Context { vm_id, .. }
            | Resize { vm_id, .. }
            | SnapCreate { vm_id, .. }
            | SnapCreateLive { vm_id, .. }
            | SnapDelete { vm_id, .. }
            | SnapRevert { vm_id, .. } => Some(*vm_id),
            Premigrate(m) | Postmigrate(m) | Failmigrate(m) => Some(m.vm_id),
            MonitorDs { .. } => None,
        }
    }

    /// Parses argv (after the action name) for `action` (already stripped of a `.<tm>`
    /// suffix). `monitor` is a datastore-message action and is not parsed here.
    pub fn parse(action: &str, args: &[OsString], stdin: &mut dyn Read) -> anyhow::Result<TmArgs> {
        let a: Vec<String> = args
            .iter()
            .map(|a| {
                a.to_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("{action}: an argument is not valid UTF-8")))
            })
            .collect::<anyhow::Result<_>>()?;
        let want = |n: usize, usage: &str| -> anyhow::Result<()> {
            if a.len() == n {
                Ok(())
            } else {
                Err(bad(format!(
                    "{action}: expected {n} arguments ({usage}), got {}",
                    a.len()
                )))
            }
        };
        let vm = |s: &str| id_arg(s, "vm id");
        let ds = |s: &str| id_arg(s, "datastore id");
        Ok(match action {
            "clone" | "ln" => {
                want(4, "host:source host:vm_dir/disk.N vm_id ds_id")?;
                let src = HostPath::parse_source(&a[0])?;
                let dst = DiskRef::parse(&a[1], "destination")?;
                let (vm_id, ds_id) = (vm(&a[2])?, ds(&a[3])?);
                if action == "clone" {
                    TmArgs::Clone {
                        src,
                        dst,
                        vm_id,
                        ds_id,
                    }
                } else {
                    TmArgs::Ln {
                        src,
                        dst,
                        vm_id,
                        ds_id,
                    }
                }
            }
            "mv" => {
                want(4, "src_host:path dst_host:path vm_id ds_id")?;
                let src = Target::parse(&a[0], "source")?;
                let dst = Target::parse(&a[1], "destination")?;
                match (&src, &dst) {
                    (Target::Disk(s), Target::Disk(d)) if s.disk_id != d.disk_id => {
                        return Err(bad(format!(
                            "mv: source disk.{} and destination disk.{} differ",
                            s.disk_id, d.disk_id
                        )))
                    }
                    (Target::Disk(_), Target::Dir(_)) | (Target::Dir(_), Target::Disk(_)) => {
                        return Err(bad(
                            "mv: one side is a disk and the other a directory".into()
                        ))
                    }
                    _ => {}
                }
                TmArgs::Mv {
                    src,
                    dst,
                    vm_id: vm(&a[2])?,
                    ds_id: ds(&a[3])?,
                }
            }
            "mvds" => {
                want(4, "host:vm_dir/disk.N source vm_id ds_id")?;
                TmArgs::Mvds {
                    src: DiskRef::parse(&a[0], "disk")?,
                    source: source_arg(&a[1])?,
                    vm_id: vm(&a[2])?,
                    ds_id: ds(&a[3])?,
                }
            }
            "cpds" => {
                want(5, "host:vm_dir/disk.N source snap_id vm_id ds_id")?;
                let snap_id = match a[2].as_str() {
                    "-1" => None,
                    s => Some(snap_arg(s)?),
                };
                TmArgs::Cpds {
                    src: DiskRef::parse(&a[0], "disk")?,
                    source: source_arg(&a[1])?,
                    snap_id,
                    vm_id: vm(&a[3])?,
                    ds_id: ds(&a[4])?,
                }
            }
            "delete" => {
                want(3, "host:path vm_id ds_id")?;
                TmArgs::Delete {
                    target: Target::parse(&a[0], "target")?,
                    vm_id: vm(&a[1])?,
                    ds_id: ds(&a[2])?,
                }
            }
            "mkimage" => {
                want(5, "size_mb format host:vm_dir/disk.N vm_id ds_id")?;
                let format = a[1].clone();
                if format.is_empty()
                    || !format
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(bad(format!(
                        "mkimage: format {format:?} is not a format name"
                    )));
                }
                TmArgs::Mkimage {
                    size_mb: size_arg(&a[0])?,
                    format,
                    dst: DiskRef::parse(&a[2], "destination")?,
                    vm_id: vm(&a[3])?,
                    ds_id: ds(&a[4])?,
                }
            }
            "mkswap" => {
                want(4, "size_mb host:vm_dir/disk.N vm_id ds_id")?;
                TmArgs::Mkswap {
                    size_mb: size_arg(&a[0])?,
                    dst: DiskRef::parse(&a[1], "destination")?,
                    vm_id: vm(&a[2])?,
                    ds_id: ds(&a[3])?,
                }
            }
            "context" => {
                if a.len() < 4 {
                    return Err(bad(format!(
                        "context: expected at least 4 arguments (file… host:vm_dir/disk.N vm_id ds_id), got {}",
                        a.len()
                    )));
                }
                let n = a.len();
                let files = a[..n - 3]
                    .iter()
                    .map(|f| context_file(f))
                    .collect::<anyhow::Result<_>>()?;
                TmArgs::Context {
                    files,
                    dst: DiskRef::parse(&a[n - 3], "destination")?,
                    vm_id: vm(&a[n - 2])?,
                    ds_id: ds(&a[n - 1])?,
                }
            }
            "resize" => {
                want(4, "host:vm_dir/disk.N size_mb vm_id ds_id")?;
                TmArgs::Resize {
                    disk: DiskRef::parse(&a[0], "disk")?,
                    size_mb: size_arg(&a[1])?,
                    vm_id: vm(&a[2])?,
                    ds_id: ds(&a[3])?,
                }
            }
            "premigrate" | "postmigrate" | "failmigrate" => {
                if a.len() != 5 && a.len() != 6 {
                    return Err(bad(format!(
                        "{action}: expected 5 or 6 arguments (src_host dst_host vm_dir vm_id ds_id [tm]), got {}",
                        a.len()
                    )));
                }
                for h in &a[..2] {
                    crate::exec::ssh::validate_host(h)
                        .map_err(|_| bad(format!("{action}: invalid host name {h:?}")))?;
                }
                let on_stdin = |e: anyhow::Error| bad(format!("{action}: the VM on stdin: {e:#}"));
                let raw = super::input::read_limited(stdin).map_err(on_stdin)?;
                let xml = super::input::decode_message(&raw).map_err(on_stdin)?;
                let m = MigrateArgs {
                    src_host: a[0].clone(),
                    dst_host: a[1].clone(),
                    vm_dir: checked_path(&a[2], "VM directory")?,
                    vm_id: vm(&a[3])?,
                    ds_id: ds(&a[4])?,
                    caller_tm: a.get(5).map(|t| tm_name_arg(t, action)).transpose()?,
                    vm: VmXml::from_xml(&xml).map_err(on_stdin)?,
                };
                match action {
                    "premigrate" => TmArgs::Premigrate(m),
                    "postmigrate" => TmArgs::Postmigrate(m),
                    _ => TmArgs::Failmigrate(m),
                }
            }
            "snap_create" | "snap_create_live" | "snap_delete" | "snap_revert" => {
                want(4, "host:vm_dir/disk.N snap_id vm_id ds_id")?;
                let disk = DiskRef::parse(&a[0], "disk")?;
                let snap_id = snap_arg(&a[1])?;
                let (vm_id, ds_id) = (vm(&a[2])?, ds(&a[3])?);
                match action {
                    "snap_create" => TmArgs::SnapCreate {
                        disk,
                        snap_id,
                        vm_id,
                        ds_id,
                    },
                    "snap_create_live" => TmArgs::SnapCreateLive {
                        disk,
                        snap_id,
                        vm_id,
                        ds_id,
                    },
                    "snap_delete" => TmArgs::SnapDelete {
                        disk,
                        snap_id,
                        vm_id,
                        ds_id,
                    },
                    _ => TmArgs::SnapRevert {
                        disk,
                        snap_id,
                        vm_id,
                        ds_id,
                    },
                }
            }
            "monitor_ds" => {
                want(1, "datastore path")?;
                TmArgs::MonitorDs {
                    ds_path: checked_path(&a[0], "datastore")?,
                }
            }
            other => return Err(bad(format!("unknown transfer-manager action {other:?}"))),
        })
    }
}

impl HostPath {
    /// The source of clone/ln: `FE:SOURCE` where our SOURCE itself is `host:vg/lv`, so the
    /// argument is `imagehost:vg-one-D/img-one-N` (oned passes ':'-containing sources verbatim).
    /// Other shapes (another driver's file path) are accepted as given.
    fn parse_source(arg: &str) -> anyhow::Result<HostPath> {
        let (host, path) = arg
            .split_once(':')
            .ok_or_else(|| bad(format!("source {arg:?} is not of the form host:path")))?;
        if host.is_empty() || path.is_empty() {
            return Err(bad(format!("source {arg:?} needs a host and a path")));
        }
        crate::exec::ssh::validate_host(host)
            .map_err(|_| bad(format!("source {arg:?} has an invalid host name {host:?}")))?;
        let path = if path.starts_with('/') {
            checked_path(path, "source")?
        } else {
            refuse_chars(path, "source path", is_path_char)?;
            // Our own SOURCE: exactly `<vg>/<lv>`, names LVM would accept as words.
            match path.split_once('/') {
                Some((vg, lv))
                    if !vg.is_empty()
                        && !lv.is_empty()
                        && !lv.contains('/')
                        && ![vg, lv]
                            .iter()
                            .any(|n| n.starts_with('-') || *n == "." || *n == "..") => {}
                _ => {
                    return Err(bad(format!(
                    "source {arg:?}: the path must be absolute or <volume group>/<logical volume>"
                )))
                }
            }
            path.to_string()
        };
        Ok(HostPath {
            host: host.to_string(),
            path,
        })
    }
}

/// The raw SOURCE of mvds/cpds: another driver's path or our `host:vg/lv`, as oned stores it.
fn source_arg(s: &str) -> anyhow::Result<String> {
    if s.is_empty() {
        return Err(bad("source argument is empty".into()));
    }
    refuse_chars(s, "source", |c| is_path_char(c) || c == ':')?;
    if s.starts_with('-') || s.split(['/', ':']).any(|c| c == "..") {
        return Err(bad(format!(
            "source {s:?} starts with '-' or contains '..'"
        )));
    }
    Ok(s.to_string())
}

/// The 6th migrate argument: the name of the system TM that fanned out to us.
fn tm_name_arg(s: &str, action: &str) -> anyhow::Result<String> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        || s.starts_with('-')
    {
        return Err(bad(format!(
            "{action}: calling transfer manager {s:?} is not a driver name"
        )));
    }
    Ok(s.to_string())
}

fn id_arg(s: &str, what: &str) -> anyhow::Result<i64> {
    if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("{what} {s:?} is not a non-negative integer")));
    }
    s.parse()
        .map_err(|_| bad(format!("{what} {s:?} is out of range")))
}

fn snap_arg(s: &str) -> anyhow::Result<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!(
            "snapshot id {s:?} is not a non-negative integer"
        )));
    }
    s.parse()
        .map_err(|_| bad(format!("snapshot id {s:?} is out of range")))
}

fn size_arg(s: &str) -> anyhow::Result<u64> {
    let v: u64 = if !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse()
            .map_err(|_| bad(format!("size {s:?} is out of range")))?
    } else {
        return Err(bad(format!("size {s:?} is not a number of MB")));
    };
    if v == 0 {
        return Err(bad("size must be at least 1 MB".into()));
    }
    Ok(v)
}

/// `path` or `path:'name'` (FILES_DS entries).
fn context_file(s: &str) -> anyhow::Result<ContextFile> {
    let (path, name) = match s.split_once(":'") {
        Some((p, rest)) => {
            let name = rest
                .strip_suffix('\'')
                .ok_or_else(|| bad(format!("context file {s:?}: unterminated name")))?;
            (p, Some(name.to_string()))
        }
        None => (s, None),
    };
    if let Some(n) = &name {
        if n.is_empty() || n == "." || n == ".." {
            return Err(bad(format!("context file {s:?}: invalid name {n:?}")));
        }
        refuse_chars(n, "context file name", |c| is_path_char(c) && c != '/')?;
    }
    Ok(ContextFile {
        path: checked_path(path, "context file")?,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit_code;

    fn parse(action: &str, a: &[&str]) -> anyhow::Result<TmArgs> {
        let args: Vec<OsString> = a.iter().map(OsString::from).collect();
        TmArgs::parse(action, &args, &mut std::io::empty())
    }

    #[test]
    fn clone_from_a_trace() {
        let t = parse(
            "clone",
            &[
                "vm:/var/lib/one//datastores/100/rec-img-3",
                "host-r1:/var/lib/one//datastores/101/1/disk.1",
                "1",
                "100",
            ],
        )
        .unwrap();
        match t {
            TmArgs::Clone {
                src,
                dst,
                vm_id,
                ds_id,
            } => {
                assert_eq!(src.host, "vm");
                assert_eq!(src.path, "/var/lib/one/datastores/100/rec-img-3");
                assert_eq!(dst.at.host, "host-r1");
                assert_eq!(dst.at.path, "/var/lib/one/datastores/101/1/disk.1");
                assert_eq!(dst.disk_id, 1);
                assert_eq!(dst.at.vm_dir(), "/var/lib/one/datastores/101/1");
                assert_eq!(dst.at.system_ds(), Some(101));
                assert_eq!((vm_id, ds_id), (1, 100));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn our_sources_are_host_vg_lv() {
        let t = parse(
            "ln",
            &[
                "kvm1:vg-one-100/img-one-7",
                "kvm2:/var/lib/one//datastores/0/3/disk.0",
                "3",
                "100",
            ],
        )
        .unwrap();
        match t {
            TmArgs::Ln { src, .. } => assert_eq!(
                (src.host.as_str(), src.path.as_str()),
                ("kvm1", "vg-one-100/img-one-7")
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mv_dir_and_disk() {
        let t = parse("mv", &["h1:/d/101/0", "vm:/d/101/0", "0", "101"]).unwrap();
        assert!(matches!(
            t,
            TmArgs::Mv {
                src: Target::Dir(_),
                dst: Target::Dir(_),
                ..
            }
        ));
        let e = parse(
            "mv",
            &["h1:/d/101/0/disk.1", "vm:/d/101/0/disk.2", "0", "101"],
        )
        .unwrap_err();
        assert!(e.to_string().contains("differ"));
    }

    #[test]
    fn cpds_snapshot_minus_one_is_current() {
        let t = parse("cpds", &["h:/d/101/0/disk.1", "/d/100/x", "-1", "0", "100"]).unwrap();
        assert!(matches!(t, TmArgs::Cpds { snap_id: None, .. }));
        let t = parse(
            "cpds",
            &[
                "h:/d/101/0/disk.0",
                "h:vg-one-100/img-one-6",
                "1",
                "0",
                "100",
            ],
        )
        .unwrap();
        assert!(matches!(
            t,
            TmArgs::Cpds {
                snap_id: Some(1),
                ..
            }
        ));
    }

    #[test]
    fn context_files() {
        let t = parse(
            "context",
            &[
                "/var/lib/one/vms/1/context.sh",
                "/var/tmp/f:'init.sh'",
                "h:/d/101/1/disk.3",
                "1",
                "101",
            ],
        )
        .unwrap();
        match t {
            TmArgs::Context { files, dst, .. } => {
                assert_eq!(files.len(), 2);
                assert_eq!(files[1].name.as_deref(), Some("init.sh"));
                assert_eq!(dst.disk_id, 3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_action_rejects_wrong_counts() {
        for action in TM_ACTIONS.iter().filter(|a| **a != "monitor") {
            for n in [0usize, 2, 7] {
                let args: Vec<&str> = std::iter::repeat_n("1", n).collect();
                let e = parse(action, &args).unwrap_err();
                assert_eq!(exit_code(&e), 2, "{action} with {n} args: {e}");
            }
        }
    }

    #[test]
    fn hostile_values_are_refused() {
        let cases: &[(&str, &[&str])] = &[
            ("delete", &[":/d/1/2", "2", "1"]),
            ("delete", &["h:", "2", "1"]),
            ("delete", &["nohostpath", "2", "1"]),
            ("delete", &["h:/d/../etc", "2", "1"]),
            ("delete", &["h:rel/path", "2", "1"]),
            ("delete", &["-oProxyCommand=x:/d", "2", "1"]),
            ("delete", &["h$(id):/d", "2", "1"]),
            ("delete", &["h:/d/1/2", "2;rm", "1"]),
            ("delete", &["h:/d/1/2\nx", "2", "1"]),
            ("resize", &["h:/d/1/2/disk.0", "12x", "2", "1"]),
            ("resize", &["h:/d/1/2/disk.0", "0", "2", "1"]),
            ("resize", &["h:/d/1/2/disk.x", "10", "2", "1"]),
            ("mvds", &["h:/d/1/2/disk.0", "a b", "2", "1"]),
            ("snap_create", &["h:/d/1/2/disk.0", "-3", "2", "1"]),
            ("mkimage", &["10", "raw;x", "h:/d/1/2/disk.0", "2", "1"]),
        ];
        for (action, args) in cases {
            let e = parse(action, args).unwrap_err();
            assert_eq!(exit_code(&e), 2, "{action} {args:?}: {e}");
        }
    }

    #[test]
    fn paths_refuse_shell_characters_and_name_the_argument() {
        let vm_b64 = |id: &str| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(format!("<VM><ID>{id}</ID></VM>"))
        };
        for c in [
            '\'', '"', '$', '`', ';', '&', '|', '<', '>', '*', '?', ' ', '\n', '\t', '\\', '(',
            ')', '{', '}', '[', ']', '!', '#', '~', '%', '=', ',', ':', '\0', 'é',
        ] {
            let evil = format!("/var/lib/one//datastores/101/7{c}x/disk.0");
            let cases: Vec<(&str, Vec<String>, &str)> = vec![
                (
                    "delete",
                    vec![format!("h:{evil}"), "7".into(), "101".into()],
                    "target path",
                ),
                (
                    "clone",
                    vec![
                        format!("fe:{evil}"),
                        "h:/d/101/7/disk.0".into(),
                        "7".into(),
                        "100".into(),
                    ],
                    "source path",
                ),
                (
                    "clone",
                    vec![
                        "fe:vg-one-100/img-one-1".into(),
                        format!("h:{evil}"),
                        "7".into(),
                        "100".into(),
                    ],
                    "destination path",
                ),
                (
                    "mvds",
                    vec![
                        "h:/d/101/7/disk.0".into(),
                        evil.clone(),
                        "7".into(),
                        "100".into(),
                    ],
                    "source",
                ),
                (
                    "context",
                    vec![
                        evil.clone(),
                        "h:/d/101/7/disk.3".into(),
                        "7".into(),
                        "101".into(),
                    ],
                    "context file path",
                ),
                (
                    "context",
                    vec![
                        format!("/var/tmp/f:'a{c}b'"),
                        "h:/d/101/7/disk.3".into(),
                        "7".into(),
                        "101".into(),
                    ],
                    "context file name",
                ),
                ("monitor_ds", vec![evil.clone()], "datastore path"),
            ];
            for (action, args, what) in cases {
                // `:` is the mvds SOURCE host separator, and a `'` ends a context name early.
                if (c == ':' && action == "mvds") || (c == '\'' && what == "context file name") {
                    continue;
                }
                let argv: Vec<&str> = args.iter().map(String::as_str).collect();
                let e = parse(action, &argv).unwrap_err();
                let msg = format!("{e:#}");
                assert_eq!(exit_code(&e), 2, "{action} {argv:?}: {msg}");
                assert!(msg.contains(what), "{action} {c:?}: {msg}");
                assert!(msg.contains(&format!("{c:?}")), "{action} {c:?}: {msg}");
                assert!(!crate::error::one_line(&e).contains('\n'), "{msg}");
            }
            let args: Vec<OsString> = ["h1", "h2", evil.as_str(), "7", "101"]
                .iter()
                .map(OsString::from)
                .collect();
            let e = TmArgs::parse("premigrate", &args, &mut vm_b64("7").as_bytes()).unwrap_err();
            assert!(format!("{e:#}").contains("VM directory path"), "{e:#}");
        }
    }

    #[test]
    fn opennebula_shaped_paths_pass() {
        let t = parse(
            "mv",
            &[
                "host-r1.example.com:/var/lib/one//datastores/101/7/disk.0",
                "vm:/var/lib/one//datastores/102/7/disk.0",
                "7",
                "100",
            ],
        )
        .unwrap();
        match t {
            TmArgs::Mv {
                src: Target::Disk(s),
                dst: Target::Disk(d),
                ..
            } => {
                assert_eq!(s.at.path, "/var/lib/one/datastores/101/7/disk.0");
                assert_eq!(d.at.system_ds(), Some(102));
            }
            other => panic!("{other:?}"),
        }
        for src in ["fe:-vg/lv", "fe:vg/-lv", "fe:vg", "fe:vg/lv/x", "fe:../x"] {
            let e = parse("clone", &[src, "h:/d/1/2/disk.0", "2", "1"]).unwrap_err();
            assert_eq!(exit_code(&e), 2, "{src}: {e}");
        }
        for src in ["-x", "/d/../x", "h:../x"] {
            let e = parse("mvds", &["h:/d/1/2/disk.0", src, "2", "1"]).unwrap_err();
            assert_eq!(exit_code(&e), 2, "{src}: {e}");
        }
        let ok = parse(
            "mvds",
            &["h:/d/1/2/disk.0", "kvm1:vg-one-100/img-one-6", "2", "100"],
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn migrate_caller_tm_must_be_a_driver_name() {
        use base64::Engine;
        let vm = base64::engine::general_purpose::STANDARD.encode("<VM><ID>7</ID></VM>");
        let run = |tm: &str| {
            let args: Vec<OsString> =
                ["h1", "h2", "/var/lib/one//datastores/101/7", "7", "101", tm]
                    .iter()
                    .map(OsString::from)
                    .collect();
            TmArgs::parse("postmigrate", &args, &mut vm.as_bytes())
        };
        match run("fs_lvm_ssh").unwrap() {
            TmArgs::Postmigrate(m) => {
                assert_eq!(m.caller_tm.as_deref(), Some("fs_lvm_ssh"));
                assert_eq!(m.vm_dir, "/var/lib/one/datastores/101/7");
                assert_eq!(m.vm.id, 7);
            }
            other => panic!("{other:?}"),
        }
        for bad in ["", "-x", "a b", "$(id)"] {
            assert_eq!(exit_code(&run(bad).unwrap_err()), 2, "{bad:?}");
        }
    }
}
