//! Fetch: whole stored batches from each requested partition, served byte for byte.
//!
//! Long poll: when fewer than `min_bytes` are available the request waits, up to
//! `max_wait_ms`, on the partitions' end-offset watches and answers as soon as an append
//! brings enough (or at the deadline, or at shutdown). Errors such as `OFFSET_OUT_OF_RANGE`
//! answer at once. Byte limits: `partition_max_bytes` per partition and `max_bytes` for the
//! response, except that the first batch of the first non-empty partition is always returned
//! whole (KIP-74) so a consumer can make progress past a large batch.
//!
//! Fetch sessions (KIP-227) are optional in the protocol; this broker answers with session
//! id 0, which tells clients to keep sending full fetch requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_storage::{LogRead, ReadLimits};
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
    Data(LogRead),
    /// An error code.
    Failed(i16),
}

pub async fn handle(ctx: &RequestContext, request: FetchRequest, version: i16) -> FetchResponse {
    let read_committed = request.isolation_level == 1;
    if request.session_id != 0 {
        // We never hand out sessions, so a client naming one is out of sync.
        return FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code())
            .with_session_id(0);
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
                Found::Data(r) => r.bytes.len(),
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

    for (target, found) in targets.iter().zip(found) {
        let data = match found {
            Found::Data(read) => PartitionData::default()
                .with_partition_index(target.index)
                .with_high_watermark(read.log_end_offset)
                .with_last_stable_offset(read.log_end_offset)
                .with_log_start_offset(read.log_start_offset)
                .with_aborted_transactions(read_committed.then(Vec::new))
                .with_records(Some(Bytes::from(read.bytes))),
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
    FetchResponse::default()
        .with_session_id(0)
        .with_responses(topics)
}

/// The record data of every partition in `response`, which the encoder may send without
/// copying it (see `crate::response`).
pub fn record_data(response: &FetchResponse) -> Vec<Bytes> {
    response
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.clone())
        .filter(|r| !r.is_empty())
        .collect()
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
            Ok(jobs
                .into_iter()
                .map(|job| match job {
                    Err(code) => Found::Failed(code),
                    Ok((p, offset, max_bytes)) => {
                        let limits = ReadLimits {
                            max_bytes: max_bytes.min(remaining),
                            min_one_batch: !any,
                            max_offset: None,
                        };
                        match p.log.read(offset, limits) {
                            Ok(read) => {
                                if !read.bytes.is_empty() {
                                    any = true;
                                    remaining = remaining.saturating_sub(read.bytes.len());
                                }
                                Found::Data(read)
                            }
                            Err(e) => Found::Failed(BrokerError::from(e).code()),
                        }
                    }
                })
                .collect::<Vec<_>>())
        })
        .await;
    result.unwrap_or_else(|e| (0..count).map(|_| Found::Failed(e.code())).collect())
}
