//! The offset store: OffsetCommit, OffsetFetch, OffsetDelete and offset retention.

use super::{check_member, Coordinator};
use crate::api::*;
use crate::error::GroupError;
use crate::group::{ClassicGroup, GroupState};
use crate::record::{CommittedOffset, Record};
use crate::Millis;

impl Coordinator {
    /// OffsetCommit. `Err` applies to every partition; otherwise one result per partition
    /// in order. The caller has already checked that topics exist and offsets are in range.
    pub fn commit_offsets(
        &mut self,
        now: Millis,
        req: CommitRequest,
        fx: &mut Effects,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        if req.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let from_outside = req.generation < 0 && req.member_id.is_empty();
        let g = match self.groups.get_mut(&req.group_id) {
            Some(g) => g,
            None if from_outside => self
                .groups
                .entry(req.group_id.clone())
                .or_insert_with(|| ClassicGroup::new(req.group_id.clone(), now)),
            None => {
                return Err(GroupError::IllegalGeneration {
                    given: req.generation,
                    current: -1,
                })
            }
        };
        let kip848 = g.members.is_empty() && g.consumer.is_some();
        if from_outside {
            let consumers = g.consumer.as_ref().is_some_and(|c| !c.members.is_empty());
            if g.state != GroupState::Empty || consumers {
                return Err(GroupError::NotEmptyForOutsideCommit {
                    group_id: req.group_id,
                });
            }
        } else if kip848 {
            // KIP-848 members commit with their member epoch.
            let cg = g.consumer.as_mut().expect("checked");
            let m =
                cg.members
                    .get_mut(&req.member_id)
                    .ok_or_else(|| GroupError::UnknownMemberId {
                        member_id: req.member_id.clone(),
                    })?;
            if req.generation != m.member_epoch {
                return Err(GroupError::StaleMemberEpoch {
                    given: req.generation,
                    current: m.member_epoch,
                });
            }
            m.last_heartbeat = now;
        } else {
            check_member(g, &req.member_id, req.instance_id.as_deref())?;
            if req.generation != g.generation {
                return Err(GroupError::IllegalGeneration {
                    given: req.generation,
                    current: g.generation,
                });
            }
            if g.state == GroupState::CompletingRebalance {
                return Err(GroupError::RebalanceInProgress);
            }
            g.members
                .get_mut(&req.member_id)
                .expect("checked")
                .last_heartbeat = now;
        }
        let max = self.config.offset_metadata_max_bytes;
        let results = req
            .offsets
            .into_iter()
            .map(|p| {
                if p.metadata.len() > max {
                    return Err(GroupError::OffsetMetadataTooLarge {
                        len: p.metadata.len(),
                        max,
                    });
                }
                let value = CommittedOffset {
                    offset: p.offset,
                    leader_epoch: p.leader_epoch,
                    metadata: p.metadata,
                    commit_timestamp: now,
                };
                g.offsets
                    .insert((p.topic.clone(), p.partition), value.clone());
                fx.records.push(Record::Offset {
                    group: g.id.clone(),
                    topic: p.topic,
                    partition: p.partition,
                    value: Some(value),
                });
                Ok(())
            })
            .collect();
        Ok(results)
    }

    /// OffsetFetch v9+ names the member asking (KIP-848 consumers do). A member epoch of -1
    /// is an admin fetch and is always allowed; otherwise the member must be in the group
    /// at that epoch (generation, for a classic group).
    pub fn validate_offset_fetch(
        &self,
        group_id: &str,
        member_id: Option<&str>,
        member_epoch: i32,
    ) -> Result<(), GroupError> {
        if member_epoch < 0 {
            return Ok(());
        }
        let member_id = member_id.unwrap_or_default();
        let unknown = || GroupError::UnknownMemberId {
            member_id: member_id.to_string(),
        };
        let g = self.groups.get(group_id).ok_or_else(unknown)?;
        match &g.consumer {
            Some(cg) if g.members.is_empty() => {
                let m = cg.members.get(member_id).ok_or_else(unknown)?;
                if m.member_epoch != member_epoch {
                    return Err(GroupError::StaleMemberEpoch {
                        given: member_epoch,
                        current: m.member_epoch,
                    });
                }
            }
            _ => {
                if !g.members.contains_key(member_id) {
                    return Err(unknown());
                }
                if g.generation != member_epoch {
                    return Err(GroupError::IllegalGeneration {
                        given: member_epoch,
                        current: g.generation,
                    });
                }
            }
        }
        Ok(())
    }

    /// OffsetFetch: the given partitions (each with its offset or none), or with `None` every
    /// partition the group has an offset for. An unknown group has no offsets.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[(String, Vec<i32>)]>,
    ) -> Vec<FetchedOffset> {
        let group = self.groups.get(group_id);
        match partitions {
            None => group
                .into_iter()
                .flat_map(|g| g.offsets.iter())
                .map(|((topic, partition), c)| FetchedOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    committed: Some(c.clone()),
                })
                .collect(),
            Some(wanted) => wanted
                .iter()
                .flat_map(|(topic, ps)| ps.iter().map(move |p| (topic, *p)))
                .map(|(topic, partition)| FetchedOffset {
                    topic: topic.clone(),
                    partition,
                    committed: group
                        .and_then(|g| g.offsets.get(&(topic.clone(), partition)))
                        .cloned(),
                })
                .collect(),
        }
    }

    /// OffsetDelete: removes committed offsets of topics the group does not subscribe to.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[(String, i32)],
        fx: &mut Effects,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let g = self
            .groups
            .get_mut(group_id)
            .ok_or_else(|| GroupError::GroupIdNotFound {
                group_id: group_id.to_string(),
            })?;
        let subscribed = if g.is_empty() {
            Vec::new()
        } else {
            g.subscribed_topics()
        };
        Ok(partitions
            .iter()
            .map(|(topic, partition)| {
                if subscribed.contains(topic) {
                    return Err(GroupError::GroupSubscribedToTopic {
                        topic: topic.clone(),
                    });
                }
                if g.offsets.remove(&(topic.clone(), *partition)).is_some() {
                    fx.records.push(Record::Offset {
                        group: group_id.to_string(),
                        topic: topic.clone(),
                        partition: *partition,
                        value: None,
                    });
                }
                Ok(())
            })
            .collect())
    }

    /// Offset retention: an empty group's offsets expire `offsets.retention.minutes` after
    /// the group became empty (or after the commit, if later: an admin reset of an old
    /// empty group is kept for a full period); an empty group left with no offsets goes.
    pub(super) fn expire_offsets(&mut self, now: Millis, fx: &mut Effects) {
        let retention = self.config.offsets_retention_ms;
        let mut dead = Vec::new();
        for g in self.groups.values_mut() {
            if g.state != GroupState::Empty || !g.is_empty() {
                continue;
            }
            let since = g.state_timestamp;
            let expired: Vec<(String, i32)> = g
                .offsets
                .iter()
                .filter(|(_, c)| c.commit_timestamp.max(since) + retention <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for (topic, partition) in expired {
                g.offsets.remove(&(topic.clone(), partition));
                fx.records.push(Record::Offset {
                    group: g.id.clone(),
                    topic,
                    partition,
                    value: None,
                });
            }
            if g.offsets.is_empty() && since + retention <= now {
                dead.push(g.id.clone());
            }
        }
        for id in dead {
            let g = self.groups.remove(&id).expect("listed above");
            if g.consumer.is_some() {
                fx.records.push(Record::ConsumerGroup {
                    group: id.clone(),
                    value: None,
                });
            }
            fx.records.push(Record::Group {
                group: id,
                value: None,
            });
        }
    }
}
