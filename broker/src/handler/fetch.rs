//! Fetch: whole stored batches from each requested partition, served byte for byte.
//!
//! Long poll: when fewer than `min_bytes` are available the request waits, up to
//! `max_wait_ms`, on the partitions' end-offset watches and answers as soon as an append
//! brings enough (or at the deadline, or at shutdown). Errors such as `OFFSET_OUT_OF_RANGE`
//! answer at once. Byte limits: `partition_max_bytes` per partition and `max_bytes` for the
//! response, except that the first batch of the first non-empty partition is always returned
//! whole (KIP-74) so a consumer can make progress past a large batch.
//!
//! Record data of 64 KiB or more that the segment's offset index can delimit is not read
//! here: the response carries the file range and the connection sends it with `sendfile`
//! (see `crate::response`).
//!
//! Fetch sessions (KIP-227) are optional in the protocol; this broker answers with session
//! id 0, which tells clients to keep sending full fetch requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_storage::{FileRange, ReadLimits, Records};
use futures_util::stream::{FuturesUnordered, StreamExt};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::protocol::{Message, VersionRange};
use tokio::sync::watch;
use tokio::time::Instant;

use super::RequestContext;
use crate::error::BrokerError;
use crate::partition::{Partition, LEADER_EPOCH};
use crate::response::{placeholder, Shareable, SPLICE_MIN};

/// Record data at least this long is sent from the file; shorter runs are read, since a
/// `sendfile` per partition costs more than copying them.
const FILE_RANGE_MIN: u64 = 64 << 10;
// A placeholder shorter than this would be copied, not replaced.
const _: () = assert!(FILE_RANGE_MIN as usize >= SPLICE_MIN);

pub const VERSIONS: VersionRange = FetchRequest::VERSIONS;

/// One partition of the request, resolved.
struct Target {
    topic: usize,
    index: i32,
    offset: i64,
    max_bytes: usize,
    /// The partition, or the error code it resolved to.
    partition: Result<Arc<Partition>, i16>,
}

/// What a gather pass found for one partition.
enum Found {
    Data {
        /// The record data, or for a file range its placeholder.
        records: Bytes,
        file: Option<FileRange>,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    /// An error code.
    Failed(i16),
}

/// The response, and the record data its encoder may share instead of copying.
pub async fn handle(
    ctx: &RequestContext,
    request: FetchRequest,
    version: i16,
) -> (FetchResponse, Shareable) {
    let read_committed = request.isolation_level == 1;
    if request.session_id != 0 {
        // We never hand out sessions, so a client naming one is out of sync.
        let response = FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code())
            .with_session_id(0);
        return (response, Shareable::default());
    }
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let deadline = Instant::now() + wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let response_max = if request.max_bytes <= 0 {
        usize::MAX
    } else {
        request.max_bytes as usize
    };

    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    for topic in request.topics {
        let name: Option<String> = if version >= 13 {
            ctx.broker.topic_by_id(topic.topic_id).map(|m| m.name)
        } else {
            Some(topic.topic.to_string())
        };
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_topic_id(topic.topic_id),
        );
        for p in topic.partitions {
            let partition = match &name {
                None => Err(BrokerError::UnknownTopicId(topic.topic_id)),
                Some(name) => check_epoch(p.current_leader_epoch)
                    .and_then(|()| ctx.broker.partition(name, p.partition)),
            }
            .map_err(|e| e.code());
            targets.push(Target {
                topic: topics.len() - 1,
                index: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                partition,
            });
        }
    }

    let mut watches: Vec<watch::Receiver<i64>> = targets
        .iter()
        .filter_map(|t| t.partition.as_ref().ok().map(|p| p.subscribe()))
        .collect();
    let mut shutdown = ctx.shutdown.clone();
    let found = loop {
        for w in &mut watches {
            w.borrow_and_update();
        }
        let found = gather(ctx, &targets, response_max).await;
        let bytes: usize = found
            .iter()
            .map(|f| match f {
                Found::Data { records, .. } => records.len(),
                Found::Failed(_) => 0,
            })
            .sum();
        let errors = found.iter().any(|f| matches!(f, Found::Failed(_)));
        if bytes >= min_bytes || errors || watches.is_empty() || Instant::now() >= deadline {
            break found;
        }
        let mut changes: FuturesUnordered<_> = watches.iter_mut().map(|w| w.changed()).collect();
        let woke = tokio::select! {
            _ = changes.next() => true,
            _ = tokio::time::sleep_until(deadline) => false,
            _ = shutdown.changed() => false,
        };
        drop(changes);
        if !woke {
            // One last look, so data that arrived at the deadline is not missed.
            break gather(ctx, &targets, response_max).await;
        }
    };

    let mut shareable = Shareable::default();
    for (target, found) in targets.iter().zip(found) {
        let data = match found {
            Found::Data {
                records,
                file,
                log_start_offset,
                log_end_offset,
            } => {
                match file {
                    Some(range) => shareable.files.push((records.clone(), range)),
                    None if !records.is_empty() => shareable.bytes.push(records.clone()),
                    None => {}
                }
                PartitionData::default()
                    .with_partition_index(target.index)
                    .with_high_watermark(log_end_offset)
                    .with_last_stable_offset(log_end_offset)
                    .with_log_start_offset(log_start_offset)
                    .with_aborted_transactions(read_committed.then(Vec::new))
                    .with_records(Some(records))
            }
            Found::Failed(code) => {
                let mut data = PartitionData::default()
                    .with_partition_index(target.index)
                    .with_error_code(code)
                    .with_high_watermark(-1)
                    .with_aborted_transactions(read_committed.then(Vec::new))
                    .with_records(Some(Bytes::new()));
                if let Ok(p) = &target.partition {
                    data = data
                        .with_high_watermark(p.log.log_end_offset())
                        .with_last_stable_offset(p.log.log_end_offset())
                        .with_log_start_offset(p.log.log_start_offset());
                }
                data
            }
        };
        topics[target.topic].partitions.push(data);
    }
    let response = FetchResponse::default()
        .with_session_id(0)
        .with_responses(topics);
    (response, shareable)
}

fn check_epoch(current_leader_epoch: i32) -> Result<(), BrokerError> {
    match current_leader_epoch {
        e if e < 0 || e == LEADER_EPOCH => Ok(()),
        e => Err(BrokerError::UnknownLeaderEpoch {
            requested: e,
            current: LEADER_EPOCH,
        }),
    }
}

/// Reads every target once, on a blocking thread, within the response byte budget.
async fn gather(ctx: &RequestContext, targets: &[Target], response_max: usize) -> Vec<Found> {
    /// (partition, offset, byte limit), or the error code it resolved to.
    type Job = Result<(Arc<Partition>, i64, usize), i16>;
    let jobs: Vec<Job> = targets
        .iter()
        .map(|t| t.partition.clone().map(|p| (p, t.offset, t.max_bytes)))
        .collect();
    let count = jobs.len();
    let result = ctx
        .blocking(move |_| {
            let mut remaining = response_max;
            let mut any = false;
            let mut files = 0;
            Ok(jobs
                .into_iter()
                .map(|job| match job {
                    Err(code) => Found::Failed(code),
                    Ok((p, offset, max_bytes)) => {
                        if any && remaining == 0 {
                            // The response is full: nothing to look up (an offset out of
                            // range still goes to the read below, for its error).
                            let (start, end) = (p.log.log_start_offset(), p.log.log_end_offset());
                            if (start..=end).contains(&offset) {
                                return Found::Data {
                                    records: Bytes::new(),
                                    file: None,
                                    log_start_offset: start,
                                    log_end_offset: end,
                                };
                            }
                        }
                        let limits = ReadLimits {
                            max_bytes: max_bytes.min(remaining),
                            min_one_batch: !any,
                            max_offset: None,
                        };
                        let read = p.log.read_records(offset, limits, FILE_RANGE_MIN);
                        let read = match read {
                            Ok(read) => read,
                            Err(e) => return Found::Failed(BrokerError::from(e).code()),
                        };
                        let (records, file) = match read.records {
                            Records::Bytes(bytes) => (Bytes::from(bytes), None),
                            Records::File(range) => {
                                match placeholder(files, range.len() as usize) {
                                    Some(p) => {
                                        files += 1;
                                        (p, Some(range))
                                    }
                                    // Too long for a placeholder: read it after all.
                                    None => match range.read() {
                                        Ok(bytes) => (Bytes::from(bytes), None),
                                        Err(e) => {
                                            return Found::Failed(BrokerError::from(e).code())
                                        }
                                    },
                                }
                            }
                        };
                        if !records.is_empty() {
                            any = true;
                            remaining = remaining.saturating_sub(records.len());
                        }
                        Found::Data {
                            records,
                            file,
                            log_start_offset: read.log_start_offset,
                            log_end_offset: read.log_end_offset,
                        }
                    }
                })
                .collect::<Vec<_>>())
        })
        .await;
    result.unwrap_or_else(|e| (0..count).map(|_| Found::Failed(e.code())).collect())
}
