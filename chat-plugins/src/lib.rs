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
//! `metrics` (what `/metrics` shows), `group_commit` (the stores' batched appends),
//! `notifications` (the notifications topic, once per id and user), `forward` (the
//! idempotent forwarder: dedup store, retries, dead letters, and the chat-notification and
//! e-mail targets), `cdc` (Debezium change events in), `plugins` (starting the forwarder
//! targets from the `[chat]` configuration).
//!
//! Invariant: the log is the single source of truth. Every state here is rebuilt from the
//! chat topics on start, and a write is acknowledged only once its append is durable.

pub mod api;
pub mod auth;
pub mod cdc;
mod client_ids;
pub mod config;
pub mod demo;
pub mod error;
pub mod event;
pub mod forward;
pub mod gateway;
pub mod group_commit;
pub mod ids;
pub mod log;
pub mod membership;
pub mod messages;
pub mod metrics;
pub mod notifications;
pub mod plugins;
pub mod scan;

use std::sync::Arc;

/// The hash map of the chat plugins. Its hasher is aHash, keyed at random per map, as
/// std's SipHash is: keys that clients choose (user, message and conversation ids) cannot
/// be picked to collide. It costs a fraction of SipHash on the short keys here, and the
/// per-message paths look up several of them per message.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

pub use config::ChatConfig;

use crate::auth::Verifier;
use crate::log::{Log, TopicSpec};
use crate::membership::MembershipStore;
use crate::messages::MessageStore;
use crate::notifications::NotificationStore;

/// The running chat fabric.
#[derive(Debug)]
pub struct Chat {
    pub config: ChatConfig,
    pub verifier: Verifier,
    pub messages: MessageStore,
    pub membership: MembershipStore,
    pub notifications: NotificationStore,
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
        let notifications = NotificationStore::open(
            log.clone(),
            &TopicSpec {
                name: config.notifications_topic.clone(),
                partitions: config.partitions,
                configs: Vec::new(),
            },
        )
        .await?;
        Ok(Arc::new(Chat {
            verifier: Verifier::new(&config.jwt_secret),
            config,
            messages,
            membership,
            notifications,
        }))
    }

    /// Appends a notification for `user` to the notifications topic (keyed by user, so a
    /// user's notifications stay in order). With an `id`, a repeat of that id is not
    /// appended again. Returns its offset.
    pub async fn notify(
        &self,
        user: &str,
        notification_type: &str,
        payload: &impl serde::Serialize,
        id: Option<&str>,
    ) -> error::Result<i64> {
        let (offset, _) = self
            .notifications
            .notify(user, notification_type, payload, id, now_ms())
            .await?;
        Ok(offset)
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
