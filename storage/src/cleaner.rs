//! Log compaction for `cleanup.policy` containing `compact`.
//!
//! A pass looks at the sealed segments whose records are all older than
//! `min.compaction.lag.ms` (the active segment is never touched, so appends go on):
//!
//! 1. Map every key to the offset of its latest record in that range.
//! 2. Rewrite each segment keeping a record when it is the latest for its key (keyless records
//!    are kept: they cannot be superseded, and dropping data silently is worse). Offsets never
//!    change: a rewritten batch keeps its base offset and offset span, only with fewer records.
//!    Unchanged batches are copied byte for byte.
//! 3. Tombstones (null values) survive the first pass with a delete horizon of
//!    `now + delete.retention.ms` written into the batch (KIP-534), so consumers have that long
//!    to see the delete; a later pass after the horizon drops them.
//! 4. Swap the rewritten segment in crash-safely: it is written and synced in the `cleaning/`
//!    subdirectory; then the old index files are removed, the new log renamed over the old one
//!    (an atomic replace), and the new indexes moved in. A crash at any point leaves either the
//!    old segment or the new one, at worst without indexes, which recovery rebuilds.
//!
//! The key map holds every distinct key of the cleanable range in memory.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;

use crate::batch::{self, BatchBuilder, NewRecord, TimestampType};
use crate::error::{IoOp, LogError, Result};
use crate::log::{sizing, Log};
use crate::segment::{
    segment_path, BatchMeta, ScanEnd, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
};

/// Name of the scratch directory compaction writes into.
pub(crate) const CLEANING_DIR: &str = "cleaning";

const WRITE_CHUNK: usize = 1 << 20;

/// What one compaction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    pub segments_cleaned: usize,
    pub records_kept: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl Log {
    /// Sealed segments old enough to compact, oldest first.
    fn cleanable_segments(&self, now: i64, min_lag_ms: i64) -> Vec<std::sync::Arc<Segment>> {
        let segs = self.segments();
        let sealed = &segs[..segs.len() - 1];
        sealed
            .iter()
            .take_while(|s| s.max_timestamp() <= now.saturating_sub(min_lag_ms))
            .cloned()
            .collect()
    }

    /// True when the policy includes `compact` and the not-yet-compacted share of the
    /// cleanable segments reaches `min.cleanable.dirty.ratio`, or a dirty record has waited
    /// longer than `max.compaction.lag.ms`.
    pub fn compaction_due(&self) -> bool {
        let config = self.config();
        if !config.cleanup_policy.compact {
            return false;
        }
        let now = self.now_ms();
        let cleanable = self.cleanable_segments(now, config.min_compaction_lag_ms);
        let cleaner_point = self.cleaner_point();
        let total: u64 = cleanable.iter().map(|s| s.size()).sum();
        let dirty: Vec<_> = cleanable
            .iter()
            .filter(|s| s.next_offset() > cleaner_point && !s.is_empty())
            .collect();
        let dirty_bytes: u64 = dirty.iter().map(|s| s.size()).sum();
        if total == 0 || dirty_bytes == 0 {
            return false;
        }
        let overdue = dirty
            .iter()
            .any(|s| now.saturating_sub(s.first_append_ms()) > config.max_compaction_lag_ms);
        overdue || dirty_bytes as f64 / total as f64 >= config.min_cleanable_dirty_ratio
    }

    /// Runs one compaction pass now (whatever the dirty ratio). A no-op unless the policy
    /// includes `compact`.
    pub fn compact(&self) -> Result<CompactionOutcome> {
        let config = self.config();
        let mut outcome = CompactionOutcome::default();
        if !config.cleanup_policy.compact {
            return Ok(outcome);
        }
        let _m = self.maintenance_lock();
        let now = self.now_ms();
        let cleanable = self.cleanable_segments(now, config.min_compaction_lag_ms);
        if cleanable.is_empty() {
            return Ok(outcome);
        }
        self.ensure_unclean_marker()?;

        let mut latest: HashMap<Vec<u8>, i64> = HashMap::new();
        for seg in &cleanable {
            let end = seg.for_each_batch(0, |_, header, bytes| {
                if header.is_control() {
                    return Ok(ControlFlow::Continue(()));
                }
                batch::for_each_record(bytes, batch::MAX_DECOMPRESSED_BATCH, |r| {
                    if let Some(key) = r.key {
                        latest.insert(key.to_vec(), header.base_offset + r.offset_delta as i64);
                    }
                })
                .map_err(|reason| corrupt(seg, 0, reason))?;
                Ok(ControlFlow::Continue(()))
            })?;
            if let ScanEnd::Bad { position, error } = end {
                return Err(corrupt(seg, position, error));
            }
        }

        let scratch = self.dir().join(CLEANING_DIR);
        for seg in &cleanable {
            let rewritten = rewrite_segment(self, seg, &latest, now, &scratch, &mut outcome)?;
            if let Some(new_seg) = rewritten {
                self.replace_segment(new_seg);
                outcome.segments_cleaned += 1;
            }
        }
        let _ = std::fs::remove_dir_all(&scratch);
        let cleaned_to = cleanable.last().map_or(0, |s| s.next_offset());
        self.set_cleaner_point(cleaned_to)?;
        tracing::info!(
            dir = %self.dir().display(),
            segments = outcome.segments_cleaned,
            kept = outcome.records_kept,
            removed = outcome.records_removed,
            "compacted log"
        );
        Ok(outcome)
    }
}

fn corrupt(seg: &Segment, position: u64, reason: batch::BatchError) -> LogError {
    LogError::CorruptSegment {
        path: seg.log_path().to_path_buf(),
        position,
        reason,
    }
}

/// Rewrites one segment; `None` when nothing in it changes.
fn rewrite_segment(
    log: &Log,
    seg: &Segment,
    latest: &HashMap<Vec<u8>, i64>,
    now: i64,
    scratch: &Path,
    outcome: &mut CompactionOutcome,
) -> Result<Option<Segment>> {
    let config = log.config();
    let io = log.io();
    let horizon = now.saturating_add(config.delete_retention_ms);
    let _ = std::fs::remove_dir_all(scratch);
    std::fs::create_dir_all(scratch).map_err(|e| LogError::io(IoOp::Create, scratch, e))?;
    let sizing = sizing(&config);
    let out = Segment::create(scratch, seg.base_offset(), sizing)?;
    let mut pending: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
    let mut metas: Vec<BatchMeta> = Vec::new();
    let mut changed = false;
    let first_append = seg.first_append_ms();
    let flush = |pending: &mut Vec<u8>, metas: &mut Vec<BatchMeta>| -> Result<()> {
        if !pending.is_empty() {
            out.append(io, pending, metas, first_append)?;
            pending.clear();
            metas.clear();
        }
        Ok(())
    };

    let end = seg.for_each_batch(0, |pos, header, bytes| {
        let rewritten = if header.is_control() {
            None
        } else {
            rewrite_batch(header, bytes, latest, now, horizon, outcome)
                .map_err(|reason| corrupt(seg, pos, reason))?
        };
        let kept: Option<Vec<u8>> = match rewritten {
            None => Some(bytes.to_vec()),
            Some(Rewrite::Drop) => {
                changed = true;
                None
            }
            Some(Rewrite::Replace(b)) => {
                changed = true;
                Some(b)
            }
        };
        if let Some(b) = kept {
            let h = batch::BatchHeader::parse(&b).expect("batch we just built or validated");
            metas.push(BatchMeta::of(&h));
            pending.extend_from_slice(&b);
            if pending.len() >= WRITE_CHUNK {
                flush(&mut pending, &mut metas)?;
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    if let ScanEnd::Bad { position, error } = end {
        return Err(corrupt(seg, position, error));
    }
    if !changed {
        drop(out);
        return Ok(None);
    }
    flush(&mut pending, &mut metas)?;
    outcome.bytes_before += seg.size();
    outcome.bytes_after += out.size();
    out.seal(io)?;
    drop(out);

    // Swap: old indexes out, new log over the old one, new indexes in.
    let dir = log.dir();
    let base = seg.base_offset();
    for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        let path = segment_path(dir, base, suffix);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LogError::io(IoOp::Remove, path, e)),
        }
    }
    io.sync_dir(dir)?;
    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        io.rename(
            &segment_path(scratch, base, suffix),
            &segment_path(dir, base, suffix),
        )?;
    }
    io.sync_dir(dir)?;
    let reopened = match Segment::open_trusted(dir, base, sizing)? {
        Some(s) => s,
        None => Segment::recover(dir, base, sizing)?.0,
    };
    Ok(Some(reopened))
}

enum Rewrite {
    Drop,
    Replace(Vec<u8>),
}

/// Decides a batch's fate; `None` keeps it unchanged.
fn rewrite_batch(
    header: &batch::BatchHeader,
    bytes: &[u8],
    latest: &HashMap<Vec<u8>, i64>,
    now: i64,
    horizon: i64,
    outcome: &mut CompactionOutcome,
) -> std::result::Result<Option<Rewrite>, batch::BatchError> {
    let expired_tombstones = header.delete_horizon().is_some_and(|h| now >= h);
    let mut kept = Vec::new();
    let mut removed = 0u64;
    let mut needs_horizon = false;
    batch::for_each_record(bytes, batch::MAX_DECOMPRESSED_BATCH, |r| {
        let offset = header.base_offset + r.offset_delta as i64;
        let is_latest = r.key.is_none_or(|k| latest.get(k) == Some(&offset));
        let tombstone = r.value.is_none() && r.key.is_some();
        if !is_latest {
            removed += 1;
            return;
        }
        if tombstone && expired_tombstones {
            removed += 1;
            outcome.tombstones_removed += 1;
            return;
        }
        if tombstone && header.delete_horizon().is_none() {
            needs_horizon = true;
        }
        kept.push(NewRecord {
            offset_delta: r.offset_delta,
            timestamp: header.base_timestamp + r.timestamp_delta,
            key: r.key.map(|k| Cow::Owned(k.to_vec())),
            value: r.value.map(|v| Cow::Owned(v.to_vec())),
            headers: Cow::Owned(r.headers_raw.to_vec()),
        });
    })?;
    outcome.records_removed += removed;
    outcome.records_kept += kept.len() as u64;
    if removed == 0 && !needs_horizon {
        return Ok(None);
    }
    if kept.is_empty() {
        return Ok(Some(Rewrite::Drop));
    }
    let mut builder = BatchBuilder {
        base_offset: header.base_offset,
        partition_leader_epoch: header.partition_leader_epoch,
        compression: header.compression()?,
        timestamp_type: header.timestamp_type(),
        transactional: header.is_transactional(),
        control: false,
        producer_id: header.producer_id,
        producer_epoch: header.producer_epoch,
        base_sequence: header.base_sequence,
        delete_horizon: if needs_horizon {
            Some(horizon)
        } else {
            header.delete_horizon()
        },
        last_offset_delta: Some(header.last_offset_delta),
        max_timestamp: (header.timestamp_type() == TimestampType::LogAppendTime)
            .then_some(header.max_timestamp),
        ..BatchBuilder::default()
    };
    for r in kept {
        builder.push_with_delta(r);
    }
    let bytes = builder
        .build()
        .map_err(|e| batch::BatchError::Decompression {
            reason: e.to_string(),
        })?;
    Ok(Some(Rewrite::Replace(bytes)))
}
