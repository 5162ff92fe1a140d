//! The write path: one append per message to `chat.messages`, keyed by conversation, with
//! the conversation's next sequence number in the record. The log is the only copy; this
//! store keeps what makes writes and reads cheap (last sequence number per conversation,
//! the messages by client id for retries, and where each message sits), rebuilt from the
//! log on start.
//!
//! Each partition has one writer at a time (a lock held across its append), so sequence
//! numbers within a conversation are assigned in log order and have no gaps, whoever
//! writes (HTTP or WebSocket): a failed append assigns nothing.
//!
//! Group commit: a send queues its draft on its partition and a writer task appends
//! everything queued there as one batch, so concurrent senders share one durable append.
//! The writer runs as its own task, so a caller that goes away (an HTTP client hanging
//! up) cannot interrupt an append between the write and the bookkeeping after it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{oneshot, Mutex};

use crate::error::{ChatError, Result};
use crate::event::{StoredMessage, TYPE_HEADER};
use crate::ids::{stream_id, Conversation};
use crate::log::{partition_for_key, Header, Log, LogError, Record, TopicSpec};
use crate::scan::scan_partition;

/// What a sender asks to send, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub msg_id: String,
    pub sender_id: String,
    pub to: Recipient,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    User(String),
    Group(String),
}

impl Draft {
    pub fn conversation(&self) -> Conversation {
        match &self.to {
            Recipient::User(r) => Conversation::Stream(stream_id(&self.sender_id, r)),
            Recipient::Group(g) => Conversation::Group(g.clone()),
        }
    }
}

/// Where a message sits.
#[derive(Debug, Clone, Copy)]
struct Placed {
    sequence_number: u64,
    offset: i64,
}

#[derive(Debug, Default)]
struct Shard {
    last_seq: HashMap<Conversation, u64>,
    /// (sender, msg_id) -> the message, so a retry gets the original back.
    by_client_id: HashMap<(String, String), StoredMessage>,
    placed: HashMap<Conversation, Vec<Placed>>,
    /// Stream id -> its two users (who may read its history).
    parties: HashMap<String, (String, String)>,
}

impl Shard {
    fn apply(&mut self, m: StoredMessage, offset: i64) {
        let Some(conversation) = m.conversation() else {
            return;
        };
        let last = self.last_seq.entry(conversation.clone()).or_default();
        *last = (*last).max(m.sequence_number);
        self.placed.entry(conversation).or_default().push(Placed {
            sequence_number: m.sequence_number,
            offset,
        });
        if let (Some(s), Some(r)) = (&m.stream_id, &m.receiver_id) {
            self.parties
                .entry(s.clone())
                .or_insert_with(|| (m.sender_id.clone(), r.clone()));
        }
        self.by_client_id
            .insert((m.sender_id.clone(), m.msg_id.clone()), m);
    }
}

/// Most drafts one append takes (the rest go in the next one).
const MAX_BATCH: usize = 512;

/// Where a queued send gets its answer.
type Reply = oneshot::Sender<Result<(StoredMessage, bool)>>;

/// A draft waiting for its partition's writer.
#[derive(Debug)]
struct Queued {
    draft: Draft,
    now_ms: i64,
    reply: Reply,
}

/// The chat messages of every conversation.
#[derive(Debug)]
pub struct MessageStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    log: Arc<dyn Log>,
    topic: String,
    partitions: i32,
    shards: Vec<Mutex<Shard>>,
    queued: Vec<std::sync::Mutex<Vec<Queued>>>,
}

impl Inner {
    /// Appends what is queued on `partition`, a batch at a time. Several of these may be
    /// spawned for one batch; the first to get the lock writes it, the others find the
    /// queue empty.
    async fn write_queued(self: Arc<Self>, partition: usize) {
        let mut shard = self.shards[partition].lock().await;
        loop {
            let batch: Vec<Queued> = {
                let mut queued = self.queued[partition].lock().expect("queue lock");
                let n = queued.len().min(MAX_BATCH);
                queued.drain(..n).collect()
            };
            if batch.is_empty() {
                return;
            }
            self.write_batch(&mut shard, partition as i32, batch).await;
        }
    }

    async fn write_batch(&self, shard: &mut Shard, partition: i32, batch: Vec<Queued>) {
        // Sequence numbers continue per conversation within the batch; a repeat of a
        // msg_id (earlier, or earlier in this batch) gets the original back.
        let mut next_seq: HashMap<Conversation, u64> = HashMap::new();
        let mut in_batch: HashMap<(String, String), usize> = HashMap::new();
        let mut fresh: Vec<(StoredMessage, Reply)> = Vec::new();
        let mut repeats: Vec<(usize, Reply)> = Vec::new();
        let mut records = Vec::new();
        for q in batch {
            let client_id = (q.draft.sender_id.clone(), q.draft.msg_id.clone());
            if let Some(original) = shard.by_client_id.get(&client_id) {
                let _ = q.reply.send(Ok((original.clone(), true)));
                continue;
            }
            if let Some(&i) = in_batch.get(&client_id) {
                repeats.push((i, q.reply));
                continue;
            }
            let conversation = q.draft.conversation();
            let seq = next_seq
                .entry(conversation.clone())
                .or_insert_with(|| shard.last_seq.get(&conversation).copied().unwrap_or(0));
            *seq += 1;
            let (message, record) = stored(q.draft, &conversation, *seq, q.now_ms);
            in_batch.insert(client_id, fresh.len());
            records.push(record);
            fresh.push((message, q.reply));
        }
        if records.is_empty() {
            return;
        }
        match self.log.append(&self.topic, partition, records).await {
            Ok(appended) => {
                for (i, (message, _)) in fresh.iter().enumerate() {
                    shard.apply(message.clone(), appended.base_offset + i as i64);
                }
                for (i, reply) in repeats {
                    let _ = reply.send(Ok((fresh[i].0.clone(), true)));
                }
                for (message, reply) in fresh {
                    let _ = reply.send(Ok((message, false)));
                }
            }
            Err(e) => {
                // Nothing was assigned: every sender of the batch may retry.
                let text = e.to_string();
                let replies = fresh.into_iter().map(|(_, r)| r);
                for reply in replies.chain(repeats.into_iter().map(|(_, r)| r)) {
                    let _ = reply.send(Err(ChatError::Unavailable(LogError::Backend(
                        text.clone().into(),
                    ))));
                }
            }
        }
    }
}

/// The stored message and its record for a draft given sequence number `seq`.
fn stored(
    draft: Draft,
    conversation: &Conversation,
    seq: u64,
    now_ms: i64,
) -> (StoredMessage, Record) {
    let (receiver_id, group_id, stream) = match &draft.to {
        Recipient::User(r) => (Some(r.clone()), None, Some(conversation.key().to_string())),
        Recipient::Group(g) => (None, Some(g.clone()), None),
    };
    let message = StoredMessage {
        msg_id: draft.msg_id,
        sender_id: draft.sender_id,
        receiver_id,
        group_id,
        stream_id: stream,
        content: draft.content,
        timestamp: now_ms,
        sequence_number: seq,
    };
    let value = serde_json::to_vec(&message).expect("messages serialize");
    let record = Record {
        key: Some(Bytes::copy_from_slice(conversation.key().as_bytes())),
        value: Some(Bytes::from(value)),
        headers: vec![Header {
            key: TYPE_HEADER.into(),
            value: Some(Bytes::from_static(b"chat_message")),
        }],
        timestamp_ms: now_ms,
    };
    (message, record)
}

impl MessageStore {
    /// Makes sure the topic exists and rebuilds the store from it.
    pub async fn open(log: Arc<dyn Log>, spec: &TopicSpec) -> crate::log::Result<MessageStore> {
        let partitions = log.ensure_topic(spec).await?;
        let mut shards = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let mut shard = Shard::default();
            let mut skipped = 0u64;
            scan_partition(log.as_ref(), &spec.name, p, |c| {
                match c
                    .record
                    .value
                    .as_deref()
                    .and_then(|v| serde_json::from_slice::<StoredMessage>(v).ok())
                {
                    Some(m) => shard.apply(m, c.offset),
                    None => skipped += 1,
                }
            })
            .await?;
            if skipped > 0 {
                tracing::warn!(topic = %spec.name, partition = p, skipped, "records that are not chat messages were skipped");
            }
            shards.push(Mutex::new(shard));
        }
        Ok(MessageStore {
            inner: Arc::new(Inner {
                log,
                topic: spec.name.clone(),
                partitions,
                queued: (0..partitions).map(|_| Default::default()).collect(),
                shards,
            }),
        })
    }

    fn partition(&self, conversation: &Conversation) -> i32 {
        partition_for_key(conversation.key().as_bytes(), self.inner.partitions)
    }

    /// Appends `draft` as the conversation's next message, or returns the message an
    /// earlier send with the same sender and msg_id made (`true`: it was a repeat).
    pub async fn send(&self, draft: Draft, now_ms: i64) -> Result<(StoredMessage, bool)> {
        let partition = self.partition(&draft.conversation()) as usize;
        let (reply, answer) = oneshot::channel();
        self.inner.queued[partition]
            .lock()
            .expect("queue lock")
            .push(Queued {
                draft,
                now_ms,
                reply,
            });
        tokio::spawn(self.inner.clone().write_queued(partition));
        answer
            .await
            .unwrap_or(Err(ChatError::Unavailable(LogError::ShuttingDown)))
    }

    /// The two users of a 1:1 stream, once it has a message.
    pub async fn parties(&self, stream: &str) -> Option<(String, String)> {
        let conversation = Conversation::Stream(stream.to_string());
        let shard = self.inner.shards[self.partition(&conversation) as usize]
            .lock()
            .await;
        shard.parties.get(stream).cloned()
    }

    /// Up to `limit` messages of `conversation` after sequence number `since`, in order.
    pub async fn history(
        &self,
        conversation: &Conversation,
        since: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>> {
        let partition = self.partition(conversation);
        let offsets: Vec<i64> = {
            let shard = self.inner.shards[partition as usize].lock().await;
            let Some(placed) = shard.placed.get(conversation) else {
                return Ok(Vec::new());
            };
            let start = placed.partition_point(|p| p.sequence_number <= since);
            placed[start..]
                .iter()
                .take(limit)
                .map(|p| p.offset)
                .collect()
        };
        let mut out = Vec::with_capacity(offsets.len());
        let mut i = 0;
        while i < offsets.len() {
            // One read covers every wanted message up to where it stops.
            let records = self
                .inner
                .log
                .read(
                    &self.inner.topic,
                    partition,
                    offsets[i],
                    256 << 10,
                    Duration::ZERO,
                )
                .await?;
            let before = i;
            for r in records {
                // Skip wanted offsets the log no longer has (retention).
                while i < offsets.len() && offsets[i] < r.offset {
                    i += 1;
                }
                if i < offsets.len() && r.offset == offsets[i] {
                    if let Some(m) = r
                        .record
                        .value
                        .as_deref()
                        .and_then(|v| serde_json::from_slice::<StoredMessage>(v).ok())
                    {
                        out.push(m);
                    }
                    i += 1;
                }
            }
            if i == before {
                break;
            }
        }
        Ok(out)
    }
}
