//! One segment of a partition log: a `.log` file of back-to-back v2 batches plus its offset and
//! time indexes, named by the segment's base offset (`00000000000000000042.log`).
//!
//! Concurrency: the log's writer lock serialises `append`, `seal` and `truncate`; readers may run
//! at any time. A reader only looks at the first `size` bytes, and `size` is published (Release)
//! after the bytes and index entries are in place, so readers never see a partial batch.

use std::fs::{File, OpenOptions};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::batch::{self, BatchError, BatchHeader, Strictness, TimestampType, HEADER_LEN};
use crate::error::{IoOp, LogError, Result};
use crate::index::{OffsetIndex, TimeIndex};
use crate::io::{read_at_most, read_vec_at, Io};
use crate::records::FileRange;

pub(crate) const LOG_SUFFIX: &str = "log";
pub(crate) const INDEX_SUFFIX: &str = "index";
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";

const SCAN_CHUNK: usize = 4 << 20;
const FIND_CHUNK: usize = 64 << 10;
/// The first read of a header walk. A lookup usually finds its batch within one index
/// interval of the entry it starts from, so a fetch's lookup reads this much, not
/// `FIND_CHUNK`; longer walks double the reads up to `FIND_CHUNK`.
const FIND_FIRST: usize = 8 << 10;

pub(crate) fn segment_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{suffix}"))
}

/// Sizing of a segment's indexes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexSizing {
    pub capacity_bytes: u64,
    pub interval_bytes: u64,
}

/// What the log learns about each batch it appends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchMeta {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub len: u64,
}

impl BatchMeta {
    pub fn of(header: &BatchHeader) -> Self {
        BatchMeta {
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
            len: header.total_len() as u64,
        }
    }
}

#[derive(Debug)]
struct Indexes {
    offset: OffsetIndex,
    time: TimeIndex,
    bytes_since_entry: u64,
    interval_bytes: u64,
}

impl Indexes {
    /// Records a batch about to be placed at `position`, given the segment's max timestamp
    /// over the batches before it.
    fn note_batch(&mut self, meta: &BatchMeta, position: u64, max_ts_before: i64) {
        if self.bytes_since_entry > self.interval_bytes {
            if self.offset.push(meta.base_offset, position) {
                self.time.maybe_push(max_ts_before, meta.base_offset);
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += meta.len;
    }
}

/// How a scan of a segment file ended.
#[derive(Debug)]
pub(crate) enum ScanEnd {
    Complete,
    /// Bytes from `position` on are not a valid batch.
    Bad {
        position: u64,
        error: BatchError,
    },
}

#[derive(Debug)]
pub(crate) struct Segment {
    base_offset: i64,
    log_path: PathBuf,
    /// Shared with [`FileRange`]s handed to readers, which may outlive the segment.
    file: Arc<File>,
    /// Bytes of whole batches readers may see.
    size: AtomicU64,
    /// One past the last offset of the last batch (the base offset when empty).
    next_offset: AtomicI64,
    /// Largest batch max timestamp, -1 when none.
    max_timestamp: AtomicI64,
    /// Clock time of the first append, for `segment.ms`; `i64::MAX` while empty.
    first_append_ms: AtomicI64,
    /// An index has no room left (cached so the append path need not lock the indexes).
    index_full: AtomicBool,
    indexes: RwLock<Indexes>,
}

impl Segment {
    /// Creates an empty segment whose files replace any stale ones with the same base.
    pub fn create(dir: &Path, base_offset: i64, sizing: IndexSizing) -> Result<Self> {
        let log_path = segment_path(dir, base_offset, LOG_SUFFIX);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)
            .map_err(|e| LogError::io(IoOp::Create, &log_path, e))?;
        let indexes = Indexes {
            offset: OffsetIndex::create(
                &segment_path(dir, base_offset, INDEX_SUFFIX),
                base_offset,
                sizing.capacity_bytes,
            )?,
            time: TimeIndex::create(
                &segment_path(dir, base_offset, TIME_INDEX_SUFFIX),
                base_offset,
                sizing.capacity_bytes / 8 * 12,
            )?,
            bytes_since_entry: 0,
            interval_bytes: sizing.interval_bytes,
        };
        Ok(Segment {
            base_offset,
            log_path,
            file: Arc::new(file),
            size: AtomicU64::new(0),
            next_offset: AtomicI64::new(base_offset),
            max_timestamp: AtomicI64::new(-1),
            first_append_ms: AtomicI64::new(i64::MAX),
            index_full: AtomicBool::new(false),
            indexes: RwLock::new(indexes),
        })
    }

    /// Opens a segment below the recovery point: its indexes are trusted if they look sane and
    /// only the batches after the last index entry are walked (framing, not CRC). Returns
    /// `None` when anything looks off, so the caller falls back to [`Segment::recover`].
    pub fn open_trusted(dir: &Path, base_offset: i64, sizing: IndexSizing) -> Result<Option<Self>> {
        let log_path = segment_path(dir, base_offset, LOG_SUFFIX);
        let file = open_log(&log_path)?;
        let size = file_len(&file, &log_path)?;
        let Some(offset) = OffsetIndex::open_checked(
            &segment_path(dir, base_offset, INDEX_SUFFIX),
            base_offset,
            size.max(1),
        )?
        else {
            return Ok(None);
        };
        let (mut next_offset, start) = offset.last().unwrap_or((base_offset, 0));
        let mut framing_ok = true;
        let end = walk(&file, &log_path, start, size, false, |_, header, _| {
            if header.base_offset < next_offset {
                framing_ok = false;
                return Ok(ControlFlow::Break(()));
            }
            next_offset = header.next_offset();
            Ok(ControlFlow::Continue(()))
        })?;
        if !framing_ok || !matches!(end, ScanEnd::Complete) {
            return Ok(None);
        }
        let Some(time) = TimeIndex::open_checked(
            &segment_path(dir, base_offset, TIME_INDEX_SUFFIX),
            base_offset,
            next_offset,
        )?
        else {
            return Ok(None);
        };
        let max_timestamp = match time.last() {
            Some((ts, _)) => ts,
            // No entry at all is only possible for an empty segment.
            None if size == 0 => -1,
            None => return Ok(None),
        };
        let first_append_ms = if size == 0 {
            i64::MAX
        } else {
            modified_ms(&file)
        };
        Ok(Some(Segment {
            base_offset,
            log_path,
            file: Arc::new(file),
            size: AtomicU64::new(size),
            next_offset: AtomicI64::new(next_offset),
            max_timestamp: AtomicI64::new(max_timestamp),
            first_append_ms: AtomicI64::new(first_append_ms),
            index_full: AtomicBool::new(false),
            indexes: RwLock::new(Indexes {
                offset,
                time,
                bytes_since_entry: 0,
                interval_bytes: sizing.interval_bytes,
            }),
        }))
    }

    /// Validates every batch (framing, CRC, increasing offsets) and rebuilds both indexes.
    /// The segment covers the valid prefix; the scan's end says what follows it.
    pub fn recover(dir: &Path, base_offset: i64, sizing: IndexSizing) -> Result<(Self, ScanEnd)> {
        let log_path = segment_path(dir, base_offset, LOG_SUFFIX);
        let file = open_log(&log_path)?;
        let size = file_len(&file, &log_path)?;
        let mut indexes = Indexes {
            offset: OffsetIndex::create(
                &segment_path(dir, base_offset, INDEX_SUFFIX),
                base_offset,
                sizing.capacity_bytes,
            )?,
            time: TimeIndex::create(
                &segment_path(dir, base_offset, TIME_INDEX_SUFFIX),
                base_offset,
                sizing.capacity_bytes / 8 * 12,
            )?,
            bytes_since_entry: 0,
            interval_bytes: sizing.interval_bytes,
        };
        let mut next_offset = base_offset;
        let mut max_timestamp = -1i64;
        let mut valid = 0u64;
        let mut bad = None;
        let end = walk(&file, &log_path, 0, size, true, |pos, header, bytes| {
            if let Err(error) = batch::validate(bytes, Strictness::Stored) {
                bad = Some((pos, error));
                return Ok(ControlFlow::Break(()));
            }
            if header.base_offset < next_offset {
                // Offsets only grow; an older offset here is stale or damaged data.
                bad = Some((
                    pos,
                    BatchError::OffsetDeltaMismatch {
                        index: 0,
                        expected: (next_offset - base_offset) as i32,
                        found: (header.base_offset - base_offset) as i32,
                    },
                ));
                return Ok(ControlFlow::Break(()));
            }
            let meta = BatchMeta::of(header);
            indexes.note_batch(&meta, pos, max_timestamp);
            max_timestamp = max_timestamp.max(meta.max_timestamp);
            next_offset = meta.last_offset + 1;
            valid = pos + meta.len;
            Ok(ControlFlow::Continue(()))
        })?;
        let end = match (bad, end) {
            (Some((position, error)), _) => ScanEnd::Bad { position, error },
            (None, end) => end,
        };
        let first_append_ms = if valid == 0 {
            i64::MAX
        } else {
            modified_ms(&file)
        };
        Ok((
            Segment {
                base_offset,
                log_path,
                file: Arc::new(file),
                size: AtomicU64::new(valid),
                next_offset: AtomicI64::new(next_offset),
                max_timestamp: AtomicI64::new(max_timestamp),
                first_append_ms: AtomicI64::new(first_append_ms),
                index_full: AtomicBool::new(false),
                indexes: RwLock::new(indexes),
            },
            end,
        ))
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Bytes from the batch holding `offset` (found through the index, so possibly from a
    /// batch or so before it) to the end of the segment.
    pub fn bytes_from(&self, offset: i64) -> u64 {
        let (_, position) = self
            .indexes
            .read()
            .expect("index lock")
            .offset
            .lookup(offset);
        self.size().saturating_sub(position)
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Acquire)
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    pub fn first_append_ms(&self) -> i64 {
        self.first_append_ms.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.size() == 0
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// True when appending `len` more bytes at offsets up to `last_offset` must go to a new
    /// segment instead.
    pub fn must_roll_for(&self, len: u64, last_offset: i64, segment_bytes: u64) -> bool {
        if self.is_empty() {
            return false;
        }
        self.size() + len > segment_bytes
            || last_offset - self.base_offset > i32::MAX as i64
            || self.index_full.load(Ordering::Acquire)
    }

    /// Writes already-validated batches at the end of the file and indexes them. On a failed
    /// write the file is cut back so a partial batch never stays behind; the error says whether
    /// that worked (`Ok(false)` from the cut means the caller must poison the log).
    pub fn append(&self, io: &Io, bytes: &[u8], metas: &[BatchMeta], now_ms: i64) -> Result<()> {
        let pos = self.size();
        if let Err(e) = io.write_all_at(&self.file, &self.log_path, bytes, pos) {
            return Err(match self.file.set_len(pos) {
                Ok(()) => e,
                Err(_) => LogError::Poisoned {
                    dir: self.log_path.clone(),
                },
            });
        }
        let mut idx = self.indexes.write().expect("index lock");
        let mut p = pos;
        let mut max_ts = self.max_timestamp();
        for meta in metas {
            idx.note_batch(meta, p, max_ts);
            max_ts = max_ts.max(meta.max_timestamp);
            p += meta.len;
        }
        self.index_full.store(
            idx.offset.is_full() || idx.time.is_full(),
            Ordering::Release,
        );
        drop(idx);
        if pos == 0 {
            self.first_append_ms.store(now_ms, Ordering::Release);
        }
        self.max_timestamp.store(max_ts, Ordering::Release);
        if let Some(last) = metas.last() {
            self.next_offset
                .store(last.last_offset + 1, Ordering::Release);
        }
        self.size.store(p, Ordering::Release);
        Ok(())
    }

    /// Makes the segment read-only on disk: final time-index entry, indexes trimmed and
    /// flushed, data synced.
    pub fn seal(&self, io: &Io) -> Result<()> {
        {
            let mut idx = self.indexes.write().expect("index lock");
            if !self.is_empty() {
                idx.time
                    .maybe_push(self.max_timestamp(), self.next_offset());
            }
            idx.offset.trim()?;
            idx.time.trim()?;
            idx.offset.flush()?;
            idx.time.flush()?;
            self.index_full.store(true, Ordering::Release);
        }
        io.sync_data(&self.file, &self.log_path)
    }

    /// Re-opens a sealed segment for appends (the active segment after a clean restart).
    pub fn unseal(&self, sizing: IndexSizing) -> Result<()> {
        let mut idx = self.indexes.write().expect("index lock");
        idx.offset.grow(sizing.capacity_bytes)?;
        idx.time.grow(sizing.capacity_bytes)?;
        self.index_full.store(
            idx.offset.is_full() || idx.time.is_full(),
            Ordering::Release,
        );
        Ok(())
    }

    pub fn sync(&self, io: &Io) -> Result<()> {
        io.sync_data(&self.file, &self.log_path)
    }

    /// The first batch whose last offset is `>= offset`, with its position.
    pub fn find(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>> {
        let end = self.size();
        let (_, start) = self
            .indexes
            .read()
            .expect("index lock")
            .offset
            .lookup(offset);
        let mut found = None;
        walk(
            &self.file,
            &self.log_path,
            start,
            end,
            false,
            |pos, header, _| {
                if header.last_offset() >= offset {
                    found = Some((pos, *header));
                    Ok(ControlFlow::Break(()))
                } else {
                    Ok(ControlFlow::Continue(()))
                }
            },
        )?;
        Ok(found)
    }

    /// Where a run of whole batches from `position` ends, found from the offset index
    /// without reading the log: at most `max_bytes` of them, none starting at or after
    /// `offset_limit`. Index entries name batch starts, so the run may stop up to one index
    /// interval short of what [`Segment::read`] would return. `None` when the index has no
    /// entry that helps (the caller then reads).
    pub fn whole_batches_end(
        &self,
        position: u64,
        max_bytes: usize,
        offset_limit: i64,
    ) -> Option<u64> {
        // Size before next offset: an append publishes the offset first, so every batch
        // within `size` starts below `next`.
        let size = self.size();
        let next = self.next_offset();
        let want_end = position.saturating_add(max_bytes as u64);
        if size <= want_end && next <= offset_limit {
            return (size > position).then_some(size);
        }
        let (_, end) = self
            .indexes
            .read()
            .expect("index lock")
            .offset
            .last_within(want_end.min(size), offset_limit)?;
        (end > position).then_some(end)
    }

    /// `len` bytes of the log file from `position`, for a reader to send without copying.
    pub fn file_range(&self, position: u64, len: u64) -> FileRange {
        FileRange {
            file: Arc::clone(&self.file),
            path: self.log_path.clone(),
            position,
            len,
        }
    }

    /// Whole batches from `position`, at most `max_bytes` of them (or the first batch alone
    /// when it is larger and `min_one` is set), stopping before any batch starting at or after
    /// `offset_limit`.
    pub fn read(
        &self,
        position: u64,
        max_bytes: usize,
        min_one: bool,
        offset_limit: i64,
    ) -> Result<Vec<u8>> {
        let end = self.size();
        let want = (max_bytes as u64).min(end.saturating_sub(position)) as usize;
        let mut buf = read_vec_at(&self.file, &self.log_path, want, position)?;
        let mut whole = 0;
        for (pos, header, _) in batch::BatchIter::new(&buf) {
            if header.base_offset >= offset_limit {
                break;
            }
            whole = pos + header.total_len();
        }
        buf.truncate(whole);
        if whole == 0 && min_one && position < end {
            let mut head = [0u8; HEADER_LEN];
            let n = read_at_most(&self.file, &self.log_path, &mut head, position)?;
            if let Ok(header) = BatchHeader::parse(&head[..n]) {
                if header.base_offset < offset_limit && position + header.total_len() as u64 <= end
                {
                    buf = read_vec_at(&self.file, &self.log_path, header.total_len(), position)?;
                }
            }
        }
        Ok(buf)
    }

    /// The offset of the first record with timestamp `>= timestamp`, if this segment has one.
    /// The `(offset, timestamp)` of the first record at or after `min_offset` with timestamp
    /// `>= timestamp`, if this segment has one.
    pub fn find_by_timestamp(&self, timestamp: i64, min_offset: i64) -> Result<Option<(i64, i64)>> {
        if self.max_timestamp() < timestamp || self.next_offset() <= min_offset {
            return Ok(None);
        }
        let start = {
            let idx = self.indexes.read().expect("index lock");
            let from_offset = idx.time.lookup(timestamp).max(min_offset);
            idx.offset.lookup(from_offset).1
        };
        let mut found = None;
        let mut failure = None;
        walk(
            &self.file,
            &self.log_path,
            start,
            self.size(),
            true,
            |pos, header, bytes| {
                if header.max_timestamp < timestamp || header.last_offset() < min_offset {
                    return Ok(ControlFlow::Continue(()));
                }
                match first_record_at_or_after(header, bytes, timestamp, min_offset) {
                    Ok(Some(offset)) => {
                        found = Some(offset);
                        Ok(ControlFlow::Break(()))
                    }
                    Ok(None) => Ok(ControlFlow::Continue(())),
                    Err(e) => {
                        failure = Some((pos, e));
                        Ok(ControlFlow::Break(()))
                    }
                }
            },
        )?;
        if let Some((position, reason)) = failure {
            return Err(LogError::CorruptSegment {
                path: self.log_path.clone(),
                position,
                reason,
            });
        }
        Ok(found)
    }

    /// Calls `f` with every whole batch from `from` to the end of the segment.
    pub fn for_each_batch(
        &self,
        from: u64,
        f: impl FnMut(u64, &BatchHeader, &[u8]) -> Result<ControlFlow<()>>,
    ) -> Result<ScanEnd> {
        walk(&self.file, &self.log_path, from, self.size(), true, f)
    }

    /// Calls `f` with the header of every batch from `from` to the end of the segment.
    pub fn for_each_header(&self, from: u64, mut f: impl FnMut(&BatchHeader)) -> Result<()> {
        walk(
            &self.file,
            &self.log_path,
            from,
            self.size(),
            false,
            |_, header, _| {
                f(header);
                Ok(ControlFlow::Continue(()))
            },
        )?;
        Ok(())
    }

    /// Removes every batch at or after `offset` (whole batches: a batch containing `offset`
    /// goes entirely), rebuilding the indexes from what remains.
    pub fn truncate_to(&self, offset: i64, io: &Io, sizing: IndexSizing) -> Result<()> {
        let cut = match self.find(offset)? {
            Some((pos, _)) => pos,
            None => return Ok(()),
        };
        self.file
            .set_len(cut)
            .map_err(|e| LogError::io(IoOp::Truncate, &self.log_path, e))?;
        io.sync_data(&self.file, &self.log_path)?;
        // Rebuild indexes and counters from the remaining bytes.
        let mut idx = self.indexes.write().expect("index lock");
        let dir = self.log_path.parent().unwrap_or(Path::new("."));
        idx.offset = OffsetIndex::create(
            &segment_path(dir, self.base_offset, INDEX_SUFFIX),
            self.base_offset,
            sizing.capacity_bytes,
        )?;
        idx.time = TimeIndex::create(
            &segment_path(dir, self.base_offset, TIME_INDEX_SUFFIX),
            self.base_offset,
            sizing.capacity_bytes / 8 * 12,
        )?;
        idx.bytes_since_entry = 0;
        let mut next = self.base_offset;
        let mut max_ts = -1;
        walk(
            &self.file,
            &self.log_path,
            0,
            cut,
            false,
            |pos, header, _| {
                let meta = BatchMeta::of(header);
                idx.note_batch(&meta, pos, max_ts);
                max_ts = max_ts.max(meta.max_timestamp);
                next = meta.last_offset + 1;
                Ok(ControlFlow::Continue(()))
            },
        )?;
        drop(idx);
        self.size.store(cut, Ordering::Release);
        self.next_offset.store(next, Ordering::Release);
        self.max_timestamp.store(max_ts, Ordering::Release);
        if cut == 0 {
            self.first_append_ms.store(i64::MAX, Ordering::Release);
        }
        Ok(())
    }

    /// Cuts the file to `size` bytes (recovery of a torn tail) and syncs it.
    pub fn cut_file(&self, size: u64, io: &Io) -> Result<()> {
        self.file
            .set_len(size)
            .map_err(|e| LogError::io(IoOp::Truncate, &self.log_path, e))?;
        io.sync_data(&self.file, &self.log_path)
    }

    /// Deletes the segment's files. Open handles (readers) keep working on the old inode.
    pub fn delete_files(&self) -> Result<()> {
        let dir = self.log_path.parent().unwrap_or(Path::new("."));
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            let path = segment_path(dir, self.base_offset, suffix);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io(IoOp::Remove, path, e)),
            }
        }
        Ok(())
    }

    /// Flushes index pages so a clean restart can trust them.
    pub fn flush_indexes(&self) -> Result<()> {
        let idx = self.indexes.read().expect("index lock");
        idx.offset.flush()?;
        idx.time.flush()
    }
}

/// The offset of the first record of `batch` with timestamp `>= timestamp`.
fn first_record_at_or_after(
    header: &BatchHeader,
    bytes: &[u8],
    timestamp: i64,
    min_offset: i64,
) -> std::result::Result<Option<(i64, i64)>, BatchError> {
    let mut found = None;
    let log_append = header.timestamp_type() == TimestampType::LogAppendTime;
    batch::for_each_record(bytes, batch::MAX_DECOMPRESSED_BATCH, |r| {
        let ts = if log_append {
            header.max_timestamp
        } else {
            header.base_timestamp + r.timestamp_delta
        };
        let offset = header.base_offset + r.offset_delta as i64;
        if found.is_none() && ts >= timestamp && offset >= min_offset {
            found = Some((offset, ts));
        }
    })?;
    Ok(found)
}

fn open_log(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| LogError::io(IoOp::Open, path, e))
}

fn file_len(file: &File, path: &Path) -> Result<u64> {
    Ok(file
        .metadata()
        .map_err(|e| LogError::io(IoOp::Open, path, e))?
        .len())
}

fn modified_ms(file: &File) -> i64 {
    file.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

/// Walks the batches in `[from, end)` of a segment file with chunked reads. With `need_bytes`
/// the callback gets each whole batch; without, only headers are read and the bytes slice may
/// be partial. Stops at the end, when the callback breaks, or at bytes that cannot be a batch
/// (reported as [`ScanEnd::Bad`]).
fn walk(
    file: &File,
    path: &Path,
    from: u64,
    end: u64,
    need_bytes: bool,
    mut f: impl FnMut(u64, &BatchHeader, &[u8]) -> Result<ControlFlow<()>>,
) -> Result<ScanEnd> {
    let chunk = if need_bytes { SCAN_CHUNK } else { FIND_FIRST };
    let mut buf = vec![0u8; chunk.min(end.saturating_sub(from) as usize).max(HEADER_LEN)];
    let mut pos = from;
    while pos < end {
        if !need_bytes && buf.len() < FIND_CHUNK && pos > from {
            let grown = (buf.len() * 2).min(FIND_CHUNK);
            buf.resize(grown.min((end - pos) as usize).max(buf.len()), 0);
        }
        let want = (buf.len() as u64).min(end - pos) as usize;
        let n = read_at_most(file, path, &mut buf[..want], pos)?;
        if n < want {
            // The file is shorter than its recorded size: treat as a torn tail.
            return Ok(ScanEnd::Bad {
                position: pos + n as u64,
                error: BatchError::Truncated {
                    needed: want,
                    available: n,
                },
            });
        }
        let mut off = 0usize;
        loop {
            let rest = &buf[off..n];
            if rest.is_empty() {
                break;
            }
            let header = match BatchHeader::parse(rest) {
                Ok(h) => h,
                Err(BatchError::Truncated { .. }) if pos + (n as u64) < end => break,
                Err(error) => {
                    return Ok(ScanEnd::Bad {
                        position: pos + off as u64,
                        error,
                    })
                }
            };
            let total = header.total_len();
            if pos + off as u64 + total as u64 > end {
                return Ok(ScanEnd::Bad {
                    position: pos + off as u64,
                    error: BatchError::Truncated {
                        needed: total,
                        available: (end - pos - off as u64) as usize,
                    },
                });
            }
            if total > rest.len() {
                if !need_bytes {
                    // Only the header was needed: report it and jump over the rest.
                    let flow = f(pos + off as u64, &header, rest)?;
                    if flow.is_break() {
                        return Ok(ScanEnd::Complete);
                    }
                    off += total;
                    break;
                }
                if off == 0 {
                    // A batch bigger than the buffer: grow it to hold the batch.
                    buf.resize(total, 0);
                }
                break;
            }
            if f(pos + off as u64, &header, &rest[..total])?.is_break() {
                return Ok(ScanEnd::Complete);
            }
            off += total;
        }
        pos += off as u64;
    }
    Ok(ScanEnd::Complete)
}
