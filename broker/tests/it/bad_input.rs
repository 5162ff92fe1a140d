//! Bad input gets Kafka's error code or a closed connection, never a panic, and never harms
//! other connections or stored data.

use chorus_storage::batch::BatchBuilder;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::common::*;
use crate::protocol::{create_topic, produce_request, topic};
use crate::wire::Wire;

/// A healthy second connection keeps working after each abuse.
async fn still_serves(addr: &str) {
    let mut wire = Wire::connect(addr).await;
    let resp: MetadataResponse = within(
        10,
        wire.call(ApiKey::Metadata, 12, &MetadataRequest::default()),
    )
    .await;
    assert_eq!(resp.brokers.len(), 1);
}

async fn assert_closed(addr: &str, bytes: &[u8]) {
    let mut wire = Wire::connect(addr).await;
    wire.send_raw(bytes).await;
    assert!(
        wire.closed_within(10).await,
        "the broker should close on {bytes:02x?}"
    );
    still_serves(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_frames_close_the_connection_and_nothing_else() {
    let broker = TestBroker::start().await;
    let addr = broker.bootstrap();
    let mut healthy = Wire::connect(&addr).await;

    // Garbage: a size prefix with junk after it that is no request header.
    assert_closed(
        &addr,
        &[0, 0, 0, 12, 0x7f, 0x7f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    )
    .await;
    // Negative size.
    assert_closed(&addr, &(-5i32).to_be_bytes()).await;
    // Larger than the request limit: refused from the prefix alone.
    assert_closed(&addr, &(200i32 << 20).to_be_bytes()).await;
    // Unknown API key 999.
    assert_closed(&addr, &[0, 0, 0, 10, 0x03, 0xe7, 0, 0, 0, 0, 0, 1, 0, 0]).await;
    // A known API at a version we do not serve (Produce v99).
    assert_closed(&addr, &[0, 0, 0, 10, 0, 0, 0, 99, 0, 0, 0, 1, 0, 0]).await;
    // A Metadata v12 request whose body is cut short.
    let mut wire = Wire::connect(&addr).await;
    let (_, frame) = wire.frame(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(topic("abc"))),
        ])),
    );
    let mut cut = frame.to_vec();
    let new_len = (cut.len() - 4 - 6) as i32;
    cut.truncate(cut.len() - 6);
    cut[..4].copy_from_slice(&new_len.to_be_bytes());
    assert_closed(&addr, &cut).await;

    // The connection opened before all this still works.
    let resp: MetadataResponse = healthy
        .call(ApiKey::Metadata, 12, &MetadataRequest::default())
        .await;
    assert_eq!(resp.brokers.len(), 1);
    broker.stop().await;
}

/// A request frame with a hand-made body: header v1 (`flexible` false) or v2.
fn raw_request(api: ApiKey, version: i16, flexible: bool, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&(api as i16).to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    frame.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    if flexible {
        frame.push(0); // no tagged fields
    }
    frame.extend_from_slice(body);
    let mut out = (frame.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&frame);
    out
}

/// The protocol crate sizes an array's vector from the count on the wire before it decodes a
/// single element, so a few bytes claiming billions of elements ask for hundreds of GB at once.
/// Under glibc's allocator that allocation fails and the whole process aborts (this test did,
/// before the crate set its allocator for its tests too); see the allocator in `lib.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_array_counts_close_the_connection_and_nothing_else() {
    let broker = TestBroker::start().await;
    let addr = broker.bootstrap();
    let mut healthy = Wire::connect(&addr).await;

    // Metadata v1: a topics array of i32::MAX entries, and no entries.
    let frame = raw_request(ApiKey::Metadata, 1, false, &i32::MAX.to_be_bytes());
    assert_closed(&addr, &frame).await;
    // Produce v3: a null transactional id, acks, timeout, then i32::MAX topics.
    let mut body = (-1i16).to_be_bytes().to_vec();
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&1000i32.to_be_bytes());
    body.extend_from_slice(&i32::MAX.to_be_bytes());
    body.extend_from_slice(&[0, 3, b'a', b'b', b'c']);
    assert_closed(&addr, &raw_request(ApiKey::Produce, 3, false, &body)).await;
    // CreateTopics v5 (flexible): a compact array whose varint count is u32::MAX.
    let frame = raw_request(
        ApiKey::CreateTopics,
        5,
        true,
        &[0xff, 0xff, 0xff, 0xff, 0x0f, 4, b'a', b'b', b'c'],
    );
    assert_closed(&addr, &frame).await;
    // Fetch v4: i32::MAX partitions inside the one topic.
    let mut body = Vec::new();
    body.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
    body.extend_from_slice(&100i32.to_be_bytes()); // max wait
    body.extend_from_slice(&1i32.to_be_bytes()); // min bytes
    body.extend_from_slice(&(1i32 << 20).to_be_bytes()); // max bytes
    body.push(0); // isolation level
    body.extend_from_slice(&1i32.to_be_bytes()); // one topic
    body.extend_from_slice(&[0, 3, b'a', b'b', b'c']);
    body.extend_from_slice(&i32::MAX.to_be_bytes());
    assert_closed(&addr, &raw_request(ApiKey::Fetch, 4, false, &body)).await;

    let resp: MetadataResponse = healthy
        .call(ApiKey::Metadata, 12, &MetadataRequest::default())
        .await;
    assert_eq!(resp.brokers.len(), 1);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_frame_is_dropped_when_the_client_goes_away() {
    let broker = TestBroker::start().await;
    let addr = broker.bootstrap();
    let mut wire = Wire::connect(&addr).await;
    // Promise 100 bytes, send 10, hang up.
    wire.send_raw(&[0, 0, 0, 100, 0, 3, 0, 12, 0, 0, 0, 1, 0, 0])
        .await;
    drop(wire);
    still_serves(&addr).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let broker =
        TestBroker::start_with(|c| c.idle_timeout = std::time::Duration::from_millis(300)).await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    assert!(wire.closed_within(5).await);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused() {
    let broker = TestBroker::start_with(|c| c.max_connections = 2).await;
    let addr = broker.bootstrap();
    let mut a = Wire::connect(&addr).await;
    let mut b = Wire::connect(&addr).await;
    let _: MetadataResponse = a
        .call(ApiKey::Metadata, 12, &MetadataRequest::default())
        .await;
    let _: MetadataResponse = b
        .call(ApiKey::Metadata, 12, &MetadataRequest::default())
        .await;
    let mut c = Wire::connect(&addr).await;
    assert!(
        c.closed_within(5).await,
        "the third connection is over the limit"
    );
    drop(a);
    // Once one leaves there is room again.
    let mut ok = false;
    for _ in 0..50 {
        let mut d = Wire::connect(&addr).await;
        let (_, f) = d.frame(ApiKey::Metadata, 12, &MetadataRequest::default());
        d.send_raw(&f).await;
        if d.read_response(ApiKey::Metadata, 12).await.is_some() {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_get_kafka_error_codes_and_store_nothing() {
    let broker = TestBroker::start().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    create_topic(&mut wire, "strict", 1).await;
    let good = BatchBuilder::new()
        .record(Some(b"k"), Some(b"v"), 1)
        .build()
        .unwrap();
    let resp: ProduceResponse = wire
        .call(
            ApiKey::Produce,
            9,
            &produce_request("strict", 0, good.clone(), -1),
        )
        .await;
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);

    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    let resp: ProduceResponse = wire
        .call(
            ApiKey::Produce,
            9,
            &produce_request("strict", 0, bad_crc, -1),
        )
        .await;
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 2, "CORRUPT_MESSAGE");
    assert!(p.error_message.as_ref().unwrap().contains("CRC"));

    let resp: ProduceResponse = wire
        .call(
            ApiKey::Produce,
            9,
            &produce_request("strict", 0, good[..good.len() - 3].to_vec(), -1),
        )
        .await;
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 2,
        "truncated batch"
    );

    let mut lying = BatchBuilder::new().record(None, Some(b"x"), 1);
    lying.last_offset_delta = Some(4);
    let resp: ProduceResponse = wire
        .call(
            ApiKey::Produce,
            9,
            &produce_request("strict", 0, lying.build().unwrap(), -1),
        )
        .await;
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 87,
        "INVALID_RECORD"
    );

    let resp: ProduceResponse = wire
        .call(
            ApiKey::Produce,
            9,
            &produce_request("nowhere", 0, good.clone(), -1),
        )
        .await;
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    let resp: ProduceResponse = wire
        .call(
            ApiKey::Produce,
            9,
            &produce_request("strict", 9, good.clone(), -1),
        )
        .await;
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 3);

    let big = BatchBuilder::new()
        .record(None, Some(&vec![0u8; 2 << 20]), 1)
        .build()
        .unwrap();
    let resp: ProduceResponse = wire
        .call(ApiKey::Produce, 9, &produce_request("strict", 0, big, -1))
        .await;
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 10,
        "MESSAGE_TOO_LARGE"
    );

    let resp: ProduceResponse = wire
        .call(
            ApiKey::Produce,
            9,
            &produce_request("strict", 0, good.clone(), 5),
        )
        .await;
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 21,
        "INVALID_REQUIRED_ACKS"
    );

    // Only the one good batch was stored.
    let resp: ListOffsetsResponse = wire.call(ApiKey::ListOffsets, 8, &ListOffsetsRequest::default().with_topics(vec![
        kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default()
            .with_name(topic("strict"))
            .with_partitions(vec![kafka_protocol::messages::list_offsets_request::ListOffsetsPartition::default().with_timestamp(-1)]),
    ])).await;
    assert_eq!(resp.topics[0].partitions[0].offset, 1);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn illegal_topic_names_and_impossible_topics_are_refused() {
    let broker = TestBroker::start().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    let make = |name: &str, partitions: i32, rf: i16| {
        CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(rf)
    };
    let resp: CreateTopicsResponse = wire
        .call(
            ApiKey::CreateTopics,
            7,
            &CreateTopicsRequest::default().with_topics(vec![
                make("has space", 1, 1),
                make(&"x".repeat(250), 1, 1),
                make("zero", 0, 1),
                make("replicated", 1, 3),
                make("dup", 1, 1),
                make("dup", 1, 1),
            ]),
        )
        .await;
    let codes: Vec<i16> = resp.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(codes, vec![17, 17, 37, 38, 42, 42]);
    let resp: MetadataResponse = wire
        .call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        )
        .await;
    assert!(
        resp.topics.iter().all(|t| t.is_internal),
        "nothing was created besides the internal offsets topic"
    );
    create_topic(&mut wire, "once", 1).await;
    let resp: CreateTopicsResponse = wire
        .call(
            ApiKey::CreateTopics,
            7,
            &CreateTopicsRequest::default().with_topics(vec![make("once", 1, 1)]),
        )
        .await;
    assert_eq!(resp.topics[0].error_code, 36, "TOPIC_ALREADY_EXISTS");
    broker.stop().await;
}
