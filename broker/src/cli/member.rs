//! A classic-protocol consumer group member for `chorus consume --group`: join (with the
//! KIP-394 member id round trip), assign with the range assignor when chosen leader, sync,
//! heartbeat, commit and leave. The classic protocol is what every broker speaks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_coordinator::assignor::{Assignor, GroupAssignment, RangeAssignor, Subscriber};
use chorus_coordinator::consumer_protocol::{
    assignment_partitions, encode_assignment, encode_subscription, subscription_topics,
};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::client::Cluster;
use super::error::{CliError, Result};
use super::lookup;

const SESSION_TIMEOUT_MS: i32 = 30_000;
const REBALANCE_TIMEOUT_MS: i32 = 60_000;
const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);
const PROTOCOL: &str = "range";

/// Kafka error codes the member reacts to.
const MEMBER_ID_REQUIRED: i16 = 79;
const REBALANCE_IN_PROGRESS: i16 = 27;
const UNKNOWN_MEMBER_ID: i16 = 25;
const ILLEGAL_GENERATION: i16 = 22;

#[derive(Debug)]
pub struct Member {
    pub group: String,
    topics: Vec<String>,
    member_id: String,
    generation: i32,
    pub assignment: BTreeSet<(String, i32)>,
    last_heartbeat: Instant,
}

/// What a heartbeat found.
#[derive(Debug, PartialEq, Eq)]
pub enum Beat {
    Fine,
    /// The group is rebalancing (or forgot us): commit, then [`Member::rejoin`].
    Rejoin,
}

fn gid(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_string()))
}

impl Member {
    pub async fn join(cluster: &mut Cluster, group: &str, topics: &[String]) -> Result<Member> {
        let mut member = Member {
            group: group.to_string(),
            topics: topics.to_vec(),
            member_id: String::new(),
            generation: -1,
            assignment: BTreeSet::new(),
            last_heartbeat: Instant::now(),
        };
        member.rejoin(cluster).await?;
        Ok(member)
    }

    /// Joins (again) and syncs; afterwards `assignment` is this member's share.
    pub async fn rejoin(&mut self, cluster: &mut Cluster) -> Result<()> {
        let subscription = Bytes::from(encode_subscription(&self.topics));
        let joined = loop {
            let request = JoinGroupRequest::default()
                .with_group_id(gid(&self.group))
                .with_session_timeout_ms(SESSION_TIMEOUT_MS)
                .with_rebalance_timeout_ms(REBALANCE_TIMEOUT_MS)
                .with_member_id(StrBytes::from_string(self.member_id.clone()))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str(PROTOCOL))
                    .with_metadata(subscription.clone())]);
            let wait = Duration::from_millis(REBALANCE_TIMEOUT_MS as u64 + 5_000);
            let response = cluster
                .coordinator(&self.group)
                .await?
                .call_patient(&request, wait)
                .await?;
            match response.error_code {
                MEMBER_ID_REQUIRED => self.member_id = response.member_id.to_string(),
                UNKNOWN_MEMBER_ID => self.member_id.clear(),
                REBALANCE_IN_PROGRESS => {}
                code => {
                    CliError::check(code, format!("joining group {}", self.group), None)?;
                    break response;
                }
            }
        };
        self.member_id = joined.member_id.to_string();
        self.generation = joined.generation_id;
        let assignments = if joined.leader.as_str() == self.member_id {
            self.assign(cluster, &joined.members).await?
        } else {
            Vec::new()
        };
        let request = SyncGroupRequest::default()
            .with_group_id(gid(&self.group))
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_assignments(assignments);
        let conn = cluster.coordinator(&self.group).await?;
        // v5 carries the protocol type and name, which brokers check when present.
        let request = if conn.version::<SyncGroupRequest>(i16::MAX)? >= 5 {
            request
                .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                .with_protocol_name(Some(StrBytes::from_static_str(PROTOCOL)))
        } else {
            request
        };
        let wait = Duration::from_millis(REBALANCE_TIMEOUT_MS as u64);
        let synced = conn.call_patient(&request, wait).await?;
        if matches!(
            synced.error_code,
            REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID
        ) {
            // Another rebalance started before this one finished: go round again.
            return Box::pin(self.rejoin(cluster)).await;
        }
        CliError::check(
            synced.error_code,
            format!("syncing group {}", self.group),
            None,
        )?;
        self.assignment = assignment_partitions(&synced.assignment)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
            .collect();
        self.last_heartbeat = Instant::now();
        Ok(())
    }

    /// The leader's job: range-assign every member's subscribed partitions.
    async fn assign(
        &self,
        cluster: &mut Cluster,
        members: &[kafka_protocol::messages::join_group_response::JoinGroupResponseMember],
    ) -> Result<Vec<SyncGroupRequestAssignment>> {
        let subscribers: Vec<Subscriber> = members
            .iter()
            .map(|m| Subscriber {
                member_id: m.member_id.to_string(),
                topics: subscription_topics(&m.metadata)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            })
            .collect();
        let wanted: BTreeSet<&String> = subscribers.iter().flat_map(|s| &s.topics).collect();
        let mut counts = BTreeMap::new();
        for t in wanted {
            if let Ok(info) = lookup::topic(cluster, t).await {
                counts.insert(t.clone(), info.partitions.len() as i32);
            }
        }
        let plan = RangeAssignor.assign(&subscribers, &counts, &GroupAssignment::new());
        Ok(plan
            .into_iter()
            .map(|(member, partitions)| {
                SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member))
                    .with_assignment(Bytes::from(encode_assignment(&partitions)))
            })
            .collect())
    }

    /// Heartbeats when one is due.
    pub async fn heartbeat(&mut self, cluster: &mut Cluster) -> Result<Beat> {
        if self.last_heartbeat.elapsed() < HEARTBEAT_EVERY {
            return Ok(Beat::Fine);
        }
        let request = HeartbeatRequest::default()
            .with_group_id(gid(&self.group))
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()));
        let response = cluster
            .coordinator(&self.group)
            .await?
            .call(&request)
            .await?;
        self.last_heartbeat = Instant::now();
        match response.error_code {
            0 => Ok(Beat::Fine),
            REBALANCE_IN_PROGRESS => Ok(Beat::Rejoin),
            UNKNOWN_MEMBER_ID | ILLEGAL_GENERATION => {
                self.member_id.clear();
                Ok(Beat::Rejoin)
            }
            code => CliError::check(code, format!("heartbeat to group {}", self.group), None)
                .map(|()| Beat::Fine),
        }
    }

    /// Commits `positions` (next offset to read) of the partitions this member owns.
    pub async fn commit(
        &mut self,
        cluster: &mut Cluster,
        positions: &BTreeMap<(String, i32), i64>,
    ) -> Result<()> {
        let mine: BTreeMap<(String, i32), i64> = positions
            .iter()
            .filter(|(k, _)| self.assignment.contains(*k))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if mine.is_empty() {
            return Ok(());
        }
        let results = lookup::commit_offsets(
            cluster,
            &self.group,
            self.generation,
            &self.member_id,
            &mine,
        )
        .await?;
        for ((t, p), code) in results {
            CliError::check(
                code,
                format!("committing {t}-{p} for group {}", self.group),
                None,
            )?;
        }
        Ok(())
    }

    /// Leaves the group so its partitions move at once.
    pub async fn leave(self, cluster: &mut Cluster) -> Result<()> {
        let conn = cluster.coordinator(&self.group).await?;
        let request = if conn.version::<LeaveGroupRequest>(i16::MAX)? >= 3 {
            LeaveGroupRequest::default().with_members(vec![MemberIdentity::default()
                .with_member_id(StrBytes::from_string(self.member_id.clone()))])
        } else {
            LeaveGroupRequest::default().with_member_id(StrBytes::from_string(self.member_id))
        }
        .with_group_id(gid(&self.group));
        let response = conn.call(&request).await?;
        CliError::check(
            response.error_code,
            format!("leaving group {}", self.group),
            None,
        )
    }
}
