//! The `notifications` topic: one record per notification, keyed by user so a user's
//! notifications stay in order. A notification may carry an id (a CDC event's, or the chat
//! notifier's); a second one with the same id is not appended again, so a re-delivered
//! source event notifies once. The ids are rebuilt from the topic on start and kept up
//! with it after (other gateways write it too), the first record of an id being the one
//! that counts.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::event::TYPE_HEADER;
use crate::log::{partition_for_key, Consumed, Header, Log, Record, Result, TopicSpec};
use crate::scan::{read_range, scan_partition};

/// Header carrying a notification's id.
pub const ID_HEADER: &str = "chorus.id";

/// What is known of one partition.
#[derive(Debug, Default)]
struct Part {
    /// Every record below this offset has been taken in.
    applied_end: i64,
    /// Notification id -> the offset of its first record.
    ids: HashMap<String, i64>,
}

impl Part {
    /// Takes in the record at `offset` (in offset order); false when it repeats an id
    /// seen at an earlier offset.
    fn follow(&mut self, offset: i64, id: Option<&str>) -> bool {
        if offset >= self.applied_end {
            self.applied_end = offset + 1;
            if let Some(id) = id {
                return *self.ids.entry(id.to_string()).or_insert(offset) == offset;
            }
            return true;
        }
        id.is_none_or(|id| self.ids.get(id) == Some(&offset))
    }
}

fn id_of(c: &Consumed) -> Option<&str> {
    c.record
        .header(ID_HEADER)
        .and_then(|v| std::str::from_utf8(v).ok())
}

#[derive(Debug)]
pub struct NotificationStore {
    log: Arc<dyn Log>,
    topic: String,
    partitions: i32,
    /// Held only briefly, never across an await.
    parts: Vec<std::sync::Mutex<Part>>,
    /// One writer per partition, held across its append, so two sends of one id from
    /// this process cannot both append.
    writers: Vec<Mutex<()>>,
}

impl NotificationStore {
    pub async fn open(log: Arc<dyn Log>, spec: &TopicSpec) -> Result<NotificationStore> {
        let partitions = log.ensure_topic(spec).await?;
        let mut parts = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let mut part = Part::default();
            let end = scan_partition(log.as_ref(), &spec.name, p, |c| {
                part.follow(c.offset, id_of(&c));
            })
            .await?;
            part.applied_end = part.applied_end.max(end);
            parts.push(std::sync::Mutex::new(part));
        }
        Ok(NotificationStore {
            log,
            topic: spec.name.clone(),
            partitions,
            parts,
            writers: (0..partitions).map(|_| Mutex::new(())).collect(),
        })
    }

    fn part(&self, partition: i32) -> std::sync::MutexGuard<'_, Part> {
        self.parts[partition as usize]
            .lock()
            .expect("notifications lock")
    }

    /// The offset up to which `partition` has been taken in; a follower of the log starts
    /// reading there.
    pub fn applied_end(&self, partition: i32) -> i64 {
        self.part(partition).applied_end
    }

    /// Takes in records read from `partition` (in order, continuing from where the reader
    /// started at [`NotificationStore::applied_end`]) and returns those that are not
    /// repeats of an earlier notification id.
    pub fn follow<'a>(&self, partition: i32, records: &'a [Consumed]) -> Vec<&'a Consumed> {
        let mut part = self.part(partition);
        records
            .iter()
            .filter(|c| part.follow(c.offset, id_of(c)))
            .collect()
    }

    async fn catch_up(&self, partition: i32, until: i64) -> Result<()> {
        let from = self.applied_end(partition);
        if from >= until {
            return Ok(());
        }
        read_range(
            self.log.as_ref(),
            &self.topic,
            partition,
            from,
            until,
            |c| {
                self.part(partition).follow(c.offset, id_of(&c));
            },
        )
        .await
    }

    /// Appends a notification for `user` unless one with the same `id` is already there.
    /// Returns its offset and whether it was there before.
    pub async fn notify(
        &self,
        user: &str,
        notification_type: &str,
        payload: Value,
        id: Option<&str>,
        now_ms: i64,
    ) -> Result<(i64, bool)> {
        let partition = partition_for_key(user.as_bytes(), self.partitions);
        let _turn = self.writers[partition as usize].lock().await;
        let known = |store: &Self| id.and_then(|id| store.part(partition).ids.get(id).copied());
        if let Some(offset) = known(self) {
            return Ok((offset, true));
        }
        if id.is_some() && self.log.shared() {
            // Another gateway may have written this id since: look at the whole log.
            let (_, end) = self.log.offsets(&self.topic, partition).await?;
            self.catch_up(partition, end).await?;
            if let Some(offset) = known(self) {
                return Ok((offset, true));
            }
        }
        let value = serde_json::json!({
            "user_id": user,
            "notification_type": notification_type,
            "payload": payload,
            "timestamp": now_ms,
        });
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
            value: Some(Bytes::from(value.to_string())),
            headers,
            timestamp_ms: now_ms,
        };
        let offset = self
            .log
            .append(&self.topic, partition, vec![record])
            .await?
            .base_offset;
        let behind = {
            let mut part = self.part(partition);
            let behind = part.applied_end < offset;
            if !behind {
                part.follow(offset, id);
            }
            behind
        };
        if behind {
            // Another writer's records came first: take in the log as it is.
            self.catch_up(partition, offset + 1).await?;
        }
        match known(self) {
            Some(first) if first != offset => Ok((first, true)),
            _ => Ok((offset, false)),
        }
    }
}
