//! The chat fabric's settings, each with a default.

/// Topic names and limits of the chat fabric.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// HS256 secret for the JWTs of users and services.
    pub jwt_secret: Vec<u8>,
    pub messages_topic: String,
    pub membership_topic: String,
    pub notifications_topic: String,
    pub dlq_topic: String,
    /// Partitions of the chat topics when they are created.
    pub partitions: i32,
    /// Largest message content in bytes.
    pub max_content_bytes: usize,
    /// Largest HTTP request body in bytes.
    pub max_body_bytes: usize,
    pub history_default_limit: usize,
    pub history_max_limit: usize,
}

impl ChatConfig {
    pub fn new(jwt_secret: impl Into<Vec<u8>>) -> Self {
        ChatConfig {
            jwt_secret: jwt_secret.into(),
            messages_topic: "chat.messages".into(),
            membership_topic: "chat.membership".into(),
            notifications_topic: "notifications".into(),
            dlq_topic: "chat.dlq".into(),
            partitions: 8,
            max_content_bytes: 10 * 1024,
            max_body_bytes: 64 * 1024,
            history_default_limit: 100,
            history_max_limit: 1000,
        }
    }
}
