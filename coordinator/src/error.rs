//! What can go wrong in a group operation. The broker maps each variant to a Kafka error code
//! (in its one error-mapping module); this crate never speaks codes.

/// An error answered to one group request (or to one partition of it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("the group id must not be empty")]
    InvalidGroupId,
    #[error("the group is being removed; retry")]
    CoordinatorNotAvailable,
    /// KIP-394: a new member must rejoin with the id the coordinator made for it.
    #[error("rejoin with member id {member_id}")]
    MemberIdRequired { member_id: String },
    #[error("member {member_id} is not in the group")]
    UnknownMemberId { member_id: String },
    #[error("generation {given} is not the group's generation {current}")]
    IllegalGeneration { given: i32, current: i32 },
    #[error("the group is rebalancing; rejoin")]
    RebalanceInProgress,
    #[error("group instance {instance_id} belongs to another member")]
    FencedInstanceId { instance_id: String },
    #[error("the protocol type or protocols do not match the group's")]
    InconsistentGroupProtocol,
    #[error("session timeout {given} ms is outside [{min}, {max}] ms")]
    InvalidSessionTimeout { given: i32, min: i32, max: i32 },
    #[error("member metadata of {len} bytes exceeds the limit of {max}")]
    MemberMetadataTooLarge { len: usize, max: usize },
    #[error("the group already has its maximum of {max} members")]
    GroupMaxSizeReached { max: usize },
    #[error("group {group_id} does not exist")]
    GroupIdNotFound { group_id: String },
    #[error("group {group_id} still has members")]
    NonEmptyGroup { group_id: String },
    /// A commit from outside the group (generation -1, no member id) while it has members.
    #[error("group {group_id} has active members; only they can commit its offsets")]
    NotEmptyForOutsideCommit { group_id: String },
    #[error("offset metadata of {len} bytes exceeds the limit of {max}")]
    OffsetMetadataTooLarge { len: usize, max: usize },
    #[error("the group's members are subscribed to topic {topic}")]
    GroupSubscribedToTopic { topic: String },
    /// KIP-848: the member's epoch is not one the coordinator gave it; it must rejoin.
    #[error("member epoch {given} is fenced (current {current})")]
    FencedMemberEpoch { given: i32, current: i32 },
    /// KIP-848: an offset commit with an epoch other than the member's current one.
    #[error("member epoch {given} is stale (current {current})")]
    StaleMemberEpoch { given: i32, current: i32 },
    #[error("assignor {name} is not supported")]
    UnsupportedAssignor { name: String },
    #[error("{pattern:?} is not a valid regular expression")]
    InvalidRegularExpression { pattern: String },
    #[error("invalid consumer group heartbeat: {reason}")]
    InvalidHeartbeat { reason: &'static str },
}
