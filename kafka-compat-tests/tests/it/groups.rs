//! Consumer groups with confluent-kafka, kafka-python, aiokafka and kafkajs: three members share a topic, one leaves
//! and its partitions move, the admin APIs list and describe the group and its offsets, and
//! committed offsets survive a broker restart.

use std::path::Path;

use crate::clients::{node_modules, python, run, script, Broker};

async fn kafka_python_group(strategy: &str) {
    python_group("groups.py", strategy).await;
}

/// Runs a Python group script's "run" phase, restarts the broker, then its "verify" phase.
async fn python_group(file: &str, strategy: &str) {
    let Some(python) = python() else { return };
    let mut broker = Broker::start().await;
    let stem = file.trim_end_matches(".py");
    let (topic, group) = (
        format!("{stem}-{strategy}"),
        format!("{stem}-group-{strategy}"),
    );
    let groups = script(&format!("python/{file}"));
    let groups = groups.to_str().expect("utf-8 path");
    run(
        &python,
        &[groups, &broker.bootstrap(), &topic, &group, strategy, "run"],
        &[],
        180,
    )
    .await;
    broker.restart().await;
    run(
        &python,
        &[
            groups,
            &broker.bootstrap(),
            &topic,
            &group,
            strategy,
            "verify",
        ],
        &[],
        120,
    )
    .await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_range_group() {
    kafka_python_group("range").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_roundrobin_group() {
    kafka_python_group("roundrobin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_sticky_group() {
    kafka_python_group("sticky").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_range_group() {
    python_group("confluent_groups.py", "range").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_roundrobin_group() {
    python_group("confluent_groups.py", "roundrobin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_cooperative_sticky_group() {
    python_group("confluent_groups.py", "cooperative-sticky").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiokafka_range_group() {
    python_group("aiokafka_groups.py", "range").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiokafka_roundrobin_group() {
    python_group("aiokafka_groups.py", "roundrobin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_round_robin_group() {
    let Some(modules) = node_modules() else {
        return;
    };
    let mut broker = Broker::start().await;
    let groups = script("node/groups.js");
    let groups = groups.to_str().expect("utf-8 path");
    let node = Path::new("node");
    let env = [("NODE_PATH", modules.as_path())];
    run(
        node,
        &[groups, &broker.bootstrap(), "js-topic", "js-group", "run"],
        &env,
        180,
    )
    .await;
    broker.restart().await;
    run(
        node,
        &[
            groups,
            &broker.bootstrap(),
            "js-topic",
            "js-group",
            "verify",
        ],
        &env,
        120,
    )
    .await;
    broker.stop().await;
}
