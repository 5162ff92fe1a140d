//! Exact protocol behaviour, checked with the raw client.

use bytes::Bytes;
use chorus_storage::batch::BatchBuilder;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::common::*;
use crate::wire::Wire;

pub fn topic(name: &str) -> TopicName {
    TopicName(s(name))
}

pub fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

pub fn gid(text: &str) -> GroupId {
    GroupId(s(text))
}

/// A batch of one record with `value`.
pub fn record(value: &[u8]) -> Vec<u8> {
    BatchBuilder::new()
        .record(None, Some(value), 1)
        .build()
        .unwrap()
}

pub fn produce_request(name: &str, partition: i32, batch: Vec<u8>, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic(name))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(batch)))])])
}

pub async fn create_topic(wire: &mut Wire, name: &str, partitions: i32) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let resp: CreateTopicsResponse = wire
        .call(
            ApiKey::CreateTopics,
            7,
            &CreateTopicsRequest::default()
                .with_timeout_ms(5000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(topic(name))
                    .with_num_partitions(partitions)
                    .with_replication_factor(1)]),
        )
        .await;
    assert_eq!(
        resp.topics[0].error_code, 0,
        "{:?}",
        resp.topics[0].error_message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_lists_every_handler_in_every_version() {
    let broker = TestBroker::start().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    for version in 0..=4 {
        let resp: ApiVersionsResponse = wire
            .call(
                ApiKey::ApiVersions,
                version,
                &ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str("wire"))
                    .with_client_software_version(StrBytes::from_static_str("1.0")),
            )
            .await;
        assert_eq!(resp.error_code, 0);
        assert_eq!(resp.api_keys.len(), chorus_broker::handler::APIS.len());
        for (key, range) in chorus_broker::handler::APIS {
            let k = resp
                .api_keys
                .iter()
                .find(|k| k.api_key == *key as i16)
                .unwrap();
            assert_eq!(
                (k.min_version, k.max_version),
                (range.min, range.max),
                "{key:?}"
            );
        }
    }
    let produce = chorus_broker::handler::versions(ApiKey::Produce).unwrap();
    assert!(
        produce.min <= 3 && produce.max >= 7,
        "kafkajs needs Produce v3..v7"
    );
    let fetch = chorus_broker::handler::versions(ApiKey::Fetch).unwrap();
    assert!(
        fetch.min <= 4 && fetch.max >= 11,
        "kafkajs needs Fetch v4..v11"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_new_api_versions_request_gets_the_kip_511_v0_answer() {
    let broker = TestBroker::start().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    // Version 99 with a body we cannot even know the layout of.
    let mut frame = Vec::new();
    let body: &[u8] = &[
        0, 18, 0, 99, 0, 0, 0, 42, 0, 4, b'w', b'i', b'r', b'e', 0xde, 0xad,
    ];
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(body);
    wire.send_raw(&frame).await;
    let (id, mut resp) = wire.read_response(ApiKey::ApiVersions, 0).await.unwrap();
    assert_eq!(id, 42);
    let resp =
        <ApiVersionsResponse as kafka_protocol::protocol::Decodable>::decode(&mut resp, 0).unwrap();
    assert_eq!(resp.error_code, 35, "UNSUPPORTED_VERSION");
    assert!(resp
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let broker = TestBroker::start().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    let mut all = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (id, f) = wire.frame(ApiKey::Metadata, 12, &MetadataRequest::default());
        ids.push(id);
        all.extend_from_slice(&f);
        let (id, f) = wire.frame(
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("wire"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        );
        ids.push(id);
        all.extend_from_slice(&f);
    }
    wire.send_raw(&all).await;
    for (i, expected) in ids.into_iter().enumerate() {
        let api = if i % 2 == 0 {
            ApiKey::Metadata
        } else {
            ApiKey::ApiVersions
        };
        let version = if i % 2 == 0 { 12 } else { 3 };
        let (id, _) = wire.read_response(api, version).await.unwrap();
        assert_eq!(id, expected);
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_in_every_version_names_this_broker_and_its_topics() {
    let broker = TestBroker::start().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    create_topic(&mut wire, "meta-topic", 3).await;
    let port = broker.server.as_ref().unwrap().local_addr.port() as i32;
    for version in 0..=12 {
        let request = if version == 0 {
            MetadataRequest::default().with_topics(Some(vec![]))
        } else {
            MetadataRequest::default().with_topics(None)
        };
        let resp: MetadataResponse = wire.call(ApiKey::Metadata, version, &request).await;
        assert_eq!(resp.brokers.len(), 1);
        assert_eq!(resp.brokers[0].host.as_str(), "127.0.0.1");
        assert_eq!(resp.brokers[0].port, port);
        let t = resp
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some("meta-topic"))
            .unwrap_or_else(|| panic!("v{version}: {resp:?}"));
        assert_eq!(t.partitions.len(), 3);
        for p in &t.partitions {
            assert_eq!(p.leader_id.0, 1);
            assert_eq!(p.replica_nodes.len(), 1);
            assert_eq!(p.isr_nodes.len(), 1);
        }
        if version >= 10 {
            assert!(!t.topic_id.is_nil());
        }
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_creates_topics_only_when_allowed() {
    let broker = TestBroker::start_with(|c| c.num_partitions = 2).await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    let ask = |name: &str, allow: bool| {
        MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic(name)))
            ]))
            .with_allow_auto_topic_creation(allow)
    };
    let resp: MetadataResponse = wire
        .call(ApiKey::Metadata, 12, &ask("not-made", false))
        .await;
    assert_eq!(resp.topics[0].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    let resp: MetadataResponse = wire.call(ApiKey::Metadata, 12, &ask("made", true)).await;
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(resp.topics[0].partitions.len(), 2, "num.partitions");
    let resp: MetadataResponse = wire
        .call(ApiKey::Metadata, 12, &ask("bad name!", true))
        .await;
    assert_eq!(resp.topics[0].error_code, 17, "INVALID_TOPIC_EXCEPTION");
    broker.stop().await;
    let broker = TestBroker::start_with(|c| c.auto_create_topics = false).await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    let resp: MetadataResponse = wire.call(ApiKey::Metadata, 12, &ask("made", true)).await;
    assert_eq!(resp.topics[0].error_code, 3, "the broker forbids it");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_answers_earliest_latest_timestamp_and_max() {
    let broker = TestBroker::start().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    create_topic(&mut wire, "offsets", 1).await;
    for (i, ts) in [1_000i64, 3_000, 2_000].into_iter().enumerate() {
        let batch = BatchBuilder::new()
            .record(Some(b"k"), Some(format!("v{i}").as_bytes()), ts)
            .build()
            .unwrap();
        let resp: ProduceResponse = wire
            .call(
                ApiKey::Produce,
                9,
                &produce_request("offsets", 0, batch, -1),
            )
            .await;
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    }
    let ask = |ts: i64| {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic("offsets"))
                .with_partitions(vec![
                    ListOffsetsPartition::default().with_timestamp(ts)
                ])])
    };
    for (ts, offset, found_ts) in [
        (-2, 0, -1),
        (-1, 3, -1),
        (-3, 1, 3_000),
        (1_500, 1, 3_000),
        (2_500, 1, 3_000),
        (3_001, -1, -1),
        (0, 0, 1_000),
    ] {
        let resp: ListOffsetsResponse = wire.call(ApiKey::ListOffsets, 8, &ask(ts)).await;
        let p = &resp.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        assert_eq!(
            (p.offset, p.timestamp),
            (offset, found_ts),
            "timestamp {ts}"
        );
    }
    let resp: ListOffsetsResponse = wire
        .call(
            ApiKey::ListOffsets,
            8,
            &ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic("offsets"))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(7)
                    .with_timestamp(-1)])]),
        )
        .await;
    assert_eq!(resp.topics[0].partitions[0].error_code, 3);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_epoch_zero_ends_at_the_log_end() {
    let broker = TestBroker::start().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    create_topic(&mut wire, "epochs", 1).await;
    let batch = BatchBuilder::new()
        .record(None, Some(b"x"), 1)
        .record(None, Some(b"y"), 2)
        .build()
        .unwrap();
    let _: ProduceResponse = wire
        .call(ApiKey::Produce, 9, &produce_request("epochs", 0, batch, 1))
        .await;
    let ask = |epoch: i32, current: i32| {
        OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(topic("epochs"))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_leader_epoch(epoch)
                    .with_current_leader_epoch(current)])])
    };
    let resp: OffsetForLeaderEpochResponse =
        wire.call(ApiKey::OffsetForLeaderEpoch, 4, &ask(0, 0)).await;
    let p = &resp.topics[0].partitions[0];
    assert_eq!((p.error_code, p.leader_epoch, p.end_offset), (0, 0, 2));
    let resp: OffsetForLeaderEpochResponse =
        wire.call(ApiKey::OffsetForLeaderEpoch, 4, &ask(0, 5)).await;
    assert_eq!(
        resp.topics[0].partitions[0].error_code, 75,
        "UNKNOWN_LEADER_EPOCH"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_cluster_and_init_producer_id() {
    let broker = TestBroker::start().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    let resp: DescribeClusterResponse = wire
        .call(
            ApiKey::DescribeCluster,
            1,
            &DescribeClusterRequest::default().with_endpoint_type(1),
        )
        .await;
    assert_eq!(resp.error_code, 0);
    assert_eq!(resp.brokers.len(), 1);
    assert_eq!(resp.controller_id.0, 1);
    assert_eq!(resp.cluster_id.len(), 22);
    let first: InitProducerIdResponse = wire
        .call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await;
    let second: InitProducerIdResponse = wire
        .call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await;
    assert_eq!(first.error_code, 0);
    assert_ne!(first.producer_id, second.producer_id);
    // KIP-360: bumping the epoch of an existing producer.
    let bumped: InitProducerIdResponse = wire
        .call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_producer_id(first.producer_id)
                .with_producer_epoch(0),
        )
        .await;
    assert_eq!(
        (bumped.producer_id, bumped.producer_epoch),
        (first.producer_id, 1)
    );
    let txn: InitProducerIdResponse = wire
        .call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx"))))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await;
    assert_ne!(txn.error_code, 0, "transactions are not supported");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_low_watermark() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    let broker = TestBroker::start().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    create_topic(&mut wire, "trim", 1).await;
    for i in 0..5 {
        let batch = BatchBuilder::new()
            .record(None, Some(format!("{i}").as_bytes()), 1)
            .build()
            .unwrap();
        let _: ProduceResponse = wire
            .call(ApiKey::Produce, 9, &produce_request("trim", 0, batch, 1))
            .await;
    }
    let ask = |offset: i64| {
        DeleteRecordsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(topic("trim"))
                .with_partitions(vec![
                    DeleteRecordsPartition::default().with_offset(offset)
                ])])
    };
    let resp: DeleteRecordsResponse = wire.call(ApiKey::DeleteRecords, 2, &ask(3)).await;
    let p = &resp.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (0, 3));
    let resp: DeleteRecordsResponse = wire.call(ApiKey::DeleteRecords, 2, &ask(99)).await;
    assert_eq!(
        resp.topics[0].partitions[0].error_code, 1,
        "OFFSET_OUT_OF_RANGE"
    );
    let resp: DeleteRecordsResponse = wire.call(ApiKey::DeleteRecords, 2, &ask(-1)).await;
    assert_eq!(
        resp.topics[0].partitions[0].low_watermark, 5,
        "-1 means the high watermark"
    );
    let resp: ListOffsetsResponse = wire
        .call(
            ApiKey::ListOffsets,
            8,
            &ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic("trim"))
                .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-2)])]),
        )
        .await;
    assert_eq!(resp.topics[0].partitions[0].offset, 5);
    broker.stop().await;
}

/// Regression: ListOffsets answers before v4 carried a leader epoch, which those versions
/// cannot encode; the broker closed the connection (kafkajs speaks v3 and never got an
/// answer).
#[tokio::test]
async fn list_offsets_before_v4_answers_without_a_leader_epoch() {
    let broker = TestBroker::start().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    create_topic(&mut wire, "old-lo", 1).await;
    for version in 1..=3i16 {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic("old-lo"))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)])]);
        let resp: ListOffsetsResponse = wire.call(ApiKey::ListOffsets, version, &request).await;
        let p = &resp.topics[0].partitions[0];
        assert_eq!((p.error_code, p.offset), (0, 0), "v{version}");
    }
    broker.stop().await;
}
