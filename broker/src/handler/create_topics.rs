//! CreateTopics: topics with partition counts, configs and (trivial) replica assignments,
//! or only their validation (`validate_only`).

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::{Message, StrBytes, VersionRange};
use uuid::Uuid;

use super::describe_configs::topic_entries;
use super::{str_bytes, RequestContext};
use crate::broker::Broker;
use crate::error::BrokerError;

pub const VERSIONS: VersionRange = CreateTopicsRequest::VERSIONS;

pub async fn handle(
    ctx: &RequestContext,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in &request.topics {
        *seen.entry(t.name.to_string()).or_default() += 1;
    }
    let validate_only = request.validate_only;
    let topics = request.topics;
    let names: Vec<_> = topics.iter().map(|t| t.name.clone()).collect();
    let result = ctx
        .blocking(move |broker| {
            Ok(topics
                .into_iter()
                .map(|t| {
                    let duplicate = seen.get(t.name.as_str()).copied().unwrap_or(0) > 1;
                    let name = t.name.clone();
                    let outcome = if duplicate {
                        Err(BrokerError::DuplicateTopic)
                    } else {
                        create_one(broker, &t, validate_only)
                    };
                    answer(broker, name, outcome, version)
                })
                .collect::<Vec<_>>())
        })
        .await;
    let topics = result.unwrap_or_else(|e| {
        names
            .into_iter()
            .map(|name| {
                CreatableTopicResult::default()
                    .with_name(name)
                    .with_error_code(e.code())
            })
            .collect()
    });
    CreateTopicsResponse::default().with_topics(topics)
}

/// What was (or would be) created.
struct Created {
    id: Uuid,
    partitions: u32,
    configs: BTreeMap<String, String>,
}

fn create_one(
    broker: &Broker,
    t: &CreatableTopic,
    validate_only: bool,
) -> Result<Created, BrokerError> {
    if !matches!(t.replication_factor, -1 | 1) {
        return Err(BrokerError::InvalidReplicationFactor(t.replication_factor));
    }
    let partitions = if t.assignments.is_empty() {
        match t.num_partitions {
            -1 => broker.config.num_partitions,
            n if n > 0 => n as u32,
            n => {
                return Err(BrokerError::Log(
                    chorus_storage::LogError::InvalidPartitionCount {
                        topic: t.name.to_string(),
                        requested: n as i64,
                        current: 0,
                    },
                ))
            }
        }
    } else {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err(BrokerError::InvalidRequest(
                "give either a partition count and replication factor or replica assignments",
            ));
        }
        let node = broker.node_id();
        for (i, a) in t.assignments.iter().enumerate() {
            let ids: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
            if a.partition_index != i as i32 || ids != [node] {
                return Err(BrokerError::InvalidReplicaAssignment(ids));
            }
        }
        t.assignments.len() as u32
    };
    let mut configs = BTreeMap::new();
    for c in &t.configs {
        if let Some(v) = &c.value {
            configs.insert(c.name.to_string(), v.to_string());
        }
    }
    if validate_only {
        broker
            .logs
            .validate_new_topic(&t.name, partitions, &configs)?;
        return Ok(Created {
            id: Uuid::nil(),
            partitions,
            configs,
        });
    }
    let meta = broker.create_topic(&t.name, partitions, configs)?;
    Ok(Created {
        id: meta.id,
        partitions: meta.partitions,
        configs: meta.configs,
    })
}

fn answer(
    broker: &Broker,
    name: kafka_protocol::messages::TopicName,
    outcome: Result<Created, BrokerError>,
    version: i16,
) -> CreatableTopicResult {
    match outcome {
        Ok(c) => {
            let mut r = CreatableTopicResult::default()
                .with_name(name)
                .with_topic_id(c.id)
                .with_num_partitions(c.partitions as i32)
                .with_replication_factor(1);
            if version >= 5 {
                let configs = topic_entries(&broker.logs.defaults(), &c.configs)
                    .into_iter()
                    .map(|e| {
                        CreatableTopicConfigs::default()
                            .with_name(StrBytes::from_static_str(e.name))
                            .with_value(Some(str_bytes(e.value)))
                            .with_config_source(e.source)
                    })
                    .collect();
                r = r.with_configs(Some(configs));
            }
            r
        }
        Err(e) => {
            tracing::debug!(topic = %name.0, error = %e, "create topic refused");
            CreatableTopicResult::default()
                .with_name(name)
                .with_error_code(e.code())
                .with_error_message(Some(e.message()))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
        }
    }
}
