//! Each client's basics: metadata, topic creation through its admin API, and an idempotent
//! producer per compression codec it supports sending keys, headers and null values, read
//! back in order.

use std::path::Path;

use crate::clients::{node_modules, python, run, script, Broker};

async fn python_basics(file: &str, topic: &str) {
    let Some(python) = python() else { return };
    let broker = Broker::start().await;
    let path = script(&format!("python/{file}"));
    run(
        &python,
        &[
            path.to_str().expect("utf-8 path"),
            &broker.bootstrap(),
            topic,
        ],
        &[],
        120,
    )
    .await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_basics() {
    python_basics("confluent_basics.py", "confluent-basics").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_basics() {
    python_basics("kafka_python_basics.py", "kafka-python-basics").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiokafka_basics() {
    python_basics("aiokafka_basics.py", "aiokafka-basics").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_basics() {
    let Some(modules) = node_modules() else {
        return;
    };
    let broker = Broker::start().await;
    let path = script("node/basics.js");
    run(
        Path::new("node"),
        &[
            path.to_str().expect("utf-8 path"),
            &broker.bootstrap(),
            "kafkajs-basics",
        ],
        &[("NODE_PATH", modules.as_path())],
        120,
    )
    .await;
    broker.stop().await;
}

/// librdkafka through the `rdkafka` crate: admin create, metadata, and an idempotent
/// producer per codec with keys, headers and null values, read back in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdkafka_basics() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let broker = Broker::start().await;
    let b = broker.bootstrap();
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", &b)
        .set("broker.address.family", "v4");
    let admin: AdminClient<DefaultClientContext> = config.create().expect("admin");
    let created = admin
        .create_topics(
            &[NewTopic::new(
                "rdkafka-basics",
                3,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .expect("create");
    assert!(created[0].is_ok(), "{created:?}");
    let metadata = admin
        .inner()
        .fetch_metadata(Some("rdkafka-basics"), std::time::Duration::from_secs(10))
        .expect("metadata");
    assert_eq!(metadata.topics()[0].partitions().len(), 3);
    assert_eq!(metadata.brokers().len(), 1);

    let mut want: Vec<(Option<String>, Option<String>, usize)> = Vec::new();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let producer: FutureProducer = config
            .clone()
            .set("compression.codec", codec)
            .set("enable.idempotence", "true")
            .create()
            .expect("producer");
        let key = format!("key-{codec}");
        let value = format!("value-{codec}").repeat(30);
        let headers = OwnedHeaders::new().insert(Header {
            key: "codec",
            value: Some(codec),
        });
        let sends = [
            FutureRecord::<str, str>::to("rdkafka-basics")
                .partition(0)
                .key(key.as_str())
                .payload(value.as_str())
                .headers(headers),
            FutureRecord::<str, str>::to("rdkafka-basics")
                .partition(0)
                .key(key.as_str()),
            FutureRecord::<str, str>::to("rdkafka-basics")
                .partition(0)
                .payload("no-key"),
        ];
        for record in sends {
            producer
                .send(record, std::time::Duration::from_secs(10))
                .await
                .expect("delivered");
        }
        want.push((Some(key.clone()), Some(value), 1));
        want.push((Some(key), None, 0));
        want.push((None, Some("no-key".into()), 0));
    }
    let got: Vec<(Option<String>, Option<String>, usize)> =
        crate::groups_rdkafka::read(&b, "rdkafka-basics", 0, want.len())
            .await
            .iter()
            .map(|m| {
                let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
                (
                    text(m.key()),
                    text(m.payload()),
                    m.headers().map_or(0, |h| h.count()),
                )
            })
            .collect();
    assert_eq!(got, want);
    broker.stop().await;
}
