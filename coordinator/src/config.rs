//! Coordinator settings, named after Kafka's broker settings of the same meaning.

use crate::Millis;

/// Validated coordinator settings. Defaults are Kafka's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long a new group waits for more members before
    /// its first generation, extended (up to the rebalance timeout) while members keep coming.
    pub initial_rebalance_delay_ms: i32,
    /// `group.max.size`.
    pub max_group_size: usize,
    /// `offsets.retention.minutes`, in milliseconds.
    pub offsets_retention_ms: Millis,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: Millis,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_max_bytes: usize,
    /// Largest protocol metadata (a member's subscription) accepted in a JoinGroup.
    pub member_metadata_max_bytes: usize,
    /// `group.consumer.heartbeat.interval.ms`: how often KIP-848 members heartbeat.
    pub consumer_heartbeat_interval_ms: i32,
    /// `group.consumer.session.timeout.ms`: a KIP-848 member silent this long is removed.
    pub consumer_session_timeout_ms: i32,
    /// The server-side assignor KIP-848 groups use when members name none.
    pub consumer_default_assignor: &'static str,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_group_size: usize::MAX,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
            member_metadata_max_bytes: 1 << 20,
            consumer_heartbeat_interval_ms: 5_000,
            consumer_session_timeout_ms: 45_000,
            consumer_default_assignor: "uniform",
        }
    }
}
