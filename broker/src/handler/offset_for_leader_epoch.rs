//! OffsetForLeaderEpoch: the end offset of a leader epoch. This broker has only ever had
//! epoch 0, so epoch 0 ends at the log end and later epochs are unknown.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::protocol::{Message, VersionRange};

use super::RequestContext;
use crate::error::BrokerError;
use crate::partition::LEADER_EPOCH;

pub const VERSIONS: VersionRange = OffsetForLeaderEpochRequest::VERSIONS;

pub async fn handle(
    ctx: &RequestContext,
    request: OffsetForLeaderEpochRequest,
    _version: i16,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let base = EpochEndOffset::default().with_partition(p.partition);
                    let answer = (|| {
                        if p.current_leader_epoch > LEADER_EPOCH {
                            return Err(BrokerError::UnknownLeaderEpoch {
                                requested: p.current_leader_epoch,
                                current: LEADER_EPOCH,
                            });
                        }
                        let partition = ctx.broker.partition(&t.topic, p.partition)?;
                        Ok(if p.leader_epoch == LEADER_EPOCH {
                            (LEADER_EPOCH, partition.log.log_end_offset())
                        } else {
                            // An epoch this log never had: undefined, as Kafka answers.
                            (-1, -1)
                        })
                    })();
                    match answer {
                        Ok((epoch, end)) => base.with_leader_epoch(epoch).with_end_offset(end),
                        Err(e) => base
                            .with_error_code(e.code())
                            .with_leader_epoch(-1)
                            .with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
