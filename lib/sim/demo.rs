//! `one-bsud demo`: one VM's life on the testbed, through the real action entries, verified.
//!
//! The demo starts a [`Testbed`] (bsud-sim cloud, hosts kvm1 and kvm2 with real LVM on loop
//! devices, lvfs) and installs the driver in it as oned finds it: `<dir>/remotes/datastore/bsud/
//! <action>` and `<dir>/remotes/tm/bsud/<action>` are the repository's entry scripts (embedded
//! at build time), `<dir>/remotes/tm/bsud/one-bsud` is this binary. Every step is an oned 7.x
//! call of one entry, argv and stdin built by [`crate::sim::one`] exactly as the tests build
//! them: register images (`stat`, `cp` of a qcow2 made by qemu-img, `mkfs`), deploy a VM with a
//! persistent, a non-persistent, a volatile, a swap and a context disk, cold-migrate it to kvm2,
//! live-migrate it back, save a disk as a new image, terminate it, delete the images.
//!
//! Invariants:
//! - The demo keeps a model of every byte it expects in every disk and image (what qemu-img was
//!   given, what it wrote into the disks) and compares each with what the LV holds after every
//!   step that moves data; a difference ends the demo with exit 1 and a line naming the disk
//!   and the first differing byte. Nothing is assumed: the context ISO, file-system and swap
//!   signatures are read back too.
//! - Everything lives in the testbed directory (cloud state and volume files, host roots, the
//!   install, the source images), so dropping the testbed — on success, failure, or after
//!   SIGINT/SIGTERM/SIGHUP, which only raise a flag checked between actions — leaves no LV, BSU,
//!   loop device, FUSE mount, process nor file; the demo checks it after the teardown
//!   ([`crate::sim::testbed::leftovers`]).
//! - `--corrupt-disk N` is fault injection for the tests: it flips one byte of disk N on its
//!   host behind the model's back, so the following verification must fail.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sha2::Digest;

use crate::cloud::outscale::OutscaleCloud;
use crate::cloud::{Cloud, VolumeFilter, VolumeState};
use crate::config::{Config, Env};
use crate::drive::naming::TAG_DRIVE;
use crate::error::{fail, ErrorKind};
use crate::exec::{self, Cmd};
use crate::sim::one::{b64, ds_message, stat_message, DatastoreSpec, DiskSpec, ImageSpec, VmSpec};
use crate::sim::testbed::{self, pattern, Testbed, TestbedOpts, FRONTEND_HOST};
use crate::sys;
use crate::wait::{poll, Poll, Wait};

/// The repository's entry scripts, one text per kind (a unit test checks every file in
/// `remotes/` against them).
const TM_ENTRY: &str = include_str!("../../remotes/tm/bsud/clone");
const DS_ENTRY: &str = include_str!("../../remotes/datastore/bsud/cp");

/// oned's DATASTORE_LOCATION, double slash included, as it appears in TM arguments.
const DSL: &str = "/var/lib/one//datastores";
const MIB: usize = 1 << 20;
const IMAGE_DS: i64 = 100;
const SYSTEM_DS: i64 = 101;
const VM: i64 = 42;
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Deadline of one action (the testbed's own timeouts are shorter).
const ACTION_TIMEOUT: Duration = Duration::from_secs(300);

/// `one-bsud demo` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Stop before terminating the VM and keep the testbed running (VM deployed, images
    /// registered) until Ctrl-C, printing how to inspect it.
    #[arg(long)]
    pub keep: bool,
    /// Print one JSON object per event (action, drives, verification) instead of text.
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,
    /// Print only the final line.
    #[arg(long)]
    pub quiet: bool,
    /// The bsud-sim binary (default: `bsud-sim` beside this binary).
    #[arg(long, value_name = "PATH")]
    pub sim_binary: Option<PathBuf>,
    /// Testbed directory to create (default: a new directory under $TMPDIR); removed at the end.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Simulated cloud delay of each volume state change, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 20)]
    pub cloud_delay_ms: u64,
    /// Fault injection (tests): flip one byte of disk N (0–3) behind the demo's back after the
    /// data is written; the next verification must fail.
    #[arg(long, value_name = "N", hide = true, value_parser = clap::value_parser!(u32).range(0..=3))]
    pub corrupt_disk: Option<u32>,
}

/// Runs the demo, writing its report on `out`. Errors: a step failed, a verification did not
/// match, something was left after the teardown, or a signal interrupted it.
pub fn run(args: &DemoArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if !sys::is_root() {
        return Err(fail(
            ErrorKind::Refused,
            "demo: run it as root (it creates loop devices, LVM volume groups and FUSE mounts)",
        ));
    }
    // Before any thread exists, so every thread inherits the blocked mask and the watcher
    // alone takes the signals; children get a clean mask from std::process.
    let interrupt = Interrupt::install()?;
    let started = Instant::now();
    let mut report = Report::new(out, args);
    let (sim, bsud) = binaries(args)?;
    let mut opts = TestbedOpts::new(&sim, &bsud).with_cloud_delay_ms(args.cloud_delay_ms);
    opts.dir = args.dir.clone();
    let tb = Testbed::start(opts).context("demo: starting the testbed")?;
    let dir = tb.dir().to_path_buf();
    let result = match Demo::new(tb, &bsud, &interrupt, &mut report) {
        Ok(mut demo) => {
            let r = demo.story(args);
            if r.is_ok() && args.keep {
                demo.keep(&sim, &bsud);
            }
            // Dropping the demo tears the testbed down.
            r
        }
        Err(e) => Err(e),
    };
    let left = testbed::leftovers(&dir);
    let secs = started.elapsed().as_secs_f64();
    match (&result, left.is_empty()) {
        (Ok(()), true) => {
            report.teardown(&dir, &left);
            report.done(
                true,
                &format!("demo: every verification passed; nothing left ({secs:.1}s)"),
            );
            Ok(())
        }
        (Ok(()), false) => {
            report.teardown(&dir, &left);
            let msg = format!("demo: left after the teardown: {}", left.join("; "));
            report.done(false, &msg);
            Err(fail(ErrorKind::Failed, msg))
        }
        (Err(e), _) => {
            report.teardown(&dir, &left);
            let mut msg = crate::error::one_line(e);
            if !msg.starts_with("demo: ") {
                msg = format!("demo: {msg}");
            }
            if !left.is_empty() {
                msg.push_str(&format!(" (and left: {})", left.join("; ")));
            }
            report.done(false, &format!("{msg} ({secs:.1}s)"));
            Err(fail(
                crate::error::find_kind(e).unwrap_or(ErrorKind::Failed),
                msg,
            ))
        }
    }
}

/// `bsud-sim` (beside this binary unless given) and this binary.
fn binaries(args: &DemoArgs) -> anyhow::Result<(PathBuf, PathBuf)> {
    let me = std::env::current_exe().context("demo: locating this binary")?;
    let sim = match &args.sim_binary {
        Some(p) => p.clone(),
        None => me.with_file_name("bsud-sim"),
    };
    if !sim.is_file() {
        return Err(fail(
            ErrorKind::Config,
            format!(
                "demo: no bsud-sim at {} (build it with `cargo build`, or pass --sim-binary)",
                sim.display()
            ),
        ));
    }
    Ok((sim, me))
}

/// SIGINT, SIGTERM and SIGHUP raise a flag instead of killing the process, so the testbed is
/// always torn down by its Drop.
struct Interrupt {
    flag: Arc<AtomicBool>,
}

const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

impl Interrupt {
    fn install() -> anyhow::Result<Interrupt> {
        sys::block_signals(&SIGNALS).context("demo: blocking signals")?;
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        std::thread::Builder::new()
            .name("demo-signals".into())
            .spawn(move || loop {
                if sys::wait_signal(&SIGNALS).is_ok() {
                    f.store(true, Ordering::SeqCst);
                }
            })
            .context("demo: starting the signal watcher")?;
        Ok(Interrupt { flag })
    }

    fn raised(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.raised() {
            Err(fail(ErrorKind::Failed, "demo: interrupted"))
        } else {
            Ok(())
        }
    }
}

/// Where the report goes and in which shape.
struct Report<'a> {
    out: &'a mut dyn Write,
    json: bool,
    quiet: bool,
}

impl<'a> Report<'a> {
    fn new(out: &'a mut dyn Write, args: &DemoArgs) -> Report<'a> {
        Report {
            out,
            json: args.json,
            quiet: args.quiet,
        }
    }

    fn text(&mut self, line: &str) {
        if !self.json && !self.quiet {
            let _ = writeln!(self.out, "{line}");
            let _ = self.out.flush();
        }
    }

    /// Text even with --quiet (what the user must know to use --keep).
    fn always(&mut self, line: &str) {
        if !self.json {
            let _ = writeln!(self.out, "{line}");
            let _ = self.out.flush();
        }
    }

    fn event(&mut self, v: serde_json::Value) {
        if self.json {
            let _ = writeln!(self.out, "{v}");
            let _ = self.out.flush();
        }
    }

    fn step(&mut self, n: usize, total: usize, title: &str) {
        self.text("");
        self.text(&format!("[{n}/{total}] {title}"));
        self.event(serde_json::json!({"event": "step", "n": n, "title": title}));
    }

    fn note(&mut self, text: &str) {
        self.text(&format!("      {text}"));
        self.event(serde_json::json!({"event": "note", "text": text}));
    }

    fn action(&mut self, a: &ActionRecord) {
        let mut line = format!(
            "  {:<2} {:<16} {:<60} {:>6.2}s",
            a.kind, a.action, a.shown, a.seconds
        );
        if let Some(o) = a.stdout.lines().next().filter(|l| !l.is_empty()) {
            line.push_str(&format!("  → {o}"));
        }
        if !a.ok {
            line.push_str("  FAILED");
        }
        self.text(&line);
        self.event(serde_json::json!({
            "event": "action", "kind": a.kind, "action": a.action, "argv": a.argv,
            "seconds": a.seconds, "ok": a.ok, "stdout": a.stdout, "error": a.error,
        }));
    }

    fn drives(
        &mut self,
        drives: &[DriveState],
        before: &BTreeMap<String, DriveState>,
        deleting: u32,
    ) {
        let mut parts = Vec::new();
        let mut names: Vec<&String> = before.keys().collect();
        for d in drives {
            if !before.contains_key(&d.name) {
                names.push(&d.name);
            }
        }
        names.sort();
        names.dedup();
        for name in names {
            let now = drives.iter().find(|d| &d.name == name);
            let was = before.get(name);
            let trend = match (was, now) {
                (None, Some(_)) => " (new)".to_string(),
                (Some(_), None) => " (released)".to_string(),
                (Some(w), Some(n)) if n.vg_bytes > w.vg_bytes => " ↑".to_string(),
                (Some(w), Some(n)) if n.vg_bytes < w.vg_bytes => " ↓".to_string(),
                _ => String::new(),
            };
            parts.push(match now {
                Some(d) => format!(
                    "{} {} BSU/{} GiB, VG {} MiB, {} LV{}",
                    d.name,
                    d.bsus,
                    d.bsu_gib,
                    d.vg_bytes >> 20,
                    d.lvs,
                    trend
                ),
                None => format!("{name} —{trend}"),
            });
        }
        if parts.is_empty() {
            parts.push("none".into());
        }
        let total: u32 = drives.iter().map(|d| d.bsus).sum();
        self.text(&format!("      drives: {}", parts.join(" · ")));
        self.text(&format!(
            "      BSU volumes in the cloud: {total}{}",
            if deleting > 0 {
                format!(" (and {deleting} being deleted)")
            } else {
                String::new()
            }
        ));
        self.event(serde_json::json!({
            "event": "drives",
            "drives": drives.iter().map(|d| serde_json::json!({
                "drive": d.name, "bsus": d.bsus, "bsu_gib": d.bsu_gib,
                "vg_bytes": d.vg_bytes, "vg_free_bytes": d.vg_free, "lvs": d.lvs,
            })).collect::<Vec<_>>(),
            "bsus": total,
            "bsus_deleting": deleting,
        }));
    }

    fn verify(&mut self, what: &str, bytes: usize, digest: &str, ok: bool, detail: &str) {
        self.text(&format!(
            "      verify {what:<54} {:>4} MiB  sha256 {}…  {}",
            bytes.div_ceil(MIB),
            &digest[..12],
            if ok { "ok" } else { "MISMATCH" }
        ));
        if !detail.is_empty() {
            self.text(&format!("             {detail}"));
        }
        self.event(serde_json::json!({
            "event": "verify", "what": what, "bytes": bytes, "sha256": digest, "ok": ok,
            "detail": detail,
        }));
    }

    fn teardown(&mut self, dir: &Path, left: &[String]) {
        self.text("");
        if left.is_empty() {
            self.text(&format!(
                "teardown: testbed {} removed: no process, FUSE mount, loop device or file left",
                dir.display()
            ));
        } else {
            for l in left {
                self.text(&format!("teardown: LEFT {l}"));
            }
        }
        self.event(serde_json::json!({"event": "teardown", "dir": dir, "left": left}));
    }

    fn done(&mut self, ok: bool, line: &str) {
        if self.json {
            self.event(serde_json::json!({"event": "done", "ok": ok, "message": line}));
        } else {
            // --quiet prints this line only; a failure's line goes to stderr via the caller.
            if ok {
                let _ = writeln!(self.out, "{line}");
            }
            let _ = self.out.flush();
        }
    }
}

/// One action run.
struct ActionRecord {
    kind: &'static str,
    action: String,
    argv: Vec<String>,
    shown: String,
    seconds: f64,
    ok: bool,
    stdout: String,
    error: String,
}

/// A drive as the cloud and LVM see it.
#[derive(Debug, Clone)]
struct DriveState {
    /// `<host>:vg-one-<ds>`.
    name: String,
    bsus: u32,
    bsu_gib: u64,
    vg_bytes: u64,
    vg_free: u64,
    lvs: u32,
}

/// The running demo: the testbed, the install, the model.
struct Demo<'r, 'o> {
    remotes: PathBuf,
    action_env: Vec<(String, String)>,
    cloud: OutscaleCloud,
    image_ds: DatastoreSpec,
    interrupt: &'r Interrupt,
    report: &'r mut Report<'o>,
    drives_before: BTreeMap<String, DriveState>,
    /// Expected bytes of every VM disk (by disk id) and image (by image id).
    disks: BTreeMap<u32, Vec<u8>>,
    images: BTreeMap<i64, Vec<u8>>,
    vm: VmSpec,
    /// Host the VM's disks are on.
    host: String,
    action_log: PathBuf,
    // Last: dropped after everything that refers to its directory.
    tb: Testbed,
}

const STEPS: usize = 8;

impl<'r, 'o> Demo<'r, 'o> {
    fn new(
        tb: Testbed,
        bsud: &Path,
        interrupt: &'r Interrupt,
        report: &'r mut Report<'o>,
    ) -> anyhow::Result<Demo<'r, 'o>> {
        let remotes = tb.dir().join("remotes");
        install(&remotes, bsud)?;
        // The testbed's configuration, plus where the other transfer managers live (live
        // migration calls theirs for disks that are not ours).
        let text = std::fs::read_to_string(tb.config_path())?;
        let config = tb.dir().join("bsud-demo.toml");
        std::fs::write(
            &config,
            format!("remotes_dir = {:?}\n{text}", remotes.to_string_lossy()),
        )?;
        let mut env = tb.env();
        env.retain(|(k, _)| k != "BSUD_CONFIG");
        env.push(("BSUD_CONFIG".into(), config.to_string_lossy().into_owned()));
        env.push(("PATH".into(), PATH.into()));
        let cfg = Config::load(&Env::from_pairs(env.clone())).context("demo: configuration")?;
        let cloud = OutscaleCloud::new(&cfg.cloud.resolve()?)?;
        // 1 GiB volumes and no headroom: the drives grow and shrink visibly with small disks.
        let small = |d: DatastoreSpec| {
            d.attr("BSUD_MIN_VOLUME_GIB", "1")
                .attr("BSUD_HEADROOM_GIB", "0")
        };
        let image_ds = small(DatastoreSpec::image(IMAGE_DS)).attr("BSUD_IMAGE_HOST", "kvm1");
        tb.put_datastore(&image_ds)?;
        tb.put_datastore(&small(DatastoreSpec::system(SYSTEM_DS)))?;
        let action_log = tb.dir().join("logs").join("actions.log");
        Ok(Demo {
            remotes,
            action_env: env,
            cloud,
            image_ds,
            interrupt,
            report,
            drives_before: BTreeMap::new(),
            disks: BTreeMap::new(),
            images: BTreeMap::new(),
            vm: vm_spec(&[("kvm1", SYSTEM_DS)]),
            host: "kvm1".into(),
            action_log,
            tb,
        })
    }

    fn story(&mut self, args: &DemoArgs) -> anyhow::Result<()> {
        let hosts: Vec<String> = self.tb.hosts().iter().map(|h| h.name.clone()).collect();
        self.report.text(&format!(
            "one-bsud demo: simulated Outscale cloud (bsud-sim) at {} and hosts {} with real LVM on loop devices, in {}",
            self.tb.addr(),
            hosts.join(", "),
            self.tb.dir().display()
        ));
        self.report.text(&format!(
            "      image datastore {IMAGE_DS} (drive on kvm1), system datastore {SYSTEM_DS} (a drive per host); BSUD_MIN_VOLUME_GIB=1, BSUD_HEADROOM_GIB=0"
        ));
        self.report.text(&format!(
            "      every action runs {}/<kind>/bsud/<action> as oned 7.x calls it (… = {DSL})",
            self.remotes.display()
        ));
        self.register()?;
        self.deploy()?;
        self.write_data(args.corrupt_disk)?;
        self.cold_migrate()?;
        self.live_migrate()?;
        self.save_as()?;
        if args.keep {
            return Ok(());
        }
        self.terminate()?;
        self.delete_images()?;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // The story

    fn register(&mut self) -> anyhow::Result<()> {
        self.report.step(
            1,
            STEPS,
            "Register images: a qcow2 (stat + cp) and an empty persistent ext4 datablock (mkfs)",
        );
        // 64 MiB virtual, 6 MiB of data: the qcow2 carries only its data; the LV reads it all.
        let raw_path = self.fe_path("/var/tmp/demo-os.raw");
        let qcow2 = "/var/tmp/demo-os.qcow2";
        std::fs::create_dir_all(raw_path.parent().expect("has a parent"))?;
        let mut content = vec![0u8; 64 * MIB];
        content[..4 * MIB].copy_from_slice(&pattern(1, 4 * MIB));
        content[40 * MIB..42 * MIB].copy_from_slice(&pattern(2, 2 * MIB));
        write_sparse(&raw_path, &content)?;
        exec::run(
            &Cmd::new("qemu-img")
                .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
                .arg(&raw_path)
                .arg(self.fe_path(qcow2))
                .timeout(Duration::from_secs(60)),
        )
        .context("demo: qemu-img convert")?;
        std::fs::remove_file(&raw_path)?;
        let qsize = std::fs::metadata(self.fe_path(qcow2))?.len();
        self.report.note(&format!(
            "made {qcow2} with qemu-img: 64 MiB virtual, 6 MiB of known data, {} KiB on disk",
            qsize >> 10
        ));
        let stat = self.ds("stat", "0", &stat_message(qcow2, &self.image_ds), qcow2)?;
        let size_mb: u64 = stat
            .trim()
            .parse()
            .with_context(|| format!("demo: stat printed {stat:?}, not a size"))?;
        let img0 = ImageSpec::os(0, IMAGE_DS, qcow2, size_mb);
        let out = self.ds(
            "cp",
            "0",
            &ds_message(Some(&img0), &self.image_ds, ""),
            &format!("image 0 from {qcow2}"),
        )?;
        expect_line(&out, "kvm1:vg-one-100/img-one-0 raw", "cp")?;
        let img1 = ImageSpec::datablock(1, IMAGE_DS, 24, "ext4");
        let out = self.ds(
            "mkfs",
            "1",
            &ds_message(Some(&img1), &self.image_ds, ""),
            "image 1: 24 MB datablock, FS ext4, persistent",
        )?;
        expect_line(&out, "kvm1:vg-one-100/img-one-1", "mkfs")?;
        self.ds(
            "monitor",
            "100",
            &ds_message(None, &self.image_ds, ""),
            "datastore 100",
        )?;
        self.image_is(0, "the qcow2's content", content)?;
        // mkfs's bytes are mkfs.ext4's: the model takes them once their signature is checked.
        let img1_bytes = self.read_image(1)?;
        self.signature("image 1 is ext4", &img1_bytes, 1080, &[0x53, 0xef])?;
        self.images.insert(1, img1_bytes);
        self.drives()
    }

    fn deploy(&mut self) -> anyhow::Result<()> {
        self.report.step(
            2,
            STEPS,
            "Deploy VM 42 on kvm1: persistent (ln), non-persistent grown to 96 MiB (clone), volatile ext4 (mkimage), swap (mkswap), context",
        );
        self.tb.put_vm(&self.vm)?;
        let ctx = self.context_file()?;
        let (h, ds) = ("kvm1", SYSTEM_DS);
        self.tm(
            &format!(
                "LN bsud kvm1:vg-one-100/img-one-1 {} {VM} 100",
                dk(h, ds, 0)
            ),
            None,
        )?;
        self.tm(
            &format!(
                "CLONE bsud kvm1:vg-one-100/img-one-0 {} {VM} 100",
                dk(h, ds, 1)
            ),
            None,
        )?;
        self.tm(
            &format!("MKIMAGE bsud 32 raw {} {VM} {ds}", dk(h, ds, 2)),
            None,
        )?;
        self.tm(&format!("MKSWAP bsud 16 {} {VM} {ds}", dk(h, ds, 3)), None)?;
        self.tm(
            &format!("CONTEXT bsud {ctx} {} {VM} {ds}", dk(h, ds, 4)),
            None,
        )?;
        // Expected: the images' bytes (the clone's grown tail reads zeros); the volatile
        // disks' fresh file systems are taken after their signatures are checked.
        let mut d1 = self.images[&0].clone();
        d1.resize(96 * MIB, 0);
        let want: [(u32, Vec<u8>); 2] = [(0, self.images[&1].clone()), (1, d1)];
        for (n, bytes) in want {
            let got = self.read_disk(n)?;
            self.verify(
                &format!("disk.{n} on kvm1 = image {}", if n == 0 { 1 } else { 0 }),
                &got,
                &bytes,
            )?;
            self.disks.insert(n, bytes);
        }
        let d2 = self.read_disk(2)?;
        self.signature("disk.2 on kvm1 is ext4", &d2, 1080, &[0x53, 0xef])?;
        self.disks.insert(2, d2);
        let d3 = self.read_disk(3)?;
        self.signature("disk.3 on kvm1 is swap", &d3, 4096 - 10, b"SWAPSPACE2")?;
        self.disks.insert(3, d3);
        self.check_context()?;
        self.drives()
    }

    fn write_data(&mut self, corrupt: Option<u32>) -> anyhow::Result<()> {
        self.report.step(
            3,
            STEPS,
            "The guest writes: a known pattern into every disk (through disk.N on kvm1)",
        );
        for (n, off, len, seed) in [
            (0u32, 3 * MIB, MIB, 10u8),
            (1, 80 * MIB, 2 * MIB, 11),
            (2, 30 * MIB, MIB, 12),
            (3, 8 * MIB, MIB, 13),
        ] {
            let data = pattern(seed, len);
            write_at(&self.disk_file(&self.host, n), off as u64, &data)?;
            let e = self.disks.get_mut(&n).expect("disk in the model");
            e[off..off + len].copy_from_slice(&data);
            self.report.note(&format!(
                "wrote {} MiB at {} MiB into disk.{n}",
                len / MIB,
                off / MIB
            ));
        }
        self.check_disks("kvm1")?;
        if let Some(n) = corrupt {
            let off = match n {
                0 => 3 * MIB + 12345,
                1 => 80 * MIB + 12345,
                2 => 30 * MIB + 12345,
                _ => 8 * MIB + 12345,
            };
            let f = self.disk_file(&self.host, n);
            let mut b = [0u8; 1];
            std::fs::File::open(&f)?.read_exact_at(&mut b, off as u64)?;
            write_at(&f, off as u64, &[!b[0]])?;
            self.report.note(&format!(
                "FAULT INJECTED: flipped byte {off} of disk.{n} on kvm1 behind the demo's back"
            ));
        }
        Ok(())
    }

    fn cold_migrate(&mut self) -> anyhow::Result<()> {
        self.report.step(
            4,
            STEPS,
            "Cold migration kvm1 → kvm2 (mv of every disk and the directory, context again)",
        );
        self.vm.history.push(("kvm2".into(), SYSTEM_DS));
        self.tb.put_vm(&self.vm)?;
        let (from, to) = (("kvm1", SYSTEM_DS), ("kvm2", SYSTEM_DS));
        for n in 0..4u32 {
            let ds = if n < 2 { IMAGE_DS } else { to.1 };
            self.tm(
                &format!(
                    "MV bsud {} {} {VM} {ds}",
                    dk(from.0, from.1, n),
                    dk(to.0, to.1, n)
                ),
                None,
            )?;
        }
        self.tm(
            &format!(
                "MV bsud {} {} {VM} {}",
                vm_dir(from.0, from.1),
                vm_dir(to.0, to.1),
                to.1
            ),
            None,
        )?;
        let ctx = self.context_file()?;
        self.tm(
            &format!("CONTEXT bsud {ctx} {} {VM} {}", dk(to.0, to.1, 4), to.1),
            None,
        )?;
        self.arrived("kvm2", "kvm1")
    }

    fn live_migrate(&mut self) -> anyhow::Result<()> {
        self.report.step(
            5,
            STEPS,
            "Live migration kvm2 → kvm1 (premigrate, libvirt's storage copy, postmigrate)",
        );
        self.vm.history.push(("kvm1".into(), SYSTEM_DS));
        self.tb.put_vm(&self.vm)?;
        let stdin = b64(&self.vm.xml());
        let args = format!("kvm2 kvm1 {DSL}/{SYSTEM_DS}/{VM} {VM} {SYSTEM_DS}");
        self.tm(&format!("PREMIGRATE bsud {args}"), Some(&stdin))?;
        // What libvirt's --copy-storage-all does between the two calls: the demo copies the
        // guest's bytes into the disks premigrate prepared (which must read as zeros).
        for n in 0..4u32 {
            let f = self.disk_file("kvm1", n);
            let fresh = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
            if fresh.len() != self.disks[&n].len() || fresh.iter().any(|b| *b != 0) {
                return Err(fail(
                    ErrorKind::Failed,
                    format!("demo: premigrate's disk.{n} on kvm1 is not a zeroed disk of the source's size"),
                ));
            }
            write_at(&f, 0, &self.disks[&n])?;
        }
        self.report.note(
            "libvirt's storage copy (simulated): the guest's bytes written into kvm1's new disks",
        );
        self.tm(&format!("POSTMIGRATE bsud {args}"), Some(&stdin))?;
        self.arrived("kvm1", "kvm2")
    }

    /// After a migration: every disk on `to` as the guest left it, nothing left on `from`.
    fn arrived(&mut self, to: &str, from: &str) -> anyhow::Result<()> {
        self.host = to.to_string();
        self.check_disks(to)?;
        self.check_context()?;
        self.check_vm_gone_from(from)?;
        self.drives()
    }

    fn save_as(&mut self) -> anyhow::Result<()> {
        self.report.step(
            6,
            STEPS,
            "disk-saveas of disk.1 into new image 2 (mkfs save_as, cpds)",
        );
        let mut img2 = ImageSpec::datablock(2, IMAGE_DS, 96, "");
        img2.format = "save_as".into();
        img2.persistent = false;
        let out = self.ds(
            "mkfs",
            "2",
            &ds_message(Some(&img2), &self.image_ds, ""),
            "image 2: FORMAT save_as, 96 MB",
        )?;
        expect_line(&out, "kvm1:vg-one-100/img-one-2", "mkfs save_as")?;
        self.tm(
            &format!(
                "CPDS bsud {} kvm1:vg-one-100/img-one-2 -1 {VM} {IMAGE_DS}",
                dk("kvm1", SYSTEM_DS, 1)
            ),
            None,
        )?;
        self.image_is(2, "disk.1", self.disks[&1].clone())?;
        self.drives()
    }

    fn terminate(&mut self) -> anyhow::Result<()> {
        self.report.step(
            7,
            STEPS,
            "Terminate VM 42: the persistent disk goes back into image 1 (mvds), the rest is deleted",
        );
        let (h, ds) = ("kvm1", SYSTEM_DS);
        self.tm(
            &format!(
                "MVDS bsud {} kvm1:vg-one-100/img-one-1 {VM} 100",
                dk(h, ds, 0)
            ),
            None,
        )?;
        self.tm(&format!("DELETE bsud {} {VM} 100", dk(h, ds, 1)), None)?;
        self.tm(&format!("DELETE bsud {} {VM} {ds}", dk(h, ds, 2)), None)?;
        self.tm(&format!("DELETE bsud {} {VM} {ds}", dk(h, ds, 3)), None)?;
        self.tm(&format!("DELETE bsud {} {VM} {ds}", vm_dir(h, ds)), None)?;
        self.image_is(1, "disk.0 as the guest left it", self.disks[&0].clone())?;
        for h in ["kvm1", "kvm2"] {
            self.check_vm_gone_from(h)?;
        }
        self.drives()
    }

    fn delete_images(&mut self) -> anyhow::Result<()> {
        self.report.step(
            8,
            STEPS,
            "Delete images 0, 1 and 2 (rm); the drives release their volumes",
        );
        for id in [0i64, 1, 2] {
            let mut img = ImageSpec::os(id, IMAGE_DS, "", 0);
            img.source = format!("kvm1:vg-one-100/img-one-{id}");
            img.format = "raw".into();
            img.state = 1;
            self.ds(
                "rm",
                &id.to_string(),
                &ds_message(Some(&img), &self.image_ds, ""),
                &format!("image {id}"),
            )?;
        }
        self.drives()?;
        // Nothing of ours anywhere: no LV on a host, no BSU in the cloud.
        let mut left = Vec::new();
        for h in ["kvm1", "kvm2"] {
            for lv in self.lvs(h)? {
                left.push(format!("LV {lv} on {h}"));
            }
        }
        // DeleteVolume is asynchronous: give the last releases the cloud's delay to finish.
        let vols = poll(
            "the released BSU volumes to be deleted",
            Wait::new(Duration::from_secs(30), Duration::from_millis(100)),
            || {
                let v = self.our_volumes()?;
                Ok(
                    if v.iter().all(|v| v.state == VolumeState::Deleting) && !v.is_empty() {
                        Poll::Pending(format!("{} still deleting", v.len()))
                    } else {
                        Poll::Ready(v)
                    },
                )
            },
        )?;
        for v in vols {
            left.push(format!("BSU {} ({:?})", v.id, v.state));
        }
        if !left.is_empty() {
            return Err(fail(
                ErrorKind::Failed,
                format!("demo: left after terminate and rm: {}", left.join(", ")),
            ));
        }
        self.report
            .note("no LV on any host, no BSU volume in the cloud");
        Ok(())
    }

    /// `--keep`: wait for a signal with the testbed up, saying how to look at it.
    fn keep(&mut self, sim: &Path, bsud: &Path) {
        let dir = self.tb.dir().to_path_buf();
        let mut lines = vec![
            String::new(),
            format!(
                "Testbed kept in {}: VM {VM} runs on kvm1 (datastore {SYSTEM_DS}), images 0, 1, 2 in datastore {IMAGE_DS}.",
                dir.display()
            ),
            "In another shell, as root:".to_string(),
        ];
        let exports: Vec<String> = self
            .action_env
            .iter()
            .filter(|(k, _)| k != "PATH")
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    crate::exec::ssh::quote_words(&[v]).unwrap_or_else(|_| v.clone())
                )
            })
            .collect();
        lines.push(format!("  export {}", exports.join(" ")));
        let b = bsud.display();
        let s = sim.display();
        for c in [
            format!("{b} drive list"),
            format!("{b} drive show --host kvm1 --ds {SYSTEM_DS}"),
            format!("{b} cloud volumes"),
            format!(
                "{s} ssh --testbed {} kvm1 lvs -o lv_name,lv_size,lv_tags",
                dir.display()
            ),
            format!(
                "ls -l {}/machines/kvm1/var/lib/one/datastores/{SYSTEM_DS}/{VM}/",
                dir.display()
            ),
            format!(
                "{}/tm/bsud/delete kvm1:{DSL}/{SYSTEM_DS}/{VM}/disk.3 {VM} {SYSTEM_DS}",
                self.remotes.display()
            ),
        ] {
            lines.push(format!("  {c}"));
        }
        lines.push("Press Ctrl-C here to tear it all down.".into());
        for l in lines {
            self.report.always(&l);
        }
        self.report.event(serde_json::json!({
            "event": "kept", "dir": dir, "env": self.action_env,
        }));
        while !self.interrupt.raised() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // -----------------------------------------------------------------------------------------
    // Running actions

    /// Runs datastore action `action` as oned 7.x does: `<entry> <id>`, message on stdin.
    fn ds(&mut self, action: &str, id: &str, xml: &str, shown: &str) -> anyhow::Result<String> {
        let entry = self.remotes.join("datastore/bsud").join(action);
        let stdin = b64(xml);
        self.exec("ds", action, &entry, &[id.to_string()], Some(&stdin), shown)
    }

    /// Runs one transfer line `ACTION bsud args…` as one_tm does: `<entry> args…`.
    fn tm(&mut self, line: &str, stdin: Option<&str>) -> anyhow::Result<String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let action = words[0].to_ascii_lowercase();
        let entry = self.remotes.join("tm/bsud").join(&action);
        let args: Vec<String> = words[2..].iter().map(|s| s.to_string()).collect();
        let shown = args.join(" ").replace(&format!("{DSL}/"), "…/");
        self.exec("tm", &action, &entry, &args, stdin, &shown)
    }

    fn exec(
        &mut self,
        kind: &'static str,
        action: &str,
        entry: &Path,
        args: &[String],
        stdin: Option<&str>,
        shown: &str,
    ) -> anyhow::Result<String> {
        self.interrupt.check()?;
        let mut cmd = Cmd::new(entry)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("BSUD_LOG")
            .env_remove("BSUD_CRASH_AT")
            .timeout(ACTION_TIMEOUT);
        for (k, v) in &self.action_env {
            cmd = cmd.env(k, v);
        }
        if let Some(s) = stdin {
            cmd = cmd.stdin_bytes(s.as_bytes().to_vec());
        }
        let t = Instant::now();
        let out = exec::output(&cmd);
        let seconds = t.elapsed().as_secs_f64();
        let (ok, stdout, stderr) = match &out {
            Ok(o) => (
                o.status.success(),
                o.stdout_str(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            ),
            Err(e) => (false, String::new(), format!("{e:#}")),
        };
        let error = if ok {
            String::new()
        } else {
            stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message")
                .to_string()
        };
        self.log_action(kind, action, args, &stdout, &stderr);
        self.report.action(&ActionRecord {
            kind,
            action: action.to_string(),
            argv: args.to_vec(),
            shown: shown.to_string(),
            seconds,
            ok,
            stdout: stdout.clone(),
            error: error.clone(),
        });
        if !ok {
            return Err(fail(
                ErrorKind::Failed,
                format!(
                    "demo: {kind} {action} failed: {error} (full log: {})",
                    self.action_log.display()
                ),
            ));
        }
        Ok(stdout)
    }

    fn log_action(&self, kind: &str, action: &str, args: &[String], stdout: &str, stderr: &str) {
        let text = format!(
            "=== {kind} {action} {}\n{stderr}{}",
            args.join(" "),
            if stdout.is_empty() {
                String::new()
            } else {
                format!("stdout: {stdout}")
            }
        );
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.action_log)
        {
            let _ = f.write_all(text.as_bytes());
        }
    }

    // -----------------------------------------------------------------------------------------
    // Looking at the result

    /// Reports one check of `bytes` and fails the demo when it did not pass.
    fn checked(&mut self, what: &str, bytes: &[u8], detail: Option<String>) -> anyhow::Result<()> {
        let digest = hex::encode(sha2::Sha256::digest(bytes));
        let ok = detail.is_none();
        let detail = detail.unwrap_or_default();
        self.report.verify(what, bytes.len(), &digest, ok, &detail);
        if ok {
            Ok(())
        } else {
            Err(fail(
                ErrorKind::Failed,
                format!("demo: verification failed: {what}: {detail}"),
            ))
        }
    }

    fn verify(&mut self, what: &str, got: &[u8], want: &[u8]) -> anyhow::Result<()> {
        let detail = if got == want {
            None
        } else if got.len() != want.len() {
            Some(format!("{} bytes, expected {}", got.len(), want.len()))
        } else {
            let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
            Some(format!(
                "first difference at byte {at}: {:#04x}, expected {:#04x}; expected sha256 {}",
                got[at],
                want[at],
                hex::encode(sha2::Sha256::digest(want))
            ))
        };
        self.checked(what, got, detail)
    }

    /// `bytes` holds `magic` at `offset` (a file system or swap signature).
    fn signature(
        &mut self,
        what: &str,
        bytes: &[u8],
        offset: usize,
        magic: &[u8],
    ) -> anyhow::Result<()> {
        let ok = bytes.get(offset..offset + magic.len()) == Some(magic);
        let detail = (!ok).then(|| format!("no signature {magic:02x?} at byte {offset}"));
        self.checked(what, bytes, detail)
    }

    /// Image `id`'s LV holds `want` (described as `what`), which the model then records.
    fn image_is(&mut self, id: i64, what: &str, want: Vec<u8>) -> anyhow::Result<()> {
        let got = self.read_image(id)?;
        self.verify(&format!("image {id} = {what}"), &got, &want)?;
        self.images.insert(id, want);
        Ok(())
    }

    /// Every disk of the model against its LV on `host`.
    fn check_disks(&mut self, host: &str) -> anyhow::Result<()> {
        let kinds = ["persistent", "non-persistent", "volatile", "swap"];
        for n in 0..4u32 {
            let got = self.read_disk_on(host, n)?;
            let want = self.disks[&n].clone();
            self.verify(
                &format!(
                    "disk.{n} on {host} ({}) = what was written",
                    kinds[n as usize]
                ),
                &got,
                &want,
            )?;
        }
        Ok(())
    }

    /// The context disk is an ISO labelled CONTEXT holding the VM's context.sh.
    fn check_context(&mut self) -> anyhow::Result<()> {
        let host = self.host.clone();
        let p = self.disk_file(&host, 4);
        let iso = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        let ok = iso.get(0x8028..0x802F) == Some(b"CONTEXT".as_slice())
            && String::from_utf8_lossy(&iso).contains(&format!("VMID='{VM}'"));
        let what = format!("disk.4 on {host} is the context ISO (VMID={VM})");
        let detail = (!ok).then(|| "not an ISO labelled CONTEXT holding VMID".to_string());
        self.checked(&what, &iso, detail)
    }

    /// No LV and no directory of the VM is left on `host`.
    fn check_vm_gone_from(&mut self, host: &str) -> anyhow::Result<()> {
        let prefix = format!("lv-one-{VM}-");
        let lvs: Vec<String> = self
            .lvs(host)?
            .into_iter()
            .filter(|l| l.split('/').nth(1).is_some_and(|n| n.starts_with(&prefix)))
            .collect();
        let dir = self.host_path(host, &format!("{DSL}/{SYSTEM_DS}/{VM}"));
        if !lvs.is_empty() || dir.exists() {
            return Err(fail(
                ErrorKind::Failed,
                format!(
                    "demo: VM {VM} left on {host}: {}{}",
                    lvs.join(", "),
                    if dir.exists() {
                        " and its directory"
                    } else {
                        ""
                    }
                ),
            ));
        }
        self.report.note(&format!(
            "nothing of VM {VM} left on {host} (no LV, no directory)"
        ));
        Ok(())
    }

    /// Prints the drives as the cloud and LVM see them, with the change since the last call.
    fn drives(&mut self) -> anyhow::Result<()> {
        let mut by_name: BTreeMap<String, DriveState> = BTreeMap::new();
        let mut deleting = 0;
        for v in self.our_volumes()? {
            // DeleteVolume returns before the volume is gone: it is no longer the drive's.
            if v.state == VolumeState::Deleting {
                deleting += 1;
                continue;
            }
            let name = v.tags.get(TAG_DRIVE).cloned().unwrap_or_default();
            let d = by_name.entry(name.clone()).or_insert(DriveState {
                name,
                bsus: 0,
                bsu_gib: 0,
                vg_bytes: 0,
                vg_free: 0,
                lvs: 0,
            });
            d.bsus += 1;
            d.bsu_gib += v.size_gib;
        }
        for h in ["kvm1", "kvm2"] {
            let view = &self.tb.host(h).expect("testbed host").view;
            let out = exec::run(
                &view
                    .cmd("vgs")
                    .args([
                        "--noheadings",
                        "--units",
                        "b",
                        "--nosuffix",
                        "--separator",
                        "|",
                        "-o",
                        "vg_name,vg_size,vg_free,lv_count",
                    ])
                    .timeout(Duration::from_secs(60)),
            )?;
            for l in out.stdout_str().lines().filter(|l| !l.trim().is_empty()) {
                let p: Vec<&str> = l.trim().split('|').collect();
                let name = format!("{h}:{}", p[0]);
                let d = by_name.entry(name.clone()).or_insert(DriveState {
                    name,
                    bsus: 0,
                    bsu_gib: 0,
                    vg_bytes: 0,
                    vg_free: 0,
                    lvs: 0,
                });
                d.vg_bytes = p.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                d.vg_free = p.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
                d.lvs = p.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
            }
        }
        let now: Vec<DriveState> = by_name.into_values().collect();
        self.report.drives(&now, &self.drives_before, deleting);
        self.drives_before = now.into_iter().map(|d| (d.name.clone(), d)).collect();
        Ok(())
    }

    fn our_volumes(&self) -> anyhow::Result<Vec<crate::cloud::Volume>> {
        self.cloud.find_volumes(&VolumeFilter {
            tag_keys: vec![TAG_DRIVE.into()],
            ..Default::default()
        })
    }

    /// `vg/lv` of every LV on `host`.
    fn lvs(&self, host: &str) -> anyhow::Result<Vec<String>> {
        let view = &self.tb.host(host).expect("testbed host").view;
        let out = exec::run(
            &view
                .cmd("lvs")
                .args(["--noheadings", "--separator", "/", "-o", "vg_name,lv_name"])
                .timeout(Duration::from_secs(60)),
        )?;
        Ok(out
            .stdout_str()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    fn host_root(&self, host: &str) -> PathBuf {
        if host == FRONTEND_HOST {
            self.tb.frontend().root().to_path_buf()
        } else {
            self.tb
                .host(host)
                .expect("testbed host")
                .view
                .root()
                .to_path_buf()
        }
    }

    /// A path oned names, on `host`.
    fn host_path(&self, host: &str, p: &str) -> PathBuf {
        self.host_root(host)
            .join(crate::one::normalize_path(p).trim_start_matches('/'))
    }

    fn fe_path(&self, p: &str) -> PathBuf {
        self.host_path(FRONTEND_HOST, p)
    }

    /// `disk.N` of the VM on `host` (a link to its LV's node).
    fn disk_file(&self, host: &str, n: u32) -> PathBuf {
        self.host_path(host, &format!("{DSL}/{SYSTEM_DS}/{VM}/disk.{n}"))
    }

    fn read_disk(&self, n: u32) -> anyhow::Result<Vec<u8>> {
        self.read_disk_on(&self.host, n)
    }

    fn read_disk_on(&self, host: &str, n: u32) -> anyhow::Result<Vec<u8>> {
        let p = self.disk_file(host, n);
        std::fs::read(&p)
            .with_context(|| format!("demo: reading disk.{n} on {host} ({})", p.display()))
    }

    fn read_image(&self, id: i64) -> anyhow::Result<Vec<u8>> {
        let p = self
            .tb
            .host("kvm1")
            .expect("testbed host")
            .view
            .lv_dir()
            .join(format!("vg-one-{IMAGE_DS}"))
            .join(format!("img-one-{id}"));
        std::fs::read(&p).with_context(|| format!("demo: reading image {id} ({})", p.display()))
    }

    /// Writes the VM's context.sh on the frontend; returns the path oned names.
    fn context_file(&self) -> anyhow::Result<String> {
        let p = format!("/var/lib/one/vms/{VM}/context.sh");
        let f = self.fe_path(&p);
        std::fs::create_dir_all(f.parent().expect("has a parent"))?;
        std::fs::write(
            &f,
            format!("# Context variables generated by the demo\nVMID='{VM}'\nHOSTNAME='vm-{VM}'\n"),
        )?;
        Ok(p)
    }
}

/// The VM: persistent image 1 (disk 0), non-persistent image 0 grown to 96 MiB (disk 1),
/// volatile ext4 (disk 2), swap (disk 3); context is disk 4.
fn vm_spec(history: &[(&str, i64)]) -> VmSpec {
    VmSpec {
        id: VM,
        state: 3,
        lcm_state: 3,
        disks: vec![
            DiskSpec::image(0, 1, IMAGE_DS, "kvm1:vg-one-100/img-one-1", 24, true),
            DiskSpec::image(1, 0, IMAGE_DS, "kvm1:vg-one-100/img-one-0", 96, false),
            DiskSpec::volatile(2, "fs", 32, Some("ext4")),
            DiskSpec::volatile(3, "swap", 16, None),
        ],
        history: history.iter().map(|(h, d)| (h.to_string(), *d)).collect(),
    }
}

/// `host:<DSL>/<ds>/<vm>/disk.<n>`.
fn dk(host: &str, ds: i64, n: u32) -> String {
    format!("{host}:{DSL}/{ds}/{VM}/disk.{n}")
}

/// `host:<DSL>/<ds>/<vm>`.
fn vm_dir(host: &str, ds: i64) -> String {
    format!("{host}:{DSL}/{ds}/{VM}")
}

/// The driver installed as oned finds it: every entry script and the binary (a link to this
/// one) in `remotes/tm/bsud/`.
fn install(remotes: &Path, bsud: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for (folder, text, actions) in [
        ("datastore/bsud", DS_ENTRY, crate::one::DS_ACTIONS),
        ("tm/bsud", TM_ENTRY, crate::one::tm::TM_ACTIONS),
    ] {
        let d = remotes.join(folder);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        for a in actions {
            let p = d.join(a);
            std::fs::write(&p, text)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    std::os::unix::fs::symlink(bsud, remotes.join("tm/bsud/one-bsud"))
        .context("demo: installing the binary")?;
    Ok(())
}

fn expect_line(out: &str, want: &str, what: &str) -> anyhow::Result<()> {
    if out.trim_end() == want {
        Ok(())
    } else {
        Err(fail(
            ErrorKind::Failed,
            format!(
                "demo: {what} printed {:?}, expected {want:?}",
                out.trim_end()
            ),
        ))
    }
}

/// Writes `content` leaving its zero MiBs as holes (the qcow2 then holds only the data).
fn write_sparse(p: &Path, content: &[u8]) -> anyhow::Result<()> {
    let f = std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
    f.set_len(content.len() as u64)?;
    for (i, chunk) in content.chunks(MIB).enumerate() {
        if chunk.iter().any(|b| *b != 0) {
            f.write_all_at(chunk, (i * MIB) as u64)?;
        }
    }
    Ok(())
}

fn write_at(p: &Path, off: u64, data: &[u8]) -> anyhow::Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .with_context(|| format!("opening {}", p.display()))?;
    f.write_all_at(data, off)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded entries are the repository's, file for file.
    #[test]
    fn embedded_entries_are_the_repository_s() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../remotes");
        for (folder, text, actions) in [
            ("datastore/bsud", DS_ENTRY, crate::one::DS_ACTIONS),
            ("tm/bsud", TM_ENTRY, crate::one::tm::TM_ACTIONS),
        ] {
            let mut files: Vec<String> = std::fs::read_dir(root.join(folder))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            let mut want: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
            want.sort();
            assert_eq!(files, want, "{folder}");
            for f in files {
                assert_eq!(
                    std::fs::read_to_string(root.join(folder).join(&f)).unwrap(),
                    text,
                    "{folder}/{f}"
                );
            }
        }
    }

    #[test]
    fn a_sparse_source_keeps_its_holes_and_bytes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.raw");
        let mut content = vec![0u8; 8 * MIB];
        content[5 * MIB..5 * MIB + 10].copy_from_slice(&pattern(3, 10));
        write_sparse(&p, &content).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), content);
        use std::os::unix::fs::MetadataExt;
        assert!(std::fs::metadata(&p).unwrap().blocks() * 512 <= 2 * MIB as u64);
    }
}
