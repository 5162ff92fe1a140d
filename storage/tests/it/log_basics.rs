//! Append, read, roll, indexes, timestamps, truncation and delete-records.

use chorus_storage::batch::{BatchBuilder, BatchError, TimestampType};
use chorus_storage::codec::Compression;
use chorus_storage::{LogError, ReadLimits};

use crate::common::*;

#[test]
fn appended_batches_read_back_byte_for_byte_with_assigned_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &config(&[]));
    let mut a = batch(3, b"hello", 1_000);
    let mut b = compressed(Compression::Zstd, 5, 2_000);
    let original_b = b.clone();
    let ia = log.append(&mut a).unwrap();
    let ib = log.append(&mut b).unwrap();
    assert_eq!((ia.first_offset, ia.last_offset), (0, 2));
    assert_eq!((ib.first_offset, ib.last_offset), (3, 7));
    assert_eq!(ib.records, 5);
    assert_eq!(log.log_end_offset(), 8);

    // The read starting inside the second batch returns the whole batch, unchanged but for
    // the base offset and leader epoch (outside the CRC).
    let read = log.read(5, ReadLimits::bytes(1 << 20)).unwrap();
    let batches: Vec<_> = read.batches().collect();
    assert_eq!(batches.len(), 1);
    let (_, header, bytes) = batches[0];
    assert_eq!(header.base_offset, 3);
    assert_eq!(
        &bytes[17..],
        &original_b[17..],
        "bytes after the epoch are untouched"
    );
    chorus_storage::batch::validate(bytes, chorus_storage::batch::Strictness::Stored).unwrap();

    let recs = read_all(&log, 0);
    assert_eq!(recs.len(), 8);
    assert_eq!(recs[0].value.as_deref(), Some(&b"hello"[..]));
    assert_eq!(recs[7].value.as_deref(), Some(&b"value-4"[..]));
    assert_eq!(recs[4].timestamp, 2_001);
}

#[test]
fn several_batches_in_one_append_get_consecutive_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &config(&[]));
    let mut buf = batch(2, b"x", 1);
    buf.extend(batch(3, b"y", 2));
    let info = log.append(&mut buf).unwrap();
    assert_eq!(
        (info.first_offset, info.last_offset, info.batches),
        (0, 4, 2)
    );
    assert_eq!(offsets(&log, 0), vec![0, 1, 2, 3, 4]);
}

#[test]
fn an_invalid_batch_anywhere_in_an_append_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &config(&[]));
    log.append(&mut batch(1, b"first", 1)).unwrap();
    let size_before = log.size_bytes();

    let mut bad = batch(2, b"x", 1);
    bad.extend(batch(1, b"y", 1));
    let last = bad.len() - 1;
    bad[last] ^= 1; // damage the second batch
    match log.append(&mut bad) {
        Err(LogError::InvalidBatch { position, source }) => {
            assert!(position > 0, "the second batch is the bad one");
            assert!(matches!(source, BatchError::CrcMismatch { .. }));
        }
        other => panic!("expected a CRC error, got {other:?}"),
    }
    // Truncated, garbage and empty appends.
    let good = batch(1, b"z", 1);
    assert!(matches!(
        log.append(&mut good[..good.len() - 4].to_vec()),
        Err(LogError::InvalidBatch { .. })
    ));
    assert!(matches!(
        log.append(&mut [0xff; 100]),
        Err(LogError::InvalidBatch { .. })
    ));
    assert!(matches!(
        log.append(&mut Vec::new()),
        Err(LogError::InvalidBatch {
            source: BatchError::Empty,
            ..
        })
    ));
    assert_eq!(log.size_bytes(), size_before);
    assert_eq!(log.log_end_offset(), 1);
    assert_eq!(read_all(&log, 0).len(), 1);
}

#[test]
fn batches_above_max_message_bytes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &config(&[("max.message.bytes", "1000")]));
    let mut big = batch(1, &[7u8; 2000], 1);
    assert!(matches!(
        log.append(&mut big),
        Err(LogError::RecordTooLarge { max: 1000, .. })
    ));
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn reads_outside_the_log_are_out_of_range_and_the_end_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &config(&[]));
    log.append(&mut batch(4, b"v", 1)).unwrap();
    assert!(log
        .read(4, ReadLimits::bytes(100))
        .unwrap()
        .bytes
        .is_empty());
    assert!(matches!(
        log.read(5, ReadLimits::bytes(100)),
        Err(LogError::OffsetOutOfRange {
            requested: 5,
            log_start: 0,
            log_end: 4
        })
    ));
    assert!(matches!(
        log.read(-1, ReadLimits::bytes(100)),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn byte_limits_return_whole_batches_and_min_one_makes_progress() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &config(&[]));
    for _ in 0..10 {
        log.append(&mut batch(1, &[1u8; 500], 1)).unwrap();
    }
    let one_len = log.read(0, ReadLimits::bytes(1 << 20)).unwrap().bytes.len() / 10;
    let read = log.read(0, ReadLimits::bytes(one_len * 3 + 10)).unwrap();
    assert_eq!(read.bytes.len(), one_len * 3, "only whole batches");
    let tiny = log.read(2, ReadLimits::bytes(10)).unwrap();
    assert_eq!(tiny.bytes.len(), one_len, "min_one returns the first batch");
    let strict = log
        .read(
            2,
            ReadLimits {
                max_bytes: 10,
                min_one_batch: false,
                max_offset: None,
            },
        )
        .unwrap();
    assert!(strict.bytes.is_empty());
    let capped = log
        .read(
            0,
            ReadLimits {
                max_bytes: 1 << 20,
                min_one_batch: true,
                max_offset: Some(4),
            },
        )
        .unwrap();
    assert_eq!(
        capped.batches().count(),
        4,
        "nothing at or after max_offset"
    );
}

#[test]
fn segments_roll_by_size_and_lookups_work_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("segment.bytes", "4096"), ("index.interval.bytes", "256")]);
    let log = open(dir.path(), &cfg);
    for i in 0..200 {
        log.append(&mut batch(
            2,
            format!("value-{i:04}").repeat(10).as_bytes(),
            i,
        ))
        .unwrap();
    }
    assert!(log.segment_count() > 10, "{} segments", log.segment_count());
    let bases = log.segment_base_offsets();
    assert!(bases.windows(2).all(|w| w[0] < w[1]));
    // Every offset reads back as the batch that holds it, whichever segment it is in.
    for offset in 0..400 {
        let read = log
            .read(
                offset,
                ReadLimits {
                    max_bytes: 1,
                    min_one_batch: true,
                    max_offset: None,
                },
            )
            .unwrap();
        let (_, header, _) = read.batches().next().unwrap();
        assert!(header.base_offset <= offset && offset <= header.last_offset());
    }
    // And the same after a clean reopen (trusted indexes) and an unclean one (rebuilt).
    log.close().unwrap();
    drop(log);
    let log = open(dir.path(), &cfg);
    assert!(log.recovery_report().clean);
    assert_eq!(log.recovery_report().segments_validated, 0);
    assert_eq!(log.segment_base_offsets(), bases);
    assert_eq!(offsets(&log, 0), (0..400).collect::<Vec<_>>());
    log.append(&mut batch(1, b"after", 1)).unwrap();
    drop(log); // no close: a crash as far as the files are concerned
    let log = open(dir.path(), &cfg);
    assert!(!log.recovery_report().clean);
    assert_eq!(offsets(&log, 0), (0..401).collect::<Vec<_>>());
    assert_eq!(
        log.append(&mut batch(1, b"more", 1)).unwrap().first_offset,
        401
    );
}

#[test]
fn reopen_after_write_keeps_everything_and_continues_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[]);
    {
        let log = open(dir.path(), &cfg);
        log.append(&mut batch(3, b"a", 10)).unwrap();
        log.append(&mut batch(2, b"b", 20)).unwrap();
        log.close().unwrap();
    }
    let log = open(dir.path(), &cfg);
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(log.append(&mut batch(1, b"c", 30)).unwrap().first_offset, 5);
    assert_eq!(offsets(&log, 0), vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn offsets_by_timestamp_find_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("segment.bytes", "2048"), ("index.interval.bytes", "100")]);
    let log = open(dir.path(), &cfg);
    // Timestamps 1000, 1010, ... one record per offset, some batches out of order.
    for i in 0..100i64 {
        let ts = if i == 50 { 500 } else { 1_000 + i * 10 };
        log.append(&mut batch(1, &[0u8; 100], ts)).unwrap();
    }
    assert!(log.segment_count() > 3);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(1_000).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(1_001).unwrap(), Some(1));
    assert_eq!(
        log.offset_for_timestamp(1_495).unwrap(),
        Some(51),
        "offset 50 is older"
    );
    assert_eq!(log.offset_for_timestamp(1_990).unwrap(), Some(99));
    assert_eq!(log.offset_for_timestamp(1_991).unwrap(), None);
    assert_eq!(log.max_timestamp().unwrap(), Some((1_990, 99)));
    // Inside a multi-record batch the record-level timestamp decides.
    log.append(&mut batch(5, b"x", 5_000)).unwrap(); // 5000..5004 at offsets 100..104
    assert_eq!(log.offset_for_timestamp(5_003).unwrap(), Some(103));
}

#[test]
fn log_append_time_topics_stamp_the_broker_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(chorus_storage::ManualClock::new(77_000));
    let cfg = config(&[("message.timestamp.type", "LogAppendTime")]);
    let log = open_with_clock(dir.path(), &cfg, clock);
    let info = log.append(&mut batch(2, b"v", 5)).unwrap();
    assert_eq!(info.log_append_time, Some(77_000));
    let read = log.read(0, ReadLimits::bytes(1 << 20)).unwrap();
    let (_, header, bytes) = read.batches().next().unwrap();
    assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(header.max_timestamp, 77_000);
    chorus_storage::batch::validate(bytes, chorus_storage::batch::Strictness::Stored)
        .expect("CRC recomputed");
    assert_eq!(log.offset_for_timestamp(77_000).unwrap(), Some(0));
}

#[test]
fn truncation_removes_whole_batches_from_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("segment.bytes", "1024")]);
    let log = open(dir.path(), &cfg);
    for _ in 0..30 {
        log.append(&mut batch(3, &[9u8; 60], 1)).unwrap();
    }
    let segments_before = log.segment_count();
    // 40 is inside the batch 39..41: the whole batch goes.
    assert_eq!(log.truncate_to(40).unwrap(), 39);
    assert_eq!(log.log_end_offset(), 39);
    assert!(log.segment_count() < segments_before);
    assert_eq!(offsets(&log, 0), (0..39).collect::<Vec<_>>());
    assert_eq!(
        log.append(&mut batch(1, b"new", 1)).unwrap().first_offset,
        39
    );
    drop(log);
    let log = open(dir.path(), &cfg);
    assert_eq!(log.log_end_offset(), 40);
    assert_eq!(read_all(&log, 39)[0].value.as_deref(), Some(&b"new"[..]));
}

#[test]
fn delete_records_moves_the_log_start_durably() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("segment.bytes", "1024")]);
    let log = open(dir.path(), &cfg);
    for _ in 0..30 {
        log.append(&mut batch(2, &[1u8; 100], 1)).unwrap();
    }
    let segments_before = log.segment_count();
    assert_eq!(log.delete_records_before(25).unwrap(), 25);
    assert_eq!(log.log_start_offset(), 25);
    assert!(
        log.segment_count() < segments_before,
        "whole segments below go"
    );
    assert!(matches!(
        log.read(24, ReadLimits::bytes(100)),
        Err(LogError::OffsetOutOfRange { log_start: 25, .. })
    ));
    assert_eq!(offsets(&log, 25).first(), Some(&25));
    assert!(matches!(
        log.delete_records_before(61),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        log.delete_records_before(10).unwrap(),
        25,
        "never moves back"
    );
    drop(log);
    let log = open(dir.path(), &cfg);
    assert_eq!(log.log_start_offset(), 25);
}

#[test]
fn roll_by_age_uses_the_injected_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(chorus_storage::ManualClock::new(1_000_000));
    let cfg = config(&[("segment.ms", "60000")]);
    let log = open_with_clock(dir.path(), &cfg, clock.clone());
    log.append(&mut batch(1, b"a", 1)).unwrap();
    clock.advance(59_999);
    log.append(&mut batch(1, b"b", 1)).unwrap();
    assert_eq!(log.segment_count(), 1);
    clock.advance(1);
    log.append(&mut batch(1, b"c", 1)).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);
}

#[test]
fn control_batches_and_bad_record_counts_are_invalid_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &config(&[]));
    let mut control = BatchBuilder::new().record(None, Some(b"x"), 1);
    control.control = true;
    let mut control = control.build().unwrap();
    assert!(matches!(
        log.append(&mut control),
        Err(LogError::InvalidBatch {
            source: BatchError::ControlBatch,
            ..
        })
    ));
    let mut lying = BatchBuilder::new().record(None, Some(b"x"), 1);
    lying.last_offset_delta = Some(3);
    assert!(matches!(
        log.append(&mut lying.build().unwrap()),
        Err(LogError::InvalidBatch {
            source: BatchError::CountMismatch { .. },
            ..
        })
    ));
}
