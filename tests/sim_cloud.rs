//! `bsud-sim serve` against the real `outscale_api` client: each test starts its own server
//! (a child process on a free port, in its own temp directory, killed on drop) and checks one
//! faithful behaviour. Assertions branch on the HTTP status (the SDK's typed error enum is
//! untagged and misleading) and on the Outscale error `Type`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bsud::sim::cloud::client::{default_key, Retries, SimProcess};
use bsud::sim::cloud::faults::{FaultRule, Transition};
use bsud::sim::cloud::state::{DelayUpdate, Key};
use bsud::wait::{self, Poll, Wait};
use outscale_api::apis::configuration::Configuration;
use outscale_api::apis::{tag_api, vm_api, volume_api, Error};
use outscale_api::models::{
    CreateTagsRequest, CreateVolumeRequest, DeleteVolumeRequest, FiltersVm, FiltersVolume,
    LinkVolumeRequest, ReadVmsRequest, ReadVolumesRequest, ResourceTag, UnlinkVolumeRequest,
    Volume,
};
use serde_json::{json, Value};

const SR: &str = "eu-west-2a";

/// A server in a temp dir; killed (SIGKILL) on drop, before its directory is removed
/// (fields drop in declaration order).
struct Sim {
    proc: SimProcess,
    dir: tempfile::TempDir,
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bsud-sim"))
}

/// `--die-with-parent` and every delay at `delay_ms` unless `extra` sets it.
fn base_args(delay_ms: u64, extra: &[&str]) -> Vec<String> {
    let mut a = vec!["--die-with-parent".to_string()];
    for d in ["create", "attach", "detach", "delete"] {
        let flag = format!("--{d}-delay-ms");
        if !extra.contains(&flag.as_str()) {
            a.push(flag);
            a.push(delay_ms.to_string());
        }
    }
    a
}

impl Sim {
    fn start() -> Sim {
        Sim::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let mut args = base_args(20, extra);
        args.extend(["--listen".to_string(), "127.0.0.1:0".to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = SimProcess::start(&bin(), &dir.path().join("state"), &args).unwrap();
        Sim { proc, dir }
    }

    fn cfg(&self) -> Configuration {
        self.cfg_with(&default_key(), Retries::NONE)
    }

    fn cfg_with(&self, key: &Key, retries: Retries) -> Configuration {
        self.proc.client.osc_config(key, retries).unwrap()
    }

    fn vm(&self, name: &str, subregion: &str) -> String {
        self.proc.client.add_vm(name, subregion, None).unwrap()
    }

    fn set_faults(&self, rules: Value) {
        self.proc
            .client
            .set_faults_json(json!({ "rules": rules }))
            .unwrap();
    }
}

/// HTTP status and Outscale error `Type` of a failed call.
fn failure<T: std::fmt::Debug>(e: Error<T>) -> (u16, String) {
    match e {
        Error::ResponseError(rc) => {
            let body: Value = serde_json::from_str(&rc.content).unwrap_or(Value::Null);
            let kind = body["Errors"][0]["Type"].as_str().unwrap_or("").to_string();
            (rc.status.as_u16(), kind)
        }
        other => panic!("expected an HTTP error answer, got {other}"),
    }
}

fn create_req(size: i32, token: Option<&str>) -> CreateVolumeRequest {
    CreateVolumeRequest {
        size: Some(size),
        client_token: token.map(str::to_string),
        ..CreateVolumeRequest::new(SR.into())
    }
}

fn create(cfg: &Configuration, size: i32) -> String {
    volume_api::create_volume(cfg, Some(create_req(size, None)))
        .unwrap()
        .volume
        .unwrap()
        .volume_id
        .unwrap()
}

fn read_filtered(cfg: &Configuration, f: FiltersVolume) -> Vec<Volume> {
    volume_api::read_volumes(
        cfg,
        Some(ReadVolumesRequest {
            filters: Some(Box::new(f)),
            ..Default::default()
        }),
    )
    .unwrap()
    .volumes
    .unwrap()
}

fn ids(vols: &[Volume]) -> Vec<String> {
    let mut v: Vec<String> = vols.iter().map(|v| v.volume_id.clone().unwrap()).collect();
    v.sort();
    v
}

fn volume(cfg: &Configuration, id: &str) -> Option<Volume> {
    read_filtered(
        cfg,
        FiltersVolume {
            volume_ids: Some(vec![id.into()]),
            ..Default::default()
        },
    )
    .into_iter()
    .next()
}

fn state(cfg: &Configuration, id: &str) -> String {
    volume(cfg, id)
        .and_then(|v| v.state)
        .unwrap_or_else(|| "gone".into())
}

fn link_state(cfg: &Configuration, id: &str) -> Option<String> {
    volume(cfg, id)?
        .linked_volumes?
        .first()
        .and_then(|l| l.state.clone())
}

fn wait_for(what: &str, mut check: impl FnMut() -> Option<String>, want: &str) {
    wait::poll(
        what,
        Wait::new(Duration::from_secs(10), Duration::from_millis(5)),
        || {
            let seen = check().unwrap_or_else(|| "none".into());
            Ok(if seen == want {
                Poll::Ready(())
            } else {
                Poll::Pending(seen)
            })
        },
    )
    .unwrap();
}

fn wait_state(cfg: &Configuration, id: &str, want: &str) {
    wait_for(&format!("{id} {want}"), || Some(state(cfg, id)), want);
}

fn available(cfg: &Configuration, size: i32) -> String {
    let id = create(cfg, size);
    wait_state(cfg, id.as_str(), "available");
    id
}

fn link(cfg: &Configuration, vol: &str, vm: &str, dev: &str) -> Result<(), (u16, String)> {
    volume_api::link_volume(
        cfg,
        Some(LinkVolumeRequest::new(dev.into(), vm.into(), vol.into())),
    )
    .map(|_| ())
    .map_err(failure)
}

fn tag(cfg: &Configuration, id: &str, k: &str, v: &str) {
    tag_api::create_tags(
        cfg,
        Some(CreateTagsRequest::new(
            vec![id.into()],
            vec![ResourceTag::new(k.into(), v.into())],
        )),
    )
    .unwrap();
}

#[test]
fn sim_client_token_twice_gives_one_volume() {
    let sim = Sim::start();
    let cfg = sim.cfg();
    let first = volume_api::create_volume(&cfg, Some(create_req(3, Some("tok-a"))))
        .unwrap()
        .volume
        .unwrap();
    let again = volume_api::create_volume(&cfg, Some(create_req(3, Some("tok-a"))))
        .unwrap()
        .volume
        .unwrap();
    assert_eq!(first.volume_id, again.volume_id);
    assert_eq!(again.client_token.as_deref(), Some("tok-a"));
    let all = volume_api::read_volumes(&cfg, None)
        .unwrap()
        .volumes
        .unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    let (status, kind) =
        failure(volume_api::create_volume(&cfg, Some(create_req(4, Some("tok-a")))).unwrap_err());
    assert_eq!((status, kind.as_str()), (409, "ResourceConflict"));
    let file = sim
        .dir
        .path()
        .join("state/volumes")
        .join(format!("{}.img", first.volume_id.unwrap()));
    assert_eq!(std::fs::metadata(file).unwrap().len(), 3 << 30);
}

#[test]
fn sim_volume_goes_creating_to_available_after_the_delay() {
    let sim = Sim::start_with(&["--create-delay-ms", "400"]);
    let cfg = sim.cfg();
    let t0 = Instant::now();
    let v = volume_api::create_volume(&cfg, Some(create_req(1, None)))
        .unwrap()
        .volume
        .unwrap();
    assert_eq!(v.state.as_deref(), Some("creating"));
    let id = v.volume_id.unwrap();
    assert_eq!(state(&cfg, &id), "creating");
    wait_state(&cfg, &id, "available");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "available after {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "available only after {took:?}"
    );
}

#[test]
fn sim_link_twice_on_one_device_is_refused() {
    // Long enough for the checks below to run while the first link is still attaching.
    let sim = Sim::start_with(&["--attach-delay-ms", "1500"]);
    let cfg = sim.cfg();
    let vm = sim.vm("h1", SR);
    let (a, b) = (available(&cfg, 1), available(&cfg, 1));
    link(&cfg, &a, &vm, "/dev/xvdb").unwrap();
    // Still attaching: the device is taken all the same.
    assert_eq!(link_state(&cfg, &a).as_deref(), Some("attaching"));
    assert_eq!(state(&cfg, &a), "in-use");
    let (status, kind) = link(&cfg, &b, &vm, "/dev/xvdb").unwrap_err();
    assert_eq!((status, kind.as_str()), (409, "ResourceConflict"));
    // /dev/sdb is the same guest disk as /dev/xvdb.
    assert_eq!(link(&cfg, &b, &vm, "/dev/sdb").unwrap_err().0, 409);
    wait_for("link attached", || link_state(&cfg, &a), "attached");
    assert_eq!(link(&cfg, &b, &vm, "/dev/xvdb").unwrap_err().0, 409);
    // Linking the same volume again is refused too (it is in-use).
    let (status, kind) = link(&cfg, &a, &vm, "/dev/xvdc").unwrap_err();
    assert_eq!((status, kind.as_str()), (409, "IncorrectState"));
    for bad in ["/dev/xvda", "/dev/sda1", "xvdc", "/dev/vdc", "/dev/xvdc1"] {
        let (status, kind) = link(&cfg, &b, &vm, bad).unwrap_err();
        assert_eq!(
            (status, kind.as_str()),
            (400, "InvalidParameterValue"),
            "{bad}"
        );
    }
    link(&cfg, &b, &vm, "/dev/xvdaa").unwrap();
    let (status, kind) = link(&cfg, &b, "i-00000000", "/dev/xvdd").unwrap_err();
    assert_eq!((status, kind.as_str()), (400, "InvalidResource"));
    let (status, _) = link(&cfg, "vol-zz", &vm, "/dev/xvdd").unwrap_err();
    assert_eq!(status, 400);
}

#[test]
fn sim_link_of_a_creating_volume_is_refused() {
    let sim = Sim::start_with(&["--create-delay-ms", "5000"]);
    let cfg = sim.cfg();
    let vm = sim.vm("h1", SR);
    let v = create(&cfg, 1);
    let (status, kind) = link(&cfg, &v, &vm, "/dev/xvdb").unwrap_err();
    assert_eq!((status, kind.as_str()), (409, "IncorrectState"));
}

#[test]
fn sim_41st_volume_on_a_vm_is_refused() {
    let sim = Sim::start_with(&["--create-delay-ms", "0", "--attach-delay-ms", "0"]);
    let cfg = sim.cfg();
    let vm = sim.vm("h1", SR);
    let letters: Vec<char> = ('b'..='z').collect();
    let mut devices: Vec<String> = letters.iter().map(|c| format!("/dev/xvd{c}")).collect();
    devices.extend(letters.iter().map(|c| format!("/dev/xvdb{c}")));
    // Root + 39 data volumes = 40.
    for dev in devices.iter().take(39) {
        let v = available(&cfg, 1);
        link(&cfg, &v, &vm, dev).unwrap();
    }
    let extra = available(&cfg, 1);
    let (status, kind) = link(&cfg, &extra, &vm, &devices[39]).unwrap_err();
    assert_eq!((status, kind.as_str()), (400, "TooManyResources"));
    // Another VM still takes it.
    let vm2 = sim.vm("h2", SR);
    link(&cfg, &extra, &vm2, "/dev/xvdb").unwrap();
}

#[test]
fn sim_link_to_a_vm_in_another_subregion_is_refused() {
    let sim = Sim::start();
    let cfg = sim.cfg();
    let vm = sim.vm("far", "eu-west-2b");
    let v = available(&cfg, 1);
    let (status, kind) = link(&cfg, &v, &vm, "/dev/xvdb").unwrap_err();
    assert_eq!((status, kind.as_str()), (400, "InvalidParameterValue"));
    assert_eq!(state(&cfg, &v), "available");
}

#[test]
fn sim_delete_of_an_in_use_volume_is_refused() {
    let sim = Sim::start_with(&["--detach-delay-ms", "1000"]);
    let cfg = sim.cfg();
    let vm = sim.vm("h1", SR);
    let v = available(&cfg, 1);
    link(&cfg, &v, &vm, "/dev/xvdb").unwrap();
    let del = || volume_api::delete_volume(&cfg, Some(DeleteVolumeRequest::new(v.clone())));
    let (status, kind) = failure(del().unwrap_err());
    assert_eq!((status, kind.as_str()), (409, "IncorrectState"));
    wait_for("attached", || link_state(&cfg, &v), "attached");
    assert_eq!(failure(del().unwrap_err()).0, 409);
    volume_api::unlink_volume(&cfg, Some(UnlinkVolumeRequest::new(v.clone()))).unwrap();
    assert_eq!(link_state(&cfg, &v).as_deref(), Some("detaching"));
    wait_state(&cfg, &v, "available");
    del().unwrap();
    wait_state(&cfg, &v, "gone");
    let file = sim.dir.path().join(format!("state/volumes/{v}.img"));
    wait_for(
        "volume file removed",
        || Some(file.exists().to_string()),
        "false",
    );
    let (status, kind) = failure(del().unwrap_err());
    assert_eq!((status, kind.as_str()), (400, "InvalidResource"));
}

#[test]
fn sim_create_volume_validates_type_size_and_iops() {
    let sim = Sim::start();
    let cfg = sim.cfg();
    let io1 = |size: i32, iops: Option<i32>| CreateVolumeRequest {
        volume_type: Some("io1".into()),
        iops,
        ..create_req(size, None)
    };
    let refused = [
        io1(100, Some(13_001)),   // more than 13000 IOPS
        io1(10, Some(3_001)),     // more than 300 IOPS per GiB
        io1(10, Some(50)),        // fewer than 100 IOPS
        io1(10, None),            // io1 needs Iops
        create_req(14_902, None), // larger than 14901 GiB
        create_req(0, None),      // empty
        CreateVolumeRequest {
            volume_type: Some("gp2".into()),
            iops: Some(300),
            ..create_req(10, None)
        },
        CreateVolumeRequest {
            volume_type: Some("sc1".into()),
            ..create_req(10, None)
        },
    ];
    for r in refused {
        let (status, _) = failure(volume_api::create_volume(&cfg, Some(r.clone())).unwrap_err());
        assert_eq!(status, 400, "{r:?}");
    }
    let ok = volume_api::create_volume(&cfg, Some(io1(50, Some(13_000))))
        .unwrap()
        .volume
        .unwrap();
    assert_eq!(
        (ok.iops, ok.volume_type.as_deref()),
        (Some(13_000), Some("io1"))
    );
    let big = volume_api::create_volume(&cfg, Some(create_req(14_901, None)))
        .unwrap()
        .volume
        .unwrap();
    assert_eq!(big.volume_type.as_deref(), Some("standard"));
    assert_eq!(
        volume_api::read_volumes(&cfg, None)
            .unwrap()
            .volumes
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn sim_read_volumes_filters() {
    let sim = Sim::start();
    let cfg = sim.cfg();
    let vm = sim.vm("h1", SR);
    let root = sim.proc.client.vms().unwrap()[0].root_volume.clone();
    let (a, b, c) = (available(&cfg, 1), available(&cfg, 2), available(&cfg, 3));
    let tokened = volume_api::create_volume(&cfg, Some(create_req(1, Some("tok-f"))))
        .unwrap()
        .volume
        .unwrap()
        .volume_id
        .unwrap();
    wait_state(&cfg, &tokened, "available");
    tag(&cfg, &a, "osc.bsud.drive-name", "h1:vg-one-100");
    tag(&cfg, &b, "osc.bsud.drive-name", "h1:vg-one-101");
    tag(&cfg, &c, "other", "h1:vg-one-100");
    link(&cfg, &b, &vm, "/dev/xvdc").unwrap();
    let cases: Vec<(FiltersVolume, Vec<&String>)> = vec![
        (
            FiltersVolume {
                tags: Some(vec!["osc.bsud.drive-name=h1:vg-one-100".into()]),
                ..Default::default()
            },
            vec![&a],
        ),
        (
            FiltersVolume {
                tag_keys: Some(vec!["osc.bsud.drive-name".into()]),
                ..Default::default()
            },
            vec![&a, &b],
        ),
        (
            FiltersVolume {
                tag_values: Some(vec!["h1:vg-one-100".into()]),
                ..Default::default()
            },
            vec![&a, &c],
        ),
        (
            FiltersVolume {
                client_tokens: Some(vec!["tok-f".into()]),
                ..Default::default()
            },
            vec![&tokened],
        ),
        (
            FiltersVolume {
                link_volume_vm_ids: Some(vec![vm.clone()]),
                ..Default::default()
            },
            vec![&root, &b],
        ),
        (
            FiltersVolume {
                volume_states: Some(vec!["in-use".into()]),
                tag_keys: Some(vec!["osc.bsud.drive-name".into()]),
                ..Default::default()
            },
            vec![&b],
        ),
        (
            FiltersVolume {
                volume_states: Some(vec!["available".into()]),
                ..Default::default()
            },
            vec![&a, &c, &tokened],
        ),
        (
            FiltersVolume {
                link_volume_device_names: Some(vec!["/dev/xvdc".into()]),
                ..Default::default()
            },
            vec![&b],
        ),
    ];
    for (filter, want) in cases {
        let mut want: Vec<String> = want.into_iter().cloned().collect();
        want.sort();
        assert_eq!(
            ids(&read_filtered(&cfg, filter.clone())),
            want,
            "{filter:?}"
        );
    }
    // Tag on a VM (the driver's crash-recovery intent tag) and the VM filter on it.
    tag(&cfg, &vm, "one.bsud.intent", "link vol-x");
    let vms = vm_api::read_vms(
        &cfg,
        Some(ReadVmsRequest {
            filters: Some(Box::new(FiltersVm {
                tags: Some(vec!["one.bsud.intent=link vol-x".into()]),
                ..Default::default()
            })),
            ..Default::default()
        }),
    )
    .unwrap()
    .vms
    .unwrap();
    assert_eq!(vms.len(), 1);
    // A filter the simulator does not implement is refused, not ignored.
    let (status, kind) = failure(
        volume_api::read_volumes(
            &cfg,
            Some(ReadVolumesRequest {
                filters: Some(Box::new(FiltersVolume {
                    creation_dates: Some(vec!["2024-01-01".into()]),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        )
        .unwrap_err(),
    );
    assert_eq!((status, kind.as_str()), (400, "InvalidParameter"));
}

#[test]
fn sim_read_vms_shows_block_device_mappings_with_root() {
    let sim = Sim::start_with(&["--attach-delay-ms", "5000"]);
    let cfg = sim.cfg();
    let vm = sim.vm("h1", SR);
    let other = sim.vm("h2", SR);
    let v = available(&cfg, 1);
    link(&cfg, &v, &vm, "/dev/xvdf").unwrap();
    let vms = vm_api::read_vms(
        &cfg,
        Some(ReadVmsRequest {
            filters: Some(Box::new(FiltersVm {
                vm_ids: Some(vec![vm.clone()]),
                ..Default::default()
            })),
            ..Default::default()
        }),
    )
    .unwrap()
    .vms
    .unwrap();
    assert_eq!(vms.len(), 1);
    let m = &vms[0];
    assert_eq!(m.vm_id.as_deref(), Some(vm.as_str()));
    assert_eq!(m.state.as_deref(), Some("running"));
    assert_eq!(
        m.placement.as_ref().unwrap().subregion_name.as_deref(),
        Some(SR)
    );
    let bdm = m.block_device_mappings.as_ref().unwrap();
    assert_eq!(bdm.len(), 2, "{bdm:?}");
    assert_eq!(bdm[0].device_name.as_deref(), Some("/dev/sda1"));
    let root = bdm[0].bsu.as_ref().unwrap();
    assert_eq!(
        (root.state.as_deref(), root.delete_on_vm_deletion),
        (Some("attached"), Some(true))
    );
    assert_eq!(bdm[1].device_name.as_deref(), Some("/dev/xvdf"));
    let data = bdm[1].bsu.as_ref().unwrap();
    assert_eq!(data.volume_id.as_deref(), Some(v.as_str()));
    assert_eq!(data.state.as_deref(), Some("attaching"));
    assert!(data.link_date.is_some());
    assert_eq!(
        m.tags.as_ref().unwrap()[0],
        ResourceTag::new("Name".into(), "h1".into())
    );
    let all = vm_api::read_vms(&cfg, None).unwrap().vms.unwrap();
    let mut all_ids: Vec<String> = all.into_iter().map(|v| v.vm_id.unwrap()).collect();
    all_ids.sort();
    let mut want = vec![vm, other];
    want.sort();
    assert_eq!(all_ids, want);
}

#[test]
fn sim_unknown_key_and_bad_signature_are_refused_with_401() {
    let sim = Sim::start_with(&["--access-key", "AK1", "--secret-key", "SK1"]);
    let good = Key {
        access_key: "AK1".into(),
        secret_key: "SK1".into(),
    };
    volume_api::read_volumes(&sim.cfg_with(&good, Retries::NONE), None).unwrap();
    for key in [
        default_key(),
        Key {
            access_key: "AK1".into(),
            secret_key: "wrong".into(),
        },
    ] {
        let cfg = sim.cfg_with(&key, Retries::NONE);
        let (status, kind) = failure(volume_api::read_volumes(&cfg, None).unwrap_err());
        assert_eq!((status, kind.as_str()), (401, "AccessDenied"), "{key:?}");
    }
    // Unsigned, and signed for another region.
    let c = &sim.proc.client;
    let (status, _) = raw_http("POST", &(c.api_url() + "/ReadVolumes"), Some("{}"));
    assert_eq!(status, 401);
    let (status, _) = c
        .signed_call(&good, "us-east-2", "ReadVolumes", "{}")
        .unwrap();
    assert_eq!(status, 401);
    let stats = c.stats().unwrap();
    assert_eq!(stats.auth_failures, 4, "{stats:?}");
}

/// One HTTP/1.1 request through std only (no client library between the test and the
/// server); returns the status and the body.
fn raw_http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    let mut req = format!("{method} /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    s.write_all(req.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).unwrap().parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

#[test]
fn sim_throttling_is_answered_and_the_sdk_retry_gets_through() {
    let sim = Sim::start();
    sim.set_faults(json!([{"kind": "throttle", "call": "ReadVolumes", "count": 2}]));
    // Without retries the caller sees Outscale's throttling answer.
    let (status, _) = failure(volume_api::read_volumes(&sim.cfg(), None).unwrap_err());
    assert_eq!(status, 429);
    // With 3 quick retries the SDK gets through the remaining throttled call.
    let retrying = sim.cfg_with(&default_key(), Retries::quick(3));
    volume_api::read_volumes(&retrying, None).unwrap();
    let s = sim.proc.client.stats().unwrap();
    let rv = &s.calls["ReadVolumes"];
    assert_eq!((rv.ok, rv.failed, s.injected), (1, 2, 2), "{s:?}");
    // Platform throttling (503 code 6) outlasting the retries reaches the caller.
    sim.set_faults(json!([{"kind": "throttle", "call": "*", "count": 10, "scope": "platform"}]));
    let e = volume_api::read_volumes(&retrying, None).unwrap_err();
    let Error::ResponseError(rc) = e else {
        panic!("expected an answer")
    };
    assert_eq!(rc.status.as_u16(), 503);
    let body: Value = serde_json::from_str(&rc.content).unwrap();
    assert_eq!(body["Errors"][0]["Code"], "6");
    assert_eq!(sim.proc.client.stats().unwrap().injected, 2 + 4);
}

#[test]
fn sim_nth_call_fails_and_a_lost_response_is_recovered_by_client_token() {
    let sim = Sim::start();
    let cfg = sim.cfg();
    sim.set_faults(json!([
        {"kind": "fail", "call": "CreateVolume", "nth": 2, "status": 500}
    ]));
    create(&cfg, 1);
    let (status, kind) =
        failure(volume_api::create_volume(&cfg, Some(create_req(1, None))).unwrap_err());
    assert_eq!((status, kind.as_str()), (500, "InternalError"));
    create(&cfg, 1);
    assert_eq!(
        volume_api::read_volumes(&cfg, None)
            .unwrap()
            .volumes
            .unwrap()
            .len(),
        2
    );
    // The call is carried out but its answer lost: the ClientToken retry finds the volume.
    sim.set_faults(json!([
        {"kind": "fail", "call": "CreateVolume", "apply": true, "status": 503, "code": "6", "type": "AccessDenied"}
    ]));
    let (status, _) =
        failure(volume_api::create_volume(&cfg, Some(create_req(2, Some("tok-l")))).unwrap_err());
    assert_eq!(status, 503);
    let again = volume_api::create_volume(&cfg, Some(create_req(2, Some("tok-l"))))
        .unwrap()
        .volume
        .unwrap();
    let found = read_filtered(
        &cfg,
        FiltersVolume {
            client_tokens: Some(vec!["tok-l".into()]),
            ..Default::default()
        },
    );
    assert_eq!(ids(&found), vec![again.volume_id.unwrap()]);
    // Rules restricted to one VM leave others alone.
    let (vm1, vm2) = (sim.vm("h1", SR), sim.vm("h2", SR));
    let (a, b) = (available(&cfg, 1), available(&cfg, 1));
    sim.set_faults(json!([
        {"kind": "fail", "call": "LinkVolume", "count": 100, "vm": vm1, "status": 400, "code": "4045", "type": "InvalidParameterValue"}
    ]));
    assert_eq!(link(&cfg, &a, &vm1, "/dev/xvdb").unwrap_err().0, 400);
    link(&cfg, &b, &vm2, "/dev/xvdb").unwrap();
    sim.proc.client.clear_faults().unwrap();
    link(&cfg, &a, &vm1, "/dev/xvdb").unwrap();
}

#[test]
fn sim_stalled_transitions_stay_stalled_until_cleared() {
    let sim = Sim::start();
    let cfg = sim.cfg();
    let vm = sim.vm("h1", SR);
    let ready = available(&cfg, 1);
    let c = &sim.proc.client;
    c.set_faults(&[
        FaultRule::Stall {
            transition: Transition::Create,
            volume: None,
            vm: None,
        },
        FaultRule::Stall {
            transition: Transition::Attach,
            volume: None,
            vm: Some(vm.clone()),
        },
    ])
    .unwrap();
    let stuck = create(&cfg, 1);
    link(&cfg, &ready, &vm, "/dev/xvdb").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(state(&cfg, &stuck), "creating");
    assert_eq!(link_state(&cfg, &ready).as_deref(), Some("attaching"));
    // A stuck attach is only undone by a forced unlink.
    let plain = volume_api::unlink_volume(&cfg, Some(UnlinkVolumeRequest::new(ready.clone())));
    assert_eq!(failure(plain.unwrap_err()).0, 409);
    c.clear_faults().unwrap();
    wait_state(&cfg, &stuck, "available");
    wait_for("attached", || link_state(&cfg, &ready), "attached");
    // Stalled detach: stays detaching; ForceUnlink completes it.
    c.set_faults(&[FaultRule::Stall {
        transition: Transition::Detach,
        volume: Some(ready.clone()),
        vm: None,
    }])
    .unwrap();
    volume_api::unlink_volume(&cfg, Some(UnlinkVolumeRequest::new(ready.clone()))).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(link_state(&cfg, &ready).as_deref(), Some("detaching"));
    let forced = UnlinkVolumeRequest {
        force_unlink: Some(true),
        ..UnlinkVolumeRequest::new(ready.clone())
    };
    volume_api::unlink_volume(&cfg, Some(forced)).unwrap();
    wait_state(&cfg, &ready, "available");
}

#[test]
fn sim_no_device_rule_attaches_a_host_vm_without_host_effect() {
    let sim = Sim::start();
    let cfg = sim.cfg();
    let host_root = sim.dir.path().join("host1");
    std::fs::create_dir(&host_root).unwrap();
    let vm = sim
        .proc
        .client
        .add_vm("host1", SR, Some(&host_root))
        .unwrap();
    assert_eq!(
        sim.proc
            .client
            .add_vm("host1", SR, Some(&host_root))
            .unwrap(),
        vm,
        "registration is idempotent by name"
    );
    assert!(sim.proc.client.add_vm("host1", "eu-west-2b", None).is_err());
    sim.set_faults(json!([{"kind": "no_device", "vm": vm}]));
    let v = available(&cfg, 1);
    link(&cfg, &v, &vm, "/dev/xvdb").unwrap();
    wait_for("attached", || link_state(&cfg, &v), "attached");
    // Nothing was made on the host.
    assert_eq!(std::fs::read_dir(&host_root).unwrap().count(), 0);
}

#[test]
fn sim_restart_after_a_crash_keeps_volumes_links_tags_tokens_and_address() {
    let mut sim = Sim::start_with(&["--attach-delay-ms", "800", "--create-delay-ms", "0"]);
    let cfg = sim.cfg();
    let vm = sim.vm("h1", SR);
    let tokened = volume_api::create_volume(&cfg, Some(create_req(2, Some("tok-r"))))
        .unwrap()
        .volume
        .unwrap()
        .volume_id
        .unwrap();
    wait_state(&cfg, &tokened, "available");
    tag(&cfg, &tokened, "osc.bsud.drive-name", "h1:vg-one-1");
    tag(&cfg, &vm, "one.bsud.intent", "x");
    link(&cfg, &tokened, &vm, "/dev/xvdb").unwrap();
    let other = available(&cfg, 1);
    sim.set_faults(json!([{"kind": "stall", "transition": "create"}]));
    let stalled = create(&cfg, 1);
    let addr = sim.proc.addr();
    let state_dir = sim.proc.state_dir().to_path_buf();

    sim.proc.kill();
    // Restart with nothing but the state directory: same address, same cloud.
    sim.proc = SimProcess::start(&bin(), &state_dir, &["--die-with-parent".into()]).unwrap();
    assert_eq!(sim.proc.addr(), addr);
    let cfg = sim.cfg();
    // The link was attaching when the server died; it completes after the restart.
    wait_for(
        "attached after restart",
        || link_state(&cfg, &tokened),
        "attached",
    );
    let v = volume(&cfg, &tokened).unwrap();
    assert_eq!(v.tags.unwrap()[0].value, "h1:vg-one-1");
    assert_eq!(state(&cfg, &other), "available");
    // Faults persist: the stalled volume is still creating.
    assert_eq!(state(&cfg, &stalled), "creating");
    let again = volume_api::create_volume(&cfg, Some(create_req(2, Some("tok-r"))))
        .unwrap()
        .volume
        .unwrap();
    assert_eq!(again.volume_id.as_deref(), Some(tokened.as_str()));
    let vms = vm_api::read_vms(&cfg, None).unwrap().vms.unwrap();
    assert!(vms[0]
        .tags
        .as_ref()
        .unwrap()
        .contains(&ResourceTag::new("one.bsud.intent".into(), "x".into())));
    // Delays persisted too.
    let d = sim.proc.client.set_delays(&DelayUpdate::default()).unwrap();
    assert_eq!((d.attach_ms, d.create_ms, d.detach_ms), (800, 0, 20));
}

#[test]
fn sim_metadata_endpoint_answers_per_vm() {
    let sim = Sim::start();
    let vm = sim.vm("h1", "eu-west-2b");
    let get = |path: &str| {
        let url = format!("{}{path}", sim.proc.client.metadata_url(&vm));
        raw_http("GET", &url, None)
    };
    assert_eq!(get("/latest/meta-data/instance-id"), (200, vm.clone()));
    assert_eq!(
        get("/latest/meta-data/placement/availability-zone"),
        (200, "eu-west-2b".into())
    );
    assert_eq!(get("/latest/meta-data/nonsense").0, 404);
    let unknown = format!(
        "{}/latest/meta-data/instance-id",
        sim.proc.client.metadata_url("i-00000000")
    );
    assert_eq!(raw_http("GET", &unknown, None).0, 404);
}

#[test]
fn sim_unknown_call_and_stats() {
    let sim = Sim::start();
    let c = &sim.proc.client;
    let (status, body) = c
        .signed_call(&default_key(), "eu-west-2", "CreateVms", "{}")
        .unwrap();
    assert_eq!(status, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["Errors"][0]["Details"]
        .as_str()
        .unwrap()
        .contains("CreateVms"));
    assert!(v["ResponseContext"]["RequestId"].is_string());
    let cfg = sim.cfg();
    create(&cfg, 1);
    volume_api::read_volumes(&cfg, None).unwrap();
    let s = c.stats().unwrap();
    assert_eq!(s.total, 3);
    assert_eq!(s.calls["CreateVms"].failed, 1);
    assert_eq!(s.calls["CreateVolume"].ok, 1);
    c.reset_stats().unwrap();
    assert_eq!(c.stats().unwrap().total, 0);
}

#[test]
fn sim_concurrent_calls_keep_one_consistent_cloud() {
    let sim = Sim::start_with(&["--create-delay-ms", "0"]);
    let threads = 6;
    let per_thread = 20;
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let cfg = sim.cfg();
            s.spawn(move || {
                for i in 0..per_thread {
                    // Every token is sent by two threads: one volume each all the same.
                    let token = format!("tok-{}-{i}", t / 2);
                    volume_api::create_volume(&cfg, Some(create_req(1, Some(&token)))).unwrap();
                    volume_api::read_volumes(&cfg, None).unwrap();
                }
            });
        }
    });
    let took = t0.elapsed();
    let calls = threads * per_thread * 2;
    eprintln!(
        "{calls} SDK calls from {threads} threads in {took:?} ({:.0} calls/s)",
        calls as f64 / took.as_secs_f64()
    );
    let all = volume_api::read_volumes(&sim.cfg(), None)
        .unwrap()
        .volumes
        .unwrap();
    assert_eq!(all.len(), threads / 2 * per_thread);
    let files = std::fs::read_dir(sim.dir.path().join("state/volumes"))
        .unwrap()
        .count();
    assert_eq!(files, all.len());
}
