//! The transfer manager on the testbed (bsud-sim cloud, hosts kvm1 and kvm2 with real LVM,
//! the frontend): every TM action run through the real `remotes/tm/bsud/<action>` entry of an
//! install, argument for argument as oned sends them (shapes of the recorded non-shared
//! traces, tests/fixtures/oned-traces-nonshared), one `lifecycle_*` test per event sequence of
//! the reference §5, and `tm_*` tests for crashes, failures, hostile input and monitoring.
//! At each step every disk's bytes are compared with what the test wrote (patterns written
//! through lvfs); at the end no LV, no BSU and no file of the VM is left.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bsud::actions::Ctx;
use bsud::cloud::{Cloud, VolumeFilter};
use bsud::config::{Config, Env};
use bsud::drive::storage::Storage;
use bsud::host::client::HostClient;
use bsud::sim::one::{b64, DatastoreSpec, DiskSpec, VmSpec};
use bsud::sim::testbed::{Testbed, TestbedOpts, Tier};
use support::{Install, Kind};

const FE: &str = "frontend";
/// oned's DATASTORE_LOCATION, double slash included.
const DSL: &str = "/var/lib/one//datastores";
const MIB: usize = 1 << 20;
/// The thin system datastore of every bed.
const THIN_DS: i64 = 103;
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a run did; `code` is None when a signal killed it (crash points).
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// The testbed, an install of the driver and the frontend's library view.
struct Bed {
    started: std::time::Instant,
    tb: Testbed,
    install: Install,
    config: PathBuf,
    ctx: Ctx,
}

use bsud::sim::testbed::pattern;

/// Where two buffers first differ (for failure messages).
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

impl Bed {
    /// A bed on the tier `BSUD_TIER` names (simulated hosts by default).
    fn new() -> Bed {
        Bed::on(Tier::from_env().unwrap())
    }

    fn on(tier: Tier) -> Bed {
        let mut o = TestbedOpts::new(
            env!("CARGO_BIN_EXE_bsud-sim"),
            env!("CARGO_BIN_EXE_one-bsud"),
        );
        o.tier = tier;
        o.serve_args = [
            "--create-delay-ms",
            "5",
            "--attach-delay-ms",
            "5",
            "--detach-delay-ms",
            "5",
            "--delete-delay-ms",
            "5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Fails loudly (never skips) when the real-kernel tier cannot start.
        let tb = Testbed::start(o).unwrap_or_else(|e| panic!("testbed ({tier:?}) starts: {e:#}"));
        let install = Install::new();
        // The testbed's configuration plus where the other transfer managers live.
        let text = std::fs::read_to_string(tb.config_path()).unwrap();
        let config = tb.dir().join("bsud-tm.toml");
        std::fs::write(
            &config,
            format!("remotes_dir = {:?}\n{text}", install.path("remotes")),
        )
        .unwrap();
        let small = |d: DatastoreSpec| {
            d.attr("BSUD_MIN_VOLUME_GIB", "1")
                .attr("BSUD_HEADROOM_GIB", "0")
        };
        tb.put_datastore(&small(DatastoreSpec::image(100)).attr("BSUD_IMAGE_HOST", "kvm1"))
            .unwrap();
        tb.put_datastore(&small(DatastoreSpec::system(101)))
            .unwrap();
        tb.put_datastore(&small(DatastoreSpec::system(102)))
            .unwrap();
        // Thin (device-mapper thin pools: real-kernel tier only).
        tb.put_datastore(
            &small(DatastoreSpec::system(THIN_DS))
                .attr("BSUD_THIN", "YES")
                .attr("BSUD_MAX_SIZE_GIB", "64")
                // A guest under TCG saturates its one vCPU while it writes, which slows the
                // host side of a growth: start it early.
                .attr("BSUD_POOL_GROW_PERCENT", "50"),
        )
        .unwrap();
        let mut env = tb.env();
        env.push(("BSUD_CONFIG".into(), config.to_string_lossy().into_owned()));
        let ctx = Ctx::new(
            Config::load(&Env::from_pairs(env.clone())).unwrap(),
            Env::from_pairs(env),
        );
        Bed {
            started: std::time::Instant::now(),
            tb,
            install,
            config,
            ctx,
        }
    }

    fn storage(&self) -> Storage<'_> {
        let mut s = Storage::new(&self.ctx);
        s.hosts =
            HostClient::new(&self.ctx.config).with_local_exe(env!("CARGO_BIN_EXE_one-bsud").into());
        s
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut env = self.tb.env();
        env.push(("PATH".into(), PATH.into()));
        env.push((
            "BSUD_CONFIG".into(),
            self.config.to_string_lossy().into_owned(),
        ));
        env
    }

    fn exec(&self, program: &Path, args: &[&str], stdin: &[u8], env: &[(String, String)]) -> Run {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut pipe = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let w = std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut pipe, &data);
        });
        let out = child.wait_with_output().unwrap();
        w.join().unwrap();
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The entry one_tm runs for `ACTION[.suffix]`: `<action>.<suffix>` when it exists, else
    /// `<action>`.
    fn entry(&self, action: &str) -> PathBuf {
        let lower = action.to_ascii_lowercase();
        let exact = self.install.entry(Kind::Tm, &lower);
        if exact.exists() {
            return exact;
        }
        let base = lower.split_once('.').map(|(b, _)| b).unwrap_or(&lower);
        self.install.entry(Kind::Tm, base)
    }

    /// Runs one transfer line (`ACTION tm args…`) with extra environment.
    fn line_env(&self, line: &str, stdin: &[u8], extra: &[(&str, &str)]) -> Run {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[1], "bsud", "{line}");
        let mut env = self.env();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.exec(&self.entry(words[0]), &words[2..], stdin, &env)
    }

    /// Runs a transfer line that must succeed.
    #[track_caller]
    fn ok(&self, line: &str) {
        self.ok_stdin(line, b"")
    }

    #[track_caller]
    fn ok_stdin(&self, line: &str, stdin: &[u8]) {
        let t = std::time::Instant::now();
        let r = self.line_env(line, stdin, &[]);
        match std::env::var("TM_TIMING").as_deref() {
            Ok("verbose") => eprintln!(
                "TIMING {line}: {:.1}s\n{}",
                t.elapsed().as_secs_f64(),
                r.stderr
            ),
            Ok(_) => eprintln!("TIMING {line}: {:.1}s", t.elapsed().as_secs_f64()),
            Err(_) => {}
        }
        assert_eq!(r.code, Some(0), "{line}\n{}", r.stderr);
        assert_eq!(r.stdout, "", "{line}: TM actions print nothing");
    }

    /// Raises the configuration's transfer deadline (copies of whole GiB under TCG).
    fn transfer_deadline_secs(&self, secs: u64) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let longer = text.replace("transfer = 300", &format!("transfer = {secs}"));
        assert_ne!(
            text, longer,
            "the testbed configuration names the transfer deadline"
        );
        std::fs::write(&self.config, longer).unwrap();
    }

    /// Runs `one-bsud <args>` as an operator would, which must succeed.
    #[track_caller]
    fn cli(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new(env!("CARGO_BIN_EXE_one-bsud"))
            .args(args)
            .env_clear()
            .envs(self.env())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "one-bsud {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs every line.
    #[track_caller]
    fn all(&self, lines: &[String]) {
        for l in lines {
            self.ok(l);
        }
    }

    /// Creates image LV `img-one-<id>` of `mib` MiB on kvm1's drive of datastore 100, full of a
    /// pattern, as the datastore driver would leave it; returns its content.
    fn image(&self, id: i64, mib: usize, seed: u8) -> Vec<u8> {
        let st = self.storage();
        let d = st.drive_by_id("kvm1", 100).unwrap();
        let lv = format!("img-one-{id}");
        st.allocate(
            &d,
            &lv,
            (mib * MIB) as u64,
            &[&format!("one.image={id}"), "one.bsud.state=ready"],
        )
        .unwrap();
        let data = pattern(seed, mib * MIB);
        self.lv("kvm1", 100, &lv).write_at(0, &data);
        data
    }

    /// Removes an image LV as the datastore driver's rm would.
    fn remove_image(&self, id: i64) {
        let st = self.storage();
        let d = st.drive_by_id("kvm1", 100).unwrap();
        st.remove(&d, &format!("img-one-{id}")).unwrap();
        // Snapshots saved with persistent images.
        for lv in self.lvs("kvm1") {
            if lv.1.starts_with(&format!("img-one-{id}-snap-")) {
                st.remove(&d, &lv.1).unwrap();
            }
        }
    }

    fn root(&self, host: &str) -> PathBuf {
        if host == FE {
            self.tb.frontend().root().to_path_buf()
        } else {
            self.tb.host(host).unwrap().view.root().to_path_buf()
        }
    }

    /// A path oned names, on `host`.
    fn path(&self, host: &str, p: &str) -> PathBuf {
        self.root(host)
            .join(bsud::one::normalize_path(p).trim_start_matches('/'))
    }

    /// LV `lv` of datastore `ds`'s drive on `host`.
    fn lv(&self, host: &str, ds: i64, lv: &str) -> At<'_> {
        self.at(host, &format!("/dev/vg-one-{ds}/{lv}"))
    }

    /// File `p` (a path oned names, or an LV's `/dev/<vg>/<lv>`) on `host`.
    fn at(&self, host: &str, p: &str) -> At<'_> {
        At {
            bed: self,
            host: host.to_string(),
            path: bsud::one::normalize_path(p),
        }
    }

    fn lv_file(&self, host: &str, ds: i64, lv: &str) -> PathBuf {
        self.lv(host, ds, lv)
            .local()
            .expect("a simulated host's LV is a local file")
    }

    fn write_file(&self, p: &Path, off: u64, data: &[u8]) {
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.write_all_at(data, off).unwrap();
        f.sync_all().unwrap();
    }

    /// Runs `script` on a real-kernel host; its stdout.
    #[track_caller]
    fn guest_sh(&self, host: &str, script: &str, stdin: Vec<u8>) -> Vec<u8> {
        self.tb
            .host_sh_stdin(host, script, stdin)
            .unwrap_or_else(|e| panic!("{host}: {script}: {e:#}"))
            .stdout
    }

    /// (vg, lv, tags) of every LV on `host`.
    fn lvs(&self, host: &str) -> Vec<(String, String, String)> {
        let args = [
            "lvs",
            "--noheadings",
            "--separator",
            "|",
            "-o",
            "vg_name,lv_name,lv_tags",
        ];
        let text = if self.tb.tier() == Tier::Rk {
            let script = bsud::exec::ssh::quote_words(&args).unwrap();
            String::from_utf8(self.guest_sh(host, &script, Vec::new())).unwrap()
        } else {
            bsud::exec::run(&self.tb.host(host).unwrap().view.cmd("lvs").args(&args[1..]))
                .unwrap()
                .stdout_str()
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let p: Vec<&str> = l.trim().split('|').collect();
                (
                    p[0].into(),
                    p[1].into(),
                    p.get(2).unwrap_or(&"").to_string(),
                )
            })
            .collect()
    }

    /// LV names of VM `vm` on `host`.
    fn vm_lvs(&self, host: &str, vm: i64) -> Vec<String> {
        let mut v: Vec<String> = self
            .lvs(host)
            .into_iter()
            .filter(|l| l.1.starts_with(&format!("lv-one-{vm}-")))
            .map(|l| format!("{}/{}", l.0, l.1))
            .collect();
        v.sort();
        v
    }

    fn volumes(&self) -> Vec<bsud::cloud::Volume> {
        let c =
            bsud::cloud::outscale::OutscaleCloud::new(&self.ctx.config.cloud.resolve().unwrap())
                .unwrap();
        // Ours only: every host VM also has its root volume.
        c.find_volumes(&VolumeFilter {
            tag_keys: vec![bsud::drive::naming::TAG_DRIVE.into()],
            ..Default::default()
        })
        .unwrap()
    }

    fn put_vm(&self, vm: &VmSpec) {
        self.tb.put_vm(vm).unwrap();
    }

    /// Writes the VM's context.sh on the frontend.
    fn context_file(&self, vm: i64) -> String {
        let p = format!("/var/lib/one/vms/{vm}/context.sh");
        let f = self.path(FE, &p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(
            &f,
            format!("# Context variables\nVMID='{vm}'\nHOSTNAME='vm-{vm}'\n"),
        )
        .unwrap();
        p
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if std::env::var_os("TM_TIMING").is_some() {
            eprintln!(
                "TIMING {}: {:.1}s",
                std::thread::current().name().unwrap_or("?"),
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// A transfer line `ACTION bsud <target> <rest>`.
fn tl(action: &str, target: String, rest: &str) -> String {
    format!("{action} bsud {target} {rest}")
}

/// `host:<DSL>/<ds>/<vm>/disk.<n>`.
fn dk(host: &str, ds: i64, vm: i64, n: u32) -> String {
    format!("{host}:{DSL}/{ds}/{vm}/disk.{n}")
}

/// `host:<DSL>/<ds>/<vm>`.
fn dir(host: &str, ds: i64, vm: i64) -> String {
    format!("{host}:{DSL}/{ds}/{vm}")
}

/// A VM's disks as the test knows them: expected bytes by disk id.
struct Model {
    vm: i64,
    disks: BTreeMap<u32, Vec<u8>>,
}

impl Model {
    /// Reads every disk of the VM where oned placed it (through `disk.N`) and records it as
    /// the expected content (after deploy: images and fresh file systems).
    fn capture(bed: &Bed, host: &str, ds: i64, vm: i64, ids: &[u32]) -> Model {
        let mut disks = BTreeMap::new();
        for &n in ids {
            disks.insert(n, read_disk(bed, host, ds, vm, n));
        }
        Model { vm, disks }
    }

    /// Writes a pattern into disk `n` (through its link) and into the model.
    fn write(
        &mut self,
        bed: &Bed,
        (host, ds): (&str, i64),
        n: u32,
        off: usize,
        len: usize,
        seed: u8,
    ) {
        let data = pattern(seed, len);
        bed.at(host, &disk_path(ds, self.vm, n))
            .write_at(off as u64, &data);
        let e = self.disks.get_mut(&n).unwrap();
        e[off..off + len].copy_from_slice(&data);
    }

    /// Every disk on `host` equals the model.
    #[track_caller]
    fn check(&self, bed: &Bed, host: &str, ds: i64, what: &str) {
        for (n, want) in &self.disks {
            let got = read_disk(bed, host, ds, self.vm, *n);
            assert_eq!(got.len(), want.len(), "{what}: disk.{n} size");
            assert!(
                got == *want,
                "{what}: disk.{n} content differs at byte {:?}",
                first_difference(&got, want)
            );
        }
    }
}

fn disk_path(ds: i64, vm: i64, n: u32) -> String {
    format!("{DSL}/{ds}/{vm}/disk.{n}")
}

fn read_disk(bed: &Bed, host: &str, ds: i64, vm: i64, n: u32) -> Vec<u8> {
    let f = bed.at(host, &disk_path(ds, vm, n));
    assert!(f.is_symlink(), "{host}:{} is not a link", f.path);
    f.read()
}

fn blkid(p: &Path) -> String {
    let out = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A file as a host sees it: local on the frontend and on simulated hosts (through the
/// host's root, LVs through its lvfs), over real ssh inside a real-kernel guest (compressed
/// both ways: ssh crypto under TCG moves ~8 MB/s, and test patterns compress well).
struct At<'a> {
    bed: &'a Bed,
    host: String,
    path: String,
}

impl At<'_> {
    /// The local file, `None` inside a guest.
    fn local(&self) -> Option<PathBuf> {
        if self.host == FE {
            return Some(self.bed.path(FE, &self.path));
        }
        if self.bed.tb.tier() == Tier::Rk {
            return None;
        }
        let view = &self.bed.tb.host(&self.host).unwrap().view;
        Some(match self.path.strip_prefix("/dev/") {
            Some(lv) => view.lv_dir().join(lv),
            None => self.bed.path(&self.host, &self.path),
        })
    }

    fn quoted(&self) -> String {
        bsud::exec::ssh::quote_words(&[&self.path]).unwrap()
    }

    fn sh(&self, script: &str, stdin: Vec<u8>) -> Vec<u8> {
        self.bed.guest_sh(&self.host, script, stdin)
    }

    /// `test <flag> <path>`.
    fn test(&self, flag: &str) -> bool {
        self.sh(
            &format!("if test {flag} {}; then echo y; fi", self.quoted()),
            Vec::new(),
        ) == b"y\n"
    }

    fn read(&self) -> Vec<u8> {
        match self.local() {
            Some(p) => std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            None => gzip(
                "-dc",
                &self.sh(&format!("gzip -1 -c < {}", self.quoted()), Vec::new()),
            ),
        }
    }

    fn write_at(&self, off: u64, data: &[u8]) {
        match self.local() {
            Some(p) => self.bed.write_file(&p, off, data),
            None => {
                self.sh(
                    &format!(
                        "gzip -dc | dd of={} bs=1M iflag=fullblock oflag=seek_bytes seek={off} \
                         conv=notrunc,fsync status=none",
                        self.quoted()
                    ),
                    gzip("-1c", data),
                );
            }
        }
    }

    /// Creates or replaces the file with `data`.
    fn put(&self, data: &[u8]) {
        match self.local() {
            Some(p) => std::fs::write(&p, data).unwrap(),
            None => {
                self.sh(&format!("gzip -dc > {}", self.quoted()), gzip("-1c", data));
            }
        }
    }

    fn exists(&self) -> bool {
        match self.local() {
            Some(p) => p.symlink_metadata().is_ok(),
            None => self.test("-e") || self.test("-L"),
        }
    }

    fn is_symlink(&self) -> bool {
        match self.local() {
            Some(p) => p
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink()),
            None => self.test("-L"),
        }
    }

    fn is_file(&self) -> bool {
        match self.local() {
            Some(p) => p.symlink_metadata().is_ok_and(|m| m.file_type().is_file()),
            None => self.test("-f") && !self.test("-L"),
        }
    }

    /// The file system or swap signature (`blkid -p`).
    fn blkid(&self) -> String {
        match self.local() {
            Some(p) => blkid(&p),
            None => String::from_utf8_lossy(&self.sh(
                &format!("blkid -p -o value -s TYPE {} || true", self.quoted()),
                Vec::new(),
            ))
            .trim()
            .to_string(),
        }
    }

    /// Names in the directory, `None` when it does not exist.
    fn list(&self) -> Option<Vec<String>> {
        match self.local() {
            Some(p) => std::fs::read_dir(&p).ok().map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            }),
            None => {
                let out = self.sh(
                    &format!(
                        "if test -d {p}; then echo y; ls -A {p}; fi",
                        p = self.quoted()
                    ),
                    Vec::new(),
                );
                let text = String::from_utf8(out).unwrap();
                let mut lines = text.lines();
                (lines.next() == Some("y")).then(|| lines.map(str::to_string).collect())
            }
        }
    }
}

/// `gzip <flags>` over `data` (the host's gzip; the guest has the same).
fn gzip(flags: &str, data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let data = data.to_vec();
    let w = std::thread::spawn(move || std::io::Write::write_all(&mut pipe, &data));
    let out = child.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    assert!(out.status.success(), "gzip {flags}");
    out.stdout
}

/// The main VM of the traces: persistent image 2 (disk 0), non-persistent image 0 (disk 1,
/// grown to 24 MiB), volatile ext4 (disk 2), swap (disk 3), context (disk 4).
fn main_vm(id: i64, history: &[(&str, i64)]) -> VmSpec {
    VmSpec {
        id,
        state: 3,
        lcm_state: 3,
        disks: vec![
            DiskSpec::image(0, 2, 100, "kvm1:vg-one-100/img-one-2", 16, true),
            DiskSpec::image(1, 0, 100, "kvm1:vg-one-100/img-one-0", 24, false),
            DiskSpec::volatile(2, "fs", 32, Some("ext4")),
            DiskSpec::volatile(3, "swap", 16, None),
        ],
        history: history.iter().map(|(h, d)| (h.to_string(), *d)).collect(),
    }
}

/// The prolog of the main VM on `host`/`ds` (transfer.0.prolog) and its CONTEXT line.
fn deploy_lines(bed: &Bed, vm: i64, host: &str, ds: i64) -> Vec<String> {
    let ctx = bed.context_file(vm);
    vec![
        format!(
            "LN bsud kvm1:vg-one-100/img-one-2 {} {vm} 100",
            dk(host, ds, vm, 0)
        ),
        format!(
            "CLONE bsud kvm1:vg-one-100/img-one-0 {} {vm} 100",
            dk(host, ds, vm, 1)
        ),
        format!("MKIMAGE bsud 32 raw {} {vm} {ds}", dk(host, ds, vm, 2)),
        format!("MKSWAP bsud 16 {} {vm} {ds}", dk(host, ds, vm, 3)),
        format!("CONTEXT bsud {ctx} {} {vm} {ds}", dk(host, ds, vm, 4)),
    ]
}

/// `MV` of every disk and then the directory (stop, undeploy, resume, cold migration).
fn mv_lines(vm: i64, from: (&str, i64), to: (&str, i64)) -> Vec<String> {
    let mut v = Vec::new();
    for n in 0..4u32 {
        let ds = if n < 2 { 100 } else { to.1 };
        v.push(format!(
            "MV bsud {} {} {vm} {ds}",
            dk(from.0, from.1, vm, n),
            dk(to.0, to.1, vm, n)
        ));
    }
    v.push(format!(
        "MV bsud {} {} {vm} {}",
        dir(from.0, from.1, vm),
        dir(to.0, to.1, vm),
        to.1
    ));
    v
}

/// The epilog (terminate): persistent disk saved, the rest deleted, then the directory.
fn terminate_lines(vm: i64, host: &str, ds: i64) -> Vec<String> {
    vec![
        format!(
            "MVDS bsud {} kvm1:vg-one-100/img-one-2 {vm} 100",
            dk(host, ds, vm, 0)
        ),
        format!("DELETE bsud {} {vm} 100", dk(host, ds, vm, 1)),
        format!("DELETE bsud {} {vm} {ds}", dk(host, ds, vm, 2)),
        format!("DELETE bsud {} {vm} {ds}", dk(host, ds, vm, 3)),
        format!("DELETE bsud {} {vm} {ds}", dir(host, ds, vm)),
    ]
}

/// Images 0 and 2 (16 MiB each) and the main VM deployed on `host`/`ds`, with data written
/// into every disk; returns the model (expected contents) and image 2's content.
fn deployed(bed: &Bed, vm: i64, host: &str, ds: i64) -> Model {
    bed.image(0, 16, 1);
    bed.image(2, 16, 2);
    bed.put_vm(&main_vm(vm, &[(host, ds)]));
    bed.all(&deploy_lines(bed, vm, host, ds));
    let mut m = Model::capture(bed, host, ds, vm, &[0, 1, 2, 3]);
    assert_eq!(m.disks[&0].len(), 16 * MIB);
    assert_eq!(m.disks[&1].len(), 24 * MIB);
    assert_eq!(m.disks[&0], pattern(2, 16 * MIB), "ln copies image 2");
    assert_eq!(
        &m.disks[&1][..16 * MIB],
        &pattern(1, 16 * MIB)[..],
        "clone copies image 0"
    );
    assert!(
        m.disks[&1][16 * MIB..].iter().all(|b| *b == 0),
        "the grown tail reads zeros"
    );
    let p = |n| bed.at(host, &disk_path(ds, vm, n));
    assert_eq!(p(2).blkid(), "ext4");
    assert_eq!(p(3).blkid(), "swap");
    check_context(bed, host, ds, vm);
    m.write(bed, (host, ds), 0, 3 * MIB, MIB, 10);
    m.write(bed, (host, ds), 1, 20 * MIB, 2 * MIB, 11);
    m.write(bed, (host, ds), 2, 30 * MIB, MIB, 12);
    m.write(bed, (host, ds), 3, 8 * MIB, MIB, 13);
    m.check(bed, host, ds, "after deploy");
    m
}

fn check_context(bed: &Bed, host: &str, ds: i64, vm: i64) {
    let p = bed.at(host, &disk_path(ds, vm, 4));
    assert!(p.is_file(), "context disk is a regular file");
    let iso = p.read();
    assert_eq!(&iso[0x8028..0x802F], b"CONTEXT");
    assert!(String::from_utf8_lossy(&iso).contains(&format!("VMID='{vm}'")));
}

/// Nothing of VM `vm` is left: no LV on any host, no directory anywhere.
#[track_caller]
fn assert_vm_gone(bed: &Bed, vm: i64) {
    for h in ["kvm1", "kvm2"] {
        assert_eq!(
            bed.vm_lvs(h, vm),
            Vec::<String>::new(),
            "LVs of VM {vm} left on {h}"
        );
    }
    for h in ["kvm1", "kvm2", FE] {
        for ds in [101, 102, THIN_DS] {
            let d = bed.at(h, &format!("{DSL}/{ds}/{vm}"));
            assert!(!d.exists(), "{h}:{} left", d.path);
        }
    }
}

/// After the images are removed too: no LV, no BSU, no VM file anywhere.
#[track_caller]
fn assert_nothing_left(bed: &Bed) {
    for h in ["kvm1", "kvm2"] {
        assert_eq!(
            bed.lvs(h),
            Vec::<(String, String, String)>::new(),
            "LVs left on {h}"
        );
    }
    let vols = bed.volumes();
    assert!(
        vols.is_empty(),
        "BSU volumes left: {:?}",
        vols.iter().map(|v| (&v.id, &v.tags)).collect::<Vec<_>>()
    );
    for h in ["kvm1", "kvm2", FE] {
        for ds in bed.at(h, DSL).list().unwrap_or_default() {
            let d = bed.at(h, &format!("{DSL}/{ds}"));
            let left: Vec<String> = d.list().unwrap_or_default();
            assert!(left.is_empty(), "{h}:{}: {left:?} left", d.path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lifecycles (reference §5)

/// Deploy, poweroff (no TM call), resume from poweroff (CONTEXT again), terminate from
/// RUNNING: the persistent disk is saved into its image, everything else removed, drives
/// shrunk to nothing once the images go.
#[test]
fn lifecycle_deploy_poweroff_terminate() {
    deploy_poweroff_terminate(&Bed::new());
}

/// The same lifecycle on the real-kernel tier (QEMU guests: real device-mapper, activation,
/// udev, OpenSSH), whatever `BSUD_TIER` says.
#[test]
fn rk_lifecycle() {
    deploy_poweroff_terminate(&Bed::on(Tier::Rk));
}

/// The same lifecycle with the VM on a thin system datastore (clones from the host's image
/// cache, thin volumes for the rest); at the end the image copies are evicted and the thin
/// drive, pool included, is deleted by the operator command.
#[test]
fn rk_thin_lifecycle() {
    deploy_poweroff_terminate_on(&Bed::on(Tier::Rk), THIN_DS);
}

fn deploy_poweroff_terminate(bed: &Bed) {
    deploy_poweroff_terminate_on(bed, 101)
}

fn deploy_poweroff_terminate_on(bed: &Bed, ds: i64) {
    let m = deployed(bed, 0, "kvm1", ds);
    // Poweroff calls no TM action; resume re-runs CONTEXT only.
    let ctx = bed.context_file(0);
    bed.ok(&format!(
        "CONTEXT bsud {ctx} {} 0 {ds}",
        dk("kvm1", ds, 0, 4)
    ));
    m.check(bed, "kvm1", ds, "after resume from poweroff");
    bed.all(&terminate_lines(0, "kvm1", ds));
    assert_vm_gone(bed, 0);
    // Image 2 holds what the VM wrote on its persistent disk.
    let img = bed.lv("kvm1", 100, "img-one-2").read();
    assert!(img == m.disks[&0], "persistent disk saved into image 2");
    bed.remove_image(0);
    bed.remove_image(2);
    if ds == THIN_DS {
        let st = bed.storage();
        st.evict_image_caches(0);
        st.evict_image_caches(2);
        let left: Vec<String> = bed.lvs("kvm1").into_iter().map(|l| l.1).collect();
        assert_eq!(left, ["bsud-pool"], "only the thin pool is left");
        bed.cli(&[
            "drive",
            "delete",
            "--host",
            "kvm1",
            "--ds",
            &ds.to_string(),
            "--force",
        ]);
    }
    assert_nothing_left(bed);
}

/// Stop (VMM save writes a checkpoint) → the disks stay on kvm1's drive, parked; the
/// directory with its checkpoint moves to the frontend; resume on the same host re-links.
#[test]
fn lifecycle_stop_resume() {
    let bed = Bed::new();
    let m = deployed(&bed, 0, "kvm1", 101);
    let ckpt = bed.at("kvm1", &format!("{DSL}/101/0/checkpoint"));
    ckpt.put(&pattern(5, 3 * MIB));
    let lvs_before = bed.vm_lvs("kvm1", 0);
    bed.all(&mv_lines(0, ("kvm1", 101), (FE, 101)));
    // Parked: LVs untouched on kvm1, markers and checkpoint on the frontend, host dir gone.
    assert_eq!(bed.vm_lvs("kvm1", 0), lvs_before);
    assert!(!bed.at("kvm1", &format!("{DSL}/101/0")).exists());
    let marker = std::fs::read_to_string(bed.path(FE, &disk_path(101, 0, 1))).unwrap();
    assert!(
        marker.contains("\"host\":\"kvm1\"") && marker.contains("lv-one-0-1"),
        "{marker}"
    );
    assert_eq!(
        std::fs::read(bed.path(FE, &format!("{DSL}/101/0/checkpoint"))).unwrap(),
        pattern(5, 3 * MIB)
    );
    // Resume on the same host.
    bed.all(&mv_lines(0, (FE, 101), ("kvm1", 101)));
    let ctx = bed.context_file(0);
    bed.ok(&format!(
        "CONTEXT bsud {ctx} {} 0 101",
        dk("kvm1", 101, 0, 4)
    ));
    assert!(!bed.at(FE, &format!("{DSL}/101/0")).exists());
    assert_eq!(ckpt.read(), pattern(5, 3 * MIB));
    m.check(&bed, "kvm1", 101, "after resume");
    assert_eq!(
        bed.vm_lvs("kvm1", 0),
        lvs_before,
        "resume in place copies nothing"
    );
    bed.all(&terminate_lines(0, "kvm1", 101));
    assert_vm_gone(&bed, 0);
}

/// Undeploy from kvm1/101, resume on kvm2 in system datastore 102: the disks move host to
/// host at resume; then stop again and resume back on kvm1/101.
#[test]
fn lifecycle_undeploy_resume_on_other_host_and_datastore() {
    let bed = Bed::new();
    let mut m = deployed(&bed, 0, "kvm1", 101);
    bed.all(&mv_lines(0, ("kvm1", 101), (FE, 101)));
    bed.put_vm(&main_vm(0, &[("kvm1", 101), ("kvm2", 102)]));
    bed.all(&mv_lines(0, (FE, 101), ("kvm2", 102)));
    let ctx = bed.context_file(0);
    bed.ok(&format!(
        "CONTEXT bsud {ctx} {} 0 102",
        dk("kvm2", 102, 0, 4)
    ));
    m.check(&bed, "kvm2", 102, "resumed on kvm2/102");
    assert_eq!(
        bed.vm_lvs("kvm1", 0),
        Vec::<String>::new(),
        "moved, not copied"
    );
    assert_eq!(bed.vm_lvs("kvm2", 0).len(), 4);
    assert!(!bed.at(FE, &format!("{DSL}/101/0")).exists());
    m.write(&bed, ("kvm2", 102), 1, 0, MIB, 21);
    // Stop on kvm2/102, resume on kvm1/101.
    bed.all(&mv_lines(0, ("kvm2", 102), (FE, 102)));
    bed.put_vm(&main_vm(0, &[("kvm1", 101), ("kvm2", 102), ("kvm1", 101)]));
    bed.all(&mv_lines(0, (FE, 102), ("kvm1", 101)));
    m.check(&bed, "kvm1", 101, "back on kvm1/101");
    bed.all(&terminate_lines(0, "kvm1", 101));
    assert_vm_gone(&bed, 0);
}

/// Cold migration kvm1 → kvm2 (same system datastore), then on kvm2 into datastore 102:
/// copies verified, sources removed, checkpoint moved.
#[test]
fn lifecycle_cold_migrate() {
    let bed = Bed::new();
    let mut m = deployed(&bed, 0, "kvm1", 101);
    bed.at("kvm1", &format!("{DSL}/101/0/checkpoint"))
        .put(b"ram");
    for (i, (from, to)) in [
        (("kvm1", 101), ("kvm2", 101)),
        (("kvm2", 101), ("kvm2", 102)),
    ]
    .into_iter()
    .enumerate()
    {
        bed.all(&mv_lines(0, from, to));
        let ctx = bed.context_file(0);
        bed.ok(&format!(
            "CONTEXT bsud {ctx} {} 0 {}",
            dk(to.0, to.1, 0, 4),
            to.1
        ));
        m.check(&bed, to.0, to.1, &format!("migration {i}"));
        assert_eq!(
            bed.at(to.0, &format!("{DSL}/{}/0/checkpoint", to.1)).read(),
            b"ram"
        );
        assert!(!bed.at(from.0, &format!("{DSL}/{}/0", from.1)).exists());
        let left: Vec<String> = bed
            .vm_lvs(from.0, 0)
            .into_iter()
            .filter(|l| l.starts_with(&format!("vg-one-{}/", from.1)))
            .collect();
        assert!(
            left.is_empty(),
            "migration {i}: {left:?} left on {}",
            from.0
        );
        m.write(&bed, to, 0, i * MIB, 4096, 30 + i as u8);
    }
    bed.all(&terminate_lines(0, "kvm2", 102));
    assert_vm_gone(&bed, 0);
}

/// Live migration kvm1 → kvm2: premigrate makes the destination LVs (zeros, as libvirt's
/// storage copy expects them) and links; postmigrate removes the source. A failed attempt
/// back: failmigrate removes what premigrate made. Disks of another TM get its scripts with
/// the 6th argument `bsud`.
#[test]
fn lifecycle_live_migrate() {
    let bed = Bed::new();
    let m = deployed(&bed, 0, "kvm1", 101);
    // A snapshot travels with its disk.
    bed.ok(&tl("SNAP_CREATE_LIVE", dk("kvm1", 101, 0, 1), "0 0 100"));
    // Another transfer manager's disk: its premigrate/postmigrate record their calls.
    let other = bed.install.path("remotes/tm/othertm");
    std::fs::create_dir_all(&other).unwrap();
    let log = bed.tb.dir().join("othertm.log");
    for a in ["premigrate", "postmigrate", "failmigrate"] {
        let script = other.join(a);
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"{a} $*\" >> {0}\ncat >> {0}\necho >> {0}\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    let mut spec = main_vm(0, &[("kvm1", 101)]);
    spec.disks.push(
        DiskSpec::image(5, 9, 200, "/var/lib/one/datastores/200/abc", 8, false)
            .attr("TM_MAD", "othertm"),
    );
    let stdin = b64(&spec.xml());
    let args = format!("kvm1 kvm2 {DSL}/101/0 0 101");
    bed.ok_stdin(&format!("PREMIGRATE bsud {args}"), stdin.as_bytes());
    // The destination has every disk (zeros) and the context; the source is untouched.
    for n in 0..4u32 {
        let got = read_disk(&bed, "kvm2", 101, 0, n);
        assert_eq!(got.len(), m.disks[&n].len());
        assert!(got.iter().all(|b| *b == 0), "disk.{n} on kvm2 is fresh");
    }
    check_context(&bed, "kvm2", 101, 0);
    assert!(bed
        .vm_lvs("kvm2", 0)
        .contains(&"vg-one-101/lv-one-0-1-snap-0".to_string()));
    m.check(&bed, "kvm1", 101, "source during migration");
    // libvirt copies the storage: simulate it.
    for (n, want) in &m.disks {
        bed.at("kvm2", &disk_path(101, 0, *n)).write_at(0, want);
    }
    bed.ok_stdin(&format!("POSTMIGRATE bsud {args}"), stdin.as_bytes());
    m.check(&bed, "kvm2", 101, "after live migration");
    assert_eq!(bed.vm_lvs("kvm1", 0), Vec::<String>::new());
    assert!(!bed.at("kvm1", &format!("{DSL}/101/0")).exists());
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(
        calls.contains(&format!(
            "premigrate {} bsud\n{stdin}\n",
            args.replace("//", "/")
        )),
        "{calls}"
    );
    assert!(calls.contains("postmigrate kvm1 kvm2"), "{calls}");

    // A failed migration back: failmigrate undoes premigrate on kvm1.
    let back = format!("kvm2 kvm1 {DSL}/101/0 0 101");
    bed.ok_stdin(&format!("PREMIGRATE bsud {back}"), stdin.as_bytes());
    assert_eq!(bed.vm_lvs("kvm1", 0).len(), 5);
    bed.ok_stdin(&format!("FAILMIGRATE bsud {back}"), stdin.as_bytes());
    assert_eq!(bed.vm_lvs("kvm1", 0), Vec::<String>::new());
    assert!(!bed.at("kvm1", &format!("{DSL}/101/0")).exists());
    m.check(&bed, "kvm2", 101, "after failed migration");
    // Called with a 6th argument, we never call other TMs.
    let before = std::fs::read_to_string(&log).unwrap();
    assert!(before.contains("failmigrate kvm2 kvm1"), "{before}");
    bed.ok_stdin(
        &format!("FAILMIGRATE bsud {back} othertm"),
        stdin.as_bytes(),
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), before);
    bed.ok(&tl("SNAP_DELETE", dk("kvm2", 101, 0, 1), "0 0 100"));
    bed.all(&terminate_lines(0, "kvm2", 101));
    assert_vm_gone(&bed, 0);
}

/// disk-saveas: CPDS of the current state (-1) and of a snapshot, running, then of a
/// stopped VM (the frontend path, followed through the marker).
#[test]
fn lifecycle_disk_saveas() {
    let bed = Bed::new();
    let mut m = deployed(&bed, 0, "kvm1", 101);
    let snap_state = m.disks[&1].clone();
    bed.ok(&tl("SNAP_CREATE_LIVE", dk("kvm1", 101, 0, 1), "0 0 100"));
    m.write(&bed, ("kvm1", 101), 1, 0, MIB, 40);
    // mkfs (FORMAT save_as) reserved images 3 and 4: the DS driver creates their LVs.
    bed.image(3, 24, 0);
    bed.ok(&tl(
        "CPDS",
        dk("kvm1", 101, 0, 1),
        "kvm1:vg-one-100/img-one-3 -1 0 100",
    ));
    assert!(bed.lv("kvm1", 100, "img-one-3").read() == m.disks[&1]);
    // Image 4 does not exist yet: cpds makes it.
    bed.ok(&tl(
        "CPDS",
        dk("kvm1", 101, 0, 1),
        "kvm1:vg-one-100/img-one-4 0 0 100",
    ));
    assert!(bed.lv("kvm1", 100, "img-one-4").read() == snap_state);
    // From a stopped VM, with the disk parked on kvm1.
    bed.all(&mv_lines(0, ("kvm1", 101), (FE, 101)));
    bed.image(6, 16, 0);
    bed.ok(&tl(
        "CPDS",
        dk(FE, 101, 0, 0),
        "kvm1:vg-one-100/img-one-6 -1 0 100",
    ));
    assert!(bed.lv("kvm1", 100, "img-one-6").read() == m.disks[&0]);
    // Terminate from stopped: frontend paths.
    let fe_term: Vec<String> = terminate_lines(0, FE, 101);
    bed.all(&fe_term);
    assert_vm_gone(&bed, 0);
    for i in [0, 2, 3, 4, 6] {
        bed.remove_image(i);
    }
    assert_nothing_left(&bed);
}

/// Hot-plug: attach/detach on a RUNNING VM (image lines carry `.bsud`, volatile ones not),
/// and on a POWEROFF VM (plain lines); a persistent image is written back at detach.
#[test]
fn lifecycle_hotplug() {
    let bed = Bed::new();
    let _m = deployed(&bed, 0, "kvm1", 101);
    let img1 = bed.image(1, 8, 7);
    bed.image(7, 8, 8);
    let mut spec = main_vm(0, &[("kvm1", 101)]);
    spec.disks.push(DiskSpec::image(
        5,
        1,
        100,
        "kvm1:vg-one-100/img-one-1",
        8,
        false,
    ));
    spec.disks.push(DiskSpec::volatile(6, "fs", 64, None));
    spec.disks.push(DiskSpec::image(
        7,
        7,
        100,
        "kvm1:vg-one-100/img-one-7",
        8,
        true,
    ));
    bed.put_vm(&spec);
    // RUNNING: TM_COMMAND of the VMM attach.
    bed.ok(&format!(
        "CLONE.bsud bsud kvm1:vg-one-100/img-one-1 {} 0 100",
        dk("kvm1", 101, 0, 5)
    ));
    bed.ok(&format!(
        "MKIMAGE bsud 64 raw {} 0 101",
        dk("kvm1", 101, 0, 6)
    ));
    bed.ok(&format!(
        "LN.bsud bsud kvm1:vg-one-100/img-one-7 {} 0 100",
        dk("kvm1", 101, 0, 7)
    ));
    assert_eq!(read_disk(&bed, "kvm1", 101, 0, 5), img1);
    let six = read_disk(&bed, "kvm1", 101, 0, 6);
    assert!(
        six.len() == 64 * MIB && six.iter().all(|b| *b == 0),
        "raw volatile disk reads zeros"
    );
    bed.at("kvm1", &disk_path(101, 0, 7))
        .write_at(MIB as u64, &pattern(70, MIB));
    let seven = read_disk(&bed, "kvm1", 101, 0, 7);
    // Detach (VMM first, then the TM epilog line).
    bed.ok(&tl("DELETE.bsud", dk("kvm1", 101, 0, 5), "0 100"));
    bed.ok(&tl("DELETE", dk("kvm1", 101, 0, 6), "0 101"));
    bed.ok(&tl(
        "MVDS.bsud",
        dk("kvm1", 101, 0, 7),
        "kvm1:vg-one-100/img-one-7 0 100",
    ));
    assert!(bed.lv("kvm1", 100, "img-one-7").read() == seven);
    for n in [5, 6, 7] {
        assert!(!bed.at("kvm1", &disk_path(101, 0, n)).exists());
    }
    assert_eq!(bed.vm_lvs("kvm1", 0).len(), 4);
    // POWEROFF: transfer.N.prolog_attach / epilog_detach.
    bed.ok(&format!(
        "CLONE bsud kvm1:vg-one-100/img-one-1 {} 0 100",
        dk("kvm1", 101, 0, 5)
    ));
    bed.ok(&format!(
        "LN bsud kvm1:vg-one-100/img-one-7 {} 0 100",
        dk("kvm1", 101, 0, 7)
    ));
    assert_eq!(
        read_disk(&bed, "kvm1", 101, 0, 7),
        seven,
        "the saved image comes back"
    );
    bed.ok(&tl("DELETE", dk("kvm1", 101, 0, 5), "0 100"));
    bed.ok(&tl(
        "MVDS",
        dk("kvm1", 101, 0, 7),
        "kvm1:vg-one-100/img-one-7 0 100",
    ));
    bed.all(&terminate_lines(0, "kvm1", 101));
    assert_vm_gone(&bed, 0);
    for i in [0, 1, 2, 7] {
        bed.remove_image(i);
    }
    assert_nothing_left(&bed);
}

/// disk-resize of an image disk (running) and a volatile one: the drive grows, data stays,
/// the new space reads as zeros; a persistent disk grown past its image grows the image at
/// terminate.
#[test]
fn lifecycle_resize() {
    let bed = Bed::new();
    let mut m = deployed(&bed, 0, "kvm1", 101);
    for (n, mb, ds) in [(1u32, 40usize, 100), (2, 48, 101), (0, 40, 100)] {
        bed.ok(&format!(
            "RESIZE bsud {} {mb} 0 {ds}",
            dk("kvm1", 101, 0, n)
        ));
        m.disks.get_mut(&n).unwrap().resize(mb * MIB, 0);
    }
    m.check(&bed, "kvm1", 101, "after resize");
    m.write(&bed, ("kvm1", 101), 0, 36 * MIB, MIB, 50);
    // Undeployed resize goes through the marker.
    bed.all(&mv_lines(0, ("kvm1", 101), (FE, 101)));
    bed.ok(&tl("RESIZE", dk(FE, 101, 0, 1), "44 0 100"));
    m.disks.get_mut(&1).unwrap().resize(44 * MIB, 0);
    bed.all(&mv_lines(0, (FE, 101), ("kvm1", 101)));
    m.check(&bed, "kvm1", 101, "after undeployed resize");
    bed.all(&terminate_lines(0, "kvm1", 101));
    let img = bed.lv("kvm1", 100, "img-one-2").read();
    assert!(img == m.disks[&0], "image 2 grew to the disk and holds it");
    assert_vm_gone(&bed, 0);
}

/// Disk snapshots: live creates, delete while running, create in poweroff, revert, delete;
/// a persistent disk's snapshots are saved with its image at terminate and come back at the
/// next ln.
#[test]
fn lifecycle_snapshots() {
    let bed = Bed::new();
    let mut m = deployed(&bed, 0, "kvm1", 101);
    let s0 = m.disks[&0].clone();
    bed.ok(&tl("SNAP_CREATE_LIVE", dk("kvm1", 101, 0, 0), "0 0 100"));
    m.write(&bed, ("kvm1", 101), 0, 0, MIB, 60);
    let s1 = m.disks[&0].clone();
    bed.ok(&tl("SNAP_CREATE_LIVE", dk("kvm1", 101, 0, 0), "1 0 100"));
    bed.ok(&tl("SNAP_DELETE", dk("kvm1", 101, 0, 0), "0 0 100"));
    m.write(&bed, ("kvm1", 101), 0, 0, MIB, 61);
    // Poweroff: create 2, revert to 1, delete 2.
    bed.ok(&tl("SNAP_CREATE", dk("kvm1", 101, 0, 0), "2 0 100"));
    bed.ok(&tl("SNAP_REVERT", dk("kvm1", 101, 0, 0), "1 0 100"));
    m.disks.insert(0, s1.clone());
    m.check(&bed, "kvm1", 101, "after revert");
    bed.ok(&tl("SNAP_DELETE", dk("kvm1", 101, 0, 0), "2 0 100"));
    let lvs = bed.vm_lvs("kvm1", 0);
    assert!(
        lvs.contains(&"vg-one-101/lv-one-0-0-snap-1".to_string()),
        "{lvs:?}"
    );
    assert!(
        !lvs.iter()
            .any(|l| l.ends_with("snap-0") || l.ends_with("snap-2")),
        "{lvs:?}"
    );
    assert_ne!(s0, s1);
    // Terminate: snapshot 1 goes with image 2; a new VM gets it back.
    bed.all(&terminate_lines(0, "kvm1", 101));
    assert_vm_gone(&bed, 0);
    let img_snaps: Vec<String> = bed
        .lvs("kvm1")
        .into_iter()
        .map(|l| l.1)
        .filter(|n| n.starts_with("img-one-2-snap-"))
        .collect();
    assert_eq!(img_snaps, ["img-one-2-snap-1"]);
    bed.put_vm(&main_vm(1, &[("kvm2", 101)]));
    bed.ok(&format!(
        "LN bsud kvm1:vg-one-100/img-one-2 {} 1 100",
        dk("kvm2", 101, 1, 0)
    ));
    let snap = bed.lv("kvm2", 101, "lv-one-1-0-snap-1").read();
    assert!(snap == s1);
    bed.ok(&tl("SNAP_DELETE", dk("kvm2", 101, 1, 0), "1 1 100"));
    bed.ok(&tl(
        "MVDS",
        dk("kvm2", 101, 1, 0),
        "kvm1:vg-one-100/img-one-2 1 100",
    ));
    bed.ok(&tl("DELETE", dir("kvm2", 101, 1), "1 101"));
    assert!(
        !bed.lvs("kvm1")
            .iter()
            .any(|l| l.1.starts_with("img-one-2-snap-")),
        "snapshot deleted by the VM dropped from the image"
    );
    assert_vm_gone(&bed, 1);
}

/// Terminate from STOPPED and from UNDEPLOYED: oned's epilog runs on the frontend paths; the
/// markers lead to the LVs (OpenNebula #5385, #2981) and nothing is left.
#[test]
fn lifecycle_terminate_from_stopped_and_undeployed() {
    let bed = Bed::new();
    let m = deployed(&bed, 2, "kvm2", 101);
    bed.all(&mv_lines(2, ("kvm2", 101), (FE, 101)));
    bed.all(&terminate_lines(2, FE, 101));
    let img = bed.lv("kvm1", 100, "img-one-2").read();
    assert!(
        img == m.disks[&0],
        "persistent disk saved from its parked LV"
    );
    assert_vm_gone(&bed, 2);
    // Undeployed, after the markers of two disks were lost: the VM's history finds them,
    // and the persistent one is still saved.
    bed.put_vm(&main_vm(3, &[("kvm2", 101), ("kvm1", 102)]));
    bed.all(&deploy_lines(&bed, 3, "kvm1", 102));
    let mut m3 = Model::capture(&bed, "kvm1", 102, 3, &[0]);
    m3.write(&bed, ("kvm1", 102), 0, 5 * MIB, MIB, 90);
    bed.all(&mv_lines(3, ("kvm1", 102), (FE, 102)));
    for n in [0, 1] {
        std::fs::remove_file(bed.path(FE, &disk_path(102, 3, n))).unwrap();
    }
    bed.all(&terminate_lines(3, FE, 102));
    let img = bed.lv("kvm1", 100, "img-one-2").read();
    assert!(
        img == m3.disks[&0],
        "persistent disk found through the history and saved"
    );
    assert_vm_gone(&bed, 3);
    for i in [0, 2] {
        bed.remove_image(i);
    }
    assert_nothing_left(&bed);
}

/// `onevm recover --delete`: DELETE of every disk (the persistent one too: no MVDS) and the
/// directory, from RUNNING; after a failed cold migration, on the new host and then the
/// previous one; after a failed prolog, on whatever was made.
#[test]
fn lifecycle_recover_delete() {
    let bed = Bed::new();
    let _m = deployed(&bed, 5, "kvm1", 101);
    let img2 = bed.lv("kvm1", 100, "img-one-2").read();
    let del = |host: &str, vm: i64| {
        let mut v: Vec<String> = (0..4u32)
            .map(|n| {
                format!(
                    "DELETE bsud {} {vm} {}",
                    dk(host, 101, vm, n),
                    if n < 2 { 100 } else { 101 }
                )
            })
            .collect();
        v.push(format!("DELETE bsud {} {vm} 101", dir(host, 101, vm)));
        v
    };
    bed.all(&del("kvm1", 5));
    assert_vm_gone(&bed, 5);
    assert!(bed.lv("kvm1", 100, "img-one-2").read() == img2, "no mvds");
    // PROLOG_MIGRATE_FAILURE: the first disk moved, the rest not.
    bed.put_vm(&main_vm(6, &[("kvm1", 101), ("kvm2", 101)]));
    bed.all(&deploy_lines(&bed, 6, "kvm1", 101));
    bed.ok(&mv_lines(6, ("kvm1", 101), ("kvm2", 101))[0]);
    bed.all(&del("kvm2", 6));
    bed.all(&del("kvm1", 6));
    assert_vm_gone(&bed, 6);
    // PROLOG_FAILURE: only disk 0 was made.
    bed.put_vm(&main_vm(4, &[("kvm1", 101)]));
    bed.ok(&deploy_lines(&bed, 4, "kvm1", 101)[0]);
    bed.all(&del("kvm1", 4));
    assert_vm_gone(&bed, 4);
    bed.remove_image(0);
    bed.remove_image(2);
    assert_nothing_left(&bed);
}

// ---------------------------------------------------------------------------------------------
// Crashes, failures, hostile input, monitoring

/// Every action killed at its crash points and re-run converges to the same disks.
#[test]
fn tm_crash_at_every_step_converges() {
    let bed = Bed::new();
    bed.image(0, 16, 1);
    bed.image(2, 16, 2);
    bed.put_vm(&main_vm(0, &[("kvm1", 101)]));
    let lines = deploy_lines(&bed, 0, "kvm1", 101);
    let crash = |line: &str, at: &str| {
        let r = bed.line_env(line, b"", &[("BSUD_CRASH_AT", at)]);
        assert_eq!(r.code, None, "{line} did not crash at {at}: {}", r.stderr);
        assert!(
            r.stderr.contains(&format!("crashing after {at}")),
            "{}",
            r.stderr
        );
        bed.ok(line);
    };
    crash(&lines[0], "grow:pv-added");
    crash(&lines[1], "clone:copied");
    crash(&lines[2], "mkimage:allocated");
    bed.all(&lines[3..]);
    let mut m = Model::capture(&bed, "kvm1", 101, 0, &[0, 1, 2, 3]);
    assert_eq!(bed.at("kvm1", &disk_path(101, 0, 2)).blkid(), "ext4");
    m.write(&bed, ("kvm1", 101), 0, 0, MIB, 80);
    // Stop: crash after parking each disk, after copying the directory.
    let stop = mv_lines(0, ("kvm1", 101), (FE, 101));
    crash(&stop[0], "mv:parked");
    bed.all(&stop[1..4]);
    crash(&stop[4], "mv:dir-copied");
    // Resume on kvm2: crash after the copy (source still there), after the link.
    let resume = mv_lines(0, (FE, 101), ("kvm2", 101));
    crash(&resume[0], "mv:copied");
    crash(&resume[1], "mv:linked");
    crash(&resume[2], "tm:before-lv-remove");
    bed.all(&resume[3..]);
    m.check(&bed, "kvm2", 101, "after crashed resume");
    assert_eq!(bed.vm_lvs("kvm1", 0), Vec::<String>::new());
    // Terminate: mvds crashes after the verified copy, before removing the disk.
    let term = terminate_lines(0, "kvm2", 101);
    crash(&term[0], "mvds:copied");
    let img = bed.lv("kvm1", 100, "img-one-2").read();
    assert!(img == m.disks[&0]);
    crash(&term[1], "tm:before-lv-remove");
    bed.all(&term[2..]);
    assert_vm_gone(&bed, 0);
}

/// mvds whose copy fails (the transport drops the receiving side) keeps the host LV; the
/// retry saves it.
#[test]
fn tm_mvds_keeps_the_disk_when_the_copy_fails() {
    let bed = Bed::new();
    let m = deployed(&bed, 0, "kvm2", 101);
    // An ssh that refuses every `recv`: the copy itself fails, after everything before it.
    let wrapper = bed.tb.dir().join("flaky-ssh");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\ncase \"$*\" in *\" host recv \"*) echo 'ssh: Connection reset by peer' >&2; exit 255;; esac\nexec \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let text = std::fs::read_to_string(&bed.config).unwrap();
    let flaky: String = text
        .lines()
        .map(|l| match l.strip_prefix("ssh_command = [") {
            Some(rest) => format!("ssh_command = [{:?}, {rest}", wrapper.to_string_lossy()),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(flaky, text);
    let flaky_config = bed.tb.dir().join("flaky.toml");
    std::fs::write(&flaky_config, flaky).unwrap();
    let line = &terminate_lines(0, "kvm2", 101)[0];
    let r = bed.line_env(
        line,
        b"",
        &[("BSUD_CONFIG", flaky_config.to_str().unwrap())],
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let last = r.stderr.lines().last().unwrap();
    assert!(
        last.starts_with("mvds: ") && last.contains("recv"),
        "{last}"
    );
    m.check(&bed, "kvm2", 101, "after the failed mvds");
    assert_eq!(bed.vm_lvs("kvm2", 0).len(), 4);
    bed.ok(line);
    let img = bed.lv("kvm1", 100, "img-one-2").read();
    assert!(img == m.disks[&0]);
    assert!(!bed
        .vm_lvs("kvm2", 0)
        .contains(&"vg-one-101/lv-one-0-0".to_string()));
}

/// A drive missing from its host (volumes detached, host rebuilt) is never read as "the disk
/// was already saved or moved": mvds and delete of a parked disk fail naming the drive and
/// keep the marker; after `drive reconcile` brings the volumes back, mvds saves the disk.
/// A postmigrate whose destination disk does not exist keeps the source (the only copy).
#[test]
fn tm_a_missing_drive_or_copy_is_never_taken_for_finished_work() {
    let bed = Bed::new();
    let m = deployed(&bed, 0, "kvm2", 101);
    // postmigrate without premigrate: kvm1 has nothing, kvm2's disks must stay.
    let stdin = b64(&main_vm(0, &[("kvm2", 101)]).xml());
    let r = bed.line_env(
        &format!("POSTMIGRATE bsud kvm2 kvm1 {DSL}/101/0 0 101"),
        stdin.as_bytes(),
        &[],
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("the only copy"), "{}", r.stderr);
    m.check(&bed, "kvm2", 101, "after the refused postmigrate");

    // Stop: the disks are parked on kvm2.
    bed.all(&mv_lines(0, ("kvm2", 101), (FE, 101)));
    // kvm2 loses its drive of datastore 101 (its volumes are detached behind our back).
    let c = bsud::cloud::outscale::OutscaleCloud::new(&bed.ctx.config.cloud.resolve().unwrap())
        .unwrap();
    let drive_vols = c
        .find_volumes(&VolumeFilter {
            tags: vec![(
                bsud::drive::naming::TAG_DRIVE.into(),
                bsud::drive::naming::drive_name("kvm2", 101),
            )],
            ..Default::default()
        })
        .unwrap();
    assert!(!drive_vols.is_empty());
    for v in &drive_vols {
        c.unlink_volume(&v.id, false).unwrap();
        bsud::cloud::wait_unlinked(
            &c,
            &v.id,
            bsud::wait::Wait::new(
                std::time::Duration::from_secs(30),
                std::time::Duration::from_millis(20),
            ),
        )
        .unwrap();
    }
    let fe_disk = |n: u32| dk(FE, 101, 0, n);
    for line in [
        format!("MVDS bsud {} kvm1:vg-one-100/img-one-2 0 100", fe_disk(0)),
        format!("DELETE bsud {} 0 100", fe_disk(1)),
    ] {
        let r = bed.line_env(&line, b"", &[]);
        assert_eq!(r.code, Some(1), "{line}: {}", r.stderr);
        let last = r.stderr.lines().last().unwrap();
        assert!(
            last.contains("drive vg-one-101 is not on host kvm2") && last.contains("reconcile"),
            "{line}: {last}"
        );
    }
    for n in [0, 1] {
        let marker = std::fs::read_to_string(bed.path(FE, &disk_path(101, 0, n))).unwrap();
        assert!(marker.contains("\"host\":\"kvm2\""), "{marker}");
    }
    // The operator reconciles; the retried epilog saves and removes everything.
    let r = bed.exec(
        &bed.install.path("remotes/tm/bsud/one-bsud"),
        &[
            "drive",
            "reconcile",
            "--host",
            "kvm2",
            "--ds",
            "101",
            "--policy-defaults",
        ],
        b"",
        &bed.env(),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    bed.all(&terminate_lines(0, FE, 101));
    let img = std::fs::read(bed.lv_file("kvm1", 100, "img-one-2")).unwrap();
    assert!(img == m.disks[&0], "the persistent disk was saved");
    assert_vm_gone(&bed, 0);
}

/// Every line of a deploy, snapshot, resize, stop, resume elsewhere and terminate run twice in
/// a row: the second run changes nothing and succeeds.
#[test]
fn tm_every_action_is_idempotent() {
    let bed = Bed::new();
    bed.image(0, 16, 1);
    bed.image(2, 16, 2);
    bed.put_vm(&main_vm(0, &[("kvm1", 101)]));
    let mut lines = deploy_lines(&bed, 0, "kvm1", 101);
    lines.push(format!(
        "SNAP_CREATE bsud {} 0 0 100",
        dk("kvm1", 101, 0, 1)
    ));
    lines.push(format!("RESIZE bsud {} 30 0 100", dk("kvm1", 101, 0, 1)));
    lines.extend(mv_lines(0, ("kvm1", 101), (FE, 101)));
    lines.extend(mv_lines(0, (FE, 101), ("kvm2", 102)));
    lines.push(format!(
        "SNAP_DELETE bsud {} 0 0 100",
        dk("kvm2", 102, 0, 1)
    ));
    lines.extend(terminate_lines(0, "kvm2", 102));
    for l in &lines {
        bed.ok(l);
        bed.ok(l);
    }
    assert_vm_gone(&bed, 0);
}

/// Hostile arguments are refused before anything runs (exit 2, one line); the host agent
/// refuses a VM directory that escapes the host root through a symlink.
#[test]
fn tm_hostile_input_touches_nothing() {
    let bed = Bed::new();
    bed.image(0, 16, 1);
    bed.put_vm(&main_vm(0, &[("kvm1", 101)]));
    let marker = bed.tb.dir().join("pwned");
    let evil = [
        format!(
            "CLONE bsud kvm1:vg-one-100/img-one-0 kvm1:{DSL}/101/0;touch${{IFS}}{}/disk.1 0 100",
            marker.display()
        ),
        format!("CLONE bsud kvm1:vg-one-100/img-one-0;id kvm1:{DSL}/101/0/disk.1 0 100"),
        format!("DELETE bsud kvm1:{DSL}/101/../../../../etc 0 101"),
        format!("DELETE bsud -oProxyCommand=touch:{DSL}/101/0 0 101"),
        format!("MVDS bsud kvm1:{DSL}/101/0/disk.0 kvm1:vg-one-100/img-one-0$(id) 0 100"),
        format!("CONTEXT bsud /var/lib/one/vms/0/context.sh`id` kvm1:{DSL}/101/0/disk.4 0 101"),
    ];
    for l in &evil {
        let r = bed.line_env(l, b"", &[]);
        assert_eq!(r.code, Some(2), "{l}: {}", r.stderr);
        // One message line, after log lines at most.
        let lines: Vec<&str> = r.stderr.lines().collect();
        let action = l.split_whitespace().next().unwrap().to_ascii_lowercase();
        assert!(
            lines.last().unwrap().starts_with(&format!("{action}: ")),
            "{l}: {}",
            r.stderr
        );
        assert!(
            lines[..lines.len() - 1]
                .iter()
                .all(|x| x.starts_with("DEBUG: ") || x.starts_with("INFO: ")),
            "{l}: {}",
            r.stderr
        );
    }
    assert!(!marker.exists());
    assert!(bed.vm_lvs("kvm1", 0).is_empty());
    // A datastore directory on kvm1 that is a symlink leaving the host root.
    let outside = bed.tb.dir().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let ds = bed.path("kvm1", &format!("{DSL}/102"));
    std::fs::create_dir_all(ds.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&outside, &ds).unwrap();
    let r = bed.line_env(
        &format!("MKSWAP bsud 16 {} 0 102", dk("kvm1", 102, 0, 3)),
        b"",
        &[],
    );
    assert_eq!(r.code, Some(6), "{}", r.stderr);
    assert!(r.stderr.contains("outside the host root"), "{}", r.stderr);
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

/// monitor_ds, run on a host as the probe runs it (no configuration), reports each VM's disk
/// and snapshot sizes; tm monitor answers USED/FREE/TOTAL.
#[test]
fn tm_monitoring() {
    let bed = Bed::new();
    let _m = deployed(&bed, 0, "kvm1", 101);
    bed.ok(&tl("SNAP_CREATE", dk("kvm1", 101, 0, 1), "3 0 100"));
    // No `.monitor`: the stock probe would report `df` for the datastore (lib/ops/probe.rs).
    assert!(!bed.path("kvm1", &format!("{DSL}/101/.monitor")).exists());
    let mut env: Vec<(String, String)> = bed.tb.host("kvm1").unwrap().view.env();
    env.push(("PATH".into(), PATH.into()));
    let r = bed.exec(
        &bed.entry("monitor_ds"),
        &[&format!("{DSL}/101")],
        b"",
        &env,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let line = r.stdout.trim();
    assert!(
        line.starts_with("VM = [ ID = 0, MONITOR = \"") && line.ends_with("\" ]"),
        "{line}"
    );
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(line.split('"').nth(1).unwrap())
        .unwrap();
    let text = String::from_utf8(payload).unwrap();
    for want in [
        "DISK_SIZE = [ ID = 0, SIZE = 16 ]",
        "DISK_SIZE = [ ID = 1, SIZE = 24 ]",
        "DISK_SIZE = [ ID = 2, SIZE = 32 ]",
        "DISK_SIZE = [ ID = 3, SIZE = 16 ]",
        "SNAPSHOT_SIZE = [ ID = 3, DISK_ID = 1, SIZE = 24 ]",
    ] {
        assert!(text.contains(want), "{want} in {text}");
    }
    // An empty datastore directory prints nothing.
    let r = bed.exec(
        &bed.entry("monitor_ds"),
        &[&format!("{DSL}/102")],
        b"",
        &env,
    );
    assert_eq!((r.code, r.stdout.as_str()), (Some(0), ""), "{}", r.stderr);
    // tm monitor (SHARED=YES only): the BRIDGE_LIST hosts' drives.
    let ds = DatastoreSpec::system(101)
        .attr("BRIDGE_LIST", "kvm1 kvm2")
        .attr("BSUD_MAX_SIZE_GIB", "10");
    let msg = b64(&bsud::sim::one::ds_message(None, &ds, ""));
    let r = bed.exec(&bed.entry("monitor"), &["101"], msg.as_bytes(), &bed.env());
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let used = 16 + 24 + 32 + 16 + 24;
    assert_eq!(
        r.stdout,
        format!("USED_MB={used}\nFREE_MB={}\nTOTAL_MB=20480\n", 20480 - used)
    );
}

// ---------------------------------------------------------------------------------------------
// Benchmark (scripts/bench-tm-clone)

/// Deterministic bytes that neither compress nor look like zeros.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

fn timed(what: &str, f: impl FnOnce()) -> f64 {
    let t = std::time::Instant::now();
    f();
    let s = t.elapsed().as_secs_f64();
    eprintln!("BENCH {what}: {s:.2}s");
    s
}

fn sh(script: &str) {
    let st = Command::new("sh").arg("-c").arg(script).status().unwrap();
    assert!(st.success(), "{script}");
}

/// `clone` of a 10 GiB image holding 1.25 GiB of data from kvm1 to kvm2 (the real entry,
/// drive growth included) against a plain `dd` of the same LV and against
/// `tar -cS | tar -xO` of the image as a sparse file (what fs_lvm_ssh does), all three
/// reading and writing the hosts' LVs through lvfs on this machine. `BENCH_SIZE_GIB`,
/// `BENCH_DATA_MIB` change the sizes. Run by scripts/bench-tm-clone.
#[test]
#[ignore = "benchmark: scripts/bench-tm-clone"]
fn bench_clone_vs_dd_and_tar() {
    let size_gib: usize = std::env::var("BENCH_SIZE_GIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let data_mib: usize = std::env::var("BENCH_DATA_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1280);
    let bed = Bed::new();
    let size = size_gib << 30;
    // The image: data in extents of 1..64 MiB, one per equal slot, as scripts/bench-stream.
    let st = bed.storage();
    let d = st.drive_by_id("kvm1", 100).unwrap();
    st.allocate(
        &d,
        "img-one-0",
        size as u64,
        &["one.image=0", "one.bsud.state=ready"],
    )
    .unwrap();
    let img = bed.lv_file("kvm1", 100, "img-one-0");
    let sparse = bed.tb.dir().join("image.raw");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(size as u64)
        .unwrap();
    let mut extents = Vec::new();
    let (mut total, mut i) = (0usize, 0u64);
    while total < data_mib {
        let s = (1 + (i * 37 % 64) as usize).min(data_mib - total);
        extents.push(s);
        total += s;
        i += 1;
    }
    let slot = size / extents.len();
    let src_f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    let sparse_f = std::fs::OpenOptions::new()
        .write(true)
        .open(&sparse)
        .unwrap();
    for (k, s) in extents.iter().enumerate() {
        let off = k * slot + (k * 7919 * MIB) % (slot - s * MIB + 1) / MIB * MIB;
        let data = noise(k as u64 + 1, s * MIB);
        src_f.write_all_at(&data, off as u64).unwrap();
        sparse_f.write_all_at(&data, off as u64).unwrap();
    }
    src_f.sync_all().unwrap();
    sparse_f.sync_all().unwrap();
    eprintln!(
        "BENCH image: {size_gib} GiB, {data_mib} MiB of data in {} extents",
        extents.len()
    );
    let mut vm = main_vm(0, &[("kvm2", 101)]);
    vm.disks = vec![DiskSpec::image(
        0,
        0,
        100,
        "kvm1:vg-one-100/img-one-0",
        (size >> 20) as u64,
        false,
    )];
    bed.put_vm(&vm);
    sh("sync");
    let clone = timed(
        "one-bsud clone (host to host, drive growth included)",
        || {
            bed.ok(&format!(
                "CLONE bsud kvm1:vg-one-100/img-one-0 {} 0 100",
                dk("kvm2", 101, 0, 0)
            ))
        },
    );
    let sum = |host: &str, ds: i64, lv: &str| {
        bsud::host::transfer::checksum(
            &bed.storage().hosts,
            &bsud::host::transfer::LvLoc {
                host: host.into(),
                lv: format!("vg-one-{ds}/{lv}").parse().unwrap(),
            },
            None,
            false,
        )
        .unwrap()
        .digest
    };
    assert_eq!(
        sum("kvm2", 101, "lv-one-0-0"),
        sum("kvm1", 100, "img-one-0")
    );
    // The baselines write into another LV of kvm2's drive.
    let d2 = st.drive_by_id("kvm2", 101).unwrap();
    st.allocate(&d2, "lv-one-9-0", size as u64, &["one.vm=9"])
        .unwrap();
    let dst = bed.lv_file("kvm2", 101, "lv-one-9-0");
    sh("sync");
    let dd = timed("dd bs=1M", || {
        sh(&format!(
            "dd if={} of={} bs=1M conv=notrunc,fsync status=none",
            img.display(),
            dst.display()
        ))
    });
    sh("sync");
    let tar = timed("tar -cS | tar -xO (fs_lvm_ssh)", || {
        sh(&format!(
            "tar -C {} -cSf - image.raw | tar -xSf - -O | dd of={} bs=1M iflag=fullblock conv=notrunc,fsync status=none",
            bed.tb.dir().display(),
            dst.display()
        ))
    });
    assert_eq!(
        sum("kvm2", 101, "lv-one-9-0"),
        sum("kvm1", 100, "img-one-0")
    );
    eprintln!(
        "BENCH ratios: dd/clone = {:.2}, tar/clone = {:.2} (clone {clone:.1}s, dd {dd:.1}s, tar {tar:.1}s)",
        dd / clone,
        tar / clone
    );
    std::fs::remove_file(&sparse).unwrap();
}

/// The real-kernel tier's "host died" fault: kvm1's QEMU is killed with two LVs of a drive
/// holding data; `one-bsud drive adopt --force-unlink` moves the drive to kvm2, where LVM
/// (real activation, udev) brings every LV back with its bytes.
#[test]
fn rk_kill_host_then_adopt() {
    let mut bed = Bed::on(Tier::Rk);
    let st = bed.storage();
    let d = st.drive_by_id("kvm1", 101).unwrap();
    let mut want = Vec::new();
    for (i, name) in ["lv-one-5-0", "lv-one-5-1"].iter().enumerate() {
        st.allocate(&d, name, 64 * MIB as u64, &["one.vm=5"])
            .unwrap();
        let data = pattern(40 + i as u8, 4 * MIB);
        bed.lv("kvm1", 101, name).write_at(60 * MIB as u64, &data);
        want.push((101, name.to_string(), data));
    }
    // A thin volume and a thin snapshot of it on the thin drive.
    let thin = st.drive_by_id("kvm1", THIN_DS).unwrap();
    st.allocate_thin(&thin, "lv-one-5-2", 64 * MIB as u64, &["one.vm=5"], None, 0)
        .unwrap();
    let data = pattern(42, 4 * MIB);
    bed.lv("kvm1", THIN_DS, "lv-one-5-2")
        .write_at(60 * MIB as u64, &data);
    st.allocate_thin(
        &thin,
        "lv-one-5-2-snap-0",
        64 * MIB as u64,
        &["one.vm=5", "one.snapshot=0"],
        Some("lv-one-5-2"),
        0,
    )
    .unwrap();
    bed.lv("kvm1", THIN_DS, "lv-one-5-2")
        .write_at(60 * MIB as u64, &pattern(43, 4 * MIB));
    want.push((THIN_DS, "lv-one-5-2-snap-0".into(), data));
    want.push((THIN_DS, "lv-one-5-2".into(), pattern(43, 4 * MIB)));
    drop(st);
    bed.tb.kill_guest("kvm1").unwrap();
    for ds in ["101", &THIN_DS.to_string()] {
        bed.cli(&[
            "drive",
            "adopt",
            "--ds",
            ds,
            "--from-host",
            "kvm1",
            "--to-host",
            "kvm2",
            "--force-unlink",
            "--json",
        ]);
    }
    for (ds, name, data) in &want {
        let lv = bed.lv("kvm2", *ds, name);
        let got = bed.guest_sh(
            "kvm2",
            &format!(
                "lvchange -ay vg-one-{ds}/{name} && dd if={} bs=1M skip=60 count=4 status=none | gzip -1 -c",
                lv.quoted()
            ),
            Vec::new(),
        );
        assert!(
            gzip("-dc", &got) == *data,
            "{name}: bytes differ after adopt"
        );
    }
    let mut lvs = bed.vm_lvs("kvm2", 5);
    lvs.sort();
    assert_eq!(
        lvs,
        [
            "vg-one-101/lv-one-5-0",
            "vg-one-101/lv-one-5-1",
            "vg-one-103/lv-one-5-2",
            "vg-one-103/lv-one-5-2-snap-0"
        ]
    );
}

/// Runs `script` on `host`'s guest; its stdout as text.
fn gsh(bed: &Bed, host: &str, script: &str) -> String {
    String::from_utf8(bed.guest_sh(host, script, Vec::new())).unwrap()
}

/// `lvs` fields of one LV on `host`, trimmed.
fn lv_fields(bed: &Bed, host: &str, ds: i64, lv: &str, fields: &str) -> Vec<String> {
    gsh(
        bed,
        host,
        &format!(
            "lvs --noheadings --units b --nosuffix --separator '|' -o {fields} vg-one-{ds}/{lv}"
        ),
    )
    .trim()
    .split('|')
    .map(|f| f.trim().to_string())
    .collect()
}

/// (data size bytes, data usage %) of the thin pool of `ds` on `host`.
fn pool_usage(bed: &Bed, host: &str, ds: i64) -> (u64, f64) {
    let f = lv_fields(bed, host, ds, "bsud-pool", "lv_size,data_percent");
    (f[0].parse().unwrap(), f[1].parse().unwrap())
}

/// The epilog of a VM with one disk on `host`/`ds`: DELETE of disk 0 (oned gives `disk_ds`,
/// the datastore of the disk's image, or the system datastore), then of the VM directory.
fn delete_one_disk_vm(bed: &Bed, host: &str, ds: i64, vm: i64, disk_ds: i64) {
    bed.ok(&format!(
        "DELETE bsud {} {vm} {disk_ds}",
        dk(host, ds, vm, 0)
    ));
    bed.ok(&format!("DELETE bsud {} {vm} {ds}", dir(host, ds, vm)));
}

/// A VM whose disk 0 is a non-persistent clone of image `image` (on kvm1's image drive).
fn put_clone_vm(bed: &Bed, vm: i64, image: i64, size_mb: u64, host: &str, ds: i64) {
    bed.put_vm(&VmSpec {
        id: vm,
        state: 3,
        lcm_state: 3,
        disks: vec![DiskSpec::image(
            0,
            image,
            100,
            &format!("kvm1:vg-one-100/img-one-{image}"),
            size_mb,
            false,
        )],
        history: vec![(host.into(), ds)],
    });
}

/// On a thin drive, the first clone of an image to a host fills the host's cache; later
/// clones are thin snapshots of it, in constant time whatever the image size. A 10 GiB image
/// holding `BSUD_RK_THIN_DATA_MIB` (default 1024) MiB of data, then two clones: the bytes of
/// the data and of samples of the rest verify, the cached clone takes no pool space, and
/// deleting the image evicts the cache without touching the clones.
#[test]
fn rk_thin_clone_of_a_cached_image_is_instant() {
    let data_mib: u64 = std::env::var("BSUD_RK_THIN_DATA_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let bed = Bed::on(Tier::Rk);
    // The first clone copies the GiB of data under TCG, maybe beside other guests (CI).
    bed.transfer_deadline_secs(1800);
    let st = bed.storage();
    let d = st.drive_by_id("kvm1", 100).unwrap();
    st.allocate(
        &d,
        "img-one-40",
        10 << 30,
        &["one.image=40", "one.bsud.state=ready"],
    )
    .unwrap();
    drop(st);
    let img = bed.lv("kvm1", 100, "img-one-40");
    let gen = "yes one-bsud-image-40";
    let want = gsh(
        &bed,
        "kvm1",
        &format!(
            "{gen} | head -c {data_mib}M | dd of={} bs=1M iflag=fullblock oflag=direct \
             conv=fsync status=none && {gen} | head -c {data_mib}M | md5sum",
            img.quoted()
        ),
    );
    let mut took = Vec::new();
    for vm in [41, 42] {
        put_clone_vm(&bed, vm, 40, 10 << 10, "kvm1", THIN_DS);
        let t = std::time::Instant::now();
        bed.ok(&format!(
            "CLONE bsud kvm1:vg-one-100/img-one-40 {} {vm} 100",
            dk("kvm1", THIN_DS, vm, 0)
        ));
        took.push(t.elapsed().as_secs_f64());
        if vm == 41 {
            assert_eq!(
                lv_fields(&bed, "kvm1", THIN_DS, "img-one-40-cache", "lv_size")[0],
                (10u64 << 30).to_string()
            );
        }
    }
    let (_, used_before) = pool_usage(&bed, "kvm1", THIN_DS);
    println!(
        "BENCH rk thin clone, 10 GiB image with {data_mib} MiB of data: first (cache fill) {:.1}s, cached {:.2}s",
        took[0], took[1]
    );
    for vm in [41, 42] {
        let f = lv_fields(
            &bed,
            "kvm1",
            THIN_DS,
            &format!("lv-one-{vm}-0"),
            "origin,lv_size",
        );
        assert_eq!(f, ["img-one-40-cache", &(10u64 << 30).to_string()]);
        let disk = bed.at("kvm1", &disk_path(THIN_DS, vm, 0)).quoted();
        let got = gsh(
            &bed,
            "kvm1",
            &format!(
                "head -c {data_mib}M {disk} | md5sum; for off in 2048 6000 10176; do \
                 dd if={disk} bs=1M skip=$off count=64 status=none | cmp -s -n 67108864 - /dev/zero && echo zero; done"
            ),
        );
        assert_eq!(got, format!("{want}zero\nzero\nzero\n"), "VM {vm}'s clone");
    }
    // A cached clone is a snapshot: it took no data from the pool.
    assert!(
        took[1] < took[0] && took[1] < 10.0,
        "cached clone {:.2}s vs first {:.2}s",
        took[1],
        took[0]
    );
    assert!(used_before > 0.0);
    delete_one_disk_vm(&bed, "kvm1", THIN_DS, 41, THIN_DS);
    bed.remove_image(40);
    bed.storage().evict_image_caches(40);
    let lvs: Vec<String> = bed.lvs("kvm1").into_iter().map(|l| l.1).collect();
    assert!(!lvs.iter().any(|l| l.contains("cache")), "{lvs:?}");
    let disk = bed.at("kvm1", &disk_path(THIN_DS, 42, 0)).quoted();
    assert_eq!(
        gsh(&bed, "kvm1", &format!("head -c 64M {disk} | md5sum")),
        gsh(&bed, "kvm1", &format!("{gen} | head -c 64M | md5sum")),
        "VM 42's clone after its origin and the image are gone"
    );
}

/// A guest writes 1.5 GiB into a 4 GiB thin disk whose pool holds 1 GiB while
/// `drive pool-guard` runs: the drive grows (new BSU, vgextend, pool extend) and every write
/// succeeds with the bytes intact; a discard gives the blocks back to the pool.
#[test]
fn rk_thin_pool_grows_before_guest_writes_fail() {
    let bed = Bed::on(Tier::Rk);
    let st = bed.storage();
    let d = st.drive_by_id("kvm1", THIN_DS).unwrap();
    st.allocate_thin(&d, "lv-one-50-0", 4 << 30, &["one.vm=50"], None, 0)
        .unwrap();
    drop(st);
    let (pool0, _) = pool_usage(&bed, "kvm1", THIN_DS);
    let bsus0 = bed.volumes().len();
    assert!(pool0 < 2 << 30, "pool starts small: {pool0}");
    let mut guard = Command::new(env!("CARGO_BIN_EXE_one-bsud"))
        .args([
            "drive",
            "pool-guard",
            "--host",
            "kvm1",
            "--ds",
            &THIN_DS.to_string(),
        ])
        .args(["--every-secs", "1", "--for-secs", "900", "--json"])
        .env_clear()
        .envs(bed.env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lv = bed.lv("kvm1", THIN_DS, "lv-one-50-0").quoted();
    let gen = "yes one-bsud-pool-growth";
    let t = std::time::Instant::now();
    let out = gsh(
        &bed,
        "kvm1",
        &format!(
            "dmesg -c >/dev/null; {gen} | head -c 1536M | dd of={lv} bs=1M iflag=fullblock \
             oflag=direct status=none && echo written; \
             {gen} | head -c 1536M | cmp -s -n 1610612736 - {lv} && echo same || echo differ; \
             dmesg | grep -ci 'out-of-data' || true"
        ),
    );
    let wrote = t.elapsed().as_secs_f64();
    let _ = guard.kill();
    let g = guard.wait_with_output().unwrap();
    let growths: Vec<String> = String::from_utf8_lossy(&g.stderr)
        .lines()
        .filter_map(|l| Some(l.split_once("thin pool grown in ")?.1.to_string()))
        .collect();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"written"),
        "{out}
guard: {}",
        String::from_utf8_lossy(&g.stderr)
    );
    assert_eq!(lines[1], "same", "bytes read back");
    let (pool1, used1) = pool_usage(&bed, "kvm1", THIN_DS);
    println!(
        "BENCH rk thin pool growth under a guest writer: 1.5 GiB in {wrote:.1}s, pool {} → {} MiB, \
         {:.1} % used, {} BSU(s) added, out-of-data events: {}, growths: {growths:?}",
        pool0 >> 20,
        pool1 >> 20,
        used1,
        bed.volumes().len() - bsus0,
        lines.get(2).unwrap_or(&"?")
    );
    assert!(pool1 >= 1536 << 20, "pool grew: {pool0} → {pool1}");
    assert_eq!(
        lines.get(2),
        Some(&"0"),
        "the pool never ran out of space (dmesg out-of-data events)"
    );
    assert!(bed.volumes().len() > bsus0, "the drive grew");
    assert!(!growths.is_empty(), "the guard logs each growth");
    // The host probe reports what the pool holds, not its size.
    let probe = gsh(&bed, "kvm1", "/opt/bsud/one-bsud probe ds");
    let line = probe
        .lines()
        .find(|l| l.contains(&format!("ID = {THIN_DS},")))
        .unwrap_or_else(|| panic!("probe: {probe}"));
    let used_mb: u64 = line
        .split("USED_MB = ")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        (1536..(pool1 >> 20) - 512).contains(&used_mb),
        "probe USED_MB {used_mb} (pool {} MiB): {line}",
        pool1 >> 20
    );
    gsh(&bed, "kvm1", &format!("blkdiscard {lv}"));
    let (_, used2) = pool_usage(&bed, "kvm1", THIN_DS);
    assert!(
        used2 < 1.0,
        "discarded blocks return to the pool: {used1} % → {used2} %"
    );
}

/// Thin disk snapshots: revert restores the exact bytes; two VMs cloned from one cached
/// image keep their bytes when the other VM, the cache and the image are deleted.
#[test]
fn rk_thin_snapshots_and_clones_outlive_their_origin() {
    let bed = Bed::on(Tier::Rk);
    let image = bed.image(60, 16, 3);
    for vm in [61, 62] {
        put_clone_vm(&bed, vm, 60, 32, "kvm1", THIN_DS);
        bed.ok(&format!(
            "CLONE bsud kvm1:vg-one-100/img-one-60 {} {vm} 100",
            dk("kvm1", THIN_DS, vm, 0)
        ));
    }
    // Past BSUD_OVERCOMMIT (2 × 64 GiB): refused before anything is made.
    let st = bed.storage();
    let d = st.drive_by_id("kvm1", THIN_DS).unwrap();
    let e = st
        .allocate_thin(&d, "lv-one-63-0", 200 << 30, &["one.vm=63"], None, 0)
        .unwrap_err();
    assert_eq!(bsud::error::exit_code(&e), 6, "{e:#}");
    assert!(format!("{e:#}").contains("BSUD_OVERCOMMIT"), "{e:#}");
    assert!(bed.vm_lvs("kvm1", 63).is_empty());
    drop(st);
    let mut want = image.clone();
    want.resize(32 * MIB, 0);
    let disk61 = bed.at("kvm1", &disk_path(THIN_DS, 61, 0));
    disk61.write_at(MIB as u64, &pattern(70, 2 * MIB));
    let mut at_snap = want.clone();
    at_snap[MIB..3 * MIB].copy_from_slice(&pattern(70, 2 * MIB));
    bed.ok(&tl("SNAP_CREATE", dk("kvm1", THIN_DS, 61, 0), "0 61 100"));
    assert_eq!(
        lv_fields(
            &bed,
            "kvm1",
            THIN_DS,
            "lv-one-61-0-snap-0",
            "origin,segtype"
        ),
        ["lv-one-61-0", "thin"]
    );
    disk61.write_at(0, &pattern(71, 8 * MIB));
    disk61.write_at(30 * MIB as u64, &pattern(72, 2 * MIB));
    bed.ok(&tl("SNAP_REVERT", dk("kvm1", THIN_DS, 61, 0), "0 61 100"));
    assert!(
        disk61.read() == at_snap,
        "revert restores the snapshot's bytes"
    );
    // A rerun (oned retries) changes nothing.
    bed.ok(&tl("SNAP_REVERT", dk("kvm1", THIN_DS, 61, 0), "0 61 100"));
    assert!(disk61.read() == at_snap);
    bed.ok(&tl("SNAP_DELETE", dk("kvm1", THIN_DS, 61, 0), "0 61 100"));
    delete_one_disk_vm(&bed, "kvm1", THIN_DS, 61, THIN_DS);
    assert!(bed.vm_lvs("kvm1", 61).is_empty());
    bed.remove_image(60);
    bed.storage().evict_image_caches(60);
    let disk62 = bed.at("kvm1", &disk_path(THIN_DS, 62, 0));
    assert!(
        disk62.read() == want,
        "VM 62's clone outlives VM 61, the cache and the image"
    );
}

/// Benchmark (not run by default: `scripts/bench-rk-clone`): on the real-kernel tier, the
/// thick (or with `BENCH_RK_THIN=1` thin, first and cached) `CLONE` of a sparse image of each size in `BENCH_RK_SIZES_GIB` (default `1,10`)
/// holding 16 MiB of data at its start, kvm1's image drive → a VM disk on kvm1's system
/// drive (growth of both drives included); prints one BENCH line per size.
#[test]
#[ignore = "benchmark: run with scripts/bench-rk-clone"]
fn rk_bench_clone_vs_image_size() {
    let sizes: Vec<u64> = std::env::var("BENCH_RK_SIZES_GIB")
        .unwrap_or_else(|_| "1,10".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    // BENCH_RK_THIN=1: clones to the thin datastore (a first clone, then a cached one).
    let thin = std::env::var_os("BENCH_RK_THIN").is_some();
    let bed = Bed::on(Tier::Rk);
    // Room for a 100 GiB cached copy and its clone (the fill reserves the image's size).
    bed.tb
        .put_datastore(
            &DatastoreSpec::system(THIN_DS)
                .attr("BSUD_MIN_VOLUME_GIB", "1")
                .attr("BSUD_HEADROOM_GIB", "0")
                .attr("BSUD_THIN", "YES")
                .attr("BSUD_MAX_SIZE_GIB", "1024"),
        )
        .unwrap();
    // A thick clone reads every byte of the image (~0.2 GB/s under TCG): 100 GiB needs more
    // than the testbed's 300 s transfer deadline.
    bed.transfer_deadline_secs(7200);
    for (i, gib) in sizes.iter().enumerate() {
        let id = 20 + i as i64;
        let vm = 30 + i as i64;
        let st = bed.storage();
        let d = st.drive_by_id("kvm1", 100).unwrap();
        let lv = format!("img-one-{id}");
        let t = std::time::Instant::now();
        st.allocate(
            &d,
            &lv,
            gib << 30,
            &[&format!("one.image={id}"), "one.bsud.state=ready"],
        )
        .unwrap();
        let alloc = t.elapsed().as_secs_f64();
        let data = pattern(7, 16 * MIB);
        bed.lv("kvm1", 100, &lv).write_at(0, &data);
        bed.put_vm(&VmSpec {
            id: vm,
            state: 3,
            lcm_state: 3,
            disks: vec![DiskSpec::image(
                0,
                id,
                100,
                &format!("kvm1:vg-one-100/{lv}"),
                gib << 10,
                false,
            )],
            history: vec![("kvm1".into(), 101)],
        });
        if thin {
            // The first clone fills kvm1's cache; the second is a thin snapshot of it.
            let mut took = Vec::new();
            for v in [vm, vm + 100] {
                put_clone_vm(&bed, v, id, gib << 10, "kvm1", THIN_DS);
                let t = std::time::Instant::now();
                bed.ok(&format!(
                    "CLONE bsud kvm1:vg-one-100/{lv} {} {v} 100",
                    dk("kvm1", THIN_DS, v, 0)
                ));
                took.push(t.elapsed().as_secs_f64());
            }
            let disk = bed.at("kvm1", &disk_path(THIN_DS, vm + 100, 0)).quoted();
            let head = gsh(&bed, "kvm1", &format!("head -c 16M {disk} | md5sum"));
            let img = bed.lv("kvm1", 100, &lv).quoted();
            assert_eq!(
                head,
                gsh(&bed, "kvm1", &format!("head -c 16M {img} | md5sum")),
                "clone head"
            );
            println!(
                "BENCH rk thin clone {gib} GiB image (16 MiB data): first (fills the cache) {:.1}s, cached {:.2}s",
                took[0], took[1]
            );
            for v in [vm, vm + 100] {
                delete_one_disk_vm(&bed, "kvm1", THIN_DS, v, THIN_DS);
            }
            bed.remove_image(id);
            bed.storage().evict_image_caches(id);
            continue;
        }
        let t = std::time::Instant::now();
        bed.ok(&format!(
            "CLONE bsud kvm1:vg-one-100/{lv} {} {vm} 100",
            dk("kvm1", 101, vm, 0)
        ));
        let clone = t.elapsed().as_secs_f64();
        let head = bed.guest_sh(
            "kvm1",
            &format!(
                "dd if={} bs=1M count=16 status=none | md5sum",
                bed.at("kvm1", &disk_path(101, vm, 0)).quoted()
            ),
            Vec::new(),
        );
        let local = Command::new("md5sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                std::io::Write::write_all(&mut c.stdin.take().unwrap(), &data)?;
                c.wait_with_output()
            })
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&head)[..32],
            String::from_utf8_lossy(&local.stdout)[..32],
            "clone head"
        );
        println!(
            "BENCH rk thick clone {gib} GiB image (16 MiB data): {clone:.1}s (image allocate {alloc:.1}s)"
        );
        delete_one_disk_vm(&bed, "kvm1", 101, vm, 100);
        bed.remove_image(id);
    }
}
