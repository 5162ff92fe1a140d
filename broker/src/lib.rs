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
//! The crate sets the process's global allocator (below), so that this crate's tests run with
//! the allocator the `chorus` binary ships with.
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

/// mimalloc, for two reasons.
///
/// - glibc's allocator spent a third of the chat plugins' CPU time in its free lists
///   (`malloc_consolidate`, `unlink_chunk`) under many small, short-lived allocations across
///   threads; mimalloc's thread-local free lists do not. Built with `no_thp`: with transparent
///   huge pages every fresh 2 MiB of heap was zeroed by the kernel at its first touch, which
///   took a third of the CPU in the CDC benchmark.
/// - A request must not be able to abort the process. `kafka-protocol` (0.18) sizes an
///   array's vector from the count on the wire before it decodes one element, so a dozen
///   bytes can ask for hundreds of GB. glibc maps such a block with commit accounting, the
///   kernel's overcommit heuristic refuses anything above RAM plus swap, and Rust aborts on a
///   failed allocation. mimalloc maps large blocks with `MAP_NORESERVE` (when
///   `vm.overcommit_memory` is 0 or 1), so the block costs address space only; the decode
///   then fails on the missing bytes and the connection is closed
///   (`bad_input::absurd_array_counts_close_the_connection_and_nothing_else`). Under strict
///   accounting (`vm.overcommit_memory = 2`) such a request still aborts the process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
