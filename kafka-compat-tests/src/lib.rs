//! Compatibility tests that start a real `chorus` process and drive it with third-party Kafka
//! clients (librdkafka, kcat, confluent-kafka, kafka-python, aiokafka, kafkajs).
//!
//! Not built yet: see the CLI and compatibility-suite issue.
