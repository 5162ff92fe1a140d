//! Group commit for the chat stores' appends: writes queue on their partition, and one
//! writer at a time appends everything queued there as a single batch, so concurrent
//! writers share one durable append instead of waiting for each other's.
//!
//! Writes are queued in groups. A group is never split between two appends, so the writes
//! of one group succeed or fail together (the forwarder relies on this to keep a
//! conversation in order when an append fails). A batch takes whole groups until their
//! weight (about their bytes) reaches a budget, so a batch stays well under the topic's
//! `max.message.bytes`.
//!
//! The writer is meant to run as its own task (`tokio::spawn`), so that a caller going
//! away (an HTTP client hanging up) cannot interrupt an append between the write and the
//! bookkeeping after it. A partition has at most one writer: [`GroupQueue::push`] says
//! when the caller has to start one, and a running writer takes whatever is queued behind
//! it before it ends, so a busy partition costs one task per run of appends rather than
//! one per write.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};

/// Weight a batch stops growing at (a first group is always taken whole).
pub const BATCH_BUDGET: usize = 512 << 10;

/// Per-partition queues of pending writes, and whether each has a writer.
#[derive(Debug)]
pub struct GroupQueue<Q> {
    lanes: Vec<Mutex<Lane<Q>>>,
}

#[derive(Debug)]
struct Lane<Q> {
    groups: VecDeque<Vec<Q>>,
    /// A writer is running, or was asked for: it will take what is queued.
    writer: bool,
}

/// Marks the lane writerless when its writer ends early (a panic in a write, or the task
/// dropped at shutdown), so the next push starts a new one. A writer that ends normally
/// does so when it finds the queue empty, under the same lock as the pushes
/// ([`GroupQueue::next_batch`]), so no group is left without a writer in between.
struct WriterGuard<'a, Q> {
    lane: &'a Mutex<Lane<Q>>,
    finished: bool,
}

impl<Q> Drop for WriterGuard<'_, Q> {
    fn drop(&mut self) {
        if !self.finished {
            if let Ok(mut lane) = self.lane.lock() {
                lane.writer = false;
            }
        }
    }
}

impl<Q> GroupQueue<Q> {
    pub fn new(partitions: i32) -> GroupQueue<Q> {
        let n = partitions.max(1) as usize;
        GroupQueue {
            lanes: (0..n)
                .map(|_| {
                    Mutex::new(Lane {
                        groups: VecDeque::new(),
                        writer: false,
                    })
                })
                .collect(),
        }
    }

    fn lane(&self, partition: i32) -> MutexGuard<'_, Lane<Q>> {
        self.lanes[partition as usize].lock().expect("queue lock")
    }

    /// Queues `group` on `partition`; its writes go into one append. True when the caller
    /// must start a writer ([`GroupQueue::write_queued`]) for the partition; false when
    /// one is running and will take the group.
    #[must_use = "a true answer means nobody will write the group unless the caller starts a writer"]
    pub fn push(&self, partition: i32, group: Vec<Q>) -> bool {
        if group.is_empty() {
            return false;
        }
        let mut lane = self.lane(partition);
        lane.groups.push_back(group);
        !std::mem::replace(&mut lane.writer, true)
    }

    /// The partition's writer: hands `write` what is queued there, a batch at a time, until
    /// the queue is empty. Only one runs per partition (the one a push asked for), so
    /// appends to a partition from this process never overlap.
    pub async fn write_queued<F, Fut>(
        &self,
        partition: i32,
        weight: impl Fn(&Q) -> usize,
        mut write: F,
    ) where
        F: FnMut(Vec<Q>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut guard = WriterGuard {
            lane: &self.lanes[partition as usize],
            finished: false,
        };
        loop {
            let batch = self.next_batch(partition, &weight);
            if batch.is_empty() {
                guard.finished = true;
                return;
            }
            write(batch).await;
        }
    }

    /// Takes the next batch queued on `partition`: whole groups, in order, until their
    /// weight reaches [`BATCH_BUDGET`]. Empty when nothing is queued, and then the
    /// partition has no writer any more: the next push asks for one.
    fn next_batch(&self, partition: i32, weight: impl Fn(&Q) -> usize) -> Vec<Q> {
        let mut lane = self.lane(partition);
        if lane.groups.is_empty() {
            lane.writer = false;
            return Vec::new();
        }
        let mut batch = Vec::new();
        let mut total = 0;
        while let Some(group) = lane.groups.front() {
            let group_weight: usize = group.iter().map(&weight).sum();
            if !batch.is_empty() && total + group_weight > BATCH_BUDGET {
                break;
            }
            total += group_weight;
            batch.extend(lane.groups.pop_front().expect("front exists"));
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_take_whole_groups_in_order_up_to_the_budget() {
        let q: GroupQueue<usize> = GroupQueue::new(2);
        let third = BATCH_BUDGET / 3;
        assert!(
            q.push(1, vec![third, third]),
            "the first push asks for a writer"
        );
        assert!(!q.push(1, vec![third, third]), "one is coming");
        assert!(!q.push(1, vec![1]));
        assert!(q.push(0, vec![7]), "partitions have their own writers");
        // The second group would pass the budget: it waits for the next batch, whole.
        assert_eq!(q.next_batch(1, |w| *w), vec![third, third]);
        assert_eq!(q.next_batch(1, |w| *w), vec![third, third, 1]);
        assert!(q.next_batch(1, |w| *w).is_empty());
        assert_eq!(q.next_batch(0, |w| *w), vec![7]);
    }

    #[tokio::test]
    async fn one_writer_takes_what_is_pushed_while_it_writes_and_the_next_push_after_it_starts_another(
    ) {
        let q: GroupQueue<u32> = GroupQueue::new(1);
        assert!(q.push(0, vec![1]));
        let mut batches = Vec::new();
        q.write_queued(
            0,
            |_| 1,
            |batch| {
                if batch == [1] {
                    assert!(!q.push(0, vec![2, 3]), "the running writer takes it");
                }
                batches.push(batch);
                async {}
            },
        )
        .await;
        assert_eq!(batches, vec![vec![1], vec![2, 3]]);
        assert!(
            q.push(0, vec![4]),
            "the writer ended: the next push asks for one"
        );
    }

    #[tokio::test]
    async fn a_writer_that_dies_leaves_the_partition_to_a_new_one() {
        let q: std::sync::Arc<GroupQueue<u32>> = std::sync::Arc::new(GroupQueue::new(1));
        assert!(q.push(0, vec![1]));
        let writer = q.clone();
        let died = tokio::spawn(async move {
            writer
                .write_queued(0, |_| 1, |_| async { panic!("a write failed badly") })
                .await;
        })
        .await;
        assert!(died.is_err());
        assert!(q.push(0, vec![2]), "nobody writes the partition any more");
    }

    #[test]
    fn a_group_heavier_than_the_budget_is_still_taken_whole() {
        let q: GroupQueue<usize> = GroupQueue::new(1);
        let _ = q.push(0, vec![BATCH_BUDGET, BATCH_BUDGET]);
        let _ = q.push(0, vec![1]);
        assert_eq!(q.next_batch(0, |w| *w), vec![BATCH_BUDGET, BATCH_BUDGET]);
        assert_eq!(q.next_batch(0, |w| *w), vec![1]);
    }
}
