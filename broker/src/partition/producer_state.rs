//! Idempotent producer state of one partition: for every producer id, its current epoch and
//! the last five batches it wrote (their sequence ranges and offsets), as Kafka keeps them.
//!
//! A batch is checked before it is appended:
//! - an older epoch than the producer's current one is fenced (`INVALID_PRODUCER_EPOCH`);
//! - a sequence range equal to one of the cached batches is a retry: it is acknowledged with
//!   the original offsets and not written again;
//! - otherwise the first sequence must follow the last one written (wrapping after
//!   `i32::MAX`), or be 0 for a new epoch; anything else is `OUT_OF_ORDER_SEQUENCE_NUMBER`, or
//!   `UNKNOWN_PRODUCER_ID` when the producer has no state here at all.
//!
//! The state is rebuilt from the batch headers in the log when the partition is first used,
//! so it survives restarts.

use std::collections::{HashMap, VecDeque};

use chorus_storage::batch::BatchHeader;

use crate::error::BrokerError;

/// Batches remembered per producer, as in Kafka.
pub const CACHED_BATCHES: usize = 5;

/// A batch an idempotent producer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenBatch {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, Default)]
struct Producer {
    epoch: i16,
    batches: VecDeque<WrittenBatch>,
}

/// The outcome of checking a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Append it.
    Append,
    /// A retry of a batch already written: answer with its offsets.
    Duplicate(WrittenBatch),
}

/// A batch's producer identity and sequence range, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchIdentity {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
}

impl BatchIdentity {
    /// `None` for batches from producers that are not idempotent.
    pub fn of(header: &BatchHeader) -> Option<Self> {
        if header.producer_id < 0 || header.base_sequence < 0 {
            return None;
        }
        Some(BatchIdentity {
            producer_id: header.producer_id,
            epoch: header.producer_epoch,
            first_seq: header.base_sequence,
            last_seq: wrap_add(header.base_sequence, header.last_offset_delta),
        })
    }
}

/// Sequence numbers wrap from `i32::MAX` to 0.
fn wrap_add(seq: i32, delta: i32) -> i32 {
    ((seq as i64 + delta as i64) % (i32::MAX as i64 + 1)) as i32
}

#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, Producer>,
}

impl ProducerStates {
    pub fn check(&self, id: &BatchIdentity) -> Result<Check, BrokerError> {
        let Some(p) = self.producers.get(&id.producer_id) else {
            if id.first_seq != 0 {
                return Err(BrokerError::UnknownProducerId {
                    producer_id: id.producer_id,
                    sequence: id.first_seq,
                });
            }
            return Ok(Check::Append);
        };
        if id.epoch < p.epoch {
            return Err(BrokerError::InvalidProducerEpoch {
                producer_id: id.producer_id,
                current: p.epoch,
                found: id.epoch,
            });
        }
        if id.epoch > p.epoch {
            if id.first_seq != 0 {
                return Err(BrokerError::OutOfOrderSequence {
                    producer_id: id.producer_id,
                    expected: 0,
                    found: id.first_seq,
                });
            }
            return Ok(Check::Append);
        }
        if let Some(b) = p
            .batches
            .iter()
            .find(|b| b.first_seq == id.first_seq && b.last_seq == id.last_seq)
        {
            return Ok(Check::Duplicate(*b));
        }
        let expected = p
            .batches
            .back()
            .map_or(0, |last| wrap_add(last.last_seq, 1));
        if id.first_seq != expected {
            return Err(BrokerError::OutOfOrderSequence {
                producer_id: id.producer_id,
                expected,
                found: id.first_seq,
            });
        }
        Ok(Check::Append)
    }

    /// Records a batch that was appended at `first_offset..=last_offset`.
    pub fn record(&mut self, id: &BatchIdentity, first_offset: i64, last_offset: i64) {
        let p = self.producers.entry(id.producer_id).or_default();
        if id.epoch != p.epoch {
            p.epoch = id.epoch;
            p.batches.clear();
        }
        if p.batches.len() == CACHED_BATCHES {
            p.batches.pop_front();
        }
        p.batches.push_back(WrittenBatch {
            first_seq: id.first_seq,
            last_seq: id.last_seq,
            first_offset,
            last_offset,
        });
    }

    /// Feeds a batch read back from the log while rebuilding.
    pub fn replay(&mut self, header: &BatchHeader) {
        if let Some(id) = BatchIdentity::of(header) {
            self.record(&id, header.base_offset, header.last_offset());
        }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(epoch: i16, first: i32, last: i32) -> BatchIdentity {
        BatchIdentity {
            producer_id: 7,
            epoch,
            first_seq: first,
            last_seq: last,
        }
    }

    #[test]
    fn sequences_must_follow_on_and_retries_are_duplicates() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(&id(0, 0, 4)).unwrap(), Check::Append);
        s.record(&id(0, 0, 4), 100, 104);
        assert_eq!(s.check(&id(0, 5, 9)).unwrap(), Check::Append);
        s.record(&id(0, 5, 9), 105, 109);
        // A retry of either batch is answered with its original offsets.
        assert_eq!(
            s.check(&id(0, 0, 4)).unwrap(),
            Check::Duplicate(WrittenBatch {
                first_seq: 0,
                last_seq: 4,
                first_offset: 100,
                last_offset: 104
            })
        );
        // A gap is out of order.
        assert!(matches!(
            s.check(&id(0, 12, 13)),
            Err(BrokerError::OutOfOrderSequence {
                expected: 10,
                found: 12,
                ..
            })
        ));
    }

    #[test]
    fn only_five_batches_are_remembered() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(&id(0, i, i), i as i64, i as i64);
        }
        assert!(matches!(
            s.check(&id(0, 0, 0)),
            Err(BrokerError::OutOfOrderSequence { .. })
        ));
        assert!(matches!(s.check(&id(0, 2, 2)), Ok(Check::Duplicate(_))));
    }

    #[test]
    fn epochs_fence_old_producers_and_reset_sequences() {
        let mut s = ProducerStates::default();
        s.record(&id(1, 0, 0), 0, 0);
        assert!(matches!(
            s.check(&id(0, 1, 1)),
            Err(BrokerError::InvalidProducerEpoch { current: 1, .. })
        ));
        assert!(matches!(
            s.check(&id(2, 3, 3)),
            Err(BrokerError::OutOfOrderSequence { .. })
        ));
        assert_eq!(s.check(&id(2, 0, 0)).unwrap(), Check::Append);
    }

    #[test]
    fn an_unknown_producer_must_start_at_zero_and_sequences_wrap() {
        let s = ProducerStates::default();
        assert!(matches!(
            s.check(&id(0, 3, 3)),
            Err(BrokerError::UnknownProducerId { .. })
        ));
        let mut s = ProducerStates::default();
        s.record(&id(0, i32::MAX - 1, i32::MAX), 0, 1);
        assert_eq!(s.check(&id(0, 0, 1)).unwrap(), Check::Append);
        assert_eq!(wrap_add(i32::MAX, 1), 0);
    }
}
