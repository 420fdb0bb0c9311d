//! The host-to-host data stream end to end: sparse sources, dirty and fresh targets, block
//! devices, damaged streams, a real OS pipe, bounded memory, and the agent operations.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bsud::stream::agent::{self, ChecksumArgs, RecvArgs, SendArgs};
use bsud::stream::{
    digest_of, recv, send, RecvOptions, SendOptions, Source, Stats, BLOCK_SIZE, FRAME_BYTES,
};

const MIB: u64 = 1 << 20;
const B: u64 = BLOCK_SIZE;

/// Deterministic incompressible bytes (xorshift64*), so failures reproduce.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// What to put where in a test file.
enum Fill {
    Random(u64),
    /// Allocated zeros: data to SEEK_DATA, zero blocks to the hasher.
    Zeros,
    /// A repeated byte (compresses well).
    Byte(u8),
}

fn make_file(path: &Path, size: u64, extents: &[(u64, u64, Fill)]) -> File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.set_len(size).unwrap();
    for (offset, len, fill) in extents {
        let bytes = match fill {
            Fill::Random(seed) => random_bytes(*seed, *len as usize),
            Fill::Zeros => vec![0; *len as usize],
            Fill::Byte(b) => vec![*b; *len as usize],
        };
        f.write_all_at(&bytes, *offset).unwrap();
    }
    f
}

fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

/// The first differing byte offset of two files over `len` bytes, if any.
fn first_difference(a: &Path, b: &Path, len: u64) -> Option<u64> {
    let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let mut off = 0;
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    while off < len {
        let n = (len - off).min(MIB) as usize;
        fa.read_exact_at(&mut ba[..n], off).unwrap();
        fb.read_exact_at(&mut bb[..n], off).unwrap();
        if ba[..n] != bb[..n] {
            let i = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y);
            return Some(off + i.unwrap_or(0) as u64);
        }
        off += n as u64;
    }
    None
}

fn send_file(path: &Path, opts: &SendOptions) -> (Vec<u8>, Stats) {
    let mut source = Source::open(path, None).unwrap();
    let mut wire = Vec::new();
    let stats = send(&mut source, &mut wire, opts).unwrap();
    (wire, stats)
}

fn recv_bytes(wire: &[u8], target: &Path, opts: &RecvOptions) -> anyhow::Result<Stats> {
    let mut input = wire;
    recv(&mut input, &open_rw(target), opts)
}

fn err_text<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.expect_err("the transfer must fail"))
}

/// The mixed layout most tests use: holes, random data, allocated zeros, a compressible run
/// and an unaligned tail. Returns (size, bytes of non-zero blocks).
fn mixed_layout(path: &Path) -> (u64, u64) {
    let size = 200 * MIB + 12_345;
    make_file(
        path,
        size,
        &[
            (MIB, 3 * MIB, Fill::Random(1)),
            (10 * MIB, 2 * MIB, Fill::Zeros),
            (50 * MIB + 100, 1, Fill::Byte(7)),
            (80 * MIB, MIB, Fill::Byte(0x5a)),
            (size - 1000, 1000, Fill::Random(2)),
        ],
    );
    // 48 random blocks, 1 block around the single byte, 16 pattern blocks, the short tail.
    (size, 3 * MIB + B + MIB + (size % B))
}

#[test]
fn stream_round_trip_sparse_file_raw_and_zstd() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let (size, data) = mixed_layout(&src);
    let mut wire_sizes = Vec::new();
    for compress in [false, true] {
        let dst = dir.path().join(format!("dst-{compress}"));
        File::create(&dst).unwrap().set_len(size).unwrap();
        let opts = SendOptions {
            compress,
            ..SendOptions::default()
        };
        let (wire, sent) = send_file(&src, &opts);
        let got = recv_bytes(&wire, &dst, &RecvOptions::default()).unwrap();
        assert_eq!(
            first_difference(&src, &dst, size),
            None,
            "compress={compress}"
        );
        assert_eq!((sent.logical_bytes, got.logical_bytes), (size, size));
        assert_eq!((sent.data_bytes, got.data_bytes), (data, data));
        assert_eq!(sent.wire_bytes, wire.len() as u64);
        assert_eq!(got.wire_bytes, wire.len() as u64);
        assert_eq!(sent.digest, got.digest);
        assert_eq!(
            got.digest,
            digest_of(File::open(&dst).unwrap(), None).unwrap()
        );
        assert_eq!(
            got.digest,
            digest_of(File::open(&src).unwrap(), None).unwrap()
        );
        // Everything but the sent data was zeroed on this (non-fresh) target.
        assert_eq!(got.zeroed_bytes, size - data);
        wire_sizes.push(wire.len());
    }
    // The byte pattern compresses; random data does not grow (sent raw).
    assert!(
        wire_sizes[1] + (MIB as usize) < wire_sizes[0],
        "{wire_sizes:?}"
    );
    assert!(wire_sizes[0] < (data + MIB / 10) as usize, "{wire_sizes:?}");
}

#[test]
fn stream_receiver_zeroes_skipped_ranges_unless_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let size = 8 * MIB;
    make_file(
        &src,
        size,
        &[(MIB, 100_000, Fill::Random(3)), (4 * MIB, MIB, Fill::Zeros)],
    );
    let (wire, _) = send_file(&src, &SendOptions::default());

    let dirty = dir.path().join("dirty");
    make_file(&dirty, size, &[(0, size, Fill::Byte(0xEE))]);
    let got = recv_bytes(&wire, &dirty, &RecvOptions::default()).unwrap();
    assert_eq!(first_difference(&src, &dirty, size), None);
    assert_eq!(got.zeroed_bytes, size - 2 * B);

    // Told the target is fresh, the receiver leaves skipped ranges alone: the old bytes
    // survive, which is why `fresh` is only for just-created targets.
    let stale = dir.path().join("stale");
    make_file(&stale, size, &[(0, size, Fill::Byte(0xEE))]);
    let fresh = RecvOptions {
        fresh: true,
        ..RecvOptions::default()
    };
    let got = recv_bytes(&wire, &stale, &fresh).unwrap();
    assert_eq!(got.zeroed_bytes, 0);
    let mut byte = [0u8; 1];
    File::open(&stale)
        .unwrap()
        .read_exact_at(&mut byte, 0)
        .unwrap();
    assert_eq!(byte[0], 0xEE);
    assert_eq!(
        first_difference(&src, &stale, MIB + B).map(|o| o < MIB),
        Some(true)
    );
}

#[test]
fn stream_empty_and_all_hole_sources() {
    let dir = tempfile::tempdir().unwrap();
    for (name, size) in [("empty", 0), ("holes", 5 * MIB + 3)] {
        let src = dir.path().join(name);
        make_file(&src, size, &[]);
        let dst = dir.path().join(format!("{name}-dst"));
        make_file(&dst, size, &[(0, size, Fill::Byte(1))]);
        let (wire, sent) = send_file(&src, &SendOptions::default());
        assert_eq!((sent.logical_bytes, sent.data_bytes), (size, 0));
        let got = recv_bytes(&wire, &dst, &RecvOptions::default()).unwrap();
        assert_eq!(first_difference(&src, &dst, size), None);
        assert_eq!(
            got.digest,
            digest_of(File::open(&src).unwrap(), None).unwrap()
        );
        // The wire carries a header and an end marker only.
        assert!(wire.len() < 200, "{name}: {} bytes", wire.len());
    }
}

#[test]
fn stream_plain_reader_source_detects_zero_blocks_on_the_fly() {
    let dir = tempfile::tempdir().unwrap();
    let mut content = random_bytes(4, 5 * MIB as usize + 777);
    content[MIB as usize..3 * MIB as usize].fill(0);
    let size = content.len() as u64;
    let expected_data = size - 2 * MIB;
    for known in [None, Some(size)] {
        let mut source = Source::from_reader(&content[..], known);
        let mut wire = Vec::new();
        let sent = send(&mut source, &mut wire, &SendOptions::default()).unwrap();
        assert_eq!(sent.data_bytes, expected_data);
        // A new file, grown by the receiver to the logical size.
        let dst = dir.path().join(format!("dst-{known:?}"));
        File::create(&dst).unwrap();
        let opts = RecvOptions {
            extend_file: true,
            ..RecvOptions::default()
        };
        let got = recv_bytes(&wire, &dst, &opts).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), content);
        assert_eq!(got.digest, sent.digest);
        assert_eq!(
            got.digest,
            digest_of(File::open(&dst).unwrap(), None).unwrap()
        );
    }
}

#[test]
fn stream_md5_of_the_logical_content_is_reported_by_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let (size, _) = mixed_layout(&src);
    let opts = SendOptions {
        md5: true,
        ..SendOptions::default()
    };
    let (wire, sent) = send_file(&src, &opts);
    let dst = dir.path().join("dst");
    File::create(&dst).unwrap().set_len(size).unwrap();
    let got = recv_bytes(&wire, &dst, &RecvOptions::default()).unwrap();
    let out = bsud::exec::run(&bsud::exec::Cmd::new("md5sum").arg(&src)).unwrap();
    let expected = out
        .stdout_str()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(sent.md5.as_deref(), Some(expected.as_str()));
    assert_eq!(got.md5, sent.md5);
    let (_, no_md5) = send_file(&src, &SendOptions::default());
    assert_eq!(no_md5.md5, None);
}

#[test]
fn stream_target_size_rules() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let size = 3 * MIB;
    make_file(&src, size, &[(0, MIB, Fill::Random(5))]);
    let (wire, _) = send_file(&src, &SendOptions::default());

    // Too small: refused before anything is written.
    let small = dir.path().join("small");
    make_file(&small, size - 1, &[(0, size - 1, Fill::Byte(9))]);
    let e = err_text(recv_bytes(&wire, &small, &RecvOptions::default()));
    assert!(e.contains("smaller than the stream's 3145728 bytes"), "{e}");
    let untouched = std::fs::read(&small).unwrap();
    assert!(untouched.iter().all(|&b| b == 9));

    // Wrong expected size: refused.
    let exact = dir.path().join("exact");
    make_file(&exact, size, &[]);
    let opts = RecvOptions {
        expect_size: Some(size + 1),
        ..RecvOptions::default()
    };
    let e = err_text(recv_bytes(&wire, &exact, &opts));
    assert!(e.contains("3145728 bytes, 3145729 were expected"), "{e}");

    // Larger: the tail beyond the logical size is the caller's and stays as it was.
    let large = dir.path().join("large");
    make_file(&large, size + MIB, &[(0, size + MIB, Fill::Byte(9))]);
    recv_bytes(&wire, &large, &RecvOptions::default()).unwrap();
    assert_eq!(first_difference(&src, &large, size), None);
    let mut tail = vec![0u8; MIB as usize];
    File::open(&large)
        .unwrap()
        .read_exact_at(&mut tail, size)
        .unwrap();
    assert!(tail.iter().all(|&b| b == 9));

    // A stream of unknown size into a too-small target fails at the first frame beyond it.
    let content = random_bytes(6, 2 * MIB as usize);
    let mut unknown = Vec::new();
    send(
        &mut Source::from_reader(&content[..], None),
        &mut unknown,
        &SendOptions::default(),
    )
    .unwrap();
    let one_mib = dir.path().join("one-mib");
    make_file(&one_mib, MIB, &[]);
    let e = err_text(recv_bytes(&unknown, &one_mib, &RecvOptions::default()));
    assert!(e.contains("larger than the target (1048576 bytes)"), "{e}");
}

/// A small stream with two data frames (a full block, then a short tail) and an end marker;
/// also returns the content.
fn small_stream(compress: bool) -> (Vec<u8>, Vec<u8>) {
    let size = 5 * B + 100;
    let mut content = vec![0u8; size as usize];
    // Half random, half a pattern: compresses, but not to nothing.
    content[B as usize..(B + B / 2) as usize].copy_from_slice(&random_bytes(7, (B / 2) as usize));
    content[(B + B / 2) as usize..2 * B as usize].fill(3);
    content[(5 * B) as usize..].copy_from_slice(&random_bytes(8, 100));
    let mut wire = Vec::new();
    let opts = SendOptions {
        compress,
        md5: true,
        ..SendOptions::default()
    };
    send(
        &mut Source::from_reader(&content[..], Some(size)),
        &mut wire,
        &opts,
    )
    .unwrap();
    (wire, content)
}

/// Any damaged byte is refused, except where zstd happens to decode the damaged payload to
/// the very same bytes (its bitstream has slack): then the block digests prove the content
/// right, and it is accepted. A damaged stream never leaves different content reported as
/// success. Every cut is refused.
#[test]
fn stream_any_damaged_or_truncated_byte_fails_or_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    for compress in [false, true] {
        let (wire, content) = small_stream(compress);
        make_file(&target, content.len() as u64, &[]);
        recv_bytes(&wire, &target, &RecvOptions::default()).unwrap();
        // Every byte outside the bulk of the first payload, and a sample inside it.
        let positions: Vec<usize> = (0..wire.len())
            .filter(|&i| i < 200 || i + 400 > wire.len() || i % 997 == 0)
            .collect();
        let mut harmless = 0;
        for &i in &positions {
            for flip in [0x01u8, 0x80] {
                let mut bad = wire.clone();
                bad[i] ^= flip;
                make_file(&target, content.len() as u64, &[]);
                if recv_bytes(&bad, &target, &RecvOptions::default()).is_ok() {
                    assert!(compress, "raw stream: flip {flip:#x} at byte {i} accepted");
                    assert!(std::fs::read(&target).unwrap() == content, "byte {i}");
                    harmless += 1;
                }
            }
            let e = err_text(recv_bytes(&wire[..i], &target, &RecvOptions::default()));
            assert!(
                e.contains("truncated") || e.contains("empty"),
                "cut at {i}: {e}"
            );
        }
        assert!(harmless < 4, "{harmless} damaged zstd streams accepted");
    }
}

#[test]
fn stream_damage_is_reported_in_clear_words() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    let (wire, content) = small_stream(false);
    make_file(&target, content.len() as u64, &[]);
    let recv_err = |bytes: &[u8]| err_text(recv_bytes(bytes, &target, &RecvOptions::default()));

    // First frame: 24-byte header, then tag, codec, offset, raw_len, payload_len (18 bytes),
    // one digest, 64 KiB of payload.
    let first_payload = 24 + 18 + 32;
    let mut bad = wire.clone();
    bad[first_payload + 10] ^= 1;
    let e = recv_err(&bad);
    assert!(
        e.contains("the block at byte 65536 does not match its digest"),
        "{e}"
    );

    let mut bad = wire.clone();
    bad[..8].copy_from_slice(b"NOTBSUD!");
    assert!(recv_err(&bad).contains("not a one-bsud stream"));
    let mut bad = wire.clone();
    bad[8] = 9;
    assert!(recv_err(&bad).contains("version 9 is not supported"));
    assert!(recv_err(&wire[..wire.len() - 1]).contains("truncated"));
    let mut longer = wire.clone();
    longer.push(0);
    assert!(recv_err(&longer).contains("follows the end marker"));

    // A whole data frame removed: every frame that arrives is intact, the stream digest
    // catches the loss (the receiver would otherwise have zeroed that range).
    let second = first_payload + B as usize;
    let second_len = 18 + 32 + 100;
    let dropped = [&wire[..second], &wire[second + second_len..]].concat();
    let e = recv_err(&dropped);
    assert!(e.contains("does not match the sender's digest"), "{e}");

    // A frame's offset moved: the data lands elsewhere, the stream digest catches it.
    let mut moved = wire.clone();
    moved[24 + 2..24 + 10].copy_from_slice(&(2 * B).to_le_bytes());
    let e = recv_err(&moved);
    assert!(e.contains("does not match the sender's digest"), "{e}");

    // Corrupted zstd payloads fail too.
    let (zwire, _) = small_stream(true);
    let mut bad = zwire.clone();
    bad[first_payload + 20] ^= 0xff;
    let e = recv_err(&bad);
    assert!(e.contains("corrupted"), "{e}");
}

/// Sends `source` from a thread into a real OS pipe and receives it here into a new file at
/// `dst` (grown to size, fresh): (sender's stats, receiver's stats).
fn through_os_pipe(mut source: Source<'_>, opts: &SendOptions, dst: &Path) -> (Stats, Stats) {
    File::create(dst).unwrap();
    let (reader, mut writer) = std::io::pipe().unwrap();
    std::thread::scope(|s| {
        let sender = s.spawn(move || send(&mut source, &mut writer, opts));
        // Owned here, so a failing receiver closes the pipe (unblocking the sender) before
        // the scope waits for it.
        let mut reader = reader;
        let recv_opts = RecvOptions {
            extend_file: true,
            fresh: true,
            ..RecvOptions::default()
        };
        let got = recv(&mut reader, &open_rw(dst), &recv_opts).unwrap();
        (sender.join().unwrap().unwrap(), got)
    })
}

#[test]
fn stream_through_an_os_pipe_in_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let size = 512 * MIB + 4096;
    // More data than all channel buffers together, in extents of 1..8 MiB.
    let extents: Vec<(u64, u64, Fill)> = (0..6u64)
        .map(|i| {
            (
                i * 80 * MIB + i * 4096,
                (i + 1) * 1536 * 1024,
                Fill::Random(10 + i),
            )
        })
        .collect();
    make_file(&src, size, &extents);
    let dst = dir.path().join("dst");
    let opts = SendOptions {
        compress: true,
        ..SendOptions::default()
    };
    let (sent, got) = through_os_pipe(Source::open(&src, None).unwrap(), &opts, &dst);
    assert_eq!(got.digest, sent.digest);
    assert_eq!(got.wire_bytes, sent.wire_bytes);
    assert_eq!(sent.data_bytes, 21 * 1536 * 1024 + 5 * B);
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), size);
    assert_eq!(first_difference(&src, &dst, size), None);
}

#[test]
fn stream_sender_reports_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_file(&src, 64 * MIB, &[(0, 8 * MIB, Fill::Random(20))]);
    let (reader, mut writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut source = Source::open(&src, None).unwrap();
    let e = err_text(send(&mut source, &mut writer, &SendOptions::default()));
    assert!(e.contains("writing the stream"), "{e}");
}

/// Content generated on the fly: `data` random bytes, then zeros up to `size`.
struct Generated {
    data: u64,
    size: u64,
    pos: u64,
    block: Vec<u8>,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.size - self.pos).min(buf.len() as u64) as usize;
        let buf = &mut buf[..n];
        if self.pos >= self.data {
            buf.fill(0);
        } else {
            for (i, b) in buf.iter_mut().enumerate() {
                let at = self.pos + i as u64;
                *b = if at < self.data {
                    self.block[(at % 4093) as usize] ^ (at >> 12) as u8
                } else {
                    0
                };
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Runs in a child process (this test binary, this test only) so the peak RSS is this
/// transfer's alone: 1 GiB of logical content with 64 MiB of data, sent and received through
/// a pipe, must stay within a few MiB per side.
#[test]
fn stream_memory_stays_bounded() {
    const CHILD: &str = "BSUD_STREAM_MEMORY_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["stream_memory_stays_bounded", "--exact", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {text}");
        let measured = text
            .lines()
            .find_map(|l| l.find("peak rss grew by").map(|i| &l[i..]));
        assert!(measured.is_some(), "the child did not measure: {text}");
        eprintln!("{}", measured.unwrap_or_default());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("dst");
    let size = 1 << 30;
    let before = peak_rss_kib();
    let generated = Generated {
        data: 64 * MIB,
        size,
        pos: 0,
        block: random_bytes(30, 4093),
    };
    let source = Source::from_reader(generated, None);
    let (sent, got) = through_os_pipe(source, &SendOptions::default(), &dst);
    assert_eq!((got.logical_bytes, got.data_bytes), (size, 64 * MIB));
    assert_eq!(got.digest, sent.digest);
    let grew_mib = (peak_rss_kib() - before) / 1024;
    println!("peak rss grew by {grew_mib} MiB");
    // Two pipelines of ~4 MiB items each, plus allocator slack; far below the 64 MiB of data.
    let bound = 12 * FRAME_BYTES as u64 / MIB + 16;
    assert!(
        grew_mib < bound,
        "peak RSS grew by {grew_mib} MiB (bound {bound})"
    );
}

/// A loop device over a file of old bytes: the receiver must zero the skipped ranges through
/// the block-device path and the device checksum must match.
#[test]
fn stream_block_device_target_is_zeroed_and_checksummed() {
    struct Loop(String);
    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = bsud::exec::run(&bsud::exec::Cmd::new("losetup").args(["-d", &self.0]));
        }
    }
    if !bsud::sys::is_root() {
        eprintln!("skipped: loop devices need root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let size = 16 * MIB;
    let backing = dir.path().join("backing");
    make_file(&backing, size, &[(0, size, Fill::Byte(0xAB))]);
    let out = bsud::exec::run(
        &bsud::exec::Cmd::new("losetup")
            .args(["-f", "--show"])
            .arg(&backing),
    )
    .unwrap();
    let dev = Loop(out.stdout_str().trim().to_string());
    let src = dir.path().join("src");
    make_file(
        &src,
        size,
        &[
            (3 * MIB, MIB, Fill::Random(40)),
            (size - 100, 100, Fill::Random(41)),
        ],
    );
    let (wire, sent) = send_file(&src, &SendOptions::default());
    let got = recv_bytes(&wire, Path::new(&dev.0), &RecvOptions::default()).unwrap();
    assert_eq!(got.zeroed_bytes, size - MIB - B);
    assert_eq!(first_difference(&src, Path::new(&dev.0), size), None);
    let device = File::open(&dev.0).unwrap();
    assert_eq!(digest_of(device, None).unwrap(), sent.digest);
    // A device is never grown: a larger stream is refused up front.
    let big = dir.path().join("big");
    make_file(&big, size + MIB, &[(0, 10, Fill::Byte(1))]);
    let (wire, _) = send_file(&big, &SendOptions::default());
    let e = err_text(recv_bytes(
        &wire,
        Path::new(&dev.0),
        &RecvOptions::default(),
    ));
    assert!(e.contains("smaller than the stream's"), "{e}");
}

#[test]
fn stream_agent_ops_send_recv_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let (size, _) = mixed_layout(&src);
    // Only the first part of the source is the content (an LV larger than its image).
    let part = 100 * MIB;
    let mut wire = Vec::new();
    let sent = agent::send_op(
        &SendArgs {
            path: src.clone(),
            size_bytes: Some(part),
            compress: true,
            md5: true,
        },
        &mut wire,
    )
    .unwrap();
    assert_eq!(sent.logical_bytes, part);
    assert!(agent::stats_line(&sent).starts_with("STATS: {"));

    let dst = dir.path().join("new-file");
    let args = RecvArgs {
        path: dst.clone(),
        fresh: false,
        expect_size: Some(part),
        create_file: true,
    };
    let out = agent::recv_op(&args, &mut &wire[..]).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.render()).unwrap();
    assert_eq!(json["digest"], sent.digest.as_str());
    assert_eq!(json["md5"], sent.md5.clone().unwrap().as_str());
    assert_eq!(json["logical_bytes"], part);
    assert_eq!(json["digest_algorithm"], "bsud-stream-v1");
    assert_eq!(first_difference(&src, &dst, part), None);

    let sum = |path: PathBuf, size_bytes| {
        let out = agent::checksum_op(&ChecksumArgs {
            path,
            size_bytes,
            md5: true,
        })
        .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.render()).unwrap()
    };
    let of_dst = sum(dst.clone(), None);
    assert_eq!(of_dst["digest"], sent.digest.as_str());
    assert_eq!(of_dst["md5"], sent.md5.clone().unwrap().as_str());
    assert_eq!(sum(src.clone(), Some(part))["digest"], sent.digest.as_str());
    assert_ne!(sum(src.clone(), None)["digest"], sent.digest.as_str());

    // Errors name the path.
    let missing = dir.path().join("missing");
    let e = err_text(agent::send_op(
        &SendArgs {
            path: missing.clone(),
            size_bytes: None,
            compress: false,
            md5: false,
        },
        &mut Vec::new(),
    ));
    assert!(e.contains("missing"), "{e}");
    let e = err_text(agent::send_op(
        &SendArgs {
            path: src.clone(),
            size_bytes: Some(size + 1),
            compress: false,
            md5: false,
        },
        &mut Vec::new(),
    ));
    assert!(e.contains("fewer than the"), "{e}");
    let e = err_text(agent::recv_op(
        &RecvArgs {
            path: missing,
            fresh: false,
            expect_size: None,
            create_file: false,
        },
        &mut &wire[..],
    ));
    assert!(e.contains("opening") && e.contains("missing"), "{e}");
}
