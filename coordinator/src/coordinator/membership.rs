//! The classic group protocol: JoinGroup, SyncGroup, Heartbeat and LeaveGroup.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{check_member, Coordinator, Timer};
use crate::api::*;
use crate::error::GroupError;
use crate::group::{ClassicGroup, GroupState, Member};
use crate::record::Record;
use crate::Millis;

impl Coordinator {
    /// JoinGroup. The answer comes through `fx.replies` under `token`, now or when the
    /// rebalance completes.
    pub fn join(&mut self, now: Millis, token: Token, req: JoinRequest, fx: &mut Effects) {
        if let Err(e) = self.try_join(now, token, req, fx) {
            fx.replies.push((token, Reply::Join(Err(e))));
        }
    }

    pub(super) fn try_join(
        &mut self,
        now: Millis,
        token: Token,
        req: JoinRequest,
        fx: &mut Effects,
    ) -> Result<(), GroupError> {
        if req.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let (min, max) = (
            self.config.min_session_timeout_ms,
            self.config.max_session_timeout_ms,
        );
        if req.session_timeout_ms < min || req.session_timeout_ms > max {
            return Err(GroupError::InvalidSessionTimeout {
                given: req.session_timeout_ms,
                min,
                max,
            });
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let limit = self.config.member_metadata_max_bytes;
        if let Some(p) = req.protocols.iter().find(|p| p.metadata.len() > limit) {
            return Err(GroupError::MemberMetadataTooLarge {
                len: p.metadata.len(),
                max: limit,
            });
        }
        if !req.member_id.is_empty() && !self.groups.contains_key(&req.group_id) {
            return Err(GroupError::UnknownMemberId {
                member_id: req.member_id,
            });
        }
        let group = self
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(|| ClassicGroup::new(req.group_id.clone(), now));
        let consumers = group
            .consumer
            .as_ref()
            .is_some_and(|c| !c.members.is_empty());
        if consumers || !group.supports(&req.protocol_type, &req.protocols) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        if req.member_id.is_empty() {
            self.join_new_member(now, token, req, fx)
        } else {
            self.join_known_member(now, token, req, fx)
        }
    }

    pub(super) fn next_member_id(&mut self, prefix: &str) -> String {
        self.id_counter += 1;
        format!("{prefix}-{:08x}-{:06x}", self.id_nonce, self.id_counter)
    }

    pub(super) fn join_new_member(
        &mut self,
        now: Millis,
        token: Token,
        req: JoinRequest,
        fx: &mut Effects,
    ) -> Result<(), GroupError> {
        let group_id = req.group_id.clone();
        if let Some(instance) = &req.instance_id {
            let existing = self.groups[&group_id].static_member(instance).cloned();
            if let Some(old_id) = existing {
                let new_id = self.next_member_id(instance);
                return self.replace_static_member(now, token, &old_id, &new_id, req, fx);
            }
        }
        let g = &self.groups[&group_id];
        if g.members.len() + g.pending_members.len() >= self.config.max_group_size {
            return Err(GroupError::GroupMaxSizeReached {
                max: self.config.max_group_size,
            });
        }
        let prefix = if req.client_id.is_empty() {
            "member"
        } else {
            &req.client_id
        };
        let member_id = self.next_member_id(prefix);
        if req.instance_id.is_none() && req.require_known_member_id {
            let g = self.groups.get_mut(&group_id).expect("group exists");
            g.pending_members
                .insert(member_id.clone(), (now, req.session_timeout_ms));
            self.push_timer(
                now + Millis::from(req.session_timeout_ms),
                Timer::PendingMember {
                    group: group_id,
                    member: member_id.clone(),
                },
            );
            return Err(GroupError::MemberIdRequired { member_id });
        }
        self.add_member(now, token, &member_id, req, fx);
        Ok(())
    }

    pub(super) fn add_member(
        &mut self,
        now: Millis,
        token: Token,
        member_id: &str,
        req: JoinRequest,
        fx: &mut Effects,
    ) {
        let member_id = member_id.to_string();
        self.join_seq += 1;
        let g = self.groups.get_mut(&req.group_id).expect("group exists");
        g.pending_members.remove(&member_id);
        if g.members.is_empty() {
            g.protocol_type = Some(req.protocol_type.clone());
            // An idle KIP-848 group becomes a classic one (its offsets stay).
            if g.consumer.take().is_some() {
                fx.records.push(Record::ConsumerGroup {
                    group: g.id.clone(),
                    value: None,
                });
            }
        }
        if let Some(instance) = &req.instance_id {
            g.static_members.insert(instance.clone(), member_id.clone());
        }
        if g.leader.is_none() {
            g.leader = Some(member_id.clone());
        }
        g.new_member_added = true;
        g.members.insert(
            member_id.clone(),
            Member {
                member_id: member_id.clone(),
                instance_id: req.instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocols: req.protocols,
                assignment: Bytes::new(),
                joined_seq: self.join_seq,
                last_heartbeat: now,
                awaiting_join: Some(token),
                awaiting_sync: None,
                timer_at: None,
            },
        );
        self.arm_session(&req.group_id, &member_id);
        match self.groups[&req.group_id].state {
            GroupState::PreparingRebalance => self.maybe_complete_join(now, &req.group_id, fx),
            _ => self.prepare_rebalance(now, &req.group_id, fx),
        }
    }

    /// KIP-345: a static member came back under a new member id. The old id is fenced; a
    /// stable group whose chosen protocol is unaffected carries on without a rebalance.
    pub(super) fn replace_static_member(
        &mut self,
        now: Millis,
        token: Token,
        old_id: &str,
        new_id: &str,
        req: JoinRequest,
        fx: &mut Effects,
    ) -> Result<(), GroupError> {
        let group_id = req.group_id.clone();
        let g = self.groups.get_mut(&group_id).expect("group exists");
        let mut member = g.members.remove(old_id).expect("static member exists");
        let instance = member.instance_id.clone().unwrap_or_default();
        let fenced = || GroupError::FencedInstanceId {
            instance_id: instance.clone(),
        };
        if let Some(t) = member.awaiting_join.take() {
            fx.replies.push((t, Reply::Join(Err(fenced()))));
        }
        if let Some(t) = member.awaiting_sync.take() {
            fx.replies.push((t, Reply::Sync(Err(fenced()))));
        }
        member.protocols = req.protocols;
        member.member_id = new_id.to_string();
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.last_heartbeat = now;
        member.timer_at = None;
        g.static_members.insert(instance, new_id.to_string());
        if g.is_leader(old_id) {
            g.leader = Some(new_id.to_string());
        }
        g.members.insert(new_id.to_string(), member);
        // As in Kafka, only a change of the protocol the group would choose forces a
        // rebalance; new metadata alone (say, no owned partitions after a restart) does not.
        let unchanged = g.protocol.is_some() && g.select_protocol() == g.protocol;
        self.arm_session(&group_id, new_id);
        let g = self.groups.get_mut(&group_id).expect("group exists");
        match g.state {
            GroupState::Stable if unchanged => {
                // Persist the new member id, then answer with the current generation.
                let is_leader = g.is_leader(new_id);
                let response = join_response(g, new_id, is_leader, is_leader);
                fx.records.push(Record::Group {
                    group: group_id,
                    value: Some(g.metadata()),
                });
                fx.replies.push((token, Reply::Join(Ok(response))));
            }
            GroupState::PreparingRebalance => {
                g.members.get_mut(new_id).expect("inserted").awaiting_join = Some(token);
                self.maybe_complete_join(now, &group_id, fx);
            }
            _ => {
                g.members.get_mut(new_id).expect("inserted").awaiting_join = Some(token);
                self.prepare_rebalance(now, &group_id, fx);
            }
        }
        Ok(())
    }

    pub(super) fn join_known_member(
        &mut self,
        now: Millis,
        token: Token,
        req: JoinRequest,
        fx: &mut Effects,
    ) -> Result<(), GroupError> {
        let group_id = req.group_id.clone();
        let g = self.groups.get_mut(&group_id).expect("group exists");
        if g.pending_members.contains_key(&req.member_id) {
            let member_id = req.member_id.clone();
            self.add_member(now, token, &member_id, req, fx);
            return Ok(());
        }
        check_member(g, &req.member_id, req.instance_id.as_deref())?;
        let is_leader = g.is_leader(&req.member_id);
        let member = g.members.get_mut(&req.member_id).expect("checked");
        let unchanged = member.protocols == req.protocols;
        member.last_heartbeat = now;
        let state = g.state;
        let answer_current = match state {
            GroupState::CompletingRebalance => unchanged,
            GroupState::Stable => unchanged && !is_leader,
            _ => false,
        };
        if answer_current {
            // A member resending its join (it may have missed the answer): tell it the
            // current generation again.
            let response = join_response(g, &req.member_id, is_leader, false);
            fx.replies.push((token, Reply::Join(Ok(response))));
            return Ok(());
        }
        member.protocols = req.protocols;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        if let Some(old) = member.awaiting_join.replace(token) {
            fx.replies
                .push((old, Reply::Join(Err(GroupError::RebalanceInProgress))));
        }
        self.arm_session(&group_id, &req.member_id);
        match state {
            GroupState::PreparingRebalance => self.maybe_complete_join(now, &group_id, fx),
            _ => self.prepare_rebalance(now, &group_id, fx),
        }
        Ok(())
    }

    pub(super) fn prepare_rebalance(&mut self, now: Millis, group_id: &str, fx: &mut Effects) {
        let delay = self.config.initial_rebalance_delay_ms;
        let Some(g) = self.groups.get_mut(group_id) else {
            return;
        };
        if g.state == GroupState::CompletingRebalance {
            for m in g.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(t) = m.awaiting_sync.take() {
                    fx.replies
                        .push((t, Reply::Sync(Err(GroupError::RebalanceInProgress))));
                }
            }
        }
        let initial = g.state == GroupState::Empty;
        g.state = GroupState::PreparingRebalance;
        g.state_timestamp = now;
        g.rebalance_epoch += 1;
        let max_timeout = g.max_rebalance_timeout();
        let wait = if initial && delay > 0 {
            let first = delay.min(max_timeout);
            g.initial_delay_remaining = Some(max_timeout - first);
            g.new_member_added = false;
            first
        } else {
            g.initial_delay_remaining = None;
            max_timeout
        };
        g.join_deadline = now + Millis::from(wait);
        let (at, epoch) = (g.join_deadline, g.rebalance_epoch);
        self.push_timer(
            at,
            Timer::Join {
                group: group_id.to_string(),
                epoch,
            },
        );
        self.maybe_complete_join(now, group_id, fx);
    }

    pub(super) fn maybe_complete_join(&mut self, now: Millis, group_id: &str, fx: &mut Effects) {
        let Some(g) = self.groups.get(group_id) else {
            return;
        };
        if g.state == GroupState::PreparingRebalance
            && g.initial_delay_remaining.is_none()
            && g.all_members_joined()
        {
            self.complete_join(now, group_id, fx);
        }
    }

    pub(super) fn on_join_deadline(
        &mut self,
        now: Millis,
        group_id: &str,
        epoch: u64,
        fx: &mut Effects,
    ) {
        let delay = self.config.initial_rebalance_delay_ms;
        let Some(g) = self.groups.get_mut(group_id) else {
            return;
        };
        if g.state != GroupState::PreparingRebalance
            || g.rebalance_epoch != epoch
            || g.join_deadline > now
        {
            return;
        }
        if let Some(remaining) = g.initial_delay_remaining {
            if g.new_member_added && remaining > 0 {
                // Members are still arriving: wait another delay (bounded by the
                // rebalance timeout) rather than rebalance once per arrival.
                let more = delay.min(remaining);
                g.initial_delay_remaining = Some(remaining - more);
                g.new_member_added = false;
                g.join_deadline = now + Millis::from(more);
                let at = g.join_deadline;
                self.push_timer(
                    at,
                    Timer::Join {
                        group: group_id.to_string(),
                        epoch,
                    },
                );
                return;
            }
            g.initial_delay_remaining = None;
        }
        self.complete_join(now, group_id, fx);
    }

    /// Ends PreparingRebalance: members that did not rejoin are dropped, the generation
    /// moves on, and every waiting member gets its JoinGroup answer (the leader with the
    /// member list to assign).
    pub(super) fn complete_join(&mut self, now: Millis, group_id: &str, fx: &mut Effects) {
        let Some(g) = self.groups.get(group_id) else {
            return;
        };
        let stragglers: Vec<String> = g
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for member in stragglers {
            self.detach_member(group_id, &member, fx);
        }
        let g = self.groups.get_mut(group_id).expect("group exists");
        g.generation += 1;
        g.state_timestamp = now;
        g.initial_delay_remaining = None;
        if g.members.is_empty() {
            g.state = GroupState::Empty;
            g.protocol = None;
            g.leader = None;
            fx.records.push(Record::Group {
                group: group_id.to_string(),
                value: Some(g.metadata()),
            });
            return;
        }
        g.protocol = g.select_protocol();
        if !g.leader.as_ref().is_some_and(|l| g.members.contains_key(l)) {
            g.leader = g.first_member();
        }
        g.state = GroupState::CompletingRebalance;
        let leader = g.leader.clone().expect("non-empty group has a leader");
        let ids: Vec<String> = g.members.keys().cloned().collect();
        for id in &ids {
            let is_leader = *id == leader;
            let response = join_response(g, id, is_leader, false);
            let m = g.members.get_mut(id).expect("member");
            m.last_heartbeat = now;
            if let Some(t) = m.awaiting_join.take() {
                fx.replies.push((t, Reply::Join(Ok(response))));
            }
        }
        let (at, generation) = (now + Millis::from(g.max_rebalance_timeout()), g.generation);
        for id in &ids {
            self.arm_session(group_id, id);
        }
        self.push_timer(
            at,
            Timer::Sync {
                group: group_id.to_string(),
                generation,
            },
        );
    }

    /// Takes a member out of the group, answering anything it waits for, without
    /// triggering a rebalance (callers decide).
    pub(super) fn detach_member(&mut self, group_id: &str, member_id: &str, fx: &mut Effects) {
        let Some(g) = self.groups.get_mut(group_id) else {
            return;
        };
        let Some(m) = g.members.remove(member_id) else {
            return;
        };
        if let Some(instance) = &m.instance_id {
            if g.static_members.get(instance).map(String::as_str) == Some(member_id) {
                g.static_members.remove(instance);
            }
        }
        let unknown = || GroupError::UnknownMemberId {
            member_id: member_id.to_string(),
        };
        if let Some(t) = m.awaiting_join {
            fx.replies.push((t, Reply::Join(Err(unknown()))));
        }
        if let Some(t) = m.awaiting_sync {
            fx.replies.push((t, Reply::Sync(Err(unknown()))));
        }
        if g.is_leader(member_id) {
            g.leader = g.first_member();
        }
    }

    /// A member left or expired: remove it and let the group react.
    pub(super) fn remove_member(
        &mut self,
        now: Millis,
        group_id: &str,
        member_id: &str,
        fx: &mut Effects,
    ) {
        self.detach_member(group_id, member_id, fx);
        let Some(g) = self.groups.get(group_id) else {
            return;
        };
        match g.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, group_id, fx)
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now, group_id, fx),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ---------------------------------------------------------------- SyncGroup

    /// SyncGroup. Followers wait for the leader's assignment; the answer comes through
    /// `fx.replies` under `token`.
    pub fn sync(&mut self, now: Millis, token: Token, req: SyncRequest, fx: &mut Effects) {
        if let Err(e) = self.try_sync(now, token, req, fx) {
            fx.replies.push((token, Reply::Sync(Err(e))));
        }
    }

    pub(super) fn try_sync(
        &mut self,
        now: Millis,
        token: Token,
        req: SyncRequest,
        fx: &mut Effects,
    ) -> Result<(), GroupError> {
        if req.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let g = self
            .groups
            .get_mut(&req.group_id)
            .ok_or_else(|| GroupError::UnknownMemberId {
                member_id: req.member_id.clone(),
            })?;
        check_member(g, &req.member_id, req.instance_id.as_deref())?;
        if req.generation != g.generation {
            return Err(GroupError::IllegalGeneration {
                given: req.generation,
                current: g.generation,
            });
        }
        let type_mismatch = req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != g.protocol_type.as_ref());
        let name_mismatch = req
            .protocol
            .as_ref()
            .is_some_and(|p| Some(p) != g.protocol.as_ref());
        if type_mismatch || name_mismatch {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        match g.state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId {
                member_id: req.member_id,
            }),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Stable => {
                let m = g.members.get_mut(&req.member_id).expect("checked");
                m.last_heartbeat = now;
                let response = SyncResponse {
                    protocol_type: g.protocol_type.clone(),
                    protocol: g.protocol.clone(),
                    assignment: m.assignment.clone(),
                };
                fx.replies.push((token, Reply::Sync(Ok(response))));
                Ok(())
            }
            GroupState::CompletingRebalance => {
                let is_leader = g.is_leader(&req.member_id);
                let m = g.members.get_mut(&req.member_id).expect("checked");
                m.last_heartbeat = now;
                if let Some(old) = m.awaiting_sync.replace(token) {
                    fx.replies
                        .push((old, Reply::Sync(Err(GroupError::RebalanceInProgress))));
                }
                if is_leader {
                    let mut given: BTreeMap<String, Bytes> = req.assignments.into_iter().collect();
                    for m in g.members.values_mut() {
                        m.assignment = given.remove(&m.member_id).unwrap_or_default();
                    }
                    g.state = GroupState::Stable;
                    g.state_timestamp = now;
                    fx.records.push(Record::Group {
                        group: g.id.clone(),
                        value: Some(g.metadata()),
                    });
                    for m in g.members.values_mut() {
                        if let Some(t) = m.awaiting_sync.take() {
                            let response = SyncResponse {
                                protocol_type: g.protocol_type.clone(),
                                protocol: g.protocol.clone(),
                                assignment: m.assignment.clone(),
                            };
                            fx.replies.push((t, Reply::Sync(Ok(response))));
                        }
                    }
                }
                Ok(())
            }
        }
    }

    // ---------------------------------------------------------------- Heartbeat, LeaveGroup

    pub fn heartbeat(&mut self, now: Millis, req: &HeartbeatRequest) -> Result<(), GroupError> {
        if req.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let g = self
            .groups
            .get_mut(&req.group_id)
            .ok_or_else(|| GroupError::UnknownMemberId {
                member_id: req.member_id.clone(),
            })?;
        check_member(g, &req.member_id, req.instance_id.as_deref())?;
        if req.generation != g.generation {
            return Err(GroupError::IllegalGeneration {
                given: req.generation,
                current: g.generation,
            });
        }
        let state = g.state;
        g.members
            .get_mut(&req.member_id)
            .expect("checked")
            .last_heartbeat = now;
        match state {
            GroupState::Stable | GroupState::CompletingRebalance => Ok(()),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId {
                member_id: req.member_id.clone(),
            }),
        }
    }

    /// LeaveGroup: one result per member, in order.
    pub fn leave(
        &mut self,
        now: Millis,
        group_id: &str,
        members: &[LeaveMember],
        fx: &mut Effects,
    ) -> Vec<Result<(), GroupError>> {
        let mut results = Vec::with_capacity(members.len());
        for leaving in members {
            results.push(self.leave_one(now, group_id, leaving, fx));
        }
        results
    }

    pub(super) fn leave_one(
        &mut self,
        now: Millis,
        group_id: &str,
        leaving: &LeaveMember,
        fx: &mut Effects,
    ) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let unknown = || GroupError::UnknownMemberId {
            member_id: leaving.member_id.clone(),
        };
        let g = self.groups.get_mut(group_id).ok_or_else(unknown)?;
        let member_id = if leaving.member_id.is_empty() {
            // KIP-345: an admin removing a static member by instance id.
            let instance = leaving.instance_id.as_deref().ok_or_else(unknown)?;
            g.static_member(instance).cloned().ok_or_else(unknown)?
        } else {
            leaving.member_id.clone()
        };
        if g.pending_members.remove(&member_id).is_some() {
            self.maybe_complete_join(now, group_id, fx);
            return Ok(());
        }
        check_member(g, &member_id, leaving.instance_id.as_deref())?;
        self.remove_member(now, group_id, &member_id, fx);
        Ok(())
    }
}

/// The JoinGroup answer for `member_id` in the group's current generation.
fn join_response(
    g: &ClassicGroup,
    member_id: &str,
    with_members: bool,
    skip_assignment: bool,
) -> JoinResponse {
    let protocol = g.protocol.clone().unwrap_or_default();
    JoinResponse {
        generation: g.generation,
        protocol_type: g.protocol_type.clone(),
        protocol: g.protocol.clone(),
        leader: g.leader.clone().unwrap_or_default(),
        member_id: member_id.to_string(),
        skip_assignment,
        members: if with_members {
            g.members
                .values()
                .map(|m| JoinedMember {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    metadata: m.metadata_for(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}
