//! A whole testbed in one call: the simulated cloud, N simulated hosts, an ssh registry and a
//! one-bsud configuration, in one directory; torn down completely when dropped.
//!
//! Layout of the testbed directory:
//!
//! ```text
//! <dir>/cloud/              state of `bsud-sim serve` (volume files live here)
//! <dir>/cloud.addr          the server's address (written by the server)
//! <dir>/machines/<host>/    each host's root (see hostview), lvfs mounted on <root>/lv
//! <dir>/frontend/           the frontend's root (`frontend_root`)
//! <dir>/hosts/<name>/       the ssh registry (see ssh): every host and `frontend`
//! <dir>/bsud.toml           the one-bsud configuration for the frontend
//! <dir>/logs/               stderr of the server and of each lvfs
//! ```
//!
//! Invariants:
//! - Nothing is shared between testbeds: each has its own directory, server (on a free port),
//!   loop devices and LVM views, so tests run in parallel.
//! - Dropping the testbed (also after a failed test or a failed start) kills its processes by
//!   pid, unmounts every lvfs, detaches every loop device backed by a file in the directory
//!   (attached or left by a crash), and removes the directory, unless `BSUD_KEEP_TESTBED=1`
//!   (then its path is printed on stderr).
//! - Hosts' lvfs servers get SIGTERM when the thread that started the testbed ends: start and
//!   drop a testbed on the same thread.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::config::{CloudFile, FileConfig, TimeoutsFile};
use crate::exec::{self, Cmd, Pipe, Running};
use crate::sim::hostview::{self, HostView};
use crate::sim::lvfs::{self, LvfsProcess};
use crate::sim::rk::{self, guest::Guest, image::Image};
use crate::sim::ssh::register_host;
use crate::sys;
use crate::wait::{poll, Poll, Wait};

/// The name the frontend has in the configuration and the ssh registry.
pub const FRONTEND_HOST: &str = "frontend";

/// How long the cloud server may take to write its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What to start.
#[derive(Debug, Clone)]
pub struct TestbedOpts {
    /// Directory to use (created; must not be another testbed's); default: a new temp dir.
    pub dir: Option<PathBuf>,
    /// Names of the simulated hosts (KVM nodes).
    pub hosts: Vec<String>,
    /// The `bsud-sim` binary.
    pub sim_binary: PathBuf,
    /// The `one-bsud` binary (frontend and host agent).
    pub bsud_binary: PathBuf,
    /// Subregion of every host.
    pub subregion: String,
    /// Region.
    pub region: String,
    /// Access key the server accepts.
    pub access_key: String,
    /// Its secret key.
    pub secret_key: String,
    /// More arguments for `bsud-sim serve` (delays, faults).
    pub serve_args: Vec<String>,
    /// What the hosts are.
    pub tier: Tier,
}

/// What the simulated hosts are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Host views on loop devices, LVM with `activation = 0`, LV data through lvfs.
    Sim,
    /// QEMU guests with the real kernel (sim::rk): real activation, thin pools, udev, OpenSSH.
    Rk,
}

impl Tier {
    /// `BSUD_TIER` (`sim`, the default, or `rk`); anything else is refused loudly.
    pub fn from_env() -> anyhow::Result<Tier> {
        match std::env::var("BSUD_TIER").as_deref() {
            Err(_) | Ok("") | Ok("sim") => Ok(Tier::Sim),
            Ok("rk") => Ok(Tier::Rk),
            Ok(other) => anyhow::bail!("BSUD_TIER={other:?}: expected sim or rk"),
        }
    }
}

impl TestbedOpts {
    /// Two hosts `kvm1`, `kvm2` in `eu-west-2a`, keys `AKTB`/`SKTB`.
    pub fn new(sim_binary: impl Into<PathBuf>, bsud_binary: impl Into<PathBuf>) -> TestbedOpts {
        TestbedOpts {
            dir: None,
            hosts: vec!["kvm1".into(), "kvm2".into()],
            sim_binary: sim_binary.into(),
            bsud_binary: bsud_binary.into(),
            subregion: "eu-west-2a".into(),
            region: "eu-west-2".into(),
            access_key: "AKTB".into(),
            secret_key: "SKTB".into(),
            serve_args: Vec::new(),
            tier: Tier::Sim,
        }
    }

    /// Every simulated volume state change (create, attach, detach, delete) takes `ms`.
    pub fn with_cloud_delay_ms(mut self, ms: u64) -> TestbedOpts {
        let d = ms.to_string();
        for flag in [
            "--create-delay-ms",
            "--attach-delay-ms",
            "--detach-delay-ms",
            "--delete-delay-ms",
        ] {
            self.serve_args.extend([flag.to_string(), d.clone()]);
        }
        self
    }
}

/// Deterministic bytes for tests and the demo: they differ at every offset and per seed, so a
/// misplaced or stale block never compares equal.
pub fn pattern(seed: u8, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            (i as u8)
                .wrapping_mul(29)
                .wrapping_add(seed ^ (i >> 12) as u8)
        })
        .collect()
}

/// A simulated host of the testbed.
#[derive(Debug)]
pub struct TestHost {
    /// Its name (ssh, OpenNebula).
    pub name: String,
    /// Its VM id in the simulated cloud.
    pub vm_id: String,
    /// Its view (root, LVM configuration, devices).
    pub view: HostView,
    /// Its metadata base URL (`BSUD_METADATA_URL`).
    pub metadata_url: String,
    lvfs: Option<LvfsProcess>,
    /// The QEMU guest of a real-kernel host.
    pub guest: Option<Guest>,
}

/// A running testbed; dropping it tears everything down.
#[derive(Debug)]
pub struct Testbed {
    dir: PathBuf,
    opts: TestbedOpts,
    cloud: Option<Running>,
    addr: Option<SocketAddr>,
    hosts: Vec<TestHost>,
    frontend: Option<HostView>,
    config_path: PathBuf,
    rk: Option<RkShared>,
}

/// What the guests of a real-kernel testbed share.
#[derive(Debug)]
struct RkShared {
    image: Image,
    tools_disk: PathBuf,
}

impl Testbed {
    /// Starts the cloud and the hosts and writes the configuration. On error everything
    /// started so far is torn down.
    pub fn start(opts: TestbedOpts) -> anyhow::Result<Testbed> {
        let dir = match &opts.dir {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
                d.canonicalize()?
            }
            None => tempfile::Builder::new()
                .prefix("bsud-testbed-")
                .tempdir()
                .context("creating the testbed directory")?
                .keep()
                .canonicalize()?,
        };
        let mut tb = Testbed {
            config_path: dir.join("bsud.toml"),
            dir,
            opts,
            cloud: None,
            addr: None,
            hosts: Vec::new(),
            frontend: None,
            rk: None,
        };
        // On error, dropping `tb` tears down what was started.
        tb.start_cloud()?;
        tb.start_frontend()?;
        if tb.opts.tier == Tier::Rk {
            tb.prepare_rk()?;
        }
        for name in tb.opts.hosts.clone() {
            tb.add_host(&name)
                .with_context(|| format!("starting simulated host {name}"))?;
        }
        tb.write_config()?;
        Ok(tb)
    }

    /// The testbed directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The one-bsud configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The cloud's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("started testbeds have an address")
    }

    /// The Outscale API endpoint (`…/api/v1`).
    pub fn endpoint(&self) -> String {
        format!("http://{}/api/v1", self.addr())
    }

    /// The hosts.
    pub fn hosts(&self) -> &[TestHost] {
        &self.hosts
    }

    /// One host by name.
    pub fn host(&self, name: &str) -> Option<&TestHost> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Kills a real-kernel host's QEMU now (the "host died" fault: no shutdown, no flush);
    /// its volumes stay linked in the cloud until something unlinks them.
    pub fn kill_guest(&mut self, name: &str) -> anyhow::Result<()> {
        let h = self
            .hosts
            .iter_mut()
            .find(|h| h.name == name)
            .with_context(|| format!("no host {name}"))?;
        match &mut h.guest {
            Some(g) => {
                g.kill();
                Ok(())
            }
            None => anyhow::bail!("{name} is not a QEMU guest"),
        }
    }

    /// The frontend's view.
    pub fn frontend(&self) -> &HostView {
        self.frontend
            .as_ref()
            .expect("started testbeds have a frontend")
    }

    /// Where the OpenNebula stand-in reads VM and datastore documents.
    pub fn one_dir(&self) -> PathBuf {
        self.dir.join("one")
    }

    /// Makes `onevm show -x <id>` print this VM.
    pub fn put_vm(&self, vm: &crate::sim::one::VmSpec) -> anyhow::Result<()> {
        std::fs::write(crate::sim::one::vm_file(&self.one_dir(), vm.id), vm.xml())?;
        Ok(())
    }

    /// Makes `onedatastore show -x <id>` print this datastore.
    pub fn put_datastore(&self, ds: &crate::sim::one::DatastoreSpec) -> anyhow::Result<()> {
        std::fs::write(crate::sim::one::ds_file(&self.one_dir(), ds.id), ds.xml())?;
        Ok(())
    }

    /// The ssh command the configuration names: real OpenSSH with the testbed's ssh_config on
    /// the real-kernel tier, the simulated transport otherwise.
    pub fn ssh_command(&self) -> Vec<String> {
        if self.opts.tier == Tier::Rk {
            return vec![
                "ssh".into(),
                "-F".into(),
                self.ssh_config().to_string_lossy().into_owned(),
            ];
        }
        vec![
            self.opts.sim_binary.to_string_lossy().into_owned(),
            "ssh".into(),
            "--testbed".into(),
            self.dir.to_string_lossy().into_owned(),
        ]
    }

    /// The environment for running one-bsud as the frontend: the configuration, the cloud
    /// credentials and endpoint, and the frontend's own host view (for agent operations it
    /// runs locally).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "BSUD_CONFIG".to_string(),
                self.config_path.to_string_lossy().into_owned(),
            ),
            ("OSC_ACCESS_KEY".to_string(), self.opts.access_key.clone()),
            ("OSC_SECRET_KEY".to_string(), self.opts.secret_key.clone()),
            ("OSC_ENDPOINT_API".to_string(), self.endpoint()),
            ("OSC_REGION".to_string(), self.opts.region.clone()),
            // Never the developer's own ~/.osc profile.
            (
                "OSC_CONFIG_FILE".to_string(),
                self.dir
                    .join("osc-config.json")
                    .to_string_lossy()
                    .into_owned(),
            ),
        ];
        env.extend(self.frontend().env());
        env
    }

    /// `one-bsud <args>` as the frontend.
    pub fn one_bsud(&self) -> Cmd {
        self.env()
            .into_iter()
            .fold(Cmd::new(&self.opts.bsud_binary), |c, (k, v)| c.env(k, v))
    }

    /// The tier of the hosts.
    pub fn tier(&self) -> Tier {
        self.opts.tier
    }

    /// The ssh client configuration of a real-kernel testbed (one `Host` block per guest).
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }

    /// Runs `script` on host `name` through the configured ssh command (real OpenSSH on the
    /// real-kernel tier: the script runs as root in the guest).
    pub fn host_sh(&self, name: &str, script: &str) -> anyhow::Result<exec::Output> {
        self.host_sh_stdin(name, script, Vec::new())
    }

    /// Like [`Testbed::host_sh`] with bytes on the script's stdin.
    pub fn host_sh_stdin(
        &self,
        name: &str,
        script: &str,
        stdin: Vec<u8>,
    ) -> anyhow::Result<exec::Output> {
        let cmd = self.ssh_command();
        Ok(exec::run(
            &Cmd::new(&cmd[0])
                .args(&cmd[1..])
                .arg(name)
                .arg(script)
                .stdin_bytes(stdin)
                .timeout(Duration::from_secs(600)),
        )?)
    }

    fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    fn start_cloud(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.logs())?;
        let addr_file = self.dir.join("cloud.addr");
        let cmd = Cmd::new(&self.opts.sim_binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--state"])
            .arg(self.dir.join("cloud"))
            .arg("--port-file")
            .arg(&addr_file)
            .args(["--access-key", &self.opts.access_key])
            .args(["--secret-key", &self.opts.secret_key])
            .args(&self.opts.serve_args)
            .timeout(Duration::from_secs(365 * 24 * 3600));
        let log = self.logs().join("cloud.log");
        let running = spawn_logged(&cmd, &log)?;
        let cloud = self.cloud.insert(running);
        let addr = poll(
            "the simulated cloud to listen",
            Wait::new(START_TIMEOUT, Duration::from_millis(20)),
            || {
                if let Ok(Some(status)) = cloud.child.try_wait() {
                    anyhow::bail!(
                        "bsud-sim serve {status}: {}",
                        exec::stderr_tail(read_file(&log).as_bytes())
                    );
                }
                Ok(match parse_addr(&read_file(&addr_file)) {
                    Some(a) => Poll::Ready(a),
                    None => Poll::Pending("no address yet".into()),
                })
            },
        )?;
        self.addr = Some(addr);
        Ok(())
    }

    fn start_frontend(&mut self) -> anyhow::Result<()> {
        let view = HostView::create(self.dir.join("frontend"))?;
        register_host(&self.dir, FRONTEND_HOST, view.root(), &[])?;
        self.frontend = Some(view);
        Ok(())
    }

    /// The image (built on a cache miss) and the tools disk every guest mounts.
    fn prepare_rk(&mut self) -> anyhow::Result<()> {
        let image = Image::ensure(&rk::image::cache_root())?;
        let tools_disk = rk::guest::build_tools_disk(&self.opts.bsud_binary, &self.dir)?;
        self.rk = Some(RkShared { image, tools_disk });
        Ok(())
    }

    /// Starts host `name` as a QEMU guest restored from the golden snapshot, with the
    /// product's binary mounted from the tools disk and its metadata URL sent by ssh.
    fn add_rk_host(&mut self, name: &str) -> anyhow::Result<()> {
        let rk = self.rk.as_ref().expect("prepare_rk ran");
        let root = self.dir.join("machines").join(name);
        let relay = format!("{} relay {}", self.opts.sim_binary.display(), self.addr());
        let guest = Guest::start(&rk.image, &root, Some(relay))?;
        {
            let mut q = guest.qmp()?;
            rk::guest::plug_readonly_disk(&mut q, &rk.tools_disk, "tools")?;
        }
        guest.ssh(&format!(
            "udevadm wait --timeout=30 /dev/disk/by-id/virtio-tools && \
             mount -o ro /dev/disk/by-id/virtio-tools {dir} && test -x {dir}/one-bsud",
            dir = rk::guest::TOOLS_DIR
        ))?;
        // Registered with the cloud only now: the root's QMP socket makes its links hot-plugs.
        let vm_id = self.create_vm(name, &root)?;
        let metadata_url = format!("http://{}/_meta/{vm_id}", rk::guest::GUEST_CLOUD_ADDR);
        self.hosts.push(TestHost {
            name: name.to_string(),
            vm_id,
            view: HostView::new(root),
            metadata_url,
            lvfs: None,
            guest: Some(guest),
        });
        self.write_ssh_config()
    }

    fn write_ssh_config(&self) -> anyhow::Result<()> {
        let mut text = String::from("# Written by the testbed: one block per real-kernel host.\n");
        let ctl = self.dir.join("ssh");
        std::fs::create_dir_all(&ctl)?;
        for h in &self.hosts {
            let Some(g) = &h.guest else { continue };
            text.push_str(&format!(
                "Host {name}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {key}\n\
                 \x20 IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n\
                 \x20 LogLevel ERROR\n  BatchMode yes\n  ConnectTimeout 10\n\
                 \x20 ServerAliveInterval 5\n  ServerAliveCountMax 3\n\
                 \x20 Ciphers chacha20-poly1305@openssh.com\n\
                 \x20 ControlMaster auto\n  ControlPath {ctl}/%n\n  ControlPersist 120\n\
                 \x20 SetEnv BSUD_METADATA_URL={meta}\n",
                name = h.name,
                port = g.ssh_port,
                key = g.key.display(),
                ctl = ctl.display(),
                meta = h.metadata_url,
            ));
        }
        std::fs::write(self.ssh_config(), text)?;
        Ok(())
    }

    fn add_host(&mut self, name: &str) -> anyhow::Result<()> {
        if self.opts.tier == Tier::Rk {
            return self.add_rk_host(name);
        }
        let view = HostView::create(self.dir.join("machines").join(name))?;
        let vm_id = self.create_vm(name, view.root())?;
        let metadata_url = format!("http://{}/_meta/{vm_id}", self.addr());
        let view = view.with_metadata_url(&metadata_url);
        register_host(
            &self.dir,
            name,
            view.root(),
            &[("BSUD_METADATA_URL".to_string(), metadata_url.clone())],
        )?;
        // Registered before lvfs starts, so a failure below still detaches its volumes.
        self.hosts.push(TestHost {
            name: name.to_string(),
            vm_id,
            view,
            metadata_url,
            lvfs: None,
            guest: None,
        });
        let log = self.logs().join(format!("lvfs-{name}.log"));
        let host = self.hosts.last_mut().expect("just pushed");
        host.lvfs = Some(LvfsProcess::start(
            &self.opts.sim_binary,
            host.view.root(),
            &log,
        )?);
        Ok(())
    }

    /// `POST /_sim/vms` on the simulated cloud's admin API.
    fn create_vm(&self, name: &str, root: &Path) -> anyhow::Result<String> {
        let url = format!("http://{}/_sim/vms", self.addr());
        let body = serde_json::json!({
            "name": name,
            "subregion": self.opts.subregion,
            "root": root,
        });
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let resp = client
            .post(&url)
            .json(&body)
            .send()
            .with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!("POST {url}: {status}: {text}");
        }
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("POST {url}: {text}"))?;
        v.get("VmId")
            .and_then(|id| id.as_str())
            .map(str::to_string)
            .with_context(|| format!("POST {url}: no VmId in {text}"))
    }

    fn write_config(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.one_dir())?;
        let text = config_text(
            &self.opts,
            &self.ssh_command(),
            self.frontend(),
            &self.endpoint(),
            &self.one_dir(),
        )?;
        std::fs::write(&self.config_path, text)
            .with_context(|| format!("writing {}", self.config_path.display()))
    }

    fn teardown(&mut self) {
        if let Some(mut cloud) = self.cloud.take() {
            let _ = sys::signal(cloud.child.id() as i32, libc::SIGTERM);
            let _ = poll(
                "the simulated cloud to exit",
                Wait::new(Duration::from_secs(5), Duration::from_millis(20)),
                || {
                    Ok(match cloud.child.try_wait() {
                        Ok(None) => Poll::Pending("running".into()),
                        _ => Poll::Ready(()),
                    })
                },
            );
            cloud.kill();
        }
        if self.opts.tier == Tier::Rk && self.ssh_config().exists() {
            for h in &self.hosts {
                let _ = exec::run(
                    &Cmd::new("ssh")
                        .arg("-F")
                        .arg(self.ssh_config())
                        .args(["-O", "exit", &h.name])
                        .timeout(Duration::from_secs(5)),
                );
            }
        }
        for h in &mut self.hosts {
            if let Some(mut l) = h.lvfs.take() {
                l.stop();
            }
            if let Some(mut g) = h.guest.take() {
                g.keep = std::env::var("BSUD_KEEP_TESTBED").as_deref() == Ok("1");
                drop(g);
            }
        }
        for view in self
            .hosts
            .iter()
            .map(|h| &h.view)
            .chain(self.frontend.iter())
        {
            if let Err(e) = view.detach_all() {
                tracing::warn!("testbed teardown: {e:#}");
            }
        }
        if let Err(e) = hostview::detach_loops_under(&self.dir) {
            tracing::warn!("testbed teardown: {e:#}");
        }
        let mounted = self
            .hosts
            .iter()
            .any(|h| lvfs::is_mounted(&h.view.lv_dir()));
        if mounted {
            eprintln!(
                "testbed {}: an lvfs is still mounted; directory left in place",
                self.dir.display()
            );
        } else if std::env::var("BSUD_KEEP_TESTBED").as_deref() == Ok("1") {
            eprintln!("testbed kept in {}", self.dir.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("testbed {}: removing it: {e}", self.dir.display());
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// What is left of a torn-down testbed in `dir` (a canonical path): the directory itself, loop
/// devices backed by files under it, processes whose command line names it (other than this
/// one). Empty when the teardown was complete; an lvfs still mounted keeps the directory.
pub fn leftovers(dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    if dir.exists() {
        left.push(format!("directory {}", dir.display()));
    }
    match hostview::loops_under(dir) {
        Ok(loops) => left.extend(
            loops
                .into_iter()
                .map(|(dev, back)| format!("loop device {dev} ({back})")),
        ),
        Err(e) => left.push(format!("cannot list loop devices: {e:#}")),
    }
    let me = std::process::id().to_string();
    let needle = dir.as_os_str().as_encoded_bytes();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let name = p.file_name().to_string_lossy().into_owned();
            if name == me || !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
                continue;
            };
            if cmdline.windows(needle.len()).any(|w| w == needle) {
                let shown: String = String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .chars()
                    .take(120)
                    .collect();
                left.push(format!("process {name} ({})", shown.trim()));
            }
        }
    }
    left
}

/// The one-bsud configuration of a testbed (keys of [`FileConfig`]).
fn config_text(
    opts: &TestbedOpts,
    ssh_command: &[String],
    frontend: &HostView,
    endpoint: &str,
    one_dir: &Path,
) -> anyhow::Result<String> {
    let cfg = FileConfig {
        frontend_host: Some(FRONTEND_HOST.into()),
        frontend_root: Some(frontend.root().to_path_buf()),
        ssh_command: Some(ssh_command.to_vec()),
        host_agent: Some(match opts.tier {
            Tier::Sim => opts.bsud_binary.to_string_lossy().into_owned(),
            Tier::Rk => format!("{}/one-bsud", rk::guest::TOOLS_DIR),
        }),
        // Guests have no network between them: host-to-host copies go through the frontend.
        relay_via_frontend: (opts.tier == Tier::Rk).then_some(true),
        onevm_command: Some(one_command(opts, one_dir, "vm")),
        onedatastore_command: Some(one_command(opts, one_dir, "ds")),
        lock_dir: Some(frontend.lock_dir()),
        log_level: Some("debug".into()),
        journald: Some(false),
        timeouts: TimeoutsFile {
            lock: Some(60),
            volume_create: Some(30),
            volume_link: Some(30),
            device: Some(30),
            volume_unlink: Some(30),
            command: Some(120),
            transfer: Some(300),
            poll_interval_ms: Some(50),
        },
        cloud: CloudFile {
            endpoint: Some(endpoint.to_string()),
            region: Some(opts.region.clone()),
            requests_per_second: Some(100),
            max_retries: Some(3),
            ..CloudFile::default()
        },
        ..FileConfig::default()
    };
    toml::to_string(&cfg).context("writing the testbed configuration")
}

/// The stand-in for `onevm show -x` / `onedatastore show -x` (`bsud-sim one`).
fn one_command(opts: &TestbedOpts, one_dir: &Path, kind: &str) -> Vec<String> {
    vec![
        opts.sim_binary.to_string_lossy().into_owned(),
        "one".into(),
        "--dir".into(),
        one_dir.to_string_lossy().into_owned(),
        kind.into(),
    ]
}

/// `127.0.0.1:PORT` or a bare port, as the server writes its address.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let t = text.trim();
    if let Ok(port) = t.parse::<u16>() {
        return (port != 0).then(|| SocketAddr::from(([127, 0, 0, 1], port)));
    }
    t.parse::<SocketAddr>().ok().filter(|a| a.port() != 0)
}

fn read_file(p: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(p) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// Starts a long-running helper with its stderr appended to `log` (stdin and stdout null).
/// Dropping the handle kills its process group.
pub(crate) fn spawn_logged(cmd: &Cmd, log: &Path) -> anyhow::Result<Running> {
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut running = exec::spawn(cmd, Pipe::Null, Pipe::Null, Pipe::Piped)?;
    if let Some(mut err) = running.child.stderr.take() {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut err, &mut out);
        });
    }
    Ok(running)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Env};

    #[test]
    fn addresses_in_both_shapes() {
        assert_eq!(
            parse_addr("127.0.0.1:4567\n"),
            Some("127.0.0.1:4567".parse().unwrap())
        );
        assert_eq!(parse_addr("4567"), Some("127.0.0.1:4567".parse().unwrap()));
        assert_eq!(parse_addr(""), None);
        assert_eq!(parse_addr("127.0.0.1:"), None);
        assert_eq!(parse_addr("0"), None);
    }

    #[test]
    fn the_configuration_is_one_bsud_s() {
        let d = tempfile::tempdir().unwrap();
        let opts = TestbedOpts::new("/x/bsud-sim", "/x/one-bsud");
        let fe = HostView::new(d.path().join("frontend"));
        let ssh = vec![
            "/x/bsud-sim".into(),
            "ssh".into(),
            "--testbed".into(),
            "/tb".into(),
        ];
        let text = config_text(&opts, &ssh, &fe, "http://127.0.0.1:9/api/v1", d.path()).unwrap();
        let path = d.path().join("bsud.toml");
        std::fs::write(&path, text).unwrap();
        let env = Env::from_pairs([("BSUD_CONFIG", path.to_str().unwrap())]);
        let c = Config::load(&env).unwrap();
        assert_eq!(c.frontend_host, "frontend");
        assert_eq!(c.ssh.0, ssh);
        assert_eq!(c.host_agent, "/x/one-bsud");
        assert_eq!(c.lock_dir, fe.lock_dir());
        assert!(!c.journald);
        assert_eq!(
            c.cloud.endpoint.as_deref(),
            Some("http://127.0.0.1:9/api/v1")
        );
        assert_eq!(c.timeouts.poll_interval, Duration::from_millis(50));
    }

    #[test]
    fn a_failed_start_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("tb");
        let mut opts = TestbedOpts::new("/bin/false", "/bin/false");
        opts.dir = Some(dir.clone());
        let e = Testbed::start(opts).unwrap_err();
        assert!(format!("{e:#}").contains("bsud-sim serve"), "{e:#}");
        assert!(!dir.exists());
    }
}
