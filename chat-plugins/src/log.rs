//! The narrow log the chat plugins are written against.
//!
//! Four things, as the plugins need them: append records to a partition (durably, like
//! `acks=all`), read a partition from an offset, consume topics as a member of a consumer
//! group (the group's server-side assignor spreads partitions over members), and commit.
//!
//! The broker implements [`Log`] in-process over its partitions and coordinator; a Kafka
//! client can implement it against an external cluster. Keys are placed on partitions by
//! [`partition_for_key`] (Kafka's default partitioner), so both place a key the same way.
//!
//! Methods return boxed futures so a plugin can hold an `Arc<dyn Log>` without knowing
//! which implementation is behind it.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Borrowed for the keys the chat plugins write ([`header_key`]).
    pub key: Cow<'static, str>,
    pub value: Option<Bytes>,
}

/// Header keys the chat plugins write. A backend reading one of these gives the record the
/// static name rather than a copy: nearly every record of a chat topic has one.
const KNOWN_HEADER_KEYS: &[&str] = &[crate::event::TYPE_HEADER, crate::notifications::ID_HEADER];

/// A header key as read from the log (invalid UTF-8 replaced).
pub fn header_key(raw: &[u8]) -> Cow<'static, str> {
    match KNOWN_HEADER_KEYS.iter().find(|k| k.as_bytes() == raw) {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(String::from_utf8_lossy(raw).into_owned()),
    }
}

/// A record to append or one that was read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    /// Milliseconds since the epoch: the producer's time, or the log's append time on
    /// `LogAppendTime` topics.
    pub timestamp_ms: i64,
}

impl Record {
    /// The first header named `key`, if it has a value.
    pub fn header(&self, key: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|h| h.key == key)
            .and_then(|h| h.value.as_ref())
    }
}

/// A record read from the log, with where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    /// Shared by the records of one read (a name per record would cost an allocation each).
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub record: Record,
}

/// Where an append landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub partition: i32,
    /// Offset of the first record.
    pub base_offset: i64,
    /// Offset of the last record. `last_offset - base_offset + 1` is the record count
    /// when they landed together; on a log others write too, theirs may sit in between.
    pub last_offset: i64,
    /// Where each record landed, in the order given.
    pub offsets: Vec<i64>,
    /// The log's append time on `LogAppendTime` topics, else the first record's timestamp.
    pub timestamp_ms: i64,
}

/// A topic a plugin needs, created when missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// Kafka config names and values, such as `cleanup.policy=compact`.
    pub configs: Vec<(String, String)>,
}

impl TopicSpec {
    /// A compacted topic (the latest record per key is kept).
    pub fn compacted(name: &str, partitions: i32) -> TopicSpec {
        TopicSpec {
            name: name.to_string(),
            partitions,
            configs: vec![("cleanup.policy".into(), "compact".into())],
        }
    }
}

/// Where a group member starts on a partition the group has no committed offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
}

/// How to join a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOptions {
    pub group_id: String,
    pub topics: Vec<String>,
    pub start_from: StartFrom,
    /// Shown in group descriptions (`client.id` of a Kafka client).
    pub client_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("unknown topic or partition {topic}-{partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("offset {requested} of {topic}-{partition} is outside the log ({start}..={end})")]
    OffsetOutOfRange {
        topic: String,
        partition: i32,
        requested: i64,
        start: i64,
        end: i64,
    },
    #[error("a batch of {size} bytes is larger than {topic} accepts")]
    TooLarge { topic: String, size: usize },
    #[error("the group coordinator refused a request for group {group}: {source}")]
    Group {
        group: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the log is shutting down")]
    ShuttingDown,
    #[error("the log failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl LogError {
    /// Errors a caller may retry after a pause (the write did not happen).
    pub fn is_retriable(&self) -> bool {
        matches!(self, LogError::Backend(_) | LogError::Group { .. })
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// The log as the plugins see it.
pub trait Log: std::fmt::Debug + Send + Sync + 'static {
    /// Creates the topic when it does not exist; returns its partition count.
    fn ensure_topic<'a>(&'a self, spec: &'a TopicSpec) -> BoxFuture<'a, Result<i32>>;

    /// The topic's partition count.
    fn partition_count<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<i32>>;

    /// Appends `records` to one partition as one batch and returns once they are durable.
    fn append<'a>(
        &'a self,
        topic: &'a str,
        partition: i32,
        records: Vec<Record>,
    ) -> BoxFuture<'a, Result<Appended>>;

    /// Records from `offset` on (about `max_bytes` of them, at least one when there is
    /// one). When there are none yet, waits up to `wait` for some to arrive.
    fn read<'a>(
        &'a self,
        topic: &'a str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Consumed>>>;

    /// The partition's log start and end offsets (the end is the next offset to be written).
    fn offsets<'a>(&'a self, topic: &'a str, partition: i32) -> BoxFuture<'a, Result<(i64, i64)>>;

    /// Joins a consumer group; the member consumes the partitions the group assigns it.
    fn join_group(&self, options: GroupOptions) -> BoxFuture<'_, Result<Box<dyn GroupConsumer>>>;

    /// Whether other processes append to the same topics (gateways sharing an external
    /// cluster). State kept in memory then has to follow what the others write, not only
    /// what this process appends.
    fn shared(&self) -> bool {
        false
    }
}

/// A member of a consumer group. It stays a member while it exists (membership is kept
/// alive in the background, so slow processing does not cost the assignment); `close`
/// leaves the group so its partitions move at once.
pub trait GroupConsumer: Send {
    /// The member's id in the group.
    fn member_id(&self) -> String;

    /// The partitions assigned to this member now.
    fn assignment(&self) -> Vec<(String, i32)>;

    /// The next records of the assigned partitions, waiting up to `wait` when there are
    /// none. Each call continues where the previous one stopped; a newly assigned
    /// partition starts at the group's committed offset (or as [`StartFrom`] says).
    fn poll(&mut self, wait: Duration) -> BoxFuture<'_, Result<Vec<Consumed>>>;

    /// Commits, per partition, the next offset to consume. Durable when it returns.
    fn commit<'a>(&'a mut self, offsets: &'a [(String, i32, i64)]) -> BoxFuture<'a, Result<()>>;

    /// Leaves the group.
    fn close(self: Box<Self>) -> BoxFuture<'static, Result<()>>;
}

/// Kafka's default partitioner for keyed records: murmur2 of the key, made non-negative,
/// modulo the partition count. Using it means records keyed here land where a Java or
/// librdkafka (`murmur2_random`) producer would put them.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions.max(1) as u32) as i32
}

/// Kafka's murmur2 (seed 0x9747b28c), as its Java client computes it.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_keys_the_plugins_write_are_static_and_others_copied() {
        use std::borrow::Cow;
        assert!(matches!(header_key(b"type"), Cow::Borrowed("type")));
        assert!(matches!(
            header_key(b"chorus.id"),
            Cow::Borrowed("chorus.id")
        ));
        assert!(matches!(header_key(b"trace"), Cow::Owned(k) if k == "trace"));
        assert_eq!(header_key(b"bad\xffkey"), "bad\u{fffd}key");
    }

    #[test]
    fn keys_land_where_kafkas_default_partitioner_puts_them() {
        // Values from Kafka's Java client (Utils.murmur2 / DefaultPartitioner).
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"abc") as i32, 479470107);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        for key in [&b"a"[..], b"ab", b"abc", b"abcd", b"conversation-1"] {
            let p = partition_for_key(key, 7);
            assert!((0..7).contains(&p));
            assert_eq!(p, partition_for_key(key, 7));
        }
    }
}
