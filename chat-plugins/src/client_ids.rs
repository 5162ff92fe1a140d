//! The client ids (sender, msg_id) a partition of `chat.messages` remembers, so a retry of
//! a message is answered with the original instead of being sent twice.
//!
//! A partition remembers up to [`MSG_ID_MEMORY`] of them, 1.6 million over the default
//! eight partitions, so each is held in one small allocation: its two texts joined by a
//! byte that UTF-8 never uses (0xFF), which keeps the pair unambiguous (no sender text can
//! hold the separator, so there is one place to split). The order they are forgotten in
//! keeps only the hash and the offset of each, and finds the entry again by them (offsets
//! are unique within a partition).

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};

use hashbrown::HashTable;

use crate::messages::{MSG_ID_MEMORY, MSG_ID_WINDOW_MS};

/// Separates the sender from the msg_id in a stored key; never part of a UTF-8 text.
const SEPARATOR: u8 = 0xFF;

/// A remembered message, for answering a retry of its msg_id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub sequence_number: u64,
    pub offset: i64,
    pub timestamp: i64,
}

#[derive(Debug)]
struct Remembered {
    /// The sender's text, [`SEPARATOR`], the msg_id's text.
    key: Box<[u8]>,
    sent: Sent,
}

impl Remembered {
    fn is(&self, sender: &str, msg_id: &str) -> bool {
        let (key, s, m) = (&self.key, sender.as_bytes(), msg_id.as_bytes());
        key.len() == s.len() + 1 + m.len()
            && key.starts_with(s)
            && key[s.len()] == SEPARATOR
            && key.ends_with(m)
    }

    /// The two texts, as bytes.
    fn parts(&self) -> (&[u8], &[u8]) {
        let at = self
            .key
            .iter()
            .position(|&b| b == SEPARATOR)
            .expect("a stored key holds the separator");
        (&self.key[..at], &self.key[at + 1..])
    }
}

/// The client ids of one partition, oldest forgotten first.
#[derive(Debug, Default)]
pub struct ClientIds {
    /// Keyed at random per table, like std's maps, so ids a client picks cannot be made
    /// to collide.
    hasher: ahash::RandomState,
    table: HashTable<Remembered>,
    /// (hash, offset, timestamp) of each remembered id, in the order taken in.
    order: VecDeque<(u64, i64, i64)>,
    /// The newest message timestamp taken in (the log's clock for forgetting).
    newest: i64,
}

/// The hash of a pair, the same whether its texts come from a lookup or a stored key.
fn hash(hasher: &ahash::RandomState, sender: &[u8], msg_id: &[u8]) -> u64 {
    let mut h = hasher.build_hasher();
    h.write(sender);
    h.write_u8(SEPARATOR);
    h.write(msg_id);
    h.finish()
}

impl ClientIds {
    /// The remembered message of `sender`'s `msg_id`.
    pub fn get(&self, sender: &str, msg_id: &str) -> Option<Sent> {
        let hash = hash(&self.hasher, sender.as_bytes(), msg_id.as_bytes());
        self.table
            .find(hash, |r| r.is(sender, msg_id))
            .map(|r| r.sent)
    }

    /// Remembers `sender`'s `msg_id` (not remembered yet: the caller asked [`Self::get`]
    /// first), then forgets the ids that fell out of the window or beyond the memory.
    pub fn insert(&mut self, sender: &str, msg_id: &str, sent: Sent) {
        let hash = hash(&self.hasher, sender.as_bytes(), msg_id.as_bytes());
        let mut key = Vec::with_capacity(sender.len() + 1 + msg_id.len());
        key.extend_from_slice(sender.as_bytes());
        key.push(SEPARATOR);
        key.extend_from_slice(msg_id.as_bytes());
        let hasher = &self.hasher;
        self.table.insert_unique(
            hash,
            Remembered {
                key: key.into_boxed_slice(),
                sent,
            },
            |r| {
                let (s, m) = r.parts();
                self::hash(hasher, s, m)
            },
        );
        self.order.push_back((hash, sent.offset, sent.timestamp));
        self.newest = self.newest.max(sent.timestamp);
        while let Some(&(hash, offset, timestamp)) = self.order.front() {
            let expired = timestamp < self.newest - MSG_ID_WINDOW_MS;
            if !expired && self.order.len() <= MSG_ID_MEMORY {
                break;
            }
            self.order.pop_front();
            if let Ok(gone) = self.table.find_entry(hash, |r| r.sent.offset == offset) {
                gone.remove();
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(offset: i64, timestamp: i64) -> Sent {
        Sent {
            sequence_number: offset as u64 + 1,
            offset,
            timestamp,
        }
    }

    #[test]
    fn a_pair_is_found_by_both_texts_and_only_by_them() {
        let mut ids = ClientIds::default();
        ids.insert("alice", "m1", sent(0, 1_000));
        ids.insert("ali", "cem1", sent(1, 1_000));
        ids.insert("", "x", sent(2, 1_000));
        assert_eq!(ids.get("alice", "m1"), Some(sent(0, 1_000)));
        assert_eq!(ids.get("ali", "cem1"), Some(sent(1, 1_000)));
        assert_eq!(ids.get("", "x"), Some(sent(2, 1_000)));
        // The same bytes split elsewhere are another pair.
        assert_eq!(ids.get("alicem1", ""), None);
        assert_eq!(ids.get("alice", "m"), None);
        assert_eq!(ids.get("bob", "m1"), None);
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn ids_out_of_the_window_are_forgotten_oldest_first() {
        let mut ids = ClientIds::default();
        ids.insert("alice", "m1", sent(0, 1_000));
        ids.insert("alice", "m2", sent(1, 2_000));
        // The log's clock passes m1's hour, not m2's.
        ids.insert("alice", "m3", sent(2, 1_001 + MSG_ID_WINDOW_MS));
        assert_eq!(ids.get("alice", "m1"), None);
        assert_eq!(ids.get("alice", "m2"), Some(sent(1, 2_000)));
        assert_eq!(ids.len(), 2);
        // An older timestamp does not turn the clock back.
        ids.insert("alice", "m4", sent(3, 5));
        assert_eq!(ids.get("alice", "m2"), Some(sent(1, 2_000)));
        assert_eq!(ids.get("alice", "m4"), Some(sent(3, 5)));
    }

    #[test]
    fn the_table_keeps_its_entries_through_growth() {
        let mut ids = ClientIds::default();
        for i in 0..10_000i64 {
            ids.insert(&format!("user{}", i % 7), &i.to_string(), sent(i, 1_000));
        }
        for i in 0..10_000i64 {
            assert_eq!(
                ids.get(&format!("user{}", i % 7), &i.to_string()),
                Some(sent(i, 1_000))
            );
        }
    }
}
