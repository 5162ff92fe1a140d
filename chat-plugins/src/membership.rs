//! Group membership: join and leave events appended to `chat.membership` (keyed by group),
//! and the current member sets rebuilt from them on start.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::Mutex;

use crate::error::{ChatError, Result};
use crate::event::{MembershipChange, MembershipEvent, TYPE_HEADER};
use crate::log::{partition_for_key, Header, Log, Record, TopicSpec};
use crate::scan::scan_partition;

#[derive(Debug)]
pub struct MembershipStore {
    log: Arc<dyn Log>,
    topic: String,
    partitions: i32,
    groups: RwLock<HashMap<String, BTreeSet<String>>>,
    /// Bumped by every change, so caches can tell a list they hold is out of date.
    version: AtomicU64,
    /// One change at a time, so the stored order is the order they were decided in.
    writer: Mutex<()>,
}

impl MembershipStore {
    pub async fn open(log: Arc<dyn Log>, spec: &TopicSpec) -> crate::log::Result<Self> {
        let partitions = log.ensure_topic(spec).await?;
        let mut groups: HashMap<String, BTreeSet<String>> = HashMap::new();
        for p in 0..partitions {
            scan_partition(log.as_ref(), &spec.name, p, |c| {
                if let Some(e) = c
                    .record
                    .value
                    .as_deref()
                    .and_then(|v| serde_json::from_slice::<MembershipEvent>(v).ok())
                {
                    apply(&mut groups, &e);
                }
            })
            .await?;
        }
        Ok(MembershipStore {
            log,
            topic: spec.name.clone(),
            partitions,
            groups: RwLock::new(groups),
            version: AtomicU64::new(0),
            writer: Mutex::new(()),
        })
    }

    /// Changes so far; read it before [`MembershipStore::members`] to tag a cached copy.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn members(&self, group: &str) -> Vec<String> {
        self.groups
            .read()
            .expect("membership lock")
            .get(group)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn is_member(&self, group: &str, user: &str) -> bool {
        self.groups
            .read()
            .expect("membership lock")
            .get(group)
            .is_some_and(|m| m.contains(user))
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
        let partition = partition_for_key(group.as_bytes(), self.partitions);
        self.log
            .append(&self.topic, partition, vec![record])
            .await?;
        apply(&mut self.groups.write().expect("membership lock"), &event);
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(Some(event))
    }
}

fn apply(groups: &mut HashMap<String, BTreeSet<String>>, e: &MembershipEvent) {
    match e.event_type {
        MembershipChange::Join => {
            groups
                .entry(e.group_id.clone())
                .or_default()
                .insert(e.user_id.clone());
        }
        MembershipChange::Leave => {
            if let Some(members) = groups.get_mut(&e.group_id) {
                members.remove(&e.user_id);
                if members.is_empty() {
                    groups.remove(&e.group_id);
                }
            }
        }
    }
}
