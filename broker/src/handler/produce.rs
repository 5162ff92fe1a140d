//! Produce: validate and append each partition's record batches (acks 0, 1 and all).
//!
//! All partitions of a request are appended on one blocking task. With `acks=all` the answer
//! waits for whatever durability the topic's flush policy demands (the storage engine's group
//! commit shares fsyncs between concurrent producers); `acks=0` gets no answer at all.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::{Message, VersionRange};

use super::RequestContext;
use crate::error::BrokerError;
use crate::partition::{AppendOutcome, Partition};

pub const VERSIONS: VersionRange = ProduceRequest::VERSIONS;

enum Slot {
    Ready(Arc<Partition>, Option<Bytes>),
    Failed(BrokerError),
}

/// One partition's append: the partition and what happened, or why it was refused.
type PartitionAppend = Result<(Arc<Partition>, AppendOutcome), BrokerError>;

/// A produce request whose records are appended; [`Appended::finish`] waits for the flush
/// policy and builds the answer.
#[derive(Debug)]
pub struct Appended {
    acks: i16,
    version: i16,
    topics: Vec<TopicProduceResponse>,
    partitions: Vec<(usize, i32, PartitionAppend)>,
}

/// Appends every partition's records, in order. The answer comes from [`Appended::finish`].
pub async fn handle(ctx: &RequestContext, request: ProduceRequest, version: i16) -> Appended {
    let acks = request.acks;
    let transactional = request.transactional_id.is_some();
    let refusal = || {
        if transactional {
            Some(BrokerError::TransactionsUnsupported)
        } else if !matches!(acks, -1..=1) {
            Some(BrokerError::InvalidRequiredAcks(acks))
        } else {
            None
        }
    };

    // Resolve every partition first (cheap, in memory).
    let mut plan: Vec<(usize, i32, Slot)> = Vec::new();
    let mut topics: Vec<TopicProduceResponse> = Vec::new();
    for (t, topic) in request.topic_data.into_iter().enumerate() {
        let name: Option<String> = if version >= 13 {
            ctx.broker.topic_by_id(topic.topic_id).map(|m| m.name)
        } else {
            Some(topic.name.to_string())
        };
        topics.push(
            TopicProduceResponse::default()
                .with_name(topic.name.clone())
                .with_topic_id(topic.topic_id),
        );
        for p in topic.partition_data {
            let slot = match (refusal(), &name) {
                (Some(e), _) => Slot::Failed(e),
                (None, None) => Slot::Failed(BrokerError::UnknownTopicId(topic.topic_id)),
                (None, Some(name)) => match ctx.broker.partition(name, p.index) {
                    Ok(partition) => Slot::Ready(partition, p.records),
                    Err(e) => Slot::Failed(e),
                },
            };
            plan.push((t, p.index, slot));
        }
    }

    // Append on a blocking thread, then wait for the flush policy of every partition at once
    // (each is its own file and fsync; waiting one after another would add them up).
    let positions: Vec<(usize, i32)> = plan.iter().map(|(t, i, _)| (*t, *i)).collect();
    let jobs: Vec<_> = plan
        .into_iter()
        .map(|(t, index, slot)| match slot {
            Slot::Ready(partition, records) => (t, index, Ok((partition, records))),
            Slot::Failed(e) => (t, index, Err(e)),
        })
        .collect();
    let appended = ctx
        .blocking(move |_| {
            Ok(jobs
                .into_iter()
                .map(|(t, index, job)| {
                    let outcome = job.and_then(|(partition, records)| match records {
                        Some(records) => partition.append(&records).map(|o| (partition, o)),
                        None => Err(BrokerError::InvalidRequest(
                            "partition data without records",
                        )),
                    });
                    (t, index, outcome)
                })
                .collect::<Vec<_>>())
        })
        .await;
    let appended = match appended {
        Ok(a) => a,
        Err(_) => positions
            .into_iter()
            .map(|(t, i)| (t, i, Err(BrokerError::Internal("the append task failed"))))
            .collect(),
    };
    for (t, index, outcome) in &appended {
        if let Err(e) = outcome {
            log_refusal(ctx, &topics[*t], *index, e);
        }
    }
    Appended {
        acks,
        version,
        topics,
        partitions: appended,
    }
}

impl Appended {
    /// Waits for the durability each partition's flush policy asks (all partitions at once:
    /// each is its own file and fsync), then answers; `None` for `acks=0`.
    pub async fn finish(self) -> Option<ProduceResponse> {
        let Appended {
            acks,
            version,
            mut topics,
            partitions,
        } = self;
        let flushes = partitions
            .into_iter()
            .map(|(t, index, outcome)| async move {
                let outcome = match outcome {
                    Ok((partition, o)) if partition.must_flush(&o) => {
                        let flushed = tokio::task::spawn_blocking(move || {
                            partition.flush_as_policy_requires(&o).map(|()| o)
                        })
                        .await;
                        flushed.unwrap_or(Err(BrokerError::Internal("the flush task failed")))
                    }
                    Ok((_, o)) => Ok(o),
                    Err(e) => Err(e),
                };
                (t, index, outcome)
            });
        for (t, index, outcome) in futures_util::future::join_all(flushes).await {
            let response = match outcome {
                Ok(o) => PartitionProduceResponse::default()
                    .with_index(index)
                    .with_base_offset(o.base_offset)
                    .with_log_append_time_ms(o.log_append_time.unwrap_or(-1))
                    .with_log_start_offset(o.log_start_offset),
                Err(e) => {
                    if e.is_storage_error() {
                        tracing::error!(topic = %topics[t].name.0, partition = index, error = %e, "flush failed");
                    }
                    let mut r = PartitionProduceResponse::default()
                        .with_index(index)
                        .with_error_code(e.code())
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(-1);
                    if version >= 8 {
                        r = r.with_error_message(Some(e.message()));
                    }
                    r
                }
            };
            topics[t].partition_responses.push(response);
        }
        acks_answer(acks, ProduceResponse::default().with_responses(topics))
    }
}

fn acks_answer(acks: i16, response: ProduceResponse) -> Option<ProduceResponse> {
    (acks != 0).then_some(response)
}

/// Bad data is logged once per partition and request; retriable states are not noise.
fn log_refusal(ctx: &RequestContext, topic: &TopicProduceResponse, index: i32, e: &BrokerError) {
    let code = e.response_error();
    if matches!(
        code,
        ResponseError::CorruptMessage
            | ResponseError::InvalidRecord
            | ResponseError::MessageTooLarge
            | ResponseError::InvalidTimestamp
            | ResponseError::KafkaStorageError
            | ResponseError::InvalidRequest
    ) {
        tracing::warn!(peer = %ctx.peer, client_id = ?ctx.client_id, topic = %topic.name.0, partition = index, error = %e, "produce refused");
    } else {
        tracing::debug!(peer = %ctx.peer, topic = %topic.name.0, partition = index, error = %e, "produce refused");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn acks_zero_has_no_answer() {
        let r = kafka_protocol::messages::ProduceResponse::default();
        assert!(super::acks_answer(0, r.clone()).is_none());
        assert!(super::acks_answer(1, r.clone()).is_some());
        assert!(super::acks_answer(-1, r).is_some());
    }
}
