//! ListGroups: every group, optionally filtered by state (v4+) and type (v5+, `classic` or
//! `consumer`).

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::{Message, VersionRange};

use super::{str_bytes, RequestContext};

pub const VERSIONS: VersionRange = ListGroupsRequest::VERSIONS;

pub async fn handle(
    ctx: &RequestContext,
    request: ListGroupsRequest,
    _version: i16,
) -> ListGroupsResponse {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_string())
        .collect();
    let types: Vec<String> = request.types_filter.iter().map(|s| s.to_string()).collect();
    let result = ctx
        .broker
        .groups
        .call(move |r| r.coordinator.list_groups(&states, &types))
        .await;
    match result {
        Ok(groups) => ListGroupsResponse::default().with_groups(
            groups
                .into_iter()
                .map(|g| {
                    ListedGroup::default()
                        .with_group_id(GroupId(str_bytes(g.group_id)))
                        .with_protocol_type(str_bytes(g.protocol_type))
                        .with_group_state(str_bytes(g.state))
                        .with_group_type(str_bytes(g.group_type))
                })
                .collect(),
        ),
        Err(e) => ListGroupsResponse::default().with_error_code(e.code()),
    }
}
