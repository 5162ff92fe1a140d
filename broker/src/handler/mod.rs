//! One module per Kafka API. Each declares the versions it serves next to its code
//! (`VERSIONS`); [`APIS`] collects them, and both request routing and the ApiVersions answer
//! are built from that table, so neither can drift from the handlers.
//!
//! Versions span from Kafka 4's minimum (KIP-896) to the newest the `kafka-protocol` crate
//! knows; `kafka-protocol`'s own `VERSIONS` constants are exactly that range.

pub mod alter_configs;
pub mod api_versions;
pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;

use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use tokio::sync::watch;

use crate::broker::Broker;
use crate::connection::{decode, encode, encode_sharing, Frame, FrameError, Handled};
use crate::error::BrokerError;

/// Every implemented API and the versions it serves.
pub const APIS: &[(ApiKey, VersionRange)] = &[
    (ApiKey::Produce, produce::VERSIONS),
    (ApiKey::Fetch, fetch::VERSIONS),
    (ApiKey::ListOffsets, list_offsets::VERSIONS),
    (ApiKey::Metadata, metadata::VERSIONS),
    (ApiKey::FindCoordinator, find_coordinator::VERSIONS),
    (ApiKey::ApiVersions, api_versions::VERSIONS),
    (ApiKey::CreateTopics, create_topics::VERSIONS),
    (ApiKey::DeleteTopics, delete_topics::VERSIONS),
    (ApiKey::DeleteRecords, delete_records::VERSIONS),
    (ApiKey::InitProducerId, init_producer_id::VERSIONS),
    (
        ApiKey::OffsetForLeaderEpoch,
        offset_for_leader_epoch::VERSIONS,
    ),
    (ApiKey::DescribeConfigs, describe_configs::VERSIONS),
    (ApiKey::AlterConfigs, alter_configs::VERSIONS),
    (ApiKey::CreatePartitions, create_partitions::VERSIONS),
    (
        ApiKey::IncrementalAlterConfigs,
        incremental_alter_configs::VERSIONS,
    ),
    (ApiKey::DescribeCluster, describe_cluster::VERSIONS),
    (ApiKey::JoinGroup, join_group::VERSIONS),
    (ApiKey::SyncGroup, sync_group::VERSIONS),
    (ApiKey::Heartbeat, heartbeat::VERSIONS),
    (ApiKey::LeaveGroup, leave_group::VERSIONS),
    (ApiKey::OffsetCommit, offset_commit::VERSIONS),
    (ApiKey::OffsetFetch, offset_fetch::VERSIONS),
    (ApiKey::ListGroups, list_groups::VERSIONS),
    (ApiKey::DescribeGroups, describe_groups::VERSIONS),
    (ApiKey::DeleteGroups, delete_groups::VERSIONS),
    (ApiKey::OffsetDelete, offset_delete::VERSIONS),
    (
        ApiKey::ConsumerGroupHeartbeat,
        consumer_group_heartbeat::VERSIONS,
    ),
    (
        ApiKey::ConsumerGroupDescribe,
        consumer_group_describe::VERSIONS,
    ),
];

/// The versions served for `api`, if it is implemented.
pub fn versions(api: ApiKey) -> Option<VersionRange> {
    APIS.iter().find(|(k, _)| *k == api).map(|(_, v)| *v)
}

/// What a handler sees of the connection and the broker.
#[derive(Debug)]
pub struct RequestContext {
    pub broker: Arc<Broker>,
    pub peer: SocketAddr,
    pub client_id: Option<String>,
    /// Flips to `true` when the broker shuts down; long polls end early.
    pub shutdown: watch::Receiver<bool>,
}

impl RequestContext {
    /// Runs blocking broker work (files, fsync) off the async workers.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Broker) -> Result<T, BrokerError> + Send + 'static,
    ) -> Result<T, BrokerError> {
        let broker = self.broker.clone();
        tokio::task::spawn_blocking(move || f(&broker))
            .await
            .unwrap_or_else(|_| Err(BrokerError::Internal("a storage task failed")))
    }

    /// `work`, unless the broker starts shutting down first (`None`). For waits as long as
    /// a client says (a join waits up to the members' rebalance timeouts), which must not
    /// hold up a shutdown that finishes in-flight requests.
    pub async fn unless_shutting_down<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        let mut shutdown = self.shutdown.clone();
        let stopping = async move {
            if shutdown.wait_for(|stop| *stop).await.is_err() {
                // The server is gone without a shutdown signal: nothing to wait for.
                std::future::pending::<()>().await
            }
        };
        tokio::select! {
            done = work => Some(done),
            () = stopping => None,
        }
    }
}

/// Decodes the request in `frame` and runs its handler. Every API answers at once except
/// Produce, whose appends are done here but whose answer may wait for the flush policy.
pub async fn dispatch(ctx: &RequestContext, mut frame: Frame) -> Result<Handled, FrameError> {
    let (api, version) = (frame.api, frame.version);
    let correlation_id = frame.header.correlation_id;
    tracing::trace!(peer = %ctx.peer, ?api, version, correlation_id, "request");
    macro_rules! route {
        ($module:ident) => {{
            let request = decode(&mut frame)?;
            let response = $module::handle(ctx, request, version).await;
            tracing::trace!(peer = %ctx.peer, ?api, correlation_id, "answered");
            encode(api, version, correlation_id, &response).map(|r| Handled::Done(Some(r)))
        }};
    }
    // Handlers that queue their work when called and answer when awaited: the connection
    // keeps several of them in flight (in order) rather than waiting for each.
    macro_rules! queued {
        ($module:ident) => {{
            let request = decode(&mut frame)?;
            let pending = $module::handle(ctx, request, version);
            Ok(Handled::Later(Box::pin(async move {
                let response = pending.await;
                encode(api, version, correlation_id, &response).map(Some)
            })))
        }};
    }
    match api {
        ApiKey::Produce => {
            let request = decode(&mut frame)?;
            let appended = produce::handle(ctx, request, version).await;
            Ok(Handled::Later(Box::pin(async move {
                match appended.finish().await {
                    Some(response) => encode(api, version, correlation_id, &response).map(Some),
                    None => Ok(None),
                }
            })))
        }
        ApiKey::Fetch => {
            let request = decode(&mut frame)?;
            let (response, shareable) = fetch::handle(ctx, request, version).await;
            encode_sharing(api, version, correlation_id, &response, shareable)
                .map(|r| Handled::Done(Some(r)))
        }
        ApiKey::ListOffsets => route!(list_offsets),
        ApiKey::Metadata => route!(metadata),
        ApiKey::FindCoordinator => route!(find_coordinator),
        ApiKey::ApiVersions => route!(api_versions),
        ApiKey::CreateTopics => route!(create_topics),
        ApiKey::DeleteTopics => route!(delete_topics),
        ApiKey::DeleteRecords => route!(delete_records),
        ApiKey::InitProducerId => route!(init_producer_id),
        ApiKey::OffsetForLeaderEpoch => route!(offset_for_leader_epoch),
        ApiKey::DescribeConfigs => route!(describe_configs),
        ApiKey::AlterConfigs => route!(alter_configs),
        ApiKey::CreatePartitions => route!(create_partitions),
        ApiKey::IncrementalAlterConfigs => route!(incremental_alter_configs),
        ApiKey::DescribeCluster => route!(describe_cluster),
        ApiKey::JoinGroup => route!(join_group),
        ApiKey::SyncGroup => route!(sync_group),
        ApiKey::Heartbeat => queued!(heartbeat),
        ApiKey::LeaveGroup => route!(leave_group),
        ApiKey::OffsetCommit => queued!(offset_commit),
        ApiKey::OffsetFetch => route!(offset_fetch),
        ApiKey::ListGroups => route!(list_groups),
        ApiKey::DescribeGroups => route!(describe_groups),
        ApiKey::DeleteGroups => route!(delete_groups),
        ApiKey::OffsetDelete => route!(offset_delete),
        ApiKey::ConsumerGroupHeartbeat => queued!(consumer_group_heartbeat),
        ApiKey::ConsumerGroupDescribe => route!(consumer_group_describe),
        other => Err(FrameError::UnknownApiKey(other as i16)),
    }
}

pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}
