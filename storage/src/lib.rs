//! The Chorus segment-log storage engine.
//!
//! A partition log is a directory of segments. Each segment is a `.log` file holding Kafka v2
//! record batches byte for byte as the producer sent them (only the base offset, the leader
//! epoch and, for `LogAppendTime` topics, the max timestamp are rewritten), plus a sparse
//! offset index and a time index, both memory-mapped. A fetch can therefore serve file bytes
//! without re-encoding them.
//!
//! Modules:
//! - [`batch`], [`record`], [`codec`]: the v2 batch format, validation, compression.
//! - `segment`, `index`: one segment and its indexes.
//! - [`log`]: a partition log (append, read, roll, truncate, delete-records), with
//!   `durability` (group commit), `recovery` (open after a crash), `retention` and `cleaner`
//!   (compaction) adding to it.
//! - [`manager`]: every log of a broker, the topic [`metadata`] store, background work.
//! - [`config`]: topic configs with Kafka's names and defaults.
//! - [`io`]: the file layer, with fault injection for tests. [`clock`]: injected time.
//!
//! Invariants: a segment holds only whole, CRC-valid batches below its readers' visible size;
//! offsets only grow along the log; nothing below the recovery checkpoint is rewritten except
//! by compaction, which swaps whole segments crash-safely; an fsync failure poisons the log.
//!
//! This crate is synchronous and does no networking: it must never depend on tokio, on the
//! Kafka protocol crate, or on any other Chorus crate.

pub mod batch;
mod checkpoint;
mod cleaner;
pub mod clock;
pub mod codec;
pub mod config;
mod durability;
pub mod error;
mod index;
pub mod io;
pub mod log;
pub mod manager;
pub mod metadata;
pub mod record;
mod records;
mod recovery;
mod retention;
mod segment;

pub use cleaner::CompactionOutcome;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{CleanupPolicy, LogConfig};
pub use error::{LogError, Result};
pub use log::{AppendInfo, Log, LogOptions, LogRead, MayBlock, ReadLimits};
pub use manager::{LogManager, ManagerOptions, TopicPartition};
pub use metadata::TopicMeta;
pub use records::{FileRange, Records, RecordsRead};
pub use recovery::{RecoveryReport, TruncatedTail};
pub use retention::RetentionOutcome;
