//! Group membership: join and leave events appended to `chat.membership` (keyed by group),
//! and the current member sets rebuilt from them on start and kept up with the log after.
//!
//! Events are applied in log order. A join of a member or a leave of a non-member changes
//! nothing (two gateways may race to write the same change); it is applied as a no-op and
//! not shown to anyone. The gateway's fan-out takes in what it reads through
//! [`MembershipStore::follow`]; each record is taken in once, whoever reads it first.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::Mutex;

use crate::error::{ChatError, Result};
use crate::event::{MembershipChange, MembershipEvent, TYPE_HEADER};
use crate::log::{partition_for_key, Consumed, Header, Log, Record, TopicSpec};
use crate::scan::{read_range, scan_partition};
use crate::HashMap;

#[derive(Debug, Default)]
struct State {
    groups: HashMap<String, BTreeSet<String>>,
    /// Per partition: every record below this offset has been applied.
    applied_end: Vec<i64>,
    /// (partition, offset) of events that changed nothing, so a late reader of one can
    /// tell (rare: only racing writers make them).
    noops: HashSet<(i32, i64)>,
}

impl State {
    /// Applies the record at `offset` of `partition` (in order; see the module notes) and
    /// returns the event when it changed the membership.
    fn follow(
        &mut self,
        partition: i32,
        offset: i64,
        event: Option<MembershipEvent>,
    ) -> Option<MembershipEvent> {
        let end = &mut self.applied_end[partition as usize];
        if offset < *end {
            return event.filter(|_| !self.noops.contains(&(partition, offset)));
        }
        *end = offset + 1;
        let e = event?;
        if apply(&mut self.groups, &e) {
            Some(e)
        } else {
            self.noops.insert((partition, offset));
            None
        }
    }
}

fn parse(c: &Consumed) -> Option<MembershipEvent> {
    c.record
        .value
        .as_deref()
        .and_then(|v| serde_json::from_slice(v).ok())
}

#[derive(Debug)]
pub struct MembershipStore {
    log: Arc<dyn Log>,
    topic: String,
    partitions: i32,
    state: RwLock<State>,
    /// Bumped by every change, so caches can tell a list they hold is out of date.
    version: AtomicU64,
    /// One change at a time from this process, so the stored order is the order they
    /// were decided in.
    writer: Mutex<()>,
}

impl MembershipStore {
    pub async fn open(log: Arc<dyn Log>, spec: &TopicSpec) -> crate::log::Result<Self> {
        let partitions = log.ensure_topic(spec).await?;
        let mut state = State {
            applied_end: vec![0; partitions as usize],
            ..State::default()
        };
        for p in 0..partitions {
            let end = scan_partition(log.as_ref(), &spec.name, p, |c| {
                state.follow(p, c.offset, parse(&c));
            })
            .await?;
            let applied = &mut state.applied_end[p as usize];
            *applied = (*applied).max(end);
        }
        Ok(MembershipStore {
            log,
            topic: spec.name.clone(),
            partitions,
            state: RwLock::new(state),
            version: AtomicU64::new(0),
            writer: Mutex::new(()),
        })
    }

    /// Changes so far; read it before [`MembershipStore::members`] to tag a cached copy.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn members(&self, group: &str) -> Vec<String> {
        self.state
            .read()
            .expect("membership lock")
            .groups
            .get(group)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn is_member(&self, group: &str, user: &str) -> bool {
        self.state
            .read()
            .expect("membership lock")
            .groups
            .get(group)
            .is_some_and(|m| m.contains(user))
    }

    /// The offset up to which `partition` has been applied; a follower of the log starts
    /// reading there.
    pub fn applied_end(&self, partition: i32) -> i64 {
        self.state.read().expect("membership lock").applied_end[partition as usize]
    }

    /// Applies records read from `partition` (in order, continuing from where the reader
    /// started at [`MembershipStore::applied_end`]) and returns the events among them that
    /// changed a group.
    pub fn follow(&self, partition: i32, records: &[Consumed]) -> Vec<MembershipEvent> {
        let parsed: Vec<(i64, Option<MembershipEvent>)> =
            records.iter().map(|c| (c.offset, parse(c))).collect();
        let mut changed = false;
        let events: Vec<MembershipEvent> = {
            let mut state = self.state.write().expect("membership lock");
            parsed
                .into_iter()
                .filter_map(|(offset, e)| {
                    let before = state.applied_end[partition as usize];
                    let out = state.follow(partition, offset, e);
                    changed |= out.is_some() && offset >= before;
                    out
                })
                .collect()
        };
        if changed {
            self.version.fetch_add(1, Ordering::AcqRel);
        }
        events
    }

    /// Applies `partition`'s records from where the state is up to `until`.
    async fn catch_up(&self, partition: i32, until: i64) -> crate::log::Result<()> {
        let from = self.applied_end(partition);
        if from >= until {
            return Ok(());
        }
        let mut read = Vec::new();
        read_range(
            self.log.as_ref(),
            &self.topic,
            partition,
            from,
            until,
            |c| read.push(c),
        )
        .await?;
        self.follow(partition, &read);
        Ok(())
    }

    /// Catches up with `group`'s partition, so a change another gateway just wrote is seen
    /// (for answers that would otherwise refuse on stale state).
    pub async fn refresh(&self, group: &str) -> crate::log::Result<()> {
        if !self.log.shared() {
            return Ok(());
        }
        let partition = partition_for_key(group.as_bytes(), self.partitions);
        let (_, end) = self.log.offsets(&self.topic, partition).await?;
        self.catch_up(partition, end).await
    }

    /// Adds `user` to `group`; `None` when already a member (nothing is written).
    pub async fn join(
        &self,
        group: &str,
        user: &str,
        now_ms: i64,
    ) -> Result<Option<MembershipEvent>> {
        self.change(group, user, MembershipChange::Join, now_ms)
            .await
    }

    /// Removes `user` from `group`; `NotFound` when not a member.
    pub async fn leave(&self, group: &str, user: &str, now_ms: i64) -> Result<MembershipEvent> {
        self.change(group, user, MembershipChange::Leave, now_ms)
            .await?
            .ok_or(ChatError::NotFound("the user is not a member of the group"))
    }

    async fn change(
        &self,
        group: &str,
        user: &str,
        change: MembershipChange,
        now_ms: i64,
    ) -> Result<Option<MembershipEvent>> {
        let _turn = self.writer.lock().await;
        let partition = partition_for_key(group.as_bytes(), self.partitions);
        // On a shared log, decide on the whole log, including what others appended.
        if self.log.shared() {
            let (_, end) = self.log.offsets(&self.topic, partition).await?;
            self.catch_up(partition, end).await?;
        }
        let member = self.is_member(group, user);
        if member == (change == MembershipChange::Join) {
            return Ok(None);
        }
        let event = MembershipEvent {
            group_id: group.to_string(),
            user_id: user.to_string(),
            event_type: change,
            timestamp: now_ms,
        };
        let record = Record {
            key: Some(Bytes::copy_from_slice(group.as_bytes())),
            value: Some(Bytes::from(
                serde_json::to_vec(&event).expect("events serialize"),
            )),
            headers: vec![Header {
                key: TYPE_HEADER.into(),
                value: Some(Bytes::from_static(b"membership_change")),
            }],
            timestamp_ms: now_ms,
        };
        let appended = self
            .log
            .append(&self.topic, partition, vec![record.clone()])
            .await?;
        let offset = appended.base_offset;
        if self.applied_end(partition) >= offset {
            let ours = Consumed {
                topic: self.topic.as_str().into(),
                partition,
                offset,
                record,
            };
            self.follow(partition, std::slice::from_ref(&ours));
        } else {
            // Another writer's records came first: apply the log as it is.
            self.catch_up(partition, offset + 1).await?;
        }
        Ok(Some(event))
    }
}

/// Applies `e`; false when it changed nothing.
fn apply(groups: &mut HashMap<String, BTreeSet<String>>, e: &MembershipEvent) -> bool {
    match e.event_type {
        MembershipChange::Join => groups
            .entry(e.group_id.clone())
            .or_default()
            .insert(e.user_id.clone()),
        MembershipChange::Leave => {
            let Some(members) = groups.get_mut(&e.group_id) else {
                return false;
            };
            let removed = members.remove(&e.user_id);
            if members.is_empty() {
                groups.remove(&e.group_id);
            }
            removed
        }
    }
}
