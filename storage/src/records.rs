//! Record data handed to readers that send it on: either bytes already read, or a range of a
//! segment file that the reader can pass to the socket without reading it (`sendfile`).

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Result;
use crate::io::read_vec_at;

/// A range of a segment's log file holding whole batches.
///
/// It holds the file open, so it stays readable after the segment is deleted by retention or
/// replaced by compaction (both unlink rather than rewrite in place).
#[derive(Debug, Clone)]
pub struct FileRange {
    pub(crate) file: Arc<File>,
    pub(crate) path: PathBuf,
    pub(crate) position: u64,
    pub(crate) len: u64,
}

impl FileRange {
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes of the range, read into memory.
    pub fn read(&self) -> Result<Vec<u8>> {
        read_vec_at(&self.file, &self.path, self.len as usize, self.position)
    }
}

/// Whole batches for a reader, as stored.
#[derive(Debug, Clone)]
pub enum Records {
    Bytes(Vec<u8>),
    File(FileRange),
}

impl Records {
    pub fn len(&self) -> usize {
        match self {
            Records::Bytes(b) => b.len(),
            Records::File(f) => f.len as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What [`crate::Log::read_records`] found, with the log's bounds at the time.
#[derive(Debug, Clone)]
pub struct RecordsRead {
    pub records: Records,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}
