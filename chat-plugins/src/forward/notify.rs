//! The chat notifier: a chat message to someone who is not receiving that conversation
//! (no live connection here, or unsubscribed from it) becomes a `chat` notification for
//! them, once per conversation per TTL (6 h by default), so an ongoing conversation
//! notifies once rather than per message.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::dedup::DedupStore;
use super::{
    deliver_all_as_run, deliver_one_as_run, Failure, Outcome, Plan, RetryPolicy, RunAnswers, Target,
};
use crate::event::StoredMessage;
use crate::gateway::Gateway;
use crate::log::{BoxFuture, Consumed, StartFrom};
use crate::notifications::Ready;
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
        if message.stream_id.is_some() == message.group_id.is_some() {
            // Names no conversation: not one the write path makes.
            return Plan::Skip;
        }
        let conversation = || message.conversation().expect("checked above");
        // Whoever is receiving the conversation right now (the common case: everyone)
        // needs no notification. Whoever is not is checked again when the job runs.
        let users = match (&message.receiver_id, &message.group_id) {
            (Some(r), _) => {
                if *r == message.sender_id
                    || self
                        .gateway
                        .all_receiving(std::iter::once(r.as_ref()), conversation)
                {
                    return Plan::Skip;
                }
                vec![r.to_string()]
            }
            (None, Some(g)) => {
                let mut members = self.chat.membership.members(g);
                members.retain(|u| **u != *message.sender_id);
                if self
                    .gateway
                    .all_receiving(members.iter().map(String::as_str), conversation)
                {
                    return Plan::Skip;
                }
                members
            }
            _ => return Plan::Skip,
        };
        let conversation = conversation();
        Plan::Deliver {
            order_key: conversation.key().to_string(),
            dedup: None,
            job: NotifyJob { message, users },
        }
    }

    fn deliver<'a>(&'a self, job: &'a NotifyJob) -> BoxFuture<'a, Result<Outcome, Failure>> {
        Box::pin(deliver_one_as_run(self, job))
    }

    fn deliver_all<'a>(
        &'a self,
        jobs: &'a [&'a NotifyJob],
    ) -> BoxFuture<'a, (Vec<Outcome>, Option<Failure>)> {
        Box::pin(deliver_all_as_run(self, jobs))
    }

    fn delivers_runs(&self) -> bool {
        true
    }

    /// Every notification the runs need goes to the notifications topic at once, and then
    /// the dedup marks of those written at once: two appends per partition for the lot.
    /// A job's users are notified one by one in the sense that counts: a retry after a
    /// partial failure finds the marks of those done and only does the rest.
    fn deliver_runs<'a>(&'a self, runs: &'a [Vec<&'a NotifyJob>]) -> BoxFuture<'a, RunAnswers> {
        Box::pin(async move {
            let now = now_ms();
            // Per notification: the job (run, index in it) and its dedup key.
            let mut wanted: Vec<(usize, usize, String)> = Vec::new();
            let mut ready = Vec::new();
            // Per run: the first job that failed, and why.
            let mut failed: Vec<Option<(usize, Failure)>> = Vec::with_capacity(runs.len());
            for (i, run) in runs.iter().enumerate() {
                failed.push(None);
                // The jobs of a run are of one conversation: a later one needs no
                // notification an earlier one is writing.
                let mut in_run: Vec<String> = Vec::new();
                'jobs: for (j, job) in run.iter().enumerate() {
                    let m = &job.message;
                    let Some(conversation) = m.conversation() else {
                        continue;
                    };
                    for user in self.gateway.not_receiving(&job.users, &conversation) {
                        let key = format!("{}/{user}", conversation.key());
                        if in_run.contains(&key) || self.dedup.seen(Self::NAME, &key, now) {
                            continue;
                        }
                        match self.prepare(m, &user, now) {
                            Ok(r) => ready.push(r),
                            Err(e) => {
                                failed[i] = Some((j, e));
                                break 'jobs;
                            }
                        }
                        in_run.push(key.clone());
                        wanted.push((i, j, key));
                    }
                }
            }
            let written = self.chat.notifications.notify_all(ready).await;
            let mut to_mark = Vec::new();
            for ((i, j, key), result) in wanted.iter().zip(written) {
                match result {
                    Ok(_) => to_mark.push((*i, *j, key.as_str())),
                    Err(e) => fail_at(&mut failed[*i], *j, format!("notification for {key}: {e}")),
                }
            }
            let keys: Vec<&str> = to_mark.iter().map(|(_, _, k)| *k).collect();
            let marked = self.dedup.mark_all(Self::NAME, &keys, self.ttl, now).await;
            for ((i, j, _), result) in to_mark.iter().zip(marked) {
                if let Err(e) = result {
                    fail_at(&mut failed[*i], *j, format!("dedup store: {e}"));
                }
            }
            // A job notified someone (Delivered) or no one (NotNeeded); a run's answer
            // ends at its first failed job.
            let mut notified: Vec<Vec<bool>> = runs.iter().map(|r| vec![false; r.len()]).collect();
            for (i, j, _) in &wanted {
                notified[*i][*j] = true;
            }
            notified
                .into_iter()
                .zip(failed)
                .map(|(jobs, failed)| {
                    let end = failed.as_ref().map_or(jobs.len(), |(j, _)| *j);
                    let outcomes = jobs[..end]
                        .iter()
                        .map(|n| {
                            if *n {
                                Outcome::Delivered
                            } else {
                                Outcome::NotNeeded
                            }
                        })
                        .collect();
                    (outcomes, failed.map(|(_, f)| f))
                })
                .collect()
        })
    }
}

/// Records that job `j` of a run failed, unless an earlier one of the run did.
fn fail_at(failed: &mut Option<(usize, Failure)>, j: usize, reason: String) {
    if failed.as_ref().is_none_or(|(earlier, _)| j < *earlier) {
        *failed = Some((j, Failure::Retry(reason)));
    }
}

impl ChatNotifier {
    /// The `chat` notification of message `m` for `user`, ready to append.
    fn prepare(&self, m: &StoredMessage, user: &str, now: i64) -> Result<Ready, Failure> {
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
        // The id makes a re-run of this job (crash before the dedup mark) append nothing
        // new.
        let id = format!("chat:{}:{}:{user}", m.sender_id, m.msg_id);
        self.chat
            .notifications
            .prepare(user, "chat", &payload, Some(&id), now)
            .map_err(|e| Failure::Retry(format!("notification for {user}: {e}")))
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
