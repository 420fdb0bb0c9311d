//! `one-bsud demo` as README's first command runs it (tests named `demo_*`): it reaches a
//! verified end through every step of the story, really compares bytes (a flipped byte makes it
//! fail naming the disk), and leaves nothing — no directory, loop device, FUSE mount or process
//! of its testbed — whether it succeeds, fails or is interrupted.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// The demo's own testbed directory inside a fresh temporary directory.
struct Dir {
    _tmp: tempfile::TempDir,
    tb: PathBuf,
}

fn dir() -> Dir {
    let tmp = tempfile::Builder::new()
        .prefix("demo-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let tb = tmp.path().canonicalize().unwrap().join("tb");
    Dir { _tmp: tmp, tb }
}

fn demo(tb: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_one-bsud"));
    c.arg("demo")
        .arg("--dir")
        .arg(tb)
        .args(extra)
        .env_remove("BSUD_KEEP_TESTBED")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

/// Nothing of the testbed survives: checked on the machine, not taken from the demo's word.
#[track_caller]
fn assert_nothing_left(tb: &Path) {
    assert!(!tb.exists(), "{} left", tb.display());
    let left = bsud::sim::testbed::leftovers(tb);
    assert!(left.is_empty(), "{left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(tb.to_str().unwrap()),
        "a mount under {} is left",
        tb.display()
    );
}

fn events(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

#[test]
fn demo_runs_to_a_verified_end_and_leaves_nothing() {
    let d = dir();
    let out = demo(&d.tb, &["--json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let ev = events(&out.stdout);

    // Every oned call of the story, in order, through the entries, all succeeded.
    let actions: Vec<String> = of(&ev, "action")
        .iter()
        .map(|a| {
            assert_eq!(a["ok"], true, "{a}");
            format!(
                "{} {}",
                a["kind"].as_str().unwrap(),
                a["action"].as_str().unwrap()
            )
        })
        .collect();
    let mut want: Vec<&str> = vec!["ds stat", "ds cp", "ds mkfs", "ds monitor"];
    want.extend(["tm ln", "tm clone", "tm mkimage", "tm mkswap", "tm context"]);
    want.extend(["tm mv"; 5]);
    want.extend(["tm context", "tm premigrate", "tm postmigrate"]);
    want.extend(["ds mkfs", "tm cpds", "tm mvds"]);
    want.extend(["tm delete"; 4]);
    want.extend(["ds rm"; 3]);
    assert_eq!(actions, want);

    // Every byte checked where it matters: the image, each disk on each host, the saved image,
    // the persistent image after terminate.
    let verified: Vec<&str> = of(&ev, "verify")
        .iter()
        .map(|v| {
            assert_eq!(v["ok"], true, "{v}");
            v["what"].as_str().unwrap()
        })
        .collect();
    for w in [
        "image 0 = the qcow2's content",
        "disk.1 on kvm1 = image 0",
        "disk.0 on kvm2 (persistent) = what was written",
        "disk.1 on kvm2 (non-persistent) = what was written",
        "disk.2 on kvm2 (volatile) = what was written",
        "disk.3 on kvm2 (swap) = what was written",
        "disk.3 on kvm1 (swap) = what was written",
        "disk.4 on kvm1 is the context ISO (VMID=42)",
        "image 2 = disk.1",
        "image 1 = disk.0 as the guest left it",
    ] {
        assert!(verified.contains(&w), "{w} not verified: {verified:?}");
    }
    assert_eq!(verified.len(), 23, "{verified:?}");

    // The drives grew (kvm1 datastore 101 appears, then kvm2's) and shrank to nothing.
    let drives = of(&ev, "drives");
    let names = |e: &Value| -> Vec<String> {
        e["drives"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["drive"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(drives[0]), ["kvm1:vg-one-100"]);
    assert_eq!(names(drives[1]), ["kvm1:vg-one-100", "kvm1:vg-one-101"]);
    assert_eq!(names(drives[2]), ["kvm1:vg-one-100", "kvm2:vg-one-101"]);
    assert_eq!(drives[1]["bsus"], 2);
    let last = drives.last().unwrap();
    assert_eq!(last["bsus"], 0, "{last}");
    assert_eq!(names(last), Vec::<String>::new());

    let teardown = of(&ev, "teardown");
    assert_eq!(teardown[0]["left"], serde_json::json!([]));
    let done = of(&ev, "done");
    assert_eq!(done[0]["ok"], true);
    assert_nothing_left(&d.tb);
}

/// One flipped byte in disk 1 before the migration: the copy carries it, the verification on
/// kvm2 catches it, the demo fails naming the disk, and still leaves nothing.
#[test]
fn demo_fails_naming_a_corrupted_disk() {
    let d = dir();
    let out = demo(&d.tb, &["--corrupt-disk", "1"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "demo: verification failed: disk.1 on kvm2 (non-persistent) = what was written: first difference at byte 83898425"
        ),
        "{last}"
    );
    assert!(stdout.contains("MISMATCH"), "{stdout}");
    // Everything before the fault verified; the demo stopped at the first mismatch.
    assert_eq!(stdout.matches("MISMATCH").count(), 1, "{stdout}");
    assert!(!stdout.contains("[5/8]"), "{stdout}");
    assert_nothing_left(&d.tb);
}

/// SIGINT in the middle of the story (what Ctrl-C sends): the demo stops after the running
/// action, tears the testbed down and fails.
#[test]
fn demo_interrupted_leaves_nothing() {
    let d = dir();
    let mut child = demo(&d.tb, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        let at_deploy = l.starts_with("[2/8]");
        seen.push(l);
        if at_deploy {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.starts_with("[2/8]")),
        "{seen:?}"
    );
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{rest:?}\n{stderr}");
    assert_eq!(stderr.lines().last(), Some("demo: interrupted"), "{stderr}");
    assert!(!rest.iter().any(|l| l.starts_with("[3/8]")), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.starts_with("teardown: testbed ")
            && l.ends_with("removed: no process, FUSE mount, loop device or file left")),
        "{rest:?}"
    );
    assert_nothing_left(&d.tb);
}
