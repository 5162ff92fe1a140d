//! The dead-letter topic (`chat.dlq`): records a plugin could not deliver or understand,
//! kept as they arrived (key, value, headers) with headers saying why and where from.

use std::sync::Arc;

use bytes::Bytes;

use crate::log::{partition_for_key, Consumed, Header, Log, Record, Result, TopicSpec};

/// Header names on a dead-lettered record.
pub const REASON: &str = "chorus.dlq.reason";
pub const TARGET: &str = "chorus.dlq.target";
pub const SOURCE_TOPIC: &str = "chorus.dlq.topic";
pub const SOURCE_PARTITION: &str = "chorus.dlq.partition";
pub const SOURCE_OFFSET: &str = "chorus.dlq.offset";
pub const ATTEMPTS: &str = "chorus.dlq.attempts";

#[derive(Debug)]
pub struct DeadLetters {
    log: Arc<dyn Log>,
    topic: String,
    partitions: i32,
}

impl DeadLetters {
    pub async fn open(log: Arc<dyn Log>, topic: &str, partitions: i32) -> Result<DeadLetters> {
        let partitions = log
            .ensure_topic(&TopicSpec {
                name: topic.to_string(),
                partitions,
                // Dead letters wait for a person; keep them.
                configs: vec![("retention.ms".into(), "-1".into())],
            })
            .await?;
        Ok(DeadLetters {
            log,
            topic: topic.to_string(),
            partitions,
        })
    }

    /// Appends `source` with why `target` gave up on it after `attempts` tries. Durable
    /// when it returns.
    pub async fn send(
        &self,
        source: &Consumed,
        target: &str,
        reason: &str,
        attempts: u32,
        now_ms: i64,
    ) -> Result<()> {
        let text = |key: &'static str, value: String| Header {
            key: key.into(),
            value: Some(Bytes::from(value)),
        };
        let mut headers = source.record.headers.clone();
        headers.extend([
            text(REASON, reason.to_string()),
            text(TARGET, target.to_string()),
            text(SOURCE_TOPIC, source.topic.to_string()),
            text(SOURCE_PARTITION, source.partition.to_string()),
            text(SOURCE_OFFSET, source.offset.to_string()),
            text(ATTEMPTS, attempts.to_string()),
        ]);
        let partition = match &source.record.key {
            Some(k) => partition_for_key(k, self.partitions),
            None => source.partition.rem_euclid(self.partitions.max(1)),
        };
        let record = Record {
            key: source.record.key.clone(),
            value: source.record.value.clone(),
            headers,
            timestamp_ms: now_ms,
        };
        self.log
            .append(&self.topic, partition, vec![record])
            .await?;
        Ok(())
    }
}
