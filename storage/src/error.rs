//! Typed errors of the storage engine.
//!
//! The broker maps these to Kafka error codes in exactly one place; here each variant carries
//! the structured facts a caller needs (offsets, paths, reasons), never a free-form string.

use std::io;
use std::path::PathBuf;

use crate::batch::BatchError;
use crate::config::ConfigError;

/// Everything that can go wrong in a partition log or the log manager.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A batch handed to `append` failed validation; nothing was written.
    #[error("invalid record batch at byte {position} of the append: {source}")]
    InvalidBatch {
        position: usize,
        #[source]
        source: BatchError,
    },

    /// A batch is larger than the topic's `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    RecordTooLarge { size: usize, max: usize },

    /// A read, truncate or delete-records request named an offset outside the log.
    #[error("offset {requested} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        requested: i64,
        log_start: i64,
        log_end: i64,
    },

    /// An I/O operation failed. The partition may have been poisoned (see `Poisoned`).
    #[error("{op} failed on {}: {source}", path.display())]
    Io {
        op: IoOp,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// An earlier fsync (or an unrecoverable write) failed; the partition refuses writes until it
    /// is reopened, because the kernel may have dropped the dirty pages it could not write.
    #[error("partition log at {} refuses writes after an earlier I/O failure; reopen it", dir.display())]
    Poisoned { dir: PathBuf },

    /// Recovery found bad bytes in a segment that is not the last one. Truncating there would
    /// silently drop later, possibly acknowledged, data, so the partition is not opened.
    #[error("corrupt segment {} at byte {position}: {reason}", path.display())]
    CorruptSegment {
        path: PathBuf,
        position: u64,
        reason: BatchError,
    },

    /// The metadata store could not be parsed.
    #[error("metadata file {} is damaged: {reason}", path.display())]
    DamagedMetadata { path: PathBuf, reason: String },

    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: &'static str },

    #[error("topic {name:?} already exists")]
    TopicExists { name: String },

    #[error("unknown topic {name:?}")]
    UnknownTopic { name: String },

    #[error("unknown partition {partition} of topic {topic:?}")]
    UnknownPartition { topic: String, partition: i32 },

    #[error("invalid partition count {requested} for topic {topic:?} (currently {current})")]
    InvalidPartitionCount {
        topic: String,
        requested: i64,
        current: u32,
    },

    #[error("topic {topic:?} would add {adding} partitions to the {held} held, over the limit of {max} (max_partitions)")]
    PartitionLimit {
        topic: String,
        adding: u32,
        held: u32,
        max: u32,
    },

    /// The partition could not be opened (see the logged cause); it is offline until restart.
    #[error("partition {partition} of topic {topic:?} is offline: {reason}")]
    PartitionOffline {
        topic: String,
        partition: i32,
        reason: String,
    },

    #[error("the log manager is shut down")]
    ShutDown,
}

impl LogError {
    pub(crate) fn io(op: IoOp, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the error came from the disk rather than from the request.
    pub fn is_storage_error(&self) -> bool {
        matches!(
            self,
            LogError::Io { .. }
                | LogError::Poisoned { .. }
                | LogError::CorruptSegment { .. }
                | LogError::PartitionOffline { .. }
        )
    }
}

/// Which file operation failed, for error messages and for tests of fault handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    Open,
    Create,
    Read,
    Write,
    Sync,
    Truncate,
    Rename,
    Remove,
    Map,
    ListDir,
}

impl std::fmt::Display for IoOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            IoOp::Open => "open",
            IoOp::Create => "create",
            IoOp::Read => "read",
            IoOp::Write => "write",
            IoOp::Sync => "fsync",
            IoOp::Truncate => "truncate",
            IoOp::Rename => "rename",
            IoOp::Remove => "remove",
            IoOp::Map => "mmap",
            IoOp::ListDir => "list directory",
        };
        f.write_str(s)
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
