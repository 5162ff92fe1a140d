//! ConsumerGroupHeartbeat (KIP-848): join, heartbeat, reconcile and leave in one API; the
//! coordinator assigns partitions server-side. Topics travel as ids on the wire and as
//! names inside the coordinator; this handler maps between them.

use std::collections::BTreeMap;
use std::future::Future;

use chorus_coordinator::assignor::MemberAssignment;
use chorus_coordinator::ConsumerHeartbeat;
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::protocol::{Message, VersionRange};
use uuid::Uuid;

use super::{str_bytes, RequestContext};
use crate::broker::Broker;
use crate::error::BrokerError;

pub const VERSIONS: VersionRange = ConsumerGroupHeartbeatRequest::VERSIONS;

/// Every topic: name -> (id, partitions).
fn topic_table(broker: &Broker) -> BTreeMap<String, (Uuid, i32)> {
    broker
        .logs
        .topics()
        .into_iter()
        .map(|t| (t.name, (t.id, t.partitions as i32)))
        .collect()
}

/// Queues the heartbeat at once (see `GroupService::submit`); the future is the answer.
pub fn handle(
    ctx: &RequestContext,
    request: ConsumerGroupHeartbeatRequest,
    _version: i16,
) -> impl Future<Output = ConsumerGroupHeartbeatResponse> + Send + 'static {
    let table = topic_table(&ctx.broker);
    let by_id: BTreeMap<Uuid, String> = table.iter().map(|(n, (id, _))| (*id, n.clone())).collect();
    // Owned partitions of topics deleted meanwhile are simply no longer owned.
    let owned = request.topic_partitions.as_ref().map(|tps| {
        let mut owned = MemberAssignment::new();
        for tp in tps {
            if let Some(name) = by_id.get(&tp.topic_id) {
                owned
                    .entry(name.clone())
                    .or_default()
                    .extend(&tp.partitions);
            }
        }
        owned
    });
    let beat = ConsumerHeartbeat {
        group_id: request.group_id.to_string(),
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.map(|s| s.to_string()),
        rack_id: request.rack_id.map(|s| s.to_string()),
        client_id: ctx.client_id.clone().unwrap_or_default(),
        client_host: format!("/{}", ctx.peer.ip()),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        topic_names: request
            .subscribed_topic_names
            .map(|names| names.iter().map(|n| n.to_string()).collect()),
        topic_regex: request.subscribed_topic_regex.map(|s| s.to_string()),
        server_assignor: request.server_assignor.map(|s| s.to_string()),
        owned,
    };
    let counts: BTreeMap<String, i32> = table.iter().map(|(n, (_, p))| (n.clone(), *p)).collect();
    let pending = ctx
        .broker
        .groups
        .submit(move |r| r.coordinator.consumer_heartbeat(r.now, beat, &counts, r.fx));
    async move {
        let result = match pending.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(BrokerError::Group(e)),
            Err(e) => Err(e),
        };
        match result {
            Ok(r) => ConsumerGroupHeartbeatResponse::default()
                .with_member_id(Some(str_bytes(r.member_id)))
                .with_member_epoch(r.member_epoch)
                .with_heartbeat_interval_ms(r.heartbeat_interval_ms)
                .with_assignment(r.assignment.map(|a| {
                    Assignment::default().with_topic_partitions(
                        a.into_iter()
                            .filter_map(|(name, partitions)| {
                                let (id, _) = table.get(&name)?;
                                Some(
                                    TopicPartitions::default()
                                        .with_topic_id(*id)
                                        .with_partitions(partitions),
                                )
                            })
                            .collect(),
                    )
                })),
            Err(e) => ConsumerGroupHeartbeatResponse::default()
                .with_error_code(e.code())
                .with_error_message(Some(e.message()))
                .with_member_epoch(-1),
        }
    }
}
