//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use std::future::Future;

use chorus_coordinator::HeartbeatRequest as Beat;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};
use kafka_protocol::protocol::{Message, VersionRange};

use super::RequestContext;
use crate::error::BrokerError;

pub const VERSIONS: VersionRange = HeartbeatRequest::VERSIONS;

/// Queues the heartbeat at once (see `GroupService::submit`); the future is the answer.
pub fn handle(
    ctx: &RequestContext,
    request: HeartbeatRequest,
    _version: i16,
) -> impl Future<Output = HeartbeatResponse> + Send + 'static {
    let beat = Beat {
        group_id: request.group_id.to_string(),
        generation: request.generation_id,
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.map(|s| s.to_string()),
    };
    let pending = ctx
        .broker
        .groups
        .submit(move |r| r.coordinator.heartbeat(r.now, &beat));
    async move {
        match pending.await {
            Ok(Ok(())) => HeartbeatResponse::default(),
            Ok(Err(e)) => {
                HeartbeatResponse::default().with_error_code(BrokerError::Group(e).code())
            }
            Err(e) => HeartbeatResponse::default().with_error_code(e.code()),
        }
    }
}
