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
        &[path.to_str().expect("utf-8 path"), &broker.bootstrap(), topic],
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
        &[path.to_str().expect("utf-8 path"), &broker.bootstrap(), "kafkajs-basics"],
        &[("NODE_PATH", modules.as_path())],
        120,
    )
    .await;
    broker.stop().await;
}
