//! JoinGroup: a member (re)joins its group; the answer waits for the rebalance to complete.

use chorus_coordinator::{GroupError, JoinRequest, Protocol};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::{Message, StrBytes, VersionRange};

use super::{str_bytes, RequestContext};
use crate::error::BrokerError;

pub const VERSIONS: VersionRange = JoinGroupRequest::VERSIONS;

pub async fn handle(
    ctx: &RequestContext,
    request: JoinGroupRequest,
    version: i16,
) -> JoinGroupResponse {
    let req = JoinRequest {
        group_id: request.group_id.to_string(),
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.map(|s| s.to_string()),
        client_id: ctx.client_id.clone().unwrap_or_default(),
        client_host: format!("/{}", ctx.peer.ip()),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout; Kafka uses the session timeout for it.
        rebalance_timeout_ms: if version == 0 {
            request.session_timeout_ms
        } else {
            request.rebalance_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| Protocol {
                name: p.name.to_string(),
                metadata: p.metadata,
            })
            .collect(),
        require_known_member_id: version >= 4,
    };
    let member_id = req.member_id.clone();
    // Before v7 the protocol name is not nullable.
    let name = |p: Option<String>| match p {
        Some(p) => Some(str_bytes(p)),
        None if version < 7 => Some(StrBytes::default()),
        None => None,
    };
    // At shutdown the member is told to find its coordinator again, as Kafka does when a
    // coordinator unloads its groups.
    let outcome = ctx
        .unless_shutting_down(ctx.broker.groups.join(req))
        .await
        .unwrap_or(Ok(Err(GroupError::CoordinatorNotAvailable)));
    match outcome {
        Ok(Ok(r)) => JoinGroupResponse::default()
            .with_generation_id(r.generation)
            .with_protocol_type(r.protocol_type.map(str_bytes))
            .with_protocol_name(name(r.protocol))
            .with_leader(str_bytes(r.leader))
            // Only v9 has the field; an older static leader that rejoined runs its assignor
            // and its SyncGroup, in a stable group, just gets the current assignment back.
            .with_skip_assignment(r.skip_assignment && version >= 9)
            .with_member_id(str_bytes(r.member_id))
            .with_members(
                r.members
                    .into_iter()
                    .map(|m| {
                        JoinGroupResponseMember::default()
                            .with_member_id(str_bytes(m.member_id))
                            .with_group_instance_id(m.instance_id.map(str_bytes))
                            .with_metadata(m.metadata)
                    })
                    .collect(),
            ),
        Ok(Err(e)) => {
            // MEMBER_ID_REQUIRED carries the id the member must rejoin with.
            let member_id = match &e {
                GroupError::MemberIdRequired { member_id } => member_id.clone(),
                _ => member_id,
            };
            failed(&BrokerError::Group(e), member_id, name(None))
        }
        Err(e) => failed(&e, member_id, name(None)),
    }
}

fn failed(
    e: &BrokerError,
    member_id: String,
    protocol_name: Option<StrBytes>,
) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(e.code())
        .with_generation_id(-1)
        .with_protocol_name(protocol_name)
        .with_member_id(str_bytes(member_id))
}
