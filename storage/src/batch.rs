//! Kafka v2 record batches: the header layout, validation, and the in-place rewrites the log
//! makes when it assigns offsets.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! 0  base_offset            i64   rewritten by the log on append
//! 8  batch_length           i32   bytes after this field
//! 12 partition_leader_epoch i32   rewritten by the log on append
//! 16 magic                  i8    must be 2
//! 17 crc                    u32   CRC32C over bytes 21.. (attributes to the end)
//! 21 attributes             i16   bits 0-2 codec, 3 timestamp type, 4 transactional,
//!                                 5 control, 6 has delete horizon
//! 23 last_offset_delta      i32
//! 27 base_timestamp         i64   the delete horizon when bit 6 is set
//! 35 max_timestamp          i64
//! 43 producer_id            i64
//! 51 producer_epoch         i16
//! 53 base_sequence          i32
//! 57 records_count          i32
//! 61 records ...                  compressed as a whole when the codec is not none
//! ```
//!
//! Because the CRC starts at the attributes, rewriting the base offset and leader epoch never
//! touches it; switching a batch to `LogAppendTime` does, and recomputes it.

use std::borrow::Cow;

use crate::codec::{self, Compression};
use crate::record::{self, RecordError};

pub const HEADER_LEN: usize = 61;
/// Bytes before the part counted by `batch_length`.
pub const LOG_OVERHEAD: usize = 12;
pub const MAGIC_V2: i8 = 2;
/// The most a stored batch may decompress to when the engine looks inside it (compaction,
/// lookups by timestamp). Far above anything a producer sends, low enough to stop a bomb.
pub const MAX_DECOMPRESSED_BATCH: usize = 512 << 20;

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const PARTITION_LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORDS_COUNT: usize = 57;

const CODEC_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;
const DELETE_HORIZON_BIT: i16 = 0x40;

/// Why a batch was refused. `kind` tells which Kafka error it becomes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("truncated batch: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("batch length field {batch_length} is impossible")]
    InvalidLength { batch_length: i32 },
    #[error("unsupported magic byte {magic}: only v2 record batches are accepted")]
    UnsupportedMagic { magic: i8 },
    #[error("CRC32C mismatch: batch says {stored:#010x}, bytes give {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record count {count} does not match last offset delta {last_offset_delta}")]
    CountMismatch { count: i32, last_offset_delta: i32 },
    #[error("unknown compression codec {codec}")]
    UnknownCompression { codec: u8 },
    #[error("record {index}: {source}")]
    MalformedRecord {
        index: usize,
        #[source]
        source: RecordError,
    },
    #[error("record {index} has offset delta {found}, expected {expected}")]
    OffsetDeltaMismatch {
        index: usize,
        expected: i32,
        found: i32,
    },
    #[error("records take {used} bytes but the batch holds {available}")]
    RecordsLengthMismatch { used: usize, available: usize },
    #[error("control batches cannot be produced")]
    ControlBatch,
    #[error("the append holds no record batch")]
    Empty,
    #[error("could not decompress records: {reason}")]
    Decompression { reason: String },
}

/// The two Kafka error codes a bad batch maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchErrorKind {
    /// `CORRUPT_MESSAGE`: the bytes are damaged (CRC, framing).
    Corrupt,
    /// `INVALID_RECORD`: the bytes are intact but say something impossible.
    Invalid,
}

impl BatchError {
    pub fn kind(&self) -> BatchErrorKind {
        match self {
            BatchError::Truncated { .. }
            | BatchError::InvalidLength { .. }
            | BatchError::UnsupportedMagic { .. }
            | BatchError::CrcMismatch { .. }
            | BatchError::Decompression { .. } => BatchErrorKind::Corrupt,
            BatchError::CountMismatch { .. }
            | BatchError::UnknownCompression { .. }
            | BatchError::MalformedRecord { .. }
            | BatchError::OffsetDeltaMismatch { .. }
            | BatchError::RecordsLengthMismatch { .. }
            | BatchError::ControlBatch
            | BatchError::Empty => BatchErrorKind::Invalid,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// The fixed-size header of a v2 batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Decodes the header at the start of `buf` without checking anything beyond its size and
    /// the length field's sign; [`validate`] checks the rest.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let header = BatchHeader {
            base_offset: be_i64(buf, BASE_OFFSET),
            batch_length: be_i32(buf, BATCH_LENGTH),
            partition_leader_epoch: be_i32(buf, PARTITION_LEADER_EPOCH),
            magic: buf[MAGIC] as i8,
            crc: be_u32(buf, CRC),
            attributes: be_i16(buf, ATTRIBUTES),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP),
            producer_id: be_i64(buf, PRODUCER_ID),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH),
            base_sequence: be_i32(buf, BASE_SEQUENCE),
            records_count: be_i32(buf, RECORDS_COUNT),
        };
        if (header.batch_length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(BatchError::InvalidLength {
                batch_length: header.batch_length,
            });
        }
        Ok(header)
    }

    /// Size of the whole batch on disk, including the offset and length fields.
    pub fn total_len(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// The offset the next batch after this one starts at.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    pub fn compression(&self) -> Result<Compression, BatchError> {
        let codec = (self.attributes & CODEC_MASK) as u8;
        Compression::from_id(codec).ok_or(BatchError::UnknownCompression { codec })
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// The compaction delete horizon (KIP-534), when the cleaner has set one.
    pub fn delete_horizon(&self) -> Option<i64> {
        (self.attributes & DELETE_HORIZON_BIT != 0).then_some(self.base_timestamp)
    }

    /// True when the batch came from an idempotent or transactional producer.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// How strictly [`validate`] checks a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// A batch arriving from a producer: the record count must equal `last_offset_delta + 1`
    /// and uncompressed records must carry consecutive offset deltas.
    Append,
    /// A batch read back from disk, possibly rewritten by compaction (fewer records than the
    /// offset range it spans): checks framing and CRC only.
    Stored,
}

/// Validates the single complete batch that `batch` holds exactly.
pub fn validate(batch: &[u8], strictness: Strictness) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.total_len() != batch.len() {
        return Err(BatchError::Truncated {
            needed: header.total_len(),
            available: batch.len(),
        });
    }
    if header.magic != MAGIC_V2 {
        return Err(BatchError::UnsupportedMagic {
            magic: header.magic,
        });
    }
    let computed = crc32c::crc32c(&batch[ATTRIBUTES..]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    let compression = header.compression()?;
    if header.last_offset_delta < 0 || header.records_count < 0 {
        return Err(BatchError::CountMismatch {
            count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    match strictness {
        Strictness::Stored => {
            if header.records_count as i64 > header.last_offset_delta as i64 + 1 {
                return Err(BatchError::CountMismatch {
                    count: header.records_count,
                    last_offset_delta: header.last_offset_delta,
                });
            }
        }
        Strictness::Append => {
            if header.is_control() {
                return Err(BatchError::ControlBatch);
            }
            if header.records_count == 0 || header.records_count != header.last_offset_delta + 1 {
                return Err(BatchError::CountMismatch {
                    count: header.records_count,
                    last_offset_delta: header.last_offset_delta,
                });
            }
            if compression == Compression::None {
                validate_uncompressed_records(&batch[HEADER_LEN..], header.records_count)?;
            }
        }
    }
    Ok(header)
}

/// Checks that the records of an uncompressed batch fill it exactly and have offset deltas
/// 0, 1, 2, ... as a producer must send them.
fn validate_uncompressed_records(mut records: &[u8], count: i32) -> Result<(), BatchError> {
    let available = records.len();
    for index in 0..count as usize {
        let (record, rest) = record::Record::decode(records)
            .map_err(|source| BatchError::MalformedRecord { index, source })?;
        if record.offset_delta != index as i32 {
            return Err(BatchError::OffsetDeltaMismatch {
                index,
                expected: index as i32,
                found: record.offset_delta,
            });
        }
        records = rest;
    }
    if !records.is_empty() {
        return Err(BatchError::RecordsLengthMismatch {
            used: available - records.len(),
            available,
        });
    }
    Ok(())
}

/// Rewrites the base offset of the batch at the start of `batch` (outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites the partition leader epoch (outside the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch as `LogAppendTime` with `now` as its max timestamp, as Kafka does for topics
/// with `message.timestamp.type=LogAppendTime`, and recomputes the CRC.
pub fn set_log_append_time(batch: &mut [u8], now: i64) {
    let attributes = be_i16(batch, ATTRIBUTES) | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Walks a buffer of back-to-back batches, yielding `(position, header)` for every complete
/// batch and stopping at the first incomplete one (a fetch-sized read or a torn tail).
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BatchIter { buf, pos: 0 }
    }

    /// Bytes consumed by the complete batches yielded so far.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for BatchIter<'a> {
    /// `(position, header, the batch's bytes)`
    type Item = (usize, BatchHeader, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.pos..];
        let header = BatchHeader::parse(rest).ok()?;
        let len = header.total_len();
        if rest.len() < len {
            return None;
        }
        let pos = self.pos;
        self.pos += len;
        Some((pos, header, &rest[..len]))
    }
}

/// Calls `f` with every record of a batch, decompressing it first when needed. `max_decoded`
/// bounds the decompressed size so a hostile batch cannot exhaust memory.
pub fn for_each_record(
    batch: &[u8],
    max_decoded: usize,
    mut f: impl FnMut(&record::Record<'_>),
) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let payload = &batch[HEADER_LEN.min(batch.len())..];
    let compression = header.compression()?;
    let decoded;
    let mut records = if compression == Compression::None {
        payload
    } else {
        decoded = codec::decompress(compression, payload, max_decoded).map_err(|e| {
            BatchError::Decompression {
                reason: e.to_string(),
            }
        })?;
        &decoded[..]
    };
    for index in 0..header.records_count.max(0) as usize {
        let (record, rest) = record::Record::decode(records)
            .map_err(|source| BatchError::MalformedRecord { index, source })?;
        f(&record);
        records = rest;
    }
    Ok(header)
}

/// One record to put in a batch built by [`BatchBuilder`]. Its parts are borrowed where
/// the caller has them (an in-process append encodes straight from its records, copying
/// them once, into the batch) or owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord<'a> {
    pub offset_delta: i32,
    pub timestamp: i64,
    pub key: Option<Cow<'a, [u8]>>,
    pub value: Option<Cow<'a, [u8]>>,
    /// Headers already encoded as Kafka encodes them (count, then key/value pairs); empty means
    /// no headers. See [`record::encode_headers`].
    pub headers: Cow<'a, [u8]>,
}

impl<'a> NewRecord<'a> {
    /// A record borrowing its key and value.
    pub fn new(key: Option<&'a [u8]>, value: Option<&'a [u8]>, timestamp: i64) -> Self {
        NewRecord {
            offset_delta: 0,
            timestamp,
            key: key.map(Cow::Borrowed),
            value: value.map(Cow::Borrowed),
            headers: Cow::Borrowed(&[]),
        }
    }

    /// A record owning a copy of its key and value.
    pub fn owned(key: Option<&[u8]>, value: Option<&[u8]>, timestamp: i64) -> NewRecord<'static> {
        NewRecord {
            offset_delta: 0,
            timestamp,
            key: key.map(|k| Cow::Owned(k.to_vec())),
            value: value.map(|v| Cow::Owned(v.to_vec())),
            headers: Cow::Borrowed(&[]),
        }
    }
}

/// Builds v2 batches: used by compaction to rewrite batches, and by in-process producers and
/// tests to make batches the way a Kafka client would.
#[derive(Debug, Clone)]
pub struct BatchBuilder<'a> {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub compression: Compression,
    pub timestamp_type: TimestampType,
    pub transactional: bool,
    pub control: bool,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// When set, the batch carries this delete horizon in place of its base timestamp.
    pub delete_horizon: Option<i64>,
    /// When set, overrides `last_offset_delta` (compaction keeps the original span).
    pub last_offset_delta: Option<i32>,
    /// When set, overrides the max timestamp (LogAppendTime batches keep theirs).
    pub max_timestamp: Option<i64>,
    pub(crate) records: Vec<NewRecord<'a>>,
}

impl Default for BatchBuilder<'_> {
    fn default() -> Self {
        BatchBuilder {
            base_offset: 0,
            partition_leader_epoch: -1,
            compression: Compression::None,
            timestamp_type: TimestampType::CreateTime,
            transactional: false,
            control: false,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            delete_horizon: None,
            last_offset_delta: None,
            max_timestamp: None,
            records: Vec::new(),
        }
    }
}

impl<'a> BatchBuilder<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Adds a record with the next consecutive offset delta.
    pub fn push(&mut self, mut record: NewRecord<'a>) -> &mut Self {
        record.offset_delta = self.records.len() as i32;
        self.records.push(record);
        self
    }

    /// Adds a record keeping the offset delta it carries (for rewriting batches with holes).
    pub fn push_with_delta(&mut self, record: NewRecord<'a>) -> &mut Self {
        self.records.push(record);
        self
    }

    /// Adds a record with a copy of `key` and `value` (tests and tools build batches so).
    pub fn record(mut self, key: Option<&[u8]>, value: Option<&[u8]>, timestamp: i64) -> Self {
        self.push(NewRecord::owned(key, value, timestamp));
        self
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Encodes the batch. Fails only when compression fails.
    pub fn build(&self) -> std::io::Result<Vec<u8>> {
        let first_timestamp = self.records.first().map_or(-1, |r| r.timestamp);
        let base_timestamp = self.delete_horizon.unwrap_or(first_timestamp);
        let max_timestamp = self
            .max_timestamp
            .unwrap_or_else(|| self.records.iter().map(|r| r.timestamp).max().unwrap_or(-1));
        let last_offset_delta = self.last_offset_delta.unwrap_or_else(|| {
            self.records
                .iter()
                .map(|r| r.offset_delta)
                .max()
                .unwrap_or(0)
        });

        let records_len: usize = self
            .records
            .iter()
            .map(|r| {
                32 + r.key.as_ref().map_or(0, |k| k.len())
                    + r.value.as_ref().map_or(0, |v| v.len())
                    + r.headers.len()
            })
            .sum();
        // Uncompressed records are encoded straight after the header's room.
        let mut out = Vec::with_capacity(HEADER_LEN + records_len);
        out.resize(HEADER_LEN, 0);
        let encode_all = |into: &mut Vec<u8>| {
            for r in &self.records {
                record::encode(
                    into,
                    r.timestamp - base_timestamp,
                    r.offset_delta,
                    r.key.as_deref(),
                    r.value.as_deref(),
                    &r.headers,
                );
            }
        };
        if self.compression == Compression::None {
            encode_all(&mut out);
        } else {
            let mut records = Vec::with_capacity(records_len);
            encode_all(&mut records);
            out.extend_from_slice(&codec::compress(self.compression, &records)?);
        }
        let payload_len = out.len() - HEADER_LEN;

        let mut attributes = self.compression.id() as i16;
        if self.timestamp_type == TimestampType::LogAppendTime {
            attributes |= TIMESTAMP_TYPE_BIT;
        }
        if self.transactional {
            attributes |= TRANSACTIONAL_BIT;
        }
        if self.control {
            attributes |= CONTROL_BIT;
        }
        if self.delete_horizon.is_some() {
            attributes |= DELETE_HORIZON_BIT;
        }

        let mut head = Vec::with_capacity(HEADER_LEN);
        head.extend_from_slice(&self.base_offset.to_be_bytes());
        head.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + payload_len) as i32).to_be_bytes());
        head.extend_from_slice(&self.partition_leader_epoch.to_be_bytes());
        head.push(MAGIC_V2 as u8);
        head.extend_from_slice(&[0; 4]); // CRC, filled below
        head.extend_from_slice(&attributes.to_be_bytes());
        head.extend_from_slice(&last_offset_delta.to_be_bytes());
        head.extend_from_slice(&base_timestamp.to_be_bytes());
        head.extend_from_slice(&max_timestamp.to_be_bytes());
        head.extend_from_slice(&self.producer_id.to_be_bytes());
        head.extend_from_slice(&self.producer_epoch.to_be_bytes());
        head.extend_from_slice(&self.base_sequence.to_be_bytes());
        head.extend_from_slice(&(self.records.len() as i32).to_be_bytes());
        out[..HEADER_LEN].copy_from_slice(&head);
        let crc = crc32c::crc32c(&out[ATTRIBUTES..]);
        out[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(out)
    }
}

fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

fn be_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn be_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(compression: Compression) -> Vec<u8> {
        BatchBuilder::new()
            .compression(compression)
            .record(Some(b"k1"), Some(b"v1"), 1_000)
            .record(None, Some(b"v2"), 1_005)
            .record(Some(b"k3"), None, 1_002)
            .build()
            .unwrap()
    }

    #[test]
    fn built_batches_validate_for_every_codec() {
        for codec in Compression::ALL {
            let batch = sample(codec);
            let header = validate(&batch, Strictness::Append).unwrap();
            assert_eq!(header.records_count, 3);
            assert_eq!(header.last_offset_delta, 2);
            assert_eq!(header.max_timestamp, 1_005);
            assert_eq!(header.compression().unwrap(), codec);
            let mut seen = Vec::new();
            for_each_record(&batch, 1 << 20, |r| {
                seen.push((
                    r.offset_delta,
                    r.key.map(<[u8]>::to_vec),
                    r.value.map(<[u8]>::to_vec),
                    header.base_timestamp + r.timestamp_delta,
                ))
            })
            .unwrap();
            assert_eq!(
                seen,
                vec![
                    (0, Some(b"k1".to_vec()), Some(b"v1".to_vec()), 1_000),
                    (1, None, Some(b"v2".to_vec()), 1_005),
                    (2, Some(b"k3".to_vec()), None, 1_002),
                ]
            );
        }
    }

    #[test]
    fn a_flipped_payload_byte_is_a_crc_mismatch() {
        let mut batch = sample(Compression::None);
        let last = batch.len() - 1;
        batch[last] ^= 0x40;
        let err = validate(&batch, Strictness::Append).unwrap_err();
        assert!(matches!(err, BatchError::CrcMismatch { .. }));
        assert_eq!(err.kind(), BatchErrorKind::Corrupt);
    }

    #[test]
    fn base_offset_rewrite_keeps_crc_valid_and_log_append_time_recomputes_it() {
        let mut batch = sample(Compression::Gzip);
        set_base_offset(&mut batch, 42);
        set_partition_leader_epoch(&mut batch, 7);
        let header = validate(&batch, Strictness::Append).unwrap();
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.partition_leader_epoch, 7);
        set_log_append_time(&mut batch, 99_999);
        let header = validate(&batch, Strictness::Append).unwrap();
        assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(header.max_timestamp, 99_999);
    }

    #[test]
    fn count_must_match_last_offset_delta_on_append() {
        let mut b = BatchBuilder::new().record(Some(b"a"), Some(b"b"), 1);
        b.last_offset_delta = Some(5);
        let batch = b.build().unwrap();
        let err = validate(&batch, Strictness::Append).unwrap_err();
        assert!(matches!(err, BatchError::CountMismatch { .. }));
        assert_eq!(err.kind(), BatchErrorKind::Invalid);
        // A compacted batch on disk legitimately spans more offsets than it holds.
        validate(&batch, Strictness::Stored).unwrap();
    }

    #[test]
    fn bad_magic_and_short_buffers_are_rejected() {
        let mut batch = sample(Compression::None);
        batch[MAGIC] = 1;
        assert!(matches!(
            validate(&batch, Strictness::Append),
            Err(BatchError::UnsupportedMagic { magic: 1 })
        ));
        let batch = sample(Compression::None);
        assert!(matches!(
            validate(&batch[..30], Strictness::Append),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            validate(&batch[..batch.len() - 1], Strictness::Append),
            Err(BatchError::Truncated { .. })
        ));
    }

    #[test]
    fn records_that_do_not_fill_the_batch_are_invalid() {
        // Claim one record while the payload holds two: the CRC is fine (recomputed) but the
        // framing is not.
        let mut batch = BatchBuilder::new()
            .record(None, Some(b"x"), 1)
            .record(None, Some(b"y"), 1)
            .build()
            .unwrap();
        batch[RECORDS_COUNT..RECORDS_COUNT + 4].copy_from_slice(&1i32.to_be_bytes());
        batch[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4].copy_from_slice(&0i32.to_be_bytes());
        let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
        batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&batch, Strictness::Append),
            Err(BatchError::RecordsLengthMismatch { .. })
        ));
    }

    #[test]
    fn iterator_stops_at_a_partial_batch() {
        let a = sample(Compression::None);
        let b = sample(Compression::Lz4);
        let mut buf = a;
        buf.extend_from_slice(&b[..b.len() - 3]);
        let items: Vec<_> = BatchIter::new(&buf).map(|(pos, _, _)| pos).collect();
        assert_eq!(items, vec![0]);
    }
}
