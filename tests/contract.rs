//! The driver contract, end to end: the built `one-bsud` run through the real `remotes/…` entry
//! scripts (installed as oned finds them), through symlinks named after the actions, and
//! explicitly (`one-bsud ds cp …`), with exit code, stdout and stderr checked byte for byte.
//!
//! Every action is implemented: on an install with no hosts, cloud or OpenNebula behind it, each
//! fails cleanly past validation, the same way whatever way it is started and whatever way its
//! message came — proof the three forms and the three message modes are one code path
//! (tests/ds.rs and tests/lifecycle.rs run them for real on the testbed). Every bad
//! input answers exit 2, nothing on stdout and exactly one stderr line that names the problem,
//! starts with the action name and never with `-`.

mod support;

use std::ffi::OsString;

use support::{b64, fixture, Install, Kind, Out, Via, DS_ACTIONS, TM_ACTIONS};

/// A valid datastore message for each datastore action: `(action, base64 message, id)`.
fn valid_ds_messages() -> Vec<(&'static str, String, &'static str)> {
    let rec = |name: &str| {
        String::from_utf8(fixture(&format!(
            "opennebula/reconstructed-7x-ds-{name}.b64"
        )))
        .unwrap()
        .trim_end()
        .to_string()
    };
    let trace = |name: &str| b64(fixture(&format!("oned-traces/xml/{name}.stdin.xml")));
    vec![
        ("cp", rec("cp-url"), "7"),
        ("mkfs", rec("mkfs-datablock"), "8"),
        ("rm", rec("rm"), "5"),
        ("stat", rec("stat-url"), "0"),
        ("monitor", rec("monitor-image-ds"), "101"),
        ("clone", trace("00013-datastore-rec-clone"), "3"),
        // export's id is the marketplace app; the message is the image and its datastore.
        ("export", rec("cp-url"), "12"),
        ("snap_delete", rec("snap_delete"), "9"),
        ("snap_revert", trace("00137-datastore-rec-snap_revert"), "2"),
        (
            "snap_flatten",
            trace("00139-datastore-rec-snap_flatten"),
            "2",
        ),
    ]
}

/// Valid argv (and stdin) for each transfer-manager action, from the oned 7.4 traces.
fn valid_tm_calls() -> Vec<(&'static str, Vec<&'static str>, Vec<u8>)> {
    let vm = |seq: &str, action: &str| {
        b64(fixture(&format!(
            "oned-traces-nonshared/xml/{seq}-tm-recl-{action}.stdin.xml"
        )))
        .into_bytes()
    };
    let none = Vec::new;
    let disk0 = "host-r1:/var/lib/one//datastores/101/1/disk.0";
    vec![
        (
            "clone",
            vec![
                "vm:/var/lib/one//datastores/100/rec-img-0",
                "host-d1:/var/lib/one//datastores/101/0/disk.1",
                "0",
                "100",
            ],
            none(),
        ),
        (
            "ln",
            vec![
                "vm:/var/lib/one//datastores/100/rec-img-2",
                "host-d1:/var/lib/one//datastores/101/0/disk.0",
                "0",
                "100",
            ],
            none(),
        ),
        (
            "mv",
            vec![
                "host-d1:/var/lib/one//datastores/101/0/disk.0",
                "vm:/var/lib/one//datastores/101/0/disk.0",
                "0",
                "100",
            ],
            none(),
        ),
        (
            "mvds",
            vec![
                "host-r1:/var/lib/one//datastores/101/0/disk.0",
                "/var/lib/one//datastores/100/rec-img-2",
                "0",
                "100",
            ],
            none(),
        ),
        (
            "cpds",
            vec![
                "host-r2:/var/lib/one//datastores/101/0/disk.0",
                "/var/lib/one//datastores/100/rec-img-6",
                "1",
                "0",
                "100",
            ],
            none(),
        ),
        (
            "delete",
            vec!["host-r1:/var/lib/one//datastores/101/10", "10", "101"],
            none(),
        ),
        (
            "mkimage",
            vec![
                "256",
                "raw",
                "host-d1:/var/lib/one//datastores/101/0/disk.2",
                "0",
                "101",
            ],
            none(),
        ),
        (
            "mkswap",
            vec![
                "128",
                "host-d1:/var/lib/one//datastores/101/0/disk.3",
                "0",
                "101",
            ],
            none(),
        ),
        (
            "context",
            vec![
                "/var/lib/one/vms/0/context.sh",
                "host-r1:/var/lib/one//datastores/101/0/disk.4",
                "0",
                "101",
            ],
            none(),
        ),
        ("resize", vec![disk0, "30", "1", "100"], none()),
        (
            "premigrate",
            vec![
                "host-r1",
                "host-r2",
                "/var/lib/one//datastores/102/0",
                "0",
                "102",
            ],
            vm("00109", "premigrate"),
        ),
        (
            "postmigrate",
            vec![
                "host-r1",
                "host-r2",
                "/var/lib/one//datastores/102/0",
                "0",
                "102",
            ],
            vm("00111", "postmigrate"),
        ),
        (
            "failmigrate",
            vec![
                "host-r2",
                "host-r1",
                "/var/lib/one//datastores/102/0",
                "0",
                "102",
            ],
            vm("00114", "failmigrate"),
        ),
        ("snap_create", vec![disk0, "1", "1", "100"], none()),
        ("snap_create_live", vec![disk0, "3", "1", "100"], none()),
        ("snap_delete", vec![disk0, "1", "1", "100"], none()),
        ("snap_revert", vec![disk0, "3", "1", "100"], none()),
        (
            "monitor",
            vec!["100"],
            fixture("opennebula/reconstructed-7x-ds-monitor-system-ds.b64"),
        ),
        ("monitor_ds", vec!["/var/lib/one//datastores/100"], none()),
    ]
}

#[test]
fn every_datastore_action_every_way_every_mode() {
    let i = Install::new();
    let messages = valid_ds_messages();
    let mut covered: Vec<&str> = messages.iter().map(|m| m.0).collect();
    covered.sort();
    let mut all = DS_ACTIONS.to_vec();
    all.sort();
    assert_eq!(covered, all, "a datastore action has no valid message here");
    let mut runs = 0;
    for (action, msg, id) in &messages {
        let mut first: Option<Out> = None;
        for via in Via::ALL {
            // ≤ 6.6: message in argv; 6.4.5+ `-i`: `-` + stdin; 6.8+: id + stdin.
            for (args, stdin) in [
                (vec![msg.as_str(), id], &b""[..]),
                (vec!["-", id], msg.as_bytes()),
                (vec![*id], msg.as_bytes()),
            ] {
                let out = i.run(via, Kind::Ds, action, &args, stdin);
                let what = format!("{via:?} {action} {}", args.len());
                // Decoded and acted upon: never "not implemented", never a decoding error,
                // the failure one line naming the action, nothing on stdout.
                assert_ne!(out.code, 4, "{what}: {}", out.stderr_text());
                assert!(out.code != 0 && out.stdout.is_empty(), "{what}: {out:?}");
                let text = out.stderr_text();
                assert!(
                    text.lines().count() == 1 && text.starts_with(&format!("{action}: ")),
                    "{what}: {text}"
                );
                match &first {
                    None => first = Some(out),
                    Some(f) => out.assert_exact(f.code, "", &f.stderr_text(), &what),
                }
                runs += 1;
            }
        }
    }
    assert_eq!(runs, DS_ACTIONS.len() * 3 * 3);
}

/// An install whose ssh and OpenNebula lookups fail at once (`/bin/false`): TM actions run
/// past validation and fail cleanly without any network.
fn offline_install(extra: &str) -> Install {
    Install::with_config(&format!(
        "ssh_command = [\"/bin/false\"]\nonevm_command = [\"/bin/false\"]\nonedatastore_command = [\"/bin/false\"]\n{extra}"
    ))
}

/// A valid TM call on [`offline_install`] reached its action: exit 1 (a host or OpenNebula
/// could not be reached) or 4 (the traces' image SOURCEs are another driver's), nothing on
/// stdout, the last stderr line naming the action; `monitor_ds` of a datastore directory
/// that does not exist prints nothing and succeeds.
fn tm_reached(out: &Out, action: &str, what: &str) {
    if action == "monitor_ds" {
        out.assert_exact(0, "", "", what);
        return;
    }
    let err = out.stderr_text();
    let last = err.lines().last().unwrap_or_default();
    assert!(out.stdout.is_empty(), "{what}");
    assert!([1, 4].contains(&out.code), "{what}: {err}");
    assert!(last.starts_with(&format!("{action}: ")), "{what}: {err}");
    assert!(!last.contains("not implemented yet"), "{what}: {err}");
}

#[test]
fn every_tm_action_every_way() {
    let i = offline_install("");
    let calls = valid_tm_calls();
    let mut covered: Vec<&str> = calls.iter().map(|c| c.0).collect();
    covered.sort();
    let mut all = TM_ACTIONS.to_vec();
    all.sort();
    assert_eq!(covered, all, "a TM action has no valid call here");
    for (action, args, stdin) in &calls {
        let mut codes = Vec::new();
        for via in Via::ALL {
            let out = i.run(via, Kind::Tm, action, args, stdin);
            tm_reached(&out, action, &format!("{via:?} {action} {args:?}"));
            codes.push(out.code);
        }
        codes.dedup();
        assert_eq!(codes.len(), 1, "{action}: the three ways differ");
    }
}

#[test]
fn tm_suffix_selects_the_action() {
    // Mixed mode: oned runs `<tm>/clone.<system tm>` when it exists.
    let i = offline_install("");
    let (_, args, _) = valid_tm_calls()
        .into_iter()
        .find(|c| c.0 == "clone")
        .unwrap();
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    std::fs::copy(
        i.entry(Kind::Tm, "clone"),
        i.entry(Kind::Tm, "clone.fs_lvm_ssh"),
    )
    .unwrap();
    std::os::unix::fs::symlink(i.binary(), i.symlink(Kind::Tm, "clone.ssh")).unwrap();
    for program in [
        i.entry(Kind::Tm, "clone.fs_lvm_ssh"),
        i.symlink(Kind::Tm, "clone.ssh"),
    ] {
        i.exec(&program, &args, b"").assert_fails_with(
            4,
            "clone: image SOURCE \"vm:/var/lib/one/datastores/100/rec-img-0\" is not a bsud image (<host>:vg-one-<ds>/img-one-<id>)",
            "suffix",
        );
    }
}

/// One bad input: `(kind, action, args, stdin, the exact stderr line)`.
type BadCase = (Kind, &'static str, Vec<String>, Vec<u8>, String);

fn bad_inputs() -> Vec<BadCase> {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let ds_msg = |image: &str| {
        b64(format!(
            "<DS_DRIVER_ACTION_DATA>{image}<DATASTORE><ID>101</ID><BASE_PATH>/var/lib/one//datastores/101</BASE_PATH></DATASTORE></DS_DRIVER_ACTION_DATA>"
        ))
        .into_bytes()
    };
    let valid_cp = ds_msg("<IMAGE><ID>7</ID><PATH>/var/tmp/a.img</PATH></IMAGE>");
    let disk = "host-r1:/var/lib/one//datastores/101/7/disk.0";
    let not_allowed = "which is not allowed (only letters, digits and . _ + / @ -)";
    let mut big = vec![b'A'; 1024 * 1024];
    big.push(b'A');
    vec![
        // invalid base64
        (
            Kind::Ds,
            "cp",
            s(&["7"]),
            b"!!!not base64!!!".to_vec(),
            "cp: driver message is not valid base64: '!' at offset 0".into(),
        ),
        (
            Kind::Ds,
            "cp",
            s(&["PERTX0RSSVZFUl9BQ1RJT05fREFUQT4*", "7"]),
            vec![],
            "cp: driver message is not valid base64: '*' at offset 31".into(),
        ),
        (
            Kind::Ds,
            "rm",
            s(&["5"]),
            b"PERTX0RSSVZFUl9BQ1RJT05fREFUQT4=A".to_vec(),
            "rm: driver message is not valid base64: Invalid symbol 61, offset 31.".into(),
        ),
        // valid base64 of something that is not XML
        (
            Kind::Ds,
            "mkfs",
            s(&["8"]),
            b64("hello world").into_bytes(),
            "mkfs: driver message decodes to text that is not XML".into(),
        ),
        (
            Kind::Ds,
            "mkfs",
            s(&["-", "8"]),
            b64([0xff, 0xfe, 0x00, 0x3c]).into_bytes(),
            "mkfs: driver message is neither XML nor base64 of XML: it decodes to binary data"
                .into(),
        ),
        (
            Kind::Ds,
            "stat",
            s(&["0"]),
            b64("<DS_DRIVER_ACTION_DATA><IMAGE>").into_bytes(),
            "stat: invalid XML: element <DS_DRIVER_ACTION_DATA> is not closed".into(),
        ),
        // XML with the wrong root
        (
            Kind::Ds,
            "cp",
            s(&["7"]),
            b64("<VM><ID>7</ID></VM>").into_bytes(),
            "cp: driver message has root element <VM>, expected <DS_DRIVER_ACTION_DATA>".into(),
        ),
        (
            Kind::Tm,
            "monitor",
            s(&["100"]),
            b64("<DATASTORE><ID>100</ID></DATASTORE>").into_bytes(),
            "monitor: driver message has root element <DATASTORE>, expected <DS_DRIVER_ACTION_DATA>"
                .into(),
        ),
        (
            Kind::Tm,
            "premigrate",
            s(&["h1", "h2", "/var/lib/one//datastores/101/7", "7", "101"]),
            valid_cp.clone(),
            "premigrate: the VM on stdin: VM document has root element <DS_DRIVER_ACTION_DATA>, expected <VM>"
                .into(),
        ),
        // missing IMAGE / IMAGE/ID and other required parts
        (
            Kind::Ds,
            "cp",
            s(&["7"]),
            ds_msg("<IMAGE><PATH>/var/tmp/a.img</PATH></IMAGE>"),
            "cp: driver message has no IMAGE/ID".into(),
        ),
        (
            Kind::Ds,
            "rm",
            s(&["7"]),
            ds_msg(""),
            "rm: driver message has no IMAGE element".into(),
        ),
        (
            Kind::Ds,
            "snap_revert",
            s(&["7"]),
            ds_msg("<IMAGE><ID>7</ID><TARGET_SNAPSHOT>-1</TARGET_SNAPSHOT></IMAGE>"),
            "snap_revert: driver message has no IMAGE/TARGET_SNAPSHOT (the snapshot to act on)"
                .into(),
        ),
        (
            Kind::Ds,
            "monitor",
            s(&["101"]),
            b64("<DS_DRIVER_ACTION_DATA></DS_DRIVER_ACTION_DATA>").into_bytes(),
            "monitor: driver message has no DATASTORE element".into(),
        ),
        // non-numeric ids
        (
            Kind::Ds,
            "cp",
            s(&["seven"]),
            valid_cp.clone(),
            "cp: id argument \"seven\" is not a non-negative integer".into(),
        ),
        (
            Kind::Ds,
            "cp",
            s(&["7"]),
            ds_msg("<IMAGE><ID>7a</ID></IMAGE>"),
            "cp: IMAGE/ID is \"7a\", not an integer".into(),
        ),
        (
            Kind::Tm,
            "clone",
            s(&["vm:/var/lib/one//datastores/100/x", disk, "x", "100"]),
            vec![],
            "clone: vm id \"x\" is not a non-negative integer".into(),
        ),
        (
            Kind::Tm,
            "snap_create",
            s(&[disk, "1", "7", "-1"]),
            vec![],
            "snap_create: datastore id \"-1\" is not a non-negative integer".into(),
        ),
        (
            Kind::Tm,
            "resize",
            s(&[disk, "20G", "7", "100"]),
            vec![],
            "resize: size \"20G\" is not a number of MB".into(),
        ),
        (
            Kind::Tm,
            "snap_delete",
            s(&[disk, "one", "7", "100"]),
            vec![],
            "snap_delete: snapshot id \"one\" is not a non-negative integer".into(),
        ),
        (
            Kind::Tm,
            "mv",
            s(&[disk, "vm:/var/lib/one//datastores/101/7/disk.x", "7", "100"]),
            vec![],
            "mv: one side is a disk and the other a directory".into(),
        ),
        // host:path without host, with an empty path, without ':'
        (
            Kind::Tm,
            "delete",
            s(&[":/var/lib/one//datastores/101/7", "7", "101"]),
            vec![],
            "delete: target \":/var/lib/one//datastores/101/7\" has no host before ':'".into(),
        ),
        (
            Kind::Tm,
            "delete",
            s(&["host-r1:", "7", "101"]),
            vec![],
            "delete: target \"host-r1:\" has an empty path".into(),
        ),
        (
            Kind::Tm,
            "ln",
            s(&[":vg-one-100/img-one-3", disk, "7", "100"]),
            vec![],
            "ln: source \":vg-one-100/img-one-3\" needs a host and a path".into(),
        ),
        (
            Kind::Tm,
            "mkswap",
            s(&["128", "/var/lib/one//datastores/101/7/disk.1", "7", "101"]),
            vec![],
            "mkswap: destination \"/var/lib/one//datastores/101/7/disk.1\" is not of the form host:path"
                .into(),
        ),
        // a message of 1 MiB + 1 byte on stdin
        (
            Kind::Ds,
            "cp",
            s(&["7"]),
            big.clone(),
            "cp: driver message is larger than 1048576 bytes".into(),
        ),
        (
            Kind::Tm,
            "monitor",
            s(&["-", "100"]),
            big.clone(),
            "monitor: driver message is larger than 1048576 bytes".into(),
        ),
        (
            Kind::Tm,
            "postmigrate",
            s(&["h1", "h2", "/var/lib/one//datastores/101/7", "7", "101"]),
            big,
            "postmigrate: the VM on stdin: driver message is larger than 1048576 bytes".into(),
        ),
        // argv with newlines, quotes, $(…), backticks, ;
        (
            Kind::Ds,
            "cp",
            s(&["7\n"]),
            valid_cp.clone(),
            "cp: id argument \"7\\n\" is not a non-negative integer".into(),
        ),
        (
            Kind::Ds,
            "mkfs",
            s(&["$(reboot)", "8"]),
            vec![],
            "mkfs: driver message is not valid base64: '$' at offset 0".into(),
        ),
        (
            Kind::Ds,
            "rm",
            s(&["-", "5;reboot"]),
            valid_cp.clone(),
            "rm: id argument \"5;reboot\" is not a non-negative integer".into(),
        ),
        (
            Kind::Tm,
            "delete",
            s(&["host-r1:/var/lib/one//datastores/101/7\nrm -rf /", "7", "101"]),
            vec![],
            format!(
                "delete: target path \"/var/lib/one//datastores/101/7\\nrm -rf /\" contains the character '\\n', {not_allowed}"
            ),
        ),
        (
            Kind::Tm,
            "delete",
            s(&["host-r1:/var/lib/one//datastores/101/7'\"", "7", "101"]),
            vec![],
            format!(
                "delete: target path \"/var/lib/one//datastores/101/7'\\\"\" contains the character '\\'', {not_allowed}"
            ),
        ),
        (
            Kind::Tm,
            "clone",
            s(&[
                "vm:/var/lib/one//datastores/100/$(reboot)",
                disk,
                "7",
                "100",
            ]),
            vec![],
            format!(
                "clone: source path \"/var/lib/one//datastores/100/$(reboot)\" contains the character '$', {not_allowed}"
            ),
        ),
        (
            Kind::Tm,
            "mkimage",
            s(&[
                "10",
                "raw",
                "host-r1:/var/lib/one//datastores/101/7/`reboot`/disk.1",
                "7",
                "101",
            ]),
            vec![],
            format!(
                "mkimage: destination path \"/var/lib/one//datastores/101/7/`reboot`/disk.1\" contains the character '`', {not_allowed}"
            ),
        ),
        (
            Kind::Tm,
            "resize",
            s(&["host-r1$(reboot):/var/lib/one//datastores/101/7/disk.0", "20", "7", "100"]),
            vec![],
            "resize: disk \"host-r1$(reboot):/var/lib/one//datastores/101/7/disk.0\" has an invalid host name \"host-r1$(reboot)\""
                .into(),
        ),
        (
            Kind::Tm,
            "context",
            s(&[
                "/var/lib/one/vms/7/context.sh",
                "/var/tmp/x;reboot:'init.sh'",
                "host-r1:/var/lib/one//datastores/101/7/disk.2",
                "7",
                "101",
            ]),
            vec![],
            format!(
                "context: context file path \"/var/tmp/x;reboot\" contains the character ';', {not_allowed}"
            ),
        ),
        (
            Kind::Tm,
            "context",
            s(&[
                "/var/tmp/x:'a b'",
                "host-r1:/var/lib/one//datastores/101/7/disk.2",
                "7",
                "101",
            ]),
            vec![],
            "context: context file name \"a b\" contains the character ' ', which is not allowed (only letters, digits and . _ + / @ -)"
                .into(),
        ),
        (
            Kind::Tm,
            "mvds",
            s(&[disk, "/var/lib/one//datastores/100/a b", "7", "100"]),
            vec![],
            format!(
                "mvds: source \"/var/lib/one//datastores/100/a b\" contains the character ' ', {not_allowed}"
            ),
        ),
        (
            Kind::Tm,
            "premigrate",
            s(&["h1", "-oProxyCommand=reboot", "/var/lib/one//datastores/101/7", "7", "101"]),
            vec![],
            "premigrate: invalid host name \"-oProxyCommand=reboot\"".into(),
        ),
        (
            Kind::Tm,
            "monitor_ds",
            s(&["/var/lib/one//datastores/../../../etc"]),
            vec![],
            "monitor_ds: datastore path \"/var/lib/one//datastores/../../../etc\" contains '..'"
                .into(),
        ),
    ]
}

#[test]
fn every_bad_input_fails_with_one_line_every_way() {
    let i = Install::new();
    let cases = bad_inputs();
    for (kind, action, args, stdin, line) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        for via in Via::ALL {
            let out = i.run(via, *kind, action, &args, stdin);
            out.assert_fails_with(2, line, &format!("{via:?} {action} {args:?}"));
        }
    }
    assert_eq!(cases.len(), 40);
}

/// `(action, what the count error says)` for every TM action given `n` arguments.
fn count_error(action: &str, n: usize) -> Option<String> {
    let fixed = |want: usize, usage: &str| {
        (n != want).then(|| format!("{action}: expected {want} arguments ({usage}), got {n}"))
    };
    match action {
        "clone" | "ln" => fixed(4, "host:source host:vm_dir/disk.N vm_id ds_id"),
        "mv" => fixed(4, "src_host:path dst_host:path vm_id ds_id"),
        "mvds" => fixed(4, "host:vm_dir/disk.N source vm_id ds_id"),
        "cpds" => fixed(5, "host:vm_dir/disk.N source snap_id vm_id ds_id"),
        "delete" => fixed(3, "host:path vm_id ds_id"),
        "mkimage" => fixed(5, "size_mb format host:vm_dir/disk.N vm_id ds_id"),
        "mkswap" => fixed(4, "size_mb host:vm_dir/disk.N vm_id ds_id"),
        "resize" => fixed(4, "host:vm_dir/disk.N size_mb vm_id ds_id"),
        "snap_create" | "snap_create_live" | "snap_delete" | "snap_revert" => {
            fixed(4, "host:vm_dir/disk.N snap_id vm_id ds_id")
        }
        "monitor_ds" => fixed(1, "datastore path"),
        "context" => (n < 4).then(|| {
            format!(
                "context: expected at least 4 arguments (file… host:vm_dir/disk.N vm_id ds_id), got {n}"
            )
        }),
        "premigrate" | "postmigrate" | "failmigrate" => (n != 5 && n != 6).then(|| {
            format!(
                "{action}: expected 5 or 6 arguments (src_host dst_host vm_dir vm_id ds_id [tm]), got {n}"
            )
        }),
        "monitor" => match n {
            0 => Some("monitor: missing arguments: expected `<id>` (message on stdin), `- <id>` or `<base64 message> <id>`".into()),
            1 | 2 => None,
            _ => Some(format!("monitor: expected 1 or 2 arguments (`<id>`, `- <id>` or `<base64 message> <id>`), got {n}")),
        },
        other => panic!("no count rule for {other}"),
    }
}

#[test]
fn every_tm_action_refuses_wrong_argument_counts() {
    let i = Install::new();
    let mut refused = 0;
    for (k, action) in TM_ACTIONS.iter().enumerate() {
        let (_, good, _) = valid_tm_calls()
            .into_iter()
            .find(|c| c.0 == *action)
            .unwrap();
        let want = good.len();
        for n in [0, want.saturating_sub(1), want + 1, want + 3] {
            let Some(line) = count_error(action, n) else {
                continue;
            };
            let args: Vec<&str> = std::iter::repeat_n("1", n).collect();
            // Spread the three ways over the cases.
            let via = Via::ALL[(k + n) % 3];
            i.run(via, Kind::Tm, action, &args, b"").assert_fails_with(
                2,
                &line,
                &format!("{via:?} {action} with {n}"),
            );
            refused += 1;
        }
    }
    // Every action refuses at least 0 and one more than it takes (context: fewer than 4).
    assert!(refused >= 2 * TM_ACTIONS.len(), "{refused}");
}

#[test]
fn every_ds_action_refuses_wrong_argument_counts() {
    let i = Install::new();
    for (k, action) in DS_ACTIONS.iter().enumerate() {
        let via = Via::ALL[k % 3];
        i.run(via, Kind::Ds, action, &[], b"").assert_fails_with(
            2,
            &format!("{action}: missing arguments: expected `<id>` (message on stdin), `- <id>` or `<base64 message> <id>`"),
            action,
        );
        i.run(via, Kind::Ds, action, &["a", "b", "7"], b"")
            .assert_fails_with(
                2,
                &format!("{action}: expected 1 or 2 arguments (`<id>`, `- <id>` or `<base64 message> <id>`), got 3"),
                action,
            );
    }
}

#[test]
fn option_lookalikes_are_data_for_actions() {
    // oned's arguments never become options: `--help` through an entry is a bad host:path,
    // not a help screen with exit 0.
    let i = Install::new();
    for via in [Via::Entry, Via::Symlink] {
        i.run(via, Kind::Tm, "delete", &["--help", "1", "2"], b"")
            .assert_fails_with(
                2,
                "delete: target \"--help\" is not of the form host:path",
                &format!("{via:?}"),
            );
        i.run(via, Kind::Ds, "cp", &["--version"], b"")
            .assert_fails_with(
                2,
                "cp: id argument \"--version\" is not a non-negative integer",
                &format!("{via:?}"),
            );
    }
}

#[test]
fn error_markers_wrap_the_message_when_configured() {
    let i = Install::with_config("error_markers = true");
    for via in Via::ALL {
        let out = i.run(via, Kind::Ds, "cp", &["7"], b"!!!");
        out.assert_exact(
            2,
            "",
            "ERROR MESSAGE --8<------\ncp: driver message is not valid base64: '!' at offset 0\nERROR MESSAGE ------>8--\n",
            &format!("{via:?}"),
        );
        let args = [
            "10",
            "qcow2",
            "h:/var/lib/one//datastores/101/0/disk.2",
            "0",
            "101",
        ];
        i.run(via, Kind::Tm, "mkimage", &args, b"").assert_exact(
            4,
            "",
            "ERROR MESSAGE --8<------\nmkimage: volatile disks are raw LVs; FORMAT qcow2 is not supported (set DRIVER=raw)\nERROR MESSAGE ------>8--\n",
            &format!("{via:?}"),
        );
    }
}

#[test]
fn configuration_problems_exit_3_with_one_line() {
    let i = Install::with_config("ssh_comand = [\"ssh\"]");
    let out = i.run(Via::Entry, Kind::Ds, "monitor", &["101"], b"");
    assert_eq!((out.code, out.stdout.len()), (3, 0));
    let err = out.stderr_text();
    assert!(
        err.starts_with(&format!(
            "configuration {}: unknown field `ssh_comand`",
            i.config().display()
        )),
        "{err}"
    );
    assert_eq!(err.matches('\n').count(), 1, "{err}");

    let missing = i.path("nowhere.toml");
    let out = i.exec_env(
        &i.entry(Kind::Ds, "monitor"),
        &["101".into()],
        b"",
        &[("BSUD_CONFIG", missing.as_os_str())],
    );
    out.assert_fails_with(
        3,
        &format!(
            "cannot read configuration {}: No such file or directory (os error 2)",
            missing.display()
        ),
        "missing BSUD_CONFIG",
    );
}

#[test]
fn unknown_action_in_a_driver_folder_is_refused() {
    let i = Install::new();
    std::os::unix::fs::symlink(i.binary(), i.symlink(Kind::Ds, "backup")).unwrap();
    let link = i.symlink(Kind::Ds, "backup");
    i.exec(&link, &["7".into()], b"").assert_fails_with(
        4,
        &format!("{}: unknown datastore action \"backup\"", link.display()),
        "symlink",
    );
    std::fs::copy(i.entry(Kind::Tm, "clone"), i.entry(Kind::Tm, "prebackup")).unwrap();
    let entry = i.entry(Kind::Tm, "prebackup");
    i.exec(&entry, &[], b"").assert_fails_with(
        4,
        &format!(
            "{}: unknown transfer-manager action \"prebackup\"",
            entry.display()
        ),
        "entry",
    );
}

fn decode_out(i: &Install, args: &[&str], stdin: &[u8]) -> Out {
    let args: Vec<OsString> = std::iter::once("decode")
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect();
    // decode works without any configuration.
    i.exec_env(&i.binary(), &args, stdin, &[])
}

#[test]
fn decode_prints_the_message_as_pretty_json() {
    let i = Install::new();
    let rel = "opennebula/reconstructed-7x-ds-cp-url.b64";
    let message = fixture(rel);
    let out = decode_out(&i, &[], &message);
    assert_eq!((out.code, out.stderr_text().as_str()), (0, ""));
    let text = out.stdout_text();
    assert!(
        text.starts_with("{\n  \"image\": {\n    \"id\": 7,\n"),
        "{text}"
    );
    assert!(text.ends_with("}\n"));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["image"]["id"], 7);
    assert_eq!(
        json["image"]["path"],
        "https://dl.example.org/alpine-3.20.qcow2"
    );
    assert_eq!(
        json["image"]["template"]["MD5"],
        "0d3b0e7f5b9c2a1c4e6f8a9b0c1d2e3f"
    );
    assert_eq!(json["datastore"]["id"], 101);
    assert_eq!(
        json["datastore"]["base_path"],
        "/var/lib/one/datastores/101"
    );
    // Template attributes in document order, as oned sent them.
    assert!(text.find("\"ALLOW_ORPHANS\"").unwrap() < text.find("\"BRIDGE_LIST\"").unwrap());

    // The same from a file, from an argument, from `-`, and from the raw XML.
    let file = support::repo().join("tests/fixtures").join(rel);
    let arg = String::from_utf8(message.clone()).unwrap();
    for (args, stdin) in [
        (vec![file.to_str().unwrap()], &b""[..]),
        (vec![arg.trim_end()], &b""[..]),
        (vec!["-"], &message[..]),
    ] {
        decode_out(&i, &args, stdin).assert_exact(0, &text, "", &format!("{args:?}"));
    }
    let xml = fixture("opennebula/reconstructed-7x-ds-cp-url.xml");
    decode_out(&i, &[], &xml).assert_exact(0, &text, "", "raw XML");
}

#[test]
fn decode_shows_vm_and_datastore_documents() {
    let i = Install::new();
    let out = decode_out(
        &i,
        &[],
        &fixture("oned-traces-nonshared/xml/00114-tm-recl-failmigrate.stdin.xml"),
    );
    assert_eq!((out.code, out.stderr_text().as_str()), (0, ""));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["id"], 0);
    assert_eq!(json["disks"][0]["disk_id"], 0);
    let out = decode_out(
        &i,
        &[],
        &fixture("opennebula/linstor-test_datastore-TEST_XML_2.xml"),
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (json["id"].clone(), json["ds_type"].clone()),
        (100.into(), "BACKUP".into())
    );
}

#[test]
fn decode_refuses_garbage_with_one_line() {
    let i = Install::new();
    let cases: &[(&[&str], &[u8], &str)] = &[
        (
            &[],
            b"garbage\n",
            "driver message is neither XML nor base64 of XML: it decodes to binary data",
        ),
        (&[], b"", "driver message is empty"),
        (
            &[],
            b"@@@@",
            "driver message is not valid base64: '@' at offset 0",
        ),
        (
            &["hello"],
            b"",
            "driver message is not valid base64: Invalid input length: 5",
        ),
        (
            &[],
            b"<IMAGE><ID>1</ID></IMAGE>",
            "cannot decode a <IMAGE> document: expected DS_DRIVER_ACTION_DATA, VM or DATASTORE",
        ),
        (&[], b"<DS_DRIVER_ACTION_DATA>", "invalid XML: element <DS_DRIVER_ACTION_DATA> is not closed"),
        (
            &["/nonexistent/message.b64"],
            b"",
            "/nonexistent/message.b64: no such file (give a file, a base64 or XML message, or `-` for stdin)",
        ),
    ];
    for (args, stdin, line) in cases {
        decode_out(&i, args, stdin).assert_fails_with(2, line, &format!("{args:?} {stdin:?}"));
    }
}

#[test]
fn the_installed_binary_runs_by_its_own_name() {
    // The host agent is this very file (`/var/tmp/one/tm/bsud/one-bsud`): its name inside a
    // tm folder must not be taken for an action.
    let i = Install::new();
    let out = i.exec(&i.binary(), &["--version".into()], b"");
    out.assert_exact(
        0,
        &format!("one-bsud {}\n", env!("CARGO_PKG_VERSION")),
        "",
        "--version",
    );
}

#[test]
fn every_help_says_what_it_does() {
    let i = Install::new();
    let paths = bsud::cli::command_descriptions();
    assert!(paths.len() > DS_ACTIONS.len() + TM_ACTIONS.len());
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    for (path, about) in paths {
        assert!(!about.trim().is_empty(), "{path:?} has no description");
        let mut args: Vec<OsString> = path.iter().map(OsString::from).collect();
        args.push("--help".into());
        let out = i.exec(&i.binary(), &args, b"");
        assert_eq!((out.code, out.stderr_text().as_str()), (0, ""), "{path:?}");
        let help = words(&out.stdout_text());
        assert!(
            help.starts_with(&words(&about)),
            "{path:?}: help does not start with its description:\n{help}"
        );
        assert!(help.contains("Usage: one-bsud"), "{path:?}");
    }
}
