//! Group administration: ListGroups, DescribeGroups, DeleteGroups.

use bytes::Bytes;

use super::Coordinator;
use crate::api::*;
use crate::error::GroupError;
use crate::group::GroupState;
use crate::record::Record;

impl Coordinator {
    /// ListGroups, filtered by state and type (empty filters match everything).
    pub fn list_groups(&self, states: &[GroupState], types: &[String]) -> Vec<GroupListing> {
        self.groups
            .values()
            .filter(|g| states.is_empty() || states.contains(&g.state))
            .filter(|_| types.is_empty() || types.iter().any(|t| t.eq_ignore_ascii_case("classic")))
            .map(|g| GroupListing {
                group_id: g.id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
                group_type: "classic",
            })
            .collect()
    }

    /// DescribeGroups for one group; `None` when it does not exist.
    pub fn describe_group(&self, group_id: &str) -> Option<GroupDescription> {
        let g = self.groups.get(group_id)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupDescription {
            group_id: g.id.clone(),
            state: g.state,
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
        if g.state != GroupState::Empty {
            return Err(GroupError::NonEmptyGroup {
                group_id: group_id.to_string(),
            });
        }
        let g = self.groups.remove(group_id).expect("checked");
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
