//! The chat fabric's settings, each with a default.

use std::time::Duration;

/// Topic names and limits of the chat fabric.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// HS256 secret for the JWTs of users and services.
    pub jwt_secret: Vec<u8>,
    pub messages_topic: String,
    pub membership_topic: String,
    pub notifications_topic: String,
    pub dlq_topic: String,
    /// Compacted topic of the forwarders' dedup store.
    pub dedup_topic: String,
    /// Compacted topic where gateways sharing a cluster say who is connected to them.
    pub presence_topic: String,
    /// Partitions of the chat topics when they are created.
    pub partitions: i32,
    /// Largest message content in bytes.
    pub max_content_bytes: usize,
    /// Largest HTTP request body in bytes.
    pub max_body_bytes: usize,
    pub history_default_limit: usize,
    pub history_max_limit: usize,
    /// WebSocket: ping interval, and silence after which a connection is closed.
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    /// A pushed message not acked within this is sent again.
    pub ack_timeout: Duration,
    /// Messages per second per user (a token bucket of this size).
    pub rate_limit_per_second: u32,
    /// Frames waiting for one connection before it counts as too slow and is closed.
    pub connection_queue: usize,
    /// `Origin`s allowed to open a WebSocket; empty allows any.
    pub allowed_origins: Vec<String>,
    /// How long the gateway trusts its cached member list of a group.
    pub membership_ttl: Duration,
    /// Malformed frames in a row after which a connection is closed (1008).
    pub max_bad_frames: u32,
    /// Hand out tokens to anyone at `POST /dev/token` (for the demo page). Only for a
    /// server that made up its own secret: such tokens prove nothing.
    pub dev_tokens: bool,
}

impl ChatConfig {
    pub fn new(jwt_secret: impl Into<Vec<u8>>) -> Self {
        ChatConfig {
            jwt_secret: jwt_secret.into(),
            messages_topic: "chat.messages".into(),
            membership_topic: "chat.membership".into(),
            notifications_topic: "notifications".into(),
            dlq_topic: "chat.dlq".into(),
            dedup_topic: "chat.dedup".into(),
            presence_topic: "chat.presence".into(),
            partitions: 8,
            max_content_bytes: 10 * 1024,
            max_body_bytes: 64 * 1024,
            history_default_limit: 100,
            history_max_limit: 1000,
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            ack_timeout: Duration::from_secs(5),
            rate_limit_per_second: 100,
            connection_queue: 1024,
            allowed_origins: Vec::new(),
            membership_ttl: Duration::from_secs(300),
            max_bad_frames: 10,
            dev_tokens: false,
        }
    }
}
