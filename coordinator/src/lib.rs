//! Consumer-group coordinator for Chorus.
//!
//! A deterministic, synchronous state machine with injected time, in the manner of Kafka's
//! group metadata manager: an operation takes `now` and a command, changes the in-memory
//! state and returns (through [`Effects`]) the records to persist and the replies to send.
//! The broker persists the records in `__consumer_offsets` before it sends the replies, and
//! on start replays that topic through [`Coordinator::replay`]: the log is the truth and
//! this crate's memory is a cache of it.
//!
//! Modules:
//! * [`coordinator`] — the groups, their timers and every operation (join, sync, heartbeat,
//!   leave, offsets, administration);
//! * [`group`] — one classic group, with its state/transition table;
//! * [`consumer`] — KIP-848 consumer groups: server-side assignment and reconciliation;
//! * [`api`] — request and answer types; [`error`] — what can go wrong;
//! * [`record`] — the persisted records in Kafka's `__consumer_offsets` layout;
//! * [`consumer_protocol`] — the consumer subscription/assignment encoding;
//! * [`assignor`] — range, round-robin and sticky server-side assignors.
//!
//! Invariants: no I/O and no clock here (time is the `now` argument, in milliseconds since
//! the Unix epoch); a reply is never handed out before the records that justify it.
//!
//! This crate must never depend on `chorus-broker`, on tokio, or on the filesystem.

pub mod api;
pub mod assignor;
pub mod config;
pub mod consumer;
pub mod consumer_protocol;
pub mod coordinator;
pub mod error;
pub mod group;
pub mod record;

/// Milliseconds since the Unix epoch (Kafka's timestamps).
pub type Millis = i64;

pub use api::*;
pub use config::GroupConfig;
pub use coordinator::{Coordinator, PersistedGroup};
pub use error::GroupError;
pub use group::{ClassicGroup, GroupState};
pub use record::{CommittedOffset, GroupMetadata, Record};
