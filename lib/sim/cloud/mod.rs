//! `bsud-sim serve`: a simulated Outscale cloud on loopback — the Outscale API for the BSU
//! calls the driver makes, per-VM metadata, and an admin API that scripts faults per test.
//!
//! Faithful where the driver depends on behaviour: SigV4 signatures checked like the platform
//! does ([`sigv4`]), Outscale's error shape and HTTP statuses ([`errors`]), volume and link
//! state machines with delays that survive restarts ([`state`]), LinkVolume/DeleteVolume/
//! CreateVolume validation ([`api`]). Not simulated: snapshots, UpdateVolume, DryRun, quotas,
//! VM life cycle (every VM is `running`), brute-force lockout, the platform's own rate limits
//! (throttling happens only when a fault rule says so).
//!
//! # Endpoints
//!
//! - `POST /api/v1/<Call>` — CreateVolume, ReadVolumes, DeleteVolume, LinkVolume,
//!   UnlinkVolume, CreateTags, DeleteTags, ReadTags, ReadVms, ReadSubregions; JSON in and out
//!   as `outscale_api` serialises them. Region `--region` (default `eu-west-2`), subregions
//!   `<region>a` and `<region>b`.
//! - `GET /_meta/<VmId>/latest/meta-data/{instance-id, placement/availability-zone,
//!   block-device-mapping/{ami,root,ebsN}}` — so a simulated host's `BSUD_METADATA_URL` is
//!   `http://127.0.0.1:PORT/_meta/<VmId>`.
//! - Admin API (no authentication; the server listens on loopback only). Errors are
//!   `{"error": "message"}` with status 400/404/409/500.
//!
//! | request | body | answer |
//! |---|---|---|
//! | `POST /_sim/vms` | `{"name":"host1","subregion":"eu-west-2a","root":"/abs/dir"}` (`root` null or absent: API-only VM) | `{"VmId":"i-…"}`; the same name with the same subregion and root answers the same id |
//! | `GET /_sim/vms` | | `{"vms":[{"VmId","name","subregion","root","root_volume"}]}` |
//! | `POST /_sim/faults` | `{"rules":[RULE…]}` (replaces all rules, counters restart) | `{"installed":N}` |
//! | `GET /_sim/faults` | | `{"faults":[{"rule":RULE,"seen":N}]}` |
//! | `DELETE /_sim/faults` | | `{"installed":0}` |
//! | `POST /_sim/delays` | any of `{"create_ms","attach_ms","detach_ms","delete_ms"}` | the delays now in force |
//! | `GET /_sim/delays` | | `{"create_ms","attach_ms","detach_ms","delete_ms"}` |
//! | `GET /_sim/stats` | | `{"total","calls":{"<Call>":{"ok","failed"}},"auth_failures","injected"}` |
//! | `DELETE /_sim/stats` | | resets the counters |
//! | `GET /_sim/state` | | the whole state (secrets redacted), for debugging |
//! | `POST /_sim/shutdown` | | `{}`; the server stops gracefully |
//!
//! Fault rules (`RULE`), matched in list order; `volume` / `vm` (optional) restrict a rule to
//! calls whose JSON body mentions that id anywhere, and to transitions of that volume / links
//! on that VM:
//!
//! ```text
//! {"kind":"fail", "call":"CreateVolume"|"*", "nth":1, "count":1, "status":500,
//!  "code":"2000", "type":"InternalError", "details":"injected fault", "apply":false,
//!  "volume":"vol-…", "vm":"i-…"}
//!     matching calls number nth ..= nth+count-1 (counted from installation) answer this
//!     error; with "apply":true the call is carried out first (a lost response).
//! {"kind":"throttle", "call":"*", "nth":1, "count":1, "scope":"account"|"call"|"platform"}
//!     the same counting; answers 429 code 24 (account), 429 code 25 (call) or 503 code 6.
//! {"kind":"stall", "transition":"create"|"attach"|"detach"|"delete", "volume":…, "vm":…}
//!     while installed, volumes stay `creating`, links stay `attaching` (never attach),
//!     unlinks stay `detaching` (a ForceUnlink still completes), deletions stay `deleting`.
//! {"kind":"no_device", "volume":…, "vm":…}
//!     links become `attached` without the host effect: the device never appears.
//! ```
//!
//! Defaults: `nth` 1, `count` 1, `status` 500, `code` "2000", `type` "InternalError",
//! `scope` account. Rules and their counters persist with the state.
//!
//! # State and restarts
//!
//! `--state DIR` holds `state.json` (keys, region, delays, last listen address, VMs, volumes,
//! tags, links, client tokens, fault rules) and `volumes/<vol-id>.img` (sparse, Size GiB).
//! Options given on the command line replace the stored values; a restart with only
//! `--state DIR` keeps everything, including the address (so simulated hosts keep their
//! metadata URL). Kill the server at any moment: the state on disk is always whole.
//!
//! # Host effects
//!
//! For a VM registered with a `root` directory, a link becomes `attached` only after
//! [`crate::sim::hostview::attach_volume`] made the volume file appear on that host, and an
//! unlink completes only after [`crate::sim::hostview::detach_volume`]. API-only VMs
//! (`root: null`) have no host effects.

pub mod api;
pub mod client;
pub mod clock;
pub mod errors;
pub mod faults;
pub mod server;
pub mod sigv4;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::error::{fail, ErrorKind};
use state::{DelayUpdate, Key, Store, DEFAULT_REGION};

/// `bsud-sim serve` arguments.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Without any --access-key ever given, the keys AKSIM / SKSIM are accepted.

Admin API (no authentication, loopback only):
  POST /_sim/vms {\"name\",\"subregion\",\"root\":DIR|null} -> {\"VmId\"};  GET /_sim/vms
  POST /_sim/faults {\"rules\":[RULE...]};  GET, DELETE /_sim/faults
  POST /_sim/delays {\"create_ms\",\"attach_ms\",\"detach_ms\",\"delete_ms\"};  GET /_sim/delays
  GET, DELETE /_sim/stats;  GET /_sim/state;  POST /_sim/shutdown
RULE is one of:
  {\"kind\":\"fail\",\"call\":\"CreateVolume\"|\"*\",\"nth\":1,\"count\":1,\"status\":500,
   \"code\":\"2000\",\"type\":\"InternalError\",\"details\":\"..\",\"apply\":false}
  {\"kind\":\"throttle\",\"call\":\"*\",\"nth\":1,\"count\":1,\"scope\":\"account\"|\"call\"|\"platform\"}
  {\"kind\":\"stall\",\"transition\":\"create\"|\"attach\"|\"detach\"|\"delete\"}
  {\"kind\":\"no_device\"}
  each optionally restricted with \"volume\":\"vol-..\" and/or \"vm\":\"i-..\".

VM metadata: http://ADDR/_meta/<VmId>/latest/meta-data/instance-id (and
placement/availability-zone).

Example:
  bsud-sim serve --listen 127.0.0.1:3000 --state /tmp/sim
  then point the driver at http://127.0.0.1:3000/api/v1 with AKSIM / SKSIM.")]
pub struct ServeArgs {
    /// Address to listen on, IP:PORT; loopback only (the admin API has no authentication).
    /// Port 0 picks a free port (see --port-file). Default: the address of the previous run
    /// on this state directory, else 127.0.0.1:0.
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,
    /// State directory (created if missing): state.json and volumes/<vol-id>.img.
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// Once listening, write the actual address (IP:PORT and a newline) to this file,
    /// atomically.
    #[arg(long, value_name = "FILE")]
    pub port_file: Option<PathBuf>,
    /// Accepted access key; repeat for several, each paired in order with a --secret-key.
    /// Replaces the stored keys.
    #[arg(long = "access-key", value_name = "AK")]
    pub access_keys: Vec<String>,
    /// Secret key of the --access-key at the same position.
    #[arg(long = "secret-key", value_name = "SK")]
    pub secret_keys: Vec<String>,
    /// Region (subregions are <region>a and <region>b). Default: stored, else eu-west-2.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Milliseconds a new volume stays `creating` (default: stored, else 200).
    #[arg(long, value_name = "MS")]
    pub create_delay_ms: Option<u64>,
    /// Milliseconds a new link stays `attaching` (default: stored, else 200).
    #[arg(long, value_name = "MS")]
    pub attach_delay_ms: Option<u64>,
    /// Milliseconds an unlink stays `detaching` (default: stored, else 200).
    #[arg(long, value_name = "MS")]
    pub detach_delay_ms: Option<u64>,
    /// Milliseconds a deleted volume stays `deleting` (default: stored, else 200).
    #[arg(long, value_name = "MS")]
    pub delete_delay_ms: Option<u64>,
    /// Die (SIGKILL) when the thread that started this process ends — for tests and demos
    /// that must not leave a server behind.
    #[arg(long)]
    pub die_with_parent: bool,
}

fn bad(msg: impl Into<String>) -> anyhow::Error {
    fail(ErrorKind::BadInput, msg)
}

/// Applies the command-line overrides to the loaded state.
fn apply_args(store: &mut Store, a: &ServeArgs) -> anyhow::Result<()> {
    if a.access_keys.len() != a.secret_keys.len() {
        return Err(bad(format!(
            "{} --access-key but {} --secret-key: give them in pairs",
            a.access_keys.len(),
            a.secret_keys.len()
        )));
    }
    if a.access_keys
        .iter()
        .chain(&a.secret_keys)
        .any(|k| k.is_empty())
    {
        return Err(bad("access and secret keys must not be empty"));
    }
    let st = &mut store.state;
    if !a.access_keys.is_empty() {
        st.keys = a
            .access_keys
            .iter()
            .zip(&a.secret_keys)
            .map(|(ak, sk)| Key {
                access_key: ak.clone(),
                secret_key: sk.clone(),
            })
            .collect();
        store.dirty = true;
    }
    if let Some(r) = &a.region {
        let valid = !r.is_empty()
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(bad(format!(
                "region '{r}' must be lowercase letters, digits and '-'"
            )));
        }
        if *r != st.region {
            if !st.vms.is_empty() || !st.volumes.is_empty() {
                return Err(bad(format!(
                    "the state directory holds a cloud of region {}; it cannot become {r}",
                    st.region
                )));
            }
            st.region = r.clone();
            store.dirty = true;
        }
    }
    let update = DelayUpdate {
        create_ms: a.create_delay_ms,
        attach_ms: a.attach_delay_ms,
        detach_ms: a.detach_delay_ms,
        delete_ms: a.delete_delay_ms,
    };
    if update != DelayUpdate::default() {
        store.state.delays.update(&update);
        store.dirty = true;
    }
    Ok(())
}

/// Runs the server until killed, interrupted (SIGINT/SIGTERM) or shut down via the admin API.
pub fn serve(a: ServeArgs) -> anyhow::Result<()> {
    if a.die_with_parent {
        crate::sys::die_with_parent();
    }
    let mut store = Store::open(&a.state, a.region.as_deref().unwrap_or(DEFAULT_REGION))?;
    apply_args(&mut store, &a)?;
    let listen = match a.listen {
        Some(l) => l,
        None => match &store.state.listen {
            Some(s) => s
                .parse()
                .with_context(|| format!("stored listen address '{s}' is invalid"))?,
            None => SocketAddr::from(([127, 0, 0, 1], 0)),
        },
    };
    if !listen.ip().is_loopback() {
        return Err(bad(format!(
            "--listen {listen}: the simulator serves an unauthenticated admin API and listens on loopback only"
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(store, listen, a.port_file))
}

async fn run(
    mut store: Store,
    listen: SocketAddr,
    port_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    store.state.listen = Some(addr.to_string());
    store.dirty = true;
    store.save()?;
    if let Some(pf) = &port_file {
        state::write_atomic(pf, format!("{addr}\n").as_bytes())?;
    }
    tracing::info!(
        "bsud-sim: Outscale API on http://{addr}/api/v1, state in {}",
        store.dir().display()
    );
    let shared = server::Shared::new(server::Sim::new(store));
    let ticker = tokio::spawn(server::ticker(shared.clone()));
    let app = server::router(shared.clone());
    let stop = {
        let shared = shared.clone();
        async move {
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term => {}
                _ = shared.shutdown.notified() => {}
            }
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
        .context("serving")?;
    ticker.abort();
    tracing::info!("bsud-sim: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        a: ServeArgs,
    }

    fn args(v: &[&str]) -> ServeArgs {
        T::try_parse_from(std::iter::once("t").chain(v.iter().copied()))
            .unwrap()
            .a
    }

    #[test]
    fn overrides_replace_stored_values() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), DEFAULT_REGION).unwrap();
        assert_eq!(s.state.secret_of("AKSIM"), Some("SKSIM"));
        let a = args(&[
            "--state",
            "x",
            "--access-key",
            "A1",
            "--secret-key",
            "S1",
            "--access-key",
            "A2",
            "--secret-key",
            "S2",
            "--attach-delay-ms",
            "7",
            "--region",
            "us-east-2",
        ]);
        apply_args(&mut s, &a).unwrap();
        assert_eq!(s.state.secret_of("A2"), Some("S2"));
        assert_eq!(s.state.secret_of("AKSIM"), None);
        assert_eq!(s.state.delays.attach_ms, 7);
        assert_eq!(s.state.delays.create_ms, 200);
        assert_eq!(s.state.subregions()[0], "us-east-2a");
    }

    #[test]
    fn bad_arguments_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), DEFAULT_REGION).unwrap();
        let a = args(&["--state", "x", "--access-key", "A1"]);
        assert_eq!(
            crate::error::exit_code(&apply_args(&mut s, &a).unwrap_err()),
            2
        );
        s.state.add_vm("h", "eu-west-2a", None, 0);
        let a = args(&["--state", "x", "--region", "us-east-2"]);
        assert!(apply_args(&mut s, &a).is_err());
        let e = serve(args(&[
            "--state",
            dir.path().to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
    }
}
