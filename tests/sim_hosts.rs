//! Simulated hosts: host views with real LVM on loop devices, lvfs serving LV bytes where LVM
//! puts them, and the testbed ssh transport. Root-only (loop devices, FUSE); every test tears
//! down what it made (lvfs servers, loop devices, directories) even when it fails.

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bsud::exec::{self, Cmd};
use bsud::sim::hostview::{self, attach_volume, detach_volume, HostView};
use bsud::sim::lvfs::LvfsProcess;
use bsud::sim::ssh::register_host;

const SIM: &str = env!("CARGO_BIN_EXE_bsud-sim");
const MIB: u64 = 1 << 20;

/// A scratch testbed: a temp dir, hosts made in it, lvfs servers. Drop stops the servers,
/// detaches every loop device backed by a file under the dir, and removes the dir.
struct Scratch {
    dir: tempfile::TempDir,
    servers: Vec<LvfsProcess>,
    hosts: Vec<HostView>,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("sim-hosts-")
                .tempdir()
                .unwrap(),
            servers: Vec::new(),
            hosts: Vec::new(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn host(&mut self, name: &str) -> HostView {
        let v = HostView::create(self.path().join(name)).unwrap();
        self.hosts.push(v.clone());
        v
    }

    fn volume(&self, name: &str, size: u64) -> PathBuf {
        let p = self.path().join(name);
        std::fs::File::create(&p).unwrap().set_len(size).unwrap();
        p
    }

    fn lvfs(&mut self, host: &HostView) -> usize {
        let log = self.path().join(format!(
            "lvfs-{}.log",
            host.root().file_name().unwrap().to_string_lossy()
        ));
        self.servers
            .push(LvfsProcess::start(Path::new(SIM), host.root(), &log).unwrap());
        self.servers.len() - 1
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.servers.clear();
        for h in &self.hosts {
            let _ = h.detach_all();
        }
        let _ = hostview::detach_loops_under(self.dir.path());
    }
}

/// Runs an LVM (or other) command on a host; panics with its stderr on failure.
fn on(host: &HostView, words: &[&str]) -> String {
    match exec::run(&host.cmd(words[0]).args(&words[1..])) {
        Ok(o) => o.stdout_str(),
        Err(e) => panic!("{e}"),
    }
}

fn run(words: &[&str]) -> String {
    match exec::run(&Cmd::new(words[0]).args(&words[1..])) {
        Ok(o) => o.stdout_str(),
        Err(e) => panic!("{e}"),
    }
}

fn loops_of(host: &HostView) -> Vec<String> {
    host.attached()
        .unwrap()
        .into_iter()
        .map(|(_, l)| l)
        .collect()
}

/// Deterministic, position-dependent bytes (no two MiB alike).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    exec::run(&Cmd::new("sha256sum").stdin_bytes(bytes.to_vec()))
        .unwrap()
        .stdout_str()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// LV byte `off` → (volume file, byte offset in it), computed from LVM's own report,
/// independently of lvfs.
fn locate(host: &HostView, vg_lv: &str, off: u64) -> (PathBuf, u64) {
    let segs = on(
        host,
        &[
            "lvs",
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "--separator",
            ",",
            "--segments",
            "-o",
            "seg_start_pe,seg_size_pe,seg_pe_ranges,vg_extent_size",
            vg_lv,
        ],
    );
    for line in segs.lines() {
        let f: Vec<&str> = line.trim().split(',').collect();
        let (start, size, range, ext): (u64, u64, &str, u64) = (
            f[0].parse().unwrap(),
            f[1].parse().unwrap(),
            f[2],
            f[3].parse().unwrap(),
        );
        if off < start * ext || off >= (start + size) * ext {
            continue;
        }
        let (dev, pes) = range.rsplit_once(':').unwrap();
        let first: u64 = pes.split('-').next().unwrap().parse().unwrap();
        let pe_start: u64 = on(
            host,
            &[
                "pvs",
                "--noheadings",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                "pe_start",
                dev,
            ],
        )
        .trim()
        .parse()
        .unwrap();
        let file = hostview::loop_backing_file(dev).unwrap();
        return (file, pe_start + first * ext + (off - start * ext));
    }
    panic!("offset {off} is not in {vg_lv}");
}

fn read_at(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, off).unwrap();
    buf
}

fn write_at(path: &Path, off: u64, data: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, off).unwrap();
    f.sync_all().unwrap();
}

/// Two PVs on `host` and a VG over them.
fn vg_on_two_volumes(s: &Scratch, host: &HostView, vg: &str) -> (PathBuf, PathBuf) {
    let v1 = s.volume(&format!("{vg}-1.vol"), 64 * MIB);
    let v2 = s.volume(&format!("{vg}-2.vol"), 64 * MIB);
    attach_volume(host.root(), "/dev/xvdb", &v1).unwrap();
    attach_volume(host.root(), "/dev/xvdc", &v2).unwrap();
    let l = loops_of(host);
    on(host, &["pvcreate", "-q", &l[0], &l[1]]);
    let mut args = vec!["vgcreate", "-q", vg];
    args.extend(l.iter().map(String::as_str));
    on(host, &args);
    (v1, v2)
}

#[test]
fn sim_lv_bytes_follow_lvm_across_volume_files() {
    let mut s = Scratch::new();
    let a = s.host("a");
    let (v1, v2) = vg_on_two_volumes(&s, &a, "vgmove");
    // 25 extents of 4 MiB: 15 fill the first PV (64 MiB minus the 1 MiB label area), 10 go
    // on the second.
    on(
        &a,
        &["lvcreate", "-q", "-n", "data", "-L", "100M", "vgmove"],
    );
    let segs = on(
        &a,
        &[
            "lvs",
            "--noheadings",
            "--segments",
            "-o",
            "seg_pe_ranges",
            "vgmove/data",
        ],
    );
    assert_eq!(segs.lines().count(), 2, "LV must span both PVs: {segs}");
    s.lvfs(&a);
    let lv_a = a.lv_dir().join("vgmove/data");
    assert_eq!(std::fs::metadata(&lv_a).unwrap().len(), 100 * MIB);

    // A pattern crossing the PV boundary (LV byte 60 MiB), plus the first and last bytes.
    let crossing = pattern(1, (4 * MIB) as usize);
    let head = pattern(2, 4096);
    let tail = pattern(3, 4096);
    write_at(&lv_a, 58 * MIB + 123, &crossing);
    write_at(&lv_a, 0, &head);
    write_at(&lv_a, 100 * MIB - 4096, &tail);

    // The bytes are in the volume files, where LVM's segment map says.
    for (off, data) in [
        (58 * MIB + 123, &crossing[..]),
        (0, &head[..]),
        (100 * MIB - 4096, &tail[..]),
    ] {
        let mut done = 0usize;
        while done < data.len() {
            let lv_off = off + done as u64;
            let (file, foff) = locate(&a, "vgmove/data", lv_off);
            // Up to the next extent boundary, the bytes are contiguous in that file.
            let ext_end = (lv_off / (4 * MIB) + 1) * 4 * MIB;
            let n = ((ext_end - lv_off) as usize).min(data.len() - done);
            assert_eq!(
                read_at(&file, foff, n),
                &data[done..done + n],
                "LV byte {lv_off} in {}",
                file.display()
            );
            done += n;
        }
    }
    let (f_first, _) = locate(&a, "vgmove/data", 0);
    let (f_last, _) = locate(&a, "vgmove/data", 100 * MIB - 1);
    assert_ne!(f_first, f_last, "the LV must span the two volume files");

    // Move both volumes to host B under other device names, in the other order.
    s.servers.clear();
    detach_volume(a.root(), "/dev/xvdb", &v1).unwrap();
    detach_volume(a.root(), "/dev/xvdc", &v2).unwrap();
    assert!(on(&a, &["vgs", "--noheadings", "-o", "vg_name"])
        .trim()
        .is_empty());
    let b = s.host("b");
    attach_volume(b.root(), "/dev/xvdf", &v2).unwrap();
    attach_volume(b.root(), "/dev/xvdg", &v1).unwrap();
    s.lvfs(&b);
    let lv_b = b.lv_dir().join("vgmove/data");
    assert_eq!(std::fs::metadata(&lv_b).unwrap().len(), 100 * MIB);
    assert_eq!(
        sha256(&read_at(&lv_b, 58 * MIB + 123, crossing.len())),
        sha256(&crossing)
    );
    assert_eq!(read_at(&lv_b, 0, 4096), head);
    assert_eq!(read_at(&lv_b, 100 * MIB - 4096, 4096), tail);
    // And with a real tool reading through the LV file.
    let dd = run(&[
        "sh",
        "-c",
        &format!(
            "dd if={} bs=4096 skip=$((58*256)) count=1024 status=none | sha256sum",
            lv_b.display()
        ),
    ]);
    let mut expect = vec![0u8; 123];
    expect.extend_from_slice(&crossing[..(4 * MIB - 123) as usize]);
    assert_eq!(dd.split_whitespace().next().unwrap(), sha256(&expect));
}

#[test]
fn sim_hostview_isolation_and_filter() {
    let mut s = Scratch::new();
    let a = s.host("a");
    let b = s.host("b");
    let va = s.volume("a.vol", 32 * MIB);
    let vb = s.volume("b.vol", 32 * MIB);
    attach_volume(a.root(), "/dev/xvdb", &va).unwrap();
    attach_volume(b.root(), "/dev/xvdb", &vb).unwrap();
    let (la, lb) = (loops_of(&a), loops_of(&b));
    assert_eq!(la.len(), 1);
    assert_ne!(la, lb);
    on(&a, &["pvcreate", "-q", &la[0]]);
    on(&a, &["vgcreate", "-q", "vga", &la[0]]);
    on(&b, &["pvcreate", "-q", &lb[0]]);
    on(&b, &["vgcreate", "-q", "vgb", &lb[0]]);
    let pvs_a = on(&a, &["pvs", "--noheadings", "-o", "pv_name,vg_name"]);
    assert!(pvs_a.contains(&la[0]) && pvs_a.contains("vga"), "{pvs_a}");
    assert!(!pvs_a.contains(&lb[0]) && !pvs_a.contains("vgb"), "{pvs_a}");
    let vgs_b = on(&b, &["vgs", "--noheadings", "-o", "vg_name"]);
    assert_eq!(vgs_b.trim(), "vgb");
    // Nor does any other host's (or the machine's) PV leak in: the filter names only ours.
    let conf = std::fs::read_to_string(a.lvm_conf()).unwrap();
    assert!(
        conf.contains(&format!("filter = [ \"a|^{}$|\", \"r|.*|\" ]", la[0])),
        "{conf}"
    );
    let link = a.dev_dir().join("scsi-0QEMU_QEMU_HARDDISK_sdb");
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(&la[0]));
}

#[test]
fn sim_attach_detach_idempotent_and_stale_loops() {
    let mut s = Scratch::new();
    let a = s.host("a");
    let v = s.volume("v.vol", 16 * MIB);
    attach_volume(a.root(), "/dev/xvdb", &v).unwrap();
    attach_volume(a.root(), "/dev/xvdb", &v).unwrap();
    let first = a.attached().unwrap();
    assert_eq!(first.len(), 1);
    // Re-attached under another name (a link that was never undone): one link, same loop.
    attach_volume(a.root(), "/dev/xvdba", &v).unwrap();
    let again = a.attached().unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, "scsi-0QEMU_QEMU_HARDDISK_sdba");
    assert_eq!(again[0].1, first[0].1);
    let dev = again[0].1.clone();

    detach_volume(a.root(), "/dev/xvdba", &v).unwrap();
    detach_volume(a.root(), "/dev/xvdba", &v).unwrap();
    assert!(a.attached().unwrap().is_empty());
    // Released: the device no longer backs our file (a parallel test may already reuse it).
    assert_ne!(
        hostview::loop_backing_file(&dev),
        Some(v.canonicalize().unwrap()),
        "{dev} still set up"
    );
    let conf = std::fs::read_to_string(a.lvm_conf()).unwrap();
    assert!(conf.contains("filter = [ \"r|.*|\" ]"), "{conf}");

    // A loop device left by a crashed run is reused, not doubled.
    let stale = run(&["losetup", "--find", "--show", v.to_str().unwrap()]);
    let stale = stale.trim().to_string();
    attach_volume(a.root(), "/dev/sdc", &v).unwrap();
    assert_eq!(a.attached().unwrap()[0].1, stale);
    let backing: Vec<String> = run(&[
        "losetup",
        "--noheadings",
        "-O",
        "NAME",
        "-j",
        v.to_str().unwrap(),
    ])
    .lines()
    .map(|l| l.trim().to_string())
    .collect();
    assert_eq!(backing, vec![stale.clone()]);

    // Concurrent attaches on one host are serialised and all land in the filter.
    let vols: Vec<PathBuf> = (0..4)
        .map(|i| s.volume(&format!("c{i}.vol"), 8 * MIB))
        .collect();
    std::thread::scope(|sc| {
        for (i, vol) in vols.iter().enumerate() {
            let root = a.root().to_path_buf();
            sc.spawn(move || {
                let dev = format!("/dev/xvd{}", (b'd' + i as u8) as char);
                attach_volume(&root, &dev, vol).unwrap();
            });
        }
    });
    let all = a.attached().unwrap();
    assert_eq!(all.len(), 5, "{all:?}");
    let backed: Vec<(String, Option<PathBuf>)> = all
        .iter()
        .map(|(_, l)| (l.clone(), hostview::loop_backing_file(l)))
        .collect();
    let conf = std::fs::read_to_string(a.lvm_conf()).unwrap();
    for (_, l) in &all {
        assert!(conf.contains(&format!("\"a|^{l}$|\"")), "{l} not in {conf}");
    }
    a.detach_all().unwrap();
    // Released: no device backs what it backed (a parallel test may already reuse the name).
    for (l, before) in &backed {
        assert_ne!(&hostview::loop_backing_file(l), before, "{l} still set up");
    }
    // A volume deleted while attached (DeleteVolume after a failed unlink) still detaches.
    let doomed = s.volume("doomed.vol", 8 * MIB);
    attach_volume(a.root(), "/dev/xvdz", &doomed).unwrap();
    let dev = a.attached().unwrap()[0].1.clone();
    std::fs::remove_file(&doomed).unwrap();
    detach_volume(a.root(), "/dev/xvdz", &doomed).unwrap();
    assert!(a.attached().unwrap().is_empty());
    // Released: the device no longer backs the deleted file (its name may already be reused).
    assert!(
        !hostview::loop_backing_file(&dev)
            .is_some_and(|b| b.to_string_lossy().contains("doomed.vol")),
        "{dev} still set up"
    );
    // Bad device names are refused before anything is done.
    assert!(attach_volume(a.root(), "/dev/xvd../x", &v).is_err());
    assert!(a.attached().unwrap().is_empty());
}

#[test]
fn sim_lvfs_follows_lvm_changes() {
    let mut s = Scratch::new();
    let a = s.host("a");
    let (_v1, _v2) = vg_on_two_volumes(&s, &a, "vgc");
    s.lvfs(&a);
    let vgdir = a.lv_dir().join("vgc");
    assert!(vgdir.is_dir(), "an empty VG is listed");
    on(&a, &["lvcreate", "-q", "-n", "grow", "-L", "8M", "vgc"]);
    // Seen at once, no remount.
    let lv = vgdir.join("grow");
    assert_eq!(std::fs::metadata(&lv).unwrap().len(), 8 * MIB);
    let names: Vec<String> = std::fs::read_dir(&vgdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["grow".to_string()]);

    // A handle open across an lvextend reaches the new extents.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lv)
        .unwrap();
    let e = f.write_at(b"x", 8 * MIB).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(28 /* ENOSPC */), "{e}");
    on(&a, &["lvcreate", "-q", "-n", "between", "-L", "4M", "vgc"]);
    on(&a, &["lvextend", "-q", "-L", "16M", "vgc/grow"]);
    let data = pattern(9, MIB as usize);
    f.write_all_at(&data, 12 * MIB).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 16 * MIB);
    let mut back = vec![0u8; data.len()];
    f.read_exact_at(&mut back, 12 * MIB).unwrap();
    assert_eq!(back, data);
    // The extension is not contiguous with the first segment: the bytes are where LVM says.
    let (file, off) = locate(&a, "vgc/grow", 12 * MIB);
    assert_eq!(read_at(&file, off, data.len()), data);
    drop(f);

    // lvremove: gone from the tree; vgextend with a third volume: usable at once.
    on(&a, &["lvremove", "-q", "-y", "vgc/between"]);
    assert!(!vgdir.join("between").exists());
    let v3 = s.volume("vgc-3.vol", 64 * MIB);
    attach_volume(a.root(), "/dev/xvdd", &v3).unwrap();
    let l3 = hostview::HostView::attached(&a)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n.ends_with("sdd"))
        .unwrap()
        .1;
    on(&a, &["vgextend", "-q", "vgc", &l3]);
    on(
        &a,
        &["lvcreate", "-q", "-n", "third", "-L", "40M", "vgc", &l3],
    );
    let third = vgdir.join("third");
    let data = pattern(10, 4096);
    write_at(&third, 20 * MIB, &data);
    assert_eq!(read_at(&v3, MIB + 20 * MIB, 4096), data);
    // Unwritten areas read as zeros.
    assert!(read_at(&third, 0, 65536).iter().all(|&b| b == 0));
}

#[test]
fn sim_lvfs_holes_and_seek() {
    let mut s = Scratch::new();
    let a = s.host("a");
    let (_v1, _v2) = vg_on_two_volumes(&s, &a, "vgh");
    on(&a, &["lvcreate", "-q", "-n", "sparse", "-L", "100M", "vgh"]);
    s.lvfs(&a);
    let lv = a.lv_dir().join("vgh/sparse");
    // Data at 10 MiB and across the PV boundary at 60 MiB; the rest never written.
    write_at(&lv, 10 * MIB, &pattern(4, MIB as usize));
    write_at(&lv, 59 * MIB, &pattern(5, 2 * MIB as usize));
    let f = std::fs::File::open(&lv).unwrap();
    assert_eq!(bsud::sys::seek_data(&f, 0).unwrap(), Some(10 * MIB));
    assert_eq!(bsud::sys::seek_hole(&f, 10 * MIB).unwrap(), Some(11 * MIB));
    assert_eq!(bsud::sys::seek_data(&f, 11 * MIB).unwrap(), Some(59 * MIB));
    // The data continues across the PV boundary: no hole at 60 MiB.
    assert_eq!(bsud::sys::seek_hole(&f, 59 * MIB).unwrap(), Some(61 * MIB));
    assert_eq!(bsud::sys::seek_data(&f, 61 * MIB).unwrap(), None);
    assert_eq!(bsud::sys::seek_hole(&f, 99 * MIB).unwrap(), Some(99 * MIB));

    // Punch a hole across the boundary with the real tool: reads zeros, and the volume files
    // really lost the blocks.
    let (file2, off2) = locate(&a, "vgh/sparse", 60 * MIB);
    assert_ne!(read_at(&file2, off2, 4096), vec![0u8; 4096]);
    run(&[
        "fallocate",
        "--punch-hole",
        "--keep-size",
        "-o",
        &(59 * MIB + MIB / 2).to_string(),
        "-l",
        &MIB.to_string(),
        lv.to_str().unwrap(),
    ]);
    let back = read_at(&lv, 59 * MIB, 2 * MIB as usize);
    let orig = pattern(5, 2 * MIB as usize);
    let (h0, h1) = ((MIB / 2) as usize, (MIB + MIB / 2) as usize);
    assert_eq!(&back[..h0], &orig[..h0]);
    assert!(back[h0..h1].iter().all(|&b| b == 0));
    assert_eq!(&back[h1..], &orig[h1..]);
    assert_eq!(read_at(&file2, off2, 4096), vec![0u8; 4096]);
    let vf = std::fs::File::open(&file2).unwrap();
    assert_eq!(bsud::sys::seek_hole(&vf, off2).unwrap(), Some(off2));
    assert_eq!(
        bsud::sys::seek_hole(&f, 59 * MIB).unwrap(),
        Some(59 * MIB + MIB / 2)
    );
    // Zeroing a range reads back zeros too.
    run(&[
        "fallocate",
        "--zero-range",
        "--keep-size",
        "-o",
        &(10 * MIB).to_string(),
        "-l",
        "65536",
        lv.to_str().unwrap(),
    ]);
    assert!(read_at(&lv, 10 * MIB, 65536).iter().all(|&b| b == 0));
    assert_eq!(
        read_at(&lv, 10 * MIB + 65536, 16),
        pattern(4, MIB as usize)[65536..65536 + 16]
    );
    // Sparse-aware tools skip the holes: a sparse copy allocates about what was written.
    let copy = s.path().join("copy.img");
    run(&[
        "cp",
        "--sparse=always",
        lv.to_str().unwrap(),
        copy.to_str().unwrap(),
    ]);
    run(&["cmp", lv.to_str().unwrap(), copy.to_str().unwrap()]);
    use std::os::unix::fs::MetadataExt;
    let allocated = std::fs::metadata(&copy).unwrap().blocks() * 512;
    assert!(allocated < 8 * MIB, "copy allocated {allocated} bytes");
    // Data up to the very end: the end of the LV counts as the hole.
    write_at(&lv, 100 * MIB - 4096, &pattern(8, 4096));
    assert_eq!(
        bsud::sys::seek_data(&f, 61 * MIB).unwrap(),
        Some(100 * MIB - 4096)
    );
    assert_eq!(
        bsud::sys::seek_hole(&f, 100 * MIB - 4096).unwrap(),
        Some(100 * MIB)
    );
    assert_eq!(bsud::sys::seek_data(&f, 100 * MIB).unwrap(), None);
}

#[test]
fn sim_lvfs_real_tools() {
    let mut s = Scratch::new();
    let a = s.host("a");
    let (_v1, _v2) = vg_on_two_volumes(&s, &a, "vgt");
    for (n, size) in [("img", "40M"), ("fs", "64M"), ("swap", "8M")] {
        on(&a, &["lvcreate", "-q", "-n", n, "-L", size, "vgt"]);
    }
    s.lvfs(&a);
    let lv = |n: &str| a.lv_dir().join("vgt").join(n);

    // qemu-img convert into an LV spanning both PVs, then cmp.
    let src = s.path().join("src.raw");
    std::fs::write(&src, pattern(6, (40 * MIB) as usize)).unwrap();
    let qcow = s.path().join("src.qcow2");
    run(&[
        "qemu-img",
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        src.to_str().unwrap(),
        qcow.to_str().unwrap(),
    ]);
    run(&[
        "qemu-img",
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        "-n",
        qcow.to_str().unwrap(),
        lv("img").to_str().unwrap(),
    ]);
    run(&["cmp", src.to_str().unwrap(), lv("img").to_str().unwrap()]);
    // dd with O_TRUNC is harmless, as on a block device.
    run(&[
        "dd",
        &format!("if={}", src.display()),
        &format!("of={}", lv("img").display()),
        "bs=1M",
        "count=1",
        "status=none",
    ]);
    assert_eq!(std::fs::metadata(lv("img")).unwrap().len(), 40 * MIB);
    run(&["cmp", src.to_str().unwrap(), lv("img").to_str().unwrap()]);

    // mkfs.ext4 and mkswap on LV files, checked by the real checkers.
    run(&["mkfs.ext4", "-q", "-F", lv("fs").to_str().unwrap()]);
    run(&["e2fsck", "-f", "-n", lv("fs").to_str().unwrap()]);
    run(&["mkswap", lv("swap").to_str().unwrap()]);
    let t = run(&[
        "blkid",
        "-p",
        "-o",
        "value",
        "-s",
        "TYPE",
        lv("swap").to_str().unwrap(),
    ]);
    assert_eq!(t.trim(), "swap");

    // Four writers and readers at once on one LV, each in its own MiB range.
    let img = lv("img");
    std::thread::scope(|sc| {
        for i in 0..4u64 {
            let img = img.clone();
            sc.spawn(move || {
                let data = pattern(100 + i, (4 * MIB) as usize);
                write_at(&img, i * 8 * MIB, &data);
                assert_eq!(read_at(&img, i * 8 * MIB, data.len()), data);
            });
        }
    });
}

fn ssh(s: &Scratch, host: &str, line: &str) -> Command {
    let mut c = Command::new(SIM);
    c.args(["ssh", "--testbed"]).arg(s.path()).args([
        "-o",
        "BatchMode=yes",
        "-q",
        "-T",
        "-p",
        "22",
        host,
        line,
    ]);
    c
}

#[test]
fn sim_ssh_transport() {
    let mut s = Scratch::new();
    let h1 = s.host("h1");
    let h2 = s.host("h2");
    let only1 = vec![("ONLY_ON_H1".to_string(), "yes".to_string())];
    register_host(s.path(), "h1", h1.root(), &only1).unwrap();
    register_host(s.path(), "h2", h2.root(), &[]).unwrap();

    // Hostile words, quoted the driver's way, arrive intact through the sh -c re-parse.
    let hostile = [
        "it's",
        "$(touch pwned)",
        "`id`",
        "a b\tc",
        "line1\nline2",
        "\"dq\"",
        "semi;colon",
        "back\\slash",
        "*",
        "~root",
        "-rf",
        "",
    ];
    let mut words = vec!["printf", "%s\\0"];
    words.extend(hostile);
    let line = exec::ssh::quote_words(&words).unwrap();
    let out = ssh(&s, "h1", &line).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let got: Vec<&[u8]> = out.stdout.split(|&b| b == 0).collect();
    let got: Vec<String> = got[..got.len() - 1]
        .iter()
        .map(|w| String::from_utf8(w.to_vec()).unwrap())
        .collect();
    assert_eq!(got, hostile);
    assert!(!h1.root().join("pwned").exists());

    // An unquoted word IS re-parsed, as by sshd (the kind of bug this transport exposes).
    let out = ssh(&s, "h1", "printf '%s|' a b; printf '%s|' 'a b'")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a|b|a b|");
    // Several remote words are joined with spaces, like ssh does.
    let out = Command::new(SIM)
        .args(["ssh", "--testbed"])
        .arg(s.path())
        .args(["h1", "echo", "one", "two  three"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one two three\n");

    // Exit codes are the command's; unknown hosts are ssh's 255.
    assert_eq!(ssh(&s, "h1", "exit 7").status().unwrap().code(), Some(7));
    let out = ssh(&s, "nosuchhost", "true").output().unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuchhost"));
    assert_eq!(ssh(&s, "../h1", "true").status().unwrap().code(), Some(255));

    // The host view: environment, working directory, no leak of the caller's environment.
    let out = ssh(
        &s,
        "root@h1",
        "pwd; echo $BSUD_HOST_ROOT $LVM_SYSTEM_DIR $BSUD_LV_DIR; echo ${OSC_SECRET_KEY:-unset}",
    )
    .env("OSC_SECRET_KEY", "leak")
    .output()
    .unwrap();
    let root = h1.root().display();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{root}\n{root} {root}/etc/lvm {root}/lv\nunset\n")
    );

    // stdin streams both ways: an answer comes back before stdin is closed.
    let mut child = ssh(&s, "h1", "read l; echo got:$l; exec cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    stdin.write_all(b"ping\n").unwrap();
    stdin.flush().unwrap();
    let mut first = [0u8; 9];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"got:ping\n");
    let big = pattern(7, (3 * MIB) as usize);
    let writer = std::thread::spawn(move || {
        stdin.write_all(&big).unwrap();
    });
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    writer.join().unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(rest, pattern(7, (3 * MIB) as usize));

    // From inside a host, BSUD_SSH_COMMAND reaches another host with that host's view.
    let out = ssh(&s, "h1", "printf %s \"$BSUD_SSH_COMMAND\"")
        .output()
        .unwrap();
    let transport: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        transport[1..3],
        ["ssh".to_string(), "--testbed".to_string()]
    );
    assert_eq!(Path::new(&transport[3]), s.path().canonicalize().unwrap());
    let mut nested: Vec<String> = transport.clone();
    nested.push("h2".into());
    nested.push("echo $BSUD_SIM_HOST ${ONLY_ON_H1:-none} $BSUD_HOST_ROOT".into());
    let out = ssh(&s, "h1", &exec::ssh::quote_words(&nested).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("h2 none {}\n", h2.root().display())
    );
}
