//! DeleteRecords: advance a partition's log start offset (`-1` means the high watermark).

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::protocol::{Message, VersionRange};

use super::RequestContext;

pub const VERSIONS: VersionRange = DeleteRecordsRequest::VERSIONS;

pub async fn handle(
    ctx: &RequestContext,
    request: DeleteRecordsRequest,
    _version: i16,
) -> DeleteRecordsResponse {
    let topics = request.topics;
    let shape: Vec<(kafka_protocol::messages::TopicName, Vec<i32>)> = topics
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let result = ctx
        .blocking(move |broker| {
            Ok(topics
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .into_iter()
                        .map(|p| {
                            let base = DeleteRecordsPartitionResult::default()
                                .with_partition_index(p.partition_index);
                            let outcome = broker.partition(&t.name, p.partition_index).and_then(
                                |partition| {
                                    let log = &partition.log;
                                    let target = if p.offset == -1 {
                                        log.log_end_offset()
                                    } else {
                                        p.offset
                                    };
                                    let start = log.delete_records_before(target)?;
                                    partition.publish_end();
                                    Ok(start)
                                },
                            );
                            match outcome {
                                Ok(low) => base.with_low_watermark(low),
                                Err(e) => base.with_error_code(e.code()).with_low_watermark(-1),
                            }
                        })
                        .collect();
                    DeleteRecordsTopicResult::default()
                        .with_name(t.name)
                        .with_partitions(partitions)
                })
                .collect::<Vec<_>>())
        })
        .await;
    let topics = result.unwrap_or_else(|e| {
        shape
            .into_iter()
            .map(|(name, parts)| {
                DeleteRecordsTopicResult::default()
                    .with_name(name)
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|i| {
                                DeleteRecordsPartitionResult::default()
                                    .with_partition_index(i)
                                    .with_error_code(e.code())
                                    .with_low_watermark(-1)
                            })
                            .collect(),
                    )
            })
            .collect()
    });
    DeleteRecordsResponse::default().with_topics(topics)
}
