//! The chat plugins' log ([`chorus_chat::log::Log`]) served in-process: appends and reads go
//! straight to the partitions, group membership and commits straight to the coordinator
//! thread. Nothing goes through TCP to our own listener.
//!
//! Work that may block (a segment roll, an fsync, a read of older data) runs on tokio's
//! blocking threads; what is only a copy to or from the page cache runs on the calling
//! task, because handing it to another thread and back costs more than doing it. The chat
//! path's appends and the reads of readers following the end are of that kind.
//!
//! Group members are KIP-848 members of the coordinator like any `group.protocol=consumer`
//! client, so the server-side assignors spread partitions over them, they show up in
//! ConsumerGroupDescribe, and the CLI and the HTTP admin endpoints see their lag.

mod consumer;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_chat::log::{
    Appended, BoxFuture, Consumed, GroupConsumer, GroupOptions, Header, Log, LogError, Record,
    TopicSpec,
};
use chorus_storage::batch::{self, BatchBuilder, BatchIter, NewRecord, TimestampType};
use chorus_storage::log::ReadLimits;
use chorus_storage::record;

use crate::broker::Broker;
use crate::error::BrokerError;
use crate::partition::Partition;

pub use consumer::EmbeddedConsumer;

/// Largest decompressed batch a read will decode.
const MAX_DECODED_BATCH: usize = 64 << 20;
/// A read from at most this many bytes before the end (in the active segment) is of bytes
/// written moments ago, and is done on the calling task.
const TAIL_BYTES: u64 = 32 << 20;

/// [`Log`] over this process's broker.
#[derive(Debug, Clone)]
pub struct EmbeddedLog {
    broker: Arc<Broker>,
}

impl EmbeddedLog {
    pub fn new(broker: Arc<Broker>) -> Self {
        EmbeddedLog { broker }
    }

    /// Runs blocking broker work (files, fsync) off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Broker) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, LogError> {
        let broker = self.broker.clone();
        tokio::task::spawn_blocking(move || f(&broker))
            .await
            .unwrap_or_else(|e| Err(LogError::Backend(Box::new(e))))
    }
}

/// The plugin-facing error for a broker error on `topic`-`partition`.
fn log_error(e: BrokerError, topic: &str, partition: i32) -> LogError {
    use chorus_storage::LogError as Storage;
    match e {
        BrokerError::Log(Storage::UnknownTopic { .. } | Storage::UnknownPartition { .. }) => {
            LogError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            }
        }
        BrokerError::Log(Storage::OffsetOutOfRange {
            requested,
            log_start,
            log_end,
        }) => LogError::OffsetOutOfRange {
            topic: topic.to_string(),
            partition,
            requested,
            start: log_start,
            end: log_end,
        },
        BrokerError::Log(Storage::RecordTooLarge { size, .. }) => LogError::TooLarge {
            topic: topic.to_string(),
            size,
        },
        other => LogError::Backend(Box::new(other)),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Encodes `records` as one v2 batch (a record without a timestamp gets `now`).
fn encode_batch(records: &[Record], now: i64) -> std::io::Result<Vec<u8>> {
    // Every record's header block, one after another in one buffer; the batch borrows
    // them, and the keys and values, where they are.
    let mut headers = Vec::new();
    let mut header_ends = Vec::with_capacity(records.len());
    for r in records {
        if !r.headers.is_empty() {
            record::encode_headers_into(
                &mut headers,
                r.headers
                    .iter()
                    .map(|h| (h.key.as_bytes(), h.value.as_deref())),
            );
        }
        header_ends.push(headers.len());
    }
    let mut builder = BatchBuilder::new();
    let mut start = 0;
    for (r, end) in records.iter().zip(header_ends) {
        let timestamp = if r.timestamp_ms < 0 {
            now
        } else {
            r.timestamp_ms
        };
        let mut new = NewRecord::new(r.key.as_deref(), r.value.as_deref(), timestamp);
        new.headers = Cow::Borrowed(&headers[start..end]);
        start = end;
        builder.push(new);
    }
    builder.build()
}

/// Appends one batch to `partition` and waits for the durability its flush policy asks for
/// (as an `acks=all` produce does): on this task when that is only a write into the page
/// cache, on a blocking thread otherwise (a roll, an fsync).
async fn append_durably(p: Arc<Partition>, records: &[Record]) -> Result<Appended, LogError> {
    let now = now_ms();
    let encoded = encode_batch(records, now).map_err(|e| LogError::Backend(Box::new(e)))?;
    let error = |e| log_error(e, &p.topic, p.index);
    let outcome = match p.try_append(&encoded).map_err(error)? {
        Some(outcome) => outcome,
        None => {
            let writer = p.clone();
            tokio::task::spawn_blocking(move || writer.append(&encoded))
                .await
                .map_err(|e| LogError::Backend(Box::new(e)))?
                .map_err(error)?
        }
    };
    if p.must_flush(&outcome) {
        let flusher = p.clone();
        tokio::task::spawn_blocking(move || flusher.flush_as_policy_requires(&outcome))
            .await
            .map_err(|e| LogError::Backend(Box::new(e)))?
            .map_err(error)?;
    }
    let first = records.first().map_or(now, |r| {
        if r.timestamp_ms < 0 {
            now
        } else {
            r.timestamp_ms
        }
    });
    Ok(Appended {
        partition: p.index,
        base_offset: outcome.base_offset,
        last_offset: outcome.base_offset + records.len() as i64 - 1,
        offsets: (outcome.base_offset..).take(records.len()).collect(),
        timestamp_ms: outcome.log_append_time.unwrap_or(first),
    })
}

/// The records of `p` from `offset` on, about `max_bytes` of them. Blocking.
fn read_records(p: &Partition, offset: i64, max_bytes: usize) -> Result<Vec<Consumed>, LogError> {
    let read = p
        .log
        .read(
            offset,
            ReadLimits {
                max_bytes,
                min_one_batch: true,
                max_offset: None,
            },
        )
        .map_err(|e| log_error(e.into(), &p.topic, p.index))?;
    // Keys and values of uncompressed batches are slices of the read's one buffer, not
    // copies; those of compressed batches are copied out of the decompressed buffer.
    let buffer = bytes::Bytes::from(read.bytes);
    let share = |part: &[u8]| {
        let range = buffer.as_ptr_range();
        if range.start <= part.as_ptr() && part.as_ptr_range().end <= range.end {
            buffer.slice_ref(part)
        } else {
            bytes::Bytes::copy_from_slice(part)
        }
    };
    let topic: std::sync::Arc<str> = p.topic.as_str().into();
    let mut out = Vec::new();
    for (_, header, bytes) in BatchIter::new(&buffer) {
        if header.is_control() || header.next_offset() <= offset {
            continue;
        }
        let append_time = header.timestamp_type() == TimestampType::LogAppendTime;
        let mut failed = None;
        let decoded = batch::for_each_record(bytes, MAX_DECODED_BATCH, |r| {
            let at = header.base_offset + i64::from(r.offset_delta);
            if at < offset {
                return;
            }
            let headers = match headers_of(r.headers_raw, share) {
                Ok(h) => h,
                Err(e) => {
                    failed.get_or_insert(e);
                    return;
                }
            };
            out.push(Consumed {
                topic: topic.clone(),
                partition: p.index,
                offset: at,
                record: Record {
                    key: r.key.map(share),
                    value: r.value.map(share),
                    headers,
                    timestamp_ms: if append_time {
                        header.max_timestamp
                    } else {
                        header.base_timestamp + r.timestamp_delta
                    },
                },
            });
        });
        // Batches were validated on append; a failure here means the disk changed under us.
        if let Err(e) = decoded {
            return Err(LogError::Backend(Box::new(e)));
        }
        if let Some(e) = failed {
            return Err(LogError::Backend(Box::new(e)));
        }
    }
    Ok(out)
}

/// A record's header block as the plugins' headers, values shared with the read's buffer.
fn headers_of(
    raw: &[u8],
    share: impl Fn(&[u8]) -> bytes::Bytes,
) -> Result<Vec<Header>, record::RecordError> {
    let block = record::Headers::new(raw)?;
    let mut headers = Vec::with_capacity(block.capacity_hint());
    for h in block {
        let (key, value) = h?;
        headers.push(Header {
            key: chorus_chat::log::header_key(key),
            value: value.map(&share),
        });
    }
    Ok(headers)
}

impl Log for EmbeddedLog {
    fn ensure_topic<'a>(&'a self, spec: &'a TopicSpec) -> BoxFuture<'a, Result<i32, LogError>> {
        let spec = spec.clone();
        Box::pin(self.blocking(move |broker| {
            if let Some(meta) = broker.logs.topic(&spec.name) {
                return Ok(meta.partitions as i32);
            }
            let configs: BTreeMap<String, String> = spec.configs.iter().cloned().collect();
            let partitions = spec.partitions.max(1) as u32;
            match broker.create_topic(&spec.name, partitions, configs) {
                Ok(meta) => {
                    tracing::info!(topic = %spec.name, partitions, "created a topic for the chat plugins");
                    Ok(meta.partitions as i32)
                }
                Err(BrokerError::Log(chorus_storage::LogError::TopicExists { .. })) => broker
                    .logs
                    .topic(&spec.name)
                    .map(|m| m.partitions as i32)
                    .ok_or(LogError::UnknownPartition {
                        topic: spec.name.clone(),
                        partition: 0,
                    }),
                Err(e) => Err(log_error(e, &spec.name, 0)),
            }
        }))
    }

    fn partition_count<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<i32, LogError>> {
        Box::pin(async move {
            self.broker
                .logs
                .topic(topic)
                .map(|m| m.partitions as i32)
                .ok_or_else(|| LogError::UnknownPartition {
                    topic: topic.to_string(),
                    partition: 0,
                })
        })
    }

    fn append<'a>(
        &'a self,
        topic: &'a str,
        partition: i32,
        records: Vec<Record>,
    ) -> BoxFuture<'a, Result<Appended, LogError>> {
        Box::pin(async move {
            let p = self
                .broker
                .partition(topic, partition)
                .map_err(|e| log_error(e, topic, partition))?;
            append_durably(p, &records).await
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
        Box::pin(async move {
            let p = self
                .broker
                .partition(topic, partition)
                .map_err(|e| log_error(e, topic, partition))?;
            let deadline = tokio::time::Instant::now() + wait;
            // Subscribed before the first read, so an append in between still wakes us.
            let mut end = p.subscribe();
            loop {
                end.borrow_and_update();
                let records = if p.log.is_tail(offset, TAIL_BYTES) {
                    read_records(&p, offset, max_bytes)?
                } else {
                    let reader = p.clone();
                    self.blocking(move |_| read_records(&reader, offset, max_bytes))
                        .await?
                };
                if !records.is_empty() || tokio::time::Instant::now() >= deadline {
                    return Ok(records);
                }
                if tokio::time::timeout_at(deadline, end.changed())
                    .await
                    .is_err()
                {
                    return Ok(Vec::new());
                }
            }
        })
    }

    fn offsets<'a>(
        &'a self,
        topic: &'a str,
        partition: i32,
    ) -> BoxFuture<'a, Result<(i64, i64), LogError>> {
        Box::pin(async move {
            let p = self
                .broker
                .partition(topic, partition)
                .map_err(|e| log_error(e, topic, partition))?;
            Ok((p.log.log_start_offset(), p.log.log_end_offset()))
        })
    }

    fn join_group(
        &self,
        options: GroupOptions,
    ) -> BoxFuture<'_, Result<Box<dyn GroupConsumer>, LogError>> {
        Box::pin(async move {
            let consumer = EmbeddedConsumer::join(self.clone(), options).await?;
            Ok(Box::new(consumer) as Box<dyn GroupConsumer>)
        })
    }
}
