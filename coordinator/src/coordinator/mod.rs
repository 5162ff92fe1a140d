//! The coordinator: every group on this broker, the timers that drive them, and the
//! operations of the classic group protocol and the offset store.
//!
//! Each operation takes `now` and pushes what must be persisted and answered into an
//! [`Effects`]; nothing here does I/O or reads a clock. Timers are kept in a heap of
//! deadlines and checked lazily when they fire (a heartbeat only moves a member's
//! `last_heartbeat`; its session timer re-arms itself when it fires early), so a heartbeat
//! costs a map lookup and no heap work.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

mod admin;
mod consumer_heartbeat;
mod membership;
mod offsets;

use crate::api::*;
use crate::config::GroupConfig;
use crate::consumer::{ConsumerGroupState, ConsumerMember, ConsumerSnapshot};
use crate::error::GroupError;
use crate::group::{ClassicGroup, GroupState, Member};
use crate::record::{CommittedOffset, GroupMetadata, Record};
use crate::Millis;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    Session { group: String, member: String },
    PendingMember { group: String, member: String },
    Join { group: String, epoch: u64 },
    Sync { group: String, generation: i32 },
    ConsumerSession { group: String, member: String },
    Retention,
}

/// All groups of this broker and their timers.
#[derive(Debug)]
pub struct Coordinator {
    config: GroupConfig,
    groups: BTreeMap<String, ClassicGroup>,
    timers: BinaryHeap<Reverse<(Millis, u64, Timer)>>,
    timer_seq: u64,
    /// Member ids are `<client id>-<nonce>-<counter>`; the nonce is chosen by the caller
    /// (random in the broker, fixed in tests) so ids differ across restarts.
    id_nonce: u64,
    id_counter: u64,
    join_seq: u64,
}

/// The persisted part of a group (what a restart brings back), for comparing a live
/// coordinator with one rebuilt by replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedGroup {
    pub metadata: Option<GroupMetadata>,
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// KIP-848 groups: the group record and each member's.
    pub consumer: Option<ConsumerSnapshot>,
}

impl Coordinator {
    pub fn new(config: GroupConfig, id_nonce: u64) -> Self {
        Coordinator {
            config,
            groups: BTreeMap::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            id_nonce,
            id_counter: 0,
            join_seq: 0,
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    pub fn group(&self, group_id: &str) -> Option<&ClassicGroup> {
        self.groups.get(group_id)
    }

    pub fn groups(&self) -> impl Iterator<Item = &ClassicGroup> {
        self.groups.values()
    }

    // ---------------------------------------------------------------- loading

    /// Applies one record read back from `__consumer_offsets`, oldest first. Call
    /// [`Coordinator::start`] when every record is in.
    pub fn replay(&mut self, record: Record) {
        match record {
            Record::Offset {
                group,
                topic,
                partition,
                value,
            } => {
                let g = self.replayed_group(group);
                match value {
                    Some(v) => {
                        g.offsets.insert((topic, partition), v);
                    }
                    None => {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            }
            Record::Group { group, value: None } => {
                self.groups.remove(&group);
            }
            Record::ConsumerGroup { group, value } => match value {
                Some(r) => {
                    let g = self.replayed_group(group);
                    let cg = g.consumer.get_or_insert_with(ConsumerGroupState::default);
                    cg.group_epoch = r.group_epoch;
                    cg.assignment_epoch = r.assignment_epoch;
                    cg.assignor = r.assignor;
                    cg.subscribed = r.subscribed;
                }
                None => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.consumer = None;
                    }
                }
            },
            Record::ConsumerMember {
                group,
                member_id,
                value,
            } => match value {
                Some(r) => {
                    let g = self.replayed_group(group);
                    let cg = g.consumer.get_or_insert_with(ConsumerGroupState::default);
                    if r.target.is_empty() {
                        cg.target.remove(&member_id);
                    } else {
                        cg.target.insert(member_id.clone(), r.target.clone());
                    }
                    cg.members
                        .insert(member_id.clone(), ConsumerMember::from_record(member_id, r));
                }
                None => {
                    if let Some(cg) = self
                        .groups
                        .get_mut(&group)
                        .and_then(|g| g.consumer.as_mut())
                    {
                        cg.members.remove(&member_id);
                        cg.target.remove(&member_id);
                    }
                }
            },
            Record::Group {
                group,
                value: Some(meta),
            } => {
                let g = self
                    .groups
                    .entry(group.clone())
                    .or_insert_with(|| ClassicGroup::new(group, -1));
                g.generation = meta.generation;
                g.protocol_type = Some(meta.protocol_type).filter(|t| !t.is_empty());
                g.protocol = meta.protocol.clone();
                g.leader = meta.leader;
                g.state_timestamp = meta.state_timestamp;
                g.members.clear();
                g.static_members.clear();
                let protocol = meta.protocol.unwrap_or_default();
                for m in meta.members {
                    self.join_seq += 1;
                    if let Some(instance) = &m.instance_id {
                        g.static_members
                            .insert(instance.clone(), m.member_id.clone());
                    }
                    g.members.insert(
                        m.member_id.clone(),
                        Member {
                            member_id: m.member_id,
                            instance_id: m.instance_id,
                            client_id: m.client_id,
                            client_host: m.client_host,
                            session_timeout_ms: m.session_timeout_ms,
                            rebalance_timeout_ms: m.rebalance_timeout_ms,
                            protocols: vec![Protocol {
                                name: protocol.clone(),
                                metadata: m.subscription,
                            }],
                            assignment: m.assignment,
                            joined_seq: self.join_seq,
                            last_heartbeat: 0,
                            awaiting_join: None,
                            awaiting_sync: None,
                            timer_at: None,
                        },
                    );
                }
            }
        }
    }

    /// The group a replayed record belongs to, made when it is the group's first.
    fn replayed_group(&mut self, group: String) -> &mut ClassicGroup {
        self.groups
            .entry(group.clone())
            .or_insert_with(|| ClassicGroup::new(group, -1))
    }

    /// Starts serving after replay: loaded groups with members are Stable and their
    /// members get a full session from `now` to heartbeat again.
    pub fn start(&mut self, now: Millis) {
        let mut arm = Vec::new();
        for g in self.groups.values_mut() {
            g.state = if g.members.is_empty() {
                GroupState::Empty
            } else {
                GroupState::Stable
            };
            if g.state_timestamp < 0 {
                g.state_timestamp = now;
            }
            for m in g.members.values_mut() {
                m.last_heartbeat = now;
                arm.push((g.id.clone(), m.member_id.clone()));
            }
        }
        for (group, member) in arm {
            self.arm_session(&group, &member);
        }
        // KIP-848 members get a full session, and a revocation in flight its whole timeout.
        let session = Millis::from(self.config.consumer_session_timeout_ms);
        let mut consumer_timers = Vec::new();
        for g in self.groups.values_mut() {
            let Some(cg) = g.consumer.as_mut() else {
                continue;
            };
            for m in cg.members.values_mut() {
                m.last_heartbeat = now;
                m.revoke_deadline =
                    (!m.revoking.is_empty()).then(|| now + Millis::from(m.rebalance_timeout_ms));
                let deadline = (now + session).min(m.revoke_deadline.unwrap_or(Millis::MAX));
                m.timer_at = Some(deadline);
                consumer_timers.push((
                    deadline,
                    Timer::ConsumerSession {
                        group: g.id.clone(),
                        member: m.member_id.clone(),
                    },
                ));
            }
        }
        for (at, timer) in consumer_timers {
            self.push_timer(at, timer);
        }
        self.push_timer(
            now + self.config.offsets_retention_check_interval_ms,
            Timer::Retention,
        );
    }

    /// What a restart would bring back, group by group.
    pub fn persisted_view(&self) -> BTreeMap<String, PersistedGroup> {
        self.groups
            .values()
            .map(|g| {
                let metadata = (g.generation > 0 || !g.members.is_empty()).then(|| g.metadata());
                (
                    g.id.clone(),
                    PersistedGroup {
                        metadata,
                        offsets: g.offsets.clone(),
                        consumer: g.consumer.as_ref().map(ConsumerGroupState::snapshot),
                    },
                )
            })
            .collect()
    }

    // ---------------------------------------------------------------- timers

    /// When [`Coordinator::tick`] next has work.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Fires every timer due at `now`.
    pub fn tick(&mut self, now: Millis, fx: &mut Effects) {
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Reverse((at, _, timer)) = self.timers.pop().expect("peeked");
            self.fire(now, at, timer, fx);
        }
    }

    pub(super) fn push_timer(&mut self, at: Millis, timer: Timer) {
        self.timer_seq += 1;
        self.timers.push(Reverse((at, self.timer_seq, timer)));
    }

    /// Makes sure a timer is armed no later than the member's session deadline.
    fn arm_session(&mut self, group: &str, member: &str) {
        let Some(m) = self
            .groups
            .get_mut(group)
            .and_then(|g| g.members.get_mut(member))
        else {
            return;
        };
        let deadline = m.session_deadline();
        if m.timer_at.is_some_and(|at| at <= deadline) {
            return;
        }
        m.timer_at = Some(deadline);
        self.push_timer(
            deadline,
            Timer::Session {
                group: group.to_string(),
                member: member.to_string(),
            },
        );
    }

    fn fire(&mut self, now: Millis, at: Millis, timer: Timer, fx: &mut Effects) {
        match timer {
            Timer::Session { group, member } => {
                let Some(m) = self
                    .groups
                    .get_mut(&group)
                    .and_then(|g| g.members.get_mut(&member))
                else {
                    return;
                };
                if m.timer_at != Some(at) {
                    return; // a newer timer for this member is armed
                }
                m.timer_at = None;
                if m.is_waiting() {
                    m.last_heartbeat = now;
                    self.arm_session(&group, &member);
                } else if m.session_deadline() <= now {
                    self.remove_member(now, &group, &member, fx);
                } else {
                    self.arm_session(&group, &member);
                }
            }
            Timer::PendingMember { group, member } => {
                let Some(g) = self.groups.get_mut(&group) else {
                    return;
                };
                if let Some(&(issued, timeout)) = g.pending_members.get(&member) {
                    if issued + Millis::from(timeout) <= now {
                        g.pending_members.remove(&member);
                        self.maybe_complete_join(now, &group, fx);
                    }
                }
            }
            Timer::Join { group, epoch } => self.on_join_deadline(now, &group, epoch, fx),
            Timer::Sync { group, generation } => {
                let Some(g) = self.groups.get(&group) else {
                    return;
                };
                if g.state != GroupState::CompletingRebalance || g.generation != generation {
                    return;
                }
                // Members that never sent SyncGroup are gone; the rest rebalance without them.
                let missing: Vec<String> = g
                    .members
                    .values()
                    .filter(|m| m.awaiting_sync.is_none())
                    .map(|m| m.member_id.clone())
                    .collect();
                for member in missing {
                    self.detach_member(&group, &member, fx);
                }
                self.prepare_rebalance(now, &group, fx);
            }
            Timer::ConsumerSession { group, member } => {
                self.on_consumer_timer(now, at, &group, &member, fx)
            }
            Timer::Retention => {
                self.expire_offsets(now, fx);
                self.push_timer(
                    now + self.config.offsets_retention_check_interval_ms,
                    Timer::Retention,
                );
            }
        }
    }
}

/// Checks that `member_id` is in the group and, for a static member, that the instance id
/// still belongs to it.
pub(crate) fn check_member(
    g: &ClassicGroup,
    member_id: &str,
    instance_id: Option<&str>,
) -> Result<(), GroupError> {
    if let Some(instance) = instance_id {
        match g.static_member(instance) {
            Some(owner) if owner != member_id => {
                return Err(GroupError::FencedInstanceId {
                    instance_id: instance.to_string(),
                })
            }
            None if !g.members.contains_key(member_id) => {
                return Err(GroupError::UnknownMemberId {
                    member_id: member_id.to_string(),
                })
            }
            _ => {}
        }
    }
    if !g.members.contains_key(member_id) {
        return Err(GroupError::UnknownMemberId {
            member_id: member_id.to_string(),
        });
    }
    Ok(())
}
