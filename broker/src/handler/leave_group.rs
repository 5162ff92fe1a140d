//! LeaveGroup: members leave (one before v3, a batch from v3, by instance id for admin
//! removal of static members).

use chorus_coordinator::LeaveMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::protocol::{Message, VersionRange};

use super::RequestContext;
use crate::error::BrokerError;

pub const VERSIONS: VersionRange = LeaveGroupRequest::VERSIONS;

pub async fn handle(
    ctx: &RequestContext,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let group_id = request.group_id.to_string();
    let leaving: Vec<LeaveMember> = if version < 3 {
        vec![LeaveMember {
            member_id: request.member_id.to_string(),
            instance_id: None,
        }]
    } else {
        request
            .members
            .iter()
            .map(|m| LeaveMember {
                member_id: m.member_id.to_string(),
                instance_id: m.group_instance_id.as_ref().map(|s| s.to_string()),
            })
            .collect()
    };
    let members = leaving.clone();
    let result = ctx
        .broker
        .groups
        .call(move |r| r.coordinator.leave(r.now, &group_id, &members, r.fx))
        .await;
    let results = match result {
        Ok(results) => results,
        Err(e) => return LeaveGroupResponse::default().with_error_code(e.code()),
    };
    if version < 3 {
        let code = match results.into_iter().next() {
            Some(Err(e)) => BrokerError::Group(e).code(),
            _ => 0,
        };
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let members = request
        .members
        .into_iter()
        .zip(results)
        .map(|(m, result)| {
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(result.err().map_or(0, |e| BrokerError::Group(e).code()))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
