//! Storage engine benchmarks, each against a reference measured in the same run:
//!
//! 1. Append throughput (no per-append durability) vs `write_all` of the same bytes.
//! 2. Durable append, 8 writers with group commit, vs `write_all` + `fdatasync` per 1 MiB.
//! 3. Sequential read from the page cache vs plain `read` of the same file.
//! 4. Open time of a 1 GiB log after a clean shutdown, and validation speed of the segments
//!    recovery must check after a crash.
//!
//! Run: `cargo bench -p chorus-benches --bench storage` (set `CHORUS_BENCH_QUICK=1` for a short
//! smoke run, `CHORUS_BENCH_ONLY=append,durable,read,recovery` to pick parts). Data goes to a temporary directory under `CHORUS_BENCH_DIR` (default: the
//! system temp dir); it needs about 2 GiB free.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_benches::{
    fsync_per_mib, mb_per_s, median, print_table, quick, size_label, time, wanted,
};
use chorus_storage::batch::BatchBuilder;
use chorus_storage::{Log, LogConfig, LogOptions, ReadLimits};

fn scratch() -> tempfile::TempDir {
    match std::env::var_os("CHORUS_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("scratch dir")
}

/// One batch of `size` bytes in total, records of about 1 KiB (or one record when smaller).
fn make_batch(size: usize) -> Vec<u8> {
    let record = 1000.min(size.saturating_sub(80)).max(1);
    let mut b = BatchBuilder::new();
    let mut total = 61;
    let mut i = 0u64;
    while total + record + 20 <= size || b.is_empty() {
        let value: Vec<u8> = (0..record).map(|j| (i as usize * 31 + j) as u8).collect();
        b = b.record(Some(&i.to_be_bytes()), Some(&value), 1_700_000_000_000);
        total += record + 20;
        i += 1;
    }
    b.build().unwrap()
}

fn config(pairs: &[(&str, &str)]) -> LogConfig {
    LogConfig::with_overrides(pairs.iter().copied()).unwrap()
}

fn append_throughput() {
    let total: usize = if quick() { 32 << 20 } else { 256 << 20 };
    let plain = |template: &[u8], n: usize| {
        let dir = scratch();
        let (d, ()) = time(|| {
            let mut f = File::create(dir.path().join("plain")).unwrap();
            for _ in 0..n {
                f.write_all(template).unwrap();
            }
        });
        d
    };
    let chorus = |template: &[u8], n: usize| {
        let dir = scratch();
        let log = Log::open(dir.path(), LogOptions::with_config(config(&[]))).unwrap();
        let mut buf = template.to_vec();
        let (d, ()) = time(|| {
            for _ in 0..n {
                log.append(&mut buf).unwrap();
            }
        });
        d
    };
    let mut rows = Vec::new();
    for size in [1 << 10, 16 << 10, 1 << 20] {
        let template = make_batch(size);
        let n = total / template.len();
        let bytes = (n * template.len()) as u64;
        // Warm up the page cache allocator, then alternate which side goes first: the kernel
        // is slower to hand out the first pages after a large free, and neither side should
        // always pay for that.
        plain(&template, n);
        let (mut ours, mut reference) = (Vec::new(), Vec::new());
        for round in 0..6 {
            if round % 2 == 0 {
                reference.push(mb_per_s(bytes, plain(&template, n)));
                ours.push(mb_per_s(bytes, chorus(&template, n)));
            } else {
                ours.push(mb_per_s(bytes, chorus(&template, n)));
                reference.push(mb_per_s(bytes, plain(&template, n)));
            }
        }
        let (o, r) = (median(ours), median(reference));
        rows.push(vec![
            size_label(size),
            format!("{o:.0}"),
            format!("{r:.0}"),
            format!("{:.2}", o / r),
        ]);
    }
    print_table(
        "Append throughput, no per-append durability (goal: ratio >= 0.8)",
        &["batch", "chorus MB/s", "write_all MB/s", "ratio"],
        &rows,
    );
}

/// 8 writers appending `size`-byte batches with `flush.messages=1` for `duration`:
/// (MB/s, fsyncs/s, appends per fsync).
fn group_commit(size: usize, duration: Duration) -> (f64, f64, f64) {
    let dir = scratch();
    let log = Arc::new(
        Log::open(
            dir.path(),
            LogOptions::with_config(config(&[("flush.messages", "1")])),
        )
        .unwrap(),
    );
    let template = make_batch(size);
    let start = Instant::now();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let log = log.clone();
            let mut buf = template.clone();
            std::thread::spawn(move || {
                let mut bytes = 0u64;
                while start.elapsed() < duration {
                    log.append(&mut buf).unwrap();
                    bytes += buf.len() as u64;
                }
                bytes
            })
        })
        .collect();
    let bytes: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let elapsed = start.elapsed();
    let appends = bytes / template.len() as u64;
    let syncs = log.sync_count().max(1);
    (
        mb_per_s(bytes, elapsed),
        syncs as f64 / elapsed.as_secs_f64(),
        appends as f64 / syncs as f64,
    )
}

fn durable_append() {
    // The disk's fsync speed drifts a lot on shared machines, so reference and Chorus run in
    // alternating one-second slices and the ratio is the median of the per-slice ratios.
    let slice = if quick() {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(1)
    };
    let rounds = if quick() { 2 } else { 4 };
    let mut rows = Vec::new();
    for size in [16 << 10, 64 << 10, 256 << 10, 1 << 20] {
        let (mut ratios, mut ours, mut refs, mut syncs, mut per_sync) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let (r, (o, s, p)) = if round % 2 == 0 {
                let r = fsync_per_mib(scratch().path(), slice);
                (r, group_commit(size, slice))
            } else {
                let o = group_commit(size, slice);
                (fsync_per_mib(scratch().path(), slice), o)
            };
            ratios.push(o / r);
            ours.push(o);
            refs.push(r);
            syncs.push(s);
            per_sync.push(p);
        }
        rows.push(vec![
            size_label(size),
            format!("{:.0}", median(ours)),
            format!("{:.0}", median(refs)),
            format!("{:.2}", median(ratios)),
            format!("{:.0}", median(syncs)),
            format!("{:.1}", median(per_sync)),
        ]);
    }
    print_table(
        "Durable append: 8 writers, flush.messages=1, group commit (goal: ratio >= 0.8)",
        &[
            "batch",
            "chorus MB/s",
            "write_all+fdatasync/1 MiB MB/s",
            "ratio (median of interleaved runs)",
            "fsyncs/s",
            "appends per fsync",
        ],
        &rows,
    );
}

fn read_throughput() {
    let total: usize = if quick() { 32 << 20 } else { 256 << 20 };
    let dir = scratch();
    let log = Log::open(dir.path(), LogOptions::with_config(config(&[]))).unwrap();
    let mut buf = make_batch(16 << 10);
    for _ in 0..total / buf.len() {
        log.append(&mut buf).unwrap();
    }
    let end = log.log_end_offset();
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap();
    let plain = |path: &Path| {
        let mut f = File::open(path).unwrap();
        let mut chunk = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = f.read(&mut chunk).unwrap();
            if n == 0 {
                break bytes;
            }
            bytes += n as u64;
        }
    };
    plain(&file); // warm the page cache
    let (mut ours, mut reference) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let (d, bytes) = time(|| plain(&file));
        reference.push(mb_per_s(bytes, d));
        let (d, bytes) = time(|| {
            let mut offset = 0;
            let mut bytes = 0u64;
            while offset < end {
                let read = log.read(offset, ReadLimits::bytes(1 << 20)).unwrap();
                bytes += read.bytes.len() as u64;
                let (_, last, _) = read.batches().last().unwrap();
                offset = last.next_offset();
            }
            bytes
        });
        ours.push(mb_per_s(bytes, d));
    }
    let (o, r) = (median(ours), median(reference));
    print_table(
        "Sequential read from the page cache, 1 MiB reads (goal: ratio >= 0.8)",
        &["chorus MB/s", "read() MB/s", "ratio"],
        &[vec![
            format!("{o:.0}"),
            format!("{r:.0}"),
            format!("{:.2}", o / r),
        ]],
    );
}

fn recovery() {
    let total: usize = if quick() { 128 << 20 } else { 1 << 30 };
    // One segment holds the whole log, so after a crash all of it is "the last segment".
    let cfg = config(&[("segment.bytes", "2147483647")]);
    let mut rows = Vec::new();
    for batch_size in [1 << 10, 16 << 10] {
        let dir = scratch();
        {
            let log = Log::open(dir.path(), LogOptions::with_config(cfg.clone())).unwrap();
            let mut buf = make_batch(batch_size);
            for _ in 0..total / buf.len() {
                log.append(&mut buf).unwrap();
            }
            log.close().unwrap();
        }
        let (clean, log) =
            time(|| Log::open(dir.path(), LogOptions::with_config(cfg.clone())).unwrap());
        assert!(log.recovery_report().clean);
        // Dirty the log and drop it without closing: the next open validates the last segment.
        log.append(&mut make_batch(batch_size)).unwrap();
        drop(log);
        let (crash, log) =
            time(|| Log::open(dir.path(), LogOptions::with_config(cfg.clone())).unwrap());
        let validated = log.recovery_report().bytes_validated;
        drop(log);
        // No checkpoint at all: every segment is validated.
        std::fs::remove_file(dir.path().join("partition.checkpoint")).unwrap();
        let (full, log) =
            time(|| Log::open(dir.path(), LogOptions::with_config(cfg.clone())).unwrap());
        let all = log.recovery_report().bytes_validated;
        rows.push(vec![
            size_label(batch_size),
            format!("{:.1} MiB", total as f64 / (1 << 20) as f64),
            format!("{:.1} ms", clean.as_secs_f64() * 1e3),
            format!(
                "{:.0} ms for {:.0} MiB = {:.2} GB/s",
                crash.as_secs_f64() * 1e3,
                validated as f64 / (1 << 20) as f64,
                validated as f64 / crash.as_secs_f64() / 1e9
            ),
            format!(
                "{:.0} ms = {:.2} GB/s",
                full.as_secs_f64() * 1e3,
                all as f64 / full.as_secs_f64() / 1e9
            ),
        ]);
    }
    print_table(
        "Recovery on open (goals: clean < 1 s; validation >= 1 GB/s)",
        &[
            "batch",
            "log size",
            "clean open",
            "after a crash (last segment validated)",
            "no checkpoint (all validated)",
        ],
        &rows,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us with no such flag and
    // only wants to know that we build.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    println!(
        "Chorus storage benchmarks ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if wanted("append") {
        append_throughput();
    }
    if wanted("durable") {
        durable_append();
    }
    if wanted("read") {
        read_throughput();
    }
    if wanted("recovery") {
        recovery();
    }
}
