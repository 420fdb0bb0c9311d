//! The HTTP side of the simulated cloud: routes, the transition ticker and host effects.
//!
//! Invariants:
//! - One mutex guards the whole simulated cloud ([`Sim`]); a request holds it from signature
//!   check to saved state, so concurrent calls are serialised exactly like one API endpoint
//!   with a consistent database. Host effects (loop devices: slow, blocking) run outside it, on
//!   blocking threads, and their volume is marked busy meanwhile so no transition of that
//!   volume overlaps them.
//! - Every reader first applies due transitions (`settle`), so a read never shows a state
//!   older than the delays imply; the ticker does the same every [`TICK`] and starts the host
//!   effects.
//! - A failed host effect leaves the link where it was (`attaching` / `detaching`) and is
//!   retried after [`EFFECT_RETRY_MS`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::api;
use super::clock::now_ms;
use super::errors::ApiError;
use super::faults::{self, FaultRule, Installed};
use super::sigv4;
use super::state::{DelayUpdate, Effect, Store};

/// How often due transitions are applied in the background.
pub const TICK: Duration = Duration::from_millis(10);
/// Pause before a failed host effect is tried again.
pub const EFFECT_RETRY_MS: u64 = 1000;

/// Per-call counters (`GET /_sim/stats`). Kept in memory: a restart resets them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// API calls received (signed or not).
    pub total: u64,
    /// Per call name.
    pub calls: BTreeMap<String, CallStats>,
    /// Calls refused for authentication.
    pub auth_failures: u64,
    /// Calls answered by an injected fault.
    pub injected: u64,
}

/// Counters of one call name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStats {
    /// Answered 2xx.
    pub ok: u64,
    /// Answered with an error.
    pub failed: u64,
}

/// The simulated cloud behind the mutex.
#[derive(Debug)]
pub struct Sim {
    /// Persistent state.
    pub store: Store,
    /// Volumes whose host effect is running.
    busy: HashSet<String>,
    /// Volumes whose host effect failed, with the instant of the next try.
    retry_at: HashMap<String, u64>,
}

impl Sim {
    /// Wraps a loaded store.
    pub fn new(store: Store) -> Self {
        Sim {
            store,
            busy: HashSet::new(),
            retry_at: HashMap::new(),
        }
    }

    /// Applies due transitions, saves, removes vanished volumes' files; returns the host
    /// effects now due (their volumes are *not* yet marked busy).
    fn settle(&mut self, now: u64) -> Vec<Effect> {
        self.retry_at.retain(|_, at| *at > now);
        let mut blocked = self.busy.clone();
        blocked.extend(self.retry_at.keys().cloned());
        let adv = self.store.state.advance(now, &blocked);
        if adv.changed {
            self.store.dirty = true;
            self.save_or_log();
        }
        if !self.store.dirty {
            for id in &adv.gone {
                if let Err(e) = self.store.remove_volume_file(id) {
                    tracing::warn!("{e:#}");
                }
            }
        }
        adv.effects
    }

    fn save_or_log(&mut self) {
        if let Err(e) = self.store.save() {
            tracing::error!("saving simulator state: {e:#}");
        }
    }
}

/// Shared by every handler.
pub struct Shared {
    sim: Mutex<Sim>,
    stats: Mutex<Stats>,
    /// Notified by `POST /_sim/shutdown`.
    pub shutdown: tokio::sync::Notify,
}

impl Shared {
    /// Wraps the simulated cloud.
    pub fn new(sim: Sim) -> Arc<Self> {
        Arc::new(Shared {
            sim: Mutex::new(sim),
            stats: Mutex::new(Stats::default()),
            shutdown: tokio::sync::Notify::new(),
        })
    }

    /// Locks the cloud and applies due transitions.
    fn settled(&self) -> MutexGuard<'_, Sim> {
        let mut sim = lock(&self.sim);
        sim.settle(now_ms());
        sim
    }
}

/// Locks a mutex, tolerating poisoning (a panicking handler must not take the cloud down).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// All routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/{call}", axum::routing::any(api_call))
        .route("/_meta/{vm}/latest/meta-data", get(metadata_root))
        .route("/_meta/{vm}/latest/meta-data/", get(metadata_root))
        .route("/_meta/{vm}/latest/meta-data/{*path}", get(metadata))
        .route("/_sim/vms", post(add_vm).get(list_vms))
        .route(
            "/_sim/faults",
            post(set_faults).get(get_faults).delete(clear_faults),
        )
        .route("/_sim/delays", post(set_delays).get(get_delays))
        .route("/_sim/stats", get(get_stats).delete(reset_stats))
        .route("/_sim/state", get(get_state))
        .route("/_sim/shutdown", post(shutdown))
        .fallback(not_found)
        .with_state(shared)
}

fn new_request_id() -> String {
    use rand::Rng as _;
    let mut r = rand::rng();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        r.random::<u32>(),
        r.random::<u16>(),
        r.random::<u16>() & 0x0fff | 0x4000,
        r.random::<u16>() & 0x3fff | 0x8000,
        r.random::<u64>() & 0xffff_ffff_ffff
    )
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

async fn api_call(
    AxState(sh): AxState<Arc<Shared>>,
    Path(call): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = new_request_id();
    let outcome = handle_call(&sh, &call, &method, &uri, &headers, &body);
    {
        let mut st = lock(&sh.stats);
        st.total += 1;
        let c = st.calls.entry(call.clone()).or_default();
        match &outcome {
            Ok(_) => c.ok += 1,
            Err((_, failure)) => {
                c.failed += 1;
                match failure {
                    Failure::Auth => st.auth_failures += 1,
                    Failure::Injected => st.injected += 1,
                    Failure::Call => {}
                }
            }
        }
    }
    match outcome {
        Ok(mut v) => {
            if let Value::Object(o) = &mut v {
                o.insert("ResponseContext".into(), json!({ "RequestId": request_id }));
            }
            tracing::debug!("{call}: ok");
            (StatusCode::OK, Json(v)).into_response()
        }
        Err((e, _)) => {
            tracing::info!("{call}: {e}");
            (status(e.status), Json(e.body(&request_id))).into_response()
        }
    }
}

/// Why a call failed (for the counters).
enum Failure {
    Auth,
    Injected,
    Call,
}

fn handle_call(
    sh: &Shared,
    call: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, (ApiError, Failure)> {
    if method != Method::POST {
        return Err((
            ApiError::new(
                405,
                "2",
                "AccessDenied",
                format!("ErrorHttpMethodNotAllowed: {method} (the API takes POST)"),
            ),
            Failure::Call,
        ));
    }
    let now = now_ms();
    let mut sim = lock(&sh.sim);
    sim.settle(now);
    let received = sigv4::Received {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query(),
        headers,
        body,
    };
    let state = &sim.store.state;
    sigv4::verify(
        &received,
        |ak| state.secret_of(ak).map(str::to_string),
        &state.region,
        now,
    )
    .map_err(|e| (e, Failure::Auth))?;
    let body = api::body_json(body).map_err(|e| (e, Failure::Call))?;
    let injected = if sim.store.state.faults.is_empty() {
        None
    } else {
        sim.store.dirty = true;
        faults::on_call(&mut sim.store.state.faults, call, &body)
    };
    let result = match &injected {
        Some(inj) if !inj.apply => Err((inj.error.clone(), Failure::Injected)),
        _ => api::dispatch(&mut sim.store, call, &body, now).map_err(|e| (e, Failure::Call)),
    };
    if let Err(e) = sim.store.save() {
        return Err((
            ApiError::internal(format!("saving state: {e:#}")),
            Failure::Call,
        ));
    }
    match injected {
        Some(inj) if inj.apply => Err((inj.error, Failure::Injected)),
        _ => result,
    }
}

/// Runs the background ticker forever: applies due transitions and starts host effects.
pub async fn ticker(sh: Arc<Shared>) {
    let mut iv = tokio::time::interval(TICK);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        iv.tick().await;
        let started: Vec<(Effect, PathBuf)> = {
            let mut sim = lock(&sh.sim);
            let effects = sim.settle(now_ms());
            effects
                .into_iter()
                .map(|e| {
                    sim.busy.insert(e.volume_id().to_string());
                    let file = sim.store.volume_file(e.volume_id());
                    (e, file)
                })
                .collect()
        };
        for (effect, file) in started {
            let sh = sh.clone();
            tokio::spawn(async move {
                let e2 = effect.clone();
                let res = tokio::task::spawn_blocking(move || run_effect(&e2, &file))
                    .await
                    .unwrap_or_else(|j| Err(anyhow::anyhow!("host effect panicked: {j}")));
                finish_effect(&sh, &effect, res);
            });
        }
    }
}

fn run_effect(e: &Effect, file: &std::path::Path) -> anyhow::Result<()> {
    use crate::sim::rk::hotplug;
    match e {
        Effect::Attach {
            device, host_root, ..
        } if hotplug::is_qemu_host(host_root) => hotplug::attach(host_root, device, file),
        Effect::Detach {
            device, host_root, ..
        } if hotplug::is_qemu_host(host_root) => hotplug::detach(host_root, device),
        Effect::Attach {
            device, host_root, ..
        } => crate::sim::hostview::attach_volume(host_root, device, file),
        Effect::Detach {
            device, host_root, ..
        } => crate::sim::hostview::detach_volume(host_root, device, file),
    }
}

fn finish_effect(sh: &Shared, e: &Effect, res: anyhow::Result<()>) {
    let mut sim = lock(&sh.sim);
    let id = e.volume_id().to_string();
    sim.busy.remove(&id);
    match res {
        Ok(()) => {
            let changed = match e {
                Effect::Attach {
                    volume_id,
                    vm_id,
                    device,
                    ..
                } => sim.store.state.complete_attach(volume_id, vm_id, device),
                Effect::Detach {
                    volume_id,
                    vm_id,
                    device,
                    ..
                } => sim.store.state.complete_detach(volume_id, vm_id, device),
            };
            if changed {
                sim.store.dirty = true;
                sim.save_or_log();
            }
        }
        Err(err) => {
            let what = match e {
                Effect::Attach { vm_id, device, .. } => {
                    format!("attaching {id} to {vm_id} as {device}")
                }
                Effect::Detach { vm_id, device, .. } => {
                    format!("detaching {id} from {vm_id} ({device})")
                }
            };
            tracing::warn!(
                "{what} on the simulated host failed (retrying in {EFFECT_RETRY_MS} ms): {err:#}"
            );
            sim.retry_at.insert(id, now_ms() + EFFECT_RETRY_MS);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata

async fn metadata_root(AxState(sh): AxState<Arc<Shared>>, Path(vm): Path<String>) -> Response {
    metadata_answer(&sh, &vm, "")
}

async fn metadata(
    AxState(sh): AxState<Arc<Shared>>,
    Path((vm, path)): Path<(String, String)>,
) -> Response {
    metadata_answer(&sh, &vm, &path)
}

fn metadata_answer(sh: &Shared, vm_id: &str, path: &str) -> Response {
    let sim = sh.settled();
    let Some(vm) = sim.store.state.vms.get(vm_id) else {
        return (StatusCode::NOT_FOUND, format!("no simulated VM {vm_id}\n")).into_response();
    };
    let attached: Vec<String> = {
        let mut l: Vec<_> = sim
            .store
            .state
            .links_of(vm_id)
            .filter(|(_, l)| {
                l.state == super::state::LinkState::Attached
                    && l.device != super::state::ROOT_DEVICE
            })
            .map(|(_, l)| (l.linked_ms, l.device.clone()))
            .collect();
        l.sort();
        l.into_iter().map(|(_, d)| d).collect()
    };
    let text = match path.trim_end_matches('/') {
        "" => Some("block-device-mapping/\ninstance-id\nplacement/".to_string()),
        "instance-id" => Some(vm.id.clone()),
        "placement" => Some("availability-zone".into()),
        "placement/availability-zone" => Some(vm.subregion.clone()),
        "block-device-mapping" => {
            let mut names = vec!["ami".to_string(), "root".to_string()];
            names.extend((1..=attached.len()).map(|i| format!("ebs{i}")));
            Some(names.join("\n"))
        }
        "block-device-mapping/ami" | "block-device-mapping/root" => {
            Some(super::state::ROOT_DEVICE.to_string())
        }
        other => other
            .strip_prefix("block-device-mapping/ebs")
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| attached.get(i).cloned()),
    };
    match text {
        Some(t) => (StatusCode::OK, t).into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Admin API

fn admin_error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({ "error": msg.into() }))).into_response()
}

fn parse_admin<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("bad request body: {e}"))
}

/// `POST /_sim/vms` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddVm {
    /// Unique name (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// Subregion (`eu-west-2a`).
    pub subregion: String,
    /// Host root directory (absolute), or null for an API-only VM.
    #[serde(default)]
    pub root: Option<PathBuf>,
}

/// One entry of `GET /_sim/vms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// `i-…`.
    #[serde(rename = "VmId")]
    pub vm_id: String,
    /// Name.
    pub name: String,
    /// Subregion.
    pub subregion: String,
    /// Host root directory.
    pub root: Option<PathBuf>,
    /// Root volume id.
    pub root_volume: String,
}

async fn add_vm(AxState(sh): AxState<Arc<Shared>>, body: Bytes) -> Response {
    let req: AddVm = match parse_admin(&body) {
        Ok(r) => r,
        Err(msg) => return admin_error(StatusCode::BAD_REQUEST, msg),
    };
    let name_ok = !req.name.is_empty()
        && req
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !name_ok {
        return admin_error(
            StatusCode::BAD_REQUEST,
            format!(
                "VM name '{}' must be letters, digits, '.', '_' or '-'",
                req.name
            ),
        );
    }
    if req.root.as_ref().is_some_and(|r| !r.is_absolute()) {
        return admin_error(StatusCode::BAD_REQUEST, "root must be an absolute path");
    }
    let mut sim = sh.settled();
    if !sim.store.state.subregions().contains(&req.subregion) {
        let known = sim.store.state.subregions().join(", ");
        return admin_error(
            StatusCode::BAD_REQUEST,
            format!("unknown subregion '{}' (known: {known})", req.subregion),
        );
    }
    if let Some(vm) = sim.store.state.vms.values().find(|v| v.name == req.name) {
        if vm.subregion == req.subregion && vm.root == req.root {
            return Json(json!({ "VmId": vm.id })).into_response();
        }
        return admin_error(
            StatusCode::CONFLICT,
            format!(
                "a VM named '{}' already exists ({}) with another subregion or root",
                req.name, vm.id
            ),
        );
    }
    let id = sim
        .store
        .state
        .add_vm(&req.name, &req.subregion, req.root.clone(), now_ms());
    sim.store.dirty = true;
    if let Err(e) = sim.store.save() {
        return admin_error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"));
    }
    tracing::info!("registered VM {id} '{}' in {}", req.name, req.subregion);
    Json(json!({ "VmId": id })).into_response()
}

async fn list_vms(AxState(sh): AxState<Arc<Shared>>) -> Response {
    let sim = sh.settled();
    let vms: Vec<VmInfo> = sim
        .store
        .state
        .vms
        .values()
        .map(|v| VmInfo {
            vm_id: v.id.clone(),
            name: v.name.clone(),
            subregion: v.subregion.clone(),
            root: v.root.clone(),
            root_volume: v.root_volume.clone(),
        })
        .collect();
    Json(json!({ "vms": vms })).into_response()
}

/// `POST /_sim/faults` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSet {
    /// The rules, replacing the installed ones.
    pub rules: Vec<FaultRule>,
}

async fn set_faults(AxState(sh): AxState<Arc<Shared>>, body: Bytes) -> Response {
    let req: FaultSet = match parse_admin(&body) {
        Ok(r) => r,
        Err(msg) => return admin_error(StatusCode::BAD_REQUEST, msg),
    };
    if let Err(e) = faults::validate(&req.rules) {
        return admin_error(StatusCode::BAD_REQUEST, e);
    }
    let n = req.rules.len();
    let mut sim = sh.settled();
    sim.store.state.faults = req
        .rules
        .into_iter()
        .map(|rule| Installed { rule, seen: 0 })
        .collect();
    sim.store.dirty = true;
    if let Err(e) = sim.store.save() {
        return admin_error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"));
    }
    Json(json!({ "installed": n })).into_response()
}

async fn get_faults(AxState(sh): AxState<Arc<Shared>>) -> Response {
    let sim = sh.settled();
    Json(json!({ "faults": sim.store.state.faults })).into_response()
}

async fn clear_faults(AxState(sh): AxState<Arc<Shared>>) -> Response {
    let mut sim = sh.settled();
    sim.store.state.faults.clear();
    sim.store.dirty = true;
    if let Err(e) = sim.store.save() {
        return admin_error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"));
    }
    Json(json!({ "installed": 0 })).into_response()
}

async fn set_delays(AxState(sh): AxState<Arc<Shared>>, body: Bytes) -> Response {
    let req: DelayUpdate = match parse_admin(&body) {
        Ok(r) => r,
        Err(msg) => return admin_error(StatusCode::BAD_REQUEST, msg),
    };
    let mut sim = sh.settled();
    sim.store.state.delays.update(&req);
    sim.store.dirty = true;
    if let Err(e) = sim.store.save() {
        return admin_error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"));
    }
    Json(sim.store.state.delays).into_response()
}

async fn get_delays(AxState(sh): AxState<Arc<Shared>>) -> Response {
    Json(sh.settled().store.state.delays).into_response()
}

async fn get_stats(AxState(sh): AxState<Arc<Shared>>) -> Response {
    Json(lock(&sh.stats).clone()).into_response()
}

async fn reset_stats(AxState(sh): AxState<Arc<Shared>>) -> Response {
    *lock(&sh.stats) = Stats::default();
    Json(Stats::default()).into_response()
}

async fn get_state(AxState(sh): AxState<Arc<Shared>>) -> Response {
    let sim = sh.settled();
    let mut state = sim.store.state.clone();
    for k in &mut state.keys {
        k.secret_key = "(redacted)".into();
    }
    Json(state).into_response()
}

async fn shutdown(AxState(sh): AxState<Arc<Shared>>) -> Response {
    tracing::info!("shutdown requested through the admin API");
    sh.shutdown.notify_one();
    Json(json!({})).into_response()
}

async fn not_found(uri: Uri) -> Response {
    admin_error(
        StatusCode::NOT_FOUND,
        format!(
            "no route {} (the API is POST /api/v1/<Call>, metadata /_meta/<VmId>/latest/meta-data/…, admin /_sim/…)",
            uri.path()
        ),
    )
}
