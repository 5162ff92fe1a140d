//! Produce and consume with librdkafka: every codec, keys, null values, headers, timestamps,
//! acks levels, metadata, and acknowledged data surviving a restart.

use std::time::Duration;

use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Timestamp};

use crate::common::*;

/// Compressible enough that every codec makes the batch smaller (librdkafka sends a batch
/// uncompressed otherwise).
fn value(i: usize) -> String {
    format!("value-{i}-{}", "chorus".repeat(20))
}

async fn produce_all(bootstrap: &str, topic: &str, extra: &[(&str, &str)], n: usize) {
    let mut config = rdkafka_config(bootstrap);
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let producer: FutureProducer = config.create().unwrap();
    // Queue everything before waiting, so batches hold many records (librdkafka sends a batch
    // uncompressed when compressing it would not make it smaller).
    let mut deliveries = Vec::new();
    for i in 0..n {
        let key = format!("key-{i}");
        let payload = value(i);
        let mut record = FutureRecord::to(topic)
            .partition(0)
            .key(&key)
            .timestamp(1_700_000_000_000 + i as i64)
            .headers(OwnedHeaders::new().insert(Header {
                key: "index",
                value: Some(&i.to_string()),
            }));
        if i % 5 != 4 {
            record = record.payload(&payload);
        }
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for (i, d) in deliveries.into_iter().enumerate() {
        let delivery = within(30, d)
            .await
            .unwrap()
            .map_err(|(e, _)| e)
            .expect("delivered");
        assert_eq!(delivery.offset, i as i64);
    }
}

async fn check_all(bootstrap: &str, topic: &str, n: usize) {
    let messages = consume(bootstrap, topic, &[0], n, 30).await;
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m.offset(), i as i64);
        assert_eq!(m.key(), Some(format!("key-{i}").as_bytes()));
        if i % 5 == 4 {
            assert_eq!(m.payload(), None, "null value");
        } else {
            assert_eq!(m.payload(), Some(value(i).as_bytes()));
        }
        assert_eq!(
            m.timestamp(),
            Timestamp::CreateTime(1_700_000_000_000 + i as i64)
        );
        let headers = m.headers().expect("headers");
        let h = headers.get(0);
        assert_eq!(h.key, "index");
        assert_eq!(h.value, Some(i.to_string().as_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_codec_round_trips() {
    let broker = TestBroker::start().await;
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        produce_all(
            &broker.bootstrap(),
            &topic,
            &[("compression.codec", codec), ("linger.ms", "20")],
            50,
        )
        .await;
        check_all(&broker.bootstrap(), &topic, 50).await;
        // The batches are stored as the producer compressed them.
        let log = broker
            .server
            .as_ref()
            .unwrap()
            .broker
            .logs
            .log(&topic, 0)
            .unwrap();
        let read = log
            .read(0, chorus_storage::ReadLimits::bytes(1 << 20))
            .unwrap();
        let codecs: Vec<(&str, i32)> = read
            .batches()
            .map(|(_, h, _)| (h.compression().unwrap().name(), h.records_count))
            .collect();
        assert!(
            codecs.iter().any(|(c, _)| *c == codec),
            "{codec}: {codecs:?}"
        );
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_levels_and_metadata() {
    let broker = TestBroker::start().await;
    for acks in ["0", "1", "all"] {
        let topic = format!("acks-{acks}");
        let producer: FutureProducer = rdkafka_config(&broker.bootstrap())
            .set("acks", acks)
            .create()
            .unwrap();
        for i in 0..20 {
            let payload = format!("{i}");
            within(
                30,
                producer.send(
                    FutureRecord::<(), _>::to(&topic)
                        .partition(0)
                        .payload(&payload),
                    Duration::from_secs(10),
                ),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        }
        let messages = consume(&broker.bootstrap(), &topic, &[0], 20, 30).await;
        assert_eq!(messages.len(), 20);
    }
    // Metadata through librdkafka: the auto-created topics, led by this broker.
    let consumer: rdkafka::consumer::BaseConsumer =
        rdkafka_config(&broker.bootstrap()).create().unwrap();
    let md = tokio::task::spawn_blocking(move || {
        rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, Duration::from_secs(10))
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(md.brokers().len(), 1);
    assert_eq!(md.brokers()[0].id(), 1);
    let names: Vec<&str> = md.topics().iter().map(|t| t.name()).collect();
    for t in ["acks-0", "acks-1", "acks-all"] {
        assert!(names.contains(&t), "{names:?}");
    }
    for t in md.topics() {
        assert_eq!(t.partitions()[0].leader(), 1);
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_a_restart() {
    let mut broker = TestBroker::start_with(|c| {
        c.topic_defaults.insert("flush.messages".into(), "1".into());
    })
    .await;
    produce_all(
        &broker.bootstrap(),
        "durable",
        &[("acks", "all"), ("linger.ms", "1")],
        200,
    )
    .await;
    broker.restart().await;
    check_all(&broker.bootstrap(), "durable", 200).await;
    // And the log keeps counting from where it was.
    produce_all(&broker.bootstrap(), "durable-2", &[("acks", "all")], 5).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_partitions_and_large_messages() {
    // Each fetch answers all four partitions, each with up to 1 MiB of 600 KiB records that go
    // to the socket from the segment file (`sendfile`, see `chorus_broker::response`), ended
    // by the offset index where the limit cuts. Every record has a different payload, so
    // ranges sent in the wrong place, order or length would show.
    let broker = TestBroker::start_with(|c| c.num_partitions = 4).await;
    let producer: FutureProducer = rdkafka_config(&broker.bootstrap()).create().unwrap();
    let payload = |p: i32, n: i64| -> Vec<u8> {
        (0..600usize << 10)
            .map(|i| (i.wrapping_mul(31) as u8) ^ (p as u8 * 67) ^ (n as u8 * 13))
            .collect()
    };
    for n in 0..3 {
        for p in 0..4 {
            within(
                30,
                producer.send(
                    FutureRecord::<(), _>::to("multi")
                        .partition(p)
                        .payload(&payload(p, n)),
                    Duration::from_secs(10),
                ),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        }
    }
    let messages = consume(&broker.bootstrap(), "multi", &[0, 1, 2, 3], 12, 30).await;
    let mut seen: Vec<(i32, i64)> = messages
        .iter()
        .map(|m| (m.partition(), m.offset()))
        .collect();
    seen.sort();
    let all: Vec<(i32, i64)> = (0..4).flat_map(|p| (0..3).map(move |n| (p, n))).collect();
    assert_eq!(seen, all);
    for m in &messages {
        assert!(
            m.payload() == Some(&payload(m.partition(), m.offset())[..]),
            "partition {} offset {} came back with other bytes",
            m.partition(),
            m.offset()
        );
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_messages_in_large_batches_are_all_consumed() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let broker = TestBroker::start().await;
    let bootstrap = broker.bootstrap();
    const N: usize = 100_000;
    tokio::task::spawn_blocking(move || {
        let producer: BaseProducer = rdkafka_config(&bootstrap)
            .set("linger.ms", "5")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .unwrap();
        let payload = [b'x'; 100];
        for _ in 0..N {
            while producer
                .send(
                    BaseRecord::<(), _>::to("small")
                        .payload(&payload[..])
                        .partition(0),
                )
                .is_err()
            {
                producer.poll(Duration::from_millis(1));
            }
        }
        producer.flush(Duration::from_secs(60)).unwrap();
    })
    .await
    .unwrap();
    let messages = consume(&broker.bootstrap(), "small", &[0], N, 60).await;
    assert_eq!(messages.len(), N);
    assert_eq!(messages.last().unwrap().offset(), N as i64 - 1);
    broker.stop().await;
}
