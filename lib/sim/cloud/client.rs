//! Blocking clients of a running `bsud-sim serve`, for tests, the testbed and the demo: the
//! admin API ([`SimClient`]), an `outscale_api` configuration pointed at the simulator
//! ([`osc_config`]), and a child-process launcher that kills the server when dropped
//! ([`SimProcess`]).
//!
//! Everything here blocks (reqwest blocking, `outscale_api`): call it outside any tokio
//! runtime, like the driver's own core.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use outscale_api::apis::configuration::{AWSv4Key, Configuration};
use outscale_api::apis::middleware::{BackoffParams, LimiterParams};
use outscale_api::apis::profile::Profile;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::faults::FaultRule;
use super::server::{Stats, VmInfo};
use super::state::{
    DelayUpdate, Delays, Key, DEFAULT_ACCESS_KEY, DEFAULT_REGION, DEFAULT_SECRET_KEY,
};
use crate::exec::{self, Cmd, Pipe};
use crate::wait::{self, Poll, Wait};

/// The SDK's retry behaviour for a configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retries {
    /// Retries after the first attempt (the SDK default is 3).
    pub max_retries: i32,
    /// Backoff factor, seconds (sleep = factor·2^i + U(0, jitter)).
    pub backoff_factor: f32,
    /// Jitter, seconds.
    pub jitter: f32,
}

impl Retries {
    /// No retry: every answer reaches the caller.
    pub const NONE: Retries = Retries {
        max_retries: 0,
        backoff_factor: 0.0,
        jitter: 0.0,
    };

    /// `n` quick retries (10 ms·2^i), for tests of the SDK's own retry.
    pub fn quick(n: i32) -> Retries {
        Retries {
            max_retries: n,
            backoff_factor: 0.01,
            jitter: 0.0,
        }
    }
}

/// The default key pair of a fresh simulator.
pub fn default_key() -> Key {
    Key {
        access_key: DEFAULT_ACCESS_KEY.into(),
        secret_key: DEFAULT_SECRET_KEY.into(),
    }
}

/// An `outscale_api` configuration for `api_url` (`http://127.0.0.1:PORT/api/v1`), signing
/// with `key` for `region`, with the SDK's 5 requests/s limiter raised to 1000/s and the
/// given retries. Must be called outside a tokio runtime.
pub fn osc_config(
    api_url: &str,
    key: &Key,
    region: &str,
    retries: Retries,
) -> anyhow::Result<Configuration> {
    let mut p = Profile::builder()
        .access_key(&key.access_key, &key.secret_key)
        .region(region)
        .protocol("http")
        .build();
    p.endpoints.api = api_url.to_string();
    p.limiter_params = LimiterParams {
        max_requests: 1000,
        window: Duration::from_secs(1),
    };
    p.backoff_params = BackoffParams {
        max_retries: retries.max_retries,
        retry_backoff_factor: retries.backoff_factor,
        retry_backoff_jitter: retries.jitter,
        retry_backoff_max: 60.0,
    };
    Configuration::try_from(p).map_err(|e| anyhow::anyhow!("building the SDK configuration: {e}"))
}

/// The admin API of one simulator.
#[derive(Debug, Clone)]
pub struct SimClient {
    base_url: String,
    http: reqwest::blocking::Client,
}

impl SimClient {
    /// A client of the simulator at `base_url` (`http://127.0.0.1:PORT`).
    pub fn new(base_url: impl Into<String>) -> anyhow::Result<SimClient> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        Ok(SimClient {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            http,
        })
    }

    /// A client of the simulator listening on `addr`.
    pub fn for_addr(addr: SocketAddr) -> anyhow::Result<SimClient> {
        SimClient::new(format!("http://{addr}"))
    }

    /// `http://IP:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The Outscale API endpoint (`…/api/v1`).
    pub fn api_url(&self) -> String {
        format!("{}/api/v1", self.base_url)
    }

    /// A VM's metadata base URL (what `BSUD_METADATA_URL` is set to on that host).
    pub fn metadata_url(&self, vm_id: &str) -> String {
        format!("{}/_meta/{vm_id}", self.base_url)
    }

    /// An SDK configuration against this simulator (region `eu-west-2` unless the server was
    /// started with another: pass it then through [`osc_config`]).
    pub fn osc_config(&self, key: &Key, retries: Retries) -> anyhow::Result<Configuration> {
        osc_config(&self.api_url(), key, DEFAULT_REGION, retries)
    }

    fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base_url);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let text = resp.text().with_context(|| format!("{method} {url}"))?;
        if !status.is_success() {
            anyhow::bail!("{method} {url}: {status}: {}", text.trim());
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {url}: answer {text}"))
    }

    /// Registers a VM (`root`: the simulated host's directory, `None` for an API-only VM);
    /// returns its VmId. Idempotent by name.
    pub fn add_vm(
        &self,
        name: &str,
        subregion: &str,
        root: Option<&Path>,
    ) -> anyhow::Result<String> {
        let v: Value = self.send(
            reqwest::Method::POST,
            "/_sim/vms",
            Some(json!({"name": name, "subregion": subregion, "root": root})),
        )?;
        v["VmId"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("POST /_sim/vms answered {v}"))
    }

    /// The registered VMs.
    pub fn vms(&self) -> anyhow::Result<Vec<VmInfo>> {
        let v: Value = self.send(reqwest::Method::GET, "/_sim/vms", None)?;
        serde_json::from_value(v["vms"].clone()).context("GET /_sim/vms")
    }

    /// Replaces the fault rules.
    pub fn set_faults(&self, rules: &[FaultRule]) -> anyhow::Result<()> {
        self.set_faults_json(json!({ "rules": rules }))
    }

    /// Replaces the fault rules, given as the raw `{"rules":[…]}` document.
    pub fn set_faults_json(&self, doc: Value) -> anyhow::Result<()> {
        let _: Value = self.send(reqwest::Method::POST, "/_sim/faults", Some(doc))?;
        Ok(())
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) -> anyhow::Result<()> {
        let _: Value = self.send(reqwest::Method::DELETE, "/_sim/faults", None)?;
        Ok(())
    }

    /// Changes some delays; returns the delays now in force.
    pub fn set_delays(&self, update: &DelayUpdate) -> anyhow::Result<Delays> {
        self.send(
            reqwest::Method::POST,
            "/_sim/delays",
            Some(serde_json::to_value(update)?),
        )
    }

    /// The call counters.
    pub fn stats(&self) -> anyhow::Result<Stats> {
        self.send(reqwest::Method::GET, "/_sim/stats", None)
    }

    /// Resets the call counters.
    pub fn reset_stats(&self) -> anyhow::Result<()> {
        let _: Value = self.send(reqwest::Method::DELETE, "/_sim/stats", None)?;
        Ok(())
    }

    /// The whole state (secrets redacted).
    pub fn state(&self) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, "/_sim/state", None)
    }

    /// Asks the server to stop.
    pub fn shutdown(&self) -> anyhow::Result<()> {
        let _: Value = self.send(reqwest::Method::POST, "/_sim/shutdown", None)?;
        Ok(())
    }

    /// Sends one signed API call with a raw JSON body (for calls or bodies the SDK cannot
    /// produce); returns the HTTP status and the body text.
    pub fn signed_call(
        &self,
        key: &Key,
        region: &str,
        call: &str,
        body: &str,
    ) -> anyhow::Result<(u16, String)> {
        let url = format!("{}/{call}", self.api_url());
        let signer = AWSv4Key {
            access_key: key.access_key.clone(),
            secret_key: key.secret_key.clone().into(),
            region: region.into(),
            service: super::sigv4::SERVICE.into(),
        };
        let headers = signer
            .sign(&url, "POST", body)
            .map_err(|e| anyhow::anyhow!("signing {call}: {e}"))?;
        let mut req = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.send().with_context(|| format!("POST {url}"))?;
        let status = resp.status().as_u16();
        Ok((status, resp.text()?))
    }
}

/// A `bsud-sim serve` child process; dropping it kills it (SIGKILL, like a crash).
#[derive(Debug)]
pub struct SimProcess {
    running: exec::Running,
    state_dir: PathBuf,
    addr: SocketAddr,
    /// Admin client of this server.
    pub client: SimClient,
}

impl SimProcess {
    /// Starts `bin serve --state <state_dir> --port-file <state_dir>/../<name>.addr` plus
    /// `extra` arguments (`--listen`, keys, delays, `--die-with-parent`…) and waits until it
    /// listens. The server's log goes to this process's stderr at level `BSUD_LOG` (default
    /// `warn`).
    pub fn start(bin: &Path, state_dir: &Path, extra: &[String]) -> anyhow::Result<SimProcess> {
        let port_file = port_file_of(state_dir)?;
        match std::fs::remove_file(&port_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", port_file.display())),
        }
        let level = std::env::var("BSUD_LOG").unwrap_or_else(|_| "warn".into());
        let cmd = Cmd::new(bin)
            .arg("serve")
            .arg("--state")
            .arg(state_dir)
            .arg("--port-file")
            .arg(&port_file)
            .args(extra)
            .env("BSUD_LOG", level);
        let mut running = exec::spawn(&cmd, Pipe::Null, Pipe::Null, Pipe::Inherit)?;
        let addr = wait::poll(
            "bsud-sim to listen",
            Wait::new(Duration::from_secs(20), Duration::from_millis(10)),
            || {
                if let Some(status) = running.child.try_wait()? {
                    anyhow::bail!("bsud-sim serve exited with {status} before listening");
                }
                match std::fs::read_to_string(&port_file) {
                    Ok(s) => Ok(Poll::Ready(s.trim().parse::<SocketAddr>().with_context(
                        || format!("{} holds '{}'", port_file.display(), s.trim()),
                    )?)),
                    Err(_) => Ok(Poll::Pending("no port file yet".into())),
                }
            },
        )?;
        Ok(SimProcess {
            running,
            state_dir: state_dir.to_path_buf(),
            addr,
            client: SimClient::for_addr(addr)?,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Kills it now with SIGKILL (a crash: nothing is flushed beyond what is already saved).
    pub fn kill(&mut self) {
        self.running.kill();
    }
}

/// The port file used by [`SimProcess`]: beside the state directory, named after it.
fn port_file_of(state_dir: &Path) -> anyhow::Result<PathBuf> {
    let name = state_dir
        .file_name()
        .with_context(|| format!("state directory {} has no name", state_dir.display()))?;
    Ok(state_dir.with_file_name(format!("{}.addr", name.to_string_lossy())))
}
