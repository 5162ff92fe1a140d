//! ListOffsets: earliest, latest, max-timestamp and by-timestamp offsets per partition.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::protocol::{Message, VersionRange};

use super::RequestContext;
use crate::error::BrokerError;
use crate::partition::LEADER_EPOCH;

pub const VERSIONS: VersionRange = ListOffsetsRequest::VERSIONS;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

pub async fn handle(
    ctx: &RequestContext,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    /// (topic, [(partition, current leader epoch, timestamp)])
    type Job = (String, Vec<(i32, i32, i64)>);
    let jobs: Vec<Job> = request
        .topics
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .into_iter()
                .map(|p| (p.partition_index, p.current_leader_epoch, p.timestamp))
                .collect();
            (t.name.to_string(), parts)
        })
        .collect();
    let names: Vec<String> = jobs.iter().map(|(n, _)| n.clone()).collect();
    let result = ctx
        .blocking(move |broker| {
            Ok(jobs
                .into_iter()
                .map(|(name, parts)| {
                    let answers = parts
                        .into_iter()
                        .map(|(index, epoch, ts)| {
                            let base =
                                ListOffsetsPartitionResponse::default().with_partition_index(index);
                            match lookup(broker, &name, index, epoch, ts) {
                                Ok((offset, timestamp)) => base
                                    .with_offset(offset)
                                    .with_timestamp(timestamp)
                                    .with_leader_epoch(if version >= 4 {
                                        LEADER_EPOCH
                                    } else {
                                        -1
                                    }),
                                Err(e) => base
                                    .with_error_code(e.code())
                                    .with_offset(-1)
                                    .with_timestamp(-1),
                            }
                        })
                        .collect::<Vec<_>>();
                    ListOffsetsTopicResponse::default()
                        .with_name(super::topic_name(&name))
                        .with_partitions(answers)
                })
                .collect::<Vec<_>>())
        })
        .await;
    let topics = match result {
        Ok(t) => t,
        Err(e) => names
            .iter()
            .map(|n| {
                ListOffsetsTopicResponse::default()
                    .with_name(super::topic_name(n))
                    .with_partitions(vec![
                        ListOffsetsPartitionResponse::default().with_error_code(e.code())
                    ])
            })
            .collect(),
    };
    ListOffsetsResponse::default().with_topics(topics)
}

/// `(offset, timestamp)` for one partition. Blocking.
fn lookup(
    broker: &crate::broker::Broker,
    topic: &str,
    index: i32,
    current_leader_epoch: i32,
    timestamp: i64,
) -> Result<(i64, i64), BrokerError> {
    if current_leader_epoch > LEADER_EPOCH {
        return Err(BrokerError::UnknownLeaderEpoch {
            requested: current_leader_epoch,
            current: LEADER_EPOCH,
        });
    }
    let log = broker.partition(topic, index)?.log.clone();
    Ok(match timestamp {
        // With no transactions the last stable offset is the high watermark: one answer
        // serves both isolation levels.
        LATEST => (log.log_end_offset(), -1),
        EARLIEST | EARLIEST_LOCAL => (log.log_start_offset(), -1),
        MAX_TIMESTAMP => match log.max_timestamp()? {
            Some((ts, offset)) => (offset, ts),
            None => (-1, -1),
        },
        // Tiered-storage positions (-5 and below): there is no remote tier.
        t if t < 0 => (-1, -1),
        t => match log.record_at_timestamp(t)? {
            Some((offset, ts)) => (offset, ts),
            None => (-1, -1),
        },
    })
}
