//! librdkafka helpers for checking what other tools wrote.

use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};

fn config(bootstrap: &str) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100");
    c
}

/// The first `count` records of one partition (manual assignment, no group).
pub async fn read(bootstrap: &str, topic: &str, partition: i32, count: usize) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = config(bootstrap)
        .set("group.id", "rdkafka-reader")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while out.len() < count {
            out.push(consumer.recv().await.expect("record").detach());
        }
    })
    .await
    .expect("records within 30 s");
    out
}

/// `count` records read as a member of `group` (from its committed offsets), as
/// (partition, offset).
pub async fn read_as_group(
    bootstrap: &str,
    topic: &str,
    group: &str,
    count: usize,
) -> Vec<(i32, i64)> {
    let consumer: StreamConsumer = config(bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "latest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while out.len() < count {
            let m = consumer.recv().await.expect("record");
            out.push((m.partition(), m.offset()));
        }
    })
    .await
    .expect("records within 60 s");
    consumer.unsubscribe();
    out
}
