//! OffsetCommit: store a group's consumed positions. Topics, partitions and offsets are
//! checked here against the logs; the coordinator checks membership and generation.

use std::future::Future;

use chorus_coordinator::{CommitPartition, CommitRequest};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::protocol::{Message, VersionRange};

use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;

pub const VERSIONS: VersionRange = OffsetCommitRequest::VERSIONS;

/// Checks the partitions and queues the commit at once (see `GroupService::submit`); the
/// future is the answer.
pub fn handle(
    ctx: &RequestContext,
    request: OffsetCommitRequest,
    _version: i16,
) -> impl Future<Output = OffsetCommitResponse> + Send + 'static {
    // Per partition: Ok(index into the coordinator's list) or the error found here.
    let mut checks: Vec<Vec<Result<usize, BrokerError>>> = Vec::new();
    let mut offsets = Vec::new();
    for topic in &request.topics {
        let mut row = Vec::new();
        for p in &topic.partitions {
            match check(
                &ctx.broker,
                &topic.name,
                p.partition_index,
                p.committed_offset,
            ) {
                Ok(()) => {
                    row.push(Ok(offsets.len()));
                    offsets.push(CommitPartition {
                        topic: topic.name.to_string(),
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p
                            .committed_metadata
                            .as_ref()
                            .map(|m| m.to_string())
                            .unwrap_or_default(),
                    });
                }
                Err(e) => row.push(Err(e)),
            }
        }
        checks.push(row);
    }
    let req = CommitRequest {
        group_id: request.group_id.to_string(),
        generation: request.generation_id_or_member_epoch,
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.map(|s| s.to_string()),
        offsets,
    };
    let pending = ctx
        .broker
        .groups
        .submit(move |r| r.coordinator.commit_offsets(r.now, req, r.fx));
    async move { respond(request.topics, checks, &pending.await) }
}

type Outcome = crate::error::Result<
    Result<Vec<Result<(), chorus_coordinator::GroupError>>, chorus_coordinator::GroupError>,
>;

fn respond(
    topics: Vec<kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic>,
    checks: Vec<Vec<Result<usize, BrokerError>>>,
    outcome: &Outcome,
) -> OffsetCommitResponse {
    // One code for every partition the coordinator saw, or one per partition.
    let coordinator_code = |i: usize| -> i16 {
        match outcome {
            Err(e) => e.code(),
            Ok(Err(e)) => BrokerError::Group(e.clone()).code(),
            Ok(Ok(results)) => match &results[i] {
                Ok(()) => 0,
                Err(e) => BrokerError::Group(e.clone()).code(),
            },
        }
    };
    let topics = topics
        .into_iter()
        .zip(checks)
        .map(|(topic, row)| {
            let partitions = topic
                .partitions
                .iter()
                .zip(row)
                .map(|(p, checked)| {
                    let code = match checked {
                        Ok(i) => coordinator_code(i),
                        Err(e) => e.code(),
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// The partition exists and the offset lies within its log (`0..=log end`).
fn check(broker: &Broker, topic: &str, partition: i32, offset: i64) -> Result<(), BrokerError> {
    let p = broker.partition(topic, partition)?;
    let end = p.log.log_end_offset();
    if !(0..=end).contains(&offset) {
        return Err(BrokerError::Log(
            chorus_storage::LogError::OffsetOutOfRange {
                requested: offset,
                log_start: p.log.log_start_offset(),
                log_end: end,
            },
        ));
    }
    Ok(())
}
