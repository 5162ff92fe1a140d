//! The sparse, memory-mapped indexes of a segment.
//!
//! - Offset index: 8-byte entries `(offset - base: u32, file position: u32)`, one every
//!   `index.interval.bytes` of log, each naming the start of a batch. A lookup gives the last
//!   indexed batch at or before an offset; the caller scans forward from there.
//! - Time index: 12-byte entries `(timestamp: i64, offset - base: u32)`. An entry `(t, o)` says
//!   every batch before offset `o` in this segment has a max timestamp `<= t`, so a search for
//!   the first record at or after `T` may start at the last entry with `t < T`. When a segment
//!   is sealed, a final entry `(segment max timestamp, next offset)` is added, so the last entry
//!   always gives the segment's max timestamp without a scan.
//!
//! Big-endian like Kafka's. The active segment's files are preallocated to
//! `segment.index.bytes` and trimmed to their entries when the segment is sealed or the log is
//! closed cleanly; after a crash the active segment's indexes are rebuilt from the log.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use crate::error::{IoOp, LogError, Result};

pub(crate) const OFFSET_ENTRY: usize = 8;
pub(crate) const TIME_ENTRY: usize = 12;

/// A file of fixed-size entries, memory-mapped.
#[derive(Debug)]
struct IndexFile {
    path: PathBuf,
    file: File,
    mmap: Option<MmapMut>,
    entry_size: usize,
    entries: usize,
    capacity: usize,
}

impl IndexFile {
    /// Creates (or empties) the file and maps room for `capacity_bytes`.
    fn create(path: &Path, entry_size: usize, capacity_bytes: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| LogError::io(IoOp::Create, path, e))?;
        let mut index = IndexFile {
            path: path.to_path_buf(),
            file,
            mmap: None,
            entry_size,
            entries: 0,
            capacity: 0,
        };
        index.resize(capacity_bytes)?;
        Ok(index)
    }

    /// Opens a trimmed index: every byte of the file is an entry.
    fn open(path: &Path, entry_size: usize) -> Result<Option<Self>> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LogError::io(IoOp::Open, path, e)),
        };
        let len = file
            .metadata()
            .map_err(|e| LogError::io(IoOp::Open, path, e))?
            .len() as usize;
        if len % entry_size != 0 {
            return Ok(None);
        }
        let mut index = IndexFile {
            path: path.to_path_buf(),
            file,
            mmap: None,
            entry_size,
            entries: len / entry_size,
            capacity: len / entry_size,
        };
        index.map()?;
        Ok(Some(index))
    }

    fn map(&mut self) -> Result<()> {
        self.mmap = None;
        if self.capacity == 0 {
            return Ok(());
        }
        // SAFETY: the file is owned by this engine and only ever resized through this struct,
        // which drops the mapping first; no other process is expected to truncate it.
        let mmap = unsafe { MmapMut::map_mut(&self.file) }
            .map_err(|e| LogError::io(IoOp::Map, &self.path, e))?;
        // Appends touch one new page at a time and lookups are binary searches: without this
        // the kernel's read-around turns the first touch of a page of the (sparse,
        // preallocated) file into zero-filling a whole readahead window of it, which
        // profiles showed as several percent of the broker's CPU. Only a hint, so a
        // failure changes nothing.
        #[cfg(unix)]
        let _ = mmap.advise(memmap2::Advice::Random);
        self.mmap = Some(mmap);
        Ok(())
    }

    /// Changes the file's size (keeping the entries) and remaps it.
    fn resize(&mut self, capacity_bytes: u64) -> Result<()> {
        let capacity = (capacity_bytes as usize / self.entry_size).max(self.entries);
        if let Some(m) = &self.mmap {
            m.flush()
                .map_err(|e| LogError::io(IoOp::Sync, &self.path, e))?;
        }
        self.mmap = None;
        self.file
            .set_len((capacity * self.entry_size) as u64)
            .map_err(|e| LogError::io(IoOp::Truncate, &self.path, e))?;
        self.capacity = capacity;
        self.map()
    }

    fn entry(&self, i: usize) -> &[u8] {
        let m = self.mmap.as_ref().expect("an index with entries is mapped");
        &m[i * self.entry_size..(i + 1) * self.entry_size]
    }

    fn is_full(&self) -> bool {
        self.entries >= self.capacity
    }

    fn push(&mut self, entry: &[u8]) -> bool {
        if self.is_full() {
            return false;
        }
        let at = self.entries * self.entry_size;
        let m = self
            .mmap
            .as_mut()
            .expect("an index with capacity is mapped");
        m[at..at + self.entry_size].copy_from_slice(entry);
        self.entries += 1;
        true
    }

    fn flush(&self) -> Result<()> {
        if let Some(m) = &self.mmap {
            m.flush()
                .map_err(|e| LogError::io(IoOp::Sync, &self.path, e))?;
        }
        Ok(())
    }

    /// Last index `i` in `0..entries` for which `pred(entry(i))` holds, given that `pred` is
    /// true for a prefix of the entries.
    fn last_matching(&self, pred: impl Fn(&[u8]) -> bool) -> Option<usize> {
        let (mut lo, mut hi) = (0usize, self.entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.entry(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// `(offset, position)` pairs of a segment.
#[derive(Debug)]
pub(crate) struct OffsetIndex {
    file: IndexFile,
    base_offset: i64,
}

impl OffsetIndex {
    pub fn create(path: &Path, base_offset: i64, capacity_bytes: u64) -> Result<Self> {
        Ok(OffsetIndex {
            file: IndexFile::create(path, OFFSET_ENTRY, capacity_bytes)?,
            base_offset,
        })
    }

    /// Opens a sealed index and checks that it is plausible for a log of `log_size` bytes;
    /// `None` when it is missing or damaged and must be rebuilt.
    pub fn open_checked(path: &Path, base_offset: i64, log_size: u64) -> Result<Option<Self>> {
        let Some(file) = IndexFile::open(path, OFFSET_ENTRY)? else {
            return Ok(None);
        };
        let index = OffsetIndex { file, base_offset };
        let mut prev: Option<(u32, u32)> = None;
        for i in 0..index.file.entries {
            let e = index.file.entry(i);
            let (rel, pos) = (u32_at(e, 0), u32_at(e, 4));
            if pos as u64 >= log_size || prev.is_some_and(|(r, p)| rel <= r || pos <= p) {
                return Ok(None);
            }
            prev = Some((rel, pos));
        }
        Ok(Some(index))
    }

    pub fn is_full(&self) -> bool {
        self.file.is_full()
    }

    pub fn push(&mut self, offset: i64, position: u64) -> bool {
        let mut e = [0u8; OFFSET_ENTRY];
        e[..4].copy_from_slice(&((offset - self.base_offset) as u32).to_be_bytes());
        e[4..].copy_from_slice(&(position as u32).to_be_bytes());
        self.file.push(&e)
    }

    /// The last indexed `(offset, position)` at or before `offset`, or the segment start.
    pub fn lookup(&self, offset: i64) -> (i64, u64) {
        let rel = offset - self.base_offset;
        if rel < 0 {
            return (self.base_offset, 0);
        }
        match self.file.last_matching(|e| (u32_at(e, 0) as i64) <= rel) {
            Some(i) => self.entry(i),
            None => (self.base_offset, 0),
        }
    }

    pub fn last(&self) -> Option<(i64, u64)> {
        self.file.entries.checked_sub(1).map(|i| self.entry(i))
    }

    /// The last entry with position `<= max_position` and offset `<= max_offset`. Both grow
    /// with the entry number, so the entries that qualify are a prefix.
    pub fn last_within(&self, max_position: u64, max_offset: i64) -> Option<(i64, u64)> {
        let rel = max_offset - self.base_offset;
        if rel < 0 {
            return None;
        }
        self.file
            .last_matching(|e| u32_at(e, 0) as i64 <= rel && u32_at(e, 4) as u64 <= max_position)
            .map(|i| self.entry(i))
    }

    fn entry(&self, i: usize) -> (i64, u64) {
        let e = self.file.entry(i);
        (self.base_offset + u32_at(e, 0) as i64, u32_at(e, 4) as u64)
    }

    pub fn flush(&self) -> Result<()> {
        self.file.flush()
    }

    pub fn trim(&mut self) -> Result<()> {
        self.file.resize((self.file.entries * OFFSET_ENTRY) as u64)
    }

    pub fn grow(&mut self, capacity_bytes: u64) -> Result<()> {
        self.file.resize(capacity_bytes)
    }
}

/// `(timestamp, offset)` pairs of a segment; see the module docs for their meaning.
#[derive(Debug)]
pub(crate) struct TimeIndex {
    file: IndexFile,
    base_offset: i64,
}

impl TimeIndex {
    pub fn create(path: &Path, base_offset: i64, capacity_bytes: u64) -> Result<Self> {
        Ok(TimeIndex {
            file: IndexFile::create(path, TIME_ENTRY, capacity_bytes)?,
            base_offset,
        })
    }

    /// Opens a sealed time index; `None` when missing or damaged. `next_offset` is one past the
    /// segment's last offset.
    pub fn open_checked(path: &Path, base_offset: i64, next_offset: i64) -> Result<Option<Self>> {
        let Some(file) = IndexFile::open(path, TIME_ENTRY)? else {
            return Ok(None);
        };
        let index = TimeIndex { file, base_offset };
        let mut prev: Option<(i64, i64)> = None;
        for i in 0..index.file.entries {
            let (ts, off) = index.entry(i);
            if off > next_offset || prev.is_some_and(|(t, o)| ts < t || off < o) {
                return Ok(None);
            }
            prev = Some((ts, off));
        }
        Ok(Some(index))
    }

    pub fn is_full(&self) -> bool {
        self.file.is_full()
    }

    /// Adds `(timestamp, offset)` when it says something new (the first entry, or a later
    /// timestamp).
    pub fn maybe_push(&mut self, timestamp: i64, offset: i64) {
        if self.last().is_some_and(|(t, _)| timestamp <= t) {
            return;
        }
        let mut e = [0u8; TIME_ENTRY];
        e[..8].copy_from_slice(&timestamp.to_be_bytes());
        e[8..].copy_from_slice(&((offset - self.base_offset) as u32).to_be_bytes());
        self.file.push(&e);
    }

    /// Where a search for the first record with timestamp `>= timestamp` may start.
    pub fn lookup(&self, timestamp: i64) -> i64 {
        match self.file.last_matching(|e| i64_at(e, 0) < timestamp) {
            Some(i) => self.entry(i).1,
            None => self.base_offset,
        }
    }

    pub fn last(&self) -> Option<(i64, i64)> {
        self.file.entries.checked_sub(1).map(|i| self.entry(i))
    }

    fn entry(&self, i: usize) -> (i64, i64) {
        let e = self.file.entry(i);
        (i64_at(e, 0), self.base_offset + u32_at(e, 8) as i64)
    }

    pub fn flush(&self) -> Result<()> {
        self.file.flush()
    }

    pub fn trim(&mut self) -> Result<()> {
        self.file.resize((self.file.entries * TIME_ENTRY) as u64)
    }

    pub fn grow(&mut self, capacity_bytes: u64) -> Result<()> {
        // The time index gets room for as many entries as the offset index.
        let entries = capacity_bytes / OFFSET_ENTRY as u64;
        self.file.resize(entries * TIME_ENTRY as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_finds_the_last_entry_at_or_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut idx = OffsetIndex::create(&path, 100, 1024).unwrap();
        assert_eq!(idx.lookup(150), (100, 0));
        idx.push(110, 4096);
        idx.push(120, 8192);
        idx.push(130, 12288);
        assert_eq!(idx.lookup(99), (100, 0));
        assert_eq!(idx.lookup(105), (100, 0));
        assert_eq!(idx.lookup(110), (110, 4096));
        assert_eq!(idx.lookup(125), (120, 8192));
        assert_eq!(idx.lookup(1_000), (130, 12288));
        idx.trim().unwrap();
        drop(idx);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 24);
        let idx = OffsetIndex::open_checked(&path, 100, 20_000)
            .unwrap()
            .unwrap();
        assert_eq!(idx.lookup(125), (120, 8192));
        // An entry pointing past the end of the log marks the index as damaged.
        assert!(OffsetIndex::open_checked(&path, 100, 10_000)
            .unwrap()
            .is_none());
    }

    #[test]
    fn an_index_of_odd_length_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        std::fs::write(&path, [0u8; 13]).unwrap();
        assert!(OffsetIndex::open_checked(&path, 0, 100).unwrap().is_none());
        let missing = dir.path().join("1.index");
        assert!(OffsetIndex::open_checked(&missing, 0, 100)
            .unwrap()
            .is_none());
    }

    #[test]
    fn time_lookup_starts_after_entries_below_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.timeindex");
        let mut idx = TimeIndex::create(&path, 0, 1200).unwrap();
        idx.maybe_push(10, 5);
        idx.maybe_push(10, 7); // not newer: skipped
        idx.maybe_push(20, 9);
        assert_eq!(idx.lookup(5), 0);
        assert_eq!(idx.lookup(10), 0);
        assert_eq!(idx.lookup(11), 5);
        assert_eq!(idx.lookup(25), 9);
        assert_eq!(idx.last(), Some((20, 9)));
    }
}
