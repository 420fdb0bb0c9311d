//! Every file of `tests/fixtures/opennebula/` decoded in every way oned (or a person) delivers
//! it, with concrete field checks.
//!
//! Datastore messages go through the three datastore invocation modes (argv base64, `-` +
//! stdin, id + stdin) and must decode identically in all three; VM and DATASTORE documents go
//! through the three `decode` forms (argument, file, stdin) and, for the VM, the migrate stdin.
//! [`every_fixture_is_checked`] fails when a fixture is added without a check.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use base64::Engine;

use super::input::{decode_message, read_ds_input, DsInput, InputMode};
use super::message::{Datastore, DatastoreType, DsMessage, ImageType};
use super::tm::TmArgs;
use super::vm::VmXml;
use crate::cli::DecodeArgs;
use crate::config::DriveSettings;
use crate::error::exit_code;
use crate::one::output::ActionOutput;

/// `tests/fixtures/` of the repository (the library crate lives in `lib/`).
pub(super) fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// A fixture's text.
pub(super) fn fixture(rel: &str) -> String {
    let p = fixtures_dir().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Base64 as oned ≥ 6.8 writes it on stdin: one line, no newline.
pub(super) fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Decodes `b64` with id `id` in the three datastore modes, checks they agree and returns the
/// stdin-mode result. A 60-column wrapped copy (Ruby's `encode64`) must decode the same.
pub(super) fn three_ways(b64: &str, id: &str) -> DsInput {
    let argv = read_ds_input(&os(&[b64, id]), &mut std::io::empty()).unwrap();
    let dash = read_ds_input(&os(&["-", id]), &mut b64.as_bytes()).unwrap();
    let stdin = read_ds_input(&os(&[id]), &mut b64.as_bytes()).unwrap();
    let wrapped: String = b64
        .trim_end()
        .as_bytes()
        .chunks(60)
        .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
        .collect();
    let wrapped = read_ds_input(&os(&[id]), &mut wrapped.as_bytes()).unwrap();
    assert_eq!(
        (argv.mode, dash.mode, stdin.mode),
        (InputMode::Argv, InputMode::DashStdin, InputMode::Stdin)
    );
    let json = |i: &DsInput| serde_json::to_string(&i.message).unwrap();
    for other in [&argv, &dash, &wrapped] {
        assert_eq!(other.id, id);
        assert_eq!(other.xml, stdin.xml);
        assert_eq!(json(other), json(&stdin));
    }
    stdin
}

/// A datastore-message fixture (`.xml` or `.b64`) in the three modes.
fn ds_fixture(name: &str, id: &str) -> DsMessage {
    let text = fixture(&format!("opennebula/{name}"));
    let encoded = if name.ends_with(".b64") {
        text
    } else {
        b64(&text)
    };
    let input = three_ways(&encoded, id);
    assert_eq!(
        decode_json(&encoded),
        serde_json::to_value(&input.message).unwrap()
    );
    input.message
}

/// `one-bsud decode` of a document given as an argument, a file and on stdin: the three must
/// print the same JSON, which is returned.
fn decode_json(encoded: &str) -> serde_json::Value {
    let run = |input: Option<String>, stdin: &[u8]| match crate::actions::decode::run(
        &DecodeArgs { input },
        &mut &stdin[..],
    )
    .unwrap()
    {
        ActionOutput::Document(d) => d,
        other => panic!("{other:?}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("message");
    std::fs::write(&file, encoded).unwrap();
    let from_arg = run(Some(encoded.to_string()), b"");
    let from_file = run(Some(file.to_str().unwrap().to_string()), b"");
    let from_stdin = run(None, encoded.as_bytes());
    let from_dash = run(Some("-".into()), encoded.as_bytes());
    assert_eq!(from_arg, from_file);
    assert_eq!(from_arg, from_stdin);
    assert_eq!(from_arg, from_dash);
    serde_json::from_str(&from_arg).unwrap()
}

fn bad_input_text(r: anyhow::Result<()>) -> String {
    let e = r.unwrap_err();
    assert_eq!(exit_code(&e), 2, "{e:#}");
    format!("{e:#}")
}

/// The reconstructed 7.x image datastore 101 every `reconstructed-*` message carries.
fn assert_lvm_images_ds(ds: &Datastore) {
    assert_eq!(ds.id, 101);
    assert_eq!(ds.name, "lvm-images");
    assert_eq!(ds.ds_mad, "fs");
    assert_eq!(ds.tm_mad, "fs_lvm_ssh");
    assert_eq!(ds.base_path, "/var/lib/one/datastores/101");
    assert_eq!(ds.ds_type, Some(DatastoreType::Image));
    assert_eq!(ds.clusters, [0]);
    assert_eq!(ds.bridge_list(), ["kvm1", "kvm2"]);
    assert_eq!(ds.template.get("SAFE_DIRS"), Some("/var/tmp"));
    assert_eq!(ds.template.get("RESTRICTED_DIRS"), Some("/"));
    assert_eq!(ds.template.get("DISK_TYPE"), Some("BLOCK"));
    assert_eq!(ds.template.get("DRIVER"), Some("raw"));
    assert_eq!(ds.template.get("TYPE"), Some("IMAGE_DS"));
    assert_eq!(ds.template.len(), 12);
    // No BSUD_* attribute: the drive policy is the documented default.
    assert_eq!(
        DriveSettings::from_template(&ds.template).unwrap(),
        DriveSettings::default()
    );
}

fn check_reconstructed_cp(name: &str) {
    let m = ds_fixture(name, "7");
    m.check_for("cp").unwrap();
    let i = m.image.as_ref().unwrap();
    assert_eq!(i.id, Some(7));
    assert_eq!(
        (i.uname.as_str(), i.name.as_str()),
        ("oneadmin", "alpine-3.20")
    );
    assert_eq!(i.image_type, Some(ImageType::Os));
    assert!(!i.persistent);
    assert_eq!(i.source, "");
    assert_eq!(i.path, "https://dl.example.org/alpine-3.20.qcow2");
    assert_eq!((i.format.as_str(), i.fs.as_str()), ("", ""));
    assert_eq!(i.size_mb, Some(256));
    assert_eq!(i.state, Some(4));
    assert_eq!((i.cloning_id, i.target_snapshot), (Some(-1), Some(-1)));
    assert_eq!(i.datastore_id, Some(101));
    assert_eq!(
        i.template.get("MD5"),
        Some("0d3b0e7f5b9c2a1c4e6f8a9b0c1d2e3f")
    );
    assert_eq!(i.template.get("DESCRIPTION"), Some("Alpine cloud image"));
    assert_eq!(i.template.get("SHA1"), None);
    assert!(i.snapshots.is_empty());
    assert_lvm_images_ds(&m.datastore);
    assert!(m.datastore_location.is_none() && m.monitor_vm_disks.is_none());
    assert!(m.marketplace.is_none() && m.source_bridge_list.is_none());
    // Valid for cp, but snapshot actions need a target snapshot.
    assert!(bad_input_text(m.check_for("snap_delete")).contains("TARGET_SNAPSHOT"));
}

#[test]
fn reconstructed_cp_url_xml() {
    check_reconstructed_cp("reconstructed-7x-ds-cp-url.xml");
}

#[test]
fn reconstructed_cp_url_b64() {
    let b = fixture("opennebula/reconstructed-7x-ds-cp-url.b64");
    let x = fixture("opennebula/reconstructed-7x-ds-cp-url.xml");
    assert_eq!(decode_message(b.as_bytes()).unwrap(), x.trim_end());
    check_reconstructed_cp("reconstructed-7x-ds-cp-url.b64");
}

fn check_reconstructed_mkfs(name: &str) {
    let m = ds_fixture(name, "8");
    m.check_for("mkfs").unwrap();
    let i = m.image.as_ref().unwrap();
    assert_eq!(i.id, Some(8));
    assert_eq!(i.name, "data-10g");
    assert_eq!(i.image_type, Some(ImageType::Datablock));
    assert!(i.persistent);
    assert_eq!((i.source.as_str(), i.path.as_str()), ("", ""));
    assert_eq!((i.format.as_str(), i.fs.as_str()), ("raw", "ext4"));
    assert_eq!(i.size_mb, Some(10240));
    assert_eq!(i.template.get("DRIVER"), Some("raw"));
    assert_eq!(i.template.len(), 2);
    assert_lvm_images_ds(&m.datastore);
    // mkfs has no PATH: the same message is refused by cp, naming what is missing.
    assert_eq!(
        bad_input_text(m.check_for("cp")),
        "cp: driver message has no IMAGE/PATH"
    );
}

#[test]
fn reconstructed_mkfs_datablock_xml() {
    check_reconstructed_mkfs("reconstructed-7x-ds-mkfs-datablock.xml");
}

#[test]
fn reconstructed_mkfs_datablock_b64() {
    check_reconstructed_mkfs("reconstructed-7x-ds-mkfs-datablock.b64");
}

fn check_reconstructed_monitor_image(name: &str) {
    let m = ds_fixture(name, "101");
    m.check_for("monitor").unwrap();
    assert!(m.image.is_none());
    assert_lvm_images_ds(&m.datastore);
    assert!(m.datastore_location.is_none() && m.monitor_vm_disks.is_none());
    assert_eq!(
        bad_input_text(m.check_for("rm")),
        "rm: driver message has no IMAGE element"
    );
}

#[test]
fn reconstructed_monitor_image_ds_xml() {
    check_reconstructed_monitor_image("reconstructed-7x-ds-monitor-image-ds.xml");
}

#[test]
fn reconstructed_monitor_image_ds_b64() {
    check_reconstructed_monitor_image("reconstructed-7x-ds-monitor-image-ds.b64");
}

fn check_reconstructed_monitor_system(name: &str) {
    let m = ds_fixture(name, "100");
    m.check_for("monitor").unwrap();
    assert!(m.image.is_none());
    let ds = &m.datastore;
    assert_eq!((ds.id, ds.name.as_str()), (100, "lvm-system"));
    assert_eq!(
        (ds.ds_mad.as_str(), ds.tm_mad.as_str()),
        ("-", "fs_lvm_ssh")
    );
    assert_eq!(ds.ds_type, Some(DatastoreType::System));
    assert_eq!(ds.base_path, "/var/lib/one/datastores/100");
    assert_eq!(ds.template.get("SHARED"), Some("YES"));
    assert_eq!(ds.template.get("DS_LIVE_MIGRATE"), Some("YES"));
    assert_eq!(ds.template.get("DS_MIGRATE_SNAP"), Some("NO"));
    assert_eq!(ds.template.get("TYPE"), Some("SYSTEM_DS"));
    assert_eq!(ds.bridge_list(), ["kvm1", "kvm2"]);
    assert_eq!(
        m.datastore_location.as_deref(),
        Some("/var/lib/one/datastores")
    );
    assert_eq!(m.monitor_vm_disks, Some(true));
}

#[test]
fn reconstructed_monitor_system_ds_xml() {
    check_reconstructed_monitor_system("reconstructed-7x-ds-monitor-system-ds.xml");
}

#[test]
fn reconstructed_monitor_system_ds_b64() {
    check_reconstructed_monitor_system("reconstructed-7x-ds-monitor-system-ds.b64");
}

fn check_reconstructed_rm(name: &str) {
    let m = ds_fixture(name, "5");
    m.check_for("rm").unwrap();
    let i = m.image.as_ref().unwrap();
    assert_eq!((i.id, i.name.as_str()), (Some(5), "debian-12"));
    // SOURCE is kept exactly as oned stored it (it is an identifier, not a path we build).
    assert_eq!(
        i.source,
        "/var/lib/one//datastores/101/5f1d0a9c8b7e6d5c4b3a29180f7e6d5c"
    );
    assert_eq!((i.path.as_str(), i.format.as_str()), ("", "raw"));
    assert_eq!((i.size_mb, i.state), (Some(2048), Some(1)));
    assert_lvm_images_ds(&m.datastore);
}

#[test]
fn reconstructed_rm_xml() {
    check_reconstructed_rm("reconstructed-7x-ds-rm.xml");
}

#[test]
fn reconstructed_rm_b64() {
    check_reconstructed_rm("reconstructed-7x-ds-rm.b64");
}

fn check_reconstructed_snap_delete(name: &str) {
    let m = ds_fixture(name, "9");
    for action in ["snap_delete", "snap_revert", "snap_flatten", "rm"] {
        m.check_for(action).unwrap();
    }
    let i = m.image.as_ref().unwrap();
    assert_eq!((i.id, i.name.as_str()), (Some(9), "pers-vm-disk"));
    assert_eq!(i.image_type, Some(ImageType::Datablock));
    assert!(i.persistent);
    assert_eq!(i.target_snapshot, Some(1));
    assert_eq!(i.size_mb, Some(4096));
    assert_eq!(i.snapshots.len(), 1);
    let s = &i.snapshots[0];
    assert_eq!((s.id, s.name.as_str()), (0, "before-upgrade"));
    assert!(s.active);
    assert_eq!((s.parent, s.size_mb), (-1, Some(4096)));
    assert_lvm_images_ds(&m.datastore);
}

#[test]
fn reconstructed_snap_delete_xml() {
    check_reconstructed_snap_delete("reconstructed-7x-ds-snap_delete.xml");
}

#[test]
fn reconstructed_snap_delete_b64() {
    check_reconstructed_snap_delete("reconstructed-7x-ds-snap_delete.b64");
}

fn check_reconstructed_stat(name: &str) {
    // stat's id is oned's request counter, not an image id.
    let m = ds_fixture(name, "1234");
    m.check_for("stat").unwrap();
    let i = m.image.as_ref().unwrap();
    assert_eq!(i.id, None);
    // The `&amp;` entity is decoded.
    assert_eq!(i.path, "https://dl.example.org/alpine-3.20.qcow2?x=1&y=2");
    assert_eq!(i.size_mb, None, "an empty SIZE element is no size");
    assert_lvm_images_ds(&m.datastore);
    assert_eq!(
        bad_input_text(m.check_for("cp")),
        "cp: driver message has no IMAGE/ID"
    );
}

#[test]
fn reconstructed_stat_url_xml() {
    check_reconstructed_stat("reconstructed-7x-ds-stat-url.xml");
}

#[test]
fn reconstructed_stat_url_b64() {
    check_reconstructed_stat("reconstructed-7x-ds-stat-url.b64");
}

#[test]
fn docs_decoded_example_image_ds() {
    let m = ds_fixture("docs-sd-decoded-example-image-ds.xml", "0");
    for action in ["cp", "rm", "export"] {
        m.check_for(action).unwrap();
    }
    let i = m.image.as_ref().unwrap();
    assert_eq!((i.id, i.name.as_str()), (Some(0), "ttylinux"));
    assert_eq!(i.image_type, Some(ImageType::Os));
    assert_eq!(
        (i.source.as_str(), i.path.as_str()),
        ("", "/tmp/ttylinux.img")
    );
    assert_eq!(
        (i.size_mb, i.state, i.datastore_id),
        (Some(40), Some(4), Some(1))
    );
    // Fields 4.x did not send are simply absent.
    assert_eq!((i.target_snapshot, i.format.as_str()), (None, ""));
    assert_eq!(i.template.get("DEV_PREFIX"), Some("hd"));
    assert_eq!(i.template.get("PUBLIC"), Some("YES"));
    let ds = &m.datastore;
    assert_eq!((ds.id, ds.name.as_str()), (1, "default"));
    assert_eq!((ds.ds_mad.as_str(), ds.tm_mad.as_str()), ("fs", "shared"));
    assert_eq!(ds.base_path, "", "this old dump has no BASE_PATH");
    assert!(ds.clusters.is_empty(), "4.x used CLUSTER_ID, not CLUSTERS");
    assert_eq!(ds.ds_type, Some(DatastoreType::Image));
    assert_eq!(ds.template.get("LN_TARGET"), Some("NONE"));
    assert!(ds.bridge_list().is_empty());
}

#[test]
fn docs_decoded_example_system_ds_monitor() {
    let m = ds_fixture("docs-sd-decoded-example-system-ds-monitor.xml", "0");
    m.check_for("monitor").unwrap();
    assert!(m.image.is_none());
    let ds = &m.datastore;
    assert_eq!(
        (ds.id, ds.name.as_str(), ds.tm_mad.as_str()),
        (0, "system", "qcow2")
    );
    assert_eq!(ds.ds_type, Some(DatastoreType::System));
    assert_eq!(ds.base_path, "/var/lib/one/datastores/0");
    assert_eq!(ds.template.get("SHARED"), Some("YES"));
    assert_eq!(ds.template.get("DS_MIGRATE"), Some("YES"));
    assert_eq!(
        m.datastore_location.as_deref(),
        Some("/var/lib/one/datastores")
    );
    assert_eq!(m.monitor_vm_disks, Some(true));
}

#[test]
fn docs_backup_stdin_example() {
    // A backup-datastore message (DATASTORE + VM): not an action of ours, but it must decode,
    // and the VM inside is a full `onevm show -x` document.
    let text = fixture("opennebula/docs-sd-backup-stdin-example.xml");
    let m = ds_fixture("docs-sd-backup-stdin-example.xml", "800");
    assert!(m.image.is_none());
    let ds = &m.datastore;
    assert_eq!((ds.id, ds.name.as_str()), (100, "rsync"));
    assert_eq!((ds.ds_mad.as_str(), ds.tm_mad.as_str()), ("rsync", "-"));
    assert_eq!(ds.ds_type, Some(DatastoreType::Backup));
    assert_eq!(ds.base_path, "/var/lib/one/datastores/100");
    assert_eq!(ds.template.get("RSYNC_HOST"), Some("192.168.150.1"));
    assert_eq!(ds.template.get("RSYNC_USER"), Some("oneadmin"));
    let vm_xml = &text[text.find("<VM>").unwrap()..text.find("</VM>").unwrap() + 5];
    let vm = VmXml::from_xml(vm_xml).unwrap();
    assert_eq!((vm.id, vm.state, vm.lcm_state), (800, Some(3), Some(69)));
    assert_eq!(vm.disks.len(), 1, "CONTEXT is not a disk");
    let d = vm.disk(0).unwrap();
    assert_eq!(
        (d.size_mb, d.image_id, d.datastore_id),
        (Some(256), Some(0), Some(1))
    );
    assert_eq!(d.source.as_deref(), Some("one/one-0"));
    assert_eq!(
        (d.tm_mad.as_deref(), d.format.as_deref()),
        (Some("ceph"), Some("raw"))
    );
    assert!(d.clone && !d.persistent);
    assert_eq!(vm.history.len(), 1);
    assert_eq!(
        vm.history[0].hostname,
        "ubuntu2204-kvm-ceph-quincy-6-99-0c08-2.test"
    );
    assert_eq!(vm.history[0].ds_id, Some(0));
}

#[test]
fn linstor_mkfs_message() {
    let m = ds_fixture("linstor-test_driver_action-MKFS_XML.xml", "18");
    m.check_for("mkfs").unwrap();
    let i = m.image.as_ref().unwrap();
    assert_eq!((i.id, i.name.as_str()), (Some(18), "test"));
    assert_eq!(i.image_type, Some(ImageType::Datablock));
    assert_eq!((i.format.as_str(), i.size_mb), ("qcow2", Some(2048)));
    assert_eq!((i.datastore_id, i.target_snapshot), (Some(103), Some(-1)));
    assert_eq!(i.template.get("DEV_PREFIX"), Some("vd"));
    let ds = &m.datastore;
    assert_eq!((ds.id, ds.name.as_str()), (103, "one_test_autoplace"));
    assert_eq!(ds.base_path, "/var/lib/one/datastores/103");
    assert_eq!(ds.bridge_list(), ["oneubu6120", "oneubu6121", "oneubu6122"]);
    assert_eq!(ds.template.get("TM_MAD_SYSTEM"), Some("ssh,shared"));
    assert_eq!(ds.template.get("CLONE_TARGET_SSH"), Some("SELF"));
    assert_eq!(ds.template.get("COMPATIBLE_SYS_DS"), Some("0,101"));
    assert_eq!(ds.template.get("LINSTOR_CLONE_MODE"), Some("copy"));
}

#[test]
fn linstor_monitor_message() {
    let m = ds_fixture("linstor-test_driver_action-MONITOR_XML.xml", "117");
    m.check_for("monitor").unwrap();
    assert!(m.image.is_none());
    let ds = &m.datastore;
    assert_eq!((ds.id, ds.name.as_str()), (117, "linstor2"));
    assert_eq!(ds.base_path, "/var/lib/one/datastores/117");
    assert_eq!(ds.bridge_list(), ["no", "one", "cares"]);
    assert_eq!(ds.template.get("LINSTOR_STORAGE_POOL"), Some("thin"));
    assert_eq!(ds.template.get("SAFE_DIRS"), Some("/var/tmp"));
}

#[test]
fn linstor_stat_message() {
    // Line-wrapped by its author (`<BASE_PATH>\n<![CDATA[…]]>`): values are trimmed.
    let m = ds_fixture("linstor-test_driver_action-STAT_XML.xml", "3");
    m.check_for("stat").unwrap();
    let i = m.image.as_ref().unwrap();
    assert_eq!(
        i.path,
        "http://centos.osuosl.org/7/isos/x86_64/CentOS-7-x86_64-Minimal-1804.iso\""
    );
    assert_eq!((i.id, i.size_mb), (None, None));
    let ds = &m.datastore;
    assert_eq!((ds.id, ds.name.as_str()), (106, "linstor"));
    assert_eq!(ds.base_path, "/var/lib/one/datastores/106");
    assert_eq!(ds.template.get("BRIDGE_LIST"), Some("no one cares"));
    assert_eq!(ds.template.get("DS_MAD"), Some("linstor"));
}

/// A `<VM>` or `<DATASTORE>` document through the three `decode` forms and base64.
fn document_fixture(name: &str) -> (String, serde_json::Value) {
    let text = fixture(&format!("opennebula/{name}"));
    let json = decode_json(&text);
    assert_eq!(decode_json(&b64(&text)), json);
    (text, json)
}

#[test]
fn linstor_vm_document() {
    let (text, json) = document_fixture("linstor-test_vm-TEXT_XML_1.xml");
    assert_eq!(json["id"], 0);
    let vm = VmXml::from_xml(&text).unwrap();
    assert_eq!((vm.id, vm.state, vm.lcm_state), (0, Some(3), Some(18)));
    assert_eq!(vm.disks.len(), 3);
    let d0 = vm.disk(0).unwrap();
    assert!(d0.persistent && !d0.clone);
    assert_eq!(
        (d0.image_id, d0.datastore_id, d0.size_mb),
        (Some(146), Some(1), Some(906))
    );
    assert_eq!(
        d0.source.as_deref(),
        Some("/var/lib/one//datastores/1/baee88c26cb6055334aaed153a7c8327")
    );
    assert_eq!(
        (d0.disk_type.as_str(), d0.tm_mad.as_deref()),
        ("FILE", Some("ssh"))
    );
    let d1 = vm.disk(1).unwrap();
    assert_eq!((d1.disk_type.as_str(), d1.size_mb), ("fs", Some(4096)));
    assert_eq!((d1.image_id, d1.format.as_deref()), (None, Some("raw")));
    let d2 = vm.disk(2).unwrap();
    assert!(d2.clone && !d2.persistent);
    assert_eq!((d2.image_id, d2.disk_type.as_str()), (Some(149), "BLOCK"));
    assert_eq!(vm.history.len(), 1);
    assert_eq!(vm.history[0].hostname, "sam");
    assert_eq!(
        (vm.history[0].ds_id, vm.history[0].tm_mad.as_deref()),
        (Some(0), Some("ssh"))
    );
    // The same document as premigrate's stdin (base64, one line).
    let args = os(&["sam", "kvm2", "/var/lib/one//datastores/0/0", "0", "0"]);
    match TmArgs::parse("premigrate", &args, &mut b64(&text).as_bytes()).unwrap() {
        TmArgs::Premigrate(m) => {
            assert_eq!((m.src_host.as_str(), m.dst_host.as_str()), ("sam", "kvm2"));
            assert_eq!(m.vm_dir, "/var/lib/one/datastores/0/0");
            assert_eq!((m.vm_id, m.ds_id, m.caller_tm), (0, 0, None));
            assert_eq!(m.vm.disks.len(), 3);
            assert_eq!(m.vm.raw, text);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn linstor_datastore_documents() {
    let (text, json) = document_fixture("linstor-test_datastore-TEST_XML_1.xml");
    assert_eq!(json["id"], 1);
    let ds = Datastore::from_xml(&text).unwrap();
    assert_eq!((ds.id, ds.name.as_str()), (1, "default"));
    assert_eq!((ds.ds_mad.as_str(), ds.tm_mad.as_str()), ("fs", "shared"));
    assert_eq!(ds.ds_type, Some(DatastoreType::Image));
    assert_eq!(ds.template.get("LINSTOR_STORAGE_POOL"), Some("drbdpool"));
    assert_eq!(ds.template.get("LINSTOR_AUTO_PLACE"), Some("3"));
    // Attributes keep the document order (not alphabetical: the author appended two).
    let names: Vec<&str> = ds.template.iter().map(|(k, _)| k).collect();
    assert_eq!(names.last(), Some(&"LINSTOR_AUTO_PLACE"));

    let (text, json) = document_fixture("linstor-test_datastore-TEST_XML_2.xml");
    assert_eq!(json["name"], "fantastic-datastore");
    let ds = Datastore::from_xml(&text).unwrap();
    assert_eq!((ds.id, ds.ds_mad.as_str()), (100, "linstor"));
    assert_eq!(ds.ds_type, Some(DatastoreType::Backup));
    assert_eq!(
        ds.template.get("DS_MAD"),
        Some("fs"),
        "the template is kept as written"
    );

    let e = Datastore::from_xml("<VM><ID>1</ID></VM>").unwrap_err();
    assert_eq!(exit_code(&e), 2);
}

/// Every fixture file and the test that checks it.
const CHECKED: &[&str] = &[
    "docs-sd-backup-stdin-example.xml",
    "docs-sd-decoded-example-image-ds.xml",
    "docs-sd-decoded-example-system-ds-monitor.xml",
    "linstor-test_datastore-TEST_XML_1.xml",
    "linstor-test_datastore-TEST_XML_2.xml",
    "linstor-test_driver_action-MKFS_XML.xml",
    "linstor-test_driver_action-MONITOR_XML.xml",
    "linstor-test_driver_action-STAT_XML.xml",
    "linstor-test_vm-TEXT_XML_1.xml",
    "reconstructed-7x-ds-cp-url.b64",
    "reconstructed-7x-ds-cp-url.xml",
    "reconstructed-7x-ds-mkfs-datablock.b64",
    "reconstructed-7x-ds-mkfs-datablock.xml",
    "reconstructed-7x-ds-monitor-image-ds.b64",
    "reconstructed-7x-ds-monitor-image-ds.xml",
    "reconstructed-7x-ds-monitor-system-ds.b64",
    "reconstructed-7x-ds-monitor-system-ds.xml",
    "reconstructed-7x-ds-rm.b64",
    "reconstructed-7x-ds-rm.xml",
    "reconstructed-7x-ds-snap_delete.b64",
    "reconstructed-7x-ds-snap_delete.xml",
    "reconstructed-7x-ds-stat-url.b64",
    "reconstructed-7x-ds-stat-url.xml",
];

#[test]
fn every_fixture_is_checked() {
    let mut present: Vec<String> = std::fs::read_dir(fixtures_dir().join("opennebula"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".xml") || n.ends_with(".b64"))
        .collect();
    present.sort();
    assert_eq!(
        present, CHECKED,
        "a fixture was added or removed: add its test"
    );
}
