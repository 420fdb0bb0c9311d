//! The FUSE side of lvfs: a two-level tree `<vg>/<lv>` over the host's current [`Snapshot`].
//!
//! Invariants:
//! - Every answer about names or sizes (lookup, readdir, getattr, open) comes from a snapshot
//!   that describes the host after the request arrived: either taken after it (concurrent
//!   refreshes are coalesced), or proven still current by the host's stamp (lvm.conf and the
//!   attached volume files unchanged; see [`HostStamp`]), so a change made by
//!   lvcreate/lvextend/lvremove/vgextend before the request is always seen, without running
//!   `lvs` for every path walk. Nothing is cached by the kernel (zero TTLs, direct I/O: no page
//!   cache in front of the LV files).
//! - I/O uses the latest snapshot, refreshed first when the host's lvm.conf changed (a volume
//!   was attached or detached) or when the access reaches past the LV's known end (an lvextend
//!   while the file is open), so a handle follows its LV by name, as a dm device would.
//! - The session loop only dispatches: every request that may run LVM or touch a volume file
//!   runs on a worker thread, so 2–4 concurrent readers/writers proceed in parallel.
//! - LV files are `0660 root`; only root may open them (no kernel permission checks, which
//!   would refresh on every path walk).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use fuser::consts::{FOPEN_DIRECT_IO, FUSE_ATOMIC_O_TRUNC};
use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyWrite, Request, TimeOrNow,
};
use libc::{EACCES, EINVAL, EIO, EISDIR, ENOENT, ENOSPC, ENXIO, EOPNOTSUPP, EPERM};

use super::map::{self, Backings, HostStamp, LvMap, Snapshot};
use crate::sim::hostview::HostView;
use crate::sys;

/// Nothing is cached by the kernel: LVM changes underneath at any time.
const TTL: Duration = Duration::ZERO;

/// Largest write the kernel sends in one request.
pub(crate) const MAX_WRITE: u32 = 1 << 20;

type Errno = i32;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Node {
    Root,
    Vg(String),
    Lv(String, String),
}

/// Inode numbers are handed out once per name and never reused while mounted.
#[derive(Debug)]
struct Inodes {
    next: u64,
    by_node: HashMap<Node, u64>,
    by_ino: HashMap<u64, Node>,
}

impl Inodes {
    fn new() -> Inodes {
        let mut i = Inodes {
            next: fuser::FUSE_ROOT_ID + 1,
            by_node: HashMap::new(),
            by_ino: HashMap::new(),
        };
        i.by_node.insert(Node::Root, fuser::FUSE_ROOT_ID);
        i.by_ino.insert(fuser::FUSE_ROOT_ID, Node::Root);
        i
    }

    fn ino(&mut self, n: &Node) -> u64 {
        if let Some(&i) = self.by_node.get(n) {
            return i;
        }
        let i = self.next;
        self.next += 1;
        self.by_node.insert(n.clone(), i);
        self.by_ino.insert(i, n.clone());
        i
    }
}

/// State shared by the workers.
#[derive(Debug)]
pub(crate) struct Inner {
    view: HostView,
    state: RwLock<Arc<Snapshot>>,
    /// Held while refreshing: serialises refreshes and owns the open backing files.
    gate: Mutex<Backings>,
    inodes: Mutex<Inodes>,
    born: SystemTime,
}

fn io_errno(e: &io::Error) -> Errno {
    e.raw_os_error().unwrap_or(EIO)
}

/// The errno of a failed volume-file operation, logged: the caller only sees the number.
fn backing_errno(b: &map::Backing, what: &str, e: &io::Error) -> Errno {
    tracing::warn!("{what} {}: {e}", b.path.display());
    io_errno(e)
}

impl Inner {
    pub(crate) fn new(view: HostView) -> Inner {
        Inner {
            view,
            state: RwLock::new(Arc::new(Snapshot::empty(Instant::now()))),
            gate: Mutex::new(Backings::default()),
            inodes: Mutex::new(Inodes::new()),
            born: SystemTime::now(),
        }
    }

    fn current(&self) -> Arc<Snapshot> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A snapshot begun after this call: reuses one a concurrent caller started meanwhile.
    pub(crate) fn refresh(&self) -> Result<Arc<Snapshot>, Errno> {
        let asked = Instant::now();
        let mut backings = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.current();
        if cur.started >= asked {
            return Ok(cur);
        }
        let started = Instant::now();
        let stamp = HostStamp::of(&self.view);
        let loaded = map::read_plan(&self.view).and_then(|(plan, skipped)| {
            if !skipped.is_empty() {
                tracing::debug!("not served (not linear): {}", skipped.join(", "));
            }
            backings.resolve(plan, started, stamp)
        });
        match loaded {
            Ok(snap) => {
                let snap = Arc::new(snap);
                *self.state.write().unwrap_or_else(|e| e.into_inner()) = snap.clone();
                Ok(snap)
            }
            Err(e) => {
                tracing::warn!(
                    "reading the LVM map of {}: {e:#}",
                    self.view.root().display()
                );
                Err(EIO)
            }
        }
    }

    /// A snapshot describing the host as it is now: the current one when nothing LVM could
    /// have changed was touched since it was taken, else a refresh.
    pub(crate) fn fresh(&self) -> Result<Arc<Snapshot>, Errno> {
        let cur = self.current();
        if cur.stamp.still(&HostStamp::of(&self.view)) {
            Ok(cur)
        } else {
            self.refresh()
        }
    }

    /// The snapshot for I/O: the current one unless the host's volumes changed since.
    fn for_io(&self) -> Result<Arc<Snapshot>, Errno> {
        let cur = self.current();
        if map::file_stamp(&self.view.lvm_conf()) != cur.stamp.conf {
            self.refresh()
        } else {
            Ok(cur)
        }
    }

    /// The LV for an access ending at `end`; refreshed when the access goes past its known end.
    fn lv_for_io(&self, vg: &str, lv: &str, end: u64) -> Result<Arc<LvMap>, Errno> {
        let snap = self.for_io()?;
        match snap.lv(vg, lv) {
            Some(m) if end <= m.size => Ok(m),
            _ => self.refresh()?.lv(vg, lv).ok_or(EIO),
        }
    }

    fn node(&self, ino: u64) -> Option<Node> {
        self.inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_ino
            .get(&ino)
            .cloned()
    }

    fn ino(&self, n: &Node) -> u64 {
        self.inodes.lock().unwrap_or_else(|e| e.into_inner()).ino(n)
    }

    fn attr(&self, ino: u64, node: &Node, snap: &Snapshot) -> Option<FileAttr> {
        let (kind, perm, nlink, size) = match node {
            Node::Root => (FileType::Directory, 0o755, 2, 0),
            Node::Vg(vg) => {
                snap.vgs.get(vg)?;
                (FileType::Directory, 0o755, 2, 0)
            }
            Node::Lv(vg, lv) => (FileType::RegularFile, 0o660, 1, snap.lv(vg, lv)?.size),
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.born,
            mtime: self.born,
            ctime: self.born,
            crtime: self.born,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let name = name.to_str().ok_or(ENOENT)?;
        let node = match self.node(parent).ok_or(ENOENT)? {
            Node::Root => Node::Vg(name.to_string()),
            Node::Vg(vg) => Node::Lv(vg, name.to_string()),
            Node::Lv(..) => return Err(libc::ENOTDIR),
        };
        let snap = self.fresh()?;
        let ino = self.ino(&node);
        self.attr(ino, &node, &snap).ok_or(ENOENT)
    }

    fn getattr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.node(ino).ok_or(ENOENT)?;
        let snap = match node {
            Node::Root => self.current(),
            _ => self.fresh()?,
        };
        self.attr(ino, &node, &snap).ok_or(ENOENT)
    }

    fn entries(&self, ino: u64) -> Result<Vec<(u64, FileType, String)>, Errno> {
        let node = self.node(ino).ok_or(ENOENT)?;
        let snap = self.fresh()?;
        let mut out = vec![
            (ino, FileType::Directory, ".".to_string()),
            (fuser::FUSE_ROOT_ID, FileType::Directory, "..".to_string()),
        ];
        match node {
            Node::Root => {
                for vg in snap.vgs.keys() {
                    let i = self.ino(&Node::Vg(vg.clone()));
                    out.push((i, FileType::Directory, vg.clone()));
                }
            }
            Node::Vg(vg) => {
                let lvs = snap.vgs.get(&vg).ok_or(ENOENT)?;
                for lv in lvs.keys() {
                    let i = self.ino(&Node::Lv(vg.clone(), lv.clone()));
                    out.push((i, FileType::RegularFile, lv.clone()));
                }
            }
            Node::Lv(..) => return Err(libc::ENOTDIR),
        }
        Ok(out)
    }

    fn lv_node(&self, ino: u64) -> Result<(String, String), Errno> {
        match self.node(ino).ok_or(ENOENT)? {
            Node::Lv(vg, lv) => Ok((vg, lv)),
            _ => Err(EISDIR),
        }
    }

    fn open(&self, ino: u64, uid: u32) -> Result<(), Errno> {
        let (vg, lv) = self.lv_node(ino)?;
        if uid != 0 {
            return Err(EACCES);
        }
        self.fresh()?.lv(&vg, &lv).map(|_| ()).ok_or(ENOENT)
    }

    fn read(&self, ino: u64, off: i64, size: u32) -> Result<Vec<u8>, Errno> {
        let off = offset(off)?;
        let (vg, lv) = self.lv_node(ino)?;
        let m = self.lv_for_io(&vg, &lv, off + u64::from(size))?;
        if off >= m.size {
            return Ok(Vec::new());
        }
        let n = u64::from(size).min(m.size - off);
        let mut buf = vec![0u8; n as usize];
        for (e, s, t) in m.overlapping(off, n) {
            let (b, foff) = e.target.as_ref().ok_or(EIO)?;
            let dst = &mut buf[(s - off) as usize..(t - off) as usize];
            read_full_at(&b.file, dst, foff + (s - e.lv_start))
                .map_err(|err| backing_errno(b, "reading", &err))?;
        }
        Ok(buf)
    }

    fn write(&self, ino: u64, off: i64, data: &[u8]) -> Result<u32, Errno> {
        let off = offset(off)?;
        let (vg, lv) = self.lv_node(ino)?;
        let m = self.lv_for_io(&vg, &lv, off + data.len() as u64)?;
        if off >= m.size {
            return Err(ENOSPC);
        }
        let n = (data.len() as u64).min(m.size - off);
        for (e, s, t) in m.overlapping(off, n) {
            let (b, foff) = e.target.as_ref().ok_or(EIO)?;
            let src = &data[(s - off) as usize..(t - off) as usize];
            b.file
                .write_all_at(src, foff + (s - e.lv_start))
                .map_err(|err| backing_errno(b, "writing", &err))?;
        }
        Ok(n as u32)
    }

    /// What a block device accepts: punch a hole, or zero a range.
    fn fallocate(&self, ino: u64, off: i64, len: i64, mode: i32) -> Result<(), Errno> {
        let (off, len) = (offset(off)?, offset(len)?);
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        let zero = mode & !libc::FALLOC_FL_KEEP_SIZE == libc::FALLOC_FL_ZERO_RANGE;
        if mode != punch && !zero {
            return Err(EOPNOTSUPP);
        }
        let (vg, lv) = self.lv_node(ino)?;
        let end = off.checked_add(len).ok_or(EINVAL)?;
        let m = self.lv_for_io(&vg, &lv, end)?;
        if end > m.size {
            return Err(EINVAL);
        }
        for (e, s, t) in m.overlapping(off, len) {
            let (b, foff) = e.target.as_ref().ok_or(EIO)?;
            let (fo, fl) = (foff + (s - e.lv_start), t - s);
            let r = if zero {
                // tmpfs has no ZERO_RANGE; a hole reads as zeros just the same.
                sys::zero_range(&b.file, fo, fl).or_else(|err| {
                    if err.raw_os_error() == Some(EOPNOTSUPP) {
                        sys::punch_hole(&b.file, fo, fl)
                    } else {
                        Err(err)
                    }
                })
            } else {
                sys::punch_hole(&b.file, fo, fl)
            };
            r.map_err(|err| backing_errno(b, "deallocating in", &err))?;
        }
        Ok(())
    }

    /// SEEK_DATA / SEEK_HOLE answered from the backing files, extent by extent.
    fn lseek(&self, ino: u64, off: i64, whence: i32) -> Result<u64, Errno> {
        let off = offset(off)?;
        let (vg, lv) = self.lv_node(ino)?;
        let m = self.lv_for_io(&vg, &lv, off)?;
        if off >= m.size {
            return Err(ENXIO);
        }
        let want_data = match whence {
            libc::SEEK_DATA => true,
            libc::SEEK_HOLE => false,
            _ => return Err(EINVAL),
        };
        for (e, s, t) in m.overlapping(off, m.size - off) {
            let Some((b, foff)) = &e.target else {
                // A missing PV: its range is "data" (reading it fails loudly).
                if want_data {
                    return Ok(s);
                }
                continue;
            };
            let from = foff + (s - e.lv_start);
            let until = foff + (t - e.lv_start);
            let found = if want_data {
                sys::seek_data(&b.file, from)
            } else {
                sys::seek_hole(&b.file, from)
            };
            match found {
                Ok(Some(p)) if p < until => return Ok(e.lv_start + (p - foff)),
                // Past this extent: keep looking in the next one.
                Ok(Some(_)) => {}
                // No data after `from` in the whole file; for holes, `from` is in one.
                Ok(None) if want_data => {}
                Ok(None) => return Ok(s),
                // The file system cannot tell: everything is data.
                Err(_) if want_data => return Ok(s),
                Err(_) => {}
            }
        }
        if want_data {
            Err(ENXIO)
        } else {
            Ok(m.size)
        }
    }

    fn sync(&self, ino: u64) -> Result<(), Errno> {
        let (vg, lv) = self.lv_node(ino)?;
        let m = self.lv_for_io(&vg, &lv, 0)?;
        for b in m.backings() {
            b.file
                .sync_data()
                .map_err(|err| backing_errno(&b, "syncing", &err))?;
        }
        Ok(())
    }
}

/// The kernel's signed offsets and lengths; a negative one is invalid.
fn offset(v: i64) -> Result<u64, Errno> {
    u64::try_from(v).map_err(|_| EINVAL)
}

fn read_full_at(f: &std::fs::File, buf: &mut [u8], off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            // Past the end of the file: the rest stays zero, like a sparse tail.
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of worker threads taking jobs from one queue.
#[derive(Debug)]
struct Pool {
    tx: mpsc::Sender<Job>,
}

impl Pool {
    fn new(threads: usize) -> Pool {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("lvfs-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => break,
                    }
                })
                .expect("spawning an lvfs worker thread");
        }
        Pool { tx }
    }

    fn run(&self, job: impl FnOnce() + Send + 'static) {
        // The workers live as long as the sender: a send cannot fail while we exist.
        let _ = self.tx.send(Box::new(job));
    }
}

/// The file system handed to fuser.
#[derive(Debug)]
pub(crate) struct Lvfs {
    inner: Arc<Inner>,
    pool: Pool,
}

impl Lvfs {
    pub(crate) fn new(view: HostView, threads: usize) -> Lvfs {
        Lvfs {
            inner: Arc::new(Inner::new(view)),
            pool: Pool::new(threads),
        }
    }

    /// Runs `f` on a worker with the shared state.
    fn spawn(&self, f: impl FnOnce(&Inner) + Send + 'static) {
        let inner = self.inner.clone();
        self.pool.run(move || f(&inner));
    }

    /// Runs an operation that answers nothing but success or an errno on a worker.
    fn spawn_empty(
        &self,
        reply: ReplyEmpty,
        op: impl FnOnce(&Inner) -> Result<(), Errno> + Send + 'static,
    ) {
        self.spawn(move |i| match op(i) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        });
    }
}

impl Filesystem for Lvfs {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), i32> {
        // O_TRUNC arrives as an open flag (ignored, as on a block device), not as a truncate.
        let _ = config.add_capabilities(FUSE_ATOMIC_O_TRUNC);
        let _ = config.set_max_write(MAX_WRITE);
        Ok(())
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_owned();
        self.spawn(move |i| match i.lookup(parent, &name) {
            Ok(a) => reply.entry(&TTL, &a, 0),
            Err(e) => reply.error(e),
        });
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        self.spawn(move |i| match i.getattr(ino) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        });
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        if mode.is_some() || uid.is_some() || gid.is_some() {
            reply.error(EPERM);
            return;
        }
        // A block device's size is the LV's: truncating to anything else is invalid.
        self.spawn(move |i| match i.getattr(ino) {
            Ok(a) if size.is_none_or(|s| s == a.size) => reply.attr(&TTL, &a),
            Ok(_) => reply.error(EINVAL),
            Err(e) => reply.error(e),
        });
    }

    fn open(&mut self, req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let uid = req.uid();
        self.spawn(move |i| match i.open(ino, uid) {
            Ok(()) => reply.opened(0, FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        });
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        self.spawn(move |i| match i.read(ino, offset, size) {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(e),
        });
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let data = data.to_vec();
        self.spawn(move |i| match i.write(ino, offset, &data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        });
    }

    fn flush(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _lo: u64, reply: ReplyEmpty) {
        self.spawn_empty(reply, move |i| i.sync(ino));
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _ds: bool, reply: ReplyEmpty) {
        self.spawn_empty(reply, move |i| i.sync(ino));
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        self.spawn(move |i| match i.entries(ino) {
            Ok(entries) => {
                let skip = usize::try_from(offset).unwrap_or(0);
                for (n, (ino, kind, name)) in entries.into_iter().enumerate().skip(skip) {
                    if reply.add(ino, (n + 1) as i64, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        });
    }

    fn access(&mut self, req: &Request<'_>, ino: u64, mask: i32, reply: ReplyEmpty) {
        let uid = req.uid();
        match self.inner.node(ino) {
            None => reply.error(ENOENT),
            Some(_) if uid == 0 || mask == libc::F_OK => reply.ok(),
            Some(Node::Lv(..)) => reply.error(EACCES),
            Some(_) if mask & libc::W_OK != 0 => reply.error(EACCES),
            Some(_) => reply.ok(),
        }
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.spawn_empty(reply, move |i| i.fallocate(ino, offset, length, mode));
    }

    fn lseek(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.spawn(move |i| match i.lseek(ino, offset, whence) {
            Ok(p) => reply.offset(p as i64),
            Err(e) => reply.error(e),
        });
    }

    // Names are LVM's business (lvcreate, lvrename, lvremove), not the file system's.

    fn mknod(
        &mut self,
        _req: &Request<'_>,
        _parent: u64,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(EPERM);
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        _parent: u64,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(EPERM);
    }

    fn unlink(&mut self, _req: &Request<'_>, _parent: u64, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(EPERM);
    }

    fn rmdir(&mut self, _req: &Request<'_>, _parent: u64, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(EPERM);
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        _parent: u64,
        _name: &OsStr,
        _newparent: u64,
        _newname: &OsStr,
        _flags: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(EPERM);
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        _parent: u64,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply.error(EPERM);
    }
}
