//! Reading a topic from the start, to rebuild state the log is the truth for, reading a
//! stretch of it to catch up with what other writers appended, and following it as it
//! grows.

use std::time::Duration;

use crate::log::{Consumed, Log, Result};

/// Bytes per read while scanning.
const SCAN_BYTES: usize = 1 << 20;

/// Calls `f` with every record of `topic`-`partition` from its start to the end it has
/// now, in offset order. Returns that end: every record below it was seen.
pub async fn scan_partition(
    log: &dyn Log,
    topic: &str,
    partition: i32,
    f: impl FnMut(Consumed),
) -> Result<i64> {
    let (start, end) = log.offsets(topic, partition).await?;
    read_range(log, topic, partition, start, end, f).await?;
    Ok(end)
}

/// Calls `f` with every record of `topic`-`partition` at offsets `from..until`, in order.
/// Offsets the log no longer has (retention, compaction) are skipped.
pub async fn read_range(
    log: &dyn Log,
    topic: &str,
    partition: i32,
    from: i64,
    until: i64,
    mut f: impl FnMut(Consumed),
) -> Result<()> {
    let mut offset = from;
    while offset < until {
        let records = match log
            .read(topic, partition, offset, SCAN_BYTES, Duration::ZERO)
            .await
        {
            Ok(r) => r,
            Err(crate::log::LogError::OffsetOutOfRange { start, .. }) if start > offset => {
                offset = start;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(last) = records.last() else {
            break;
        };
        offset = last.offset + 1;
        for r in records {
            if r.offset < until {
                f(r);
            }
        }
    }
    Ok(())
}

/// How long a follower's read waits for new records.
const FOLLOW_WAIT: Duration = Duration::from_secs(5);
/// How long a follower pauses after a failed read.
const FOLLOW_PAUSE: Duration = Duration::from_millis(500);

/// The next records of `topic`-`partition` for a follower at `offset` (waiting a while when
/// there are none), moving `offset` past them. An offset the log no longer has moves to its
/// start, one past its end (a truncated or re-made topic) to its end; any other failure is
/// logged and answered with nothing after a pause, so the follower simply calls again.
pub async fn follow_next(
    log: &dyn Log,
    topic: &str,
    partition: i32,
    offset: &mut i64,
) -> Vec<Consumed> {
    match log
        .read(topic, partition, *offset, SCAN_BYTES, FOLLOW_WAIT)
        .await
    {
        Ok(records) => {
            if let Some(last) = records.last() {
                *offset = last.offset + 1;
            }
            records
        }
        Err(crate::log::LogError::OffsetOutOfRange { start, end, .. })
            if *offset < start || *offset > end =>
        {
            *offset = if *offset < start { start } else { end };
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(%topic, partition, error = %e, "following the topic failed; retrying");
            tokio::time::sleep(FOLLOW_PAUSE).await;
            Vec::new()
        }
    }
}
