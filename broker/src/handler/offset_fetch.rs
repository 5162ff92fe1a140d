//! OffsetFetch: a group's committed offsets, for some partitions or all. One group per
//! request before v8, several from v8.

use chorus_coordinator::FetchedOffset;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse};
use kafka_protocol::protocol::{Message, StrBytes, VersionRange};

use super::{str_bytes, topic_name, RequestContext};
use crate::error::BrokerError;

pub const VERSIONS: VersionRange = OffsetFetchRequest::VERSIONS;

type Wanted = Option<Vec<(String, Vec<i32>)>>;

pub async fn handle(
    ctx: &RequestContext,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version < 8 {
        let wanted: Wanted = request.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name.to_string(), t.partition_indexes))
                .collect()
        });
        let (code, offsets) = fetch(ctx, request.group_id.to_string(), None, -1, wanted).await;
        let topics = group_by_topic(offsets)
            .into_iter()
            .map(|(name, parts)| {
                OffsetFetchResponseTopic::default()
                    .with_name(topic_name(&name))
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|f| {
                                let (offset, epoch, metadata) = values(&f);
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(f.partition)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(Some(metadata))
                            })
                            .collect(),
                    )
            })
            .collect();
        return OffsetFetchResponse::default()
            .with_error_code(code)
            .with_topics(topics);
    }
    let mut groups = Vec::with_capacity(request.groups.len());
    for g in request.groups {
        let wanted: Wanted = g.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name.to_string(), t.partition_indexes))
                .collect()
        });
        let member_id = g.member_id.map(|m| m.to_string());
        let (code, offsets) = fetch(
            ctx,
            g.group_id.to_string(),
            member_id,
            g.member_epoch,
            wanted,
        )
        .await;
        let topics = group_by_topic(offsets)
            .into_iter()
            .map(|(name, parts)| {
                OffsetFetchResponseTopics::default()
                    .with_name(topic_name(&name))
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|f| {
                                let (offset, epoch, metadata) = values(&f);
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(f.partition)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(Some(metadata))
                            })
                            .collect(),
                    )
            })
            .collect();
        groups.push(
            OffsetFetchResponseGroup::default()
                .with_group_id(GroupId(str_bytes(g.group_id.to_string())))
                .with_error_code(code)
                .with_topics(topics),
        );
    }
    OffsetFetchResponse::default().with_groups(groups)
}

/// The group-level error code and the offsets. `member_epoch` -1 is an admin fetch; a
/// member (v9+) is checked against the group first.
async fn fetch(
    ctx: &RequestContext,
    group_id: String,
    member_id: Option<String>,
    member_epoch: i32,
    wanted: Wanted,
) -> (i16, Vec<FetchedOffset>) {
    if group_id.is_empty() {
        return (
            BrokerError::Group(chorus_coordinator::GroupError::InvalidGroupId).code(),
            Vec::new(),
        );
    }
    // Through the coordinator thread, so a fetch sees every commit answered before it.
    let result = ctx
        .broker
        .groups
        .call(move |r| {
            r.coordinator
                .validate_offset_fetch(&group_id, member_id.as_deref(), member_epoch)?;
            Ok(r.coordinator.fetch_offsets(&group_id, wanted.as_deref()))
        })
        .await;
    match result {
        Ok(Ok(offsets)) => (0, offsets),
        Ok(Err(e)) => (BrokerError::Group(e).code(), Vec::new()),
        Err(e) => (e.code(), Vec::new()),
    }
}

/// -1 offset and epoch and empty metadata for partitions without a commit, as Kafka does.
fn values(f: &FetchedOffset) -> (i64, i32, StrBytes) {
    match &f.committed {
        Some(c) => (c.offset, c.leader_epoch, str_bytes(c.metadata.clone())),
        None => (-1, -1, StrBytes::default()),
    }
}

fn group_by_topic(offsets: Vec<FetchedOffset>) -> Vec<(String, Vec<FetchedOffset>)> {
    let mut out: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
    for f in offsets {
        match out.last_mut() {
            Some((t, list)) if *t == f.topic => list.push(f),
            _ => out.push((f.topic.clone(), vec![f])),
        }
    }
    out
}
