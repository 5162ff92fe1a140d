//! Mutated requests: a populated request for every implemented API, encoded at every version
//! it serves, then damaged at random (bytes overwritten, counts and lengths set to extremes,
//! frames cut short, slices repeated). Whatever comes back, the broker must not panic, must
//! keep serving, and must keep the data it already stored.
//!
//! The mutations come from a fixed seed, so a failure repeats. `CHORUS_MUTATION_SEED` and
//! `CHORUS_MUTATION_ROUNDS` run other or longer series by hand.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Encodable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::common::*;
use crate::protocol::{create_topic, gid, produce_request, record, s, topic};
use crate::wire::Wire;

/// Panics raised outside test code since the hook was installed: the broker runs in this
/// process, so a panic in one of its tasks lands here even though tokio contains it. (A
/// library panic in another test running meanwhile would count too; that is a bug as well.)
static SERVER_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_server_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_tests = info.location().is_some_and(|l| l.file().contains("tests/"));
            if !in_tests {
                SERVER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info)
        }));
    });
}

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The kept topic: written before the mutations and read back after them. No seed names it
/// in a request that deletes or alters anything.
const KEPT: &str = "mutation-kept";
/// What the mutated requests read, write and alter.
const USED: &str = "mutation-used";

/// Encodes a request at a version; false if it has fields that version cannot carry.
type Encode = Box<dyn Fn(&mut BytesMut, i16) -> bool>;

/// One populated request per implemented API (a few APIs get two, for fields that changed
/// shape between versions), as (api, encode at a version).
fn seeds(used_id: Uuid) -> Vec<(ApiKey, Encode)> {
    fn seed<R: Encodable + 'static>(api: ApiKey, request: R) -> (ApiKey, Encode) {
        (
            api,
            Box::new(move |buf, version| request.encode(buf, version).is_ok()),
        )
    }

    let consumer_metadata = Bytes::from_static(&[
        0, 1, // version
        0, 0, 0, 1, 0, 13, // one topic, 13 bytes of name
        b'm', b'u', b't', b'a', b't', b'i', b'o', b'n', b'-', b'u', b's', b'e', b'd', //
        0xff, 0xff, 0xff, 0xff, // no user data
        0, 0, 0, 0, // no owned partitions
    ]);
    let fetch_partition = fetch_request::FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(0)
        .with_partition_max_bytes(1 << 20);
    vec![
        seed(
            ApiKey::Produce,
            produce_request(USED, 0, record(b"mutated"), 1),
        ),
        seed(
            ApiKey::Fetch,
            FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(20)
                .with_max_bytes(4 << 20)
                .with_topics(vec![fetch_request::FetchTopic::default()
                    .with_topic(topic(USED))
                    .with_partitions(vec![fetch_partition.clone()])]),
        ),
        seed(
            ApiKey::Fetch,
            FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(20)
                .with_max_bytes(4 << 20)
                .with_topics(vec![fetch_request::FetchTopic::default()
                    .with_topic_id(used_id)
                    .with_partitions(vec![fetch_partition])]),
        ),
        seed(
            ApiKey::ListOffsets,
            ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic(USED))
                    .with_partitions(vec![
                        list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(-1),
                    ])]),
        ),
        seed(
            ApiKey::Metadata,
            MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic(USED))),
            ])),
        ),
        seed(
            ApiKey::FindCoordinator,
            FindCoordinatorRequest::default().with_key(s("mutation-group")),
        ),
        seed(
            ApiKey::FindCoordinator,
            FindCoordinatorRequest::default().with_coordinator_keys(vec![s("mutation-group")]),
        ),
        seed(
            ApiKey::ApiVersions,
            ApiVersionsRequest::default()
                .with_client_software_name(s("mutation"))
                .with_client_software_version(s("1.0")),
        ),
        seed(
            ApiKey::CreateTopics,
            CreateTopicsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(vec![create_topics_request::CreatableTopic::default()
                    .with_name(topic("mutation-new"))
                    .with_num_partitions(2)
                    .with_replication_factor(1)
                    .with_configs(vec![
                        create_topics_request::CreatableTopicConfig::default()
                            .with_name(s("retention.ms"))
                            .with_value(Some(s("60000"))),
                    ])]),
        ),
        seed(
            ApiKey::DeleteTopics,
            DeleteTopicsRequest::default()
                .with_timeout_ms(1000)
                .with_topic_names(vec![topic("mutation-new")]),
        ),
        seed(
            ApiKey::DeleteTopics,
            DeleteTopicsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(vec![delete_topics_request::DeleteTopicState::default()
                    .with_name(Some(topic("mutation-new")))]),
        ),
        seed(
            ApiKey::DeleteRecords,
            DeleteRecordsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                    .with_name(topic(USED))
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(1),
                    ])]),
        ),
        seed(
            ApiKey::InitProducerId,
            InitProducerIdRequest::default()
                .with_transaction_timeout_ms(1000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        seed(
            ApiKey::OffsetForLeaderEpoch,
            OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                        .with_topic(topic(USED))
                        .with_partitions(vec![
                            offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                                .with_partition(0)
                                .with_leader_epoch(0),
                        ]),
                ]),
        ),
        seed(
            ApiKey::DescribeConfigs,
            DescribeConfigsRequest::default()
                .with_include_synonyms(true)
                .with_resources(vec![
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s(USED)),
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(4)
                        .with_resource_name(s("0"))
                        .with_configuration_keys(Some(vec![s("log.retention.ms")])),
                ]),
        ),
        seed(
            ApiKey::AlterConfigs,
            AlterConfigsRequest::default().with_resources(vec![
                alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s(USED))
                    .with_configs(vec![alter_configs_request::AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("86400000")))]),
            ]),
        ),
        seed(
            ApiKey::CreatePartitions,
            CreatePartitionsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(topic("mutation-new"))
                        .with_count(3),
                ]),
        ),
        seed(
            ApiKey::IncrementalAlterConfigs,
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s(USED))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(s("cleanup.policy"))
                            .with_config_operation(2)
                            .with_value(Some(s("compact"))),
                    ]),
            ]),
        ),
        seed(
            ApiKey::DescribeCluster,
            DescribeClusterRequest::default().with_endpoint_type(1),
        ),
        seed(
            ApiKey::JoinGroup,
            JoinGroupRequest::default()
                .with_group_id(gid("mutation-group"))
                .with_session_timeout_ms(6000)
                .with_rebalance_timeout_ms(100)
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(s("range"))
                .with_metadata(consumer_metadata)]),
        ),
        seed(
            ApiKey::SyncGroup,
            SyncGroupRequest::default()
                .with_group_id(gid("mutation-group"))
                .with_generation_id(1)
                .with_member_id(s("member-1"))
                .with_assignments(vec![
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(s("member-1"))
                        .with_assignment(Bytes::from_static(&[0, 1, 0, 0, 0, 0])),
                ]),
        ),
        seed(
            ApiKey::Heartbeat,
            HeartbeatRequest::default()
                .with_group_id(gid("mutation-group"))
                .with_generation_id(1)
                .with_member_id(s("member-1")),
        ),
        seed(
            ApiKey::LeaveGroup,
            LeaveGroupRequest::default()
                .with_group_id(gid("mutation-group"))
                .with_member_id(s("member-1")),
        ),
        seed(
            ApiKey::LeaveGroup,
            LeaveGroupRequest::default()
                .with_group_id(gid("mutation-group"))
                .with_members(vec![leave_group_request::MemberIdentity::default()
                    .with_member_id(s("member-1"))
                    .with_reason(Some(s("mutation")))]),
        ),
        seed(
            ApiKey::OffsetCommit,
            OffsetCommitRequest::default()
                .with_group_id(gid("mutation-group"))
                .with_generation_id_or_member_epoch(-1)
                .with_retention_time_ms(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic(USED))
                        .with_topic_id(used_id)
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(1)
                                .with_committed_metadata(Some(s("m"))),
                        ]),
                ]),
        ),
        seed(
            ApiKey::OffsetFetch,
            OffsetFetchRequest::default()
                .with_group_id(gid("mutation-group"))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(topic(USED))
                        .with_partition_indexes(vec![0, 1]),
                ])),
        ),
        seed(
            ApiKey::OffsetFetch,
            OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(gid("mutation-group"))
                    .with_topics(Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopics::default()
                            .with_name(topic(USED))
                            .with_topic_id(used_id)
                            .with_partition_indexes(vec![0]),
                    ])),
            ]),
        ),
        seed(ApiKey::ListGroups, ListGroupsRequest::default()),
        seed(
            ApiKey::ListGroups,
            ListGroupsRequest::default()
                .with_states_filter(vec![s("Stable")])
                .with_types_filter(vec![s("classic")]),
        ),
        seed(
            ApiKey::DescribeGroups,
            DescribeGroupsRequest::default().with_groups(vec![gid("mutation-group")]),
        ),
        seed(
            ApiKey::DeleteGroups,
            DeleteGroupsRequest::default().with_groups_names(vec![gid("mutation-other")]),
        ),
        seed(
            ApiKey::OffsetDelete,
            OffsetDeleteRequest::default()
                .with_group_id(gid("mutation-group"))
                .with_topics(vec![
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(topic(USED))
                        .with_partitions(vec![
                            offset_delete_request::OffsetDeleteRequestPartition::default()
                                .with_partition_index(0),
                        ]),
                ]),
        ),
        seed(
            ApiKey::ConsumerGroupHeartbeat,
            ConsumerGroupHeartbeatRequest::default()
                .with_group_id(gid("mutation-next"))
                .with_member_id(s("4Qd1b7dKTuWxfRYOBkFwbA"))
                .with_member_epoch(0)
                .with_rebalance_timeout_ms(1000)
                .with_subscribed_topic_names(Some(vec![topic(USED)]))
                .with_topic_partitions(Some(vec![])),
        ),
        seed(
            ApiKey::ConsumerGroupDescribe,
            ConsumerGroupDescribeRequest::default().with_group_ids(vec![gid("mutation-next")]),
        ),
    ]
}

/// A request frame (size prefix included) and where its body starts.
struct Frame {
    bytes: Vec<u8>,
    body_from: usize,
}

fn frame(api: ApiKey, version: i16, encode: &dyn Fn(&mut BytesMut, i16) -> bool) -> Option<Frame> {
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(s("mutation")))
        .encode(&mut body, api.request_header_version(version))
        .unwrap();
    let body_from = 4 + body.len();
    if !encode(&mut body, version) {
        return None;
    }
    let mut bytes = (body.len() as i32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    Some(Frame { bytes, body_from })
}

/// Values that break assumptions: extremes of i32 and i16, and the longest varint.
const NASTY: &[&[u8]] = &[
    &[0x7f, 0xff, 0xff, 0xff],
    &[0xff, 0xff, 0xff, 0xff],
    &[0x80, 0x00, 0x00, 0x00],
    &[0x00, 0x00, 0x00, 0x00],
    &[0x7f, 0xff],
    &[0xff, 0xfe],
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
];

/// One damage, sometimes two, then the size prefix made to match. Most land in the request
/// body so that the mutant still decodes and reaches its handler; one in ten may hit the header
/// (api key, version, client id) instead.
fn mutate(rng: &mut Rng, frame: &Frame) -> Vec<u8> {
    let mut body = frame.bytes[4..].to_vec();
    let body_from = frame.body_from - 4;
    for _ in 0..1 + rng.below(4) / 3 {
        let from = if rng.below(10) == 0 || body_from >= body.len() {
            0
        } else {
            body_from
        };
        let at = from + rng.below(body.len() - from);
        match rng.below(8) {
            0 | 1 => body[at] = rng.next() as u8,
            2..=4 => {
                let nasty = NASTY[rng.below(NASTY.len())];
                let end = (at + nasty.len()).min(body.len());
                body[at..end].copy_from_slice(&nasty[..end - at]);
            }
            5 => body.truncate(at.max(1)),
            6 => {
                let len = 1 + rng.below(16.min(body.len() - at));
                let copy = body[at..at + len].to_vec();
                body.splice(at..at, copy);
            }
            _ => body[at] ^= 1 << rng.below(8),
        }
    }
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// What became of a mutant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A response frame came back (the mutant decoded and reached its handler).
    Answered,
    /// The broker closed the connection (an undecodable frame).
    Closed,
    /// Neither within the moment we wait: a join or a long poll, or a frame still incomplete.
    Waiting,
}

/// Sends one mutant on its own connection and reads for a moment.
async fn send(addr: &str, bytes: Vec<u8>) -> Outcome {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        panic!("the broker stopped accepting connections");
    };
    if stream.write_all(&bytes).await.is_err() {
        return Outcome::Closed;
    }
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
    match read {
        Ok(Ok(0)) | Ok(Err(_)) => Outcome::Closed,
        Ok(Ok(_)) => Outcome::Answered,
        Err(_) => Outcome::Waiting,
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_requests_of_every_api_and_version_do_no_harm() {
    count_server_panics();
    // Mutated counts create topics and partitions; a small budget keeps them from taking
    // the open files the other tests in this process need.
    let broker = TestBroker::start_with(|c| c.max_partitions = 600).await;
    let addr = broker.bootstrap();
    let mut wire = Wire::connect(&addr).await;
    create_topic(&mut wire, KEPT, 1).await;
    create_topic(&mut wire, USED, 2).await;
    let produced: ProduceResponse = wire
        .call(
            ApiKey::Produce,
            9,
            &produce_request(KEPT, 0, record(b"kept value"), -1),
        )
        .await;
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
    let metadata: MetadataResponse = wire
        .call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic(USED))),
            ])),
        )
        .await;
    let used_id = metadata.topics[0].topic_id;

    let mut rng = Rng(env_number("CHORUS_MUTATION_SEED", 0x5eed_c0de_1234_5678) | 1);
    let rounds = env_number("CHORUS_MUTATION_ROUNDS", 30);
    let seeds = seeds(used_id);
    let mut frames = Vec::new();
    let mut unseeded = Vec::new();
    for (api, range) in chorus_broker::handler::APIS {
        let before = frames.len();
        for version in range.min..=range.max {
            let encoded = seeds
                .iter()
                .filter(|(a, _)| a == api)
                .filter_map(|(_, encode)| frame(*api, version, encode.as_ref()));
            let len = frames.len();
            frames.extend(encoded);
            if frames.len() == len {
                unseeded.push((*api, version));
            }
        }
        assert!(frames.len() > before, "{api:?} has no seed request");
    }
    assert!(unseeded.is_empty(), "no seed encodes at {unseeded:?}");

    let mut outcomes = Vec::new();
    for _ in 0..rounds {
        let mutants: Vec<Vec<u8>> = frames.iter().map(|f| mutate(&mut rng, f)).collect();
        // 32 connections at a time: quick, and well inside the broker's connection limit.
        for chunk in mutants.chunks(32) {
            let sends = chunk.iter().map(|m| send(&addr, m.clone()));
            outcomes.extend(within(30, futures_util::future::join_all(sends)).await);
        }
    }
    let count = |o: Outcome| outcomes.iter().filter(|&&x| x == o).count();
    let answered = count(Outcome::Answered);
    eprintln!(
        "{} mutated requests: {answered} answered, {} closed, {} waiting",
        outcomes.len(),
        count(Outcome::Closed),
        count(Outcome::Waiting)
    );
    // Mutants that decode are the ones that reach handler code; too few would test little.
    assert!(
        answered * 4 >= outcomes.len(),
        "only {answered} of {} mutants were answered",
        outcomes.len()
    );

    assert_eq!(
        SERVER_PANICS.load(Ordering::SeqCst),
        0,
        "a mutated request panicked in the broker (see the panic messages above)"
    );
    // Still serving, on an old connection and a new one, and the kept record is intact.
    let mut fresh = Wire::connect(&addr).await;
    for wire in [&mut wire, &mut fresh] {
        let fetched: FetchResponse = within(
            10,
            wire.call(
                ApiKey::Fetch,
                12,
                &FetchRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_max_wait_ms(0)
                    .with_max_bytes(1 << 20)
                    .with_topics(vec![fetch_request::FetchTopic::default()
                        .with_topic(topic(KEPT))
                        .with_partitions(vec![fetch_request::FetchPartition::default()
                            .with_partition(0)
                            .with_partition_max_bytes(1 << 20)])]),
            ),
        )
        .await;
        let partition = &fetched.responses[0].partitions[0];
        assert_eq!(partition.error_code, 0);
        assert_eq!(partition.high_watermark, 1);
        let records = partition.records.clone().expect("the kept record");
        let needle = b"kept value";
        assert!(
            records.windows(needle.len()).any(|w| w == needle),
            "the kept record came back changed"
        );
    }
    // Nothing a mutant left waiting (a join with a rebalance timeout of days) holds up a
    // graceful shutdown.
    within(10, broker.stop()).await;
}
