//! Broker errors, and the one place that turns any error into a Kafka error code.

use chorus_coordinator::GroupError;
use chorus_storage::batch::BatchErrorKind;
use chorus_storage::LogError;
use kafka_protocol::error::ResponseError;

/// Errors a request can end in. Each becomes an error code in the response; none closes the
/// connection (that is [`crate::connection::FrameError`]'s job).
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Log(#[from] LogError),

    #[error("sequence {found} from producer {producer_id} is out of order (expected {expected})")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        found: i32,
    },

    #[error("producer {producer_id} epoch {found} is older than the current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        current: i16,
        found: i16,
    },

    #[error("producer {producer_id} is unknown and its first sequence is {sequence}, not 0")]
    UnknownProducerId { producer_id: i64, sequence: i32 },

    #[error("a compacted topic only accepts records with a key")]
    NullKeyInCompactedTopic,

    #[error("timestamp {timestamp} is outside the range the topic accepts")]
    InvalidTimestamp { timestamp: i64 },

    #[error("replication factor {0} is impossible on a single broker")]
    InvalidReplicationFactor(i16),

    #[error("replica assignment {0:?} names brokers other than this one")]
    InvalidReplicaAssignment(Vec<i32>),

    #[error("{given} replica assignments given for {new_partitions} new partitions")]
    ReplicaAssignmentCount { given: usize, new_partitions: i32 },

    #[error("unknown topic id {0}")]
    UnknownTopicId(uuid::Uuid),

    #[error("the topic appears more than once in the request")]
    DuplicateTopic,

    #[error("leader epoch {requested} is newer than the current epoch {current}")]
    UnknownLeaderEpoch { requested: i32, current: i32 },

    #[error("leader epoch {requested} is older than the current epoch {current}")]
    FencedLeaderEpoch { requested: i32, current: i32 },

    #[error("acks must be -1, 0 or 1, not {0}")]
    InvalidRequiredAcks(i16),

    #[error("transactions are not supported")]
    TransactionsUnsupported,

    #[error("broker configs are static; change them in the configuration file")]
    BrokerConfigReadOnly,

    #[error("resource type {0} is not supported")]
    UnsupportedResource(i8),

    #[error("config operation {0} is not valid for {1}")]
    InvalidConfigOperation(i8, String),

    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),

    #[error(transparent)]
    Group(#[from] chorus_coordinator::GroupError),

    #[error("the group coordinator is not available")]
    CoordinatorUnavailable,

    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl BrokerError {
    /// The Kafka error for this error.
    pub fn response_error(&self) -> ResponseError {
        match self {
            BrokerError::Log(e) => log_error(e),
            BrokerError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
            BrokerError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
            BrokerError::UnknownProducerId { .. } => ResponseError::UnknownProducerId,
            BrokerError::NullKeyInCompactedTopic => ResponseError::InvalidRecord,
            BrokerError::InvalidTimestamp { .. } => ResponseError::InvalidTimestamp,
            BrokerError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            BrokerError::InvalidReplicaAssignment(_)
            | BrokerError::ReplicaAssignmentCount { .. } => ResponseError::InvalidReplicaAssignment,
            BrokerError::UnknownTopicId(_) => ResponseError::UnknownTopicId,
            BrokerError::DuplicateTopic => ResponseError::InvalidRequest,
            BrokerError::UnknownLeaderEpoch { .. } => ResponseError::UnknownLeaderEpoch,
            BrokerError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
            BrokerError::InvalidRequiredAcks(_) => ResponseError::InvalidRequiredAcks,
            BrokerError::TransactionsUnsupported => ResponseError::UnsupportedVersion,
            BrokerError::BrokerConfigReadOnly => ResponseError::InvalidRequest,
            BrokerError::UnsupportedResource(_) => ResponseError::InvalidRequest,
            BrokerError::InvalidConfigOperation(..) => ResponseError::InvalidConfig,
            BrokerError::InvalidRequest(_) => ResponseError::InvalidRequest,
            BrokerError::Group(e) => group_error(e),
            BrokerError::CoordinatorUnavailable => ResponseError::CoordinatorNotAvailable,
            BrokerError::Internal(_) => ResponseError::UnknownServerError,
        }
    }

    /// True when the disk, not the request, is at fault.
    pub fn is_storage_error(&self) -> bool {
        matches!(self, BrokerError::Log(e) if e.is_storage_error())
    }

    pub fn code(&self) -> i16 {
        self.response_error().code()
    }

    /// The message for responses that carry one.
    pub fn message(&self) -> kafka_protocol::protocol::StrBytes {
        kafka_protocol::protocol::StrBytes::from_string(self.to_string())
    }
}

fn log_error(e: &LogError) -> ResponseError {
    match e {
        LogError::InvalidBatch { source, .. } => match source.kind() {
            BatchErrorKind::Corrupt => ResponseError::CorruptMessage,
            BatchErrorKind::Invalid => ResponseError::InvalidRecord,
        },
        LogError::RecordTooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::Io { .. }
        | LogError::Poisoned { .. }
        | LogError::CorruptSegment { .. }
        | LogError::PartitionOffline { .. }
        | LogError::DamagedMetadata { .. } => ResponseError::KafkaStorageError,
        LogError::Config(_) => ResponseError::InvalidConfig,
        LogError::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        LogError::TopicExists { .. } => ResponseError::TopicAlreadyExists,
        LogError::UnknownTopic { .. } | LogError::UnknownPartition { .. } => {
            ResponseError::UnknownTopicOrPartition
        }
        LogError::InvalidPartitionCount { .. } => ResponseError::InvalidPartitions,
        // What Kafka answers a creation over its own partition limit (10,000 per request).
        LogError::PartitionLimit { .. } => ResponseError::PolicyViolation,
        // Retriable: the client tries again once the broker is back.
        LogError::ShutDown => ResponseError::NotLeaderOrFollower,
    }
}

fn group_error(e: &GroupError) -> ResponseError {
    match e {
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        GroupError::MemberIdRequired { .. } => ResponseError::MemberIdRequired,
        GroupError::UnknownMemberId { .. } => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration { .. } => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::FencedInstanceId { .. } => ResponseError::FencedInstanceId,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::InvalidSessionTimeout { .. } => ResponseError::InvalidSessionTimeout,
        GroupError::MemberMetadataTooLarge { .. } => ResponseError::InvalidRequest,
        GroupError::GroupMaxSizeReached { .. } => ResponseError::GroupMaxSizeReached,
        GroupError::GroupIdNotFound { .. } => ResponseError::GroupIdNotFound,
        GroupError::NonEmptyGroup { .. } => ResponseError::NonEmptyGroup,
        // What Kafka answers an admin commit to an active group.
        GroupError::NotEmptyForOutsideCommit { .. } => ResponseError::UnknownMemberId,
        GroupError::OffsetMetadataTooLarge { .. } => ResponseError::OffsetMetadataTooLarge,
        GroupError::GroupSubscribedToTopic { .. } => ResponseError::GroupSubscribedToTopic,
        GroupError::FencedMemberEpoch { .. } => ResponseError::FencedMemberEpoch,
        GroupError::StaleMemberEpoch { .. } => ResponseError::StaleMemberEpoch,
        GroupError::UnsupportedAssignor { .. } => ResponseError::UnsupportedAssignor,
        GroupError::InvalidRegularExpression { .. } => ResponseError::InvalidRegularExpression,
        GroupError::InvalidHeartbeat { .. } => ResponseError::InvalidRequest,
    }
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_storage::batch::BatchError;

    #[test]
    fn storage_errors_map_to_kafka_codes() {
        let crc = BrokerError::Log(LogError::InvalidBatch {
            position: 0,
            source: BatchError::CrcMismatch {
                stored: 1,
                computed: 2,
            },
        });
        assert_eq!(crc.code(), 2, "CORRUPT_MESSAGE");
        let count = BrokerError::Log(LogError::InvalidBatch {
            position: 0,
            source: BatchError::CountMismatch {
                count: 1,
                last_offset_delta: 3,
            },
        });
        assert_eq!(count.code(), 87, "INVALID_RECORD");
        let range = BrokerError::Log(LogError::OffsetOutOfRange {
            requested: 9,
            log_start: 0,
            log_end: 3,
        });
        assert_eq!(range.code(), 1);
        let name = BrokerError::Log(LogError::InvalidTopicName {
            name: "a b".into(),
            reason: "space",
        });
        assert_eq!(name.code(), 17);
        assert_eq!(
            BrokerError::OutOfOrderSequence {
                producer_id: 1,
                expected: 1,
                found: 5
            }
            .code(),
            45
        );
    }
}
