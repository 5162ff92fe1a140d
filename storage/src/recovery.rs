//! Opening a partition directory after a clean close or a crash.
//!
//! 1. Remove leftovers of interrupted work: `*.tmp` (atomic writes), the `cleaning/` directory
//!    (compaction output that never replaced its segment) and index files without a log.
//! 2. Trust segments that end at or below the checkpoint's recovery point (or all of them after
//!    a clean close): open their indexes, check them for sanity, and walk only the few batches
//!    after the last index entry. A missing or damaged index demotes the segment to step 3.
//! 3. Validate every other segment batch by batch (framing, CRC32C, increasing offsets) and
//!    rebuild its indexes. Bad bytes in the last segment are a torn tail: cut them off and log
//!    the file, position and bytes dropped. Bad bytes in an earlier segment are reported as
//!    [`LogError::CorruptSegment`]; cutting there would drop later data silently.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checkpoint::Checkpoint;
use crate::error::{IoOp, LogError, Result};
use crate::io::Io;
use crate::segment::{
    segment_path, IndexSizing, ScanEnd, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
};

/// What opening a log did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The previous close was clean and every segment was trusted.
    pub clean: bool,
    /// Segments validated batch by batch.
    pub segments_validated: usize,
    /// Bytes read and checked while validating.
    pub bytes_validated: u64,
    /// Segments whose indexes were missing or damaged and were rebuilt.
    pub indexes_rebuilt: Vec<PathBuf>,
    /// Torn or corrupt tails cut off.
    pub truncated: Vec<TruncatedTail>,
    /// Leftover files removed.
    pub removed: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatedTail {
    pub path: PathBuf,
    pub position: u64,
    pub bytes_dropped: u64,
    pub reason: String,
}

pub(crate) struct Opened {
    pub segments: Vec<Arc<Segment>>,
    pub checkpoint: Option<Checkpoint>,
    pub report: RecoveryReport,
}

/// Opens every segment in `dir` (creating the directory when missing).
pub(crate) fn open_segments(dir: &Path, io: &Io, sizing: IndexSizing) -> Result<Opened> {
    std::fs::create_dir_all(dir).map_err(|e| LogError::io(IoOp::Create, dir, e))?;
    let mut report = RecoveryReport::default();
    let bases = list_and_clean(dir, &mut report)?;
    let checkpoint = Checkpoint::read(dir);
    let clean = checkpoint.is_some_and(|c| c.clean_shutdown);
    let recovery_point = checkpoint.map_or(i64::MIN, |c| c.recovery_point);
    report.clean = clean;

    let mut segments = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        let is_last = i + 1 == bases.len();
        let trusted = clean || bases.get(i + 1).is_some_and(|&next| next <= recovery_point);
        if trusted {
            if let Some(seg) = Segment::open_trusted(dir, base, sizing)? {
                segments.push(Arc::new(seg));
                continue;
            }
            report.clean = false;
            report
                .indexes_rebuilt
                .push(segment_path(dir, base, INDEX_SUFFIX));
            tracing::warn!(segment = %segment_path(dir, base, LOG_SUFFIX).display(), "index missing or damaged; rebuilding it from the log");
        }
        let (seg, end) = Segment::recover(dir, base, sizing)?;
        report.segments_validated += 1;
        report.bytes_validated += seg.size();
        if let ScanEnd::Bad { position, error } = end {
            let file_len = std::fs::metadata(seg.log_path())
                .map_err(|e| LogError::io(IoOp::Open, seg.log_path(), e))?
                .len();
            if !is_last {
                return Err(LogError::CorruptSegment {
                    path: seg.log_path().to_path_buf(),
                    position,
                    reason: error,
                });
            }
            let dropped = file_len - position;
            tracing::warn!(
                segment = %seg.log_path().display(),
                position,
                bytes_dropped = dropped,
                reason = %error,
                "truncating torn or corrupt tail"
            );
            seg.cut_file(position, io)?;
            report.truncated.push(TruncatedTail {
                path: seg.log_path().to_path_buf(),
                position,
                bytes_dropped: dropped,
                reason: error.to_string(),
            });
        }
        if !is_last {
            seg.seal(io)?;
        }
        segments.push(Arc::new(seg));
    }
    Ok(Opened {
        segments,
        checkpoint,
        report,
    })
}

/// Lists segment base offsets in order, removing leftovers of interrupted work.
fn list_and_clean(dir: &Path, report: &mut RecoveryReport) -> Result<Vec<i64>> {
    let entries = std::fs::read_dir(dir).map_err(|e| LogError::io(IoOp::ListDir, dir, e))?;
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(IoOp::ListDir, dir, e))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name == crate::cleaner::CLEANING_DIR {
            // Compaction output that never replaced its segment.
            std::fs::remove_dir_all(&path).map_err(|e| LogError::io(IoOp::Remove, &path, e))?;
            report.removed.push(path);
            continue;
        }
        if name.ends_with(".tmp") {
            std::fs::remove_file(&path).map_err(|e| LogError::io(IoOp::Remove, &path, e))?;
            report.removed.push(path);
            continue;
        }
        let Some((stem, suffix)) = name.split_once('.') else {
            continue;
        };
        let Ok(base) = stem.parse::<i64>() else {
            continue;
        };
        match suffix {
            LOG_SUFFIX => logs.push(base),
            INDEX_SUFFIX | TIME_INDEX_SUFFIX => indexes.push((base, path)),
            _ => {}
        }
    }
    logs.sort_unstable();
    for (base, path) in indexes {
        if logs.binary_search(&base).is_err() {
            std::fs::remove_file(&path).map_err(|e| LogError::io(IoOp::Remove, &path, e))?;
            report.removed.push(path);
        }
    }
    Ok(logs)
}
