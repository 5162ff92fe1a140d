//! The chat plugins' log ([`chorus_chat::log::Log`]) on an external Kafka cluster, through
//! librdkafka: what `chorus gateway --bootstrap-server` runs on. Several gateway processes
//! can share one cluster (Kafka, Redpanda, or another Chorus); the chat stores follow what
//! the others append (see `chorus_chat::messages`).
//!
//! * Appends go through one idempotent `acks=all` producer, one record per message, to the
//!   partition asked for; an append returns once every record is acknowledged.
//! * Reads use a consumer assigned to the one partition (no group), kept per partition and
//!   repositioned when a read asks for another offset. Reads that wait (the fan-out) and
//!   reads that do not (history, catching up) have separate consumers, so a long poll
//!   never holds up a history read.
//! * Groups are ordinary librdkafka group members (`consumer.rs`).
//! * Metadata, watermarks and topic creation use the producer's connection and an admin
//!   client.
//!
//! librdkafka calls that block (metadata, watermarks, commits, closing) run on the blocking
//! pool.

mod consumer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header as KafkaHeader, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use chorus_chat::log::{
    Appended, BoxFuture, Consumed, GroupConsumer, GroupOptions, Header, Log, LogError, Record,
    TopicSpec,
};

pub use consumer::KafkaGroupConsumer;

/// How long metadata, watermark and admin calls may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read that must not wait (the records are known to exist) waits for the
/// consumer's fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// What to connect to, and librdkafka settings to add (security, for example).
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    /// librdkafka configuration properties, applied to every client after Chorus's own.
    pub options: Vec<(String, String)>,
}

impl KafkaSettings {
    fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", client_id);
        for (k, v) in &self.options {
            config.set(k, v);
        }
        config
    }
}

/// A consumer assigned to one partition, and the offset its next record has.
struct Reader {
    consumer: StreamConsumer,
    next: Option<i64>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("next", &self.next).finish()
    }
}

type ReaderKey = (String, i32, bool);

/// [`Log`] over an external Kafka cluster.
pub struct KafkaLog {
    settings: KafkaSettings,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// (topic, partition, waits) -> its reader.
    readers: Mutex<HashMap<ReaderKey, Arc<tokio::sync::Mutex<Reader>>>>,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("bootstrap_servers", &self.settings.bootstrap_servers)
            .finish_non_exhaustive()
    }
}

/// Maps a librdkafka error on `topic`-`partition` to the plugins' error.
fn log_error(e: KafkaError, topic: &str, partition: i32) -> LogError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownPartition) => {
            LogError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            }
        }
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge) => {
            LogError::TooLarge {
                topic: topic.to_string(),
                size: 0,
            }
        }
        _ => LogError::Backend(Box::new(e)),
    }
}

impl KafkaLog {
    /// Creates the clients. librdkafka connects lazily; [`KafkaLog::check`] waits for the
    /// cluster to answer.
    pub fn new(settings: KafkaSettings) -> Result<KafkaLog, KafkaError> {
        let producer: FutureProducer = settings
            .client_config("chorus-gateway")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Concurrent appends share a request; a single one waits at most this long.
            .set("linger.ms", "1")
            .set("message.timeout.ms", "30000")
            .create()?;
        let admin = settings.client_config("chorus-gateway-admin").create()?;
        Ok(KafkaLog {
            settings,
            producer,
            admin,
            readers: Mutex::new(HashMap::new()),
        })
    }

    /// Asks the cluster for its metadata, so a wrong address fails at start.
    pub async fn check(&self) -> Result<(), LogError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, CALL_TIMEOUT)
                .map(|_| ())
        })
        .await
        .map_err(|e| LogError::Backend(Box::new(e)))?
        .map_err(|e| LogError::Backend(Box::new(e)))
    }

    fn reader(
        &self,
        topic: &str,
        partition: i32,
        waits: bool,
    ) -> Result<Arc<tokio::sync::Mutex<Reader>>, LogError> {
        let mut readers = self.readers.lock().expect("readers lock");
        let key = (topic.to_string(), partition, waits);
        if let Some(r) = readers.get(&key) {
            return Ok(r.clone());
        }
        let consumer: StreamConsumer = self
            .settings
            .client_config("chorus-gateway-reader")
            // librdkafka wants a group for `assign`; this one is never joined or committed.
            .set("group.id", "chorus-gateway-reader")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "error")
            // The fan-out's latency: how long the cluster may hold an empty fetch.
            .set("fetch.wait.max.ms", "100")
            .create()
            .map_err(|e| log_error(e, topic, partition))?;
        let reader = Arc::new(tokio::sync::Mutex::new(Reader {
            consumer,
            next: None,
        }));
        readers.insert(key, reader.clone());
        Ok(reader)
    }

    async fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), LogError> {
        let producer = self.producer.clone();
        let name = topic.to_string();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_watermarks(&name, partition, CALL_TIMEOUT)
        })
        .await
        .map_err(|e| LogError::Backend(Box::new(e)))?
        .map_err(|e| log_error(e, topic, partition))
    }

    async fn read_from(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Vec<Consumed>, LogError> {
        let (wait, waits) = if wait.is_zero() {
            // "Do not wait" means "do not wait for records to be written"; records that
            // exist still have to be fetched.
            let (_, end) = self.watermarks(topic, partition).await?;
            if offset >= end {
                return Ok(Vec::new());
            }
            (FETCH_TIMEOUT, false)
        } else {
            (wait, true)
        };
        let reader = self.reader(topic, partition, waits)?;
        let mut guard = reader.lock().await;
        let reader = &mut *guard;
        if reader.next != Some(offset) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
                .map_err(|e| log_error(e, topic, partition))?;
            reader
                .consumer
                .assign(&tpl)
                .map_err(|e| log_error(e, topic, partition))?;
            reader.next = Some(offset);
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        let first = match tokio::time::timeout(wait, reader.consumer.recv()).await {
            // Records exist below the end; not getting them is a failure, not an empty log.
            Err(_) if !waits => {
                return Err(LogError::Backend(
                    format!("no records of {topic}-{partition} from offset {offset} arrived within {FETCH_TIMEOUT:?}").into(),
                ))
            }
            Err(_) => return Ok(out),
            Ok(m) => m,
        };
        let mut next = Some(first);
        while let Some(received) = next.take() {
            let m = match received {
                Ok(m) => m,
                Err(e) => {
                    reader.next = None;
                    // With auto.offset.reset=error, librdkafka reports an offset outside
                    // the log as an auto-reset failure.
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset
                        )
                    ) {
                        let (start, end) = self.watermarks(topic, partition).await?;
                        return Err(LogError::OffsetOutOfRange {
                            topic: topic.to_string(),
                            partition,
                            requested: offset,
                            start,
                            end,
                        });
                    }
                    if out.is_empty() {
                        return Err(log_error(e, topic, partition));
                    }
                    break;
                }
            };
            // Anything before the position asked for belongs to an earlier one.
            if m.offset() >= offset {
                let c = consumed(&m);
                bytes += c.record.key.as_ref().map_or(0, Bytes::len)
                    + c.record.value.as_ref().map_or(0, Bytes::len);
                reader.next = Some(c.offset + 1);
                out.push(c);
                if bytes >= max_bytes {
                    break;
                }
            }
            next = reader.consumer.recv().now_or_never();
        }
        Ok(out)
    }
}

/// A record as the plugins see it.
pub(crate) fn consumed(m: &BorrowedMessage<'_>) -> Consumed {
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| Header {
                    key: chorus_chat::log::header_key(h.key.as_bytes()),
                    value: h.value.map(Bytes::copy_from_slice),
                })
                .collect()
        })
        .unwrap_or_default();
    Consumed {
        topic: m.topic().into(),
        partition: m.partition(),
        offset: m.offset(),
        record: Record {
            key: m.key().map(Bytes::copy_from_slice),
            value: m.payload().map(Bytes::copy_from_slice),
            headers,
            timestamp_ms: m.timestamp().to_millis().unwrap_or(-1),
        },
    }
}

impl Log for KafkaLog {
    fn ensure_topic<'a>(&'a self, spec: &'a TopicSpec) -> BoxFuture<'a, Result<i32, LogError>> {
        Box::pin(async move {
            // The cluster's default replication factor (-1).
            let mut topic = NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(-1));
            for (k, v) in &spec.configs {
                topic = topic.set(k, v);
            }
            let options = AdminOptions::new().operation_timeout(Some(CALL_TIMEOUT));
            let results = self
                .admin
                .create_topics([&topic], &options)
                .await
                .map_err(|e| log_error(e, &spec.name, 0))?;
            for result in results {
                match result {
                    Ok(_) => {
                        tracing::info!(topic = %spec.name, "created a topic for the chat plugins")
                    }
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((_, code)) => {
                        return Err(LogError::Backend(
                            format!("creating topic {} failed: {code}", spec.name).into(),
                        ))
                    }
                }
            }
            // A topic just created may take a moment to show in metadata.
            let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
            loop {
                match self.partition_count(&spec.name).await {
                    Ok(n) => return Ok(n),
                    Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
    }

    fn partition_count<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<i32, LogError>> {
        Box::pin(async move {
            let producer = self.producer.clone();
            let name = topic.to_string();
            let count = tokio::task::spawn_blocking(move || {
                let metadata = producer
                    .client()
                    .fetch_metadata(Some(&name), CALL_TIMEOUT)?;
                Ok::<_, KafkaError>(
                    metadata
                        .topics()
                        .iter()
                        .find(|t| t.name() == name && t.error().is_none())
                        .map_or(0, |t| t.partitions().len() as i32),
                )
            })
            .await
            .map_err(|e| LogError::Backend(Box::new(e)))?
            .map_err(|e| log_error(e, topic, 0))?;
            if count == 0 {
                return Err(LogError::UnknownPartition {
                    topic: topic.to_string(),
                    partition: 0,
                });
            }
            Ok(count)
        })
    }

    fn append<'a>(
        &'a self,
        topic: &'a str,
        partition: i32,
        records: Vec<Record>,
    ) -> BoxFuture<'a, Result<Appended, LogError>> {
        Box::pin(async move {
            let mut pending = Vec::with_capacity(records.len());
            for r in &records {
                let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
                for h in &r.headers {
                    headers = headers.insert(KafkaHeader {
                        key: &h.key,
                        value: h.value.as_deref(),
                    });
                }
                let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
                    .partition(partition)
                    .headers(headers);
                if let Some(k) = r.key.as_deref() {
                    record = record.key(k);
                }
                if let Some(v) = r.value.as_deref() {
                    record = record.payload(v);
                }
                if r.timestamp_ms >= 0 {
                    record = record.timestamp(r.timestamp_ms);
                }
                // Queued in order; the idempotent producer keeps that order on the wire.
                loop {
                    match self.producer.send_result(record) {
                        Ok(delivery) => {
                            pending.push(delivery);
                            break;
                        }
                        Err((e, back))
                            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                        {
                            record = back;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err((e, _)) => return Err(log_error(e, topic, partition)),
                    }
                }
            }
            let mut first: Option<(i64, i64)> = None;
            let mut offsets = Vec::with_capacity(pending.len());
            for delivery in pending {
                let delivered = delivery.await.map_err(|_| LogError::ShuttingDown)?;
                let d = delivered.map_err(|(e, _)| log_error(e, topic, partition))?;
                first.get_or_insert((d.offset, d.timestamp.to_millis().unwrap_or(-1)));
                offsets.push(d.offset);
            }
            let (base_offset, timestamp_ms) = first.unwrap_or((-1, -1));
            Ok(Appended {
                partition,
                base_offset,
                last_offset: offsets.last().copied().unwrap_or(-1),
                offsets,
                timestamp_ms,
            })
        })
    }

    fn read<'a>(
        &'a self,
        topic: &'a str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Consumed>, LogError>> {
        Box::pin(self.read_from(topic, partition, offset, max_bytes, wait))
    }

    fn offsets<'a>(
        &'a self,
        topic: &'a str,
        partition: i32,
    ) -> BoxFuture<'a, Result<(i64, i64), LogError>> {
        Box::pin(self.watermarks(topic, partition))
    }

    fn join_group(
        &self,
        options: GroupOptions,
    ) -> BoxFuture<'_, Result<Box<dyn GroupConsumer>, LogError>> {
        Box::pin(async move {
            let consumer = KafkaGroupConsumer::join(&self.settings, options)?;
            Ok(Box::new(consumer) as Box<dyn GroupConsumer>)
        })
    }

    fn shared(&self) -> bool {
        true
    }
}
