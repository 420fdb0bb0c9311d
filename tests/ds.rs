//! The image datastore actions end to end (issue 5): the real `remotes/datastore/bsud/<action>`
//! entries (installed as oned finds them) run against a testbed — the simulated cloud and
//! hosts with real LVM — with messages built like oned builds them, in the three ways a
//! message arrives (argv ≤ 6.6, `-` + stdin, 7.x stdin). The image host is kvm1
//! (`BSUD_IMAGE_HOST`). stdout is compared byte for byte; LV contents are compared by their
//! stream digests (host `checksum` against the same digest of the expected bytes).
//! Tests named `ds_*`.

mod support;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bsud::config::{Config, Env};
use bsud::host::client::HostClient;
use bsud::host::transfer::{self, LvLoc};
use bsud::lvm::Lv;
use bsud::sim::cloud::client::SimClient;
use bsud::sim::one::{b64, ds_message, stat_message, DatastoreSpec, ImageSpec};
use bsud::sim::testbed::{Testbed, TestbedOpts};
use support::{Install, Kind, Out, Via};

const MIB: u64 = 1 << 20;
const DS: i64 = 100;
const VG: &str = "vg-one-100";

/// How oned hands the message over (reference §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `<b64> <id>` (≤ 6.6).
    Argv,
    /// `- <id>` + stdin (6.4.5+/6.6.2+ with `-i`).
    Dash,
    /// `<id>` + stdin (6.8+, 7.x).
    Stdin,
}

const MODES: [Mode; 3] = [Mode::Argv, Mode::Dash, Mode::Stdin];

/// A testbed with the driver installed and an image datastore on kvm1.
struct Bed {
    install: Install,
    hosts: HostClient,
    ds: DatastoreSpec,
    env: Vec<(String, String)>,
    tb: Testbed,
}

impl Bed {
    fn new() -> Bed {
        Bed::with(&[])
    }

    /// With more datastore attributes.
    fn with(attrs: &[(&str, &str)]) -> Bed {
        let mut o = TestbedOpts::new(
            env!("CARGO_BIN_EXE_bsud-sim"),
            env!("CARGO_BIN_EXE_one-bsud"),
        );
        o.serve_args = [
            "--create-delay-ms",
            "10",
            "--attach-delay-ms",
            "10",
            "--detach-delay-ms",
            "10",
            "--delete-delay-ms",
            "10",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let tb = Testbed::start(o).expect("testbed starts");
        let mut ds = DatastoreSpec::image(DS)
            .attr("BSUD_IMAGE_HOST", "kvm1")
            .attr("BSUD_MIN_VOLUME_GIB", "1")
            .attr("BSUD_HEADROOM_GIB", "0")
            .attr("BSUD_MAX_SIZE_GIB", "64");
        for (k, v) in attrs {
            ds = ds.attr(k, v);
        }
        let mut env = tb.env();
        env.push((
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ));
        let config = Config::load(&Env::from_pairs(env.clone())).unwrap();
        let hosts = HostClient::new(&config).with_local_exe(env!("CARGO_BIN_EXE_one-bsud").into());
        std::fs::create_dir_all(tb.frontend().root().join("var/tmp")).unwrap();
        Bed {
            install: Install::new(),
            hosts,
            ds,
            env,
            tb,
        }
    }

    /// Runs datastore action `action` with message `xml` and id argument `id`.
    fn run(&self, via: Via, mode: Mode, action: &str, xml: &str, id: &str) -> Out {
        let msg = b64(xml);
        let (mut args, stdin): (Vec<OsString>, Vec<u8>) = match mode {
            Mode::Argv => (vec![msg.into(), id.into()], Vec::new()),
            Mode::Dash => (vec!["-".into(), id.into()], msg.into_bytes()),
            Mode::Stdin => (vec![id.into()], msg.into_bytes()),
        };
        let program = match via {
            Via::Entry => self.install.entry(Kind::Ds, action),
            Via::Symlink => self.install.symlink(Kind::Ds, action),
            Via::Explicit => {
                args.splice(0..0, [OsString::from("ds"), OsString::from(action)]);
                self.install.binary()
            }
        };
        let env: Vec<(&str, &OsStr)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), OsStr::new(v)))
            .collect();
        self.install.exec_env(&program, &args, &stdin, &env)
    }

    /// oned's way in 7.x: the entry, message on stdin.
    fn act(&self, action: &str, xml: &str, id: &str) -> Out {
        self.run(Via::Entry, Mode::Stdin, action, xml, id)
    }

    fn msg(&self, image: &ImageSpec) -> String {
        ds_message(Some(image), &self.ds, "")
    }

    /// A file on the frontend (under its root), and the path OpenNebula names it by.
    fn fe_file(&self, name: &str) -> (PathBuf, String) {
        let logical = format!("/var/tmp/{name}");
        (self.tb.frontend().root().join(&logical[1..]), logical)
    }

    fn lvs(&self) -> Vec<Lv> {
        self.hosts
            .lv_list("kvm1", &VG.parse().unwrap(), &[])
            .unwrap()
            .lvs
    }

    fn lv_names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.lvs().into_iter().map(|l| l.name).collect();
        n.sort();
        n
    }

    fn lv(&self, name: &str) -> Option<Lv> {
        self.lvs().into_iter().find(|l| l.name == name)
    }

    fn loc(&self, lv: &str) -> LvLoc {
        LvLoc {
            host: "kvm1".into(),
            lv: format!("{VG}/{lv}").parse().unwrap(),
        }
    }

    /// The LV's bytes as the testbed exposes them (lvfs).
    fn lv_file(&self, lv: &str) -> PathBuf {
        self.tb
            .host("kvm1")
            .unwrap()
            .view
            .lv_dir()
            .join(VG)
            .join(lv)
    }

    /// `len` bytes of an LV at `offset`, read through lvfs.
    fn read_lv(&self, lv: &str, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        std::fs::File::open(self.lv_file(lv))
            .unwrap()
            .read_exact_at(&mut buf, offset)
            .unwrap();
        buf
    }

    /// The stream digest of an LV's first `size` bytes (whole LV by default), on its host.
    fn lv_digest(&self, lv: &str, size: Option<u64>) -> String {
        transfer::checksum(&self.hosts, &self.loc(lv), size, false)
            .unwrap()
            .digest
    }

    /// Creates a tagged LV the way another action would (TM snapshots, foreign LVs).
    fn make_lv(&self, lv: &str, bytes: u64, tag: &str) {
        let e = bsud::drive::engine::Engine {
            cloud: &self.cloud(),
            hosts: &self.hosts,
            lock_dir: self.tb.frontend().lock_dir(),
            timeouts: Config::load(&Env::from_pairs(self.env.clone()))
                .unwrap()
                .timeouts,
        };
        let d = bsud::drive::engine::DriveRef {
            host: "kvm1".into(),
            ds: DS,
            settings: bsud::config::DriveSettings::from_template(
                &bsud::one::message::Datastore::from_xml(&self.ds.xml())
                    .unwrap()
                    .template,
            )
            .unwrap(),
        };
        e.with_space(&d, bytes, |_| {
            self.hosts
                .lv_create("kvm1", &VG.parse()?, &lv.parse()?, bytes, &[tag.parse()?])
        })
        .unwrap();
    }

    fn cloud(&self) -> bsud::cloud::outscale::OutscaleCloud {
        let c = Config::load(&Env::from_pairs(self.env.clone())).unwrap();
        bsud::cloud::outscale::OutscaleCloud::new(&c.cloud.resolve().unwrap()).unwrap()
    }

    fn create_volume_calls(&self) -> u64 {
        SimClient::for_addr(self.tb.addr())
            .unwrap()
            .stats()
            .unwrap()
            .calls
            .get("CreateVolume")
            .map(|c| c.ok)
            .unwrap_or(0)
    }
}

/// The stream digest of a local file's first `size` bytes.
fn file_digest(p: &Path, size: Option<u64>) -> String {
    bsud::stream::digest_of(std::fs::File::open(p).unwrap(), size).unwrap()
}

/// Deterministic bytes that neither compress nor look like zeros.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// A sparse file of `size` bytes with `extents` of noise at (offset, len).
fn sparse_file(p: &Path, size: u64, extents: &[(u64, usize)], seed: u64) {
    let f = std::fs::File::create(p).unwrap();
    f.set_len(size).unwrap();
    for (i, (off, len)) in extents.iter().enumerate() {
        f.write_all_at(&noise(seed + i as u64, *len), *off).unwrap();
    }
    f.sync_all().unwrap();
}

/// `qemu-img convert -O <fmt> from to` (test inputs: qemu may probe them).
fn convert(from: &str, to: &str, fmt: &str) {
    run_cmd("qemu-img", &["convert", "-O", fmt, from, to]);
}

fn run_cmd(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

trait Empty {
    fn ok_empty(&self, what: &str);
}

impl Empty for Out {
    /// Success with nothing on stdout (rm, snap_*).
    #[track_caller]
    fn ok_empty(&self, what: &str) {
        assert_eq!(
            (self.code, self.stdout_text().as_str()),
            (0, ""),
            "{what}: stderr: {}",
            self.stderr_text()
        );
    }
}

fn line(out: &Out, want: &str, what: &str) {
    assert_eq!(
        (out.code, out.stdout_text().as_str()),
        (0, format!("{want}\n").as_str()),
        "{what}: stderr: {}",
        out.stderr_text()
    );
}

/// The last stderr line (the error oned shows).
fn last_line(out: &Out) -> String {
    out.stderr_text()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

#[track_caller]
fn fails(out: &Out, code: i32, want: &str) {
    assert!(out.stdout.is_empty(), "stdout: {}", out.stdout_text());
    assert_eq!(
        (out.code, last_line(out).as_str()),
        (code, want),
        "stderr: {}",
        out.stderr_text()
    );
}

fn image(id: i64, path: &str, size_mb: u64) -> ImageSpec {
    ImageSpec::os(id, DS, path, size_mb)
}

/// An image as oned sends it once it exists (rm, clone source, snapshots, export).
fn existing(id: i64) -> ImageSpec {
    let mut i = image(id, "", 64);
    i.source = format!("kvm1:{VG}/img-one-{id}");
    i.format = "raw".into();
    i.state = 1;
    i
}

#[test]
fn ds_lifecycle_every_action_every_mode() {
    let bed = Bed::new();
    // A 64 MiB sparse raw image with data at both ends.
    let (file, path) = bed.fe_file("disk.raw");
    sparse_file(&file, 64 * MIB, &[(0, 3 << 20), (60 * MIB, 4 << 20)], 1);
    let want = file_digest(&file, None);

    // stat: the size in MB, every mode.
    for (mode, via) in MODES.iter().zip([Via::Entry, Via::Symlink, Via::Explicit]) {
        let out = bed.run(via, *mode, "stat", &stat_message(&path, &bed.ds), "0");
        line(&out, "64", &format!("stat {mode:?}"));
    }

    // cp: images 1, 2, 3 in the three modes; the first with the file's MD5, which a wrong one
    // (image 9) fails.
    let file_md5 = transfer_md5(&std::fs::read(&file).unwrap());
    let mut wrong = image(9, &path, 64);
    wrong.attrs.push(("MD5".into(), "f".repeat(32)));
    fails(
        &bed.act("cp", &bed.msg(&wrong), "9"),
        1,
        &format!(
            "cp: MD5 of {path} is {file_md5}, the image template says {}",
            "f".repeat(32)
        ),
    );
    assert_eq!(bed.lv_names(), Vec::<String>::new());
    for (n, mode) in MODES.iter().enumerate() {
        let id = n as i64 + 1;
        let mut img = image(id, &path, 64);
        if id == 1 {
            img.attrs.push(("MD5".into(), file_md5.to_uppercase()));
        }
        let out = bed.run(Via::Entry, *mode, "cp", &bed.msg(&img), &id.to_string());
        line(
            &out,
            &format!("kvm1:{VG}/img-one-{id} raw"),
            &format!("cp {mode:?}"),
        );
        assert_eq!(
            bed.lv_digest(&format!("img-one-{id}"), Some(64 * MIB)),
            want
        );
    }
    let lv1 = bed.lv("img-one-1").unwrap();
    assert!(
        lv1.tags.contains(&"one.image=1".to_string()),
        "{:?}",
        lv1.tags
    );
    assert!(lv1.tags.contains(&"one.bsud.state=ready".to_string()));
    // A rerun after success answers the same and touches nothing.
    let out = bed.act("cp", &bed.msg(&image(1, &path, 64)), "1");
    line(&out, &format!("kvm1:{VG}/img-one-1 raw"), "cp rerun");
    assert_eq!(bed.lv("img-one-1").unwrap().uuid, lv1.uuid);

    // monitor: TOTAL is the growth limit, USED what the LVs hold.
    for mode in MODES {
        let out = bed.run(
            Via::Entry,
            mode,
            "monitor",
            &ds_message(None, &bed.ds, ""),
            "100",
        );
        assert_eq!(
            (out.code, out.stdout_text().as_str()),
            (0, "USED_MB=192\nFREE_MB=65344\nTOTAL_MB=65536\n"),
            "monitor {mode:?}: {}",
            out.stderr_text()
        );
    }

    // mkfs: ext4, swap, save_as.
    let ext4 = ImageSpec::datablock(4, DS, 32, "ext4");
    line(
        &bed.run(Via::Entry, Mode::Argv, "mkfs", &bed.msg(&ext4), "4"),
        &format!("kvm1:{VG}/img-one-4"),
        "mkfs ext4",
    );
    assert_eq!(
        bed.read_lv("img-one-4", 1024 + 56, 2),
        [0x53, 0xef],
        "ext4 superblock magic"
    );
    line(
        &bed.act("mkfs", &bed.msg(&ext4), "4"),
        &format!("kvm1:{VG}/img-one-4"),
        "mkfs rerun",
    );
    let mut swap = ImageSpec::datablock(5, DS, 16, "");
    swap.format = "swap".into();
    line(
        &bed.run(Via::Symlink, Mode::Dash, "mkfs", &bed.msg(&swap), "5"),
        &format!("kvm1:{VG}/img-one-5"),
        "mkfs swap",
    );
    assert_eq!(bed.read_lv("img-one-5", 4096 - 10, 10), b"SWAPSPACE2");
    let mut save_as = ImageSpec::datablock(6, DS, 16, "");
    save_as.format = "save_as".into();
    line(
        &bed.run(Via::Explicit, Mode::Stdin, "mkfs", &bed.msg(&save_as), "6"),
        &format!("kvm1:{VG}/img-one-6"),
        "mkfs save_as",
    );
    assert!(bed.lv("img-one-6").is_none(), "save_as creates nothing");
    let mut btrfs = ImageSpec::datablock(7, DS, 16, "btrfs");
    btrfs.id = 7;
    fails(
        &bed.act("mkfs", &bed.msg(&btrfs), "7"),
        2,
        "mkfs: file system \"btrfs\" is not supported (ext2, ext3, ext4, xfs, vfat, swap)",
    );
    assert!(bed.lv("img-one-7").is_none());

    // clone: images 11, 12, 13 from image 1, every mode.
    for (n, mode) in MODES.iter().enumerate() {
        let id = 11 + n as i64;
        let mut c = image(id, &format!("kvm1:{VG}/img-one-1"), 64);
        c.cloning_id = 1;
        c.format = "raw".into();
        let out = bed.run(Via::Entry, *mode, "clone", &bed.msg(&c), &id.to_string());
        line(
            &out,
            &format!("kvm1:{VG}/img-one-{id} raw"),
            &format!("clone {mode:?}"),
        );
        assert_eq!(
            bed.lv_digest(&format!("img-one-{id}"), Some(64 * MIB)),
            want
        );
    }

    // clone across datastores: image 1 into datastore 101 whose image host is kvm2 (pulled
    // host to host).
    let ds101 = DatastoreSpec::image(101)
        .attr("BSUD_IMAGE_HOST", "kvm2")
        .attr("BSUD_MIN_VOLUME_GIB", "1");
    let mut c = ImageSpec::os(14, 101, &format!("kvm1:{VG}/img-one-1"), 64);
    c.cloning_id = 1;
    let xml = ds_message(
        Some(&c),
        &ds101,
        "<SOURCE_BRIDGE_LIST>kvm1</SOURCE_BRIDGE_LIST>",
    );
    line(
        &bed.act("clone", &xml, "14"),
        "kvm2:vg-one-101/img-one-14 raw",
        "clone across",
    );
    let on_kvm2 = LvLoc {
        host: "kvm2".into(),
        lv: "vg-one-101/img-one-14".parse().unwrap(),
    };
    assert_eq!(
        transfer::checksum(&bed.hosts, &on_kvm2, Some(64 * MIB), false)
            .unwrap()
            .digest,
        want
    );
    let mut gone = ImageSpec::os(14, 101, "", 64);
    gone.source = "kvm2:vg-one-101/img-one-14".into();
    bed.act("rm", &ds_message(Some(&gone), &ds101, ""), "14")
        .ok_empty("rm across");

    // export: the marketplace's document; its IMPORT_SOURCE path is the LV's node on kvm1.
    let md5 = {
        let bytes = std::fs::read(bed.lv_file("img-one-1")).unwrap();
        transfer_md5(&bytes)
    };
    let node = bed.lv_file("img-one-1");
    let doc = format!(
        "<IMPORT_INFO><IMPORT_SOURCE><![CDATA[ssh://kvm1:{}]]></IMPORT_SOURCE><MD5><![CDATA[{md5}]]></MD5><SIZE><![CDATA[64]]></SIZE><FORMAT><![CDATA[raw]]></FORMAT><DISPOSE>NO</DISPOSE></IMPORT_INFO>\n",
        node.display()
    );
    for mode in MODES {
        let out = bed.run(Via::Entry, mode, "export", &bed.msg(&existing(1)), "42");
        assert_eq!(
            (out.code, out.stdout_text()),
            (0, doc.clone()),
            "export {mode:?}: {}",
            out.stderr_text()
        );
    }

    // Snapshots as TM leaves them: img-one-1-snap-<sid>, tagged one.image=1.
    for (sid, seed) in [(0u32, 10u64), (1, 11), (2, 12)] {
        let name = format!("img-one-1-snap-{sid}");
        bed.make_lv(&name, 64 * MIB, "one.image=1");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(bed.lv_file(&name))
            .unwrap();
        f.write_all_at(&noise(seed, 1 << 20), 8 * MIB).unwrap();
        f.sync_all().unwrap();
    }
    let snap = |sid: i64| {
        let mut i = existing(1);
        i.target_snapshot = sid;
        i.snapshots = vec![0, 1, 2];
        i
    };
    let snap0 = bed.lv_digest("img-one-1-snap-0", None);
    let snap2 = bed.lv_digest("img-one-1-snap-2", None);
    // Revert: the image reads exactly as snapshot 0 (its own data at 0 and 60 MiB zeroed).
    bed.run(
        Via::Entry,
        Mode::Argv,
        "snap_revert",
        &bed.msg(&snap(0)),
        "1",
    )
    .ok_empty("snap_revert");
    assert_eq!(bed.lv_digest("img-one-1", None), snap0);
    bed.run(
        Via::Symlink,
        Mode::Dash,
        "snap_delete",
        &bed.msg(&snap(1)),
        "1",
    )
    .ok_empty("snap_delete");
    assert!(bed.lv("img-one-1-snap-1").is_none());
    // A retry of a delete whose answer oned lost: success, with a warning naming the snapshot.
    let again = bed.act("snap_delete", &bed.msg(&snap(1)), "1");
    again.ok_empty("snap_delete rerun");
    assert!(
        again.stderr_text().contains(&format!(
            "WARN: snap_delete: snapshot 1 of image 1 does not exist (no LV {VG}/img-one-1-snap-1 on kvm1); nothing to delete"
        )),
        "{}",
        again.stderr_text()
    );
    fails(
        &bed.act("snap_revert", &bed.msg(&snap(7)), "1"),
        1,
        &format!("snap_revert: snapshot 7 of image 1 does not exist (no LV {VG}/img-one-1-snap-7 on kvm1)"),
    );
    // Flatten onto snapshot 2: its content, and no snapshot LV left.
    bed.run(
        Via::Explicit,
        Mode::Stdin,
        "snap_flatten",
        &bed.msg(&snap(2)),
        "1",
    )
    .ok_empty("snap_flatten");
    assert_eq!(bed.lv_digest("img-one-1", None), snap2);
    assert!(
        !bed.lv_names()
            .iter()
            .any(|n| n.starts_with("img-one-1-snap")),
        "{:?}",
        bed.lv_names()
    );
    assert!(!bed
        .lv("img-one-1")
        .unwrap()
        .tags
        .iter()
        .any(|t| t.contains("flatten")));

    // rm, every mode; then again (already gone is success).
    for (mode, id) in MODES.iter().zip([1i64, 2, 3]) {
        bed.run(
            Via::Entry,
            *mode,
            "rm",
            &bed.msg(&existing(id)),
            &id.to_string(),
        )
        .ok_empty(&format!("rm {mode:?}"));
    }
    bed.act("rm", &bed.msg(&existing(1)), "1")
        .ok_empty("rm rerun");
    for id in [4, 5, 11, 12, 13] {
        bed.act("rm", &bed.msg(&existing(id)), &id.to_string())
            .ok_empty("rm");
    }
    assert_eq!(bed.lv_names(), Vec::<String>::new());
    let out = bed.act("monitor", &ds_message(None, &bed.ds, ""), "100");
    assert_eq!(
        out.stdout_text(),
        "USED_MB=0\nFREE_MB=65536\nTOTAL_MB=65536\n"
    );
}

fn transfer_md5(bytes: &[u8]) -> String {
    use std::process::Stdio;
    let mut child = std::process::Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = bytes.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// A small HTTP/1.1 server: files with byte ranges, a redirect, a 404, a truncated body.

/// What the server did.
#[derive(Debug, Default, Clone)]
struct Served {
    /// Requests per path, with their Range header.
    requests: Vec<(String, Option<String>)>,
    /// Body bytes sent.
    body_bytes: u64,
}

struct HttpServer {
    addr: std::net::SocketAddr,
    files: Arc<Mutex<BTreeMap<String, Arc<Vec<u8>>>>>,
    served: Arc<Mutex<Served>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    fn start() -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let files: Arc<Mutex<BTreeMap<String, Arc<Vec<u8>>>>> = Arc::default();
        let served: Arc<Mutex<Served>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (f, sv, st) = (files.clone(), served.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (f, sv) = (f.clone(), sv.clone());
                        std::thread::spawn(move || {
                            let _ = serve(conn, &f, &sv);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HttpServer {
            addr,
            files,
            served,
            stop,
            thread: Some(thread),
        }
    }

    fn put(&self, name: &str, data: Vec<u8>) -> String {
        self.files
            .lock()
            .unwrap()
            .insert(name.to_string(), Arc::new(data));
        self.url(&format!("/files/{name}"))
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn served(&self) -> Served {
        std::mem::take(&mut *self.served.lock().unwrap())
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut conn: TcpStream,
    files: &Mutex<BTreeMap<String, Arc<Vec<u8>>>>,
    served: &Mutex<Served>,
) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    served
        .lock()
        .unwrap()
        .requests
        .push((path.clone(), range.clone()));
    let path = path.split('?').next().unwrap_or_default().to_string();
    if let Some(name) = path.strip_prefix("/redirect/") {
        let to = format!("/files/{name}");
        write!(
            conn,
            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    }
    let (name, truncated) = match (
        path.strip_prefix("/files/"),
        path.strip_prefix("/truncated/"),
    ) {
        (Some(n), _) => (n, false),
        (_, Some(n)) => (n, true),
        _ => ("", false),
    };
    let Some(data) = files.lock().unwrap().get(name).cloned() else {
        write!(
            conn,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    };
    let len = data.len() as u64;
    let parsed = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| {
            let (a, b) = r.split_once('-')?;
            if a.is_empty() {
                let n: u64 = b.parse().ok()?;
                Some((len.saturating_sub(n), len.checked_sub(1)?))
            } else {
                let a: u64 = a.parse().ok()?;
                let b: u64 = if b.is_empty() {
                    len.checked_sub(1)?
                } else {
                    b.parse::<u64>().ok()?.min(len.checked_sub(1)?)
                };
                (a <= b).then_some((a, b))
            }
        });
    let (status, start, end) = match parsed {
        Some((a, b)) if !truncated => ("206 Partial Content", a, b + 1),
        _ => ("200 OK", 0, len),
    };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n",
        end - start
    );
    if status.starts_with("206") {
        head.push_str(&format!(
            "Content-Range: bytes {start}-{}/{len}\r\n",
            end - 1
        ));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    let body_end = if truncated {
        start + (end - start) / 2
    } else {
        end
    };
    let mut at = start;
    while at < body_end {
        let n = (body_end - at).min(1 << 20);
        conn.write_all(&data[at as usize..(at + n) as usize])?;
        served.lock().unwrap().body_bytes += n;
        at += n;
    }
    Ok(())
}

/// `data_bytes=… wire_bytes=…` of the stream into `lv`, from cp's log.
fn pushed(out: &Out, lv: &str) -> (u64, u64) {
    let text = out.stderr_text();
    let l = text
        .lines()
        .find(|l| l.contains(&format!("into kvm1:{VG}/{lv}:")) && l.contains("wire_bytes="))
        .unwrap_or_else(|| panic!("no stream line for {lv} in: {text}"));
    let num = |k: &str| -> u64 {
        l.split(k)
            .nth(1)
            .unwrap()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (num("data_bytes="), num("wire_bytes="))
}

#[test]
fn ds_cp_qcow2_moves_its_data_not_its_size() {
    let bed = Bed::new();
    // 1 GiB virtual holding 100 MiB of data in ten extents.
    let (raw, _) = bed.fe_file("src.raw");
    let extents: Vec<(u64, usize)> = (0..10)
        .map(|i| (i * 100 * MIB + 3 * MIB, 10 << 20))
        .collect();
    sparse_file(&raw, 1 << 30, &extents, 7);
    let (qcow, path) = bed.fe_file("disk.qcow2");
    convert(raw.to_str().unwrap(), qcow.to_str().unwrap(), "qcow2");
    std::fs::remove_file(&raw).unwrap();
    let (expect, _) = bed.fe_file("expect.raw");
    convert(qcow.to_str().unwrap(), expect.to_str().unwrap(), "raw");

    line(
        &bed.act("stat", &stat_message(&path, &bed.ds), "3"),
        "1024",
        "stat qcow2",
    );
    let out = bed.act("cp", &bed.msg(&image(1, &path, 1024)), "1");
    line(&out, &format!("kvm1:{VG}/img-one-1 raw"), "cp qcow2");
    let (data, wire) = pushed(&out, "img-one-1-import");
    let qcow_len = std::fs::metadata(&qcow).unwrap().len();
    // The wire carries the data plus frame headers and block digests (< 1%).
    assert!(
        (100 * MIB..=qcow_len + qcow_len / 100).contains(&wire) && data <= qcow_len,
        "moved {wire} bytes on the wire ({data} of data) for a {qcow_len}-byte qcow2"
    );
    // The scratch LV is gone; the image is exactly the virtual size and reads as qemu's raw.
    assert_eq!(bed.lv_names(), ["img-one-1"]);
    assert_eq!(bed.lv("img-one-1").unwrap().size, 1 << 30);
    assert_eq!(bed.lv_digest("img-one-1", None), file_digest(&expect, None));
}

#[test]
fn ds_http_and_compressed_sources() {
    let bed = Bed::new();
    let http = HttpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    // A raw image: 16 MiB holding 6 MiB of data; and a 256 MiB qcow2 holding 4 MiB.
    sparse_file(
        &d("a.raw"),
        16 * MIB,
        &[(0, 2 << 20), (10 * MIB, 4 << 20)],
        21,
    );
    sparse_file(&d("b.raw"), 256 * MIB, &[(MIB, 4 << 20)], 22);
    let p = |n: &str| d(n).to_str().unwrap().to_string();
    convert(&p("b.raw"), &p("b.qcow2"), "qcow2");
    for (tool, args, out) in [
        ("gzip", vec!["-k", "-1"], "a.raw.gz"),
        ("xz", vec!["-k", "-0", "-T1"], "a.raw.xz"),
        ("bzip2", vec!["-k", "-1"], "a.raw.bz2"),
        ("zstd", vec!["-q", "-1"], "a.raw.zst"),
    ] {
        let mut a: Vec<&str> = args;
        let src = p("a.raw");
        a.push(&src);
        run_cmd(tool, &a);
        assert!(d(out).exists(), "{out}");
    }
    run_cmd("gzip", &["-k", "-1", &p("b.qcow2")]);
    let raw_digest = file_digest(&d("a.raw"), None);
    let qcow_digest = file_digest(&d("b.raw"), None);
    let url = |n: &str| http.put(n, std::fs::read(d(n)).unwrap());
    for n in ["a.raw", "a.raw.gz", "a.raw.xz", "b.qcow2", "b.qcow2.gz"] {
        url(n);
    }

    // stat over http: the qcow2 header and the xz index come from range requests only.
    for (name, want) in [
        ("b.qcow2", "256"),
        ("a.raw.xz", "16"),
        ("b.qcow2.gz", "256"),
        ("a.raw", "16"),
    ] {
        let out = bed.act(
            "stat",
            &stat_message(&http.url(&format!("/files/{name}")), &bed.ds),
            "0",
        );
        line(&out, want, &format!("stat {name}"));
        let s = http.served();
        assert!(s.requests.iter().all(|(_, r)| r.is_some()), "{name}: {s:?}");
        assert!(
            s.body_bytes <= 2 * MIB,
            "{name}: {} bytes served",
            s.body_bytes
        );
    }
    // gzip states no size: counted as it streams.
    line(
        &bed.act(
            "stat",
            &stat_message(&http.url("/files/a.raw.gz"), &bed.ds),
            "0",
        ),
        "16",
        "stat gz",
    );
    let _ = http.served();

    // cp over http, through a redirect, MD5 checked (of the bytes served).
    let mut img = image(1, &http.url("/redirect/a.raw.xz"), 16);
    img.attrs.push((
        "MD5".into(),
        transfer_md5(&std::fs::read(d("a.raw.xz")).unwrap()),
    ));
    let out = bed.act("cp", &bed.msg(&img), "1");
    line(&out, &format!("kvm1:{VG}/img-one-1 raw"), "cp http xz");
    assert_eq!(bed.lv_digest("img-one-1", Some(16 * MIB)), raw_digest);
    assert_eq!(bed.lv("img-one-1").unwrap().size, 16 * MIB);
    // A gzipped qcow2 over http: scratch sized from its header, converted on the host.
    let out = bed.act(
        "cp",
        &bed.msg(&image(2, &http.url("/files/b.qcow2.gz"), 256)),
        "2",
    );
    line(
        &out,
        &format!("kvm1:{VG}/img-one-2 raw"),
        "cp http qcow2.gz",
    );
    assert_eq!(bed.lv_digest("img-one-2", None), qcow_digest);
    // Local compressed files, SHA1 of the compressed bytes.
    for (id, name) in [(3, "a.raw.zst"), (4, "a.raw.bz2"), (5, "a.raw.gz")] {
        let (f, path) = bed.fe_file(name);
        std::fs::copy(d(name), &f).unwrap();
        line(
            &bed.act("stat", &stat_message(&path, &bed.ds), "0"),
            "16",
            &format!("stat {name}"),
        );
        let mut img = image(id, &path, 16);
        let sha1 = std::process::Command::new("sha1sum")
            .arg(&f)
            .output()
            .unwrap();
        let sha1 = String::from_utf8_lossy(&sha1.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        img.attrs.push(("SHA1".into(), sha1));
        line(
            &bed.act("cp", &bed.msg(&img), &id.to_string()),
            &format!("kvm1:{VG}/img-one-{id} raw"),
            name,
        );
        assert_eq!(
            bed.lv_digest(&format!("img-one-{id}"), Some(16 * MIB)),
            raw_digest,
            "{name}"
        );
    }
    let kept = bed.lv_names();

    // Failures leave no LV behind.
    let mut bad_md5 = image(10, &http.url("/files/a.raw"), 16);
    bad_md5.attrs.push(("MD5".into(), "0".repeat(32)));
    let want_md5 = transfer_md5(&std::fs::read(d("a.raw")).unwrap());
    fails(
        &bed.act("cp", &bed.msg(&bad_md5), "10"),
        1,
        &format!(
            "cp: MD5 of {} is {want_md5}, the image template says {}",
            http.url("/files/a.raw"),
            "0".repeat(32)
        ),
    );
    fails(
        &bed.act(
            "cp",
            &bed.msg(&image(11, &http.url("/files/missing.raw"), 16)),
            "11",
        ),
        1,
        &format!(
            "cp: GET {}: HTTP 404 Not Found",
            http.url("/files/missing.raw")
        ),
    );
    let out = bed.act(
        "cp",
        &bed.msg(&image(12, &http.url("/truncated/a.raw"), 16)),
        "12",
    );
    assert_eq!(out.code, 1, "{}", out.stderr_text());
    assert!(last_line(&out).starts_with("cp: "), "{}", out.stderr_text());
    // A gzip whose content outgrows the IMAGE/SIZE it was given.
    let (_, gz_path) = bed.fe_file("a.raw.gz");
    let out = bed.act("cp", &bed.msg(&image(13, &gz_path, 8)), "13");
    assert_eq!(out.code, 1, "{}", out.stderr_text());
    assert!(
        last_line(&out).contains("larger than the target"),
        "{}",
        last_line(&out)
    );
    // A qcow2 naming a backing file: refused before anything is made.
    let (backed, backed_path) = bed.fe_file("backed.qcow2");
    run_cmd(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            "/etc/hostname",
            backed.to_str().unwrap(),
            "64M",
        ],
    );
    let out = bed.act("cp", &bed.msg(&image(14, &backed_path, 64)), "14");
    fails(
        &out,
        6,
        &format!("cp: {backed_path}: the image is a qcow2 image with a backing file: it names another file (convert it with `qemu-img convert -O qcow2` first); refusing to import it"),
    );
    let out = bed.act("stat", &stat_message(&backed_path, &bed.ds), "0");
    assert_eq!(out.code, 6, "{}", out.stderr_text());
    assert_eq!(bed.lv_names(), kept);
}

#[test]
fn ds_fresh_image_never_reads_a_removed_image() {
    let bed = Bed::with(&[("BSUD_SHRINK", "NO")]);
    let (dense, dense_path) = bed.fe_file("dense.raw");
    std::fs::write(&dense, noise(31, 32 << 20)).unwrap();
    line(
        &bed.act("cp", &bed.msg(&image(1, &dense_path, 32)), "1"),
        &format!("kvm1:{VG}/img-one-1 raw"),
        "cp dense",
    );
    // The tenant writes over the whole image.
    std::fs::OpenOptions::new()
        .write(true)
        .open(bed.lv_file("img-one-1"))
        .unwrap()
        .write_all_at(&noise(32, 32 << 20), 0)
        .unwrap();
    let old = bed.lv("img-one-1").unwrap().segments;
    bed.act("rm", &bed.msg(&existing(1)), "1").ok_empty("rm");
    // A sparse raw image, then a sparse qcow2, on the same extents: the holes read as zeros.
    let (sparse, sparse_path) = bed.fe_file("sparse.raw");
    sparse_file(&sparse, 32 * MIB, &[(0, 1 << 20)], 33);
    let (qcow, qcow_path) = bed.fe_file("sparse.qcow2");
    convert(sparse.to_str().unwrap(), qcow.to_str().unwrap(), "qcow2");
    for (id, path) in [(2, &sparse_path), (3, &qcow_path)] {
        let lv = format!("img-one-{id}");
        line(
            &bed.act("cp", &bed.msg(&image(id, path, 32)), &id.to_string()),
            &format!("kvm1:{VG}/{lv} raw"),
            path,
        );
        // The raw image takes exactly the old extents; the qcow2's scratch LV takes the first
        // one, so the image starts one extent later: still on old extents.
        let seg = &bed.lv(&lv).unwrap().segments;
        let (start, old_end) = (seg[0].ranges[0].start, old[0].ranges[0].end);
        assert_eq!(
            start,
            if id == 2 { 0 } else { 1 },
            "{lv}: {seg:?} (old: {old:?})"
        );
        assert!(start < old_end, "{lv} reuses the removed image's extents");
        let rest = bed.read_lv(&lv, MIB, 31 << 20);
        assert!(rest.iter().all(|&b| b == 0), "{lv}: a hole reads old bytes");
        assert_eq!(bed.lv_digest(&lv, None), file_digest(&sparse, None));
        bed.act("rm", &bed.msg(&existing(id)), &id.to_string())
            .ok_empty("rm");
    }
}

#[test]
fn ds_concurrent_cp_grows_the_drive_once() {
    let bed = Bed::new();
    let files: Vec<(String, String)> = (1..=8)
        .map(|i| {
            let (f, path) = bed.fe_file(&format!("c{i}.raw"));
            sparse_file(&f, 64 * MIB, &[(i * MIB, 2 << 20)], 40 + i);
            (path, file_digest(&f, None))
        })
        .collect();
    let outs: Vec<Out> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .enumerate()
            .map(|(n, (path, _))| {
                let bed = &bed;
                s.spawn(move || {
                    let id = n as i64 + 1;
                    bed.act("cp", &bed.msg(&image(id, path, 64)), &id.to_string())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (n, out) in outs.iter().enumerate() {
        line(
            out,
            &format!("kvm1:{VG}/img-one-{} raw", n + 1),
            "concurrent cp",
        );
    }
    assert_eq!(bed.create_volume_calls(), 1, "one growth for eight images");
    for (n, (_, digest)) in files.iter().enumerate() {
        let lv = format!("img-one-{}", n + 1);
        assert_eq!(&bed.lv_digest(&lv, None), digest, "{lv}");
        assert!(bed
            .lv(&lv)
            .unwrap()
            .tags
            .contains(&"one.bsud.state=ready".to_string()));
    }
}

#[test]
fn ds_hostile_values_touch_nothing_but_our_lvs() {
    let bed = Bed::new();
    let marker = std::env::temp_dir().join(format!("bsud-ds-pwned-{}", std::process::id()));
    let m = marker.display().to_string();
    let evil_name = format!("x'\"; touch {m}; echo '\n$(touch {m})`touch {m}`");
    // A file whose name is hostile, imported under a hostile NAME: bytes only, no shell.
    let fname = format!("a'b $(touch {}) `x`;\".raw", m.replace('/', "_"));
    let (f, path) = bed.fe_file(&fname);
    sparse_file(&f, 8 * MIB, &[(0, 1 << 20)], 50);
    let mut img = image(1, &path, 8);
    img.name = evil_name.clone();
    line(
        &bed.act("cp", &bed.msg(&img), "1"),
        &format!("kvm1:{VG}/img-one-1 raw"),
        "hostile names",
    );
    assert_eq!(bed.lv_digest("img-one-1", None), file_digest(&f, None));

    let etc = bed.tb.frontend().root().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    let sourced = |s: String| {
        let mut i = existing(1);
        i.source = s;
        i
    };
    let mut named = image(2, &format!("/var/tmp/$(touch {m})"), 8);
    named.name = evil_name.clone();
    let mut bad_md5 = image(6, &path, 8);
    bad_md5.attrs.push(("MD5".into(), format!("$(touch {m})")));
    let mut bad_clone = image(8, &format!("kvm1:{VG}/img-one-1 --help"), 8);
    bad_clone.cloning_id = 1;
    let cases: Vec<(&str, ImageSpec, i32)> = vec![
        ("cp", named, 1),
        ("cp", image(3, "/var/tmp/../../etc/passwd", 8), 6),
        ("cp", image(4, &format!("$(touch {m})"), 8), 2),
        (
            "cp",
            image(5, &format!("file:///etc/passwd;touch {m}"), 8),
            4,
        ),
        ("cp", bad_md5, 2),
        (
            "mkfs",
            ImageSpec::datablock(7, DS, 8, &format!("ext4;touch {m}")),
            2,
        ),
        ("rm", sourced(format!("kvm1:{VG}/img-one-1;touch {m}")), 6),
        ("rm", sourced(format!("$(touch {m}):{VG}/img-one-1")), 6),
        ("rm", sourced(format!("kvm1:{VG}/../img-one-1")), 6),
        ("rm", sourced("kvm1:vg-one-100/img-one-2".into()), 6),
        ("clone", bad_clone, 6),
        ("export", sourced(format!("kvm1\n:{VG}/img-one-1")), 6),
    ];
    for (action, img, code) in &cases {
        let out = bed.act(action, &bed.msg(img), &img.id.to_string());
        assert_eq!(
            out.code,
            *code,
            "{action} {:?}: {}",
            img.path,
            out.stderr_text()
        );
        assert!(out.stdout.is_empty());
        let l = last_line(&out);
        assert!(
            l.starts_with(&format!("{action}: ")) && !l.contains('\n'),
            "{l}"
        );
    }
    // A hostile datastore attribute is a configuration error before anything runs.
    let mut evil_ds = bed.ds.clone();
    evil_ds = evil_ds.attr("BSUD_IMAGE_HOST", &format!("kvm1;touch {m}"));
    let out = bed.act(
        "cp",
        &ds_message(Some(&image(10, &path, 8)), &evil_ds, ""),
        "10",
    );
    assert_eq!(out.code, 3, "{}", out.stderr_text());
    // An LV named like an image but not tagged as one: rm refuses it and leaves it.
    bed.make_lv("img-one-20", 4 * MIB, "one.vm=20");
    let out = bed.act("rm", &bed.msg(&existing(20)), "20");
    fails(
        &out,
        6,
        &format!("rm: LV {VG}/img-one-20 on kvm1 lacks the tag one.image=20 (it has [one.vm=20]): not image 20's, not touching it"),
    );
    assert!(!marker.exists(), "a hostile value reached a shell");
    assert_eq!(bed.lv_names(), ["img-one-1", "img-one-20"]);
}

impl Bed {
    /// Runs cp through its entry with `BSUD_CRASH_AT=<step>`: the process must die there.
    fn cp_crashing_at(&self, step: &str, img: &ImageSpec) {
        use std::os::unix::process::ExitStatusExt;
        let mut cmd = std::process::Command::new(self.install.entry(Kind::Ds, "cp"));
        cmd.arg(img.id.to_string())
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("BSUD_CRASH_AT", step)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b64(&self.msg(img)).as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc_sigabrt()),
            "cp did not crash at {step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
}

fn libc_sigabrt() -> i32 {
    6
}

#[test]
fn ds_cp_after_a_crash_starts_over() {
    let bed = Bed::new();
    let (raw, raw_path) = bed.fe_file("r.raw");
    sparse_file(&raw, 16 * MIB, &[(MIB, 2 << 20)], 60);
    let (qcow, qcow_path) = bed.fe_file("q.qcow2");
    convert(raw.to_str().unwrap(), qcow.to_str().unwrap(), "qcow2");
    let want = file_digest(&raw, None);
    // Raw: killed after the stream, before the ready tag; the rerun redoes the copy.
    bed.cp_crashing_at("cp:pushed", &image(1, &raw_path, 16));
    let partial = bed.lv("img-one-1").unwrap();
    assert!(
        !partial.tags.iter().any(|t| t == "one.bsud.state=ready"),
        "{:?}",
        partial.tags
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(bed.lv_file("img-one-1"))
        .unwrap()
        .write_all_at(&noise(61, 1 << 20), 8 * MIB)
        .unwrap();
    line(
        &bed.act("cp", &bed.msg(&image(1, &raw_path, 16)), "1"),
        &format!("kvm1:{VG}/img-one-1 raw"),
        "cp after crash",
    );
    assert_ne!(
        bed.lv("img-one-1").unwrap().uuid,
        partial.uuid,
        "made again"
    );
    assert_eq!(bed.lv_digest("img-one-1", None), want);
    // qcow2: killed after the conversion, the scratch LV still there.
    bed.cp_crashing_at("cp:converted", &image(2, &qcow_path, 16));
    assert_eq!(
        bed.lv_names(),
        ["img-one-1", "img-one-2", "img-one-2-import"]
    );
    line(
        &bed.act("cp", &bed.msg(&image(2, &qcow_path, 16)), "2"),
        &format!("kvm1:{VG}/img-one-2 raw"),
        "cp qcow2 after crash",
    );
    assert_eq!(bed.lv_names(), ["img-one-1", "img-one-2"]);
    assert_eq!(bed.lv_digest("img-one-2", None), want);
    // rm also takes a crashed import's scratch with it.
    bed.cp_crashing_at("cp:pushed", &image(3, &qcow_path, 16));
    assert_eq!(
        bed.lv_names(),
        ["img-one-1", "img-one-2", "img-one-3-import"]
    );
    let mut gone = existing(3);
    gone.size_mb = 16;
    bed.act("rm", &bed.msg(&gone), "3")
        .ok_empty("rm crashed import");
    assert_eq!(bed.lv_names(), ["img-one-1", "img-one-2"]);
}

/// Wall time of `f`, in seconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = std::time::Instant::now();
    let v = f();
    (v, start.elapsed().as_secs_f64())
}

/// The median wall time of `n` runs of `f`.
fn median_secs(n: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..n).map(|_| timed(&mut f).1).collect();
    t.sort_by(f64::total_cmp);
    t[n / 2]
}

/// Benchmark (scripts/bench-ds): cp throughput of a dense and a 1/8-full raw image against
/// `dd` and `cat` of the same file on this machine, and the per-action overhead. Ignored by
/// default: it writes gigabytes. `BENCH_SIZE_GIB` (default 2).
#[test]
#[ignore]
fn ds_bench_cp_and_overhead() {
    let gib: u64 = std::env::var("BENCH_SIZE_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let size = gib << 30;
    let bed = Bed::with(&[("BSUD_MIN_VOLUME_GIB", "4"), ("BSUD_MAX_SIZE_GIB", "256")]);
    let rate = |bytes: u64, s: f64| format!("{:.0} MiB/s", bytes as f64 / s / MIB as f64);
    println!("| image | one-bsud cp | dd into the same LV | ratio | cat > /dev/null |");
    println!("|---|---|---|---|---|");
    for (id, label, fill) in [(1i64, "dense", 1u64), (2, "1/8 full", 8)] {
        let (f, path) = bed.fe_file(&format!("bench-{id}.raw"));
        let data = size / fill;
        // Data in 64 MiB extents spread over the image.
        let chunk = 64 * MIB;
        let slots = size / chunk;
        let extents: Vec<(u64, usize)> = (0..data / chunk)
            .map(|i| (i * fill * chunk % (slots * chunk), chunk as usize))
            .collect();
        sparse_file(&f, size, &extents, 100 + id as u64);
        let (out, cp_s) = timed(|| {
            bed.act(
                "cp",
                &bed.msg(&image(id, &path, size / MIB)),
                &id.to_string(),
            )
        });
        line(&out, &format!("kvm1:{VG}/img-one-{id} raw"), "bench cp");
        let lv = bed.lv_file(&format!("img-one-{id}"));
        let (_, dd_s) = timed(|| {
            run_cmd(
                "dd",
                &[
                    &format!("if={}", f.display()),
                    &format!("of={}", lv.display()),
                    "bs=1M",
                    "conv=notrunc,fsync",
                    "status=none",
                ],
            )
        });
        let (_, cat_s) = timed(|| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg("cat \"$1\" > /dev/null")
                .arg("sh")
                .arg(&f)
                .status()
                .unwrap();
            assert!(out.success());
        });
        println!(
            "| {gib} GiB {label} ({} MiB of data) | {:.2} s, {} | {:.2} s, {} | {:.2}× | {:.2} s |",
            data >> 20,
            cp_s,
            rate(size, cp_s),
            dd_s,
            rate(size, dd_s),
            dd_s / cp_s,
            cat_s,
        );
        bed.act("rm", &bed.msg(&existing(id)), &id.to_string())
            .ok_empty("bench rm");
        std::fs::remove_file(&f).unwrap();
    }
    // Per-action overhead: the whole process through the entry script.
    let etc = bed.tb.frontend().root().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("passwd"), "x").unwrap();
    let refused = median_secs(11, || {
        let o = bed.act("stat", &stat_message("/etc/passwd", &bed.ds), "0");
        assert_eq!(o.code, 6, "{}", o.stderr_text());
    });
    let monitor = median_secs(11, || {
        let o = bed.act("monitor", &ds_message(None, &bed.ds, ""), "100");
        assert_eq!(o.code, 0, "{}", o.stderr_text());
    });
    let lv_list = median_secs(11, || {
        bed.lvs();
    });
    println!();
    println!("| per-action overhead (median of 11) | wall time |");
    println!("|---|---|");
    println!("| decode + validate + plan, refused before any host call (stat of a restricted path) | {:.1} ms |", refused * 1e3);
    println!(
        "| monitor (decode + one lv-list on the image host over the testbed ssh) | {:.1} ms |",
        monitor * 1e3
    );
    println!(
        "| one lv-list agent call alone (testbed ssh) | {:.1} ms |",
        lv_list * 1e3
    );
}
