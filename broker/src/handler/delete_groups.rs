//! DeleteGroups: remove empty groups and their committed offsets.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};
use kafka_protocol::protocol::{Message, VersionRange};

use super::RequestContext;
use crate::error::BrokerError;

pub const VERSIONS: VersionRange = DeleteGroupsRequest::VERSIONS;

pub async fn handle(
    ctx: &RequestContext,
    request: DeleteGroupsRequest,
    _version: i16,
) -> DeleteGroupsResponse {
    let ids: Vec<String> = request.groups_names.iter().map(|g| g.to_string()).collect();
    let result = ctx
        .broker
        .groups
        .call(move |r| {
            ids.iter()
                .map(|id| r.coordinator.delete_group(id, r.fx))
                .collect::<Vec<_>>()
        })
        .await;
    let results = request
        .groups_names
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let code = match &result {
                Err(e) => e.code(),
                Ok(results) => match &results[i] {
                    Ok(()) => 0,
                    Err(e) => BrokerError::Group(e.clone()).code(),
                },
            };
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code)
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
