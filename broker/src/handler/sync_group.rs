//! SyncGroup: the leader hands out the assignment; every member receives its own.

use chorus_coordinator::{GroupError, SyncRequest};
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::{Message, VersionRange};

use super::{str_bytes, RequestContext};
use crate::error::BrokerError;

pub const VERSIONS: VersionRange = SyncGroupRequest::VERSIONS;

pub async fn handle(
    ctx: &RequestContext,
    request: SyncGroupRequest,
    _version: i16,
) -> SyncGroupResponse {
    let req = SyncRequest {
        group_id: request.group_id.to_string(),
        generation: request.generation_id,
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.map(|s| s.to_string()),
        protocol_type: request.protocol_type.map(|s| s.to_string()),
        protocol: request.protocol_name.map(|s| s.to_string()),
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    // See JoinGroup: a sync waiting for its leader does not hold up a shutdown.
    let outcome = ctx
        .unless_shutting_down(ctx.broker.groups.sync(req))
        .await
        .unwrap_or(Ok(Err(GroupError::CoordinatorNotAvailable)));
    match outcome {
        Ok(Ok(r)) => SyncGroupResponse::default()
            .with_protocol_type(r.protocol_type.map(str_bytes))
            .with_protocol_name(r.protocol.map(str_bytes))
            .with_assignment(r.assignment),
        Ok(Err(e)) => failed(&BrokerError::Group(e)),
        Err(e) => failed(&e),
    }
}

fn failed(e: &BrokerError) -> SyncGroupResponse {
    SyncGroupResponse::default().with_error_code(e.code())
}
