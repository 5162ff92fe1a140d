//! The write path: one append per message to `chat.messages`, keyed by conversation, with
//! the conversation's next sequence number in the record. The log is the only copy; this
//! store keeps what makes writes and reads cheap (last sequence number per conversation,
//! recent client ids for retries, and where each message sits), rebuilt from the log on
//! start and kept up with it after.
//!
//! Retries: a (sender, msg_id) is remembered for an hour of the log's own time (the
//! records' timestamps) and at most [`MSG_ID_MEMORY`] per partition, so memory stays
//! bounded and every reader of the log forgets the same ids at the same record. A repeat
//! within that window is answered with the original's receipt; one after it is a new
//! message.
//!
//! Sequence numbers come from log order: a message's number is its place among the
//! distinct messages of its conversation in the partition (a record repeating an earlier
//! sender and msg_id is not a new message). Every reader of the log derives the same
//! numbers, so they have no gaps and agree even when several gateways write one cluster.
//! The writer puts the number it expects in the record; with a single writer (`chorus
//! serve`) that is always the derived one. Two gateways racing on one conversation may
//! both store the same number; what Chorus serves (receipts, frames, history) is the
//! derived number.
//!
//! Each partition has one writer at a time in this process. Before numbering a batch the
//! writer catches up with the log's end, and after its append it takes in its records (or,
//! when another writer's records came first, reads the log up to its own last one).
//! The gateway's fan-out takes in what it reads through [`MessageStore::follow`]; records
//! are taken in exactly once and in offset order, whoever gets to them first.
//!
//! Group commit ([`crate::group_commit`]): a send queues its draft on its partition and a
//! writer task appends everything queued there as one batch, so concurrent senders share
//! one durable append. [`MessageStore::send_all`] queues several drafts of a conversation
//! as one group, which is appended whole: all of them are written or none.

use std::collections::hash_map::Entry;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::client_ids::{ClientIds, Sent};
use crate::error::{ChatError, Result};
use crate::event::{StoredMessage, TYPE_HEADER};
use crate::group_commit::GroupQueue;
use crate::ids::{stream_id, Conversation};
use crate::log::{partition_for_key, Consumed, Header, Log, LogError, Record, TopicSpec};
use crate::scan::{read_range, scan_partition};
use crate::HashMap;

/// What a sender asks to send, validated. Cheap to clone: the texts are shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub msg_id: Arc<str>,
    pub sender_id: Arc<str>,
    pub to: Recipient,
    pub content: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    User(Arc<str>),
    Group(Arc<str>),
}

/// A draft with its conversation, worked out once (a stream's id is a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressed {
    pub draft: Draft,
    pub conversation: Conversation,
}

impl From<Draft> for Addressed {
    fn from(draft: Draft) -> Addressed {
        Addressed {
            conversation: draft.conversation(),
            draft,
        }
    }
}

impl Draft {
    pub fn conversation(&self) -> Conversation {
        match &self.to {
            Recipient::User(r) => Conversation::Stream(stream_id(&self.sender_id, r)),
            Recipient::Group(g) => Conversation::Group(g.clone()),
        }
    }
}

/// How long (in the records' own time) a client id is remembered for retries.
pub const MSG_ID_WINDOW_MS: i64 = 3_600_000;
/// Most client ids remembered per partition.
pub const MSG_ID_MEMORY: usize = 200_000;

/// What a sender is told about a message: the HTTP answer, and the WebSocket `ack`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub msg_id: Arc<str>,
    pub conversation: Conversation,
    pub sequence_number: u64,
    pub timestamp: i64,
}

impl Receipt {
    pub fn to_json(&self) -> Value {
        let mut receipt = json!({
            "msg_id": self.msg_id,
            "sequence_number": self.sequence_number,
            "timestamp": self.timestamp,
        });
        match &self.conversation {
            Conversation::Stream(s) => receipt["stream_id"] = json!(s),
            Conversation::Group(g) => receipt["group_id"] = json!(g),
        }
        receipt
    }
}

/// Where a message sits.
#[derive(Debug, Clone, Copy)]
struct Placed {
    sequence_number: u64,
    offset: i64,
}

/// Most recently taken-in records a shard keeps, and most bytes of their content.
const RECENT_RECORDS: usize = 4096;
const RECENT_BYTES: usize = 4 << 20;

/// What the store knows of one partition.
#[derive(Debug, Default)]
struct Shard {
    /// Every record below this offset has been taken in.
    applied_end: i64,
    /// Recent messages by client id, so a retry gets the original back.
    client_ids: ClientIds,
    /// Where each message of a conversation sits; the last one's number is the
    /// conversation's last sequence number.
    placed: HashMap<Conversation, Vec<Placed>>,
    /// Stream id -> its two users (who may read its history).
    parties: HashMap<Arc<str>, (Arc<str>, Arc<str>)>,
    /// The records taken in last, by offset, with the message each one made (numbered).
    /// The fan-out and the chat notifier read these records moments after the writer
    /// took them in; here they find them without parsing them again.
    recent: VecDeque<(i64, Option<Arc<StoredMessage>>)>,
    /// Content bytes of the messages in `recent`.
    recent_bytes: usize,
}

impl Shard {
    /// Takes in the record at `offset` (`None` when it is not a chat message). Records
    /// must come in offset order, each one above every record not yet taken in; one below
    /// `applied_end` was taken in before and is looked up instead.
    ///
    /// Returns the message numbered by its place in its conversation, or `None` for a
    /// record that is not a new message (a repeat of an earlier msg_id, or not a chat
    /// message at all).
    fn follow(
        &mut self,
        offset: i64,
        message: Option<Arc<StoredMessage>>,
    ) -> Option<Arc<StoredMessage>> {
        if offset < self.applied_end {
            if let Some(taken) = self.recent_at(offset) {
                return taken;
            }
            let mut m = message?;
            let sent = self
                .sent(&m.sender_id, &m.msg_id)
                .filter(|s| s.offset == offset)?;
            Arc::make_mut(&mut m).sequence_number = sent.sequence_number;
            return Some(m);
        }
        self.applied_end = offset + 1;
        let taken = self.take_in(offset, message);
        self.keep_recent(offset, taken.clone());
        taken
    }

    /// [`Shard::follow`] of a record above everything taken in.
    fn take_in(
        &mut self,
        offset: i64,
        message: Option<Arc<StoredMessage>>,
    ) -> Option<Arc<StoredMessage>> {
        let mut m = message?;
        if self.sent(&m.sender_id, &m.msg_id).is_some() {
            return None;
        }
        let conversation = m.conversation()?;
        let placed = self.placed.entry(conversation).or_default();
        let number = placed.last().map_or(0, |p| p.sequence_number) + 1;
        if m.sequence_number != number {
            // The writer put the number it expected; the log's order decides.
            Arc::make_mut(&mut m).sequence_number = number;
        }
        placed.push(Placed {
            sequence_number: number,
            offset,
        });
        if let (Some(s), Some(r)) = (&m.stream_id, &m.receiver_id) {
            if !self.parties.contains_key(s) {
                self.parties
                    .insert(s.clone(), (m.sender_id.clone(), r.clone()));
            }
        }
        self.client_ids.insert(
            &m.sender_id,
            &m.msg_id,
            Sent {
                sequence_number: m.sequence_number,
                offset,
                timestamp: m.timestamp,
            },
        );
        Some(m)
    }

    fn last_sequence_number(&self, conversation: &Conversation) -> u64 {
        self.placed
            .get(conversation)
            .and_then(|p| p.last())
            .map_or(0, |p| p.sequence_number)
    }

    /// What the record at `offset` made, when it is among the recent ones (every one of
    /// which is below `applied_end`: only taken-in records are kept).
    fn recent_at(&self, offset: i64) -> Option<Option<Arc<StoredMessage>>> {
        let i = self
            .recent
            .binary_search_by_key(&offset, |(o, _)| *o)
            .ok()?;
        Some(self.recent[i].1.clone())
    }

    fn keep_recent(&mut self, offset: i64, taken: Option<Arc<StoredMessage>>) {
        self.recent_bytes += taken.as_ref().map_or(0, |m| m.content.len());
        self.recent.push_back((offset, taken));
        while self.recent.len() > RECENT_RECORDS || self.recent_bytes > RECENT_BYTES {
            let Some((_, gone)) = self.recent.pop_front() else {
                break;
            };
            self.recent_bytes -= gone.map_or(0, |m| m.content.len());
        }
    }

    /// The remembered message of `sender`'s `msg_id`.
    fn sent(&self, sender: &str, msg_id: &str) -> Option<Sent> {
        self.client_ids.get(sender, msg_id)
    }

    /// The receipt of the remembered message with `client_id` in `conversation`.
    fn receipt(&self, client_id: (&str, &str), conversation: &Conversation) -> Option<Receipt> {
        self.sent(client_id.0, client_id.1).map(|s| Receipt {
            msg_id: client_id.1.into(),
            conversation: conversation.clone(),
            sequence_number: s.sequence_number,
            timestamp: s.timestamp,
        })
    }
}

/// The chat message in a record, if it is one.
fn parse(c: &Consumed) -> Option<Arc<StoredMessage>> {
    c.record
        .value
        .as_deref()
        .and_then(|v| serde_json::from_slice(v).ok())
        .map(Arc::new)
}

/// Where a queued send gets its answer.
type Reply = oneshot::Sender<Result<(Receipt, bool)>>;

/// A draft waiting for its partition's writer.
#[derive(Debug)]
struct Queued {
    draft: Draft,
    /// The draft's conversation (worked out once: a stream's id is a hash).
    conversation: Conversation,
    now_ms: i64,
    reply: Reply,
}

impl Queued {
    /// About the bytes of its record.
    fn weight(&self) -> usize {
        let d = &self.draft;
        let to = match &d.to {
            Recipient::User(u) | Recipient::Group(u) => u.len(),
        };
        d.content.len() + d.msg_id.len() + d.sender_id.len() + to + 200
    }
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
    /// Held only briefly, never across an await.
    shards: Vec<std::sync::Mutex<Shard>>,
    /// Sends waiting for their partition's writer (one at a time per partition).
    queued: GroupQueue<Queued>,
}

impl Inner {
    fn shard(&self, partition: i32) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[partition as usize].lock().expect("shard lock")
    }

    /// Appends what is queued on `partition`, a batch at a time.
    async fn write_queued(self: Arc<Self>, partition: i32) {
        self.queued
            .write_queued(partition, Queued::weight, |batch| {
                self.write_batch(partition, batch)
            })
            .await;
    }

    /// Takes in the log's records of `partition` from where the shard is up to `until`.
    async fn catch_up(&self, partition: i32, until: i64) -> crate::log::Result<()> {
        let from = self.shard(partition).applied_end;
        read_range(
            self.log.as_ref(),
            &self.topic,
            partition,
            from,
            until,
            |c| {
                let m = parse(&c);
                self.shard(partition).follow(c.offset, m);
            },
        )
        .await
    }

    async fn write_batch(&self, partition: i32, batch: Vec<Queued>) {
        // On a shared log, number the batch against the whole log, including what other
        // writers appended. (Alone, this process has taken in everything it wrote.)
        if self.log.shared() {
            let caught_up = match self.log.offsets(&self.topic, partition).await {
                Ok((_, end)) => self.catch_up(partition, end).await,
                Err(e) => Err(e),
            };
            if let Err(e) = caught_up {
                fail(batch.into_iter().map(|q| q.reply), &e);
                return;
            }
        }
        // Sequence numbers continue per conversation within the batch; a repeat of a
        // msg_id (earlier, or earlier in this batch) gets the original back. Worked out
        // first with the drafts borrowed, then the drafts are made into records.
        enum Fate {
            Known(Receipt),
            /// A repeat of the batch's i-th new message.
            Again(usize),
            New(u64),
        }
        let fates: Vec<Fate> = {
            let shard = self.shard(partition);
            let mut next_seq: HashMap<&Conversation, u64> = HashMap::default();
            let mut in_batch: HashMap<(&str, &str), usize> = HashMap::default();
            batch
                .iter()
                .map(|q| {
                    let id = (q.draft.sender_id.as_ref(), q.draft.msg_id.as_ref());
                    if let Some(original) = shard.receipt(id, &q.conversation) {
                        return Fate::Known(original);
                    }
                    let fresh = in_batch.len();
                    match in_batch.entry(id) {
                        Entry::Occupied(e) => return Fate::Again(*e.get()),
                        Entry::Vacant(e) => e.insert(fresh),
                    };
                    let seq = next_seq
                        .entry(&q.conversation)
                        .or_insert_with(|| shard.last_sequence_number(&q.conversation));
                    *seq += 1;
                    Fate::New(*seq)
                })
                .collect()
        };
        let mut fresh: Vec<(Arc<StoredMessage>, Reply)> = Vec::new();
        let mut repeats: Vec<(usize, Reply)> = Vec::new();
        let mut records = Vec::new();
        for (q, fate) in batch.into_iter().zip(fates) {
            match fate {
                Fate::Known(original) => {
                    let _ = q.reply.send(Ok((original, true)));
                }
                Fate::Again(i) => repeats.push((i, q.reply)),
                Fate::New(seq) => {
                    let (message, record) = stored(q.draft, &q.conversation, seq, q.now_ms);
                    records.push(record);
                    fresh.push((message, q.reply));
                }
            }
        }
        if records.is_empty() {
            return;
        }
        let count = records.len() as i64;
        let appended = match self.log.append(&self.topic, partition, records).await {
            Ok(a) => a,
            Err(e) => {
                // Nothing was written: every sender of the batch may retry.
                let replies = fresh.into_iter().map(|(_, r)| r);
                fail(replies.chain(repeats.into_iter().map(|(_, r)| r)), &e);
                return;
            }
        };
        let (base, last) = (appended.base_offset, appended.last_offset);
        let together = last - base + 1 == count;
        // What the log made of each of ours, when we took them in ourselves.
        let taken: Option<Vec<Option<Arc<StoredMessage>>>> = {
            let mut shard = self.shard(partition);
            if together && shard.applied_end >= base {
                let made = fresh
                    .iter()
                    .enumerate()
                    .map(|(i, (message, _))| shard.follow(base + i as i64, Some(message.clone())));
                Some(made.collect())
            } else {
                None
            }
        };
        if taken.is_none() {
            // Another writer's records came before or among ours: read the log as it is.
            if let Err(e) = self.catch_up(partition, last + 1).await {
                // The messages are written; a retry with the same msg_id finds them.
                let replies = fresh.into_iter().map(|(_, r)| r);
                fail(replies.chain(repeats.into_iter().map(|(_, r)| r)), &e);
                return;
            }
        }
        // Answer with each message as the log numbered it; one that lost to an earlier
        // record with the same msg_id (from another writer) is answered as a repeat.
        let answers: Vec<(Receipt, bool)> = {
            let shard = self.shard(partition);
            fresh
                .iter()
                .zip(&appended.offsets)
                .enumerate()
                .map(|(i, ((ours, _), offset))| {
                    let (sequence_number, timestamp, repeat) = match taken
                        .as_ref()
                        .and_then(|t| t.get(i))
                    {
                        // Taken in as a new message: numbered there.
                        Some(Some(m)) => (m.sequence_number, m.timestamp, false),
                        _ => {
                            match shard.sent(&ours.sender_id, &ours.msg_id) {
                                Some(s) => (s.sequence_number, s.timestamp, s.offset != *offset),
                                // Only if the window forgot it already: what we wrote.
                                None => (ours.sequence_number, ours.timestamp, false),
                            }
                        }
                    };
                    let receipt = Receipt {
                        msg_id: ours.msg_id.clone(),
                        conversation: ours.conversation().expect("drafts have a conversation"),
                        sequence_number,
                        timestamp,
                    };
                    (receipt, repeat)
                })
                .collect()
        };
        for (i, reply) in repeats {
            let _ = reply.send(Ok((answers[i].0.clone(), true)));
        }
        for ((_, reply), answer) in fresh.into_iter().zip(answers) {
            let _ = reply.send(Ok(answer));
        }
    }
}

/// Answers every reply with the log's error (the senders may retry).
fn fail(replies: impl Iterator<Item = Reply>, e: &LogError) {
    let text = e.to_string();
    for reply in replies {
        let _ = reply.send(Err(ChatError::Unavailable(LogError::Backend(
            text.clone().into(),
        ))));
    }
}

/// The stored message and its record for a draft given sequence number `seq`.
fn stored(
    draft: Draft,
    conversation: &Conversation,
    seq: u64,
    now_ms: i64,
) -> (Arc<StoredMessage>, Record) {
    let (receiver_id, group_id, stream) = match &draft.to {
        Recipient::User(r) => (
            Some(r.clone()),
            None,
            // A user's conversation is always a stream; its id is shared, not copied.
            match conversation {
                Conversation::Stream(s) => Some(s.clone()),
                Conversation::Group(_) => Some(conversation.key().into()),
            },
        ),
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
    let mut value = Vec::with_capacity(message.json_len_estimate());
    serde_json::to_writer(&mut value, &message).expect("messages serialize");
    let record = Record {
        key: Some(Bytes::copy_from_slice(conversation.key().as_bytes())),
        value: Some(Bytes::from(value)),
        headers: vec![Header {
            key: TYPE_HEADER.into(),
            value: Some(Bytes::from_static(b"chat_message")),
        }],
        timestamp_ms: now_ms,
    };
    (Arc::new(message), record)
}

impl MessageStore {
    /// Makes sure the topic exists and rebuilds the store from it.
    pub async fn open(log: Arc<dyn Log>, spec: &TopicSpec) -> crate::log::Result<MessageStore> {
        let partitions = log.ensure_topic(spec).await?;
        let mut shards = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let mut shard = Shard::default();
            let mut skipped = 0u64;
            let end = scan_partition(log.as_ref(), &spec.name, p, |c| {
                let m = parse(&c);
                if m.is_none() {
                    skipped += 1;
                }
                shard.follow(c.offset, m);
            })
            .await?;
            shard.applied_end = shard.applied_end.max(end);
            if skipped > 0 {
                tracing::warn!(topic = %spec.name, partition = p, skipped, "records that are not chat messages were skipped");
            }
            shards.push(std::sync::Mutex::new(shard));
        }
        Ok(MessageStore {
            inner: Arc::new(Inner {
                log,
                topic: spec.name.clone(),
                partitions,
                queued: GroupQueue::new(partitions),
                shards,
            }),
        })
    }

    fn partition(&self, conversation: &Conversation) -> i32 {
        partition_for_key(conversation.key().as_bytes(), self.inner.partitions)
    }

    /// The offset up to which `partition` has been taken in; a follower of the log starts
    /// reading there.
    pub fn applied_end(&self, partition: i32) -> i64 {
        self.inner.shard(partition).applied_end
    }

    /// Takes in records read from `partition` (in order, continuing from where the reader
    /// started at [`MessageStore::applied_end`]) and returns the new messages among them,
    /// numbered as the log orders them.
    pub fn follow(&self, partition: i32, records: &[Consumed]) -> Vec<Arc<StoredMessage>> {
        let mut out = Vec::new();
        let mut rest = records;
        // Usually the writer took them in moments ago.
        {
            let shard = self.inner.shard(partition);
            while let Some(c) = rest.first() {
                let Some(taken) = shard.recent_at(c.offset) else {
                    break;
                };
                out.extend(taken);
                rest = &rest[1..];
            }
        }
        if rest.is_empty() {
            return out;
        }
        // Parsed outside the lock, which the writer needs.
        let parsed: Vec<(i64, Option<Arc<StoredMessage>>)> =
            rest.iter().map(|c| (c.offset, parse(c))).collect();
        let mut shard = self.inner.shard(partition);
        out.extend(
            parsed
                .into_iter()
                .filter_map(|(offset, m)| shard.follow(offset, m)),
        );
        out
    }

    /// The message the record at `offset` of `partition` made (numbered), when it was
    /// taken in moments ago: `Some(None)` for a record that made none, `None` when the
    /// store does not know (the caller parses the record).
    pub fn recent(&self, partition: i32, offset: i64) -> Option<Option<Arc<StoredMessage>>> {
        self.inner.shard(partition).recent_at(offset)
    }

    /// Appends `draft` as the conversation's next message, or returns the message an
    /// earlier send with the same sender and msg_id made (`true`: it was a repeat).
    pub async fn send(&self, draft: Draft, now_ms: i64) -> Result<(Receipt, bool)> {
        self.send_all(vec![draft], now_ms)
            .await?
            .pop()
            .ok_or(ChatError::Unavailable(LogError::ShuttingDown))
    }

    /// Sends `drafts` in order, as [`MessageStore::send`] does each. Consecutive drafts of
    /// one partition (those of one conversation always are) are appended together: either
    /// all of them are written or none, and an error is returned.
    pub async fn send_all(&self, drafts: Vec<Draft>, now_ms: i64) -> Result<Vec<(Receipt, bool)>> {
        let drafts = drafts.into_iter().map(Addressed::from).collect();
        self.send_groups(vec![drafts], now_ms)
            .await
            .pop()
            .unwrap_or(Ok(Vec::new()))
    }

    /// Sends several groups of drafts at once and answers per group, as
    /// [`MessageStore::send_all`] answers for its drafts: one group failing does not fail
    /// the others.
    pub async fn send_groups(
        &self,
        groups: Vec<Vec<Addressed>>,
        now_ms: i64,
    ) -> Vec<Result<Vec<(Receipt, bool)>>> {
        let mut answers = Vec::with_capacity(groups.len());
        for drafts in groups {
            let mut replies = Vec::with_capacity(drafts.len());
            // Consecutive drafts of one partition (all of them, for one conversation).
            let mut lane: Option<(i32, Vec<Queued>)> = None;
            for Addressed {
                draft,
                conversation,
            } in drafts
            {
                let partition = self.partition(&conversation);
                if lane.as_ref().is_some_and(|(p, _)| *p != partition) {
                    self.queue(lane.take());
                }
                let (reply, answer) = oneshot::channel();
                lane.get_or_insert_with(|| (partition, Vec::new()))
                    .1
                    .push(Queued {
                        draft,
                        conversation,
                        now_ms,
                        reply,
                    });
                replies.push(answer);
            }
            self.queue(lane);
            answers.push(replies);
        }
        let mut out = Vec::with_capacity(answers.len());
        for replies in answers {
            let mut group = Vec::with_capacity(replies.len());
            let mut failed = None;
            for answer in replies {
                match answer
                    .await
                    .unwrap_or(Err(ChatError::Unavailable(LogError::ShuttingDown)))
                {
                    Ok(r) => group.push(r),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            out.push(match failed {
                Some(e) => Err(e),
                None => Ok(group),
            });
        }
        out
    }

    /// Queues a group of drafts on its partition, starting the partition's writer if it
    /// has none.
    fn queue(&self, group: Option<(i32, Vec<Queued>)>) {
        if let Some((partition, group)) = group {
            if self.inner.queued.push(partition, group) {
                tokio::spawn(self.inner.clone().write_queued(partition));
            }
        }
    }

    /// The two users of a 1:1 stream, once it has a message.
    pub async fn parties(&self, stream: &str) -> Option<(Arc<str>, Arc<str>)> {
        let conversation = Conversation::Stream(stream.into());
        let shard = self.inner.shard(self.partition(&conversation));
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
        let wanted: Vec<Placed> = {
            let shard = self.inner.shard(partition);
            let Some(placed) = shard.placed.get(conversation) else {
                return Ok(Vec::new());
            };
            let start = placed.partition_point(|p| p.sequence_number <= since);
            placed[start..].iter().take(limit).copied().collect()
        };
        let mut out = Vec::with_capacity(wanted.len());
        let mut i = 0;
        while i < wanted.len() {
            // One read covers every wanted message up to where it stops.
            let records = self
                .inner
                .log
                .read(
                    &self.inner.topic,
                    partition,
                    wanted[i].offset,
                    256 << 10,
                    Duration::ZERO,
                )
                .await?;
            let before = i;
            for r in records {
                // Skip wanted offsets the log no longer has (retention).
                while i < wanted.len() && wanted[i].offset < r.offset {
                    i += 1;
                }
                if i < wanted.len() && r.offset == wanted[i].offset {
                    if let Some(m) = parse(&r) {
                        let mut m = Arc::unwrap_or_clone(m);
                        m.sequence_number = wanted[i].sequence_number;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn message(sender: &str, msg_id: &str, timestamp: i64) -> Arc<StoredMessage> {
        Arc::new(StoredMessage {
            msg_id: msg_id.into(),
            sender_id: sender.into(),
            receiver_id: Some("bob".into()),
            group_id: None,
            stream_id: Some(stream_id(sender, "bob")),
            content: "hi".into(),
            timestamp,
            sequence_number: 0,
        })
    }

    #[test]
    fn a_repeated_msg_id_is_not_a_new_message_within_the_window_only() {
        let mut shard = Shard::default();
        let first = shard.follow(0, Some(message("alice", "m1", 1_000)));
        assert_eq!(first.map(|m| m.sequence_number), Some(1));
        assert!(shard
            .follow(1, Some(message("alice", "m1", 2_000)))
            .is_none());
        // Another sender's m1 is its own message.
        assert!(shard
            .follow(2, Some(message("carol", "m1", 2_000)))
            .is_some());
        // The log's clock moves past the window: m1 is forgotten, and a record repeating
        // it now is a new message (every reader of the log decides the same way).
        let later = 1_000 + MSG_ID_WINDOW_MS + 1;
        assert!(shard
            .follow(3, Some(message("alice", "m2", later)))
            .is_some());
        assert!(shard.sent("alice", "m1").is_none());
        let again = shard.follow(4, Some(message("alice", "m1", later)));
        assert_eq!(again.map(|m| m.sequence_number), Some(3));
        // A record taken in before is looked up with its derived number.
        let seen = shard.follow(3, Some(message("alice", "m2", later)));
        assert_eq!(seen.map(|m| m.sequence_number), Some(2));
    }

    #[test]
    fn recent_records_are_found_numbered_without_parsing_and_their_memory_is_bounded() {
        let mut shard = Shard::default();
        let n = RECENT_RECORDS as i64 + 10;
        for i in 0..n {
            shard.follow(i, Some(message("alice", &i.to_string(), 1_000)));
        }
        let last = shard.recent_at(n - 1).flatten().expect("the last record");
        assert_eq!(last.sequence_number, n as u64);
        // Read again (by the fan-out), it needs no parsed message.
        let again = shard.follow(n - 1, None).expect("from memory");
        assert!(Arc::ptr_eq(&again, &last));
        // A repeated msg_id made no message, and that is remembered too.
        shard.follow(n, Some(message("alice", "20", 1_000)));
        assert_eq!(shard.recent_at(n).map(|m| m.is_none()), Some(true));
        assert!(shard.follow(n, None).is_none());
        // The oldest fell out; looking one up takes the parsed record again.
        assert_eq!(shard.recent.len(), RECENT_RECORDS);
        assert!(shard.recent_at(5).is_none());
        assert!(shard.follow(5, None).is_none());
        let old = shard.follow(5, Some(message("alice", "5", 1_000)));
        assert_eq!(old.map(|m| m.sequence_number), Some(6));

        // Big messages: at most RECENT_BYTES of content are kept.
        let mut big = Shard::default();
        for i in 0..10 {
            let mut m = message("bob", &i.to_string(), 1_000);
            Arc::make_mut(&mut m).content = "x".repeat(1 << 20).into();
            big.follow(i, Some(m));
        }
        assert_eq!(big.recent.len(), RECENT_BYTES >> 20);
        assert_eq!(big.recent_bytes, RECENT_BYTES);
        assert!(big.recent_at(9).is_some() && big.recent_at(5).is_none());
    }

    #[test]
    fn at_most_msg_id_memory_client_ids_are_remembered() {
        let mut shard = Shard::default();
        for i in 0..MSG_ID_MEMORY as i64 + 10 {
            shard.follow(i, Some(message("alice", &i.to_string(), 1_000)));
        }
        assert_eq!(shard.client_ids.len(), MSG_ID_MEMORY);
        assert!(shard.sent("alice", "9").is_none());
        assert!(shard.sent("alice", "10").is_some());
    }
}
