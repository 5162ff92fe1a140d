//! OffsetDelete: drop a group's committed offsets for topics it no longer consumes.

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use kafka_protocol::protocol::{Message, VersionRange};

use super::RequestContext;
use crate::error::BrokerError;

pub const VERSIONS: VersionRange = OffsetDeleteRequest::VERSIONS;

pub async fn handle(
    ctx: &RequestContext,
    request: OffsetDeleteRequest,
    _version: i16,
) -> OffsetDeleteResponse {
    let group_id = request.group_id.to_string();
    let mut known = Vec::new();
    let mut wanted = Vec::new();
    for t in &request.topics {
        for p in &t.partitions {
            let exists = ctx.broker.partition(&t.name, p.partition_index);
            known.push(exists.as_ref().err().map(BrokerError::code));
            if exists.is_ok() {
                wanted.push((t.name.to_string(), p.partition_index));
            }
        }
    }
    let result = ctx
        .broker
        .groups
        .call(move |r| {
            if group_id.is_empty() {
                return Err(chorus_coordinator::GroupError::InvalidGroupId);
            }
            r.coordinator.delete_offsets(&group_id, &wanted, r.fx)
        })
        .await;
    let results = match result {
        Ok(Ok(results)) => results,
        Ok(Err(e)) => {
            return OffsetDeleteResponse::default().with_error_code(BrokerError::Group(e).code())
        }
        Err(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
    };
    let mut results = results.into_iter();
    let mut known = known.into_iter();
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = match known.next().flatten() {
                        Some(code) => code,
                        None => match results.next() {
                            Some(Err(e)) => BrokerError::Group(e).code(),
                            _ => 0,
                        },
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
