//! DescribeGroups: state, protocol and members (with client id, host, metadata and
//! assignment) of each group asked for.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::{Message, VersionRange};

use super::{str_bytes, RequestContext};
use crate::error::BrokerError;
use chorus_coordinator::GroupError;

pub const VERSIONS: VersionRange = DescribeGroupsRequest::VERSIONS;

/// READ, DELETE and DESCRIBE: what anyone may do to a group on a broker without ACLs.
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

pub async fn handle(
    ctx: &RequestContext,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let ids: Vec<String> = request.groups.iter().map(|g| g.to_string()).collect();
    let lookup = ids.clone();
    let result = ctx
        .broker
        .groups
        .call(move |r| {
            lookup
                .iter()
                .map(|id| r.coordinator.describe_group(id))
                .collect::<Vec<_>>()
        })
        .await;
    let operations = if request.include_authorized_operations {
        GROUP_OPERATIONS
    } else {
        i32::MIN
    };
    let described = match result {
        Ok(d) => d,
        Err(e) => {
            let groups = request
                .groups
                .into_iter()
                .map(|g| {
                    DescribedGroup::default()
                        .with_group_id(g)
                        .with_error_code(e.code())
                })
                .collect();
            return DescribeGroupsResponse::default().with_groups(groups);
        }
    };
    let groups = request
        .groups
        .into_iter()
        .zip(described)
        .map(|(id, d)| {
            let base = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(operations);
            match d {
                _ if id.is_empty() => {
                    base.with_error_code(BrokerError::Group(GroupError::InvalidGroupId).code())
                }
                Some(d) => base
                    .with_group_state(str_bytes(d.state))
                    .with_protocol_type(str_bytes(d.protocol_type))
                    .with_protocol_data(str_bytes(d.protocol))
                    .with_members(
                        d.members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(m.member_id))
                                    .with_group_instance_id(m.instance_id.map(str_bytes))
                                    .with_client_id(str_bytes(m.client_id))
                                    .with_client_host(str_bytes(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    ),
                // Before v6 an unknown group is described as Dead; v6 says it is not found.
                None if version >= 6 => {
                    let e = BrokerError::Group(GroupError::GroupIdNotFound {
                        group_id: id.to_string(),
                    });
                    base.with_error_code(e.code())
                        .with_error_message(Some(e.message()))
                        .with_group_state(str_bytes("Dead"))
                }
                None => base.with_group_state(str_bytes("Dead")),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
