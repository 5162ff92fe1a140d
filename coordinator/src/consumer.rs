//! KIP-848 consumer groups: the server computes the assignment and each member converges
//! to its share through heartbeats.
//!
//! The group has an epoch that moves whenever membership, subscriptions or the subscribed
//! topics' partition counts change; the target assignment is recomputed (sticky to the
//! previous target) at that epoch. Each member then reconciles on its own heartbeats:
//!
//! 1. partitions it owns but no longer should are revoked first — the heartbeat answer
//!    leaves them out and the member epoch stays;
//! 2. once the member's heartbeat shows it no longer owns them, its epoch moves to the
//!    target's and it receives the partitions of its target that no other member still
//!    holds; the rest follow on later heartbeats as their previous owners let go.
//!
//! So a partition is never owned by two members at once. A member that does not revoke
//! within its rebalance timeout, or stops heartbeating for the session timeout, is removed.
//!
//! The group's epochs and every member (subscription, epochs, assigned, revoking and target
//! partitions) are persisted as records (see [`crate::record`]), written whenever a
//! heartbeat or timer changes them, so after a broker restart members carry on with their
//! epochs and assignments. Timers are not persisted: loaded members get a fresh session.

use std::collections::{BTreeMap, BTreeSet};

use crate::assignor::{GroupAssignment, MemberAssignment};
use crate::record::{ConsumerGroupRecord, ConsumerMemberRecord};
use crate::Millis;

/// What a KIP-848 group persists: the group record and each member's record.
pub type ConsumerSnapshot = (ConsumerGroupRecord, BTreeMap<String, ConsumerMemberRecord>);

/// A group's persisted state before a step, as much as is needed to find what the step
/// changed (see `Coordinator::persist_consumer_changes`).
#[derive(Debug, Clone)]
pub(crate) struct ConsumerMarker {
    pub group: ConsumerGroupRecord,
    pub members: BTreeSet<String>,
    pub member: Option<ConsumerMemberRecord>,
}

/// A KIP-848 member.
#[derive(Debug, Clone)]
pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub member_epoch: i32,
    pub previous_epoch: i32,
    pub rebalance_timeout_ms: i32,
    pub topic_names: Vec<String>,
    pub topic_regex: Option<String>,
    pub(crate) regex: Option<regex::Regex>,
    pub server_assignor: Option<String>,
    /// What the member has been told to own.
    pub assigned: MemberAssignment,
    /// What it has been told to give up and has not yet confirmed giving up.
    pub revoking: MemberAssignment,
    pub(crate) last_heartbeat: Millis,
    pub(crate) revoke_deadline: Option<Millis>,
    pub(crate) timer_at: Option<Millis>,
}

impl ConsumerMember {
    /// The topics this member subscribes to among `topics` (names, then regex matches;
    /// internal topics only by name).
    pub fn subscribed<'a>(&self, topics: impl Iterator<Item = &'a String>) -> BTreeSet<String> {
        topics
            .filter(|t| {
                self.topic_names.iter().any(|n| n == *t)
                    || (!t.starts_with("__") && self.regex.as_ref().is_some_and(|r| r.is_match(t)))
            })
            .cloned()
            .collect()
    }
}

impl ConsumerMember {
    fn record(&self, target: Option<&MemberAssignment>) -> ConsumerMemberRecord {
        ConsumerMemberRecord {
            instance_id: self.instance_id.clone(),
            rack_id: self.rack_id.clone(),
            client_id: self.client_id.clone(),
            client_host: self.client_host.clone(),
            rebalance_timeout_ms: self.rebalance_timeout_ms,
            topic_names: self.topic_names.clone(),
            topic_regex: self.topic_regex.clone(),
            server_assignor: self.server_assignor.clone(),
            member_epoch: self.member_epoch,
            previous_epoch: self.previous_epoch,
            assigned: normalized(&self.assigned),
            revoking: normalized(&self.revoking),
            target: target.map(normalized).unwrap_or_default(),
        }
    }

    /// A member loaded from its record; its session starts when the coordinator starts.
    pub(crate) fn from_record(member_id: String, r: ConsumerMemberRecord) -> Self {
        // The pattern was valid when the member sent it, so it compiles again.
        let regex = r
            .topic_regex
            .as_deref()
            .and_then(|p| regex::Regex::new(p).ok());
        ConsumerMember {
            member_id,
            instance_id: r.instance_id,
            rack_id: r.rack_id,
            client_id: r.client_id,
            client_host: r.client_host,
            member_epoch: r.member_epoch,
            previous_epoch: r.previous_epoch,
            rebalance_timeout_ms: r.rebalance_timeout_ms,
            topic_names: r.topic_names,
            topic_regex: r.topic_regex,
            regex,
            server_assignor: r.server_assignor,
            assigned: r.assigned,
            revoking: r.revoking,
            last_heartbeat: 0,
            revoke_deadline: None,
            timer_at: None,
        }
    }
}

/// The KIP-848 part of a group.
#[derive(Debug, Clone, Default)]
pub struct ConsumerGroupState {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: GroupAssignment,
    /// Partition counts of the subscribed topics the target was computed from.
    pub subscribed: BTreeMap<String, i32>,
    pub assignor: String,
}

impl ConsumerGroupState {
    /// KIP-848's state names.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch > self.assignment_epoch {
            "Assigning"
        } else if self.members.values().all(|m| {
            m.member_epoch == self.assignment_epoch
                && m.revoking.is_empty()
                && self
                    .target
                    .get(&m.member_id)
                    .map_or(m.assigned.is_empty(), |t| {
                        normalized(t) == normalized(&m.assigned)
                    })
        }) {
            "Stable"
        } else {
            "Reconciling"
        }
    }

    /// The records that would rebuild this group.
    pub fn snapshot(&self) -> ConsumerSnapshot {
        let members = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.record(self.target.get(id))))
            .collect();
        (self.record(), members)
    }

    /// The group's own record (everything but the members).
    pub(crate) fn record(&self) -> ConsumerGroupRecord {
        ConsumerGroupRecord {
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            assignor: self.assignor.clone(),
            subscribed: self.subscribed.clone(),
        }
    }

    /// One member's record, if it is a member.
    pub(crate) fn member_record(&self, member_id: &str) -> Option<ConsumerMemberRecord> {
        let m = self.members.get(member_id)?;
        Some(m.record(self.target.get(member_id)))
    }

    /// Partitions held (assigned or still being revoked) by members other than `except`.
    pub(crate) fn held_by_others(&self, except: &str) -> BTreeSet<(String, i32)> {
        self.members
            .values()
            .filter(|m| m.member_id != except)
            .flat_map(|m| pairs(&m.assigned).chain(pairs(&m.revoking)))
            .collect()
    }
}

pub(crate) fn pairs(a: &MemberAssignment) -> impl Iterator<Item = (String, i32)> + '_ {
    a.iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
}

pub(crate) fn from_pairs(pairs: impl IntoIterator<Item = (String, i32)>) -> MemberAssignment {
    let mut out = MemberAssignment::new();
    for (t, p) in pairs {
        out.entry(t).or_default().push(p);
    }
    normalized(&out)
}

/// Sorted, deduplicated, without empty topics.
pub(crate) fn normalized(a: &MemberAssignment) -> MemberAssignment {
    a.iter()
        .filter(|(_, ps)| !ps.is_empty())
        .map(|(t, ps)| {
            let set: BTreeSet<i32> = ps.iter().copied().collect();
            (t.clone(), set.into_iter().collect())
        })
        .collect()
}
