//! The requests the coordinator takes and the answers it gives, in its own terms (the broker
//! translates to and from the Kafka messages, across all their versions).

use bytes::Bytes;

use crate::error::GroupError;
use crate::record::{CommittedOffset, Record};

/// Identifies a request whose answer may come later (JoinGroup and SyncGroup wait for the
/// rest of the group). Chosen by the caller; the coordinator hands it back with the answer.
pub type Token = u64;

/// One protocol a member supports, with its metadata (for consumers: the subscription).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+: a new dynamic member first gets `MemberIdRequired` with its id (KIP-394).
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// KIP-814: a static leader rejoining a stable group learns the members but must not
    /// compute a new assignment.
    pub skip_assignment: bool,
    /// Filled for the leader only: every member with its metadata for the chosen protocol.
    pub members: Vec<JoinedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    /// The leader's assignment for every member; empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
}

/// One member leaving (LeaveGroup v3+ leaves several at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveMember {
    pub member_id: String,
    pub instance_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRequest {
    pub group_id: String,
    /// -1 with an empty member id: a commit from outside the group (admin tools).
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub offsets: Vec<CommitPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPartition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// A committed offset as fetched; `None` when the partition has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: i32,
    pub committed: Option<CommittedOffset>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    /// The state's name: a [`GroupState`](crate::group::GroupState) name, or KIP-848's (Empty, Assigning,
    /// Reconciling, Stable) for consumer groups.
    pub state: &'static str,
    /// "classic" for groups of the JoinGroup/SyncGroup protocol, "consumer" for KIP-848.
    pub group_type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    /// As in [`GroupListing::state`].
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub generation: i32,
    pub members: Vec<MemberDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The member's metadata for the chosen protocol.
    pub metadata: Bytes,
    /// Empty until the group is stable.
    pub assignment: Bytes,
}

/// An answer that was waiting for the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Join(Result<JoinResponse, GroupError>),
    Sync(Result<SyncResponse, GroupError>),
}

/// What an operation asks of its caller: persist `records` (in order), then send `replies`.
/// Replies must not be sent before the records are durable, so a client never sees a state
/// that a restart would forget.
#[derive(Debug, Default)]
pub struct Effects {
    pub records: Vec<Record>,
    pub replies: Vec<(Token, Reply)>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.replies.is_empty()
    }
}

/// ConsumerGroupHeartbeat (KIP-848), with topic names (the broker maps topic ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerHeartbeat {
    pub group_id: String,
    /// Empty when joining at v0 (the coordinator makes one); v1 clients choose their own.
    pub member_id: String,
    /// 0 joins, -1 leaves, -2 leaves temporarily (static members); otherwise the epoch last
    /// received.
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    /// `None`: unchanged since the last heartbeat.
    pub topic_names: Option<Vec<String>>,
    pub topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns now; `None`: unchanged.
    pub owned: Option<crate::assignor::MemberAssignment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerHeartbeatResponse {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's whole assignment when it changed; `None` when it did not.
    pub assignment: Option<crate::assignor::MemberAssignment>,
}

/// ConsumerGroupDescribe for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupDescription {
    pub group_id: String,
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<ConsumerMemberDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerMemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub topic_names: Vec<String>,
    pub topic_regex: Option<String>,
    pub assignment: crate::assignor::MemberAssignment,
    pub target: crate::assignor::MemberAssignment,
}
