//! What each forwarder target has already delivered, with an expiry: kept in memory and
//! written to a compacted topic (`chat.dedup`), so a restart does not deliver again.
//!
//! A record's key is `target/key`, its value `{"expires_at": ms}`. Expired entries are
//! swept from memory and tombstoned, so compaction removes them from the topic too.
//!
//! Marks and tombstones are group-committed ([`crate::group_commit`]): concurrent
//! deliveries share one durable append per partition.
//!
//! When other processes write the topic too (gateways sharing a cluster, which take over
//! each other's partitions of a target's group), [`DedupStore::follow`] merges their marks
//! as they arrive: the later expiry wins, and a tombstone removes only an expired entry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::group_commit::GroupQueue;
use crate::log::{partition_for_key, Consumed, Log, LogError, Record, Result, TopicSpec};
use crate::scan::{follow_next, scan_partition};
use crate::HashMap;

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    expires_at: i64,
}

#[derive(Debug)]
pub struct DedupStore {
    partitions: i32,
    /// `target/key` -> expiry in ms since the epoch.
    entries: Mutex<HashMap<String, i64>>,
    /// Per partition, where loading stopped (a follower continues there).
    loaded_to: Vec<i64>,
    topic: Arc<StoreTopic>,
}

/// A record waiting for its partition's writer.
#[derive(Debug)]
struct Pending {
    record: Record,
    reply: oneshot::Sender<Result<()>>,
}

/// The store's topic, and the group commit of its records.
#[derive(Debug)]
struct StoreTopic {
    log: Arc<dyn Log>,
    name: String,
    queued: GroupQueue<Pending>,
}

impl StoreTopic {
    async fn write_queued(self: Arc<Self>, partition: i32) {
        let weight = |p: &Pending| p.record.key.as_ref().map_or(0, |k| k.len()) + 64;
        self.queued
            .write_queued(partition, weight, |batch| {
                self.write_batch(partition, batch)
            })
            .await;
    }

    async fn write_batch(&self, partition: i32, batch: Vec<Pending>) {
        let (records, replies): (Vec<Record>, Vec<_>) =
            batch.into_iter().map(|p| (p.record, p.reply)).unzip();
        match self.log.append(&self.name, partition, records).await {
            Ok(_) => {
                for reply in replies {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                let text = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(LogError::Backend(text.clone().into())));
                }
            }
        }
    }
}

/// A record's `target/key` and its expiry (`None`: a tombstone); `None` when the key is
/// not text.
fn entry_of(c: &Consumed) -> Option<(&str, Option<i64>)> {
    let key = std::str::from_utf8(c.record.key.as_deref()?).ok()?;
    let expiry = c
        .record
        .value
        .as_deref()
        .and_then(|v| serde_json::from_slice::<Entry>(v).ok())
        .map(|e| e.expires_at);
    Some((key, expiry))
}

fn full_key(target: &str, key: &str) -> String {
    format!("{target}/{key}")
}

impl DedupStore {
    /// Makes sure the topic exists (compacted) and loads the entries not yet expired.
    pub async fn open(
        log: Arc<dyn Log>,
        topic: &str,
        partitions: i32,
        now_ms: i64,
    ) -> Result<DedupStore> {
        let partitions = log
            .ensure_topic(&TopicSpec::compacted(topic, partitions))
            .await?;
        let mut entries = HashMap::default();
        let mut loaded_to = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let end = scan_partition(log.as_ref(), topic, p, |c| {
                match entry_of(&c) {
                    Some((key, Some(expires_at))) => entries.insert(key.to_string(), expires_at),
                    Some((key, None)) => entries.remove(key),
                    None => None,
                };
            })
            .await?;
            loaded_to.push(end);
        }
        entries.retain(|_, expires| *expires > now_ms);
        Ok(DedupStore {
            partitions,
            entries: Mutex::new(entries),
            loaded_to,
            topic: Arc::new(StoreTopic {
                log,
                name: topic.to_string(),
                queued: GroupQueue::new(partitions),
            }),
        })
    }

    /// Merges the marks others write to `partition` from where loading stopped; runs
    /// until aborted.
    pub async fn follow(self: Arc<Self>, partition: i32) {
        let mut offset = self.loaded_to[partition as usize];
        loop {
            let records = follow_next(
                self.topic.log.as_ref(),
                &self.topic.name,
                partition,
                &mut offset,
            )
            .await;
            let now = crate::now_ms();
            let mut entries = self.entries.lock().expect("dedup lock");
            for c in &records {
                let Some((key, expiry)) = entry_of(c) else {
                    continue;
                };
                match expiry {
                    Some(at) => {
                        let e = entries.entry(key.to_string()).or_insert(at);
                        *e = (*e).max(at);
                    }
                    None => {
                        if entries.get(key).is_some_and(|at| *at <= now) {
                            entries.remove(key);
                        }
                    }
                }
            }
        }
    }

    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// Whether `target` delivered `key` and the entry has not expired.
    pub fn seen(&self, target: &str, key: &str, now_ms: i64) -> bool {
        self.entries
            .lock()
            .expect("dedup lock")
            .get(&full_key(target, key))
            .is_some_and(|expires| *expires > now_ms)
    }

    /// Records that `target` delivered `key`, for `ttl`. Durable when it returns.
    pub async fn mark(&self, target: &str, key: &str, ttl: Duration, now_ms: i64) -> Result<()> {
        self.mark_all(target, &[key], ttl, now_ms)
            .await
            .pop()
            .unwrap_or(Ok(()))
    }

    /// [`DedupStore::mark`] for each of `keys` at once (those of a partition share one
    /// append); answers per key.
    pub async fn mark_all(
        &self,
        target: &str,
        keys: &[&str],
        ttl: Duration,
        now_ms: i64,
    ) -> Vec<Result<()>> {
        let expires_at = now_ms + ttl.as_millis() as i64;
        let value =
            Bytes::from(serde_json::to_vec(&Entry { expires_at }).expect("entries serialize"));
        let full: Vec<String> = keys.iter().map(|k| full_key(target, k)).collect();
        let writes = full
            .iter()
            .map(|k| (k.clone(), Some(value.clone())))
            .collect();
        let results = self.append_each(writes, now_ms).await;
        let mut entries = self.entries.lock().expect("dedup lock");
        for (key, result) in full.into_iter().zip(&results) {
            if result.is_ok() {
                let e = entries.entry(key).or_insert(expires_at);
                // Another gateway may have recorded a later expiry meanwhile.
                *e = (*e).max(expires_at);
            }
        }
        results
    }

    /// Forgets expired entries and tombstones them in the topic; returns how many.
    pub async fn sweep(&self, now_ms: i64) -> Result<usize> {
        let expired: Vec<String> = {
            let mut entries = self.entries.lock().expect("dedup lock");
            let keys: Vec<String> = entries
                .iter()
                .filter(|(_, e)| **e <= now_ms)
                .map(|(k, _)| k.clone())
                .collect();
            for k in &keys {
                entries.remove(k);
            }
            keys
        };
        let count = expired.len();
        self.append(expired.into_iter().map(|k| (k, None)).collect(), now_ms)
            .await?;
        Ok(count)
    }

    /// Live entries (for metrics and tests).
    pub fn len(&self) -> usize {
        self.entries.lock().expect("dedup lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a record per (key, value) and waits until all are durable.
    async fn append(&self, writes: Vec<(String, Option<Bytes>)>, now_ms: i64) -> Result<()> {
        self.append_each(writes, now_ms).await.into_iter().collect()
    }

    /// Appends a record per (key, value); answers each once it is durable (or failed).
    async fn append_each(
        &self,
        writes: Vec<(String, Option<Bytes>)>,
        now_ms: i64,
    ) -> Vec<Result<()>> {
        let mut answers = Vec::with_capacity(writes.len());
        for (key, value) in writes {
            let partition = partition_for_key(key.as_bytes(), self.partitions);
            let (reply, answer) = oneshot::channel();
            let record = Record {
                key: Some(Bytes::from(key)),
                value,
                headers: Vec::new(),
                timestamp_ms: now_ms,
            };
            answers.push(answer);
            if self
                .topic
                .queued
                .push(partition, vec![Pending { record, reply }])
            {
                tokio::spawn(self.topic.clone().write_queued(partition));
            }
        }
        let mut out = Vec::with_capacity(answers.len());
        for answer in answers {
            out.push(answer.await.unwrap_or(Err(LogError::ShuttingDown)));
        }
        out
    }
}
