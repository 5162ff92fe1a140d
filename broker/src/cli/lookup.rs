//! Questions most commands ask: a topic's partitions and leaders, and offsets by time.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    BrokerId, GroupId, ListOffsetsRequest, OffsetCommitRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::client::Cluster;
use super::error::{CliError, Result};

/// ListOffsets timestamps with special meanings.
pub const EARLIEST: i64 = -2;
pub const LATEST: i64 = -1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: Uuid,
    pub internal: bool,
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    /// `UnknownPartition` unless the topic has `partition`.
    pub fn require_partition(&self, partition: i32) -> Result<()> {
        if self.partitions.iter().any(|p| p.partition == partition) {
            return Ok(());
        }
        Err(CliError::UnknownPartition {
            topic: self.name.clone(),
            partition,
        })
    }
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// One topic's partitions (sorted); `UnknownTopic` when it does not exist.
pub async fn topic(cluster: &mut Cluster, name: &str) -> Result<TopicInfo> {
    let metadata = cluster.metadata(Some(&[name.to_string()])).await?;
    let t = metadata
        .topics
        .into_iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == name))
        .ok_or_else(|| CliError::UnknownTopic(name.to_string()))?;
    if t.error_code == 3 {
        return Err(CliError::UnknownTopic(name.to_string()));
    }
    CliError::check(t.error_code, format!("metadata of topic {name}"), None)?;
    let mut partitions: Vec<PartitionInfo> = t
        .partitions
        .into_iter()
        .map(|p| PartitionInfo {
            partition: p.partition_index,
            leader: p.leader_id.0,
            replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
        })
        .collect();
    partitions.sort_by_key(|p| p.partition);
    Ok(TopicInfo {
        name: name.to_string(),
        id: t.topic_id,
        internal: t.is_internal,
        partitions,
    })
}

/// For each `(topic, partition)`, the offset ListOffsets gives for `timestamp` (EARLIEST,
/// LATEST or milliseconds; -1 when no record is that recent). Asks each partition's leader.
pub async fn offsets_at(
    cluster: &mut Cluster,
    partitions: &[(String, i32)],
    timestamp: i64,
) -> Result<BTreeMap<(String, i32), i64>> {
    let mut leaders: HashMap<String, TopicInfo> = HashMap::new();
    let mut by_leader: BTreeMap<i32, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    for (t, p) in partitions {
        if !leaders.contains_key(t) {
            leaders.insert(t.clone(), topic(cluster, t).await?);
        }
        let info = &leaders[t];
        let leader = info
            .partitions
            .iter()
            .find(|x| x.partition == *p)
            .ok_or_else(|| CliError::UnknownPartition {
                topic: t.clone(),
                partition: *p,
            })?
            .leader;
        by_leader
            .entry(leader)
            .or_default()
            .entry(t.clone())
            .or_default()
            .push(*p);
    }
    let mut out = BTreeMap::new();
    for (leader, topics) in by_leader {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(
                topics
                    .iter()
                    .map(|(t, ps)| {
                        ListOffsetsTopic::default()
                            .with_name(topic_name(t))
                            .with_partitions(
                                ps.iter()
                                    .map(|p| {
                                        ListOffsetsPartition::default()
                                            .with_partition_index(*p)
                                            .with_timestamp(timestamp)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let response = cluster.node(leader).await?.call(&request).await?;
        for t in response.topics {
            for p in t.partitions {
                CliError::check(
                    p.error_code,
                    format!("offsets of {}-{}", t.name.as_str(), p.partition_index),
                    None,
                )?;
                out.insert((t.name.to_string(), p.partition_index), p.offset);
            }
        }
    }
    Ok(out)
}

/// Commits `offsets` for `group` at its coordinator, as member `member_id` of generation
/// `generation` (-1 and "" for an admin commit). Returns each partition's error code.
pub async fn commit_offsets(
    cluster: &mut Cluster,
    group: &str,
    generation: i32,
    member_id: &str,
    offsets: &BTreeMap<(String, i32), i64>,
) -> Result<Vec<((String, i32), i16)>> {
    let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for ((t, p), offset) in offsets {
        by_topic.entry(t).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(*offset)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(StrBytes::from_static_str(""))),
        );
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(topic_name(t))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let response = cluster.coordinator(group).await?.call(&request).await?;
    Ok(response
        .topics
        .into_iter()
        .flat_map(|t| {
            let name = t.name.to_string();
            t.partitions
                .into_iter()
                .map(move |p| ((name.clone(), p.partition_index), p.error_code))
        })
        .collect())
}
