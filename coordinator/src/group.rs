//! A classic consumer group: its members, generation and committed offsets.
//!
//! # States and transitions
//!
//! | from                | event                                              | to                  |
//! |---------------------|----------------------------------------------------|---------------------|
//! | Empty               | a member joins                                     | PreparingRebalance  |
//! | Empty               | deleted, or offsets expired and none left          | Dead                |
//! | PreparingRebalance  | every member rejoined, or the join deadline passed | CompletingRebalance |
//! | PreparingRebalance  | the same, with no member left                      | Empty               |
//! | CompletingRebalance | the leader's SyncGroup                             | Stable              |
//! | CompletingRebalance | a join with new metadata, a leave, a session expiry, or a member not syncing in time | PreparingRebalance |
//! | Stable              | a new member, the leader or a changed member rejoins, a leave or a session expiry | PreparingRebalance |
//!
//! Dead is terminal: the group is removed from the coordinator and a later request for the
//! same id starts a new group. A new group's first PreparingRebalance waits
//! `group.initial.rebalance.delay.ms` for more members, extended while members keep joining;
//! later rebalances complete as soon as every known member has rejoined.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::api::{Protocol, Token};
use crate::record::{CommittedOffset, GroupMetadata, MemberMetadata};
use crate::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub const ALL: [GroupState; 5] = [
        GroupState::Empty,
        GroupState::PreparingRebalance,
        GroupState::CompletingRebalance,
        GroupState::Stable,
        GroupState::Dead,
    ];

    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    /// Parses a state name as clients send it in ListGroups filters (case-insensitive).
    pub fn parse(name: &str) -> Option<GroupState> {
        GroupState::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
    }
}

/// A member of a classic group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<Protocol>,
    pub assignment: Bytes,
    /// Order of joining; the earliest remaining member becomes leader when the leader goes.
    pub(crate) joined_seq: u64,
    pub(crate) last_heartbeat: Millis,
    pub(crate) awaiting_join: Option<Token>,
    pub(crate) awaiting_sync: Option<Token>,
    /// Deadline of this member's armed session timer, if one is armed.
    pub(crate) timer_at: Option<Millis>,
}

impl Member {
    pub(crate) fn session_deadline(&self) -> Millis {
        self.last_heartbeat + Millis::from(self.session_timeout_ms)
    }

    /// Members waiting for the group to answer them are alive by definition.
    pub(crate) fn is_waiting(&self) -> bool {
        self.awaiting_join.is_some() || self.awaiting_sync.is_some()
    }

    pub(crate) fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }
}

/// A group and everything the coordinator knows about it.
#[derive(Debug, Clone)]
pub struct ClassicGroup {
    pub id: String,
    pub state: GroupState,
    /// When the group entered its state; for Empty, when it became empty (offset retention
    /// counts from there).
    pub state_timestamp: Millis,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED, with when they were handed out.
    pub(crate) pending_members: BTreeMap<String, (Millis, i32)>,
    /// Static members: group.instance.id -> member id.
    pub(crate) static_members: HashMap<String, String>,
    /// Bumped on each PreparingRebalance, so stale join timers are ignored.
    pub(crate) rebalance_epoch: u64,
    pub(crate) join_deadline: Millis,
    /// While a new group's initial delay runs: how much longer it may still be extended.
    pub(crate) initial_delay_remaining: Option<i32>,
    pub(crate) new_member_added: bool,
    /// Set when the group uses the KIP-848 consumer protocol instead of JoinGroup/SyncGroup.
    pub consumer: Option<crate::consumer::ConsumerGroupState>,
}

impl ClassicGroup {
    pub(crate) fn new(id: String, now: Millis) -> Self {
        ClassicGroup {
            id,
            state: GroupState::Empty,
            state_timestamp: now,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            offsets: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            static_members: HashMap::new(),
            rebalance_epoch: 0,
            join_deadline: 0,
            initial_delay_remaining: None,
            new_member_added: false,
            consumer: None,
        }
    }

    /// No members of either protocol (and none about to join).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
            && self.pending_members.is_empty()
            && self.consumer.as_ref().is_none_or(|c| c.members.is_empty())
    }

    /// The state name clients see: KIP-848's for consumer groups, the classic ones otherwise.
    pub fn state_name(&self) -> &'static str {
        match &self.consumer {
            Some(c) if self.members.is_empty() => c.state_name(),
            _ => self.state.as_str(),
        }
    }

    /// "consumer" for KIP-848 groups, "classic" otherwise.
    pub fn group_type(&self) -> &'static str {
        if self.consumer.is_some() && self.members.is_empty() {
            "consumer"
        } else {
            "classic"
        }
    }

    pub(crate) fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    pub(crate) fn max_rebalance_timeout(&self) -> i32 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    /// Protocols every member supports.
    fn candidate_protocols(&self) -> Vec<&str> {
        let Some(first) = self.members.values().next() else {
            return Vec::new();
        };
        first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|p| p.name == *name))
            })
            .collect()
    }

    /// Whether a member with these protocols can join: same protocol type, and at least one
    /// protocol every current member also supports.
    pub(crate) fn supports(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let candidates = self.candidate_protocols();
        protocols
            .iter()
            .any(|p| candidates.contains(&p.name.as_str()))
    }

    /// Kafka's vote: each member votes for its most preferred candidate; most votes wins
    /// (ties go to the earlier candidate in the first member's preference order).
    pub(crate) fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes = vec![0usize; candidates.len()];
        for m in self.members.values() {
            if let Some(i) = m
                .protocols
                .iter()
                .find_map(|p| candidates.iter().position(|c| *c == p.name))
            {
                votes[i] += 1;
            }
        }
        let best = (0..candidates.len()).max_by_key(|&i| (votes[i], std::cmp::Reverse(i)))?;
        Some(candidates[best].to_string())
    }

    /// The earliest-joined member, the next leader when the current one goes.
    pub(crate) fn first_member(&self) -> Option<String> {
        self.members
            .values()
            .min_by_key(|m| m.joined_seq)
            .map(|m| m.member_id.clone())
    }

    pub(crate) fn is_leader(&self, member_id: &str) -> bool {
        self.leader.as_deref() == Some(member_id)
    }

    /// The static member id for `instance_id`, if any.
    pub(crate) fn static_member(&self, instance_id: &str) -> Option<&String> {
        self.static_members.get(instance_id)
    }

    /// The group's metadata as persisted.
    pub fn metadata(&self) -> GroupMetadata {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupMetadata {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp: self.state_timestamp,
            members: self
                .members
                .values()
                .map(|m| MemberMetadata {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// The topics the members subscribe to, when the group uses the consumer protocol.
    pub fn subscribed_topics(&self) -> Vec<String> {
        if let Some(cg) = self.consumer.as_ref().filter(|_| self.members.is_empty()) {
            let mut topics: Vec<String> = cg
                .members
                .values()
                .flat_map(|m| m.subscribed(cg.subscribed.keys()))
                .collect();
            topics.sort();
            topics.dedup();
            return topics;
        }
        if self.protocol_type.as_deref() != Some("consumer") {
            return Vec::new();
        }
        let mut topics: Vec<String> = self
            .members
            .values()
            .flat_map(|m| {
                let metadata = match &self.protocol {
                    Some(p) => m.metadata_for(p),
                    None => m
                        .protocols
                        .first()
                        .map(|p| p.metadata.clone())
                        .unwrap_or_default(),
                };
                crate::consumer_protocol::subscription_topics(&metadata).unwrap_or_default()
            })
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }
}
