//! Log compaction keeps the latest record per key, honours tombstones, preserves offsets and
//! runs beside appends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use chorus_storage::batch::BatchBuilder;
use chorus_storage::codec::Compression;
use chorus_storage::ManualClock;

use crate::common::*;

const COMPACT: &[(&str, &str)] = &[
    ("cleanup.policy", "compact"),
    ("segment.bytes", "1024"),
    ("delete.retention.ms", "1000"),
    ("min.cleanable.dirty.ratio", "0.01"),
];

fn value_of(recs: &[Rec], key: &str) -> Vec<(i64, Option<String>)> {
    recs.iter()
        .filter(|r| r.key.as_deref() == Some(key.as_bytes()))
        .map(|r| {
            (
                r.offset,
                r.value
                    .as_ref()
                    .map(|v| String::from_utf8(v.clone()).unwrap()),
            )
        })
        .collect()
}

#[test]
fn compaction_keeps_the_latest_value_per_key_at_its_original_offset() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let log = open_with_clock(dir.path(), &config(COMPACT), clock);
    let mut latest = std::collections::BTreeMap::new();
    for i in 0..300i64 {
        let key = format!("key-{}", i % 10);
        let value = format!("value-{i}-{}", "x".repeat(40));
        let off = log
            .append(&mut keyed(&key, Some(&value), i))
            .unwrap()
            .first_offset;
        latest.insert(key, (off, value));
    }
    let before = read_all(&log, 0);
    assert!(log.compaction_due());
    let outcome = log.compact().unwrap();
    assert!(outcome.segments_cleaned > 0);
    assert!(outcome.records_removed > 0);
    assert!(outcome.bytes_after < outcome.bytes_before);
    let after = read_all(&log, 0);
    assert!(after.len() < before.len());
    // Order is kept and every surviving record has the offset it had.
    assert!(after.windows(2).all(|w| w[0].offset < w[1].offset));
    for r in &after {
        assert!(before.contains(r), "record {r:?} changed");
    }
    // The latest value of every key is still readable at its offset.
    for (key, (off, value)) in &latest {
        let vals = value_of(&after, key);
        assert_eq!(vals.last(), Some(&(*off, Some(value.clone()))), "{key}");
    }
    // Only the active segment may still hold superseded values.
    let active_base = *log.segment_base_offsets().last().unwrap();
    for key in latest.keys() {
        let old: Vec<_> = value_of(&after, key)
            .into_iter()
            .filter(|(o, _)| *o < active_base)
            .collect();
        assert!(
            old.len() <= 1,
            "{key} has {} values below the active segment",
            old.len()
        );
    }
    assert_eq!(log.log_end_offset(), 300);
}

#[test]
fn tombstones_survive_delete_retention_then_disappear() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let cfg = config(COMPACT);
    let log = open_with_clock(dir.path(), &cfg, clock.clone());
    log.append(&mut keyed("gone", Some("v1"), 1)).unwrap();
    log.append(&mut keyed("kept", Some("v1"), 1)).unwrap();
    let tomb = log
        .append(&mut keyed("gone", None, 2))
        .unwrap()
        .first_offset;
    // Push the tombstone out of the active segment.
    for i in 0..20 {
        log.append(&mut keyed(
            &format!("filler-{i}"),
            Some(&"f".repeat(100)),
            3,
        ))
        .unwrap();
    }
    log.compact().unwrap();
    let recs = read_all(&log, 0);
    assert_eq!(
        value_of(&recs, "gone"),
        vec![(tomb, None)],
        "tombstone kept for now"
    );
    assert_eq!(value_of(&recs, "kept").len(), 1);

    // Within delete.retention.ms another pass keeps it; after, it goes.
    clock.advance(500);
    log.compact().unwrap();
    assert_eq!(value_of(&read_all(&log, 0), "gone").len(), 1);
    clock.advance(600);
    let outcome = log.compact().unwrap();
    assert_eq!(outcome.tombstones_removed, 1);
    assert!(value_of(&read_all(&log, 0), "gone").is_empty());
    assert_eq!(value_of(&read_all(&log, 0), "kept").len(), 1);

    // Reopen (clean and unclean) keeps the compacted state.
    drop(log);
    let log = open_with_clock(dir.path(), &cfg, clock);
    assert!(value_of(&read_all(&log, 0), "gone").is_empty());
    assert_eq!(value_of(&read_all(&log, 0), "kept").len(), 1);
}

#[test]
fn compressed_batches_are_compacted_and_stay_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &config(COMPACT));
    for round in 0..6 {
        let mut b = BatchBuilder::new().compression(Compression::Lz4);
        for k in 0..8 {
            b = b.record(
                Some(format!("key-{k}").as_bytes()),
                Some(format!("round-{round}-{}", "z".repeat(50)).as_bytes()),
                round,
            );
        }
        log.append(&mut b.build().unwrap()).unwrap();
    }
    log.compact().unwrap();
    let read = log
        .read(0, chorus_storage::ReadLimits::bytes(1 << 20))
        .unwrap();
    for (_, h, _) in read.batches() {
        assert_eq!(h.compression().unwrap(), Compression::Lz4);
    }
    let recs = read_all(&log, 0);
    for k in 0..8 {
        let vals = value_of(&recs, &format!("key-{k}"));
        assert!(vals
            .last()
            .unwrap()
            .1
            .as_ref()
            .unwrap()
            .starts_with("round-5"));
    }
}

#[test]
fn compaction_runs_while_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(
        dir.path(),
        &config(&[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "16384"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ]),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let log = log.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) || n < 2_000 {
                let key = format!("key-{}", n % 50);
                log.append(&mut keyed(
                    &key,
                    Some(&format!("{n}-{}", "p".repeat(60))),
                    n,
                ))
                .unwrap();
                n += 1;
            }
            n
        })
    };
    let mut passes = 0;
    while passes < 5 {
        log.compact().unwrap();
        passes += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    log.compact().unwrap();
    assert_eq!(log.log_end_offset(), written);
    let recs = read_all(&log, 0);
    assert!(recs.windows(2).all(|w| w[0].offset < w[1].offset));
    // The latest value of every key is the last one written for it.
    for k in 0..50 {
        let last_n = (0..written).rev().find(|n| n % 50 == k).unwrap();
        let vals = value_of(&recs, &format!("key-{k}"));
        let (off, val) = vals.last().unwrap();
        assert_eq!(*off, last_n);
        assert!(val.as_ref().unwrap().starts_with(&format!("{last_n}-")));
    }
}

#[test]
fn compaction_of_a_delete_only_topic_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &config(&[("segment.bytes", "1024")]));
    for i in 0..30 {
        log.append(&mut keyed("same", Some(&"v".repeat(100)), i))
            .unwrap();
    }
    assert!(!log.compaction_due());
    assert_eq!(log.compact().unwrap().segments_cleaned, 0);
    assert_eq!(read_all(&log, 0).len(), 30);
}
