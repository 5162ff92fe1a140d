//! Retention by time and by size deletes whole segments and moves the log start.

use std::sync::Arc;

use chorus_storage::{ManualClock, ReadLimits};

use crate::common::*;

#[test]
fn retention_by_time_deletes_segments_whose_newest_record_expired() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(10_000_000));
    let cfg = config(&[("segment.bytes", "1024"), ("retention.ms", "60000")]);
    let log = open_with_clock(dir.path(), &cfg, clock.clone());
    // Old records (timestamps two minutes ago), then fresh ones.
    for _ in 0..20 {
        log.append(&mut batch(1, &[1u8; 200], 10_000_000 - 120_000))
            .unwrap();
    }
    let old_end = log.log_end_offset();
    for _ in 0..20 {
        log.append(&mut batch(1, &[2u8; 200], 10_000_000)).unwrap();
    }
    let before = log.segment_count();
    let outcome = log.apply_retention().unwrap();
    assert!(outcome.segments_deleted > 0);
    assert!(log.segment_count() < before);
    let start = log.log_start_offset();
    assert_eq!(outcome.log_start_offset, start);
    // Everything old that sat in a segment of its own is gone; nothing new is.
    assert!(
        start <= old_end && start > 0,
        "start {start}, old end {old_end}"
    );
    let recs = read_all(&log, start);
    assert!(
        recs.iter()
            .filter(|r| r.value.as_deref() == Some(&[2u8; 200][..]))
            .count()
            == 20
    );
    assert!(log.read(0, ReadLimits::bytes(10)).is_err());

    // Survives a reopen.
    drop(log);
    let log = open_with_clock(dir.path(), &cfg, clock.clone());
    assert_eq!(log.log_start_offset(), start);

    // Once the new records expire too, even the active segment goes (rolled first).
    clock.advance(61_000);
    log.apply_retention().unwrap();
    assert_eq!(log.log_start_offset(), log.log_end_offset());
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.append(&mut batch(1, b"x", 1)).unwrap().first_offset, 40);
}

#[test]
fn retention_by_size_keeps_the_log_under_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("segment.bytes", "2048"), ("retention.bytes", "6000")]);
    let log = open(dir.path(), &cfg);
    let now = chorus_storage::Clock::now_ms(&chorus_storage::SystemClock);
    for _ in 0..100 {
        log.append(&mut batch(1, &[7u8; 300], now)).unwrap();
    }
    let size_before = log.size_bytes();
    let outcome = log.apply_retention().unwrap();
    assert!(outcome.segments_deleted > 0);
    let size_after = log.size_bytes();
    assert_eq!(size_before - size_after, outcome.bytes_deleted);
    assert!(size_after >= 6000, "never below the limit: {size_after}");
    let oldest_remaining = 2048 + 400;
    assert!(size_after < 6000 + oldest_remaining, "{size_after}");
    assert_eq!(log.log_end_offset(), 100);
    assert_eq!(
        offsets(&log, log.log_start_offset()).len() as i64,
        100 - log.log_start_offset()
    );
}

#[test]
fn compact_only_topics_are_not_subject_to_retention() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(10_000_000));
    let cfg = config(&[
        ("segment.bytes", "1024"),
        ("retention.ms", "1"),
        ("cleanup.policy", "compact"),
    ]);
    let log = open_with_clock(dir.path(), &cfg, clock);
    for _ in 0..20 {
        log.append(&mut batch(1, &[1u8; 200], 1)).unwrap();
    }
    assert_eq!(log.apply_retention().unwrap().segments_deleted, 0);
    assert_eq!(log.log_start_offset(), 0);
}
