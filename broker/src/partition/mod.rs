//! A partition as the broker serves it: the storage log, a watch of its end offset that wakes
//! long-polling fetches, and the idempotent producer state that guards appends.
//!
//! Appends block (they write files and may wait for an fsync), so callers run them on a
//! blocking thread, or first try [`Partition::try_append`], which does only what does not.

pub mod producer_state;

use std::sync::{Arc, Mutex};

use chorus_storage::batch::{self, BatchHeader, BatchIter, TimestampType};
use chorus_storage::{Clock, Log, LogConfig, MayBlock, SystemClock};
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::{BrokerError, Result};
use producer_state::{BatchIdentity, Check, ProducerStates};

/// The leader epoch of every partition: a single broker never changes leader.
pub const LEADER_EPOCH: i32 = 0;

#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub topic_id: Uuid,
    pub log: Arc<Log>,
    end: watch::Sender<i64>,
    /// `None` until first needed, then rebuilt from the log.
    producers: Mutex<Option<ProducerStates>>,
}

/// What a produce to this partition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: i64,
    pub log_append_time: Option<i64>,
    pub log_start_offset: i64,
    /// The batch was a producer's retry and was not written again.
    pub duplicate: bool,
    /// The append, for [`Partition::flush_as_policy_requires`]; `None` for duplicates.
    pub appended: Option<chorus_storage::AppendInfo>,
}

impl Partition {
    pub fn new(topic: String, index: i32, topic_id: Uuid, log: Arc<Log>) -> Self {
        log.set_leader_epoch(LEADER_EPOCH);
        let (end, _) = watch::channel(log.log_end_offset());
        Partition {
            topic,
            index,
            topic_id,
            log,
            end,
            producers: Mutex::new(None),
        }
    }

    /// Changes to the end offset, for long polls.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.end.subscribe()
    }

    /// Validates and appends the records of one produce request for this partition. Blocking.
    /// The flush policy is applied separately by [`Partition::flush_as_policy_requires`], so a
    /// request touching several partitions can wait for their fsyncs side by side.
    pub fn append(&self, records: &[u8]) -> Result<AppendOutcome> {
        let appended = self.append_if(records, MayBlock::Yes)?;
        Ok(appended.expect("an append that may block is always done"))
    }

    /// Appends like [`Partition::append`] when that is only a write into the page cache
    /// (see `chorus_storage::Log::try_append_deferred`), so an async task may call it;
    /// `None`, with nothing written, when it would have to wait for a lock or the disk, or
    /// when the batches are an idempotent producer's (whose state may have to be rebuilt
    /// from the log first).
    pub fn try_append(&self, records: &[u8]) -> Result<Option<AppendOutcome>> {
        self.append_if(records, MayBlock::No)
    }

    fn append_if(&self, records: &[u8], may_block: MayBlock) -> Result<Option<AppendOutcome>> {
        let mut buf = records.to_vec();
        let config = self.log.config();
        let headers = headers_of(&buf);
        let Some(headers) = headers else {
            // Not a clean run of batches: let the log's validation say exactly what is wrong.
            chorus_storage::log::validate_batches(&buf, config.max_message_bytes)?;
            return Err(BrokerError::InvalidRequest(
                "records are not whole record batches",
            ));
        };
        check_timestamps(&headers, &config)?;
        if config.cleanup_policy.compact {
            check_keys(&buf)?;
        }
        let identities: Vec<BatchIdentity> = headers.iter().filter_map(BatchIdentity::of).collect();
        let info = if identities.is_empty() {
            match may_block {
                MayBlock::Yes => self.log.append_deferred(&mut buf)?,
                MayBlock::No => match self.log.try_append_deferred(&mut buf)? {
                    Some(info) => info,
                    None => return Ok(None),
                },
            }
        } else if may_block == MayBlock::No {
            return Ok(None);
        } else {
            let mut guard = self.producers.lock().expect("producer state lock");
            let states = match &mut *guard {
                Some(s) => s,
                None => guard.insert(self.rebuild_producers()?),
            };
            // One batch per producer per partition is what clients send; check them all.
            let mut first_duplicate = None;
            for id in &identities {
                match states.check(id)? {
                    Check::Append => {}
                    Check::Duplicate(b) => {
                        first_duplicate.get_or_insert(b);
                    }
                }
            }
            if let Some(original) = first_duplicate {
                return Ok(Some(AppendOutcome {
                    base_offset: original.first_offset,
                    log_append_time: None,
                    log_start_offset: self.log.log_start_offset(),
                    duplicate: true,
                    appended: None,
                }));
            }
            let info = self.log.append_deferred(&mut buf)?;
            let mut offset = info.first_offset;
            for header in &headers {
                let last = offset + header.last_offset_delta as i64;
                if let Some(id) = BatchIdentity::of(header) {
                    states.record(&id, offset, last);
                }
                offset = last + 1;
            }
            info
        };
        self.end.send_replace(info.last_offset + 1);
        Ok(Some(AppendOutcome {
            base_offset: info.first_offset,
            log_append_time: info.log_append_time,
            log_start_offset: info.log_start_offset,
            duplicate: false,
            appended: Some(info),
        }))
    }

    /// True when [`Partition::flush_as_policy_requires`] would have to wait for an fsync.
    pub fn must_flush(&self, outcome: &AppendOutcome) -> bool {
        outcome
            .appended
            .as_ref()
            .is_some_and(|info| self.log.flush_policy_requires(info))
    }

    /// Waits for the durability the topic's flush policy asks for an append (with
    /// `flush.messages=1`, until it is on disk; concurrent waiters share fsyncs). Blocking.
    pub fn flush_as_policy_requires(&self, outcome: &AppendOutcome) -> Result<()> {
        if let Some(info) = &outcome.appended {
            self.log.apply_flush_policy(info)?;
        }
        Ok(())
    }

    fn rebuild_producers(&self) -> Result<ProducerStates> {
        let mut states = ProducerStates::default();
        self.log
            .for_each_batch_header(self.log.log_start_offset(), |h| states.replay(h))?;
        if !states.is_empty() {
            tracing::debug!(topic = %self.topic, partition = self.index, producers = states.len(), "rebuilt idempotent producer state");
        }
        Ok(states)
    }

    /// Tells long polls the end moved (after a truncation or delete-records, say).
    pub fn publish_end(&self) {
        self.end.send_replace(self.log.log_end_offset());
    }
}

/// Headers of the batches in `buf`, or `None` when it is not exactly a run of whole batches.
fn headers_of(buf: &[u8]) -> Option<Vec<BatchHeader>> {
    let mut it = BatchIter::new(buf);
    let headers: Vec<BatchHeader> = it.by_ref().map(|(_, h, _)| h).collect();
    (it.position() == buf.len() && !headers.is_empty()).then_some(headers)
}

/// `message.timestamp.before.max.ms` / `after.max.ms` for `CreateTime` topics.
fn check_timestamps(headers: &[BatchHeader], config: &LogConfig) -> Result<()> {
    if config.timestamp_type == TimestampType::LogAppendTime
        || (config.timestamp_before_max_ms == i64::MAX && config.timestamp_after_max_ms == i64::MAX)
    {
        return Ok(());
    }
    let now = SystemClock.now_ms();
    for h in headers {
        for ts in [h.base_timestamp, h.max_timestamp] {
            if ts < 0 {
                continue;
            }
            if now.saturating_sub(ts) > config.timestamp_before_max_ms
                || ts.saturating_sub(now) > config.timestamp_after_max_ms
            {
                return Err(BrokerError::InvalidTimestamp { timestamp: ts });
            }
        }
    }
    Ok(())
}

/// Compacted topics need a key on every record (Kafka refuses the batch otherwise).
fn check_keys(buf: &[u8]) -> Result<()> {
    for (_, _, bytes) in BatchIter::new(buf) {
        let mut missing = false;
        batch::for_each_record(bytes, batch::MAX_DECOMPRESSED_BATCH, |r| {
            missing |= r.key.is_none();
        })
        .map_err(|source| {
            BrokerError::Log(chorus_storage::LogError::InvalidBatch {
                position: 0,
                source,
            })
        })?;
        if missing {
            return Err(BrokerError::NullKeyInCompactedTopic);
        }
    }
    Ok(())
}
