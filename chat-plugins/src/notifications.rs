//! The `notifications` topic: one record per notification, keyed by user so a user's
//! notifications stay in order. A notification may carry an id (a CDC event's, or the chat
//! notifier's); a second one with the same id is not appended again, so a re-delivered
//! source event notifies once. The ids are rebuilt from the topic on start.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::event::TYPE_HEADER;
use crate::log::{partition_for_key, Header, Log, Record, Result, TopicSpec};
use crate::scan::scan_partition;

/// Header carrying a notification's id.
pub const ID_HEADER: &str = "chorus.id";

#[derive(Debug)]
pub struct NotificationStore {
    log: Arc<dyn Log>,
    topic: String,
    partitions: i32,
    /// Per partition: notification id -> its offset. The lock is held across an append,
    /// so two sends of one id cannot both append.
    ids: Vec<Mutex<HashMap<String, i64>>>,
}

impl NotificationStore {
    pub async fn open(log: Arc<dyn Log>, spec: &TopicSpec) -> Result<NotificationStore> {
        let partitions = log.ensure_topic(spec).await?;
        let mut ids = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let mut seen = HashMap::new();
            scan_partition(log.as_ref(), &spec.name, p, |c| {
                if let Some(id) = c
                    .record
                    .header(ID_HEADER)
                    .and_then(|v| std::str::from_utf8(v).ok())
                {
                    seen.insert(id.to_string(), c.offset);
                }
            })
            .await?;
            ids.push(Mutex::new(seen));
        }
        Ok(NotificationStore {
            log,
            topic: spec.name.clone(),
            partitions,
            ids,
        })
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
        let mut ids = self.ids[partition as usize].lock().await;
        if let Some(offset) = id.and_then(|id| ids.get(id)) {
            return Ok((*offset, true));
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
        let appended = self
            .log
            .append(&self.topic, partition, vec![record])
            .await?;
        if let Some(id) = id {
            ids.insert(id.to_string(), appended.base_offset);
        }
        Ok((appended.base_offset, false))
    }
}
