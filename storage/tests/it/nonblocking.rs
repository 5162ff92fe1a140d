//! What an async caller may do on its own thread: an append that is only a write into the
//! page cache (`Log::try_append_deferred`), and knowing when a read is of the log's tail
//! (`Log::is_tail`). Anything that would wait for the disk is refused, and nothing is
//! written then.

use chorus_storage::LogError;

use crate::common::*;

#[test]
fn an_append_that_may_not_block_writes_what_a_blocking_one_would() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &config(&[]));
    log.append(&mut batch(2, b"first", 1_000)).unwrap();
    let info = log
        .try_append_deferred(&mut batch(3, b"second", 2_000))
        .unwrap()
        .expect("a plain append needs no blocking");
    assert_eq!((info.first_offset, info.last_offset), (2, 4));
    assert_eq!(log.log_end_offset(), 5);
    let read = read_all(&log, 0);
    assert_eq!(read.len(), 5);
    assert_eq!(read[2].value.as_deref(), Some(&b"second"[..]));
    assert_eq!(read[4].timestamp, 2_002);
    // Invalid batches are refused as a blocking append refuses them.
    let mut bad = batch(1, b"x", 3_000);
    bad[20] ^= 0xff;
    assert!(matches!(
        log.try_append_deferred(&mut bad),
        Err(LogError::InvalidBatch { .. })
    ));
    assert_eq!(log.log_end_offset(), 5);
}

#[test]
fn the_first_append_after_a_clean_open_is_left_to_a_blocking_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &config(&[]));
    log.append(&mut batch(1, b"a", 1_000)).unwrap();
    log.close().unwrap();
    drop(log);
    let log = open(dir.path(), &config(&[]));
    // It must first mark the log unclean on disk (a file write and fsync).
    let refused = log.try_append_deferred(&mut batch(1, b"b", 2_000)).unwrap();
    assert!(refused.is_none());
    assert_eq!(log.log_end_offset(), 1, "nothing was written");
    log.append(&mut batch(1, b"b", 2_000)).unwrap();
    assert!(log
        .try_append_deferred(&mut batch(1, b"c", 3_000))
        .unwrap()
        .is_some());
    let values: Vec<_> = read_all(&log, 0).into_iter().map(|r| r.value).collect();
    assert_eq!(
        values,
        [b"a", b"b", b"c"].map(|v| Some(v.to_vec())).to_vec(),
        "the refused append left no trace"
    );
}

#[test]
fn an_append_that_must_roll_the_segment_is_left_to_a_blocking_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &config(&[("segment.bytes", "10000")]));
    log.append(&mut batch(1, b"start", 1_000)).unwrap();
    while log.size_bytes() < 8_000 {
        assert!(log
            .try_append_deferred(&mut batch(1, &[7; 1000], 1_000))
            .unwrap()
            .is_some());
    }
    let end = log.log_end_offset();
    let refused = log
        .try_append_deferred(&mut batch(1, &[8; 3000], 2_000))
        .unwrap();
    assert!(refused.is_none(), "a roll seals (fsyncs) the old segment");
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.segment_count(), 1);
    let info = log.append(&mut batch(1, &[8; 3000], 2_000)).unwrap();
    assert_eq!(info.first_offset, end);
    assert_eq!(log.segment_count(), 2);
    assert_eq!(read_all(&log, end)[0].value, Some(vec![8; 3000]));
}

#[test]
fn only_recent_bytes_of_the_active_segment_are_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &config(&[("segment.bytes", "100000")]));
    // About 6 KiB a batch, so the index names every batch.
    for i in 0..30 {
        log.append(&mut batch(3, &[i as u8; 2048], 1_000)).unwrap();
    }
    assert_eq!(log.segment_count(), 2);
    let end = log.log_end_offset();
    let active_base = *log.segment_base_offsets().last().unwrap();
    assert!(log.is_tail(end, 0), "nothing left to read");
    assert!(log.is_tail(end - 3, 7_000));
    assert!(!log.is_tail(end - 3, 1_000), "a whole batch is behind it");
    assert!(!log.is_tail(end + 1, u64::MAX), "past the end");
    assert!(log.is_tail(active_base, u64::MAX));
    assert!(
        !log.is_tail(active_base - 1, u64::MAX),
        "older segments are not the tail"
    );
}
