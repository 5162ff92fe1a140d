//! A partition log: ordered segments, one writer, many readers.
//!
//! Invariants:
//! - `segments` is non-empty and sorted by base offset; the last one is the active segment and
//!   the only one that grows.
//! - `log_start <= log_end`; `log_end` is the next offset to assign and equals the active
//!   segment's next offset.
//! - Appends, rolls and truncation hold `writer`; retention, compaction, truncation and
//!   delete-records hold `maintenance` (in that order when both are needed), so background work
//!   never blocks appends.
//! - A segment leaves `segments` before its files are deleted; readers holding its `Arc` keep
//!   reading the unlinked file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::batch::{self, BatchHeader, Strictness, TimestampType};
use crate::checkpoint::Checkpoint;
use crate::clock::{Clock, SystemClock};
use crate::config::LogConfig;
use crate::durability::{Durability, Turn};
use crate::error::{LogError, Result};
use crate::io::Io;
use crate::records::{Records, RecordsRead};
use crate::recovery::{self, RecoveryReport};
use crate::segment::{BatchMeta, IndexSizing, Segment};

/// Whether an append may wait for a lock or the disk (roll a segment, fsync a file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MayBlock {
    Yes,
    No,
}

/// How a log is opened.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub config: LogConfig,
    pub io: Io,
    pub clock: Arc<dyn Clock>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            config: LogConfig::default(),
            io: Io::new(),
            clock: Arc::new(SystemClock),
        }
    }
}

impl LogOptions {
    pub fn with_config(config: LogConfig) -> Self {
        LogOptions {
            config,
            ..LogOptions::default()
        }
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    /// The broker time stamped on the batches for `LogAppendTime` topics.
    pub log_append_time: Option<i64>,
    pub log_start_offset: i64,
    pub batches: usize,
    pub records: i64,
}

/// Limits of one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    pub max_bytes: usize,
    /// Return the first batch even when it alone exceeds `max_bytes` (KIP-74), so a consumer
    /// always makes progress.
    pub min_one_batch: bool,
    /// Return no batch starting at or after this offset (e.g. a high watermark).
    pub max_offset: Option<i64>,
}

impl ReadLimits {
    pub fn bytes(max_bytes: usize) -> Self {
        ReadLimits {
            max_bytes,
            min_one_batch: true,
            max_offset: None,
        }
    }
}

/// Whole batches read from the log, byte for byte as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    pub bytes: Vec<u8>,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

impl LogRead {
    pub fn batches(&self) -> batch::BatchIter<'_> {
        batch::BatchIter::new(&self.bytes)
    }
}

/// State only the appender touches, behind the writer lock.
#[derive(Debug)]
struct Writer {
    /// The config appends use; `set_config` replaces it under this lock.
    config: Arc<LogConfig>,
    /// The active segment (also last in `segments`), kept here so appends skip that lock.
    active: Arc<Segment>,
    /// Reused per append to avoid an allocation on the hot path.
    metas: Vec<BatchMeta>,
}

#[derive(Debug)]
struct CheckpointState {
    current: Checkpoint,
    /// The file on disk still says "clean shutdown": it must be rewritten before the first
    /// change, or a crash would make recovery trust a torn tail.
    clean_on_disk: bool,
}

/// One partition's log.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    io: Io,
    clock: Arc<dyn Clock>,
    config: RwLock<Arc<LogConfig>>,
    /// `max.message.bytes`, readable without a lock for validation before the writer lock.
    max_message_bytes: AtomicUsize,
    writer: Mutex<Writer>,
    maintenance: Mutex<()>,
    segments: RwLock<Vec<Arc<Segment>>>,
    log_end: AtomicI64,
    log_start: AtomicI64,
    leader_epoch: AtomicI32,
    durability: Durability,
    checkpoint: Mutex<CheckpointState>,
    needs_unclean_marker: AtomicBool,
    poisoned: AtomicBool,
    closed: AtomicBool,
    last_flush_ms: AtomicI64,
    /// Appends between validation and publishing their offsets; a group-commit leader lets
    /// them land before it syncs, so one fsync covers them too.
    appends_in_flight: AtomicUsize,
    /// Appends since the last group-commit sync started, and what the last sync saw: how
    /// many appends it covered and how long it took. They tune the leader's wait.
    appends_since_sync: AtomicU64,
    last_sync_appends: AtomicU64,
    last_sync_nanos: AtomicU64,
    report: RecoveryReport,
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering it as described in [`crate::recovery`].
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Log> {
        let dir = dir.as_ref().to_path_buf();
        let opened_at = options.clock.now_ms();
        let sizing = sizing(&options.config);
        let opened = recovery::open_segments(&dir, &options.io, sizing)?;
        let mut report = opened.report;
        let mut segments = opened.segments;
        let cp = opened.checkpoint.unwrap_or_default();
        if segments.is_empty() {
            let base = cp.log_start.max(cp.recovery_point).max(0);
            segments.push(Arc::new(Segment::create(&dir, base, sizing)?));
        }
        let active = segments.last().expect("non-empty").clone();
        // A trusted active segment had its indexes trimmed at close; give them room again.
        active.unseal(sizing)?;
        let log_end = active.next_offset();
        let first_base = segments[0].base_offset();
        let log_start = cp.log_start.clamp(first_base, log_end);

        let clean = report.clean;
        let current = Checkpoint {
            recovery_point: log_end,
            log_start,
            cleaner_point: cp.cleaner_point.clamp(log_start, log_end),
            clean_shutdown: clean,
        };
        if !clean {
            // Everything recovered is now validated: sync it and move the recovery point to the
            // end, so the next open does not validate it again.
            active.sync(&options.io)?;
            Checkpoint {
                clean_shutdown: false,
                ..current
            }
            .write(&options.io, &dir)?;
        }
        report.clean = clean;
        let config = Arc::new(options.config.clone());
        let log = Log {
            dir,
            io: options.io,
            clock: options.clock,
            max_message_bytes: AtomicUsize::new(options.config.max_message_bytes),
            config: RwLock::new(config.clone()),
            writer: Mutex::new(Writer {
                config,
                active,
                metas: Vec::new(),
            }),
            maintenance: Mutex::new(()),
            segments: RwLock::new(segments),
            log_end: AtomicI64::new(log_end),
            log_start: AtomicI64::new(log_start),
            leader_epoch: AtomicI32::new(0),
            durability: Durability::new(log_end),
            checkpoint: Mutex::new(CheckpointState {
                current: Checkpoint {
                    clean_shutdown: false,
                    ..current
                },
                clean_on_disk: clean,
            }),
            needs_unclean_marker: AtomicBool::new(clean),
            poisoned: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            last_flush_ms: AtomicI64::new(opened_at),
            appends_in_flight: AtomicUsize::new(0),
            appends_since_sync: AtomicU64::new(0),
            last_sync_appends: AtomicU64::new(0),
            last_sync_nanos: AtomicU64::new(0),
            report,
        };
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What recovery did when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    pub fn config(&self) -> Arc<LogConfig> {
        self.config.read().expect("config lock").clone()
    }

    pub fn set_config(&self, config: LogConfig) {
        let config = Arc::new(config);
        let mut w = self.writer.lock().expect("writer lock");
        self.max_message_bytes
            .store(config.max_message_bytes, Ordering::Release);
        w.config = config.clone();
        *self.config.write().expect("config lock") = config;
    }

    /// The leader epoch stamped on appended batches.
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.store(epoch, Ordering::Release);
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start.load(Ordering::Acquire)
    }

    /// The next offset to be assigned; on a single broker also the high watermark.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end.load(Ordering::Acquire)
    }

    /// Offsets below this are known to be on disk.
    pub fn durable_offset(&self) -> i64 {
        self.durability.durable_end()
    }

    /// fsyncs made by group commit so far.
    pub fn sync_count(&self) -> u64 {
        self.durability.syncs()
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments().iter().map(|s| s.size()).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.read().expect("segments lock").len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments().iter().map(|s| s.base_offset()).collect()
    }

    pub(crate) fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments.read().expect("segments lock").clone()
    }

    pub(crate) fn io(&self) -> &Io {
        &self.io
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub(crate) fn maintenance_lock(&self) -> MutexGuard<'_, ()> {
        self.maintenance.lock().expect("maintenance lock")
    }

    fn check_writable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::ShutDown);
        }
        if self.poisoned.load(Ordering::Acquire) {
            return Err(LogError::Poisoned {
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }

    fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
        self.durability.fail();
        tracing::error!(dir = %self.dir.display(), "partition log refuses writes after an I/O failure");
    }

    /// Runs `f`, poisoning the log if it failed in a way that may have lost data: a failed
    /// fsync, or a failed write whose partial bytes could not be cut off again.
    fn guard<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let r = f();
        if let Err(
            LogError::Poisoned { .. }
            | LogError::Io {
                op: crate::error::IoOp::Sync,
                ..
            },
        ) = &r
        {
            self.poison();
        }
        r
    }

    /// Validates and appends one or more batches (as a producer sends them), assigning offsets
    /// from the log end. Nothing is written when any batch is invalid. Returns once the flush
    /// policy is satisfied: with `flush.messages=1` that means on disk.
    pub fn append(&self, batches: &mut [u8]) -> Result<AppendInfo> {
        let (info, flush_messages) = self
            .append_counted(batches, MayBlock::Yes)?
            .expect("an append that may block is always done");
        self.flush_if_policy_requires(&info, flush_messages)?;
        Ok(info)
    }

    /// Appends like [`Log::append`] but returns before applying the flush policy, so a caller
    /// that must hold its own lock around the append (the broker's producer state) can wait
    /// for durability after releasing it, with [`Log::apply_flush_policy`].
    pub fn append_deferred(&self, batches: &mut [u8]) -> Result<AppendInfo> {
        let appended = self.append_counted(batches, MayBlock::Yes)?;
        Ok(appended.expect("an append that may block is always done").0)
    }

    /// Appends like [`Log::append_deferred`], but only when that is a write into the page
    /// cache and nothing more, so an async task can do it on its own thread: `None`, with
    /// nothing written, when the writer is busy, the active segment must roll first, or
    /// the first append since opening must mark the log unclean (those wait for a lock or
    /// write and fsync files). The caller then appends on a thread that may block.
    pub fn try_append_deferred(&self, batches: &mut [u8]) -> Result<Option<AppendInfo>> {
        Ok(self
            .append_counted(batches, MayBlock::No)?
            .map(|(info, _)| info))
    }

    /// True when the flush policy wants an fsync before `info` may be acknowledged.
    pub fn flush_policy_requires(&self, info: &AppendInfo) -> bool {
        info.last_offset + 1 - self.durability.durable_end() >= self.config().flush_messages
    }

    /// Waits for whatever durability the flush policy requires for an earlier
    /// [`Log::append_deferred`].
    pub fn apply_flush_policy(&self, info: &AppendInfo) -> Result<()> {
        self.flush_if_policy_requires(info, self.config().flush_messages)
    }

    fn append_counted(
        &self,
        batches: &mut [u8],
        may_block: MayBlock,
    ) -> Result<Option<(AppendInfo, i64)>> {
        self.appends_in_flight.fetch_add(1, Ordering::AcqRel);
        let result = self.append_inner(batches, may_block);
        self.appends_in_flight.fetch_sub(1, Ordering::AcqRel);
        let out = result?;
        if out.is_some() {
            self.appends_since_sync.fetch_add(1, Ordering::AcqRel);
        }
        Ok(out)
    }

    fn flush_if_policy_requires(&self, info: &AppendInfo, flush_messages: i64) -> Result<()> {
        if info.last_offset + 1 - self.durability.durable_end() >= flush_messages {
            self.wait_durable(info.last_offset + 1)?;
        }
        Ok(())
    }

    /// Calls `f` with the header of every batch from the one containing `from` to the end, in
    /// order, reading only headers (for rebuilding state such as idempotent producers').
    pub fn for_each_batch_header(&self, from: i64, mut f: impl FnMut(&BatchHeader)) -> Result<()> {
        let from = from.max(self.log_start_offset());
        for seg in self.segments_from(from) {
            let start = match seg.find(from)? {
                Some((pos, _)) => pos,
                None => continue,
            };
            seg.for_each_header(start, |h| f(h))?;
        }
        Ok(())
    }

    /// Appends and returns the `flush.messages` in force; `None` (nothing written) when
    /// `may_block` is `No` and the append would have to wait for a lock or the disk.
    fn append_inner(
        &self,
        batches: &mut [u8],
        may_block: MayBlock,
    ) -> Result<Option<(AppendInfo, i64)>> {
        let max_message_bytes = self.max_message_bytes.load(Ordering::Acquire);
        let batch_count = validate_batches(batches, max_message_bytes)?;
        let total_len = batches.len() as u64;

        let mut guard = match may_block {
            MayBlock::Yes => self.writer.lock().expect("writer lock"),
            MayBlock::No => match self.writer.try_lock() {
                Ok(guard) => guard,
                Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
                Err(std::sync::TryLockError::Poisoned(_)) => panic!("writer lock poisoned"),
            },
        };
        let w = &mut *guard;
        let config = w.config.clone();
        self.check_writable()?;
        if may_block == MayBlock::No && self.needs_unclean_marker.load(Ordering::Acquire) {
            return Ok(None);
        }
        self.ensure_unclean_marker()?;
        let now = self.clock.now_ms();
        let epoch = self.leader_epoch.load(Ordering::Acquire);
        let log_append = config.timestamp_type == TimestampType::LogAppendTime;
        let first_offset = self.log_end.load(Ordering::Acquire);
        let mut next = first_offset;
        let mut records = 0i64;
        let mut pos = 0usize;
        w.metas.clear();
        while pos < batches.len() {
            let header = BatchHeader::parse(&batches[pos..]).expect("validated above");
            let bytes = &mut batches[pos..pos + header.total_len()];
            batch::set_base_offset(bytes, next);
            batch::set_partition_leader_epoch(bytes, epoch);
            if log_append {
                batch::set_log_append_time(bytes, now);
            }
            w.metas.push(BatchMeta {
                base_offset: next,
                last_offset: next + header.last_offset_delta as i64,
                max_timestamp: if log_append {
                    now
                } else {
                    header.max_timestamp
                },
                len: header.total_len() as u64,
            });
            records += header.records_count as i64;
            next += header.last_offset_delta as i64 + 1;
            pos += header.total_len();
        }

        let too_old = !w.active.is_empty() && now - w.active.first_append_ms() >= config.segment_ms;
        if too_old
            || w.active
                .must_roll_for(total_len, next - 1, config.segment_bytes)
        {
            if may_block == MayBlock::No {
                // The batches' offsets were set, but nothing was written: the caller's
                // blocking append sets them again.
                return Ok(None);
            }
            self.guard(|| self.roll_locked(w, &config, first_offset))?;
        }
        self.guard(|| w.active.append(&self.io, batches, &w.metas, now))?;
        self.log_end.store(next, Ordering::Release);
        drop(guard);

        let info = AppendInfo {
            first_offset,
            last_offset: next - 1,
            log_append_time: log_append.then_some(now),
            log_start_offset: self.log_start_offset(),
            batches: batch_count,
            records,
        };
        Ok(Some((info, config.flush_messages)))
    }

    /// Blocks until every offset below `end` is on disk, sharing the fsync with every other
    /// waiter (group commit).
    pub fn wait_durable(&self, end: i64) -> Result<()> {
        loop {
            match self.durability.wait_turn(end) {
                Turn::Durable => return Ok(()),
                Turn::Failed => {
                    return Err(LogError::Poisoned {
                        dir: self.dir.clone(),
                    })
                }
                Turn::Lead => {
                    self.gather_before_sync();
                    // Note the end and the file together: a roll in between syncs the old
                    // segment itself, so syncing the active one covers the rest.
                    let (target, active, covered) = {
                        let w = self.writer.lock().expect("writer lock");
                        (
                            self.log_end.load(Ordering::Acquire),
                            w.active.clone(),
                            self.appends_since_sync.swap(0, Ordering::AcqRel),
                        )
                    };
                    let started = std::time::Instant::now();
                    let synced = active.sync(&self.io);
                    self.last_sync_nanos
                        .store(started.elapsed().as_nanos() as u64, Ordering::Release);
                    self.last_sync_appends.store(covered, Ordering::Release);
                    match synced {
                        Ok(()) => {
                            self.last_flush_ms
                                .store(self.clock.now_ms(), Ordering::Release);
                            self.durability.finish_sync(Some(target));
                        }
                        Err(e) => {
                            self.durability.finish_sync(None);
                            self.poison();
                            return Err(e);
                        }
                    }
                }
            }
        }
    }

    /// Lets appends that are about to happen join the coming fsync (like PostgreSQL's
    /// `commit_delay`): when the last sync covered several appends, writers are evidently
    /// arriving together, so wait a fraction of an fsync for the ones just released by it
    /// to append again. A lone writer never waits.
    fn gather_before_sync(&self) {
        let budget = if self.last_sync_appends.load(Ordering::Acquire) > 1 {
            (self.last_sync_nanos.load(Ordering::Acquire) / 8).min(50_000)
        } else {
            0
        };
        let started = std::time::Instant::now();
        loop {
            let in_flight = self.appends_in_flight.load(Ordering::Acquire);
            let waited = started.elapsed().as_nanos() as u64;
            if (in_flight == 0 && waited >= budget) || waited >= budget.max(20_000) {
                break;
            }
            std::thread::yield_now();
        }
    }

    /// Syncs everything appended so far.
    pub fn flush(&self) -> Result<()> {
        self.wait_durable(self.log_end_offset())
    }

    /// Applies `flush.ms`: syncs when unsynced data has waited that long. Returns whether it
    /// synced.
    pub fn flush_if_due(&self) -> Result<bool> {
        let flush_ms = self.config().flush_ms;
        let end = self.log_end_offset();
        if flush_ms == i64::MAX || self.durable_offset() >= end {
            return Ok(false);
        }
        if self.clock.now_ms() - self.last_flush_ms.load(Ordering::Acquire) < flush_ms {
            return Ok(false);
        }
        self.wait_durable(end)?;
        Ok(true)
    }

    /// True when reading from `offset` reads only the last `within_bytes` of the log, all in
    /// the active segment: bytes written moments ago, which are still in the page cache
    /// (unless the machine is short of memory), so a reader following the end may read
    /// them without a thread that may block.
    pub fn is_tail(&self, offset: i64, within_bytes: u64) -> bool {
        let end = self.log_end_offset();
        if offset >= end {
            // Nothing to read, or out of range.
            return offset == end;
        }
        let active = self.active();
        offset >= active.base_offset() && active.bytes_from(offset) <= within_bytes
    }

    pub(crate) fn active(&self) -> Arc<Segment> {
        self.segments
            .read()
            .expect("segments lock")
            .last()
            .expect("a log always has a segment")
            .clone()
    }

    /// Seals the active segment and starts a new one at `new_base`.
    fn roll_locked(&self, w: &mut Writer, config: &LogConfig, new_base: i64) -> Result<()> {
        w.active.seal(&self.io)?;
        let seg = Arc::new(Segment::create(&self.dir, new_base, sizing(config))?);
        self.segments
            .write()
            .expect("segments lock")
            .push(seg.clone());
        w.active = seg;
        self.durability.mark_durable(new_base);
        self.update_checkpoint(|cp| cp.recovery_point = cp.recovery_point.max(new_base))?;
        tracing::debug!(dir = %self.dir.display(), new_base, "rolled segment");
        Ok(())
    }

    /// Starts a new segment now if the active one has data (retention of an expired active
    /// segment, tests).
    pub fn roll(&self) -> Result<()> {
        let mut w = self.writer.lock().expect("writer lock");
        self.check_writable()?;
        if w.active.is_empty() {
            return Ok(());
        }
        self.ensure_unclean_marker()?;
        let config = self.config();
        self.guard(|| self.roll_locked(&mut w, &config, self.log_end_offset()))
    }

    /// Reads whole batches starting with the one that contains `offset`.
    pub fn read(&self, offset: i64, limits: ReadLimits) -> Result<LogRead> {
        let read = self.read_records(offset, limits, u64::MAX)?;
        let bytes = match read.records {
            Records::Bytes(bytes) => bytes,
            Records::File(range) => range.read()?,
        };
        Ok(LogRead {
            bytes,
            log_start_offset: read.log_start_offset,
            log_end_offset: read.log_end_offset,
        })
    }

    /// Like [`Log::read`], but when the batches to return make a run of at least `file_min`
    /// bytes that the offset index can delimit, they come back as a range of the segment
    /// file for the caller to send without reading (that run may be up to one index
    /// interval shorter than what `read` returns).
    pub fn read_records(
        &self,
        offset: i64,
        limits: ReadLimits,
        file_min: u64,
    ) -> Result<RecordsRead> {
        let log_start = self.log_start_offset();
        let log_end = self.log_end_offset();
        if offset < log_start || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start,
                log_end,
            });
        }
        let found = |records| RecordsRead {
            records,
            log_start_offset: log_start,
            log_end_offset: log_end,
        };
        let limit = limits.max_offset.unwrap_or(i64::MAX).min(log_end);
        if offset >= limit {
            return Ok(found(Records::Bytes(Vec::new())));
        }
        for seg in self.segments_from(offset) {
            if let Some((pos, _)) = seg.find(offset)? {
                if let Some(end) = seg.whole_batches_end(pos, limits.max_bytes, limit) {
                    if end - pos >= file_min {
                        return Ok(found(Records::File(seg.file_range(pos, end - pos))));
                    }
                }
                let bytes = seg.read(pos, limits.max_bytes, limits.min_one_batch, limit)?;
                return Ok(found(Records::Bytes(bytes)));
            }
        }
        Ok(found(Records::Bytes(Vec::new())))
    }

    /// The segments that may hold `offset` or anything after it.
    fn segments_from(&self, offset: i64) -> Vec<Arc<Segment>> {
        let segs = self.segments.read().expect("segments lock");
        let first = segs
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        segs[first..].to_vec()
    }

    /// The first offset at or after the log start whose record timestamp is `>= timestamp`.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<i64>> {
        Ok(self
            .record_at_timestamp(timestamp)?
            .map(|(offset, _)| offset))
    }

    /// `(offset, timestamp)` of the first record at or after the log start whose timestamp is
    /// `>= timestamp` (ListOffsets answers with both).
    pub fn record_at_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>> {
        let log_start = self.log_start_offset();
        for seg in self.segments_from(log_start) {
            if let Some(found) = seg.find_by_timestamp(timestamp, log_start)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The largest timestamp in the log and the offset of the first record that has it.
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>> {
        let log_start = self.log_start_offset();
        let segs = self.segments_from(log_start);
        let Some(best) = segs.iter().filter(|s| !s.is_empty()).reduce(|a, b| {
            if b.max_timestamp() > a.max_timestamp() {
                b
            } else {
                a
            }
        }) else {
            return Ok(None);
        };
        let ts = best.max_timestamp();
        Ok(best
            .find_by_timestamp(ts, log_start)?
            .map(|(offset, _)| (ts, offset)))
    }

    /// Removes every record at or after `offset`. A batch containing `offset` is removed
    /// whole, so the new log end may be below `offset`; it is returned.
    pub fn truncate_to(&self, offset: i64) -> Result<i64> {
        let _m = self.maintenance_lock();
        let mut w = self.writer.lock().expect("writer lock");
        self.check_writable()?;
        let log_start = self.log_start_offset();
        let log_end = self.log_end_offset();
        if offset < log_start {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start,
                log_end,
            });
        }
        if offset >= log_end {
            return Ok(log_end);
        }
        self.ensure_unclean_marker()?;
        let config = self.config();
        let result = self.guard(|| {
            let mut segs = self.segments.write().expect("segments lock");
            let keep = segs.partition_point(|s| s.base_offset() <= offset).max(1);
            for seg in segs.drain(keep..) {
                seg.delete_files()?;
            }
            let last = segs.last().expect("kept one");
            last.truncate_to(offset, &self.io, sizing(&config))?;
            last.unseal(sizing(&config))?;
            w.active = last.clone();
            Ok(last.next_offset())
        });
        let new_end = result?;
        self.log_end.store(new_end, Ordering::Release);
        // Cutting a whole batch can go below a log start inside that batch.
        let new_start = log_start.min(new_end);
        self.log_start.store(new_start, Ordering::Release);
        self.durability.clamp(new_end);
        self.update_checkpoint(|cp| {
            cp.recovery_point = cp.recovery_point.min(new_end);
            cp.cleaner_point = cp.cleaner_point.min(new_end);
            cp.log_start = new_start;
        })?;
        Ok(new_end)
    }

    /// Advances the log start offset (Kafka's DeleteRecords) and deletes segments that fall
    /// wholly below it. Returns the new log start.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64> {
        let _m = self.maintenance_lock();
        self.check_writable()?;
        let log_start = self.log_start_offset();
        let log_end = self.log_end_offset();
        if offset > log_end || offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start,
                log_end,
            });
        }
        if offset <= log_start {
            return Ok(log_start);
        }
        self.ensure_unclean_marker()?;
        // Durable before it is acknowledged: a restart must not bring the records back.
        self.update_checkpoint(|cp| cp.log_start = offset)?;
        self.log_start.store(offset, Ordering::Release);
        self.delete_segments_below(offset)?;
        Ok(offset)
    }

    /// Deletes sealed segments whose every offset is below `offset`. Caller holds maintenance.
    pub(crate) fn delete_segments_below(&self, offset: i64) -> Result<usize> {
        let doomed: Vec<Arc<Segment>> = {
            let mut segs = self.segments.write().expect("segments lock");
            let sealed = segs.len() - 1;
            let n = segs[..sealed]
                .iter()
                .take_while(|s| s.next_offset() <= offset)
                .count();
            segs.drain(..n).collect()
        };
        for seg in &doomed {
            seg.delete_files()?;
        }
        Ok(doomed.len())
    }

    /// Removes the oldest `n` sealed segments and moves the log start past them.
    pub(crate) fn delete_oldest_segments(&self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.ensure_unclean_marker()?;
        let new_start = {
            let segs = self.segments.read().expect("segments lock");
            segs[n].base_offset()
        };
        let new_start = new_start.max(self.log_start_offset());
        self.update_checkpoint(|cp| cp.log_start = new_start)?;
        self.log_start.store(new_start, Ordering::Release);
        let doomed: Vec<Arc<Segment>> = {
            let mut segs = self.segments.write().expect("segments lock");
            segs.drain(..n).collect()
        };
        for seg in &doomed {
            seg.delete_files()?;
        }
        Ok(())
    }

    /// Swaps in a compacted segment for the one with the same base offset.
    pub(crate) fn replace_segment(&self, seg: Segment) {
        let mut segs = self.segments.write().expect("segments lock");
        if let Some(slot) = segs
            .iter_mut()
            .find(|s| s.base_offset() == seg.base_offset())
        {
            *slot = Arc::new(seg);
        }
    }

    pub(crate) fn cleaner_point(&self) -> i64 {
        self.checkpoint
            .lock()
            .expect("checkpoint lock")
            .current
            .cleaner_point
    }

    pub(crate) fn set_cleaner_point(&self, offset: i64) -> Result<()> {
        self.update_checkpoint(|cp| cp.cleaner_point = cp.cleaner_point.max(offset))
    }

    /// Writes the checkpoint with a new recovery point (everything durable so far).
    pub fn checkpoint(&self) -> Result<()> {
        let durable = self.durable_offset();
        self.update_checkpoint(|cp| cp.recovery_point = cp.recovery_point.max(durable))
    }

    pub(crate) fn ensure_unclean_marker(&self) -> Result<()> {
        if !self.needs_unclean_marker.load(Ordering::Acquire) {
            return Ok(());
        }
        self.update_checkpoint(|_| {})
    }

    fn update_checkpoint(&self, f: impl FnOnce(&mut Checkpoint)) -> Result<()> {
        let mut st = self.checkpoint.lock().expect("checkpoint lock");
        let mut next = st.current;
        f(&mut next);
        next.clean_shutdown = false;
        if next == st.current && !st.clean_on_disk {
            return Ok(());
        }
        next.write(&self.io, &self.dir)?;
        st.current = next;
        st.clean_on_disk = false;
        self.needs_unclean_marker.store(false, Ordering::Release);
        Ok(())
    }

    /// Syncs everything and records a clean shutdown, so the next open trusts every segment.
    /// Further appends fail with [`LogError::ShutDown`].
    pub fn close(&self) -> Result<()> {
        let _m = self.maintenance_lock();
        let w = self.writer.lock().expect("writer lock");
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if self.is_poisoned() {
            // Leave the checkpoint unclean: recovery must look at the tail.
            return Ok(());
        }
        w.active.seal(&self.io)?;
        for seg in self.segments() {
            seg.flush_indexes()?;
        }
        let mut st = self.checkpoint.lock().expect("checkpoint lock");
        let cp = Checkpoint {
            recovery_point: self.log_end_offset(),
            clean_shutdown: true,
            ..st.current
        };
        cp.write(&self.io, &self.dir)?;
        st.current = cp;
        st.clean_on_disk = true;
        Ok(())
    }
}

pub(crate) fn sizing(config: &LogConfig) -> IndexSizing {
    IndexSizing {
        capacity_bytes: config.segment_index_bytes,
        interval_bytes: config.index_interval_bytes,
    }
}

/// Validates every batch of an append as [`Log::append`] does; returns how many there are.
pub fn validate_batches(batches: &[u8], max_message_bytes: usize) -> Result<usize> {
    let mut count = 0;
    let mut pos = 0;
    while pos < batches.len() {
        let rest = &batches[pos..];
        let header = BatchHeader::parse(rest).map_err(|source| LogError::InvalidBatch {
            position: pos,
            source,
        })?;
        let len = header.total_len();
        if len > rest.len() {
            return Err(LogError::InvalidBatch {
                position: pos,
                source: batch::BatchError::Truncated {
                    needed: len,
                    available: rest.len(),
                },
            });
        }
        if len > max_message_bytes {
            return Err(LogError::RecordTooLarge {
                size: len,
                max: max_message_bytes,
            });
        }
        batch::validate(&rest[..len], Strictness::Append).map_err(|source| {
            LogError::InvalidBatch {
                position: pos,
                source,
            }
        })?;
        count += 1;
        pos += len;
    }
    if count == 0 {
        return Err(LogError::InvalidBatch {
            position: 0,
            source: batch::BatchError::Empty,
        });
    }
    Ok(count)
}
