//! Which offsets a consumer may commit: per partition, everything below the oldest record
//! still being worked on. Records finish out of order (a conversation that is retrying does
//! not hold up the others), so a commit never passes one that is not done; a crash then
//! re-delivers it instead of losing it.

use std::collections::BTreeSet;

use crate::HashMap;

#[derive(Debug, Default)]
struct Partition {
    /// Offsets handed out and not yet done.
    pending: BTreeSet<i64>,
    /// One past the highest offset seen.
    next: i64,
    /// What was last committed (or -1).
    committed: i64,
}

#[derive(Debug, Default)]
pub struct Progress {
    /// Topic -> partition -> its progress (looked up by `&str`, without a key to build,
    /// twice per record).
    topics: HashMap<String, HashMap<i32, Partition>>,
}

impl Progress {
    /// A record at `offset` is being worked on.
    pub fn start(&mut self, topic: &str, partition: i32, offset: i64) {
        let p = self.partition(topic, partition);
        p.pending.insert(offset);
        p.next = p.next.max(offset + 1);
    }

    /// A record at `offset` was done as soon as it was seen (skipped): as [`Progress::start`]
    /// and [`Progress::finish`] together, without the pending set.
    pub fn pass(&mut self, topic: &str, partition: i32, offset: i64) {
        let p = self.partition(topic, partition);
        p.next = p.next.max(offset + 1);
    }

    fn partition(&mut self, topic: &str, partition: i32) -> &mut Partition {
        if !self.topics.contains_key(topic) {
            self.topics.insert(topic.to_string(), HashMap::default());
        }
        self.topics
            .get_mut(topic)
            .expect("just added")
            .entry(partition)
            .or_insert_with(|| Partition {
                committed: -1,
                ..Partition::default()
            })
    }

    /// The record at `offset` is delivered or dead-lettered.
    pub fn finish(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(p) = self
            .topics
            .get_mut(topic)
            .and_then(|t| t.get_mut(&partition))
        {
            p.pending.remove(&offset);
        }
    }

    /// Records not yet done, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.topics
            .values()
            .flat_map(HashMap::values)
            .map(|p| p.pending.len())
            .sum()
    }

    /// Per partition this member owns, the next offset to consume where that moved since
    /// the last call: what to commit now.
    pub fn take_commits(&mut self, owned: &[(String, i32)]) -> Vec<(String, i32, i64)> {
        let mut out = Vec::new();
        for (topic, partitions) in &mut self.topics {
            for (partition, p) in partitions {
                if !owned.iter().any(|(t, n)| t == topic && n == partition) {
                    continue;
                }
                let safe = p.pending.first().copied().unwrap_or(p.next);
                if safe > p.committed {
                    p.committed = safe;
                    out.push((topic.clone(), *partition, safe));
                }
            }
        }
        out.sort();
        out
    }

    /// Forgets partitions this member no longer owns once nothing of them is pending (the
    /// new owner commits them from now on). A partition with records still pending is
    /// kept, so if it comes back, its commits still stop below them.
    pub fn retain(&mut self, owned: &[(String, i32)]) {
        for (topic, partitions) in &mut self.topics {
            partitions.retain(|partition, p| {
                owned.iter().any(|(t, n)| t == topic && n == partition) || !p.pending.is_empty()
            });
        }
        self.topics.retain(|_, partitions| !partitions.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_stop_below_the_oldest_unfinished_record() {
        let mut p = Progress::default();
        for o in 10..15 {
            p.start("t", 0, o);
        }
        p.start("t", 1, 3);
        let both = [("t".to_string(), 0), ("t".to_string(), 1)];
        // Where the records start is safe to commit (it is where the group already was).
        assert_eq!(
            p.take_commits(&both),
            [("t".to_string(), 0, 10), ("t".to_string(), 1, 3)]
        );
        p.finish("t", 0, 11);
        p.finish("t", 0, 12);
        assert_eq!(p.in_flight(), 4);
        // 10 is still being worked on: partition 0 may not move past it.
        assert!(p.take_commits(&both).is_empty());
        p.finish("t", 0, 10);
        assert_eq!(p.take_commits(&both), [("t".to_string(), 0, 13)]);
        assert!(
            p.take_commits(&both).is_empty(),
            "an unchanged position is not committed again"
        );
        p.finish("t", 0, 13);
        p.finish("t", 0, 14);
        p.finish("t", 1, 3);
        assert_eq!(
            p.take_commits(&both),
            [("t".to_string(), 0, 15), ("t".to_string(), 1, 4)]
        );
        assert_eq!(p.in_flight(), 0);
        // Partition 0 moves away with a record pending: it is neither committed nor
        // forgotten, so if it comes back its commits still stop below that record.
        p.start("t", 0, 15);
        let only_1 = [("t".to_string(), 1)];
        p.retain(&only_1);
        p.start("t", 0, 16);
        p.finish("t", 0, 16);
        assert!(p.take_commits(&only_1).is_empty());
        p.retain(&both);
        assert!(p.take_commits(&both).is_empty(), "15 is still pending");
        p.finish("t", 0, 15);
        p.retain(&only_1);
        assert_eq!(p.in_flight(), 0);
        p.start("t", 0, 20);
        p.finish("t", 0, 20);
        // Forgotten once nothing was pending: it starts afresh.
        assert_eq!(p.take_commits(&both), [("t".to_string(), 0, 21)]);
    }

    #[test]
    fn a_passed_record_moves_the_commit_only_up_to_what_is_pending() {
        let mut p = Progress::default();
        let owned = [("t".to_string(), 0)];
        p.pass("t", 0, 5);
        assert_eq!(p.in_flight(), 0);
        assert_eq!(p.take_commits(&owned), [("t".to_string(), 0, 6)]);
        p.start("t", 0, 6);
        p.pass("t", 0, 7);
        p.pass("t", 0, 8);
        assert!(p.take_commits(&owned).is_empty(), "6 is still pending");
        p.finish("t", 0, 6);
        assert_eq!(p.take_commits(&owned), [("t".to_string(), 0, 9)]);
    }
}
