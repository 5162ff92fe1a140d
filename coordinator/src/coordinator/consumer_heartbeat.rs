//! KIP-848: ConsumerGroupHeartbeat and ConsumerGroupDescribe (see [`crate::consumer`] for
//! how members converge).

use std::collections::{BTreeMap, BTreeSet};

use super::{Coordinator, Timer};
use crate::api::*;
use crate::assignor::{by_name, Subscriber};
use crate::consumer::{
    from_pairs, normalized, pairs, ConsumerGroupState, ConsumerMarker, ConsumerMember,
};
use crate::error::GroupError;
use crate::group::ClassicGroup;
use crate::record::Record;
use crate::Millis;

impl Coordinator {
    /// One KIP-848 heartbeat. `topics` is every topic's partition count (for subscriptions
    /// and the assignment). What it changed in the group goes to `fx` as records.
    pub fn consumer_heartbeat(
        &mut self,
        now: Millis,
        req: ConsumerHeartbeat,
        topics: &BTreeMap<String, i32>,
        fx: &mut Effects,
    ) -> Result<ConsumerHeartbeatResponse, GroupError> {
        let group = req.group_id.clone();
        let before = self.consumer_marker(&group, &req.member_id);
        let member_id = req.member_id.clone();
        let result = self.apply_consumer_heartbeat(now, req, topics);
        // A joining member's id is made during the heartbeat.
        let member_id = match &result {
            Ok(r) => r.member_id.clone(),
            Err(_) => member_id,
        };
        self.persist_consumer_changes(&group, &member_id, before, fx);
        result
    }

    /// What [`Coordinator::persist_consumer_changes`] compares against: the group record,
    /// the member ids, and the record of the member about to change.
    pub(super) fn consumer_marker(&self, group: &str, member_id: &str) -> Option<ConsumerMarker> {
        let cg = self.groups.get(group)?.consumer.as_ref()?;
        Some(ConsumerMarker {
            group: cg.record(),
            members: cg.members.keys().cloned().collect(),
            member: cg.member_record(member_id),
        })
    }

    /// Records for what changed since `before`. A step that moves the group's epochs may
    /// have changed every member's target, so it rewrites every member; otherwise only
    /// `member_id` can have changed (a heartbeat reconciles only its own member), which
    /// keeps a steady heartbeat to one small record or none.
    pub(super) fn persist_consumer_changes(
        &self,
        group: &str,
        member_id: &str,
        before: Option<ConsumerMarker>,
        fx: &mut Effects,
    ) {
        let record = |member_id: String, value| Record::ConsumerMember {
            group: group.to_string(),
            member_id,
            value,
        };
        let Some(cg) = self.groups.get(group).and_then(|g| g.consumer.as_ref()) else {
            if let Some(before) = before {
                for id in before.members {
                    fx.records.push(record(id, None));
                }
                fx.records.push(Record::ConsumerGroup {
                    group: group.to_string(),
                    value: None,
                });
            }
            return;
        };
        let now = cg.record();
        let (old_group, old_members, old_member) = match before {
            Some(b) => (Some(b.group), b.members, b.member),
            None => (None, BTreeSet::new(), None),
        };
        let epochs_moved = old_group.as_ref().is_none_or(|g| {
            g.group_epoch != now.group_epoch || g.assignment_epoch != now.assignment_epoch
        });
        if old_group.as_ref() != Some(&now) {
            fx.records.push(Record::ConsumerGroup {
                group: group.to_string(),
                value: Some(now),
            });
        }
        if epochs_moved {
            for id in cg.members.keys() {
                fx.records.push(record(id.clone(), cg.member_record(id)));
            }
        } else if let Some(current) = cg.member_record(member_id) {
            if old_member.as_ref() != Some(&current) {
                fx.records
                    .push(record(member_id.to_string(), Some(current)));
            }
        }
        for id in old_members {
            if !cg.members.contains_key(&id) {
                fx.records.push(record(id, None));
            }
        }
    }

    fn apply_consumer_heartbeat(
        &mut self,
        now: Millis,
        req: ConsumerHeartbeat,
        topics: &BTreeMap<String, i32>,
    ) -> Result<ConsumerHeartbeatResponse, GroupError> {
        if req.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let unknown = || GroupError::UnknownMemberId {
            member_id: req.member_id.clone(),
        };
        if req.member_epoch != 0 && !self.groups.contains_key(&req.group_id) {
            return Err(unknown());
        }
        if let Some(name) = &req.server_assignor {
            if by_name(name).is_none() {
                return Err(GroupError::UnsupportedAssignor { name: name.clone() });
            }
        }
        let regex = match &req.topic_regex {
            Some(pattern) => Some(regex::Regex::new(pattern).map_err(|_| {
                GroupError::InvalidRegularExpression {
                    pattern: pattern.clone(),
                }
            })?),
            None => None,
        };
        if let Some(g) = self.groups.get(&req.group_id) {
            if !g.members.is_empty() || !g.pending_members.is_empty() {
                // A classic group in use; converting between protocols is not supported.
                return Err(GroupError::InconsistentGroupProtocol);
            }
        }
        let default_assignor = self.config.consumer_default_assignor;
        let interval = self.config.consumer_heartbeat_interval_ms;
        let session = Millis::from(self.config.consumer_session_timeout_ms);
        let member_id = match (req.member_epoch, req.member_id.is_empty()) {
            (0, true) => {
                let prefix = if req.client_id.is_empty() {
                    "member"
                } else {
                    &req.client_id
                };
                self.next_member_id(prefix)
            }
            (_, true) => return Err(unknown()),
            _ => req.member_id.clone(),
        };
        let g = self
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(|| ClassicGroup::new(req.group_id.clone(), now));
        let cg = g.consumer.get_or_insert_with(|| ConsumerGroupState {
            assignor: default_assignor.to_string(),
            ..ConsumerGroupState::default()
        });
        let epoch_before = cg.group_epoch;
        let send;
        match req.member_epoch {
            0 => {
                if req.topic_names.is_none() && req.topic_regex.is_none() {
                    return Err(GroupError::InvalidHeartbeat {
                        reason: "a joining member must subscribe to topic names or a regex",
                    });
                }
                // A static member coming back replaces its previous incarnation.
                if let Some(instance) = &req.instance_id {
                    let old: Vec<String> = cg
                        .members
                        .values()
                        .filter(|m| {
                            m.instance_id.as_ref() == Some(instance) && m.member_id != member_id
                        })
                        .map(|m| m.member_id.clone())
                        .collect();
                    for id in old {
                        cg.members.remove(&id);
                    }
                }
                cg.members.insert(
                    member_id.clone(),
                    ConsumerMember {
                        member_id: member_id.clone(),
                        instance_id: req.instance_id.clone(),
                        rack_id: req.rack_id.clone(),
                        client_id: req.client_id.clone(),
                        client_host: req.client_host.clone(),
                        member_epoch: 0,
                        previous_epoch: 0,
                        rebalance_timeout_ms: req.rebalance_timeout_ms,
                        topic_names: req.topic_names.clone().unwrap_or_default(),
                        topic_regex: req.topic_regex.clone(),
                        regex,
                        server_assignor: req.server_assignor.clone(),
                        assigned: Default::default(),
                        revoking: Default::default(),
                        last_heartbeat: now,
                        revoke_deadline: None,
                        timer_at: None,
                    },
                );
                cg.group_epoch += 1;
                send = true;
            }
            -1 | -2 => {
                if cg.members.remove(&member_id).is_none() {
                    return Err(unknown());
                }
                cg.group_epoch += 1;
                let subscribed = cg.subscribed.clone();
                refresh_target(cg, &subscribed);
                return Ok(ConsumerHeartbeatResponse {
                    member_id,
                    member_epoch: req.member_epoch,
                    heartbeat_interval_ms: interval,
                    assignment: None,
                });
            }
            epoch => {
                let m = cg.members.get_mut(&member_id).ok_or_else(unknown)?;
                if epoch != m.member_epoch && epoch != m.previous_epoch {
                    return Err(GroupError::FencedMemberEpoch {
                        given: epoch,
                        current: m.member_epoch,
                    });
                }
                // An answer was lost: say everything again.
                send = epoch != m.member_epoch;
                let mut changed = false;
                if let Some(names) = &req.topic_names {
                    if *names != m.topic_names {
                        m.topic_names = names.clone();
                        changed = true;
                    }
                }
                if req.topic_regex.is_some() && req.topic_regex != m.topic_regex {
                    m.topic_regex = req.topic_regex.clone();
                    m.regex = regex;
                    changed = true;
                }
                if req.server_assignor.is_some() {
                    m.server_assignor = req.server_assignor.clone();
                }
                if changed {
                    cg.group_epoch += 1;
                }
            }
        }
        if let Some(name) = cg.members.values().find_map(|m| m.server_assignor.clone()) {
            cg.assignor = name;
        }
        // The subscribed topics and their sizes, as the broker sees them now.
        let mut subscribed = BTreeMap::new();
        for m in cg.members.values() {
            for t in m.subscribed(topics.keys()) {
                subscribed.insert(t.clone(), topics[&t]);
            }
        }
        // One bump per heartbeat: a join that also brings new topics is one change.
        if subscribed != cg.subscribed && cg.group_epoch == epoch_before {
            cg.group_epoch += 1;
        }
        refresh_target(cg, &subscribed);
        let owned = req.owned.as_ref().map(normalized);
        let m = cg.members.get(&member_id).expect("member present");
        let rebalance_timeout = Millis::from(m.rebalance_timeout_ms);
        let changed = reconcile(cg, &member_id, owned.as_ref(), now + rebalance_timeout);
        let m = cg.members.get_mut(&member_id).expect("member present");
        m.last_heartbeat = now;
        let response = ConsumerHeartbeatResponse {
            member_id: member_id.clone(),
            member_epoch: m.member_epoch,
            heartbeat_interval_ms: interval,
            assignment: (send || changed).then(|| m.assigned.clone()),
        };
        let deadline = (now + session).min(m.revoke_deadline.unwrap_or(Millis::MAX));
        if m.timer_at.is_none_or(|at| at > deadline) {
            m.timer_at = Some(deadline);
            self.push_timer(
                deadline,
                Timer::ConsumerSession {
                    group: req.group_id,
                    member: member_id,
                },
            );
        }
        Ok(response)
    }

    /// The session or revocation timer of a KIP-848 member fired.
    pub(super) fn on_consumer_timer(
        &mut self,
        now: Millis,
        at: Millis,
        group: &str,
        member: &str,
        fx: &mut Effects,
    ) {
        let before = self.consumer_marker(group, member);
        self.expire_consumer_member(now, at, group, member);
        self.persist_consumer_changes(group, member, before, fx);
    }

    fn expire_consumer_member(&mut self, now: Millis, at: Millis, group: &str, member: &str) {
        let session = Millis::from(self.config.consumer_session_timeout_ms);
        let Some(cg) = self.groups.get_mut(group).and_then(|g| g.consumer.as_mut()) else {
            return;
        };
        let Some(m) = cg.members.get_mut(member) else {
            return;
        };
        if m.timer_at != Some(at) {
            return;
        }
        m.timer_at = None;
        let expired = m.last_heartbeat + session <= now;
        let stuck = m.revoke_deadline.is_some_and(|d| d <= now);
        if expired || stuck {
            cg.members.remove(member);
            cg.group_epoch += 1;
            let subscribed = cg.subscribed.clone();
            refresh_target(cg, &subscribed);
            return;
        }
        let deadline = (m.last_heartbeat + session).min(m.revoke_deadline.unwrap_or(Millis::MAX));
        m.timer_at = Some(deadline);
        self.push_timer(
            deadline,
            Timer::ConsumerSession {
                group: group.to_string(),
                member: member.to_string(),
            },
        );
    }

    /// ConsumerGroupDescribe for one group; `None` when it is not a KIP-848 group.
    pub fn describe_consumer_group(&self, group_id: &str) -> Option<ConsumerGroupDescription> {
        let cg = self.groups.get(group_id)?.consumer.as_ref()?;
        Some(ConsumerGroupDescription {
            group_id: group_id.to_string(),
            state: cg.state_name(),
            group_epoch: cg.group_epoch,
            assignment_epoch: cg.assignment_epoch,
            assignor: cg.assignor.clone(),
            members: cg
                .members
                .values()
                .map(|m| ConsumerMemberDescription {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.member_epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    topic_names: m.topic_names.clone(),
                    topic_regex: m.topic_regex.clone(),
                    assignment: m.assigned.clone(),
                    target: cg.target.get(&m.member_id).cloned().unwrap_or_default(),
                })
                .collect(),
        })
    }
}

/// Recomputes the target assignment when the group epoch moved past it.
fn refresh_target(cg: &mut ConsumerGroupState, subscribed: &BTreeMap<String, i32>) {
    cg.subscribed = subscribed.clone();
    if cg.group_epoch <= cg.assignment_epoch {
        return;
    }
    let subscribers: Vec<Subscriber> = cg
        .members
        .values()
        .map(|m| Subscriber {
            member_id: m.member_id.clone(),
            topics: m.subscribed(subscribed.keys()),
        })
        .collect();
    let assignor = by_name(&cg.assignor).unwrap_or_else(|| by_name("uniform").expect("built in"));
    cg.target = assignor.assign(&subscribers, subscribed, &cg.target);
    cg.assignment_epoch = cg.group_epoch;
}

/// Moves one member toward its target; true when what it should own changed.
fn reconcile(
    cg: &mut ConsumerGroupState,
    member_id: &str,
    owned: Option<&crate::assignor::MemberAssignment>,
    revoke_deadline: Millis,
) -> bool {
    let target = normalized(&cg.target.get(member_id).cloned().unwrap_or_default());
    let assignment_epoch = cg.assignment_epoch;
    let m = cg.members.get_mut(member_id).expect("member present");
    let mut changed = false;
    // 1. The member confirms revocations by no longer listing the partitions.
    if !m.revoking.is_empty() {
        if let Some(owned) = owned {
            let still: Vec<(String, i32)> = pairs(&m.revoking)
                .filter(|(t, p)| owned.get(t).is_some_and(|ps| ps.contains(p)))
                .collect();
            m.revoking = from_pairs(still);
            if m.revoking.is_empty() {
                m.revoke_deadline = None;
            }
        }
    }
    // 2. Anything it owns outside its target must go first.
    let target_pairs: std::collections::BTreeSet<(String, i32)> = pairs(&target).collect();
    let (keep, revoke): (Vec<_>, Vec<_>) =
        pairs(&m.assigned).partition(|tp| target_pairs.contains(tp));
    if !revoke.is_empty() {
        m.assigned = from_pairs(keep);
        m.revoking = from_pairs(pairs(&m.revoking).chain(revoke));
        m.revoke_deadline = Some(revoke_deadline);
        changed = true;
    }
    // 3. With nothing left to revoke, move to the target epoch and take what is free.
    if m.revoking.is_empty() {
        let mine: std::collections::BTreeSet<(String, i32)> = pairs(&m.assigned).collect();
        let missing: Vec<(String, i32)> = target_pairs.difference(&mine).cloned().collect();
        // Only a member still missing partitions needs to look at what the others hold.
        let free: Vec<(String, i32)> = if missing.is_empty() {
            Vec::new()
        } else {
            let held_by_others = cg.held_by_others(member_id);
            missing
                .into_iter()
                .filter(|tp| !held_by_others.contains(tp))
                .collect()
        };
        let m = cg.members.get_mut(member_id).expect("member present");
        if !free.is_empty() {
            m.assigned = from_pairs(pairs(&m.assigned).chain(free));
            changed = true;
        }
        if m.member_epoch != assignment_epoch {
            m.previous_epoch = m.member_epoch;
            m.member_epoch = assignment_epoch;
            changed = true;
        }
    }
    changed
}
