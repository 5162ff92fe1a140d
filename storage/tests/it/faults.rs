//! Injected disk faults produce typed errors, never corruption.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chorus_storage::error::IoOp;
use chorus_storage::io::{FaultInjector, Io, WriteFault};
use chorus_storage::{Log, LogError, LogOptions};

use crate::common::*;

/// Fails the operations it is armed for, once each.
#[derive(Debug, Default)]
struct Faults {
    write: Mutex<Option<WriteMode>>,
    syncs_to_fail: AtomicUsize,
}

#[derive(Debug, Clone, Copy)]
enum WriteMode {
    NoSpace,
    Short(usize),
}

impl FaultInjector for Faults {
    fn on_write(&self, path: &Path, _len: usize) -> Option<WriteFault> {
        if path.extension().is_none_or(|e| e != "log") {
            return None;
        }
        let mode = self.write.lock().unwrap().take()?;
        let enospc = io::Error::from_raw_os_error(28);
        Some(match mode {
            WriteMode::NoSpace => WriteFault::Fail(enospc),
            WriteMode::Short(n) => WriteFault::Short(n, enospc),
        })
    }

    fn on_sync(&self, _path: &Path) -> Option<io::Error> {
        self.syncs_to_fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()
            .map(|_| io::Error::from_raw_os_error(5))
    }
}

fn open_faulty(dir: &Path, faults: &Arc<Faults>, pairs: &[(&str, &str)]) -> Log {
    Log::open(
        dir,
        LogOptions {
            config: config(pairs),
            io: Io::with_faults(faults.clone()),
            ..LogOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn a_full_disk_fails_the_append_and_leaves_the_log_usable() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let log = open_faulty(dir.path(), &faults, &[]);
    log.append(&mut batch(2, b"before", 1)).unwrap();
    let size = log.size_bytes();

    *faults.write.lock().unwrap() = Some(WriteMode::NoSpace);
    match log.append(&mut batch(1, b"lost", 1)) {
        Err(LogError::Io {
            op: IoOp::Write,
            source,
            ..
        }) => {
            assert_eq!(source.raw_os_error(), Some(28))
        }
        other => panic!("expected a write error, got {other:?}"),
    }
    assert_eq!(log.size_bytes(), size);
    assert_eq!(log.log_end_offset(), 2);
    assert!(!log.is_poisoned());
    assert_eq!(
        log.append(&mut batch(1, b"after", 1)).unwrap().first_offset,
        2
    );
    assert_eq!(offsets(&log, 0), vec![0, 1, 2]);
}

#[test]
fn a_short_write_is_cut_back_so_no_partial_batch_remains() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let log = open_faulty(dir.path(), &faults, &[]);
    log.append(&mut batch(1, b"one", 1)).unwrap();
    *faults.write.lock().unwrap() = Some(WriteMode::Short(30));
    assert!(matches!(
        log.append(&mut batch(1, b"two", 1)),
        Err(LogError::Io {
            op: IoOp::Write,
            ..
        })
    ));
    log.append(&mut batch(1, b"three", 1)).unwrap();
    drop(log);
    // A reopen validates the tail: nothing torn is found, because nothing torn was left.
    let log = open(dir.path(), &config(&[]));
    assert!(log.recovery_report().truncated.is_empty());
    let values: Vec<_> = read_all(&log, 0)
        .into_iter()
        .map(|r| r.value.unwrap())
        .collect();
    assert_eq!(values, vec![b"one".to_vec(), b"three".to_vec()]);
}

#[test]
fn a_failed_fsync_poisons_the_log_until_it_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let log = open_faulty(dir.path(), &faults, &[("flush.messages", "1")]);
    log.append(&mut batch(1, b"durable", 1)).unwrap();
    faults.syncs_to_fail.store(1, Ordering::SeqCst);
    match log.append(&mut batch(1, b"unsure", 1)) {
        Err(LogError::Io { op: IoOp::Sync, .. }) => {}
        other => panic!("expected an fsync error, got {other:?}"),
    }
    assert!(log.is_poisoned());
    assert!(matches!(
        log.append(&mut batch(1, b"refused", 1)),
        Err(LogError::Poisoned { .. })
    ));
    assert!(matches!(
        log.wait_durable(2),
        Err(LogError::Poisoned { .. })
    ));
    // Reads still work.
    assert_eq!(read_all(&log, 0)[0].value.as_deref(), Some(&b"durable"[..]));
    log.close().unwrap();
    drop(log);

    let log = open(dir.path(), &config(&[("flush.messages", "1")]));
    assert!(
        !log.recovery_report().clean,
        "a poisoned log is not closed cleanly"
    );
    assert!(log.log_end_offset() >= 1);
    assert_eq!(read_all(&log, 0)[0].value.as_deref(), Some(&b"durable"[..]));
    log.append(&mut batch(1, b"again", 1)).unwrap();
}

#[test]
fn a_failed_checkpoint_write_is_an_error_and_the_old_checkpoint_survives() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let log = open_faulty(dir.path(), &faults, &[]);
    for _ in 0..5 {
        log.append(&mut batch(1, b"x", 1)).unwrap();
    }
    faults.syncs_to_fail.store(1, Ordering::SeqCst);
    assert!(matches!(
        log.delete_records_before(3),
        Err(LogError::Io { op: IoOp::Sync, .. })
    ));
    assert_eq!(log.log_start_offset(), 0, "not acknowledged, not applied");
    assert!(!dir.path().join("partition.checkpoint.tmp").exists());
    assert_eq!(log.delete_records_before(3).unwrap(), 3);
}
