//! The simulated Outscale calls: request parsing, validation and the state changes, answering
//! the `outscale_api` response models (so the SDK always parses what we send).
//!
//! Invariants:
//! - A call either fails before changing anything or succeeds completely: every check runs
//!   before the first mutation (the one exception, a volume file that cannot be created, fails
//!   before the record is inserted).
//! - Requests are parsed strictly: a parameter the call does not know — or one this simulator
//!   does not implement, such as an unsupported filter — is refused (`InvalidParameter`) rather
//!   than ignored, because an ignored filter silently widens what a caller acts on.
//! - Filters: values within one filter are alternatives; different filters must all match; an
//!   empty list is treated as absent. Results are in creation order; `ResultsPerPage` +
//!   `NextPageToken` paginate, and without `ResultsPerPage` everything is returned.
//! - `ClientToken`: while the volume a token created exists (in any state), the same token
//!   with the same parameters answers that volume, and with other parameters a 409
//!   `ResourceConflict` (IdempotentParameterMismatch); once the volume is gone the token is
//!   free again. Tokens live on the volume record, so they survive restarts with it.
//! - Mutations set `store.dirty`; the caller saves.

use std::collections::BTreeMap;

use outscale_api::models;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::clock::iso8601;
use super::errors::ApiError;
use super::state::{Link, LinkState, Phase, Store, Volume, MAX_VOLUMES_PER_VM, ROOT_DEVICE};

/// The calls this simulator answers.
pub const CALLS: &[&str] = &[
    "CreateTags",
    "CreateVolume",
    "DeleteTags",
    "DeleteVolume",
    "LinkVolume",
    "ReadSubregions",
    "ReadTags",
    "ReadVms",
    "ReadVolumes",
    "UnlinkVolume",
];

/// Largest volume, GiB.
pub const MAX_SIZE_GIB: i64 = 14_901;
/// Largest io1 IOPS per volume.
pub const MAX_IOPS: i64 = 13_000;
/// Smallest io1 IOPS per volume.
pub const MIN_IOPS: i64 = 100;
/// Largest io1 IOPS per GiB.
pub const MAX_IOPS_PER_GIB: i64 = 300;
/// Tags per resource.
pub const MAX_TAGS: usize = 50;

/// Runs one call on the store at instant `now`; answers the response JSON without its
/// `ResponseContext` (the server adds it).
pub fn dispatch(store: &mut Store, call: &str, body: &Value, now: u64) -> Result<Value, ApiError> {
    match call {
        "CreateVolume" => create_volume(store, parse(body)?, now),
        "ReadVolumes" => read_volumes(store, parse(body)?),
        "DeleteVolume" => delete_volume(store, parse(body)?, now),
        "LinkVolume" => link_volume(store, parse(body)?, now),
        "UnlinkVolume" => unlink_volume(store, parse(body)?, now),
        "CreateTags" => create_tags(store, parse(body)?),
        "DeleteTags" => delete_tags(store, parse(body)?),
        "ReadTags" => read_tags(store, parse(body)?),
        "ReadVms" => read_vms(store, parse(body)?),
        "ReadSubregions" => read_subregions(store, parse(body)?),
        other => Err(ApiError::new(
            400,
            "0",
            "DefaultError",
            format!(
                "the call '{other}' is unknown or not simulated by bsud-sim (simulated: {})",
                CALLS.join(", ")
            ),
        )),
    }
}

/// Parses the request body (`null` or empty = no parameters) into the HTTP-level JSON value.
pub fn body_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Value::Object(Default::default()));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Null) => Ok(Value::Object(Default::default())),
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(ApiError::invalid_value(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::invalid_value(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

fn parse<T: DeserializeOwned>(body: &Value) -> Result<T, ApiError> {
    serde_json::from_value(body.clone()).map_err(|e| {
        let m = e.to_string();
        if m.starts_with("unknown field") {
            ApiError::invalid_parameter(format!(
                "{m} (not a parameter of this call, or not simulated by bsud-sim)"
            ))
        } else if m.starts_with("missing field") {
            ApiError::new(400, "7000", "MissingParameter", m)
        } else {
            ApiError::invalid_value(m)
        }
    })
}

fn required<'a, T>(v: &'a Option<T>, name: &str) -> Result<&'a T, ApiError> {
    v.as_ref().ok_or_else(|| ApiError::missing(name))
}

fn no_dry_run(d: Option<bool>) -> Result<(), ApiError> {
    if d == Some(true) {
        return Err(ApiError::not_supported("DryRun is not simulated"));
    }
    Ok(())
}

fn is_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|hex| {
            hex.len() == 8
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

fn check_volume_id<'a>(store: &'a Store, id: &str) -> Result<&'a Volume, ApiError> {
    if !is_id(id, "vol") {
        return Err(ApiError::malformed_id(id, "volume"));
    }
    store
        .state
        .volumes
        .get(id)
        .ok_or_else(|| ApiError::no_such_volume(id))
}

fn check_vm_id<'a>(store: &'a Store, id: &str) -> Result<&'a super::state::Vm, ApiError> {
    if !is_id(id, "i") {
        return Err(ApiError::malformed_id(id, "VM"));
    }
    store
        .state
        .vms
        .get(id)
        .ok_or_else(|| ApiError::no_such_vm(id))
}

/// Whether LinkVolume accepts this device name: `/dev/xvd[b-z]`, `/dev/xvd[b-z][a-z]`,
/// `/dev/sd[b-z]`, `/dev/sd[b-z][a-z]`, and `/dev/xvda[a-z]` (which the CSI driver uses).
pub fn valid_device(d: &str) -> bool {
    let (xvd, rest) = match d.strip_prefix("/dev/xvd") {
        Some(r) => (true, r),
        None => match d.strip_prefix("/dev/sd") {
            Some(r) => (false, r),
            None => return false,
        },
    };
    let first_ok = |c: u8| (b'b'..=b'z').contains(&c);
    match *rest.as_bytes() {
        [a] => first_ok(a),
        [a, b] => (first_ok(a) || (xvd && a == b'a')) && b.is_ascii_lowercase(),
        _ => false,
    }
}

/// The guest-side slot of a device name: `/dev/xvdc` and `/dev/sdc` both show up as the disk
/// with serial `sdc`, so they are the same slot on one VM.
fn device_slot(d: &str) -> String {
    let tail = d
        .strip_prefix("/dev/xvd")
        .or_else(|| d.strip_prefix("/dev/sd"))
        .unwrap_or(d);
    format!("sd{tail}")
}

fn any_of<T>(filter: &Option<Vec<T>>, pred: impl Fn(&T) -> bool) -> bool {
    match filter {
        Some(v) if !v.is_empty() => v.iter().any(pred),
        _ => true,
    }
}

/// `Tags` filter entries `KEY=VALUE`, parsed once.
fn tag_pairs(filter: &Option<Vec<String>>) -> Result<Option<Vec<(String, String)>>, ApiError> {
    let Some(list) = filter else { return Ok(None) };
    list.iter()
        .map(|t| {
            t.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    ApiError::invalid_value(format!(
                        "tag filter '{t}' is not of the form KEY=VALUE"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn tags_match(
    tags: &BTreeMap<String, String>,
    keys: &Option<Vec<String>>,
    values: &Option<Vec<String>>,
    pairs: &Option<Vec<(String, String)>>,
) -> bool {
    any_of(keys, |k| tags.contains_key(k))
        && any_of(values, |v| tags.values().any(|x| x == v))
        && any_of(pairs, |(k, v)| tags.get(k) == Some(v))
}

fn tag_models(tags: &BTreeMap<String, String>) -> Vec<models::ResourceTag> {
    tags.iter()
        .map(|(k, v)| models::ResourceTag::new(k.clone(), v.clone()))
        .collect()
}

const PAGE_PREFIX: &str = "bsud-sim-page-";

fn paginate<T>(
    items: Vec<T>,
    per_page: Option<i64>,
    token: &Option<String>,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let start = match token {
        None => 0,
        Some(t) => t
            .strip_prefix(PAGE_PREFIX)
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| ApiError::invalid_value(format!("invalid NextPageToken '{t}'")))?,
    };
    let Some(per_page) = per_page else {
        return Ok((items.into_iter().skip(start).collect(), None));
    };
    if !(1..=1000).contains(&per_page) {
        return Err(ApiError::invalid_value(format!(
            "ResultsPerPage must be between 1 and 1000, not {per_page}"
        )));
    }
    let total = items.len();
    let end = start.saturating_add(per_page as usize);
    let page = items
        .into_iter()
        .skip(start)
        .take(per_page as usize)
        .collect();
    let next = (end < total).then(|| format!("{PAGE_PREFIX}{end}"));
    Ok((page, next))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::internal(format!("encoding the answer: {e}")))
}

/// The API view of a volume.
pub fn volume_model(v: &Volume) -> models::Volume {
    let iops = match v.volume_type.as_str() {
        "io1" => v.iops,
        "gp2" => Some((3 * v.size_gib).clamp(100, 16_000)),
        _ => None,
    };
    models::Volume {
        client_token: v.client_token.clone(),
        creation_date: Some(iso8601(v.created_ms)),
        iops: iops.map(|i| i as i32),
        linked_volumes: Some(
            v.link
                .iter()
                .map(|l| models::LinkedVolume {
                    delete_on_vm_deletion: Some(l.delete_on_vm_deletion),
                    device_name: Some(l.device.clone()),
                    state: Some(l.state.as_str().into()),
                    vm_id: Some(l.vm_id.clone()),
                    volume_id: Some(v.id.clone()),
                })
                .collect(),
        ),
        size: Some(v.size_gib as i32),
        snapshot_id: None,
        state: Some(v.state_str().into()),
        subregion_name: Some(v.subregion.clone()),
        tags: Some(tag_models(&v.tags)),
        task_id: None,
        volume_id: Some(v.id.clone()),
        volume_type: Some(v.volume_type.clone()),
    }
}

// ---------------------------------------------------------------------------------------------
// CreateVolume

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateVolumeReq {
    client_token: Option<String>,
    dry_run: Option<bool>,
    iops: Option<i64>,
    size: Option<i64>,
    snapshot_id: Option<String>,
    subregion_name: Option<String>,
    volume_type: Option<String>,
}

fn create_volume(store: &mut Store, r: CreateVolumeReq, now: u64) -> Result<Value, ApiError> {
    no_dry_run(r.dry_run)?;
    if r.snapshot_id.is_some() {
        return Err(ApiError::not_supported(
            "creating a volume from a snapshot is not simulated",
        ));
    }
    let subregion = required(&r.subregion_name, "SubregionName")?.clone();
    if !store.state.subregions().contains(&subregion) {
        return Err(ApiError::invalid_value(format!(
            "unknown SubregionName '{subregion}' (this region has {})",
            store.state.subregions().join(", ")
        )));
    }
    let volume_type = r.volume_type.clone().unwrap_or_else(|| "standard".into());
    if !["standard", "gp2", "io1"].contains(&volume_type.as_str()) {
        return Err(ApiError::invalid_value(format!(
            "VolumeType '{volume_type}' is not one of standard, gp2, io1"
        )));
    }
    let size = *required(&r.size, "Size")?;
    if !(1..=MAX_SIZE_GIB).contains(&size) {
        return Err(ApiError::invalid_value(format!(
            "Size {size} GiB is outside 1..={MAX_SIZE_GIB}"
        )));
    }
    let iops = match (volume_type.as_str(), r.iops) {
        ("io1", None) => return Err(ApiError::missing("Iops")),
        ("io1", Some(i)) => {
            if !(MIN_IOPS..=MAX_IOPS).contains(&i) {
                return Err(ApiError::invalid_value(format!(
                    "Iops {i} is outside {MIN_IOPS}..={MAX_IOPS}"
                )));
            }
            if i > size * MAX_IOPS_PER_GIB {
                return Err(ApiError::invalid_value(format!(
                    "Iops {i} exceeds {MAX_IOPS_PER_GIB} per GiB for a {size} GiB volume"
                )));
            }
            Some(i as u32)
        }
        (t, Some(_)) => {
            return Err(ApiError::invalid_value(format!(
                "Iops can only be set for io1 volumes, not {t}"
            )))
        }
        (_, None) => None,
    };
    let size = size as u32;
    if let Some(token) = &r.client_token {
        if token.is_empty() || token.len() > 64 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::invalid_value(
                "ClientToken must be 1 to 64 printable ASCII characters",
            ));
        }
        let earlier = store
            .state
            .volumes
            .values()
            .find(|v| !v.root && v.client_token.as_deref() == Some(token));
        if let Some(v) = earlier {
            let same = v.size_gib == size
                && v.volume_type == volume_type
                && v.iops == iops
                && v.subregion == subregion;
            if !same {
                return Err(ApiError::conflict(format!(
                    "ClientToken '{token}' was already used for volume {} with different parameters (IdempotentParameterMismatch)",
                    v.id
                )));
            }
            return to_json(&models::CreateVolumeResponse {
                response_context: None,
                volume: Some(Box::new(volume_model(v))),
            });
        }
    }
    let id = store.state.new_id("vol");
    store
        .create_volume_file(&id, size)
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    let vol = Volume {
        id: id.clone(),
        size_gib: size,
        volume_type,
        iops,
        subregion,
        client_token: r.client_token,
        created_ms: now,
        phase: Phase::Creating {
            due_ms: now + store.state.delays.create_ms,
        },
        tags: BTreeMap::new(),
        link: None,
        root: false,
    };
    let model = volume_model(&vol);
    store.state.volumes.insert(id, vol);
    store.dirty = true;
    to_json(&models::CreateVolumeResponse {
        response_context: None,
        volume: Some(Box::new(model)),
    })
}

// ---------------------------------------------------------------------------------------------
// ReadVolumes

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct FiltersVolume {
    client_tokens: Option<Vec<String>>,
    link_volume_delete_on_vm_deletion: Option<bool>,
    link_volume_device_names: Option<Vec<String>>,
    link_volume_link_states: Option<Vec<String>>,
    link_volume_vm_ids: Option<Vec<String>>,
    snapshot_ids: Option<Vec<String>>,
    subregion_names: Option<Vec<String>>,
    tag_keys: Option<Vec<String>>,
    tag_values: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    volume_ids: Option<Vec<String>>,
    volume_sizes: Option<Vec<i64>>,
    volume_states: Option<Vec<String>>,
    volume_types: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ReadVolumesReq {
    dry_run: Option<bool>,
    filters: Option<FiltersVolume>,
    next_page_token: Option<String>,
    results_per_page: Option<i64>,
}

fn read_volumes(store: &mut Store, r: ReadVolumesReq) -> Result<Value, ApiError> {
    no_dry_run(r.dry_run)?;
    let f = r.filters.unwrap_or_default();
    let pairs = tag_pairs(&f.tags)?;
    let link_field =
        |v: &Volume, get: &dyn Fn(&Link) -> String, filter: &Option<Vec<String>>| match filter {
            Some(list) if !list.is_empty() => {
                v.link.as_ref().is_some_and(|l| list.contains(&get(l)))
            }
            _ => true,
        };
    let mut found: Vec<&Volume> = store
        .state
        .volumes
        .values()
        .filter(|v| {
            any_of(&f.volume_ids, |id| *id == v.id)
                && any_of(&f.client_tokens, |t| v.client_token.as_deref() == Some(t))
                && any_of(&f.snapshot_ids, |_| false)
                && any_of(&f.subregion_names, |s| *s == v.subregion)
                && any_of(&f.volume_states, |s| s == v.state_str())
                && any_of(&f.volume_types, |t| *t == v.volume_type)
                && any_of(&f.volume_sizes, |s| *s == i64::from(v.size_gib))
                && tags_match(&v.tags, &f.tag_keys, &f.tag_values, &pairs)
                && link_field(v, &|l| l.vm_id.clone(), &f.link_volume_vm_ids)
                && link_field(v, &|l| l.device.clone(), &f.link_volume_device_names)
                && link_field(v, &|l| l.state.as_str().into(), &f.link_volume_link_states)
                && f.link_volume_delete_on_vm_deletion.is_none_or(|d| {
                    v.link
                        .as_ref()
                        .is_some_and(|l| l.delete_on_vm_deletion == d)
                })
        })
        .collect();
    found.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
    let (page, next) = paginate(found, r.results_per_page, &r.next_page_token)?;
    to_json(&models::ReadVolumesResponse {
        next_page_token: next,
        response_context: None,
        volumes: Some(page.into_iter().map(volume_model).collect()),
    })
}

// ---------------------------------------------------------------------------------------------
// DeleteVolume

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct VolumeIdReq {
    dry_run: Option<bool>,
    volume_id: Option<String>,
}

fn delete_volume(store: &mut Store, r: VolumeIdReq, now: u64) -> Result<Value, ApiError> {
    no_dry_run(r.dry_run)?;
    let id = required(&r.volume_id, "VolumeId")?;
    let v = check_volume_id(store, id)?;
    if v.root {
        return Err(ApiError::incorrect_state(format!(
            "volume {id} is the root volume of {}; it is deleted with its VM",
            v.link.as_ref().map(|l| l.vm_id.as_str()).unwrap_or("?")
        )));
    }
    let state = v.state_str();
    if state != "available" {
        return Err(ApiError::incorrect_state(format!(
            "volume {id} is {state}; only an available volume can be deleted"
        )));
    }
    let due_ms = now + store.state.delays.delete_ms;
    if let Some(v) = store.state.volumes.get_mut(id.as_str()) {
        v.phase = Phase::Deleting { due_ms };
    }
    store.dirty = true;
    to_json(&models::DeleteVolumeResponse::new())
}

// ---------------------------------------------------------------------------------------------
// LinkVolume / UnlinkVolume

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct LinkVolumeReq {
    device_name: Option<String>,
    dry_run: Option<bool>,
    vm_id: Option<String>,
    volume_id: Option<String>,
}

fn link_volume(store: &mut Store, r: LinkVolumeReq, now: u64) -> Result<Value, ApiError> {
    no_dry_run(r.dry_run)?;
    let device = required(&r.device_name, "DeviceName")?;
    let vm_id = required(&r.vm_id, "VmId")?;
    let volume_id = required(&r.volume_id, "VolumeId")?;
    let vm = check_vm_id(store, vm_id)?;
    let vol = check_volume_id(store, volume_id)?;
    if !valid_device(device) {
        return Err(ApiError::invalid_value(format!(
            "DeviceName '{device}' is invalid (expected /dev/xvdX, /dev/xvdXX, /dev/sdX or /dev/sdXX with X in b-z; {ROOT_DEVICE} is the root's)"
        )));
    }
    let state = vol.state_str();
    if state != "available" {
        let where_ = vol
            .link
            .as_ref()
            .map(|l| format!(" ({} to {} as {})", l.state.as_str(), l.vm_id, l.device))
            .unwrap_or_default();
        return Err(ApiError::incorrect_state(format!(
            "volume {volume_id} is {state}{where_}; only an available volume can be linked"
        )));
    }
    if vol.subregion != vm.subregion {
        return Err(ApiError::invalid_value(format!(
            "volume {volume_id} is in {} but VM {vm_id} is in {}",
            vol.subregion, vm.subregion
        )));
    }
    let slot = device_slot(device);
    let links: Vec<(&str, &Link)> = store.state.links_of(vm_id).collect();
    if let Some((other, l)) = links.iter().find(|(_, l)| device_slot(&l.device) == slot) {
        return Err(ApiError::conflict(format!(
            "device {device} of VM {vm_id} is already used by volume {other} ({} as {})",
            l.state.as_str(),
            l.device
        )));
    }
    if links.len() >= MAX_VOLUMES_PER_VM {
        return Err(ApiError::too_many(format!(
            "VM {vm_id} already has {} volumes linked (at most {MAX_VOLUMES_PER_VM}, root included)",
            links.len()
        )));
    }
    let link = Link {
        vm_id: vm_id.clone(),
        device: device.clone(),
        state: LinkState::Attaching,
        linked_ms: now,
        due_ms: now + store.state.delays.attach_ms,
        host_attached: false,
        forced: false,
        delete_on_vm_deletion: false,
    };
    if let Some(v) = store.state.volumes.get_mut(volume_id.as_str()) {
        v.link = Some(link);
    }
    store.dirty = true;
    to_json(&models::LinkVolumeResponse::new())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct UnlinkVolumeReq {
    dry_run: Option<bool>,
    force_unlink: Option<bool>,
    volume_id: Option<String>,
}

fn unlink_volume(store: &mut Store, r: UnlinkVolumeReq, now: u64) -> Result<Value, ApiError> {
    no_dry_run(r.dry_run)?;
    let id = required(&r.volume_id, "VolumeId")?;
    let force = r.force_unlink == Some(true);
    let v = check_volume_id(store, id)?;
    let Some(link) = &v.link else {
        return Err(ApiError::incorrect_state(format!(
            "volume {id} is {}, not linked to any VM",
            v.state_str()
        )));
    };
    if v.root {
        return Err(ApiError::incorrect_state(format!(
            "volume {id} is the root volume of {}; it cannot be unlinked from a running VM",
            link.vm_id
        )));
    }
    let due_ms = match (link.state, force) {
        (LinkState::Attached, _) => now + store.state.delays.detach_ms,
        (_, true) => now,
        (s, false) => {
            return Err(ApiError::incorrect_state(format!(
                "the link of volume {id} to {} is {} (ForceUnlink overrides)",
                link.vm_id,
                s.as_str()
            )))
        }
    };
    if let Some(l) = store
        .state
        .volumes
        .get_mut(id.as_str())
        .and_then(|v| v.link.as_mut())
    {
        l.state = LinkState::Detaching;
        l.due_ms = due_ms;
        l.forced = force;
    }
    store.dirty = true;
    to_json(&models::UnlinkVolumeResponse::new())
}

// ---------------------------------------------------------------------------------------------
// Tags

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct TagItem {
    key: Option<String>,
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct TagsReq {
    dry_run: Option<bool>,
    resource_ids: Option<Vec<String>>,
    tags: Option<Vec<TagItem>>,
}

/// Which map a resource id names.
enum Resource {
    Volume(String),
    Vm(String),
}

fn resolve_resources(store: &Store, ids: &[String]) -> Result<Vec<Resource>, ApiError> {
    if ids.is_empty() {
        return Err(ApiError::missing("ResourceIds"));
    }
    ids.iter()
        .map(|id| {
            if id.starts_with("vol-") {
                check_volume_id(store, id).map(|_| Resource::Volume(id.clone()))
            } else if id.starts_with("i-") {
                check_vm_id(store, id).map(|_| Resource::Vm(id.clone()))
            } else {
                Err(ApiError::malformed_id(id, "resource"))
            }
        })
        .collect()
}

fn tags_of<'a>(store: &'a mut Store, r: &Resource) -> &'a mut BTreeMap<String, String> {
    let tags = match r {
        Resource::Volume(id) => store.state.volumes.get_mut(id).map(|v| &mut v.tags),
        Resource::Vm(id) => store.state.vms.get_mut(id).map(|v| &mut v.tags),
    };
    tags.expect("resources are resolved under the same lock")
}

fn create_tags(store: &mut Store, r: TagsReq) -> Result<Value, ApiError> {
    no_dry_run(r.dry_run)?;
    let resources = resolve_resources(store, required(&r.resource_ids, "ResourceIds")?)?;
    let items = required(&r.tags, "Tags")?;
    if items.is_empty() {
        return Err(ApiError::missing("Tags"));
    }
    let mut pairs = Vec::new();
    for t in items {
        let key = required(&t.key, "Tags.Key")?;
        let value = required(&t.value, "Tags.Value")?;
        if key.is_empty() || key.chars().count() > 255 {
            return Err(ApiError::invalid_value(format!(
                "tag key '{key}' must be 1 to 255 characters"
            )));
        }
        if key.starts_with("osc:") {
            return Err(ApiError::invalid_value(format!(
                "tag key '{key}': the 'osc:' prefix is reserved"
            )));
        }
        if value.chars().count() > 255 {
            return Err(ApiError::invalid_value(format!(
                "the value of tag '{key}' is longer than 255 characters"
            )));
        }
        pairs.push((key.clone(), value.clone()));
    }
    for res in &resources {
        let tags = tags_of(store, res);
        let added = pairs.iter().filter(|(k, _)| !tags.contains_key(k)).count();
        if tags.len() + added > MAX_TAGS {
            return Err(ApiError::too_many(format!(
                "a resource carries at most {MAX_TAGS} tags"
            )));
        }
    }
    for res in &resources {
        let tags = tags_of(store, res);
        for (k, v) in &pairs {
            tags.insert(k.clone(), v.clone());
        }
    }
    store.dirty = true;
    to_json(&models::CreateTagsResponse::new())
}

fn delete_tags(store: &mut Store, r: TagsReq) -> Result<Value, ApiError> {
    no_dry_run(r.dry_run)?;
    let resources = resolve_resources(store, required(&r.resource_ids, "ResourceIds")?)?;
    let items = required(&r.tags, "Tags")?;
    let mut pairs = Vec::new();
    for t in items {
        pairs.push((
            required(&t.key, "Tags.Key")?.clone(),
            t.value.clone().unwrap_or_default(),
        ));
    }
    for res in &resources {
        let tags = tags_of(store, res);
        for (k, v) in &pairs {
            // An empty value deletes the key whatever its value (Outscale's rule).
            if tags.get(k).is_some_and(|cur| v.is_empty() || cur == v) {
                tags.remove(k);
            }
        }
    }
    store.dirty = true;
    to_json(&models::DeleteTagsResponse::new())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct FiltersTag {
    keys: Option<Vec<String>>,
    resource_ids: Option<Vec<String>>,
    resource_types: Option<Vec<String>>,
    values: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ReadTagsReq {
    dry_run: Option<bool>,
    filters: Option<FiltersTag>,
    next_page_token: Option<String>,
    results_per_page: Option<i64>,
}

fn read_tags(store: &mut Store, r: ReadTagsReq) -> Result<Value, ApiError> {
    no_dry_run(r.dry_run)?;
    let f = r.filters.unwrap_or_default();
    let volumes = store
        .state
        .volumes
        .values()
        .map(|v| (v.id.as_str(), "volume", &v.tags));
    let vms = store
        .state
        .vms
        .values()
        .map(|v| (v.id.as_str(), "vm", &v.tags));
    let mut out = Vec::new();
    for (id, kind, tags) in volumes.chain(vms) {
        if !any_of(&f.resource_ids, |r| r == id) || !any_of(&f.resource_types, |t| t == kind) {
            continue;
        }
        for (k, v) in tags {
            if any_of(&f.keys, |x| x == k) && any_of(&f.values, |x| x == v) {
                out.push(models::Tag {
                    key: Some(k.clone()),
                    resource_id: Some(id.to_string()),
                    resource_type: Some(kind.to_string()),
                    value: Some(v.clone()),
                });
            }
        }
    }
    let (page, next) = paginate(out, r.results_per_page, &r.next_page_token)?;
    to_json(&models::ReadTagsResponse {
        next_page_token: next,
        response_context: None,
        tags: Some(page),
    })
}

// ---------------------------------------------------------------------------------------------
// ReadVms

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct FiltersVm {
    subregion_names: Option<Vec<String>>,
    tag_keys: Option<Vec<String>>,
    tag_values: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    vm_ids: Option<Vec<String>>,
    vm_state_names: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ReadVmsReq {
    dry_run: Option<bool>,
    filters: Option<FiltersVm>,
    next_page_token: Option<String>,
    results_per_page: Option<i64>,
}

/// The API view of a VM: running, with its block device mappings (root first, then in link
/// order; links in every state).
fn vm_model(store: &Store, vm: &super::state::Vm) -> models::Vm {
    let mut links: Vec<(&str, &Link)> = store.state.links_of(&vm.id).collect();
    links.sort_by_key(|(id, l)| (l.device != ROOT_DEVICE, l.linked_ms, id.to_string()));
    let mappings = links
        .into_iter()
        .map(|(vol, l)| models::BlockDeviceMappingCreated {
            device_name: Some(l.device.clone()),
            bsu: Some(Box::new(models::BsuCreated {
                delete_on_vm_deletion: Some(l.delete_on_vm_deletion),
                link_date: Some(iso8601(l.linked_ms)),
                state: Some(l.state.as_str().into()),
                volume_id: Some(vol.to_string()),
            })),
        })
        .collect();
    models::Vm {
        architecture: Some("x86_64".into()),
        block_device_mappings: Some(mappings),
        creation_date: Some(iso8601(vm.created_ms)),
        image_id: Some("ami-00000000".into()),
        placement: Some(Box::new(models::Placement {
            subregion_name: Some(vm.subregion.clone()),
            tenancy: Some("default".into()),
        })),
        root_device_name: Some(ROOT_DEVICE.into()),
        root_device_type: Some("ebs".into()),
        state: Some("running".into()),
        tags: Some(tag_models(&vm.tags)),
        vm_id: Some(vm.id.clone()),
        vm_type: Some("tinav5.c1r1p2".into()),
        ..Default::default()
    }
}

fn read_vms(store: &mut Store, r: ReadVmsReq) -> Result<Value, ApiError> {
    no_dry_run(r.dry_run)?;
    let f = r.filters.unwrap_or_default();
    let pairs = tag_pairs(&f.tags)?;
    let mut found: Vec<&super::state::Vm> = store
        .state
        .vms
        .values()
        .filter(|vm| {
            any_of(&f.vm_ids, |id| *id == vm.id)
                && any_of(&f.subregion_names, |s| *s == vm.subregion)
                && any_of(&f.vm_state_names, |s| s == "running")
                && tags_match(&vm.tags, &f.tag_keys, &f.tag_values, &pairs)
        })
        .collect();
    found.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
    let (page, next) = paginate(found, r.results_per_page, &r.next_page_token)?;
    let vms = page.into_iter().map(|vm| vm_model(store, vm)).collect();
    to_json(&models::ReadVmsResponse {
        next_page_token: next,
        response_context: None,
        vms: Some(vms),
    })
}

// ---------------------------------------------------------------------------------------------
// ReadSubregions

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct FiltersSubregion {
    region_names: Option<Vec<String>>,
    states: Option<Vec<String>>,
    subregion_names: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ReadSubregionsReq {
    dry_run: Option<bool>,
    filters: Option<FiltersSubregion>,
    next_page_token: Option<String>,
    results_per_page: Option<i64>,
}

fn read_subregions(store: &mut Store, r: ReadSubregionsReq) -> Result<Value, ApiError> {
    no_dry_run(r.dry_run)?;
    let f = r.filters.unwrap_or_default();
    let region = store.state.region.clone();
    let found: Vec<models::Subregion> = store
        .state
        .subregions()
        .into_iter()
        .filter(|s| {
            any_of(&f.subregion_names, |x| x == s)
                && any_of(&f.region_names, |x| *x == region)
                && any_of(&f.states, |x| x == "available")
        })
        .map(|s| models::Subregion {
            location_code: Some("SIM1".into()),
            region_name: Some(region.clone()),
            state: Some("available".into()),
            subregion_name: Some(s),
        })
        .collect();
    let (page, next) = paginate(found, r.results_per_page, &r.next_page_token)?;
    to_json(&models::ReadSubregionsResponse {
        next_page_token: next,
        response_context: None,
        subregions: Some(page),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "eu-west-2").unwrap();
        (dir, s)
    }

    fn call(s: &mut Store, name: &str, body: Value) -> Result<Value, ApiError> {
        dispatch(s, name, &body, 1_000)
    }

    fn create(s: &mut Store, body: Value) -> Result<String, ApiError> {
        let v = call(s, "CreateVolume", body)?;
        Ok(v["Volume"]["VolumeId"].as_str().unwrap().to_string())
    }

    #[test]
    fn device_names() {
        for ok in [
            "/dev/xvdb",
            "/dev/xvdz",
            "/dev/xvdba",
            "/dev/sdc",
            "/dev/sdzz",
            "/dev/xvdaa",
        ] {
            assert!(valid_device(ok), "{ok}");
        }
        for bad in [
            "/dev/xvda",
            "/dev/sda",
            "/dev/sda1",
            "/dev/sdaa",
            "/dev/xvdB",
            "/dev/xvdbbb",
            "xvdb",
            "/dev/vdb",
            "/dev/xvd",
            "/dev/sdb1",
        ] {
            assert!(!valid_device(bad), "{bad}");
        }
        assert_eq!(device_slot("/dev/xvdc"), device_slot("/dev/sdc"));
    }

    #[test]
    fn create_volume_rules() {
        let (_d, mut s) = store();
        let sr = "eu-west-2a";
        let bad = [
            json!({"SubregionName": sr, "Size": 0}),
            json!({"SubregionName": sr, "Size": 14902}),
            json!({"SubregionName": sr, "Size": 10, "VolumeType": "sc1"}),
            json!({"SubregionName": sr, "Size": 10, "VolumeType": "io1"}),
            json!({"SubregionName": sr, "Size": 100, "VolumeType": "io1", "Iops": 13001}),
            json!({"SubregionName": sr, "Size": 10, "VolumeType": "io1", "Iops": 3001}),
            json!({"SubregionName": sr, "Size": 10, "VolumeType": "io1", "Iops": 99}),
            json!({"SubregionName": sr, "Size": 10, "VolumeType": "gp2", "Iops": 300}),
            json!({"SubregionName": "eu-west-2z", "Size": 10}),
            json!({"Size": 10}),
            json!({"SubregionName": sr, "Size": 10, "Bogus": 1}),
        ];
        for b in bad {
            let e = call(&mut s, "CreateVolume", b.clone()).unwrap_err();
            assert_eq!(e.status, 400, "{b}: {e}");
        }
        assert!(s.state.volumes.is_empty());
        let id = create(
            &mut s,
            json!({"SubregionName": sr, "Size": 10, "VolumeType": "io1", "Iops": 3000}),
        )
        .unwrap();
        let v = &s.state.volumes[&id];
        assert_eq!(
            (v.size_gib, v.iops, v.state_str()),
            (10, Some(3000), "creating")
        );
        assert!(s.volume_file(&id).exists());
        let std = create(&mut s, json!({"SubregionName": sr, "Size": 1})).unwrap();
        assert_eq!(s.state.volumes[&std].volume_type, "standard");
    }

    #[test]
    fn client_token_is_idempotent_and_checks_parameters() {
        let (_d, mut s) = store();
        let b = json!({"SubregionName": "eu-west-2a", "Size": 4, "ClientToken": "tok-1"});
        let a = create(&mut s, b.clone()).unwrap();
        assert_eq!(create(&mut s, b).unwrap(), a);
        assert_eq!(s.state.volumes.len(), 1);
        let e = create(
            &mut s,
            json!({"SubregionName": "eu-west-2a", "Size": 5, "ClientToken": "tok-1"}),
        )
        .unwrap_err();
        assert_eq!(e.status, 409);
        let found = call(
            &mut s,
            "ReadVolumes",
            json!({"Filters": {"ClientTokens": ["tok-1"]}}),
        )
        .unwrap();
        assert_eq!(found["Volumes"][0]["VolumeId"], json!(a));
    }

    #[test]
    fn strict_parsing_refuses_unsimulated_filters() {
        let (_d, mut s) = store();
        let e = call(
            &mut s,
            "ReadVolumes",
            json!({"Filters": {"CreationDates": ["2024-01-01"]}}),
        )
        .unwrap_err();
        assert_eq!((e.status, e.kind.as_str()), (400, "InvalidParameter"));
        let e = call(
            &mut s,
            "ReadVolumes",
            json!({"Filters": {"Tags": ["novalue"]}}),
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        let e = call(&mut s, "RebootVms", json!({})).unwrap_err();
        assert!(e.details.contains("RebootVms"));
    }

    #[test]
    fn pagination_walks_everything_once() {
        let (_d, mut s) = store();
        for _ in 0..5 {
            create(&mut s, json!({"SubregionName": "eu-west-2a", "Size": 1})).unwrap();
        }
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut body = json!({"ResultsPerPage": 2});
            if let Some(t) = &token {
                body["NextPageToken"] = json!(t);
            }
            let r = call(&mut s, "ReadVolumes", body).unwrap();
            for v in r["Volumes"].as_array().unwrap() {
                seen.push(v["VolumeId"].as_str().unwrap().to_string());
            }
            match r["NextPageToken"].as_str() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 5);
    }

    #[test]
    fn tags_on_volumes_and_vms() {
        let (_d, mut s) = store();
        let vm = s.state.add_vm("h1", "eu-west-2a", None, 0);
        let vol = create(&mut s, json!({"SubregionName": "eu-west-2a", "Size": 1})).unwrap();
        call(
            &mut s,
            "CreateTags",
            json!({"ResourceIds": [vol, vm], "Tags": [{"Key": "a", "Value": "1"}]}),
        )
        .unwrap();
        assert_eq!(s.state.vms[&vm].tags["a"], "1");
        let e = call(
            &mut s,
            "CreateTags",
            json!({"ResourceIds": ["vol-00000000"], "Tags": [{"Key": "a", "Value": "1"}]}),
        )
        .unwrap_err();
        assert_eq!(e.code, "5064");
        let e = call(
            &mut s,
            "CreateTags",
            json!({"ResourceIds": [vol], "Tags": [{"Key": "osc:x", "Value": "1"}]}),
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        call(
            &mut s,
            "DeleteTags",
            json!({"ResourceIds": [vm], "Tags": [{"Key": "a", "Value": "2"}]}),
        )
        .unwrap();
        assert!(s.state.vms[&vm].tags.contains_key("a"), "value must match");
        call(
            &mut s,
            "DeleteTags",
            json!({"ResourceIds": [vm], "Tags": [{"Key": "a", "Value": ""}]}),
        )
        .unwrap();
        assert!(!s.state.vms[&vm].tags.contains_key("a"));
        let t = call(&mut s, "ReadTags", json!({"Filters": {"Keys": ["a"]}})).unwrap();
        assert_eq!(t["Tags"].as_array().unwrap().len(), 1);
        assert_eq!(t["Tags"][0]["ResourceType"], "volume");
    }

    #[test]
    fn unlink_rules() {
        let (_d, mut s) = store();
        let vm = s.state.add_vm("h1", "eu-west-2a", None, 0);
        let root = s.state.vms[&vm].root_volume.clone();
        let e = call(&mut s, "UnlinkVolume", json!({"VolumeId": root})).unwrap_err();
        assert_eq!(e.status, 409);
        let e = call(&mut s, "DeleteVolume", json!({"VolumeId": root})).unwrap_err();
        assert_eq!(e.status, 409);
        let vol = create(&mut s, json!({"SubregionName": "eu-west-2a", "Size": 1})).unwrap();
        s.state.advance(u64::MAX / 2, &Default::default());
        let e = call(&mut s, "UnlinkVolume", json!({"VolumeId": vol})).unwrap_err();
        assert_eq!(e.status, 409);
        call(
            &mut s,
            "LinkVolume",
            json!({"VolumeId": vol, "VmId": vm, "DeviceName": "/dev/xvdb"}),
        )
        .unwrap();
        let e = call(&mut s, "UnlinkVolume", json!({"VolumeId": vol})).unwrap_err();
        assert!(e.details.contains("attaching"), "{e}");
        call(
            &mut s,
            "UnlinkVolume",
            json!({"VolumeId": vol, "ForceUnlink": true}),
        )
        .unwrap();
        let l = s.state.volumes[&vol].link.clone().unwrap();
        assert_eq!((l.state, l.forced), (LinkState::Detaching, true));
    }
}
