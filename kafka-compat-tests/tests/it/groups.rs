//! Consumer groups with kafka-python and kafkajs: three members share a topic, one leaves
//! and its partitions move, the admin APIs list and describe the group and its offsets, and
//! committed offsets survive a broker restart.

use std::path::Path;

use crate::clients::{node_modules, python, run, script, Broker};

async fn kafka_python_group(strategy: &str) {
    let Some(python) = python() else { return };
    let mut broker = Broker::start().await;
    let (topic, group) = (format!("py-{strategy}"), format!("py-group-{strategy}"));
    let groups = script("python/groups.py");
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
