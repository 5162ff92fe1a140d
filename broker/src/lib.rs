//! The Chorus broker: the Kafka wire protocol over the storage engine.
//!
//! Request path (as in mini-redis): `server` (accept, connection limit, graceful shutdown) →
//! `connection` (framing, size limit, in-order responses) → `handler` (one module per Kafka
//! API, routed by the table that also answers ApiVersions) → `partition` (idempotent producer
//! state, end-offset watches for long polls) → `chorus-storage`.
//!
//! `error` is the one place errors become Kafka error codes. `config` layers defaults, the
//! TOML file, the environment and flags. `groups` hosts the coordinator on its own thread,
//! `http` serves the admin endpoints, `embedded` serves the chat plugins' `Log` trait
//! in-process, `remote` serves it from an external Kafka cluster through librdkafka (for
//! `chorus gateway`, started by `gateway_server`), and `cli` holds the operator commands
//! (a Kafka client of their own).
//!
//! This crate depends on `chorus-storage`, `chorus-coordinator` and `chorus-chat`; none of
//! them may depend on it.

pub mod broker;
pub mod cli;
pub mod config;
pub mod connection;
pub mod embedded;
pub mod error;
pub mod gateway_server;
pub mod groups;
pub mod handler;
pub mod http;
pub mod partition;
pub mod producer_id;
pub mod remote;
pub mod response;
pub mod server;

pub use config::BrokerConfig;
pub use server::Server;
