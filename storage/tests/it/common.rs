//! Helpers shared by the storage tests.

use std::path::Path;
use std::sync::Arc;

use chorus_storage::batch::BatchBuilder;
use chorus_storage::codec::Compression;
use chorus_storage::{Clock, Log, LogConfig, LogOptions, ReadLimits};

/// A batch of `n` records with keys `k{i}` and values `value` repeated.
pub fn batch(n: usize, value: &[u8], timestamp: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        b = b.record(
            Some(format!("k{i}").as_bytes()),
            Some(value),
            timestamp + i as i64,
        );
    }
    b.build().unwrap()
}

/// A single-record batch with the given key and value.
pub fn keyed(key: &str, value: Option<&str>, timestamp: i64) -> Vec<u8> {
    BatchBuilder::new()
        .record(Some(key.as_bytes()), value.map(str::as_bytes), timestamp)
        .build()
        .unwrap()
}

pub fn compressed(codec: Compression, n: usize, timestamp: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new().compression(codec);
    for i in 0..n {
        b = b.record(
            Some(format!("k{i}").as_bytes()),
            Some(format!("value-{i}").as_bytes()),
            timestamp + i as i64,
        );
    }
    b.build().unwrap()
}

pub fn config(pairs: &[(&str, &str)]) -> LogConfig {
    LogConfig::with_overrides(pairs.iter().copied()).unwrap()
}

pub fn open(dir: &Path, config: &LogConfig) -> Log {
    Log::open(dir, LogOptions::with_config(config.clone())).unwrap()
}

pub fn open_with_clock(dir: &Path, config: &LogConfig, clock: Arc<dyn Clock>) -> Log {
    Log::open(
        dir,
        LogOptions {
            config: config.clone(),
            clock,
            ..LogOptions::default()
        },
    )
    .unwrap()
}

/// One record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: i64,
}

/// Every record from `from` to the log end, following reads across segments.
pub fn read_all(log: &Log, from: i64) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut next = from;
    let end = log.log_end_offset();
    while next < end {
        let read = log.read(next, ReadLimits::bytes(64 << 10)).unwrap();
        if read.bytes.is_empty() {
            break;
        }
        for (_, header, bytes) in read.batches() {
            chorus_storage::batch::for_each_record(bytes, 64 << 20, |r| {
                let offset = header.base_offset + r.offset_delta as i64;
                if offset >= next {
                    out.push(Rec {
                        offset,
                        key: r.key.map(<[u8]>::to_vec),
                        value: r.value.map(<[u8]>::to_vec),
                        timestamp: header.base_timestamp + r.timestamp_delta,
                    });
                }
            })
            .unwrap();
            next = header.next_offset();
        }
    }
    out
}

/// Offsets of every record from `from` on.
pub fn offsets(log: &Log, from: i64) -> Vec<i64> {
    read_all(log, from).into_iter().map(|r| r.offset).collect()
}
