//! Recovery on open: torn tails, flipped bytes, missing and damaged indexes, leftovers.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use chorus_storage::LogError;

use crate::common::*;

fn segment_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == suffix))
        .collect();
    v.sort();
    v
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

fn flip_byte(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_torn_tail_is_truncated_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[]);
    let log = open(dir.path(), &cfg);
    for i in 0..10 {
        log.append(&mut batch(2, format!("v{i}").repeat(50).as_bytes(), i))
            .unwrap();
    }
    drop(log);
    let active = segment_files(dir.path(), "log").pop().unwrap();
    let full = file_len(&active);
    // Cut the last batch in half, as a crash mid-write would.
    let f = OpenOptions::new().write(true).open(&active).unwrap();
    f.set_len(full - 40).unwrap();
    drop(f);

    let log = open(dir.path(), &cfg);
    let report = log.recovery_report();
    assert_eq!(report.truncated.len(), 1, "{report:?}");
    let tail = &report.truncated[0];
    assert_eq!(tail.path, active);
    assert!(tail.bytes_dropped > 0 && tail.bytes_dropped < full);
    assert_eq!(log.log_end_offset(), 18, "the torn batch 18..19 is gone");
    assert_eq!(offsets(&log, 0), (0..18).collect::<Vec<_>>());
    assert_eq!(file_len(&active), tail.position);
    assert_eq!(
        log.append(&mut batch(1, b"next", 1)).unwrap().first_offset,
        18
    );
}

#[test]
fn flipped_bytes_in_the_last_segment_cut_the_log_at_that_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[]);
    let log = open(dir.path(), &cfg);
    let mut positions = Vec::new();
    for i in 0..10 {
        positions.push(log.size_bytes());
        log.append(&mut batch(1, format!("value-{i}").as_bytes(), i))
            .unwrap();
    }
    drop(log);
    let active = segment_files(dir.path(), "log").pop().unwrap();
    flip_byte(&active, positions[6] + 70); // inside batch 6's records

    let log = open(dir.path(), &cfg);
    let report = log.recovery_report();
    assert_eq!(report.truncated.len(), 1);
    assert_eq!(report.truncated[0].position, positions[6]);
    assert!(report.truncated[0].reason.contains("CRC"), "{report:?}");
    assert_eq!(log.log_end_offset(), 6);
    let recs = read_all(&log, 0);
    assert_eq!(recs[5].value.as_deref(), Some(&b"value-5"[..]));
}

#[test]
fn garbage_after_a_clean_close_is_found_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[]);
    let log = open(dir.path(), &cfg);
    log.append(&mut batch(3, b"kept", 1)).unwrap();
    log.close().unwrap();
    drop(log);
    let active = segment_files(dir.path(), "log").pop().unwrap();
    let mut bytes = std::fs::read(&active).unwrap();
    bytes.extend_from_slice(&[0xab; 100]);
    std::fs::write(&active, bytes).unwrap();

    let log = open(dir.path(), &cfg);
    assert_eq!(log.recovery_report().truncated.len(), 1);
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(read_all(&log, 0).len(), 3);
}

#[test]
fn a_corrupt_segment_in_the_middle_is_reported_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("segment.bytes", "1024")]);
    let log = open(dir.path(), &cfg);
    for i in 0..40 {
        log.append(&mut batch(1, format!("value-{i}").repeat(8).as_bytes(), i))
            .unwrap();
    }
    drop(log);
    let logs = segment_files(dir.path(), "log");
    assert!(logs.len() >= 3);
    flip_byte(&logs[1], 80);
    // Without a checkpoint nothing is trusted, so every segment is validated.
    std::fs::remove_file(dir.path().join("partition.checkpoint")).unwrap();
    match chorus_storage::Log::open(dir.path(), chorus_storage::LogOptions::with_config(cfg)) {
        Err(LogError::CorruptSegment { path, .. }) => assert_eq!(path, logs[1]),
        other => panic!("expected CorruptSegment, got {other:?}"),
    }
    // Nothing was cut: the later segments are all still there.
    assert_eq!(segment_files(dir.path(), "log"), logs);
}

#[test]
fn a_missing_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("segment.bytes", "4096"), ("index.interval.bytes", "128")]);
    let log = open(dir.path(), &cfg);
    for i in 0..100 {
        log.append(&mut batch(1, &[i as u8; 200], i)).unwrap();
    }
    log.close().unwrap();
    drop(log);
    let indexes = segment_files(dir.path(), "index");
    let victim = indexes[1].clone();
    std::fs::remove_file(&victim).unwrap();
    std::fs::remove_file(victim.with_extension("timeindex")).unwrap();

    let log = open(dir.path(), &cfg);
    assert_eq!(log.recovery_report().indexes_rebuilt, vec![victim.clone()]);
    assert!(victim.exists());
    assert_eq!(offsets(&log, 0), (0..100).collect::<Vec<_>>());
    assert_eq!(log.offset_for_timestamp(57).unwrap(), Some(57));
}

#[test]
fn a_damaged_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("segment.bytes", "4096"), ("index.interval.bytes", "128")]);
    let log = open(dir.path(), &cfg);
    for i in 0..100 {
        log.append(&mut batch(1, &[i as u8; 200], i)).unwrap();
    }
    log.close().unwrap();
    drop(log);
    let victim = segment_files(dir.path(), "index")[0].clone();
    // Entries pointing far past the end of the log.
    std::fs::write(&victim, [0xffu8; 64]).unwrap();

    let log = open(dir.path(), &cfg);
    assert_eq!(log.recovery_report().indexes_rebuilt, vec![victim]);
    for offset in [0, 5, 17, 33, 99] {
        let read = log
            .read(offset, chorus_storage::ReadLimits::bytes(1))
            .unwrap();
        let (_, h, _) = read.batches().next().unwrap();
        assert_eq!(h.base_offset, offset);
    }
}

#[test]
fn leftovers_of_interrupted_work_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[]);
    let log = open(dir.path(), &cfg);
    log.append(&mut batch(1, b"x", 1)).unwrap();
    log.close().unwrap();
    drop(log);
    std::fs::create_dir(dir.path().join("cleaning")).unwrap();
    std::fs::write(dir.path().join("cleaning").join("x.log"), b"junk").unwrap();
    std::fs::write(dir.path().join("partition.checkpoint.tmp"), b"junk").unwrap();
    std::fs::write(dir.path().join("00000000000000000999.index"), b"orphan").unwrap();

    let log = open(dir.path(), &cfg);
    assert_eq!(log.recovery_report().removed.len(), 3);
    assert!(!dir.path().join("cleaning").exists());
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn an_unreadable_checkpoint_means_validating_everything() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[("segment.bytes", "1024")]);
    let log = open(dir.path(), &cfg);
    for _ in 0..20 {
        log.append(&mut batch(1, &[3u8; 200], 1)).unwrap();
    }
    log.close().unwrap();
    drop(log);
    std::fs::write(dir.path().join("partition.checkpoint"), b"\xff\xfe garbage").unwrap();
    let log = open(dir.path(), &cfg);
    let report = log.recovery_report();
    assert!(!report.clean);
    assert_eq!(report.segments_validated, log.segment_count());
    assert_eq!(log.log_end_offset(), 20);
}
