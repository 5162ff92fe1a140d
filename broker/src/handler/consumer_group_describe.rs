//! ConsumerGroupDescribe (KIP-848): epochs, assignor, and each member's current and target
//! assignment.

use chorus_coordinator::assignor::MemberAssignment;
use chorus_coordinator::GroupError;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};
use kafka_protocol::protocol::{Message, VersionRange};

use super::{str_bytes, topic_name, RequestContext};
use crate::broker::Broker;
use crate::error::BrokerError;

pub const VERSIONS: VersionRange = ConsumerGroupDescribeRequest::VERSIONS;

fn assignment(broker: &Broker, a: MemberAssignment) -> Assignment {
    Assignment::default().with_topic_partitions(
        a.into_iter()
            .map(|(name, partitions)| {
                let id = broker.logs.topic(&name).map(|t| t.id).unwrap_or_default();
                TopicPartitions::default()
                    .with_topic_id(id)
                    .with_topic_name(topic_name(&name))
                    .with_partitions(partitions)
            })
            .collect(),
    )
}

pub async fn handle(
    ctx: &RequestContext,
    request: ConsumerGroupDescribeRequest,
    _version: i16,
) -> ConsumerGroupDescribeResponse {
    let ids: Vec<String> = request.group_ids.iter().map(|g| g.to_string()).collect();
    let lookup = ids.clone();
    let result = ctx
        .broker
        .groups
        .call(move |r| {
            lookup
                .iter()
                .map(|id| r.coordinator.describe_consumer_group(id))
                .collect::<Vec<_>>()
        })
        .await;
    let groups = request
        .group_ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let base = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(i32::MIN);
            let found = match &result {
                Err(e) => return base.with_error_code(e.code()),
                Ok(found) => found[i].clone(),
            };
            let Some(d) = found else {
                let e = BrokerError::Group(GroupError::GroupIdNotFound {
                    group_id: id.to_string(),
                });
                return base
                    .with_error_code(e.code())
                    .with_error_message(Some(e.message()))
                    .with_group_state(str_bytes("Dead"));
            };
            base.with_group_state(str_bytes(d.state))
                .with_group_epoch(d.group_epoch)
                .with_assignment_epoch(d.assignment_epoch)
                .with_assignor_name(str_bytes(d.assignor))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            Member::default()
                                .with_member_id(str_bytes(m.member_id))
                                .with_instance_id(m.instance_id.map(str_bytes))
                                .with_rack_id(m.rack_id.map(str_bytes))
                                .with_member_epoch(m.member_epoch)
                                .with_client_id(str_bytes(m.client_id))
                                .with_client_host(str_bytes(m.client_host))
                                .with_subscribed_topic_names(
                                    m.topic_names
                                        .iter()
                                        .map(|t| topic_name(t))
                                        .collect::<Vec<TopicName>>(),
                                )
                                .with_subscribed_topic_regex(m.topic_regex.map(str_bytes))
                                .with_assignment(assignment(&ctx.broker, m.assignment))
                                .with_target_assignment(assignment(&ctx.broker, m.target))
                        })
                        .collect(),
                )
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
