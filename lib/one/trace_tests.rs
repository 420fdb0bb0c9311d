//! Replays the recordings of a real oned 7.4.0 (`tests/fixtures/oned-traces*/`): every
//! datastore and TM call of `all-calls-summary.txt` is decoded or parsed exactly as the driver
//! would receive it, and checked against values read independently from the argv text.
//!
//! Counts are asserted per action, so a line that stops being recognised (or a parse that is
//! silently skipped) fails the test instead of shrinking it.

use std::collections::BTreeMap;
use std::ffi::OsString;

use serde_json::Value;

use super::fixtures_tests::{b64, fixture, fixtures_dir};
use super::input::{read_ds_input, InputMode};
use super::message::DsMessage;
use super::tm::{TmArgs, TM_ACTIONS};
use super::vm::VmXml;
use super::xml::Element;
use super::DS_ACTIONS;

/// One line of `all-calls-summary.txt`.
#[derive(Debug)]
struct Call {
    seq: String,
    /// `datastore`, `tm` or `vmm`.
    kind: String,
    /// The script name as oned executed it (`clone.dummy`).
    script: String,
    /// argv[1..].
    args: Vec<String>,
}

impl Call {
    /// The action without the `.<tm>` suffix.
    fn action(&self) -> &str {
        self.script.split('.').next().unwrap()
    }

    fn stdin_file(&self, set: &str, driver: &str) -> String {
        format!(
            "{set}/xml/{}-{}-{driver}-{}.stdin.xml",
            self.seq, self.kind, self.script
        )
    }
}

/// Parses a summary: `seq time [scenario] /var/lib/one/remotes/<kind>/<driver>/<script> args…`.
fn summary(set: &str) -> (String, Vec<Call>) {
    let text = fixture(&format!("{set}/all-calls-summary.txt"));
    let mut driver = None;
    let calls: Vec<Call> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            assert!(
                w.len() >= 4 && w[2].starts_with('['),
                "unexpected line {l:?}"
            );
            let rest = w[3]
                .strip_prefix("/var/lib/one/remotes/")
                .unwrap_or_else(|| panic!("{l}"));
            let parts: Vec<&str> = rest.split('/').collect();
            assert_eq!(parts.len(), 3, "{l}");
            if parts[0] != "vmm" {
                let d = driver.get_or_insert_with(|| parts[1].to_string());
                assert_eq!(d, parts[1], "one storage driver per trace set");
            }
            // Long base64 arguments are cut in the summary; only VMM calls have them (7.x
            // gives storage actions their message on stdin).
            assert!(parts[0] == "vmm" || !l.contains("..."), "{l}");
            Call {
                seq: w[0].to_string(),
                kind: parts[0].to_string(),
                script: parts[2].to_string(),
                args: w[4..].iter().map(|s| s.to_string()).collect(),
            }
        })
        .collect();
    (driver.unwrap(), calls)
}

fn os(args: &[String]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn count(map: &mut BTreeMap<String, usize>, key: String) {
    *map.entry(key).or_default() += 1;
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The datastore messages of a trace set (DS actions and `tm/<tm>/monitor`), decoded as the
/// driver receives them in 7.x (`<id>` + base64 on stdin) and checked for the action.
fn replay_ds_calls(set: &str) -> BTreeMap<String, usize> {
    let (driver, calls) = summary(set);
    let mut seen = BTreeMap::new();
    for c in &calls {
        let is_msg = (c.kind == "datastore" && DS_ACTIONS.contains(&c.script.as_str()))
            || (c.kind == "tm" && c.script == "monitor");
        if !is_msg {
            continue;
        }
        assert_eq!(c.args.len(), 1, "7.x passes only the id: {c:?}");
        let xml = fixture(&c.stdin_file(set, &driver));
        let input = read_ds_input(&os(&c.args), &mut b64(&xml).as_bytes())
            .unwrap_or_else(|e| panic!("{c:?}: {e:#}"));
        assert_eq!(input.mode, InputMode::Stdin);
        assert_eq!(input.xml, xml);
        let m = &input.message;
        m.check_for(&c.script)
            .unwrap_or_else(|e| panic!("{c:?}: {e:#}"));
        let id: i64 = c.args[0].parse().unwrap();
        match c.script.as_str() {
            // The id is the datastore for monitor…
            "monitor" => {
                assert_eq!(m.datastore.id, id, "{c:?}");
                assert!(m.image.is_none());
                // …and a system datastore (tm/monitor) says where its VM directories are.
                if c.kind == "tm" {
                    assert_eq!(
                        m.datastore_location.as_deref(),
                        Some("/var/lib/one/datastores")
                    );
                    assert!(m.monitor_vm_disks.is_some());
                    assert_eq!(m.datastore.template.get("SHARED"), Some("YES"));
                }
            }
            // …a request counter for stat (no image id, a PATH)…
            "stat" => {
                let i = m.image.as_ref().unwrap();
                assert_eq!(i.id, None);
                assert_eq!(i.path, "/var/tmp/disk10m.raw");
            }
            // …and the image for everything else.
            _ => {
                let i = m.image.as_ref().unwrap();
                assert_eq!(i.id, Some(id), "{c:?}");
                assert_eq!(i.datastore_id, Some(m.datastore.id));
                assert_eq!(
                    m.datastore.base_path,
                    format!("/var/lib/one/datastores/{}", m.datastore.id)
                );
            }
        }
        assert_eq!(
            m.datastore.ds_mad,
            if c.kind == "tm" { "-" } else { &driver }
        );
        // A backup datastore (102 in the shared set) has no TM.
        let backup = m.datastore.ds_type == Some(super::message::DatastoreType::Backup);
        assert_eq!(m.datastore.tm_mad, if backup { "-" } else { &driver });
        count(&mut seen, format!("{} {}", c.kind, c.script));
    }
    seen
}

#[test]
fn shared_trace_datastore_messages_decode() {
    assert_eq!(
        replay_ds_calls("oned-traces"),
        counts(&[
            ("datastore clone", 1),
            ("datastore cp", 7),
            ("datastore mkfs", 6),
            ("datastore monitor", 35),
            ("datastore rm", 14),
            ("datastore snap_delete", 1),
            ("datastore snap_flatten", 1),
            ("datastore snap_revert", 1),
            ("datastore stat", 7),
            ("tm monitor", 3),
        ])
    );
}

#[test]
fn nonshared_trace_datastore_messages_decode() {
    assert_eq!(
        replay_ds_calls("oned-traces-nonshared"),
        counts(&[
            ("datastore cp", 3),
            ("datastore mkfs", 5),
            ("datastore monitor", 23),
            ("datastore rm", 8),
            ("datastore stat", 3),
        ])
    );
}

/// Every stdin file of a set decodes with the parser for its root element, and belongs to a
/// call of the summary.
fn decode_all_stdin_files(set: &str) -> BTreeMap<String, usize> {
    let (driver, calls) = summary(set);
    let mut seen = BTreeMap::new();
    let dir = fixtures_dir().join(set).join("xml");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for name in names {
        let call = calls
            .iter()
            .find(|c| c.stdin_file(set, &driver) == format!("{set}/xml/{name}"))
            .unwrap_or_else(|| panic!("{name} matches no call of the summary"));
        let xml = fixture(&format!("{set}/xml/{name}"));
        let root = Element::parse(&xml).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        match root.name.as_str() {
            "DS_DRIVER_ACTION_DATA" => {
                DsMessage::from_xml(&xml).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            }
            "VM" => {
                let vm = VmXml::from_xml(&xml).unwrap_or_else(|e| panic!("{name}: {e:#}"));
                assert!(!vm.disks.is_empty(), "{name}");
            }
            other => panic!("{name}: root <{other}>"),
        }
        count(&mut seen, format!("{} {}", root.name, call.script));
    }
    seen
}

#[test]
fn shared_trace_every_stdin_document_decodes() {
    assert_eq!(
        decode_all_stdin_files("oned-traces"),
        counts(&[
            ("DS_DRIVER_ACTION_DATA backup", 2),
            ("DS_DRIVER_ACTION_DATA clone", 1),
            ("DS_DRIVER_ACTION_DATA cp", 7),
            ("DS_DRIVER_ACTION_DATA mkfs", 6),
            ("DS_DRIVER_ACTION_DATA monitor", 38),
            ("DS_DRIVER_ACTION_DATA restore", 1),
            ("DS_DRIVER_ACTION_DATA rm", 14),
            ("DS_DRIVER_ACTION_DATA snap_delete", 1),
            ("DS_DRIVER_ACTION_DATA snap_flatten", 1),
            ("DS_DRIVER_ACTION_DATA snap_revert", 1),
            ("DS_DRIVER_ACTION_DATA stat", 7),
            ("VM postbackup", 1),
            ("VM postbackup_live", 1),
            ("VM postmigrate", 1),
            ("VM prebackup", 1),
            ("VM prebackup_live", 1),
            ("VM premigrate", 1),
        ])
    );
}

#[test]
fn nonshared_trace_every_stdin_document_decodes() {
    assert_eq!(
        decode_all_stdin_files("oned-traces-nonshared"),
        counts(&[
            ("DS_DRIVER_ACTION_DATA cp", 3),
            ("DS_DRIVER_ACTION_DATA mkfs", 5),
            ("DS_DRIVER_ACTION_DATA monitor", 23),
            ("DS_DRIVER_ACTION_DATA rm", 8),
            ("DS_DRIVER_ACTION_DATA stat", 3),
            ("VM failmigrate", 1),
            ("VM postmigrate", 1),
            ("VM premigrate", 2),
        ])
    );
}

/// `//` collapsed: what oned's paths mean.
fn collapse(p: &str) -> String {
    let mut s = p.to_string();
    while s.contains("//") {
        s = s.replace("//", "/");
    }
    s
}

/// Every `{"host":…, "path":…}` object and every `disk_id` in a parsed value.
fn walk(v: &Value, host_paths: &mut Vec<(String, String)>, disk_ids: &mut Vec<u64>) {
    match v {
        Value::Object(o) => {
            if let (Some(Value::String(h)), Some(Value::String(p))) = (o.get("host"), o.get("path"))
            {
                host_paths.push((h.clone(), p.clone()));
            }
            if let Some(Value::Number(n)) = o.get("disk_id") {
                disk_ids.push(n.as_u64().unwrap());
            }
            o.iter()
                .filter(|(k, _)| *k != "vm")
                .for_each(|(_, v)| walk(v, host_paths, disk_ids));
        }
        Value::Array(a) => a.iter().for_each(|v| walk(v, host_paths, disk_ids)),
        _ => {}
    }
}

/// Parses one TM call and checks the typed result against the argv text (reference §4.2).
fn check_tm_call(set: &str, driver: &str, c: &Call) -> TmArgs {
    let action = c.action();
    let migrate = matches!(action, "premigrate" | "postmigrate" | "failmigrate");
    let stdin = if migrate {
        b64(&fixture(&c.stdin_file(set, driver)))
    } else {
        String::new()
    };
    let parsed = TmArgs::parse(action, &os(&c.args), &mut stdin.as_bytes())
        .unwrap_or_else(|e| panic!("{c:?}: {e:#}"));
    let j = serde_json::to_value(&parsed).unwrap();
    let a = &c.args;
    let n = a.len();
    assert_eq!(j["action"], action, "{c:?}");

    // vm id and datastore id: the last two arguments, or 4th/5th for the migrate family.
    let (vm_at, ds_at) = if migrate { (3, 4) } else { (n - 2, n - 1) };
    assert_eq!(j["vm_id"], a[vm_at].parse::<i64>().unwrap(), "{c:?}");
    assert_eq!(j["ds_id"], a[ds_at].parse::<i64>().unwrap(), "{c:?}");
    assert_eq!(parsed.vm_id(), Some(a[vm_at].parse().unwrap()));

    // Every host:path argument, with `//` collapsed; every disk.N.
    let mut want_hp: Vec<(String, String)> = a
        .iter()
        .filter_map(|s| s.split_once(':'))
        .map(|(h, p)| (h.to_string(), collapse(p)))
        .collect();
    let mut want_disks: Vec<u64> = a
        .iter()
        .filter_map(|s| s.rsplit_once("/disk.").and_then(|(_, n)| n.parse().ok()))
        .collect();
    let (mut got_hp, mut got_disks) = (Vec::new(), Vec::new());
    walk(&j, &mut got_hp, &mut got_disks);
    for v in [&mut want_hp, &mut got_hp] {
        v.sort();
    }
    want_disks.sort();
    got_disks.sort();
    assert_eq!(got_hp, want_hp, "{c:?}");
    assert_eq!(got_disks, want_disks, "{c:?}");

    match action {
        "mkimage" | "mkswap" => assert_eq!(j["size_mb"], a[0].parse::<u64>().unwrap()),
        "resize" => assert_eq!(j["size_mb"], a[1].parse::<u64>().unwrap()),
        a1 if a1.starts_with("snap_") => assert_eq!(j["snap_id"], a[1].parse::<u64>().unwrap()),
        "cpds" => {
            assert_eq!(j["source"], a[1].as_str());
            match a[2].as_str() {
                "-1" => assert!(j["snap_id"].is_null()),
                s => assert_eq!(j["snap_id"], s.parse::<u64>().unwrap()),
            }
        }
        "mvds" => assert_eq!(j["source"], a[1].as_str()),
        "context" => {
            let files: Vec<String> = a[..n - 3].iter().map(|f| collapse(f)).collect();
            let got: Vec<String> = j["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["path"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(got, files);
        }
        _ if migrate => {
            assert_eq!(j["src_host"], a[0].as_str());
            assert_eq!(j["dst_host"], a[1].as_str());
            assert_eq!(j["vm_dir"], collapse(&a[2]));
            match &parsed {
                TmArgs::Premigrate(m) | TmArgs::Postmigrate(m) | TmArgs::Failmigrate(m) => {
                    assert_eq!(m.vm.id, m.vm_id, "the VM on stdin is the VM of argv");
                    assert!(!m.vm.disks.is_empty());
                }
                other => panic!("{other:?}"),
            }
        }
        _ => {}
    }
    parsed
}

/// The TM calls of a set: parsed ones by action (suffix kept), and the unsupported ones.
fn replay_tm_calls(set: &str) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let (driver, calls) = summary(set);
    let (mut parsed, mut unsupported) = (BTreeMap::new(), BTreeMap::new());
    for c in calls
        .iter()
        .filter(|c| c.kind == "tm" && c.script != "monitor")
    {
        if TM_ACTIONS.contains(&c.action()) {
            check_tm_call(set, &driver, c);
            count(&mut parsed, c.script.clone());
        } else {
            count(&mut unsupported, c.script.clone());
        }
    }
    (parsed, unsupported)
}

#[test]
fn shared_trace_tm_calls_parse() {
    let (parsed, unsupported) = replay_tm_calls("oned-traces");
    assert_eq!(
        parsed,
        counts(&[
            ("clone", 8),
            ("clone.dummy", 1),
            ("context", 5),
            ("cpds", 4),
            ("cpds.dummy", 1),
            ("delete", 19),
            ("delete.dummy", 1),
            ("ln", 5),
            ("ln.dummy", 1),
            ("mkimage", 5),
            ("mkswap", 1),
            ("mv", 42),
            ("mv.dummy", 2),
            ("mvds", 5),
            ("mvds.dummy", 1),
            ("postmigrate", 1),
            ("premigrate", 1),
            ("resize", 3),
            ("resize.dummy", 1),
            ("snap_create", 2),
            ("snap_create_live", 2),
            ("snap_create_live.dummy", 1),
            ("snap_delete", 3),
            ("snap_revert", 2),
            ("snap_revert.dummy", 1),
        ])
    );
    assert_eq!(parsed.values().sum::<usize>(), 118);
    // Backups are not part of this driver (reference §2: backup datastores only).
    assert_eq!(
        unsupported,
        counts(&[
            ("postbackup", 1),
            ("postbackup_live", 1),
            ("prebackup", 1),
            ("prebackup_live", 1),
            ("restore", 1),
        ])
    );
}

#[test]
fn nonshared_trace_tm_calls_parse() {
    let (parsed, unsupported) = replay_tm_calls("oned-traces-nonshared");
    assert_eq!(
        parsed,
        counts(&[
            ("clone", 12),
            ("context", 21),
            ("cpds", 4),
            ("delete", 60),
            ("failmigrate", 1),
            ("ln", 12),
            ("mkimage", 13),
            ("mkswap", 11),
            ("mv", 102),
            ("mvds", 7),
            ("postmigrate", 1),
            ("premigrate", 2),
            ("resize", 3),
            ("snap_create", 1),
            ("snap_create_live", 3),
            ("snap_delete", 2),
            ("snap_revert", 1),
        ])
    );
    assert_eq!(parsed.values().sum::<usize>(), 256);
    assert!(unsupported.is_empty(), "{unsupported:?}");
}

/// The call with this sequence number, parsed.
fn parsed_call(set: &str, seq: &str) -> TmArgs {
    let (driver, calls) = summary(set);
    let c = calls.iter().find(|c| c.seq == seq).unwrap();
    check_tm_call(set, &driver, c)
}

#[test]
fn trace_spot_checks() {
    use super::tm::Target;
    match parsed_call("oned-traces", "00015") {
        TmArgs::Ln {
            src,
            dst,
            vm_id,
            ds_id,
        } => {
            assert_eq!(
                (src.host.as_str(), src.path.as_str()),
                ("vm", "/var/lib/one/datastores/100/rec-img-2")
            );
            assert_eq!(dst.at.host, "host-d1");
            assert_eq!(dst.disk_id, 0);
            assert_eq!(dst.at.vm_dir(), "/var/lib/one/datastores/101/0");
            assert_eq!(dst.at.system_ds(), Some(101));
            assert_eq!((vm_id, ds_id), (0, 100));
        }
        other => panic!("{other:?}"),
    }
    match parsed_call("oned-traces-nonshared", "00156") {
        TmArgs::Cpds {
            src,
            source,
            snap_id,
            vm_id,
            ds_id,
        } => {
            assert_eq!((src.at.host.as_str(), src.disk_id), ("host-r2", 0));
            assert_eq!(source, "/var/lib/one//datastores/100/rec-img-6");
            assert_eq!((snap_id, vm_id, ds_id), (Some(1), 0, 100));
        }
        other => panic!("{other:?}"),
    }
    match parsed_call("oned-traces-nonshared", "00329") {
        TmArgs::Delete {
            target: Target::Dir(d),
            vm_id,
            ds_id,
        } => {
            assert_eq!(
                (d.host.as_str(), d.path.as_str()),
                ("host-r1", "/var/lib/one/datastores/101/10")
            );
            assert_eq!(d.system_ds(), Some(101));
            assert_eq!((vm_id, ds_id), (10, 101));
        }
        other => panic!("{other:?}"),
    }
    match parsed_call("oned-traces-nonshared", "00015") {
        TmArgs::Context { files, dst, .. } => {
            assert_eq!(files.len(), 1);
            assert_eq!(files[0].path, "/var/lib/one/vms/0/context.sh");
            assert_eq!(files[0].name, None);
            assert_eq!((dst.at.host.as_str(), dst.disk_id), ("host-r1", 4));
        }
        other => panic!("{other:?}"),
    }
    match parsed_call("oned-traces-nonshared", "00112") {
        TmArgs::Premigrate(m) => {
            assert_eq!(
                (m.src_host.as_str(), m.dst_host.as_str()),
                ("host-r2", "host-r1")
            );
            assert_eq!(m.vm_dir, "/var/lib/one/datastores/102/0");
            assert_eq!((m.vm_id, m.ds_id), (0, 102));
            // The VM document is the one oned embedded, with its disks and history.
            let persistent = m.vm.disk(0).unwrap();
            assert!(persistent.persistent);
            assert_eq!(persistent.datastore_id, Some(100));
            assert!(m.vm.disks.iter().any(|d| d.disk_type == "swap"));
            assert!(!m.vm.history.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

/// The whole program (argv rewrite, clap, config, decoding, dispatch) on every supported call
/// of both sets, invoked as oned would invoke our driver, with every host unreachable (ssh and
/// the OpenNebula lookups are `/bin/false`) and an empty frontend root. Each action gets past
/// decoding and validation and fails on what it needs, cleanly and naming itself (1, or 4 for
/// another driver's image SOURCE), or succeeds without either (mkfs save_as, monitoring) —
/// never with a bad-input refusal, never "not implemented".
#[test]
fn every_trace_call_reaches_its_action() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bsud.toml");
    std::fs::write(
        &config,
        format!(
            "journald = false\nlock_dir = {:?}\nfrontend_host = \"bsud-test-frontend\"\nfrontend_root = {:?}\nssh_command = [\"/bin/false\"]\nonevm_command = [\"/bin/false\"]\nonedatastore_command = [\"/bin/false\"]\n",
            dir.path().join("locks"),
            dir.path().join("fe")
        ),
    )
    .unwrap();
    let env = crate::config::Env::from_pairs([("BSUD_CONFIG", config.to_str().unwrap())]);
    let mut runs = 0;
    for set in ["oned-traces", "oned-traces-nonshared"] {
        let (driver, calls) = summary(set);
        for c in &calls {
            let supported = match c.kind.as_str() {
                "datastore" => DS_ACTIONS.contains(&c.script.as_str()),
                "tm" => TM_ACTIONS.contains(&c.action()),
                _ => false,
            };
            if !supported {
                continue;
            }
            let stdin = match (c.kind.as_str(), c.action()) {
                ("tm", "premigrate" | "postmigrate" | "failmigrate" | "monitor")
                | ("datastore", _) => b64(&fixture(&c.stdin_file(set, &driver))),
                _ => String::new(),
            };
            let mut argv = vec![OsString::from(format!(
                "/var/lib/one/remotes/{}/bsud/{}",
                c.kind, c.script
            ))];
            argv.extend(os(&c.args));
            let out = crate::app::run(argv, &mut stdin.as_bytes(), &env);
            let text = out.error_text();
            let foreign_image_ok =
                c.kind == "tm" && matches!(c.action(), "ln" | "mvds" | "cpds" | "clone");
            match out.code() {
                0 if c.kind == "tm" => assert!(
                    matches!(c.action(), "monitor" | "monitor_ds"),
                    "{c:?}: succeeded with nothing to reach"
                ),
                0 => assert_eq!(
                    String::from_utf8_lossy(&out.stdout).lines().count(),
                    1,
                    "{c:?}"
                ),
                2 => panic!("{c:?}: refused as bad input: {text}"),
                4 if !foreign_image_ok => panic!("{c:?}: {text}"),
                _ => assert!(
                    out.stdout.is_empty()
                        && text.lines().count() == 1
                        && text.starts_with(&format!("{}: ", c.action()))
                        && !text.contains("not implemented yet"),
                    "{c:?}: {text}"
                ),
            }
            runs += 1;
        }
    }
    assert_eq!(runs, (73 + 3 + 118) + (42 + 256));
}
