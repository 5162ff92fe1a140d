//! The chat notifier: a chat message to someone who is not receiving that conversation
//! (no live connection here, or unsubscribed from it) becomes a `chat` notification for
//! them, once per conversation per TTL (6 h by default), so an ongoing conversation
//! notifies once rather than per message.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::dedup::DedupStore;
use super::{Failure, Outcome, Plan, RetryPolicy, Target};
use crate::event::StoredMessage;
use crate::gateway::Gateway;
use crate::log::{BoxFuture, Consumed, StartFrom};
use crate::{now_ms, Chat};

/// `[chat.notify]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    pub enabled: bool,
    /// One notification per conversation and user within this many seconds.
    pub dedup_seconds: u64,
    /// Messages older than this are not notified (the plugin reads the topic from the
    /// start when its group is new, so it sees the first messages after a fresh start).
    pub max_age_seconds: u64,
    pub retry: Option<RetryPolicy>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            enabled: true,
            dedup_seconds: 6 * 3600,
            max_age_seconds: 600,
            retry: None,
        }
    }
}

/// Characters of the message shown in the notification.
const PREVIEW_CHARS: usize = 140;

/// The first [`PREVIEW_CHARS`] characters of `content`.
fn preview(content: &str) -> &str {
    let end = content
        .char_indices()
        .nth(PREVIEW_CHARS)
        .map_or(content.len(), |(i, _)| i);
    &content[..end]
}

/// A `chat` notification's payload: the conversation (its stream, or else its group),
/// who wrote, and the start of the message.
#[derive(Debug, Serialize)]
struct ChatPayload<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    group_id: Option<&'a str>,
    msg_id: &'a str,
    preview: &'a str,
    sender_id: &'a str,
    sequence_number: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_id: Option<&'a str>,
}

#[derive(Debug)]
pub struct ChatNotifier {
    chat: Arc<Chat>,
    gateway: Arc<Gateway>,
    dedup: Arc<DedupStore>,
    ttl: Duration,
    max_age_ms: i64,
}

#[derive(Debug)]
pub struct NotifyJob {
    message: Arc<StoredMessage>,
    /// Who may need a notification: the receiver, or the group's other members.
    users: Vec<String>,
}

impl ChatNotifier {
    pub const NAME: &'static str = "notify";

    pub fn new(
        chat: Arc<Chat>,
        gateway: Arc<Gateway>,
        dedup: Arc<DedupStore>,
        config: &NotifyConfig,
    ) -> Self {
        ChatNotifier {
            chat,
            gateway,
            dedup,
            ttl: Duration::from_secs(config.dedup_seconds),
            max_age_ms: config.max_age_seconds.saturating_mul(1000) as i64,
        }
    }
}

impl Target for ChatNotifier {
    type Job = NotifyJob;

    fn name(&self) -> &str {
        Self::NAME
    }

    fn topics(&self) -> Vec<String> {
        vec![self.chat.config.messages_topic.clone()]
    }

    fn start_from(&self) -> StartFrom {
        // Not Latest: a new group's first assignment comes a moment after the start, and
        // the messages sent in that moment must notify too. Old ones are skipped by age.
        StartFrom::Earliest
    }

    fn plan(&self, record: &Consumed) -> Plan<NotifyJob> {
        if record.record.timestamp_ms < now_ms() - self.max_age_ms {
            return Plan::Skip;
        }
        // The write path took the message in moments ago, as a rule; else it is parsed.
        let message = match self.chat.messages.recent(record.partition, record.offset) {
            Some(taken) => taken,
            None => record
                .record
                .value
                .as_deref()
                .and_then(|v| serde_json::from_slice::<StoredMessage>(v).ok())
                .map(Arc::new),
        };
        let Some(message) = message else {
            return Plan::Skip;
        };
        let Some(conversation) = message.conversation() else {
            return Plan::Skip;
        };
        let mut users = match (&message.receiver_id, &message.group_id) {
            (Some(r), _) => vec![r.clone()],
            (None, Some(g)) => self.chat.membership.members(g),
            _ => Vec::new(),
        };
        users.retain(|u| *u != message.sender_id);
        // Everyone is receiving the conversation right now (the common case): nothing to
        // queue. Whoever is not is checked again when the job runs.
        if self.gateway.not_receiving(&users, &conversation).is_empty() {
            return Plan::Skip;
        }
        Plan::Deliver {
            order_key: conversation.key().to_string(),
            dedup: None,
            job: NotifyJob { message, users },
        }
    }

    fn deliver<'a>(&'a self, job: &'a NotifyJob) -> BoxFuture<'a, Result<Outcome, Failure>> {
        Box::pin(async move {
            let m = &job.message;
            let Some(conversation) = m.conversation() else {
                return Ok(Outcome::NotNeeded);
            };
            let absent = self.gateway.not_receiving(&job.users, &conversation);
            let mut notified = 0;
            for user in absent {
                // Per user, so a retry after a partial failure only does the rest.
                let key = format!("{}/{user}", conversation.key());
                if self.dedup.seen(Self::NAME, &key, now_ms()) {
                    continue;
                }
                let payload = ChatPayload {
                    group_id: match m.stream_id {
                        Some(_) => None,
                        None => m.group_id.as_deref(),
                    },
                    msg_id: &m.msg_id,
                    preview: preview(&m.content),
                    sender_id: &m.sender_id,
                    sequence_number: m.sequence_number,
                    stream_id: m.stream_id.as_deref(),
                };
                // The id makes a re-run of this job (crash before the dedup mark) append
                // nothing new.
                let id = format!("chat:{}:{}:{user}", m.sender_id, m.msg_id);
                self.chat
                    .notify(&user, "chat", &payload, Some(&id))
                    .await
                    .map_err(|e| Failure::Retry(format!("notification for {user}: {e}")))?;
                self.dedup
                    .mark(Self::NAME, &key, self.ttl, now_ms())
                    .await
                    .map_err(|e| Failure::Retry(format!("dedup store: {e}")))?;
                notified += 1;
            }
            Ok(if notified > 0 {
                Outcome::Delivered
            } else {
                Outcome::NotNeeded
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preview_is_the_first_characters_whole() {
        assert_eq!(preview("short"), "short");
        let long: String = "é€😀x".repeat(50);
        let cut = preview(&long);
        assert_eq!(cut.chars().count(), PREVIEW_CHARS);
        assert!(long.starts_with(cut));
    }
}
