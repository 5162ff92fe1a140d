//! The group APIs on the wire: every version clients negotiate, bad input answered with
//! Kafka's codes, and the administration APIs.

use bytes::Bytes;
use chorus_coordinator::consumer_protocol::{encode_assignment, encode_subscription};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::common::{within, TestBroker};
use crate::protocol::{create_topic, gid, produce_request, s, topic};
use crate::wire::Wire;

fn join_request(group: &str, member: &str, session_ms: i32) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_member_id(s(member))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(5000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from(encode_subscription(&["gt".to_string()])))])
}

/// Joins a one-member group at `version`, doing the KIP-394 round trip where it applies.
async fn join(wire: &mut Wire, group: &str, version: i16) -> JoinGroupResponse {
    let first: JoinGroupResponse = wire
        .call(ApiKey::JoinGroup, version, &join_request(group, "", 6000))
        .await;
    if version < 4 {
        assert_eq!(first.error_code, 0, "v{version}");
        return first;
    }
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED at v{version}");
    assert!(!first.member_id.is_empty());
    let second: JoinGroupResponse = wire
        .call(
            ApiKey::JoinGroup,
            version,
            &join_request(group, &first.member_id, 6000),
        )
        .await;
    assert_eq!(second.error_code, 0, "v{version}");
    second
}

fn assignment() -> Bytes {
    Bytes::from(encode_assignment(&[("gt".to_string(), vec![0, 1])].into()))
}

async fn sync(
    wire: &mut Wire,
    group: &str,
    joined: &JoinGroupResponse,
    version: i16,
) -> SyncGroupResponse {
    let mut request = SyncGroupRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(joined.generation_id)
        .with_member_id(joined.member_id.clone())
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(joined.member_id.clone())
            .with_assignment(assignment())]);
    if version >= 5 {
        request = request
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")));
    }
    wire.call(ApiKey::SyncGroup, version, &request).await
}

fn commit_request(
    group: &str,
    generation: i32,
    member: &str,
    offsets: &[(&str, i32, i64)],
) -> OffsetCommitRequest {
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for (t, p, o) in offsets {
        let part = OffsetCommitRequestPartition::default()
            .with_partition_index(*p)
            .with_committed_offset(*o)
            .with_committed_metadata(Some(s("meta")));
        match topics.iter_mut().find(|x| x.name.as_str() == *t) {
            Some(x) => x.partitions.push(part),
            None => topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(topic(t))
                    .with_partitions(vec![part]),
            ),
        }
    }
    OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_retention_time_ms(-1)
        .with_topics(topics)
}

/// A join can wait as long as the other members' rebalance and session timeouts, which
/// clients choose (a mutated request once asked for 24 days): shutdown must not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_waiting_for_a_rebalance_does_not_hold_up_shutdown() {
    let (broker, _) = setup().await;
    let mut first = Wire::connect(&broker.bootstrap()).await;
    let leader: JoinGroupResponse = first
        .call(
            ApiKey::JoinGroup,
            3,
            &join_request("slow", "", 60_000).with_rebalance_timeout_ms(i32::MAX),
        )
        .await;
    assert_eq!(leader.error_code, 0);
    // A second member starts a rebalance the first will never rejoin.
    let mut second = Wire::connect(&broker.bootstrap()).await;
    let waiting = tokio::spawn(async move {
        let r: JoinGroupResponse = second
            .call(ApiKey::JoinGroup, 3, &join_request("slow", "", 60_000))
            .await;
        r
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "the join should wait for the rebalance"
    );
    let started = std::time::Instant::now();
    within(10, broker.stop()).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    let answer = within(5, waiting).await.unwrap();
    assert_eq!(answer.error_code, 15, "COORDINATOR_NOT_AVAILABLE");
}

async fn setup() -> (TestBroker, Wire) {
    let broker = TestBroker::start().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    create_topic(&mut wire, "gt", 2).await;
    for _ in 0..5 {
        let batch = crate::protocol::record(b"x");
        let resp: ProduceResponse = wire
            .call(ApiKey::Produce, 9, &produce_request("gt", 0, batch, 1))
            .await;
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    }
    (broker, wire)
}

#[tokio::test]
async fn the_whole_group_cycle_works_at_every_version() {
    let (broker, mut wire) = setup().await;
    for join_version in 0..=9i16 {
        let group = format!("cycle-v{join_version}");
        let joined = join(&mut wire, &group, join_version).await;
        assert_eq!(joined.generation_id, 1);
        assert_eq!(joined.leader, joined.member_id, "a lone member leads");
        assert_eq!(joined.members.len(), 1);
        if join_version >= 7 {
            assert_eq!(joined.protocol_type.as_deref(), Some("consumer"));
        }
        assert_eq!(joined.protocol_name.as_deref(), Some("range"));

        let sync_version = join_version.min(5);
        let synced = sync(&mut wire, &group, &joined, sync_version).await;
        assert_eq!(synced.error_code, 0);
        assert_eq!(synced.assignment, assignment());

        let beat: HeartbeatResponse = wire
            .call(
                ApiKey::Heartbeat,
                join_version.min(4),
                &HeartbeatRequest::default()
                    .with_group_id(gid(&group))
                    .with_generation_id(joined.generation_id)
                    .with_member_id(joined.member_id.clone()),
            )
            .await;
        assert_eq!(beat.error_code, 0);

        let commit_version = join_version.clamp(2, 9);
        let committed: OffsetCommitResponse = wire
            .call(
                ApiKey::OffsetCommit,
                commit_version,
                &commit_request(
                    &group,
                    joined.generation_id,
                    &joined.member_id,
                    &[("gt", 0, 3)],
                ),
            )
            .await;
        assert_eq!(
            committed.topics[0].partitions[0].error_code, 0,
            "commit v{commit_version}"
        );

        let fetch_version = join_version.clamp(1, 9);
        let (offset, metadata) = if fetch_version < 8 {
            let fetched: OffsetFetchResponse = wire
                .call(
                    ApiKey::OffsetFetch,
                    fetch_version,
                    &OffsetFetchRequest::default()
                        .with_group_id(gid(&group))
                        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                            .with_name(topic("gt"))
                            .with_partition_indexes(vec![0, 1])])),
                )
                .await;
            let parts = &fetched.topics[0].partitions;
            assert_eq!(parts[1].committed_offset, -1, "no commit for partition 1");
            (parts[0].committed_offset, parts[0].metadata.clone())
        } else {
            let fetched: OffsetFetchResponse = wire
                .call(
                    ApiKey::OffsetFetch,
                    fetch_version,
                    &OffsetFetchRequest::default().with_groups(vec![
                        OffsetFetchRequestGroup::default()
                            .with_group_id(gid(&group))
                            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                                .with_name(topic("gt"))
                                .with_partition_indexes(vec![0])])),
                    ]),
                )
                .await;
            let part = &fetched.groups[0].topics[0].partitions[0];
            (part.committed_offset, part.metadata.clone())
        };
        assert_eq!(
            (offset, metadata.as_deref()),
            (3, Some("meta")),
            "fetch v{fetch_version}"
        );

        let leave_version = join_version.min(5);
        let leave = if leave_version < 3 {
            LeaveGroupRequest::default()
                .with_group_id(gid(&group))
                .with_member_id(joined.member_id.clone())
        } else {
            LeaveGroupRequest::default()
                .with_group_id(gid(&group))
                .with_members(vec![
                    MemberIdentity::default().with_member_id(joined.member_id.clone())
                ])
        };
        let left: LeaveGroupResponse = wire.call(ApiKey::LeaveGroup, leave_version, &leave).await;
        assert_eq!(left.error_code, 0);
        if leave_version >= 3 {
            assert_eq!(left.members[0].error_code, 0);
        }
    }
    broker.stop().await;
}

#[tokio::test]
async fn bad_group_requests_get_kafkas_error_codes() {
    let (broker, mut wire) = setup().await;
    let joined = join(&mut wire, "victim", 9).await;
    sync(&mut wire, "victim", &joined, 5).await;

    let code = |r: JoinGroupResponse| r.error_code;
    assert_eq!(
        code(
            wire.call(ApiKey::JoinGroup, 9, &join_request("", "", 6000))
                .await
        ),
        24,
        "INVALID_GROUP_ID"
    );
    assert_eq!(
        code(
            wire.call(ApiKey::JoinGroup, 9, &join_request("other", "", 10))
                .await
        ),
        26,
        "INVALID_SESSION_TIMEOUT"
    );
    assert_eq!(
        code(
            wire.call(
                ApiKey::JoinGroup,
                9,
                &join_request("victim", "never-issued", 6000)
            )
            .await
        ),
        25,
        "UNKNOWN_MEMBER_ID"
    );
    let connect = join_request("victim", "", 6000).with_protocol_type(s("connect"));
    assert_eq!(
        code(wire.call(ApiKey::JoinGroup, 9, &connect).await),
        23,
        "INCONSISTENT_GROUP_PROTOCOL"
    );
    let empty = join_request("other", "", 6000).with_protocols(vec![]);
    assert_eq!(
        code(wire.call(ApiKey::JoinGroup, 9, &empty).await),
        23,
        "no protocols"
    );

    let beat = |group: &str, generation: i32, member: &str| {
        HeartbeatRequest::default()
            .with_group_id(gid(group))
            .with_generation_id(generation)
            .with_member_id(s(member))
    };
    let r: HeartbeatResponse = wire
        .call(ApiKey::Heartbeat, 4, &beat("nobody", 1, "m"))
        .await;
    assert_eq!(r.error_code, 25);
    let r: HeartbeatResponse = wire
        .call(ApiKey::Heartbeat, 4, &beat("victim", 0, &joined.member_id))
        .await;
    assert_eq!(r.error_code, 22, "ILLEGAL_GENERATION");
    let stale = joined.clone().with_generation_id(7);
    assert_eq!(sync(&mut wire, "victim", &stale, 5).await.error_code, 22);

    let r: OffsetCommitResponse = wire
        .call(
            ApiKey::OffsetCommit,
            9,
            &commit_request(
                "victim",
                1,
                &joined.member_id,
                &[
                    ("no-such-topic", 0, 1),
                    ("gt", 9, 1),
                    ("gt", 0, 99),
                    ("gt", 0, -5),
                    ("gt", 1, 0),
                ],
            ),
        )
        .await;
    let codes: Vec<i16> = r
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect();
    assert_eq!(
        codes,
        vec![3, 3, 1, 1, 0],
        "unknown topic, unknown partition, past the end, negative, fine"
    );
    let r: OffsetCommitResponse = wire
        .call(
            ApiKey::OffsetCommit,
            9,
            &commit_request("victim", -1, "", &[("gt", 0, 1)]),
        )
        .await;
    assert_eq!(
        r.topics[0].partitions[0].error_code, 25,
        "an outsider cannot commit for a live group"
    );

    // None of this disturbed the group.
    let r: HeartbeatResponse = wire
        .call(ApiKey::Heartbeat, 4, &beat("victim", 1, &joined.member_id))
        .await;
    assert_eq!(r.error_code, 0);
    broker.stop().await;
}

#[tokio::test]
async fn list_describe_delete_and_offset_delete() {
    let (broker, mut wire) = setup().await;
    let joined = join(&mut wire, "live", 9).await;
    sync(&mut wire, "live", &joined, 5).await;
    let r: OffsetCommitResponse = wire
        .call(
            ApiKey::OffsetCommit,
            9,
            &commit_request("idle", -1, "", &[("gt", 0, 2)]),
        )
        .await;
    assert_eq!(
        r.topics[0].partitions[0].error_code, 0,
        "an outsider may set an empty group's offsets"
    );

    let listed: ListGroupsResponse = wire
        .call(ApiKey::ListGroups, 5, &ListGroupsRequest::default())
        .await;
    let mut names: Vec<(String, String)> = listed
        .groups
        .iter()
        .map(|g| (g.group_id.to_string(), g.group_state.to_string()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("idle".into(), "Empty".into()),
            ("live".into(), "Stable".into())
        ]
    );
    let stable: ListGroupsResponse = wire
        .call(
            ApiKey::ListGroups,
            4,
            &ListGroupsRequest::default().with_states_filter(vec![s("stable")]),
        )
        .await;
    assert_eq!(stable.groups.len(), 1);
    assert_eq!(stable.groups[0].group_id.as_str(), "live");
    let v0: ListGroupsResponse = wire
        .call(ApiKey::ListGroups, 0, &ListGroupsRequest::default())
        .await;
    assert_eq!(v0.groups.len(), 2);

    let described: DescribeGroupsResponse = wire
        .call(
            ApiKey::DescribeGroups,
            5,
            &DescribeGroupsRequest::default().with_groups(vec![gid("live"), gid("missing")]),
        )
        .await;
    let live = &described.groups[0];
    assert_eq!(
        (
            live.group_state.as_str(),
            live.protocol_type.as_str(),
            live.protocol_data.as_str()
        ),
        ("Stable", "consumer", "range")
    );
    assert_eq!(live.members[0].client_id.as_str(), "wire-test");
    assert_eq!(live.members[0].client_host.as_str(), "/127.0.0.1");
    assert_eq!(live.members[0].member_assignment, assignment());
    assert_eq!(described.groups[1].group_state.as_str(), "Dead");
    let v6: DescribeGroupsResponse = wire
        .call(
            ApiKey::DescribeGroups,
            6,
            &DescribeGroupsRequest::default().with_groups(vec![gid("missing")]),
        )
        .await;
    assert_eq!(v6.groups[0].error_code, 69, "GROUP_ID_NOT_FOUND from v6");

    let delete = |names: &[&str]| {
        DeleteGroupsRequest::default().with_groups_names(names.iter().map(|n| gid(n)).collect())
    };
    let r: DeleteGroupsResponse = wire
        .call(
            ApiKey::DeleteGroups,
            2,
            &delete(&["live", "idle", "missing"]),
        )
        .await;
    let codes: Vec<i16> = r.results.iter().map(|x| x.error_code).collect();
    assert_eq!(
        codes,
        vec![68, 0, 69],
        "NON_EMPTY_GROUP, deleted, GROUP_ID_NOT_FOUND"
    );

    let offset_delete = |group: &str| {
        OffsetDeleteRequest::default()
            .with_group_id(gid(group))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(topic("gt"))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0)
                ])])
    };
    let r: OffsetCommitResponse = wire
        .call(
            ApiKey::OffsetCommit,
            9,
            &commit_request("live", 1, &joined.member_id, &[("gt", 0, 1)]),
        )
        .await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let r: OffsetDeleteResponse = wire
        .call(ApiKey::OffsetDelete, 0, &offset_delete("live"))
        .await;
    assert_eq!(
        r.topics[0].partitions[0].error_code, 86,
        "GROUP_SUBSCRIBED_TO_TOPIC"
    );
    let r: OffsetDeleteResponse = wire
        .call(ApiKey::OffsetDelete, 0, &offset_delete("missing"))
        .await;
    assert_eq!(r.error_code, 69);
    broker.stop().await;
}

#[tokio::test]
async fn groups_and_offsets_come_back_after_a_restart() {
    let (mut broker, mut wire) = setup().await;
    let joined = join(&mut wire, "phoenix", 9).await;
    sync(&mut wire, "phoenix", &joined, 5).await;
    let r: OffsetCommitResponse = wire
        .call(
            ApiKey::OffsetCommit,
            9,
            &commit_request("phoenix", 1, &joined.member_id, &[("gt", 0, 4)]),
        )
        .await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    broker.restart().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    let described: DescribeGroupsResponse = wire
        .call(
            ApiKey::DescribeGroups,
            5,
            &DescribeGroupsRequest::default().with_groups(vec![gid("phoenix")]),
        )
        .await;
    let g = &described.groups[0];
    assert_eq!(g.group_state.as_str(), "Stable");
    assert_eq!(g.members[0].member_id, joined.member_id);
    assert_eq!(g.members[0].member_assignment, assignment());
    // The member carries on with its generation.
    let r: HeartbeatResponse = wire
        .call(
            ApiKey::Heartbeat,
            4,
            &HeartbeatRequest::default()
                .with_group_id(gid("phoenix"))
                .with_generation_id(1)
                .with_member_id(joined.member_id.clone()),
        )
        .await;
    assert_eq!(r.error_code, 0);
    let fetched: OffsetFetchResponse = wire
        .call(
            ApiKey::OffsetFetch,
            7,
            &OffsetFetchRequest::default()
                .with_group_id(gid("phoenix"))
                .with_topics(None),
        )
        .await;
    assert_eq!(fetched.topics[0].partitions[0].committed_offset, 4);
    broker.stop().await;
}

/// KIP-848 members are persisted: after a restart a member heartbeats with the epoch it
/// had and keeps its partitions, without rejoining.
#[tokio::test]
async fn a_kip848_member_carries_on_after_a_restart() {
    let (mut broker, mut wire) = setup().await;
    let beat =
        |member: &str,
         epoch: i32,
         owned: Option<Vec<consumer_group_heartbeat_request::TopicPartitions>>| {
            ConsumerGroupHeartbeatRequest::default()
                .with_group_id(gid("nextgen"))
                .with_member_id(s(member))
                .with_member_epoch(epoch)
                .with_rebalance_timeout_ms(30_000)
                .with_subscribed_topic_names((epoch == 0).then(|| vec![topic("gt")]))
                .with_topic_partitions(owned)
        };
    let joined: ConsumerGroupHeartbeatResponse = wire
        .call(
            ApiKey::ConsumerGroupHeartbeat,
            0,
            &beat("", 0, Some(vec![])),
        )
        .await;
    assert_eq!(joined.error_code, 0, "{:?}", joined.error_message);
    let member = joined.member_id.clone().unwrap().to_string();
    let assigned = joined.assignment.clone().expect("an assignment");
    let owned: Vec<_> = assigned
        .topic_partitions
        .iter()
        .map(|tp| {
            consumer_group_heartbeat_request::TopicPartitions::default()
                .with_topic_id(tp.topic_id)
                .with_partitions(tp.partitions.clone())
        })
        .collect();
    assert_eq!(owned[0].partitions.len(), 2);

    broker.restart().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    let again: ConsumerGroupHeartbeatResponse = wire
        .call(
            ApiKey::ConsumerGroupHeartbeat,
            0,
            &beat(&member, joined.member_epoch, Some(owned)),
        )
        .await;
    assert_eq!(again.error_code, 0, "{:?}", again.error_message);
    assert_eq!(again.member_epoch, joined.member_epoch);
    let described: ConsumerGroupDescribeResponse = wire
        .call(
            ApiKey::ConsumerGroupDescribe,
            0,
            &ConsumerGroupDescribeRequest::default().with_group_ids(vec![gid("nextgen")]),
        )
        .await;
    let g = &described.groups[0];
    assert_eq!(g.group_state.as_str(), "Stable");
    assert_eq!(g.members.len(), 1);
    assert_eq!(g.members[0].member_id.as_str(), member);
    assert_eq!(
        g.members[0].assignment.topic_partitions[0].partitions,
        [0, 1]
    );
    broker.stop().await;
}

/// OffsetFetch v9 names the member: a KIP-848 member must be at its current epoch; an
/// admin fetch (epoch -1) is always answered.
#[tokio::test]
async fn offset_fetch_v9_checks_the_member_and_its_epoch() {
    let (broker, mut wire) = setup().await;
    let joined: ConsumerGroupHeartbeatResponse = wire
        .call(
            ApiKey::ConsumerGroupHeartbeat,
            0,
            &ConsumerGroupHeartbeatRequest::default()
                .with_group_id(gid("fetchers"))
                .with_member_epoch(0)
                .with_rebalance_timeout_ms(30_000)
                .with_subscribed_topic_names(Some(vec![topic("gt")]))
                .with_topic_partitions(Some(vec![])),
        )
        .await;
    assert_eq!(joined.error_code, 0);
    let member = joined.member_id.clone().unwrap();
    let fetch = |member: Option<StrBytes>, epoch: i32| {
        OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(gid("fetchers"))
            .with_member_id(member)
            .with_member_epoch(epoch)
            .with_topics(None)])
    };
    for (who, epoch, code) in [
        (Some(member.clone()), joined.member_epoch, 0),
        (None, -1, 0),
        (Some(member.clone()), joined.member_epoch + 7, 113), // STALE_MEMBER_EPOCH
        (Some(s("ghost")), joined.member_epoch, 25),          // UNKNOWN_MEMBER_ID
    ] {
        let r: OffsetFetchResponse = wire
            .call(ApiKey::OffsetFetch, 9, &fetch(who.clone(), epoch))
            .await;
        assert_eq!(r.groups[0].error_code, code, "{who:?} at epoch {epoch}");
    }
    broker.stop().await;
}

async fn committed_offset(wire: &mut Wire, group: &str) -> i64 {
    let request = OffsetFetchRequest::default()
        .with_group_id(gid(group))
        .with_topics(None);
    let r: OffsetFetchResponse = wire.call(ApiKey::OffsetFetch, 7, &request).await;
    r.topics[0].partitions[0].committed_offset
}

/// Fails the next write to `__consumer_offsets` once armed.
#[derive(Debug, Default)]
struct OffsetsDiskFails(std::sync::atomic::AtomicBool);

impl chorus_storage::io::FaultInjector for OffsetsDiskFails {
    fn on_write(
        &self,
        path: &std::path::Path,
        _len: usize,
    ) -> Option<chorus_storage::io::WriteFault> {
        let ours = path.to_string_lossy().contains("__consumer_offsets");
        (ours && self.0.swap(false, std::sync::atomic::Ordering::SeqCst))
            .then(|| chorus_storage::io::WriteFault::Fail(std::io::Error::from_raw_os_error(28)))
    }
}

/// A commit that could not be written is answered COORDINATOR_NOT_AVAILABLE and is not
/// served afterwards: the coordinator reloads what the log holds.
#[tokio::test]
async fn a_commit_that_could_not_be_written_is_not_served() {
    let faults = std::sync::Arc::new(OffsetsDiskFails::default());
    let injector = faults.clone();
    let broker = TestBroker::start_with(move |c| {
        c.io = chorus_storage::io::Io::with_faults(injector);
    })
    .await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    create_topic(&mut wire, "gt", 1).await;
    for _ in 0..5 {
        let batch = crate::protocol::record(b"x");
        let _: ProduceResponse = wire
            .call(ApiKey::Produce, 9, &produce_request("gt", 0, batch, 1))
            .await;
    }
    let commit = |offset: i64| commit_request("resetters", -1, "", &[("gt", 0, offset)]);
    let r: OffsetCommitResponse = wire.call(ApiKey::OffsetCommit, 9, &commit(2)).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);

    faults.0.store(true, std::sync::atomic::Ordering::SeqCst);
    let r: OffsetCommitResponse = wire.call(ApiKey::OffsetCommit, 9, &commit(4)).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 15); // COORDINATOR_NOT_AVAILABLE
    assert_eq!(
        committed_offset(&mut wire, "resetters").await,
        2,
        "the unwritten commit must not be served"
    );

    // The disk works again: the retry lands.
    let r: OffsetCommitResponse = wire.call(ApiKey::OffsetCommit, 9, &commit(4)).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    assert_eq!(committed_offset(&mut wire, "resetters").await, 4);
    broker.stop().await;
}

/// Regression: a static leader rejoining a stable group was answered with KIP-814's
/// `skip_assignment`, which versions before 9 cannot carry; encoding failed and the
/// connection closed, so the member rejoined forever.
#[tokio::test]
async fn a_static_leader_rejoining_at_an_old_version_gets_a_readable_answer() {
    let (broker, mut wire) = setup().await;
    let static_join =
        |member: &str| join_request("statics", member, 6000).with_group_instance_id(Some(s("i1")));
    let joined: JoinGroupResponse = wire.call(ApiKey::JoinGroup, 5, &static_join("")).await;
    assert_eq!(joined.error_code, 0);
    assert_eq!(sync(&mut wire, "statics", &joined, 3).await.error_code, 0);
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    let again: JoinGroupResponse = wire.call(ApiKey::JoinGroup, 5, &static_join("")).await;
    assert_eq!(again.error_code, 0);
    assert_eq!(again.generation_id, joined.generation_id, "no rebalance");
    assert_ne!(again.member_id, joined.member_id);
    assert_eq!(again.leader, again.member_id);
    let synced = sync(&mut wire, "statics", &again, 3).await;
    assert_eq!(
        synced.assignment,
        assignment(),
        "the stable assignment, not a new one"
    );
    broker.stop().await;
}

/// Commits and heartbeats pipelined on one connection are in flight together at the
/// coordinator, but still applied in the order sent: the last commit wins.
#[tokio::test]
async fn pipelined_commits_apply_in_order() {
    let (broker, mut wire) = setup().await;
    let joined = join(&mut wire, "ordered", 9).await;
    sync(&mut wire, "ordered", &joined, 5).await;
    let mut frames = Vec::new();
    let mut ids = Vec::new();
    for offset in 1..=5i64 {
        let (id, frame) = wire.frame(
            ApiKey::OffsetCommit,
            9,
            &commit_request("ordered", 1, &joined.member_id, &[("gt", 0, offset)]),
        );
        ids.push(id);
        frames.extend_from_slice(&frame);
        let (id, frame) = wire.frame(
            ApiKey::Heartbeat,
            4,
            &HeartbeatRequest::default()
                .with_group_id(gid("ordered"))
                .with_generation_id(1)
                .with_member_id(joined.member_id.clone()),
        );
        ids.push(id);
        frames.extend_from_slice(&frame);
    }
    wire.send_raw(&frames).await;
    for (i, id) in ids.iter().enumerate() {
        let api = if i % 2 == 0 {
            ApiKey::OffsetCommit
        } else {
            ApiKey::Heartbeat
        };
        let version = if i % 2 == 0 { 9 } else { 4 };
        let (got, _) = wire.read_response(api, version).await.unwrap();
        assert_eq!(got, *id, "answers come back in order");
    }
    let fetched: OffsetFetchResponse = wire
        .call(
            ApiKey::OffsetFetch,
            7,
            &OffsetFetchRequest::default()
                .with_group_id(gid("ordered"))
                .with_topics(None),
        )
        .await;
    assert_eq!(fetched.topics[0].partitions[0].committed_offset, 5);
    broker.stop().await;
}

/// A plain HTTP/1.1 GET (or other method); returns the status and the JSON body.
async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, serde_json::Value) {
    crate::common::http_request(addr, method, path, None, None).await
}

#[tokio::test]
async fn http_endpoints_show_groups_assignments_and_lag() {
    let (broker, mut wire) = setup().await;
    let joined = join(&mut wire, "watched", 9).await;
    sync(&mut wire, "watched", &joined, 5).await;
    let r: OffsetCommitResponse = wire
        .call(
            ApiKey::OffsetCommit,
            9,
            &commit_request("watched", 1, &joined.member_id, &[("gt", 0, 2)]),
        )
        .await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let addr = broker.server.as_ref().unwrap().http_addr;

    let (status, health) = http(addr, "GET", "/health").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));

    let (status, list) = http(addr, "GET", "/consumer-groups").await;
    assert_eq!(status, 200);
    assert_eq!(list["groups"][0]["group_id"], "watched");
    assert_eq!(list["groups"][0]["state"], "Stable");

    let (status, group) = http(addr, "GET", "/consumer-groups/watched").await;
    assert_eq!(status, 200);
    assert_eq!(group["members"][0]["member_id"], joined.member_id.as_str());
    assert_eq!(group["members"][0]["client_id"], "wire-test");
    assert_eq!(
        group["members"][0]["assignment"]["gt"],
        serde_json::json!([0, 1])
    );

    let (status, rows) = http(addr, "GET", "/consumer-groups/watched/assignments").await;
    assert_eq!(status, 200);
    let p0 = &rows["partitions"][0];
    // setup() produced 5 records to gt-0; the group committed 2.
    assert_eq!(
        (
            p0["partition"].as_i64(),
            p0["committed_offset"].as_i64(),
            p0["log_end_offset"].as_i64(),
            p0["lag"].as_i64()
        ),
        (Some(0), Some(2), Some(5), Some(3))
    );
    assert_eq!(p0["member_id"], joined.member_id.as_str());
    let p1 = &rows["partitions"][1];
    assert_eq!(
        (p1["partition"].as_i64(), p1["lag"].is_null()),
        (Some(1), true),
        "no commit, no lag"
    );
    assert_eq!(rows["total_lag"], 3);

    assert_eq!(http(addr, "GET", "/consumer-groups/nope").await.0, 404);
    assert_eq!(
        http(addr, "GET", "/consumer-groups/nope/assignments")
            .await
            .0,
        404
    );
    assert_eq!(
        http(addr, "DELETE", "/consumer-groups/watched").await.0,
        405
    );
    assert_eq!(http(addr, "GET", "/nowhere").await.0, 404);
    broker.stop().await;
}
