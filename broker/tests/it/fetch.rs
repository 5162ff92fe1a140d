//! Fetch: long polls, byte limits, out-of-range offsets.

use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;

use crate::common::*;
use crate::protocol::{create_topic, produce_request, record, topic};
use crate::wire::Wire;

fn fetch(
    name: &str,
    offset: i64,
    max_wait_ms: i32,
    min_bytes: i32,
    partition_max: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(50 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic(name))
            .with_partitions(vec![FetchPartition::default()
                .with_fetch_offset(offset)
                .with_partition_max_bytes(partition_max)])])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_as_soon_as_data_arrives() {
    let broker = TestBroker::start().await;
    let addr = broker.bootstrap();
    let mut setup = Wire::connect(&addr).await;
    create_topic(&mut setup, "poll", 1).await;

    let mut consumer = Wire::connect(&addr).await;
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        let resp: FetchResponse = consumer
            .call(ApiKey::Fetch, 11, &fetch("poll", 0, 10_000, 1, 1 << 20))
            .await;
        (resp, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _: ProduceResponse = setup
        .call(
            ApiKey::Produce,
            9,
            &produce_request("poll", 0, record(b"wake up"), 1),
        )
        .await;
    let (resp, elapsed) = within(15, poll).await.unwrap();
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert!(!p.records.as_ref().unwrap().is_empty());
    assert_eq!(p.high_watermark, 1);
    assert!(
        elapsed >= Duration::from_millis(250),
        "returned before the data: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "waited for the deadline: {elapsed:?}"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_without_data_waits_for_max_wait() {
    let broker = TestBroker::start().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    create_topic(&mut wire, "quiet", 1).await;
    let started = Instant::now();
    let resp: FetchResponse = wire
        .call(ApiKey::Fetch, 11, &fetch("quiet", 0, 600, 1, 1 << 20))
        .await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert!(resp.responses[0].partitions[0]
        .records
        .as_ref()
        .unwrap()
        .is_empty());
    // min_bytes larger than what exists also waits, then returns what there is.
    let _: ProduceResponse = wire
        .call(
            ApiKey::Produce,
            9,
            &produce_request("quiet", 0, record(b"small"), 1),
        )
        .await;
    let started = Instant::now();
    let resp: FetchResponse = wire
        .call(ApiKey::Fetch, 11, &fetch("quiet", 0, 400, 1 << 20, 1 << 20))
        .await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(!resp.responses[0].partitions[0]
        .records
        .as_ref()
        .unwrap()
        .is_empty());
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_limits_and_the_first_batch_rule() {
    let broker = TestBroker::start().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    create_topic(&mut wire, "limits", 1).await;
    for i in 0..10 {
        let _: ProduceResponse = wire
            .call(
                ApiKey::Produce,
                9,
                &produce_request("limits", 0, record(&vec![i as u8; 1000]), 1),
            )
            .await;
    }
    let one = record(&[0u8; 1000]).len();
    let resp: FetchResponse = wire
        .call(
            ApiKey::Fetch,
            11,
            &fetch("limits", 0, 0, 1, (one * 3 + 5) as i32),
        )
        .await;
    assert_eq!(
        resp.responses[0].partitions[0]
            .records
            .as_ref()
            .unwrap()
            .len(),
        one * 3
    );
    // A partition limit smaller than one batch still returns that batch (KIP-74).
    let resp: FetchResponse = wire
        .call(ApiKey::Fetch, 11, &fetch("limits", 4, 0, 1, 10))
        .await;
    let records = resp.responses[0].partitions[0].records.as_ref().unwrap();
    assert_eq!(records.len(), one);
    assert_eq!(
        i64::from_be_bytes(records[..8].try_into().unwrap()),
        4,
        "starts at the batch holding offset 4"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_offsets_and_unknown_partitions_are_errors() {
    let broker = TestBroker::start().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    create_topic(&mut wire, "range", 1).await;
    let _: ProduceResponse = wire
        .call(
            ApiKey::Produce,
            9,
            &produce_request("range", 0, record(b"x"), 1),
        )
        .await;
    let started = Instant::now();
    let resp: FetchResponse = wire
        .call(ApiKey::Fetch, 11, &fetch("range", 5, 5_000, 1, 1 << 20))
        .await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 1, "OFFSET_OUT_OF_RANGE");
    assert_eq!((p.high_watermark, p.log_start_offset), (1, 0));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "errors answer at once"
    );
    let resp: FetchResponse = wire
        .call(ApiKey::Fetch, 11, &fetch("missing", 0, 100, 1, 1 << 20))
        .await;
    assert_eq!(resp.responses[0].partitions[0].error_code, 3);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_by_topic_id_in_v13_and_later() {
    let broker = TestBroker::start().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    create_topic(&mut wire, "by-id", 1).await;
    let _: ProduceResponse = wire
        .call(
            ApiKey::Produce,
            9,
            &produce_request("by-id", 0, record(b"x"), 1),
        )
        .await;
    let meta: MetadataResponse = wire
        .call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        )
        .await;
    let id = meta
        .topics
        .iter()
        .find(|t| t.name.as_deref().is_some_and(|n| n.as_str() == "by-id"))
        .unwrap()
        .topic_id;
    let mut request = fetch("", 0, 0, 1, 1 << 20);
    request.topics[0].topic_id = id;
    let resp: FetchResponse = wire.call(ApiKey::Fetch, 16, &request).await;
    assert_eq!(resp.responses[0].topic_id, id);
    assert_eq!(resp.responses[0].partitions[0].error_code, 0);
    assert!(!resp.responses[0].partitions[0]
        .records
        .as_ref()
        .unwrap()
        .is_empty());
    request.topics[0].topic_id = uuid::Uuid::new_v4();
    let resp: FetchResponse = wire.call(ApiKey::Fetch, 16, &request).await;
    assert_eq!(
        resp.responses[0].partitions[0].error_code, 100,
        "UNKNOWN_TOPIC_ID"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_after_a_full_response_come_back_empty_with_their_offsets_or_errors() {
    let broker = TestBroker::start().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    create_topic(&mut wire, "full", 3).await;
    for p in 0..3 {
        for i in 0..3 {
            let _: ProduceResponse = wire
                .call(
                    ApiKey::Produce,
                    9,
                    &produce_request("full", p, record(&vec![i as u8; 1000]), 1),
                )
                .await;
        }
    }
    let one = record(&[0u8; 1000]).len();
    // Room for two batches in the response: partition 0 takes it all.
    let partitions = [(0, 0), (1, 0), (2, 99)]
        .into_iter()
        .map(|(p, offset)| {
            FetchPartition::default()
                .with_partition(p)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)
        })
        .collect();
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes((one * 2) as i32)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic("full"))
            .with_partitions(partitions)]);
    let resp: FetchResponse = wire.call(ApiKey::Fetch, 11, &request).await;
    let parts = &resp.responses[0].partitions;
    let len = |i: usize| parts[i].records.as_ref().map_or(0, |r| r.len());
    assert_eq!((parts[0].error_code, len(0)), (0, one * 2));
    assert_eq!((parts[1].error_code, len(1)), (0, 0), "no room left");
    assert_eq!((parts[1].high_watermark, parts[1].log_start_offset), (3, 0));
    assert_eq!(
        parts[2].error_code, 1,
        "OFFSET_OUT_OF_RANGE even without room"
    );
    broker.stop().await;
}
