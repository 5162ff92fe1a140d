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
//! bookkeeping after it. Several tasks may be spawned for one batch; the first to get the
//! partition's turn writes it and the others find the queue empty.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;

use tokio::sync::{Mutex as TurnLock, MutexGuard};

/// Weight a batch stops growing at (a first group is always taken whole).
pub const BATCH_BUDGET: usize = 512 << 10;

/// Per-partition queues of pending writes and each partition's writer turn.
#[derive(Debug)]
pub struct GroupQueue<Q> {
    queues: Vec<Mutex<VecDeque<Vec<Q>>>>,
    turns: Vec<TurnLock<()>>,
}

impl<Q> GroupQueue<Q> {
    pub fn new(partitions: i32) -> GroupQueue<Q> {
        let n = partitions.max(1) as usize;
        GroupQueue {
            queues: (0..n).map(|_| Mutex::new(VecDeque::new())).collect(),
            turns: (0..n).map(|_| TurnLock::new(())).collect(),
        }
    }

    /// Queues `group` on `partition`; its writes go into one append.
    pub fn push(&self, partition: i32, group: Vec<Q>) {
        if group.is_empty() {
            return;
        }
        self.queues[partition as usize]
            .lock()
            .expect("queue lock")
            .push_back(group);
    }

    /// Waits for `partition`'s writer turn: while it is held, nobody else appends there
    /// from this process.
    async fn turn(&self, partition: i32) -> MutexGuard<'_, ()> {
        self.turns[partition as usize].lock().await
    }

    /// Takes `partition`'s writer turn and hands `write` what is queued there, a batch at a
    /// time, until the queue is empty.
    pub async fn write_queued<F, Fut>(
        &self,
        partition: i32,
        weight: impl Fn(&Q) -> usize,
        mut write: F,
    ) where
        F: FnMut(Vec<Q>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let _turn = self.turn(partition).await;
        loop {
            let batch = self.next_batch(partition, &weight);
            if batch.is_empty() {
                return;
            }
            write(batch).await;
        }
    }

    /// Takes the next batch queued on `partition`: whole groups, in order, until their
    /// weight reaches [`BATCH_BUDGET`]. Empty when nothing is queued.
    fn next_batch(&self, partition: i32, weight: impl Fn(&Q) -> usize) -> Vec<Q> {
        let mut queue = self.queues[partition as usize].lock().expect("queue lock");
        let mut batch = Vec::new();
        let mut total = 0;
        while let Some(group) = queue.front() {
            let group_weight: usize = group.iter().map(&weight).sum();
            if !batch.is_empty() && total + group_weight > BATCH_BUDGET {
                break;
            }
            total += group_weight;
            batch.extend(queue.pop_front().expect("front exists"));
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
        q.push(1, vec![third, third]);
        q.push(1, vec![third, third]);
        q.push(1, vec![1]);
        q.push(0, vec![7]);
        // The second group would pass the budget: it waits for the next batch, whole.
        assert_eq!(q.next_batch(1, |w| *w), vec![third, third]);
        assert_eq!(q.next_batch(1, |w| *w), vec![third, third, 1]);
        assert!(q.next_batch(1, |w| *w).is_empty());
        assert_eq!(q.next_batch(0, |w| *w), vec![7]);
    }

    #[test]
    fn a_group_heavier_than_the_budget_is_still_taken_whole() {
        let q: GroupQueue<usize> = GroupQueue::new(1);
        q.push(0, vec![BATCH_BUDGET, BATCH_BUDGET]);
        q.push(0, vec![1]);
        assert_eq!(q.next_batch(0, |w| *w), vec![BATCH_BUDGET, BATCH_BUDGET]);
        assert_eq!(q.next_batch(0, |w| *w), vec![1]);
    }
}
