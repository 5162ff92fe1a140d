//! What the chat fabric stores in the log (JSON record values) and how it shows them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::ids::Conversation;

/// Record header naming what a record in a chat topic is.
pub const TYPE_HEADER: &str = "type";

/// A chat message as stored in `chat.messages` (keyed by its conversation).
///
/// Its texts are shared (`Arc<str>`) with the draft it came from, the message store's
/// memory and the frames made of it, which copy none of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub msg_id: Arc<str>,
    pub sender_id: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver_id: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<Arc<str>>,
    pub content: Arc<str>,
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
    pub fn frame(&self) -> MessageFrame<'_> {
        MessageFrame {
            content: &self.content,
            group_id: self.group_id.as_deref(),
            msg_id: &self.msg_id,
            recipient: self.receiver_id.as_deref(),
            sender: &self.sender_id,
            sequence_number: self.sequence_number,
            // A group's messages carry the group id as their stream id too.
            stream_id: self.stream_id.as_deref().or(self.group_id.as_deref()),
            timestamp: self.timestamp,
            kind: "message",
        }
    }

    /// The `message` frame as JSON text.
    pub fn frame_text(&self) -> String {
        let mut out = Vec::with_capacity(self.json_len_estimate());
        serde_json::to_writer(&mut out, &self.frame()).expect("frames serialize");
        // serde_json writes only UTF-8.
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    /// About how long the message is as JSON (stored or as a frame), so it is written
    /// into one buffer without growing it.
    pub fn json_len_estimate(&self) -> usize {
        let text = |s: &Option<Arc<str>>| s.as_ref().map_or(0, |s| s.len());
        // The keys, quotes and numbers, plus a margin for escapes.
        160 + self.msg_id.len()
            + self.sender_id.len()
            + text(&self.receiver_id)
            + text(&self.group_id)
            + text(&self.stream_id)
            + self.content.len() * 9 / 8
    }
}

/// A `message` frame, written straight from the message it shows (every pushed message
/// is one, so no JSON tree is built for it). The keys are in alphabetical order, as a
/// `serde_json::Value` writes them.
#[derive(Debug, Serialize)]
pub struct MessageFrame<'a> {
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_id: Option<&'a str>,
    msg_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipient: Option<&'a str>,
    sender: &'a str,
    sequence_number: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_id: Option<&'a str>,
    timestamp: i64,
    #[serde(rename = "type")]
    kind: &'static str,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn message(receiver: Option<&str>, group: Option<&str>, stream: Option<&str>) -> StoredMessage {
        StoredMessage {
            msg_id: "m\"1".into(),
            sender_id: "ann".into(),
            receiver_id: receiver.map(Into::into),
            group_id: group.map(Into::into),
            stream_id: stream.map(Into::into),
            content: "hi \u{1F600} \n there".into(),
            timestamp: 1_732_350_000_123,
            sequence_number: 7,
        }
    }

    #[test]
    fn message_frames_carry_the_protocol_fields_for_streams_and_groups() {
        let m = message(Some("bob"), None, Some("s-ann-bob"));
        let frame: Value = serde_json::from_str(&m.frame_text()).unwrap();
        assert_eq!(
            frame,
            json!({"type": "message", "msg_id": "m\"1", "sender": "ann", "recipient": "bob",
                   "stream_id": "s-ann-bob", "content": "hi \u{1F600} \n there",
                   "timestamp": 1_732_350_000_123i64, "sequence_number": 7})
        );
        let m = message(None, Some("team"), None);
        let frame: Value = serde_json::from_str(&m.frame_text()).unwrap();
        assert_eq!(
            frame,
            json!({"type": "message", "msg_id": "m\"1", "sender": "ann", "group_id": "team",
                   "stream_id": "team", "content": "hi \u{1F600} \n there",
                   "timestamp": 1_732_350_000_123i64, "sequence_number": 7})
        );
    }
}
