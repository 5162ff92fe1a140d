//! The Chorus chat fabric: HTTP write path, WebSocket gateway, CDC ingest, idempotent forwarder.
//!
//! Written against the narrow log trait in [`log`] (append, read from an offset, join a
//! consumer group, commit) that the broker implements in-process and a Kafka client can
//! implement against an external cluster. This crate must never depend on `chorus-broker`.
//!
//! Modules: `log` (the trait), `scan` (rebuilding state from a topic), `ids` (stream ids),
//! `auth` (HS256 JWTs), `event` (what is stored in the chat topics), `messages` (the write
//! path: sequence numbers, retries by msg_id, history), `membership` (group members from
//! `chat.membership`), `api` (the HTTP API, independent of any HTTP server), `config`,
//! `error` (the protocol's error codes), `gateway` (the WebSocket gateway and its fan-out),
//! `metrics` (what `/metrics` shows).
//!
//! Invariant: the log is the single source of truth. Every state here is rebuilt from the
//! chat topics on start, and a write is acknowledged only once its append is durable.

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod event;
pub mod gateway;
pub mod ids;
pub mod log;
pub mod membership;
pub mod messages;
pub mod metrics;
pub mod scan;

use std::sync::Arc;

pub use config::ChatConfig;

use crate::auth::Verifier;
use crate::log::{Log, TopicSpec};
use crate::membership::MembershipStore;
use crate::messages::MessageStore;

/// The running chat fabric.
#[derive(Debug)]
pub struct Chat {
    pub config: ChatConfig,
    pub verifier: Verifier,
    pub messages: MessageStore,
    pub membership: MembershipStore,
    log: Arc<dyn Log>,
    notification_partitions: i32,
}

impl Chat {
    /// Creates the chat topics when missing and rebuilds the state from them.
    pub async fn start(log: Arc<dyn Log>, config: ChatConfig) -> log::Result<Arc<Chat>> {
        // History and membership are kept for good: the log is their only copy.
        let keep = |name: &str| TopicSpec {
            name: name.to_string(),
            partitions: config.partitions,
            configs: vec![("retention.ms".into(), "-1".into())],
        };
        let messages = MessageStore::open(log.clone(), &keep(&config.messages_topic)).await?;
        let membership =
            MembershipStore::open(log.clone(), &keep(&config.membership_topic)).await?;
        let notification_partitions = log
            .ensure_topic(&TopicSpec {
                name: config.notifications_topic.clone(),
                partitions: config.partitions,
                configs: Vec::new(),
            })
            .await?;
        Ok(Arc::new(Chat {
            verifier: Verifier::new(&config.jwt_secret),
            config,
            messages,
            membership,
            log,
            notification_partitions,
        }))
    }

    /// Appends a notification for `user` to the notifications topic (keyed by user, so a
    /// user's notifications stay in order). Returns its offset.
    pub async fn notify(
        &self,
        user: &str,
        notification_type: &str,
        payload: serde_json::Value,
    ) -> error::Result<i64> {
        let now = now_ms();
        let value = serde_json::json!({
            "user_id": user,
            "notification_type": notification_type,
            "payload": payload,
            "timestamp": now,
        });
        let record = log::Record {
            key: Some(bytes::Bytes::copy_from_slice(user.as_bytes())),
            value: Some(bytes::Bytes::from(value.to_string())),
            headers: vec![log::Header {
                key: event::TYPE_HEADER.into(),
                value: Some(bytes::Bytes::from_static(b"notification")),
            }],
            timestamp_ms: now,
        };
        let partition = log::partition_for_key(user.as_bytes(), self.notification_partitions);
        let appended = self
            .log
            .append(&self.config.notifications_topic, partition, vec![record])
            .await?;
        Ok(appended.base_offset)
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
