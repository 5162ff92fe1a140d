//! Metadata: this broker, and topics with their partitions (this broker leads them all, at
//! leader epoch 0, as the only replica). Unknown topics are created when both the broker and
//! the request allow it.

use chorus_storage::TopicMeta;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::{Message, VersionRange};
use uuid::Uuid;

use super::{str_bytes, topic_name, RequestContext};
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::partition::LEADER_EPOCH;

pub const VERSIONS: VersionRange = MetadataRequest::VERSIONS;

/// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS: with no ACLs,
/// every client may do everything to a topic.
const ALL_TOPIC_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);

pub fn is_internal(topic: &str) -> bool {
    matches!(topic, "__consumer_offsets" | "__transaction_state")
}

pub async fn handle(
    ctx: &RequestContext,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let broker = &ctx.broker;
    let node = BrokerId(broker.node_id());
    let allow_auto_create =
        (version < 4 || request.allow_auto_topic_creation) && broker.config.auto_create_topics;
    let include_ops = version >= 8 && request.include_topic_authorized_operations;

    let wanted = match request.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    let mut topics = Vec::new();
    match wanted {
        None => {
            for meta in broker.logs.topics() {
                topics.push(describe(broker, &meta, include_ops));
            }
        }
        Some(requested) => {
            for t in requested {
                let described = match (&t.name, t.topic_id) {
                    (Some(name), _) => {
                        let name = name.to_string();
                        match broker.logs.topic(&name) {
                            Some(meta) => describe(broker, &meta, include_ops),
                            None if allow_auto_create => {
                                let n = name.clone();
                                match ctx.blocking(move |b| b.auto_create(&n)).await {
                                    Ok(meta) => describe(broker, &meta, include_ops),
                                    Err(e) => failed(Some(&name), Uuid::nil(), &e),
                                }
                            }
                            None => failed(
                                Some(&name),
                                Uuid::nil(),
                                &BrokerError::Log(chorus_storage::LogError::UnknownTopic {
                                    name: name.clone(),
                                }),
                            ),
                        }
                    }
                    (None, id) => match broker.topic_by_id(id) {
                        Some(meta) => describe(broker, &meta, include_ops),
                        None => failed(None, id, &BrokerError::UnknownTopicId(id)),
                    },
                };
                topics.push(described);
            }
        }
    }
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(node)
            .with_host(str_bytes(broker.config.advertised_host.clone()))
            .with_port(broker.config.advertised_port as i32)])
        .with_cluster_id(Some(str_bytes(broker.cluster_id.clone())))
        .with_controller_id(node)
        .with_topics(topics)
}

fn describe(broker: &Broker, meta: &TopicMeta, include_ops: bool) -> MetadataResponseTopic {
    let node = BrokerId(broker.node_id());
    let partitions = (0..meta.partitions as i32)
        .map(|p| {
            let base = MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node]);
            match broker.logs.log(&meta.name, p) {
                Ok(_) => base.with_leader_id(node).with_leader_epoch(LEADER_EPOCH),
                Err(e) => base
                    .with_error_code(BrokerError::Log(e).code())
                    .with_leader_id(BrokerId(-1))
                    .with_offline_replicas(vec![node]),
            }
        })
        .collect();
    let mut topic = MetadataResponseTopic::default()
        .with_name(Some(topic_name(&meta.name)))
        .with_topic_id(meta.id)
        .with_is_internal(is_internal(&meta.name))
        .with_partitions(partitions);
    if include_ops {
        topic = topic.with_topic_authorized_operations(ALL_TOPIC_OPERATIONS);
    }
    topic
}

fn failed(name: Option<&str>, id: Uuid, e: &BrokerError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(e.code())
        .with_name(name.map(topic_name))
        .with_topic_id(id)
}
