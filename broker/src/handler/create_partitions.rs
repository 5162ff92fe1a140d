//! CreatePartitions: grow a topic's partition count (validate-only supported).

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::{Message, VersionRange};

use super::RequestContext;
use crate::error::BrokerError;

pub const VERSIONS: VersionRange = CreatePartitionsRequest::VERSIONS;

pub async fn handle(
    ctx: &RequestContext,
    request: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    let validate_only = request.validate_only;
    let topics = request.topics;
    let names: Vec<_> = topics.iter().map(|t| t.name.clone()).collect();
    let result = ctx
        .blocking(move |broker| {
            Ok(topics
                .into_iter()
                .map(|t| {
                    let outcome = (|| {
                        let node = broker.node_id();
                        if let Some(assignments) = &t.assignments {
                            for a in assignments {
                                let ids: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
                                if ids != [node] {
                                    return Err(BrokerError::InvalidReplicaAssignment(ids));
                                }
                            }
                        }
                        let current = broker.logs.topic(&t.name).ok_or_else(|| {
                            BrokerError::Log(chorus_storage::LogError::UnknownTopic {
                                name: t.name.to_string(),
                            })
                        })?;
                        let invalid = || {
                            BrokerError::Log(chorus_storage::LogError::InvalidPartitionCount {
                                topic: t.name.to_string(),
                                requested: t.count as i64,
                                current: current.partitions,
                            })
                        };
                        if t.count <= current.partitions as i32 {
                            return Err(invalid());
                        }
                        if let Some(a) = &t.assignments {
                            let new_partitions = t.count - current.partitions as i32;
                            if a.len() as i32 != new_partitions {
                                return Err(BrokerError::ReplicaAssignmentCount {
                                    given: a.len(),
                                    new_partitions,
                                });
                            }
                        }
                        if validate_only {
                            if t.count as u32 > chorus_storage::manager::MAX_PARTITIONS {
                                return Err(invalid());
                            }
                            return Ok(());
                        }
                        broker.logs.create_partitions(&t.name, t.count as u32)?;
                        Ok(())
                    })();
                    let base = CreatePartitionsTopicResult::default().with_name(t.name);
                    match outcome {
                        Ok(()) => base,
                        Err(e) => base
                            .with_error_code(e.code())
                            .with_error_message(Some(e.message())),
                    }
                })
                .collect::<Vec<_>>())
        })
        .await;
    let results = result.unwrap_or_else(|e| {
        names
            .into_iter()
            .map(|n| {
                CreatePartitionsTopicResult::default()
                    .with_name(n)
                    .with_error_code(e.code())
            })
            .collect()
    });
    CreatePartitionsResponse::default().with_results(results)
}
