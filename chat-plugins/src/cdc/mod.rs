//! CDC ingest: change events in Debezium's formats, read from configured topics, become
//! chat messages or notifications on the canonical topics.
//!
//! Each `[[chat.cdc]]` entry runs as a forwarder target (`chorus.cdc.<topic>` consumer
//! group), so the source offsets are committed only once the output is durable, failures
//! of the log are retried with backoff, and an event that cannot be read or mapped goes to
//! the dead-letter topic with the reason while the plugin keeps going.
//!
//! Exactly-once effect: a message takes its id from the row (or the outbox event id, or the
//! event's position in the source topic), and the write path answers a repeated id with the
//! original message; notifications carry the same kind of id and are appended once per id.
//! An event read twice (after a crash before the commit) therefore makes one message.

pub mod envelope;
pub mod mapping;

use std::sync::Arc;

use crate::error::ChatError;
use crate::forward::{
    deliver_all_as_run, deliver_one_as_run, Failure, Outcome, Plan, RunAnswers, Target,
};
use crate::ids::Conversation;
use crate::log::{BoxFuture, Consumed, StartFrom};
use crate::messages::Addressed;
use crate::notifications::Ready;
use crate::{now_ms, Chat};
use envelope::Change;
pub use mapping::{CdcMapping, Kind, Output};

/// A mapped event, with its message's conversation worked out once.
#[derive(Debug)]
pub struct CdcJob {
    output: Output,
    conversation: Option<Conversation>,
}

#[derive(Debug)]
pub struct CdcTarget {
    name: String,
    mapping: CdcMapping,
    chat: Arc<Chat>,
}

impl CdcTarget {
    pub fn new(mapping: CdcMapping, chat: Arc<Chat>) -> CdcTarget {
        CdcTarget {
            name: format!("cdc.{}", mapping.topic),
            mapping,
            chat,
        }
    }
}

/// A chat error as a forwarder failure: only an unavailable log is worth retrying.
fn failure(e: ChatError) -> Failure {
    match e {
        ChatError::Unavailable(e) => Failure::Retry(format!("the log refused the write: {e}")),
        other => Failure::Permanent(format!("{}: {other}", other.code())),
    }
}

impl CdcTarget {
    /// The drafts of the messages at the front of `run`, checked: up to the first
    /// notification, or the first that fails its checks (which fails on its own when the
    /// rest have gone). An error when the first one fails them.
    async fn drafts(&self, run: &[&CdcJob]) -> Result<Vec<Addressed>, Failure> {
        let mut drafts = Vec::new();
        for job in run {
            let Output::Message(draft) = &job.output else {
                break;
            };
            if let Err(e) = self.chat.check(draft).await {
                if drafts.is_empty() {
                    return Err(failure(e));
                }
                break;
            }
            drafts.push(Addressed {
                draft: draft.clone(),
                // Worked out in the plan; a job built otherwise still gets its own.
                conversation: job
                    .conversation
                    .clone()
                    .unwrap_or_else(|| draft.conversation()),
            });
        }
        Ok(drafts)
    }

    /// The notifications at the front of `run`, ready to append: up to the first message,
    /// or the first whose payload cannot be written (an error when it is the first).
    fn notifications(&self, run: &[&CdcJob], now: i64) -> Result<Vec<Ready>, Failure> {
        let mut ready = Vec::new();
        for CdcJob { output: job, .. } in run {
            let Output::Notification {
                id,
                user,
                notification_type,
                payload,
            } = job
            else {
                break;
            };
            match self
                .chat
                .notifications
                .prepare(user, notification_type, payload, Some(id), now)
            {
                Ok(r) => ready.push(r),
                Err(e) if ready.is_empty() => return Err(failure(ChatError::Unavailable(e))),
                Err(_) => break,
            }
        }
        Ok(ready)
    }
}

impl Target for CdcTarget {
    type Job = CdcJob;

    fn name(&self) -> &str {
        &self.name
    }

    fn topics(&self) -> Vec<String> {
        vec![self.mapping.topic.clone()]
    }

    fn start_from(&self) -> StartFrom {
        StartFrom::Earliest
    }

    fn plan(&self, record: &Consumed) -> Plan<CdcJob> {
        let (row, table) = match envelope::parse(&record.record) {
            Err(e) => return Plan::Reject(e.to_string()),
            Ok(Change::Other { .. }) => return Plan::Skip,
            Ok(Change::Insert { row, table }) => (row, table),
        };
        if let (Some(wanted), Some(table)) = (&self.mapping.table, &table) {
            if wanted != table {
                return Plan::Skip;
            }
        }
        let position = || {
            format!(
                "cdc:{}:{}:{}",
                record.topic, record.partition, record.offset
            )
        };
        match self.mapping.map_at(&row, position) {
            Err(reason) => Plan::Reject(reason),
            Ok(output) => {
                // One conversation (or user) in order; the rest side by side.
                let (conversation, order_key) = match &output {
                    Output::Message(d) => {
                        let c = d.conversation();
                        let key = c.key().to_string();
                        (Some(c), key)
                    }
                    Output::Notification { user, .. } => (None, format!("user:{user}")),
                };
                Plan::Deliver {
                    order_key,
                    dedup: None,
                    job: CdcJob {
                        output,
                        conversation,
                    },
                }
            }
        }
    }

    fn delivers_runs(&self) -> bool {
        true
    }

    /// Every run's messages go to the write path at once (each run, one conversation's, in
    /// one append: all or none), and every run's notifications to the notifications topic
    /// at once. A run stops at its first job that fails its checks.
    fn deliver_runs<'a>(&'a self, runs: &'a [Vec<&'a CdcJob>]) -> BoxFuture<'a, RunAnswers> {
        Box::pin(async move {
            let mut answers: RunAnswers = Vec::with_capacity(runs.len());
            // (run, its drafts) and (run, its notifications, prepared).
            let mut messages = Vec::new();
            let mut notifications = Vec::new();
            let now = now_ms();
            for (i, run) in runs.iter().enumerate() {
                answers.push((Vec::new(), None));
                let prepared = match run.first().map(|j| &j.output) {
                    Some(Output::Message(_)) => {
                        self.drafts(run).await.map(|d| messages.push((i, d)))
                    }
                    Some(Output::Notification { .. }) => self
                        .notifications(run, now)
                        .map(|n| notifications.push((i, n))),
                    None => Ok(()),
                };
                if let Err(f) = prepared {
                    answers[i].1 = Some(f);
                }
            }
            let (runs_of, groups): (Vec<usize>, Vec<_>) = messages.into_iter().unzip();
            let sent = self.chat.messages.send_groups(groups, now).await;
            for (i, result) in runs_of.into_iter().zip(sent) {
                match result {
                    Ok(receipts) => answers[i].0 = vec![Outcome::Delivered; receipts.len()],
                    Err(e) => answers[i].1 = Some(failure(e)),
                }
            }
            let lengths: Vec<(usize, usize)> =
                notifications.iter().map(|(i, n)| (*i, n.len())).collect();
            let all = notifications.into_iter().flat_map(|(_, n)| n).collect();
            let mut written = self.chat.notifications.notify_all(all).await.into_iter();
            for (i, n) in lengths {
                for result in written.by_ref().take(n) {
                    if answers[i].1.is_some() {
                        continue;
                    }
                    match result {
                        Ok(_) => answers[i].0.push(Outcome::Delivered),
                        Err(e) => answers[i].1 = Some(failure(ChatError::Unavailable(e))),
                    }
                }
            }
            answers
        })
    }

    fn deliver_all<'a>(
        &'a self,
        jobs: &'a [&'a CdcJob],
    ) -> BoxFuture<'a, (Vec<Outcome>, Option<Failure>)> {
        Box::pin(deliver_all_as_run(self, jobs))
    }

    fn deliver<'a>(&'a self, job: &'a CdcJob) -> BoxFuture<'a, Result<Outcome, Failure>> {
        Box::pin(deliver_one_as_run(self, job))
    }
}

#[cfg(test)]
mod tests;
