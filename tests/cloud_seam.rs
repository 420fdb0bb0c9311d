//! The cloud seam (`bsud::cloud`) over the real `outscale_api` client against `bsud-sim`:
//! our verbs, our waits and our error classification.

use std::path::PathBuf;
use std::time::Duration;

use bsud::cloud::outscale::OutscaleCloud;
use bsud::cloud::{
    wait_link, wait_unlinked, wait_volume, Cloud, LinkState, VolumeFilter, VolumeSpec, VolumeState,
};
use bsud::config::{CloudCredentials, Secret, VolumeType};
use bsud::error::exit_code;
use bsud::sim::cloud::client::{SimClient, SimProcess};
use bsud::wait::Wait;
use serde_json::json;

struct Sim {
    proc: SimProcess,
    client: SimClient,
    _dir: tempfile::TempDir,
}

fn start() -> Sim {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "--die-with-parent",
        "--listen",
        "127.0.0.1:0",
        "--create-delay-ms",
        "30",
        "--attach-delay-ms",
        "30",
        "--detach-delay-ms",
        "30",
        "--delete-delay-ms",
        "30",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let proc = SimProcess::start(
        &PathBuf::from(env!("CARGO_BIN_EXE_bsud-sim")),
        &dir.path().join("state"),
        &args,
    )
    .unwrap();
    let client = SimClient::for_addr(proc.addr()).unwrap();
    Sim {
        proc,
        client,
        _dir: dir,
    }
}

fn cloud(sim: &Sim, secret: &str, retries: u32) -> OutscaleCloud {
    OutscaleCloud::new(&CloudCredentials {
        endpoint: sim.client.api_url(),
        region: "eu-west-2".into(),
        access_key: "AKSIM".into(),
        secret_key: Secret(secret.into()),
        requests_per_second: 1000,
        max_retries: retries,
    })
    .unwrap()
}

fn w() -> Wait {
    Wait::new(Duration::from_secs(10), Duration::from_millis(10))
}

fn spec(token: &str) -> VolumeSpec {
    VolumeSpec {
        size_gib: 10,
        volume_type: VolumeType::Gp2,
        iops: None,
        subregion: "eu-west-2a".into(),
        client_token: token.into(),
    }
}

#[test]
fn cloud_seam_full_volume_lifecycle() {
    let sim = start();
    let c = cloud(&sim, "SKSIM", 0);
    let vm = sim.client.add_vm("host1", "eu-west-2a", None).unwrap();
    let a = c.create_volume(&spec("tok-1")).unwrap();
    let b = c.create_volume(&spec("tok-1")).unwrap();
    assert_eq!(a.id, b.id, "the same ClientToken must give the same volume");
    c.create_tags(
        std::slice::from_ref(&a.id),
        &[("osc.bsud.drive-name".into(), "host1:vg-one-1".into())],
    )
    .unwrap();
    let v = wait_volume(&c, &a.id, VolumeState::Available, w()).unwrap();
    assert_eq!(v.tags["osc.bsud.drive-name"], "host1:vg-one-1");
    assert_eq!(v.client_token.as_deref(), Some("tok-1"));
    let found = c
        .find_volumes(&VolumeFilter {
            tags: vec![("osc.bsud.drive-name".into(), "host1:vg-one-1".into())],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(found.len(), 1);
    let by_token = c
        .find_volumes(&VolumeFilter {
            client_tokens: vec!["tok-1".into()],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(by_token[0].id, a.id);

    c.link_volume(&a.id, &vm, "/dev/xvdb").unwrap();
    let v = wait_link(&c, &a.id, &vm, w()).unwrap();
    assert_eq!(v.link_to(&vm).unwrap().state, LinkState::Attached);
    let vmv = c.vm(&vm).unwrap();
    assert!(
        vmv.devices.iter().any(|d| d.device == "/dev/sda1"),
        "root is listed: {vmv:?}"
    );
    assert!(vmv
        .devices
        .iter()
        .any(|d| d.device == "/dev/xvdb" && d.volume_id == a.id));
    // VM tags (the growth intent lives there).
    c.create_tags(
        std::slice::from_ref(&vm),
        &[("one.bsud.intent.vg-one-1".into(), "tok-2".into())],
    )
    .unwrap();
    assert_eq!(c.vm(&vm).unwrap().tags["one.bsud.intent.vg-one-1"], "tok-2");
    c.delete_tags(
        std::slice::from_ref(&vm),
        &[("one.bsud.intent.vg-one-1".into(), "tok-2".into())],
    )
    .unwrap();
    assert!(!c
        .vm(&vm)
        .unwrap()
        .tags
        .contains_key("one.bsud.intent.vg-one-1"));

    // Deleting an in-use volume is refused by the cloud and reported as a failure.
    let e = c.delete_volume(&a.id).unwrap_err();
    assert_eq!(exit_code(&e), 1);
    assert!(e.to_string().contains("DeleteVolume"), "{e}");

    c.unlink_volume(&a.id, false).unwrap();
    wait_unlinked(&c, &a.id, w()).unwrap();
    c.delete_volume(&a.id).unwrap();
    let gone = bsud::wait::poll("volume gone", w(), || {
        Ok(match c.volume(&a.id)? {
            None => bsud::wait::Poll::Ready(()),
            Some(v) => bsud::wait::Poll::Pending(v.state.to_string()),
        })
    });
    gone.unwrap();
    drop(sim.proc);
}

#[test]
fn cloud_seam_errors_are_classified() {
    let sim = start();
    // Bad secret: the API answers 401; that is a configuration problem (exit 3).
    let bad = cloud(&sim, "WRONG", 0);
    let e = bad.find_volumes(&VolumeFilter::default()).unwrap_err();
    assert_eq!(exit_code(&e), 3, "{e}");
    assert!(e.to_string().contains("HTTP 401"), "{e}");
    // A stalled create ends in a timeout naming the volume and the state (exit 5).
    let c = cloud(&sim, "SKSIM", 0);
    sim.client
        .set_faults_json(json!({"rules": [{"kind": "stall", "transition": "create"}]}))
        .unwrap();
    let v = c.create_volume(&spec("tok-stall")).unwrap();
    let e = wait_volume(
        &c,
        &v.id,
        VolumeState::Available,
        Wait::new(Duration::from_millis(300), Duration::from_millis(20)),
    )
    .unwrap_err();
    assert_eq!(exit_code(&e), 5);
    assert!(
        e.to_string().contains(&v.id) && e.to_string().contains("creating"),
        "{e}"
    );
    // Throttling beyond the SDK's retries is a failure that says so.
    sim.client
        .set_faults_json(json!({"rules": [{"kind": "throttle", "call": "ReadVolumes", "nth": 1, "count": 5, "scope": "account"}]}))
        .unwrap();
    let e = c.find_volumes(&VolumeFilter::default()).unwrap_err();
    assert!(
        e.to_string().contains("HTTP 429") && e.to_string().contains("throttled"),
        "{e}"
    );
}
