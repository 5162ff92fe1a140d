//! Reads that hand back a range of the segment file instead of bytes (`Log::read_records`):
//! the range must hold exactly the whole batches a byte read would, or a prefix of them that
//! ends on a batch boundary.

use std::sync::Arc;

use chorus_storage::batch::BatchIter;
use chorus_storage::{Log, ManualClock, ReadLimits, Records};

use crate::common::*;

/// `count` batches of 3 records with 2 KiB values each (about 6 KiB a batch, so with the
/// default 4 KiB index interval every batch after the first is indexed).
fn log_of(dir: &std::path::Path, count: usize, pairs: &[(&str, &str)]) -> Log {
    let log = open(dir, &config(pairs));
    for i in 0..count {
        log.append(&mut batch(3, &[i as u8; 2048], 1_000 + i as i64))
            .unwrap();
    }
    log
}

fn file_bytes(records: &Records) -> Vec<u8> {
    match records {
        Records::File(range) => range.read().unwrap(),
        Records::Bytes(b) => panic!("expected a file range, got {} bytes", b.len()),
    }
}

/// `(base offset, length)` of every batch in `bytes`, which must be whole batches only.
fn batches(bytes: &[u8]) -> Vec<(i64, usize)> {
    let mut seen = 0;
    let out: Vec<_> = BatchIter::new(bytes)
        .map(|(pos, header, _)| {
            assert_eq!(pos, seen, "batches are back to back");
            seen += header.total_len();
            (header.base_offset, header.total_len())
        })
        .collect();
    assert_eq!(seen, bytes.len(), "no partial batch at the end");
    out
}

#[test]
fn a_whole_segment_tail_comes_back_as_a_range_equal_to_the_byte_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(dir.path(), 20, &[]);
    for from in [0, 7, 30, 59] {
        let limits = ReadLimits::bytes(1 << 20);
        let read = log.read_records(from, limits, 0).unwrap();
        let bytes = log.read(from, limits).unwrap().bytes;
        assert_eq!(file_bytes(&read.records), bytes, "from {from}");
        assert_eq!(read.log_end_offset, 60);
    }
}

#[test]
fn a_byte_limit_ends_the_range_on_a_batch_boundary_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(dir.path(), 20, &[]);
    let full = log.read(0, ReadLimits::bytes(1 << 20)).unwrap().bytes;
    for max in [13_000usize, 20_000, 50_000, 100_000] {
        let read = log.read_records(0, ReadLimits::bytes(max), 0).unwrap();
        let got = file_bytes(&read.records);
        assert!(
            !got.is_empty() && got.len() <= max,
            "limit {max}: {}",
            got.len()
        );
        assert!(full.starts_with(&got), "limit {max}: a prefix of the log");
        let batches = batches(&got);
        assert_eq!(batches[0].0, 0);
        // At most one batch shorter than the byte read (the index names every batch here).
        let byte_read = log.read(0, ReadLimits::bytes(max)).unwrap().bytes;
        assert!(byte_read.len() - got.len() <= batches[0].1, "limit {max}");
    }
}

#[test]
fn the_offset_limit_is_respected() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(dir.path(), 20, &[]);
    let limits = ReadLimits {
        max_bytes: 1 << 20,
        min_one_batch: true,
        max_offset: Some(30),
    };
    let read = log.read_records(0, limits, 0).unwrap();
    let got = file_bytes(&read.records);
    let bases: Vec<i64> = batches(&got).iter().map(|&(base, _)| base).collect();
    assert_eq!(
        bases.last(),
        Some(&27),
        "the batch starting at 30 is excluded"
    );
    assert_eq!(got, log.read(0, limits).unwrap().bytes);
}

#[test]
fn small_runs_and_oversized_first_batches_are_read_into_memory() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_of(dir.path(), 20, &[]);
    let limits = ReadLimits::bytes(1 << 20);
    let small = log.read_records(0, limits, 10 << 20).unwrap();
    assert!(
        matches!(&small.records, Records::Bytes(b) if *b == log.read(0, limits).unwrap().bytes)
    );
    // A limit smaller than the first batch: KIP-74 still returns that batch, from memory.
    let one = log.read_records(3, ReadLimits::bytes(100), 0).unwrap();
    match &one.records {
        Records::Bytes(b) => assert_eq!(batches(b).len(), 1),
        Records::File(_) => panic!("the index cannot delimit a batch larger than the limit"),
    }
}

#[test]
fn a_range_outlives_the_deletion_of_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(10_000_000));
    let cfg = config(&[("segment.bytes", "20000"), ("retention.ms", "60000")]);
    let log = open_with_clock(dir.path(), &cfg, clock);
    for i in 0..10 {
        log.append(&mut batch(3, &[i as u8; 2048], 10_000_000 - 120_000))
            .unwrap();
    }
    log.append(&mut batch(1, b"fresh", 10_000_000)).unwrap();
    let read = log.read_records(0, ReadLimits::bytes(1 << 20), 0).unwrap();
    let before = file_bytes(&read.records);
    assert!(log.apply_retention().unwrap().segments_deleted > 0);
    assert!(log.log_start_offset() > 0);
    assert_eq!(file_bytes(&read.records), before);
}
