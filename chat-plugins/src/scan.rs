//! Reading a topic from the start, to rebuild state the log is the truth for, and reading
//! a stretch of it to catch up with what other writers appended.

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
