//! Group administration: ListGroups, DescribeGroups, DeleteGroups.

use bytes::Bytes;

use super::Coordinator;
use crate::api::*;
use crate::consumer_protocol::{encode_assignment, encode_subscription};
use crate::error::GroupError;
use crate::group::GroupState;
use crate::record::Record;

impl Coordinator {
    /// ListGroups, filtered by state and type names (case-insensitive; empty filters match
    /// everything).
    pub fn list_groups(&self, states: &[String], types: &[String]) -> Vec<GroupListing> {
        let matches = |filter: &[String], name: &str| {
            filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(name))
        };
        self.groups
            .values()
            .filter(|g| matches(states, g.state_name()) && matches(types, g.group_type()))
            .map(|g| GroupListing {
                group_id: g.id.clone(),
                protocol_type: if g.group_type() == "consumer" {
                    "consumer".to_string()
                } else {
                    g.protocol_type.clone().unwrap_or_default()
                },
                state: g.state_name(),
                group_type: g.group_type(),
            })
            .collect()
    }

    /// DescribeGroups for one group; `None` when it does not exist.
    pub fn describe_group(&self, group_id: &str) -> Option<GroupDescription> {
        let g = self.groups.get(group_id)?;
        if let Some(cg) = g.consumer.as_ref().filter(|_| g.members.is_empty()) {
            // A KIP-848 group described the classic way: members with their current
            // assignment in the consumer protocol's encoding, as admin tools expect.
            return Some(GroupDescription {
                group_id: g.id.clone(),
                state: cg.state_name(),
                protocol_type: "consumer".into(),
                protocol: cg.assignor.clone(),
                generation: cg.group_epoch,
                members: cg
                    .members
                    .values()
                    .map(|m| MemberDescription {
                        member_id: m.member_id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: Bytes::from(encode_subscription(&m.topic_names)),
                        assignment: Bytes::from(encode_assignment(&m.assigned)),
                    })
                    .collect(),
            });
        }
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupDescription {
            group_id: g.id.clone(),
            state: g.state.as_str(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            generation: g.generation,
            members: g
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: if g.state == GroupState::Stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        })
    }

    /// DeleteGroups for one group: only an empty group can go; its offsets go with it.
    pub fn delete_group(&mut self, group_id: &str, fx: &mut Effects) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let g = self
            .groups
            .get(group_id)
            .ok_or_else(|| GroupError::GroupIdNotFound {
                group_id: group_id.to_string(),
            })?;
        let consumers = g.consumer.as_ref().is_some_and(|c| !c.members.is_empty());
        if g.state != GroupState::Empty || consumers {
            return Err(GroupError::NonEmptyGroup {
                group_id: group_id.to_string(),
            });
        }
        let g = self.groups.remove(group_id).expect("checked");
        if g.consumer.is_some() {
            fx.records.push(Record::ConsumerGroup {
                group: group_id.to_string(),
                value: None,
            });
        }
        for (topic, partition) in g.offsets.into_keys() {
            fx.records.push(Record::Offset {
                group: group_id.to_string(),
                topic,
                partition,
                value: None,
            });
        }
        fx.records.push(Record::Group {
            group: group_id.to_string(),
            value: None,
        });
        Ok(())
    }
}
