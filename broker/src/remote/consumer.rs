//! A consumer group member on the external cluster: a librdkafka consumer subscribed to the
//! target's topics, committing only what the forwarder hands it (auto-commit off).
//! librdkafka keeps the membership alive from its own threads.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use chorus_chat::log::{BoxFuture, Consumed, GroupConsumer, GroupOptions, LogError, StartFrom};

use super::{consumed, KafkaSettings};

/// Most records one poll returns.
const MAX_POLL_RECORDS: usize = 500;

pub struct KafkaGroupConsumer {
    consumer: Arc<StreamConsumer>,
    group_id: String,
}

impl std::fmt::Debug for KafkaGroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaGroupConsumer")
            .field("group_id", &self.group_id)
            .finish_non_exhaustive()
    }
}

fn group_error(group: &str, e: impl std::error::Error + Send + Sync + 'static) -> LogError {
    LogError::Group {
        group: group.to_string(),
        source: Box::new(e),
    }
}

impl KafkaGroupConsumer {
    pub fn join(settings: &KafkaSettings, options: GroupOptions) -> Result<Self, LogError> {
        let reset = match options.start_from {
            StartFrom::Earliest => "earliest",
            StartFrom::Latest => "latest",
        };
        let consumer: StreamConsumer = settings
            .client_config(&options.client_id)
            .set("group.id", &options.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", reset)
            .set("fetch.wait.max.ms", "100")
            .create()
            .map_err(|e| group_error(&options.group_id, e))?;
        let topics: Vec<&str> = options.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| group_error(&options.group_id, e))?;
        Ok(KafkaGroupConsumer {
            consumer: Arc::new(consumer),
            group_id: options.group_id,
        })
    }
}

impl GroupConsumer for KafkaGroupConsumer {
    fn member_id(&self) -> String {
        let native = self.consumer.client().native_ptr();
        // SAFETY: the client outlives the call; librdkafka returns a string it allocated
        // (or null), which we copy and then free with its own allocator.
        unsafe {
            let id = rdkafka::bindings::rd_kafka_memberid(native);
            if id.is_null() {
                return String::new();
            }
            let text = std::ffi::CStr::from_ptr(id).to_string_lossy().into_owned();
            rdkafka::bindings::rd_kafka_mem_free(native, id.cast());
            text
        }
    }

    fn assignment(&self) -> Vec<(String, i32)> {
        self.consumer
            .assignment()
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn poll(&mut self, wait: Duration) -> BoxFuture<'_, Result<Vec<Consumed>, LogError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let first = match tokio::time::timeout(wait, self.consumer.recv()).await {
                Err(_) => return Ok(out),
                Ok(m) => m,
            };
            let mut next = Some(first);
            while let Some(received) = next.take() {
                match received {
                    Ok(m) => out.push(consumed(&m)),
                    // Errors librdkafka reports here are about the connection or a
                    // partition and it recovers from them itself; report the first only
                    // when nothing came with it.
                    Err(e) if out.is_empty() => return Err(group_error(&self.group_id, e)),
                    Err(_) => break,
                }
                if out.len() >= MAX_POLL_RECORDS {
                    break;
                }
                next = self.consumer.recv().now_or_never();
            }
            Ok(out)
        })
    }

    fn commit<'a>(
        &'a mut self,
        offsets: &'a [(String, i32, i64)],
    ) -> BoxFuture<'a, Result<(), LogError>> {
        Box::pin(async move {
            let mut tpl = TopicPartitionList::new();
            for (topic, partition, offset) in offsets {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                    .map_err(|e| group_error(&self.group_id, e))?;
            }
            let consumer = self.consumer.clone();
            tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
                .await
                .map_err(|e| group_error(&self.group_id, e))?
                .map_err(|e| group_error(&self.group_id, e))
        })
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), LogError>> {
        Box::pin(async move {
            // Dropping the last handle closes the consumer, which leaves the group; that
            // waits for the coordinator, so it runs off the async workers.
            let consumer = self.consumer;
            tokio::task::spawn_blocking(move || {
                consumer.unsubscribe();
                drop(consumer);
            })
            .await
            .map_err(|e| LogError::Backend(Box::new(e)))
        })
    }
}
