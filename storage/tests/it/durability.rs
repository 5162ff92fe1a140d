//! Group commit and the durability API.

use std::sync::Arc;
use std::thread;

use crate::common::*;

#[test]
fn concurrent_durable_appends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path(), &config(&[("flush.messages", "1")])));
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 50;
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let log = log.clone();
            thread::spawn(move || {
                for i in 0..PER_WRITER {
                    let info = log
                        .append(&mut batch(1, format!("w{w}-{i}").as_bytes(), 1))
                        .unwrap();
                    // flush.messages=1: the append returns only once it is on disk.
                    assert!(log.durable_offset() > info.last_offset);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let appends = (WRITERS * PER_WRITER) as u64;
    assert_eq!(log.log_end_offset(), appends as i64);
    assert_eq!(log.durable_offset(), appends as i64);
    let syncs = log.sync_count();
    assert!(syncs >= 1);
    assert!(
        syncs < appends,
        "group commit should need fewer fsyncs ({syncs}) than appends ({appends})"
    );
}

#[test]
fn without_a_flush_policy_appends_wait_for_nothing_until_asked() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &config(&[]));
    let info = log.append(&mut batch(3, b"x", 1)).unwrap();
    assert_eq!(log.durable_offset(), 0, "nothing synced yet");
    assert_eq!(log.sync_count(), 0);
    log.wait_durable(info.last_offset + 1).unwrap();
    assert_eq!(log.durable_offset(), 3);
    assert_eq!(log.sync_count(), 1);
    // Already durable: no new sync.
    log.wait_durable(2).unwrap();
    assert_eq!(log.sync_count(), 1);
}

#[test]
fn flush_messages_syncs_every_n_messages() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &config(&[("flush.messages", "10")]));
    for _ in 0..9 {
        log.append(&mut batch(1, b"x", 1)).unwrap();
    }
    assert_eq!(log.sync_count(), 0);
    log.append(&mut batch(1, b"x", 1)).unwrap();
    assert_eq!(log.sync_count(), 1);
    assert_eq!(log.durable_offset(), 10);
}

#[test]
fn flush_ms_syncs_once_data_has_waited_long_enough() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(chorus_storage::ManualClock::new(1_000));
    let log = open_with_clock(dir.path(), &config(&[("flush.ms", "500")]), clock.clone());
    log.append(&mut batch(1, b"x", 1)).unwrap();
    assert!(!log.flush_if_due().unwrap());
    clock.advance(500);
    assert!(log.flush_if_due().unwrap());
    assert_eq!(log.durable_offset(), 1);
    assert!(!log.flush_if_due().unwrap(), "nothing new to sync");
}

#[test]
fn a_roll_makes_the_sealed_segment_durable() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &config(&[("segment.bytes", "1024")]));
    for _ in 0..10 {
        log.append(&mut batch(1, &[0u8; 300], 1)).unwrap();
    }
    assert!(log.segment_count() > 1);
    let active_base = *log.segment_base_offsets().last().unwrap();
    assert!(log.durable_offset() >= active_base);
}
