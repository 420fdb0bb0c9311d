//! journald receives each action's events with the context as fields (`ACTION`, `VM_ID`…),
//! so `journalctl -t one-bsud VM_ID=42` finds one VM's lines.
//!
//! journald's socket path is fixed (`/run/systemd/journal/socket`). On a machine without
//! journald (CI, this project's build machine) the test binds that path itself and reads the
//! datagrams in journald's native format; where a real journald runs, it asks `journalctl`.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SOCKET: &str = "/run/systemd/journal/socket";

/// Fields of one native-protocol datagram: `KEY=value\n` or `KEY\n<u64 le length><bytes>\n`.
fn fields(mut d: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Some(nl) = d.iter().position(|b| *b == b'\n') {
        let line = &d[..nl];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            out.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            d = &d[nl + 1..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let len = u64::from_le_bytes(d[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let value = String::from_utf8_lossy(&d[nl + 9..nl + 9 + len]).into_owned();
            out.push((key, value));
            d = &d[nl + 9 + len + 1..];
        }
    }
    out
}

#[test]
fn journal_events_carry_the_action_and_the_vm_id() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("fe")).unwrap();
    let config = dir.path().join("bsud.toml");
    // Nothing reachable: `delete` of a frontend disk looks for the VM's history and warns.
    std::fs::write(
        &config,
        format!(
            "journald = true\nlock_dir = {:?}\nfrontend_host = \"fe\"\nfrontend_root = {:?}\nonevm_command = [\"/bin/false\"]\nonedatastore_command = [\"/bin/false\"]\nssh_command = [\"/bin/false\"]\n",
            dir.path().join("locks"),
            dir.path().join("fe")
        ),
    )
    .unwrap();
    // A VM id no other test uses, to find our lines.
    let vm = 900_000 + (std::process::id() % 90_000) as i64;
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_one-bsud"))
            .args([
                "tm",
                "delete",
                &format!("fe:/var/lib/one//datastores/101/{vm}/disk.1"),
                &vm.to_string(),
                "101",
            ])
            .env("BSUD_CONFIG", &config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("WARN: {vm} delete: cannot read VM {vm}'s history")),
            "{stderr}"
        );
    };
    let want = |f: &[(String, String)]| {
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        get("MESSAGE").is_some_and(|m| m.contains(&format!("cannot read VM {vm}'s history")))
            && get("ACTION") == Some("delete")
            && get("VM_ID") == Some(&*vm.to_string())
            && get("SYSLOG_IDENTIFIER") == Some("one-bsud")
            && get("PRIORITY") == Some("4")
    };
    // A socket file left by a killed run of this test: nobody listens on it.
    if Path::new(SOCKET).exists()
        && UnixDatagram::unbound()
            .and_then(|s| s.connect(SOCKET))
            .is_err()
    {
        let _ = std::fs::remove_file(SOCKET);
    }
    if Path::new(SOCKET).exists() {
        // A real journald.
        run();
        std::thread::sleep(Duration::from_secs(1));
        let out = Command::new("journalctl")
            .args(["-t", "one-bsud", "-o", "json", &format!("VM_ID={vm}")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let found = text.lines().any(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let f: Vec<(String, String)> = v
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            want(&f)
        });
        assert!(found, "journalctl VM_ID={vm}: {text}");
        return;
    }
    std::fs::create_dir_all(Path::new(SOCKET).parent().unwrap()).unwrap();
    let sock = UnixDatagram::bind(SOCKET).unwrap();
    struct Unlink;
    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(SOCKET);
        }
    }
    let _unlink = Unlink;
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    run();
    let mut buf = vec![0u8; 1 << 16];
    let mut seen = Vec::new();
    loop {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => panic!("no journal event with ACTION=delete VM_ID={vm} ({e}); saw {seen:?}"),
        };
        let f = fields(&buf[..n]);
        if want(&f) {
            break;
        }
        seen.push(f);
    }
}
