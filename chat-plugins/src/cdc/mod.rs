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
use crate::forward::{Failure, Outcome, Plan, Target};
use crate::log::{BoxFuture, Consumed, StartFrom};
use crate::{now_ms, Chat};
use envelope::Change;
pub use mapping::{CdcMapping, Kind, Output};

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

impl Target for CdcTarget {
    type Job = Output;

    fn name(&self) -> &str {
        &self.name
    }

    fn topics(&self) -> Vec<String> {
        vec![self.mapping.topic.clone()]
    }

    fn start_from(&self) -> StartFrom {
        StartFrom::Earliest
    }

    fn plan(&self, record: &Consumed) -> Plan<Output> {
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
            Ok(output) => Plan::Deliver {
                // One conversation (or user) in order; the rest side by side.
                order_key: match &output {
                    Output::Message(d) => d.conversation().key().to_string(),
                    Output::Notification { user, .. } => format!("user:{user}"),
                },
                dedup: None,
                job: output,
            },
        }
    }

    /// The messages at the front go to the log in one append (all or none); a
    /// notification goes alone.
    fn deliver_all<'a>(
        &'a self,
        jobs: &'a [&'a Output],
    ) -> BoxFuture<'a, (Vec<Outcome>, Option<Failure>)> {
        Box::pin(async move {
            let mut drafts = Vec::new();
            for job in jobs {
                let Output::Message(draft) = job else {
                    break;
                };
                if let Err(e) = self.chat.check(draft).await {
                    if drafts.is_empty() {
                        return (Vec::new(), Some(failure(e)));
                    }
                    // The ones before it go now; it fails on its own next time.
                    break;
                }
                drafts.push(draft.clone());
            }
            if drafts.is_empty() {
                return match self.deliver(jobs[0]).await {
                    Ok(outcome) => (vec![outcome], None),
                    Err(f) => (Vec::new(), Some(f)),
                };
            }
            let n = drafts.len();
            match self.chat.messages.send_all(drafts, now_ms()).await {
                Ok(_) => (vec![Outcome::Delivered; n], None),
                Err(e) => (Vec::new(), Some(failure(e))),
            }
        })
    }

    fn deliver<'a>(&'a self, job: &'a Output) -> BoxFuture<'a, Result<Outcome, Failure>> {
        Box::pin(async move {
            match job {
                Output::Message(draft) => {
                    self.chat.send(draft.clone()).await.map_err(failure)?;
                }
                Output::Notification {
                    id,
                    user,
                    notification_type,
                    payload,
                } => {
                    self.chat
                        .notify(user, notification_type, payload, Some(id))
                        .await
                        .map_err(failure)?;
                }
            }
            Ok(Outcome::Delivered)
        })
    }
}

#[cfg(test)]
mod tests;
