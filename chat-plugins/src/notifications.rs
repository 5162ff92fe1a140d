//! The `notifications` topic: one record per notification, keyed by user so a user's
//! notifications stay in order. A notification may carry an id (a CDC event's, or the chat
//! notifier's); a second one for the same user with the same id is not appended again, so
//! a re-delivered source event notifies once. The ids are rebuilt from the topic on start and kept up
//! with it after (other gateways write it too), the first record of an id being the one
//! that counts. Concurrent notifications share one durable append per partition
//! ([`crate::group_commit`]).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::event::TYPE_HEADER;
use crate::group_commit::GroupQueue;
use crate::log::{partition_for_key, Consumed, Header, Log, LogError, Record, Result, TopicSpec};
use crate::scan::{read_range, scan_partition};
use crate::HashMap;

/// Header carrying a notification's id.
pub const ID_HEADER: &str = "chorus.id";

/// What is known of one partition.
#[derive(Debug, Default)]
struct Part {
    /// Every record below this offset has been taken in.
    applied_end: i64,
    /// Notification id (scoped to its user) -> the offset of its first record.
    ids: HashMap<String, i64>,
    /// Offsets taken in that repeat an earlier record's id. Rare (two writers racing with
    /// one id): a reader of records already taken in looks here instead of working out
    /// and looking up each record's id.
    repeats: BTreeSet<i64>,
    /// The offset ranges (first, last) this process appended lately, oldest first: their
    /// records were written by [`NotificationStore::prepare`], so each is keyed by the
    /// user its value names.
    own: VecDeque<(i64, i64)>,
}

/// Most ranges a partition keeps in [`Part::own`] (the fan-out reads them moments after
/// they are appended).
const OWN_RANGES: usize = 1024;

impl Part {
    /// Takes in the record at `offset` (in offset order); false when it repeats an id
    /// seen at an earlier offset. The id is asked for only for a record not taken in yet.
    fn follow(&mut self, offset: i64, id: impl FnOnce() -> Option<String>) -> bool {
        if offset < self.applied_end {
            return !self.repeats.contains(&offset);
        }
        self.applied_end = offset + 1;
        let Some(id) = id() else {
            return true;
        };
        let first = *self.ids.entry(id).or_insert(offset) == offset;
        if !first {
            self.repeats.insert(offset);
        }
        first
    }

    fn appended_here(&mut self, first: i64, last: i64) {
        if self.own.len() == OWN_RANGES {
            self.own.pop_front();
        }
        self.own.push_back((first, last));
    }

    fn is_own(&self, offset: i64) -> bool {
        let i = self.own.partition_point(|(_, last)| *last < offset);
        self.own.get(i).is_some_and(|(first, _)| *first <= offset)
    }
}

/// An id counts per user: two users' notifications may carry the same id.
fn scoped_id(user: &str, id: &str) -> String {
    format!("{user}\u{1f}{id}")
}

/// The record's user-scoped notification id, if it has one.
fn id_of(c: &Consumed) -> Option<String> {
    let id = std::str::from_utf8(c.record.header(ID_HEADER)?).ok()?;
    let user = String::from_utf8_lossy(c.record.key.as_deref().unwrap_or_default());
    Some(scoped_id(&user, id))
}

/// A notification's record value (keys in alphabetical order, as earlier versions wrote
/// them from a JSON tree).
#[derive(Serialize)]
struct Stored<'a, P: Serialize> {
    notification_type: &'a str,
    payload: &'a P,
    timestamp: i64,
    user_id: &'a str,
}

/// Where a queued notification gets its answer: (offset, whether the id was there before).
type Reply = oneshot::Sender<Result<(i64, bool)>>;

/// A notification waiting for its partition's writer.
#[derive(Debug)]
struct Pending {
    /// Scoped to the user ([`scoped_id`]).
    id: Option<String>,
    record: Record,
    reply: Reply,
}

impl Pending {
    fn weight(&self) -> usize {
        self.record.value.as_ref().map_or(0, |v| v.len()) + 100
    }
}

/// The notifications topic, with the ids it holds.
#[derive(Debug)]
pub struct NotificationStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    log: Arc<dyn Log>,
    topic: String,
    partitions: i32,
    /// Held only briefly, never across an await.
    parts: Vec<std::sync::Mutex<Part>>,
    /// Group commit. A partition has one writer at a time, so two notifications with one
    /// id from this process cannot both be appended.
    queued: GroupQueue<Pending>,
}

impl NotificationStore {
    pub async fn open(log: Arc<dyn Log>, spec: &TopicSpec) -> Result<NotificationStore> {
        let partitions = log.ensure_topic(spec).await?;
        let mut parts = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let mut part = Part::default();
            let end = scan_partition(log.as_ref(), &spec.name, p, |c| {
                part.follow(c.offset, || id_of(&c));
            })
            .await?;
            part.applied_end = part.applied_end.max(end);
            parts.push(std::sync::Mutex::new(part));
        }
        Ok(NotificationStore {
            inner: Arc::new(Inner {
                log,
                topic: spec.name.clone(),
                partitions,
                parts,
                queued: GroupQueue::new(partitions),
            }),
        })
    }

    /// The offset up to which `partition` has been taken in; a follower of the log starts
    /// reading there.
    pub fn applied_end(&self, partition: i32) -> i64 {
        self.inner.part(partition).applied_end
    }

    /// Takes in records read from `partition` (in order, continuing from where the reader
    /// started at [`NotificationStore::applied_end`]) and returns those that are not
    /// repeats of an earlier notification id, each with whether this process appended it
    /// lately (then its key is the user its value names).
    pub fn follow<'a>(&self, partition: i32, records: &'a [Consumed]) -> Vec<(&'a Consumed, bool)> {
        let mut part = self.inner.part(partition);
        records
            .iter()
            .filter_map(|c| {
                let new = part.follow(c.offset, || id_of(c));
                new.then(|| (c, part.is_own(c.offset)))
            })
            .collect()
    }

    /// Appends a notification for `user` unless one with the same `id` is already there.
    /// Returns its offset and whether it was there before. Concurrent notifications share
    /// one durable append per partition.
    pub async fn notify(
        &self,
        user: &str,
        notification_type: &str,
        payload: &impl Serialize,
        id: Option<&str>,
        now_ms: i64,
    ) -> Result<(i64, bool)> {
        let ready = self.prepare(user, notification_type, payload, id, now_ms)?;
        self.notify_all(vec![ready])
            .await
            .pop()
            .unwrap_or(Err(LogError::ShuttingDown))
    }

    /// A notification written out for [`NotificationStore::notify_all`] (the payload as
    /// JSON, the record built), or the offset of the one with its id when it is there.
    pub fn prepare(
        &self,
        user: &str,
        notification_type: &str,
        payload: &impl Serialize,
        id: Option<&str>,
        now_ms: i64,
    ) -> Result<Ready> {
        let partition = partition_for_key(user.as_bytes(), self.inner.partitions);
        let scoped = id.map(|id| scoped_id(user, id));
        if let Some(offset) = scoped
            .as_deref()
            .and_then(|id| self.inner.known(partition, id))
        {
            return Ok(Ready(Written::Known(offset)));
        }
        let value = serde_json::to_vec(&Stored {
            notification_type,
            payload,
            timestamp: now_ms,
            user_id: user,
        })
        .map_err(|e| {
            LogError::Backend(format!("the payload cannot be written as JSON: {e}").into())
        })?;
        let mut headers = vec![Header {
            key: TYPE_HEADER.into(),
            value: Some(Bytes::from_static(b"notification")),
        }];
        if let Some(id) = id {
            headers.push(Header {
                key: ID_HEADER.into(),
                value: Some(Bytes::copy_from_slice(id.as_bytes())),
            });
        }
        let record = Record {
            key: Some(Bytes::copy_from_slice(user.as_bytes())),
            value: Some(Bytes::from(value)),
            headers,
            timestamp_ms: now_ms,
        };
        Ok(Ready(Written::New {
            partition,
            id: scoped,
            record,
        }))
    }

    /// Appends prepared notifications (each as [`NotificationStore::notify`] would) and
    /// answers each. Those of a partition share its next durable append.
    pub async fn notify_all(&self, notifications: Vec<Ready>) -> Vec<Result<(i64, bool)>> {
        let mut answers = Vec::with_capacity(notifications.len());
        for Ready(written) in notifications {
            let (reply, answer) = oneshot::channel();
            match written {
                Written::Known(offset) => {
                    let _ = reply.send(Ok((offset, true)));
                }
                Written::New {
                    partition,
                    id,
                    record,
                } => {
                    let pending = Pending { id, record, reply };
                    if self.inner.queued.push(partition, vec![pending]) {
                        tokio::spawn(self.inner.clone().write_queued(partition));
                    }
                }
            }
            answers.push(answer);
        }
        let mut out = Vec::with_capacity(answers.len());
        for answer in answers {
            out.push(answer.await.unwrap_or(Err(LogError::ShuttingDown)));
        }
        out
    }
}

/// A notification ready to be appended ([`NotificationStore::prepare`]).
#[derive(Debug)]
pub struct Ready(Written);

#[derive(Debug)]
enum Written {
    /// A notification with its id is in the topic at this offset.
    Known(i64),
    New {
        partition: i32,
        /// Scoped to the user ([`scoped_id`]).
        id: Option<String>,
        record: Record,
    },
}

impl Inner {
    fn part(&self, partition: i32) -> std::sync::MutexGuard<'_, Part> {
        self.parts[partition as usize]
            .lock()
            .expect("notifications lock")
    }

    /// The offset of the first record with `id`, if it has been taken in.
    fn known(&self, partition: i32, id: &str) -> Option<i64> {
        self.part(partition).ids.get(id).copied()
    }

    async fn catch_up(&self, partition: i32, until: i64) -> Result<()> {
        let from = self.part(partition).applied_end;
        read_range(
            self.log.as_ref(),
            &self.topic,
            partition,
            from,
            until,
            |c| {
                self.part(partition).follow(c.offset, || id_of(&c));
            },
        )
        .await
    }

    async fn write_queued(self: Arc<Self>, partition: i32) {
        self.queued
            .write_queued(partition, Pending::weight, |batch| {
                self.write_batch(partition, batch)
            })
            .await;
    }

    async fn write_batch(&self, partition: i32, batch: Vec<Pending>) {
        let fail = |replies: Vec<Reply>, e: &LogError| {
            let text = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(LogError::Backend(text.clone().into())));
            }
        };
        if self.log.shared() && batch.iter().any(|p| p.id.is_some()) {
            // Another gateway may have written these ids since: look at the whole log.
            let caught_up = match self.log.offsets(&self.topic, partition).await {
                Ok((_, end)) => self.catch_up(partition, end).await,
                Err(e) => Err(e),
            };
            if let Err(e) = caught_up {
                fail(batch.into_iter().map(|p| p.reply).collect(), &e);
                return;
            }
        }
        // An id already in the log, or earlier in this batch, is not appended again.
        let mut fresh: Vec<(Option<String>, Reply)> = Vec::new();
        let mut records = Vec::new();
        let mut repeats: Vec<(usize, Reply)> = Vec::new();
        {
            let part = self.part(partition);
            let mut in_batch: HashMap<String, usize> = HashMap::default();
            for p in batch {
                if let Some(id) = &p.id {
                    if let Some(&offset) = part.ids.get(id) {
                        let _ = p.reply.send(Ok((offset, true)));
                        continue;
                    }
                    if let Some(&i) = in_batch.get(id) {
                        repeats.push((i, p.reply));
                        continue;
                    }
                    in_batch.insert(id.clone(), fresh.len());
                }
                records.push(p.record);
                fresh.push((p.id, p.reply));
            }
        }
        if records.is_empty() {
            return;
        }
        let appended = match self.log.append(&self.topic, partition, records).await {
            Ok(a) => a,
            Err(e) => {
                let replies = fresh.into_iter().map(|(_, r)| r);
                fail(
                    replies.chain(repeats.into_iter().map(|(_, r)| r)).collect(),
                    &e,
                );
                return;
            }
        };
        let offsets = appended.offsets;
        let taken_in = {
            let mut part = self.part(partition);
            let together = offsets.windows(2).all(|w| w[1] == w[0] + 1);
            if together && part.applied_end >= appended.base_offset {
                for ((id, _), offset) in fresh.iter().zip(&offsets) {
                    part.follow(*offset, || id.clone());
                }
                if let (Some(&first), Some(&last)) = (offsets.first(), offsets.last()) {
                    part.appended_here(first, last);
                }
                true
            } else {
                false
            }
        };
        if !taken_in {
            // Another writer's records came before or among ours: take in the log as it is.
            if let Err(e) = self.catch_up(partition, appended.last_offset + 1).await {
                // Written; a retry with the same id finds them.
                let replies = fresh.into_iter().map(|(_, r)| r);
                fail(
                    replies.chain(repeats.into_iter().map(|(_, r)| r)).collect(),
                    &e,
                );
                return;
            }
        }
        // A record whose id another writer got in first is answered with that one.
        let answers: Vec<(i64, bool)> = {
            let part = self.part(partition);
            fresh
                .iter()
                .zip(&offsets)
                .map(
                    |((id, _), &offset)| match id.as_ref().and_then(|id| part.ids.get(id)) {
                        Some(&first) if first != offset => (first, true),
                        _ => (offset, false),
                    },
                )
                .collect()
        };
        for (i, reply) in repeats {
            let _ = reply.send(Ok((answers[i].0, true)));
        }
        for ((_, reply), answer) in fresh.into_iter().zip(answers) {
            let _ = reply.send(Ok(answer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_id_is_known_by_its_offset_when_read_again() {
        let mut part = Part::default();
        let id = |s: &'static str| move || Some(s.to_string());
        assert!(part.follow(0, id("u\u{1f}a")));
        assert!(part.follow(1, || None));
        // Another writer's record with the same id, after ours.
        assert!(!part.follow(2, id("u\u{1f}a")));
        assert!(part.follow(3, id("v\u{1f}a")));
        assert_eq!(part.applied_end, 4);
        // Read again (the fan-out, behind the writer): the same answers, without the ids.
        let unasked = || -> Option<String> { panic!("the id was worked out again") };
        let again: Vec<bool> = (0..4).map(|o| part.follow(o, unasked)).collect();
        assert_eq!(again, [true, true, false, true]);
        assert_eq!(part.ids.get("u\u{1f}a"), Some(&0));
    }

    #[test]
    fn the_ranges_appended_here_are_known_and_bounded() {
        let mut part = Part::default();
        part.appended_here(3, 5);
        part.appended_here(8, 8);
        let own: Vec<i64> = (0..10).filter(|&o| part.is_own(o)).collect();
        assert_eq!(own, [3, 4, 5, 8]);
        for i in 0..OWN_RANGES as i64 {
            part.appended_here(10 + i, 10 + i);
        }
        assert_eq!(part.own.len(), OWN_RANGES);
        assert!(!part.is_own(3) && !part.is_own(8) && part.is_own(10));
    }
}
