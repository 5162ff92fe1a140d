//! Topic administration through librdkafka's admin client.

use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse, ApiKey};
use kafka_protocol::protocol::StrBytes;

use crate::common::*;
use crate::wire::Wire;

fn alter_request(resource_type: i8, name: &str, key: &str, value: &str) -> AlterConfigsRequest {
    AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(resource_type)
        .with_resource_name(StrBytes::from_string(name.to_string()))
        .with_configs(vec![AlterableConfig::default()
            .with_name(StrBytes::from_string(key.to_string()))
            .with_value(Some(StrBytes::from_string(value.to_string())))])])
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    let config: ClientConfig = rdkafka_config(bootstrap);
    config.create().unwrap()
}

fn opts() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_describe_alter_grow_and_delete_topics() {
    let broker = TestBroker::start().await;
    let admin = admin(&broker.bootstrap());

    let topic = NewTopic::new("admin-made", 3, TopicReplication::Fixed(1))
        .set("retention.ms", "3600000")
        .set("cleanup.policy", "compact");
    let results = within(30, admin.create_topics([&topic], &opts()))
        .await
        .unwrap();
    assert!(results[0].is_ok(), "{results:?}");
    let again = within(30, admin.create_topics([&topic], &opts()))
        .await
        .unwrap();
    assert_eq!(
        again[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::TopicAlreadyExists
    );
    let validated = within(
        30,
        admin.create_topics(
            [&NewTopic::new(
                "only-validated",
                1,
                TopicReplication::Fixed(1),
            )],
            &opts().validate_only(true),
        ),
    )
    .await
    .unwrap();
    assert!(validated[0].is_ok());
    assert!(broker
        .server
        .as_ref()
        .unwrap()
        .broker
        .logs
        .topic("only-validated")
        .is_none());

    let described = within(
        30,
        admin.describe_configs([&ResourceSpecifier::Topic("admin-made")], &opts()),
    )
    .await
    .unwrap();
    let config = described[0].as_ref().unwrap();
    let entry = |name: &str| config.entries.iter().find(|e| e.name == name).unwrap();
    assert_eq!(entry("retention.ms").value.as_deref(), Some("3600000"));
    assert!(!entry("retention.ms").is_default);
    assert_eq!(entry("segment.bytes").value.as_deref(), Some("1073741824"));
    assert!(entry("segment.bytes").is_default);
    assert!(config.entries.len() >= 20, "all entries with defaults");

    let change =
        AlterConfig::new(ResourceSpecifier::Topic("admin-made")).set("retention.ms", "7200000");
    let altered = within(30, admin.alter_configs([&change], &opts()))
        .await
        .unwrap();
    assert!(altered[0].is_ok(), "{altered:?}");
    assert_eq!(
        broker
            .server
            .as_ref()
            .unwrap()
            .broker
            .logs
            .topic_config("admin-made")
            .unwrap()
            .retention_ms,
        7_200_000
    );
    // librdkafka's result ignores per-resource errors, so check the refusal on the wire and
    // that nothing changed.
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    let bad: AlterConfigsResponse = wire
        .call(
            ApiKey::AlterConfigs,
            2,
            &alter_request(2, "admin-made", "retention.ms", "soon"),
        )
        .await;
    assert_eq!(bad.responses[0].error_code, 40, "INVALID_CONFIG");
    assert_eq!(
        broker
            .server
            .as_ref()
            .unwrap()
            .broker
            .logs
            .topic_config("admin-made")
            .unwrap()
            .retention_ms,
        7_200_000
    );

    let grown = within(
        30,
        admin.create_partitions([&NewPartitions::new("admin-made", 5)], &opts()),
    )
    .await
    .unwrap();
    assert!(grown[0].is_ok(), "{grown:?}");
    assert_eq!(
        broker
            .server
            .as_ref()
            .unwrap()
            .broker
            .logs
            .topic("admin-made")
            .unwrap()
            .partitions,
        5
    );
    let shrink = within(
        30,
        admin.create_partitions([&NewPartitions::new("admin-made", 2)], &opts()),
    )
    .await
    .unwrap();
    assert_eq!(
        shrink[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidPartitions
    );

    let deleted = within(30, admin.delete_topics(&["admin-made"], &opts()))
        .await
        .unwrap();
    assert!(deleted[0].is_ok());
    assert!(broker
        .server
        .as_ref()
        .unwrap()
        .broker
        .logs
        .topic("admin-made")
        .is_none());
    let missing = within(30, admin.delete_topics(&["admin-made"], &opts()))
        .await
        .unwrap();
    assert_eq!(
        missing[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::UnknownTopicOrPartition
    );
    broker.stop().await;
}

/// Partitions hold open files; a request for thousands of them must not spend the process's
/// open-file limit (the mutation test once did, and the broker stopped accepting connections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_partitions_beyond_the_partition_budget_are_refused() {
    // The offsets topic holds 4 of the 10.
    let broker = TestBroker::start_with(|c| c.max_partitions = 10).await;
    let admin = admin(&broker.bootstrap());
    let create = |name: &'static str, partitions| {
        let admin = &admin;
        async move {
            let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
            within(30, admin.create_topics([&topic], &opts()))
                .await
                .unwrap()
                .remove(0)
        }
    };
    assert!(create("fits", 4).await.is_ok());
    assert_eq!(
        create("too-big", 3).await.unwrap_err().1,
        RDKafkaErrorCode::PolicyViolation
    );
    let grown = within(
        30,
        admin.create_partitions([&NewPartitions::new("fits", 7)], &opts()),
    )
    .await
    .unwrap();
    assert_eq!(
        grown[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::PolicyViolation
    );
    let logs = &broker.server.as_ref().unwrap().broker.logs;
    assert!(logs.topic("too-big").is_none());
    assert_eq!(logs.topic("fits").unwrap().partitions, 4);
    // What is left of the budget can still be used.
    assert!(create("rest", 2).await.is_ok());
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_configs_are_described_and_read_only() {
    let broker = TestBroker::start().await;
    let admin = admin(&broker.bootstrap());
    let described = within(
        30,
        admin.describe_configs([&ResourceSpecifier::Broker(1)], &opts()),
    )
    .await
    .unwrap();
    let config = described[0].as_ref().unwrap();
    assert!(config
        .entries
        .iter()
        .any(|e| e.name == "num.partitions" && e.is_read_only));
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    let refused: AlterConfigsResponse = wire
        .call(
            ApiKey::AlterConfigs,
            2,
            &alter_request(4, "1", "num.partitions", "3"),
        )
        .await;
    assert_eq!(
        refused.responses[0].error_code, 42,
        "broker settings are static"
    );
    assert_eq!(
        broker.server.as_ref().unwrap().broker.config.num_partitions,
        1
    );
    broker.stop().await;
}
