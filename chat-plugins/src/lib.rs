//! The Chorus chat fabric: HTTP write path, WebSocket gateway, CDC ingest, idempotent forwarder.
//!
//! Written against the narrow log trait in [`log`] (append, read from an offset, join a
//! consumer group, commit) that the broker implements in-process and a Kafka client can
//! implement against an external cluster. This crate must never depend on `chorus-broker`.
//!
//! Modules: `log` (the trait the plugins need from a log). The plugins themselves are the
//! chat fabric issues' work.

pub mod log;
