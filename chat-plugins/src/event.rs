//! What the chat fabric stores in the log (JSON record values) and how it shows them.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::ids::Conversation;

/// Record header naming what a record in a chat topic is.
pub const TYPE_HEADER: &str = "type";

/// A chat message as stored in `chat.messages` (keyed by its conversation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub msg_id: String,
    pub sender_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    pub content: String,
    /// Server time of the append, in ms.
    pub timestamp: i64,
    /// Position in the conversation: 1, 2, 3, ... without gaps.
    pub sequence_number: u64,
}

impl StoredMessage {
    pub fn conversation(&self) -> Option<Conversation> {
        match (&self.stream_id, &self.group_id) {
            (Some(s), None) => Some(Conversation::Stream(s.clone())),
            (None, Some(g)) => Some(Conversation::Group(g.clone())),
            _ => None,
        }
    }

    /// The `message` frame pushed on the WebSocket and listed by the history API.
    pub fn frame(&self) -> Value {
        let mut frame = json!({
            "type": "message",
            "msg_id": self.msg_id,
            "sender": self.sender_id,
            "content": self.content,
            "timestamp": self.timestamp,
            "sequence_number": self.sequence_number,
        });
        if let Some(r) = &self.receiver_id {
            frame["recipient"] = json!(r);
        }
        if let Some(g) = &self.group_id {
            frame["group_id"] = json!(g);
            frame["stream_id"] = json!(g);
        }
        if let Some(s) = &self.stream_id {
            frame["stream_id"] = json!(s);
        }
        frame
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MembershipChange {
    Join,
    Leave,
}

/// A membership event as stored in `chat.membership` (keyed by group id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipEvent {
    pub group_id: String,
    pub user_id: String,
    pub event_type: MembershipChange,
    pub timestamp: i64,
}

impl MembershipEvent {
    /// The `membership_change` frame.
    pub fn frame(&self) -> Value {
        json!({
            "type": "membership_change",
            "group_id": self.group_id,
            "user_id": self.user_id,
            "event_type": self.event_type,
            "timestamp": self.timestamp,
        })
    }
}
