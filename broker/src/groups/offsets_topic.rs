//! `__consumer_offsets`: where the coordinator's records live. A compacted topic whose
//! partition for a group is Kafka's `abs(java_hash(group)) % partitions`; each record's key
//! and value are encoded by `chorus_coordinator::record`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chorus_coordinator::{Coordinator, Millis, Record};
use chorus_storage::batch::{self, BatchBuilder, NewRecord};
use chorus_storage::log::ReadLimits;
use chorus_storage::{LogError, LogManager};

use crate::error::{BrokerError, Result};
use crate::partition::Partition;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Records per batch are capped so a batch stays well under `max.message.bytes`.
const BATCH_BYTES: usize = 256 << 10;

/// Creates the topic on first start (compacted, `partitions` partitions). Blocking.
pub fn ensure_topic(logs: &LogManager, partitions: u32) -> Result<u32> {
    if let Some(meta) = logs.topic(OFFSETS_TOPIC) {
        return Ok(meta.partitions);
    }
    let configs = BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("segment.bytes".to_string(), (100u64 << 20).to_string()),
    ]);
    match logs.create_topic(OFFSETS_TOPIC, partitions, configs) {
        Ok(meta) => Ok(meta.partitions),
        Err(LogError::TopicExists { .. }) => Ok(logs
            .topic(OFFSETS_TOPIC)
            .map_or(partitions, |m| m.partitions)),
        Err(e) => Err(e.into()),
    }
}

/// Kafka's choice of offsets partition for a group: Java's `String.hashCode`, made
/// non-negative, modulo the partition count. Keeping it means the same group lands on the
/// same partition number as in Kafka.
pub fn partition_for(group: &str, partitions: usize) -> usize {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    // Kafka's Utils.abs maps i32::MIN to 0 rather than overflowing.
    let non_negative = if h == i32::MIN { 0 } else { h.abs() };
    non_negative as usize % partitions.max(1)
}

/// An encoded record: key and value (`None`: tombstone).
type KeyValue = (Vec<u8>, Option<Vec<u8>>);

/// Appends `records` to their groups' partitions and waits for the durability the topic's
/// flush policy asks for. Blocking.
pub fn persist(partitions: &[Arc<Partition>], records: &[Record], now: Millis) -> Result<()> {
    let mut per_partition: BTreeMap<usize, Vec<KeyValue>> = BTreeMap::new();
    for r in records {
        per_partition
            .entry(partition_for(r.group(), partitions.len()))
            .or_default()
            .push((r.encode_key(), r.encode_value()));
    }
    for (index, entries) in per_partition {
        let partition = &partitions[index];
        let mut builder = BatchBuilder::new();
        let mut size = 0;
        for (key, value) in &entries {
            size += key.len() + value.as_ref().map_or(0, Vec::len) + 16;
            builder.push(NewRecord::new(Some(key), value.as_deref(), now));
            if size >= BATCH_BYTES {
                append(partition, &builder)?;
                builder = BatchBuilder::new();
                size = 0;
            }
        }
        if !builder.is_empty() {
            append(partition, &builder)?;
        }
    }
    Ok(())
}

fn append(partition: &Partition, builder: &BatchBuilder) -> Result<()> {
    let batch = builder
        .build()
        .map_err(|_| BrokerError::Internal("could not encode a coordinator batch"))?;
    let outcome = partition.append(&batch)?;
    partition.flush_as_policy_requires(&outcome)
}

/// Feeds every record of every partition, oldest first, to the coordinator. Records that
/// cannot be read are logged and skipped: one bad record must not keep the broker down.
/// Blocking. Returns how many records were applied.
pub fn replay(partitions: &[Arc<Partition>], coordinator: &mut Coordinator) -> Result<u64> {
    let mut applied = 0u64;
    for partition in partitions {
        let log = &partition.log;
        let mut offset = log.log_start_offset();
        let end = log.log_end_offset();
        while offset < end {
            let read = log.read(offset, ReadLimits::bytes(4 << 20))?;
            let mut progressed = false;
            for (_, header, bytes) in read.batches() {
                progressed = true;
                let batch_base = header.base_offset;
                offset = header.next_offset();
                if header.is_control() {
                    continue;
                }
                let result = batch::for_each_record(bytes, 64 << 20, |record| {
                    if batch_base + i64::from(record.offset_delta) < log.log_start_offset() {
                        return;
                    }
                    match Record::decode(record.key, record.value) {
                        Ok(r) => {
                            coordinator.replay(r);
                            applied += 1;
                        }
                        Err(e) => tracing::warn!(
                            partition = partition.index,
                            offset = batch_base + i64::from(record.offset_delta),
                            error = %e,
                            "skipping an unreadable __consumer_offsets record"
                        ),
                    }
                });
                if let Err(e) = result {
                    tracing::warn!(partition = partition.index, offset = batch_base, error = %e, "skipping an unreadable __consumer_offsets batch");
                }
            }
            if !progressed {
                break;
            }
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::partition_for;

    #[test]
    fn partitions_match_kafkas_java_hash() {
        // Java: "my-group".hashCode() == -1906497762, so abs % 50 == 12.
        assert_eq!(partition_for("my-group", 50), 12);
        assert_eq!(partition_for("", 50), 0);
        assert!(partition_for("ünïcödé-group", 7) < 7);
    }
}
