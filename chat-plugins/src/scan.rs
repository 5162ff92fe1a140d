//! Reading a topic from the start, to rebuild state the log is the truth for.

use std::time::Duration;

use crate::log::{Consumed, Log, Result};

/// Bytes per read while scanning.
const SCAN_BYTES: usize = 1 << 20;

/// Calls `f` with every record of `topic`-`partition` from its start to the end it has
/// now, in offset order.
pub async fn scan_partition(
    log: &dyn Log,
    topic: &str,
    partition: i32,
    mut f: impl FnMut(Consumed),
) -> Result<()> {
    let (mut offset, end) = log.offsets(topic, partition).await?;
    while offset < end {
        let records = log
            .read(topic, partition, offset, SCAN_BYTES, Duration::ZERO)
            .await?;
        let Some(last) = records.last() else {
            break;
        };
        offset = last.offset + 1;
        for r in records {
            if r.offset < end {
                f(r);
            }
        }
    }
    Ok(())
}
