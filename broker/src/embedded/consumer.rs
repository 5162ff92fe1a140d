//! An in-process consumer-group member: a KIP-848 member of the coordinator that reads its
//! partitions straight from the logs.
//!
//! A background task heartbeats at the interval the coordinator asks for, so a plugin that
//! takes its time between polls keeps its partitions. The task applies each new assignment
//! at once: a revoked partition stops being read and the next heartbeat reports it gone,
//! which is what lets the coordinator hand it to another member. Delivery is at least once:
//! records polled but not committed before a partition moves are read again by its next
//! owner.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chorus_chat::log::{BoxFuture, Consumed, GroupConsumer, GroupOptions, LogError, StartFrom};
use chorus_coordinator::assignor::MemberAssignment;
use chorus_coordinator::{
    CommitPartition, CommitRequest, ConsumerHeartbeat, ConsumerHeartbeatResponse, GroupError,
};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::{log_error, read_records, EmbeddedLog, TAIL_BYTES};
use crate::error::BrokerError;
use crate::partition::Partition;

/// Bytes one poll reads at most (at least one batch when there is one).
const MAX_POLL_BYTES: usize = 1 << 20;
/// How long a member may take to give up revoked partitions (it does so at once).
const REBALANCE_TIMEOUT_MS: i32 = 30_000;
/// Pause before retrying a heartbeat the coordinator could not take.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Commits retried when they race a heartbeat that moves the member epoch.
const COMMIT_ATTEMPTS: usize = 5;

type TopicPartition = (String, i32);

/// What the member knows of itself; shared with the heartbeat task.
#[derive(Debug, Default)]
struct Member {
    member_id: String,
    epoch: i32,
    owned: BTreeSet<TopicPartition>,
}

/// A group member inside the process. Dropping it leaves the group in the background;
/// [`GroupConsumer::close`] leaves and waits.
#[derive(Debug)]
pub struct EmbeddedConsumer {
    log: EmbeddedLog,
    options: GroupOptions,
    member: Arc<Mutex<Member>>,
    /// Bumped whenever the assignment changes.
    changes: watch::Receiver<u64>,
    /// Next offset to read per owned partition.
    positions: HashMap<TopicPartition, i64>,
    /// Where the next poll starts in the owned list, so no partition starves the others.
    rotation: usize,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl EmbeddedConsumer {
    /// Joins the group (the first heartbeat is made here, so a bad subscription fails now)
    /// and starts heartbeating.
    pub async fn join(log: EmbeddedLog, options: GroupOptions) -> Result<Self, LogError> {
        let member = Arc::new(Mutex::new(Member::default()));
        let (bump, changes) = watch::channel(0u64);
        let first = heartbeat(&log, &options, &member, &bump)
            .await?
            .map_err(|e| group_error(&options.group_id, e))?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(keep_membership(
            log.clone(),
            options.clone(),
            member.clone(),
            bump,
            Duration::from_millis(first.heartbeat_interval_ms.max(1) as u64),
            stopped,
        ));
        tracing::debug!(group = %options.group_id, member = %first.member_id, "in-process consumer joined");
        Ok(EmbeddedConsumer {
            log,
            options,
            member,
            changes,
            positions: HashMap::new(),
            rotation: 0,
            stop: Some(stop),
            task: Some(task),
        })
    }

    fn owned(&self) -> BTreeSet<TopicPartition> {
        self.member.lock().expect("member lock").owned.clone()
    }

    /// Starting positions for newly assigned partitions: the group's committed offset, or
    /// the log's start or end.
    async fn position_new(&mut self, owned: &BTreeSet<TopicPartition>) -> Result<(), LogError> {
        let fresh: Vec<TopicPartition> = owned
            .iter()
            .filter(|tp| !self.positions.contains_key(*tp))
            .cloned()
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let group = self.options.group_id.clone();
        let wanted: Vec<(String, Vec<i32>)> =
            fresh.iter().map(|(t, p)| (t.clone(), vec![*p])).collect();
        let committed = self
            .log
            .broker
            .groups
            .call(move |r| r.coordinator.fetch_offsets(&group, Some(&wanted)))
            .await
            .map_err(|e| LogError::Backend(Box::new(e)))?;
        for fetched in committed {
            let tp = (fetched.topic, fetched.partition);
            let position = match fetched.committed {
                Some(c) => c.offset,
                None => self.reset_position(&tp)?,
            };
            self.positions.insert(tp, position);
        }
        Ok(())
    }

    fn reset_position(&self, (topic, partition): &TopicPartition) -> Result<i64, LogError> {
        let p = self
            .log
            .broker
            .partition(topic, *partition)
            .map_err(|e| log_error(e, topic, *partition))?;
        Ok(match self.options.start_from {
            StartFrom::Earliest => p.log.log_start_offset(),
            StartFrom::Latest => p.log.log_end_offset(),
        })
    }

    async fn poll_inner(&mut self, wait: Duration) -> Result<Vec<Consumed>, LogError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.changes.borrow_and_update();
            let owned = self.owned();
            self.positions.retain(|tp, _| owned.contains(tp));
            self.position_new(&owned).await?;
            let mut order: Vec<TopicPartition> = owned.into_iter().collect();
            if !order.is_empty() {
                let start = self.rotation % order.len();
                order.rotate_left(start);
                self.rotation = self.rotation.wrapping_add(1);
            }
            let mut partitions = Vec::with_capacity(order.len());
            for (topic, index) in &order {
                partitions.push(
                    self.log
                        .broker
                        .partition(topic, *index)
                        .map_err(|e| log_error(e, topic, *index))?,
                );
            }
            // Watches first, so an append between the read and the wait still wakes us.
            let mut watches: Vec<_> = partitions.iter().map(|p| p.subscribe()).collect();
            for w in &mut watches {
                w.borrow_and_update();
            }
            let jobs: Vec<_> = partitions
                .iter()
                .map(|p| (p.clone(), self.positions[&(p.topic.clone(), p.index)]))
                .collect();
            // Members following the end read on this task; catching up is for a blocking
            // thread.
            let read = if jobs.iter().all(|(p, at)| p.log.is_tail(*at, TAIL_BYTES)) {
                read_all(jobs)
            } else {
                self.log.blocking(move |_| Ok(read_all(jobs))).await?
            };
            let mut records = Vec::new();
            for (tp, result) in order.iter().zip(read) {
                match result {
                    Ok(found) => {
                        if let Some(last) = found.last() {
                            self.positions.insert(tp.clone(), last.offset + 1);
                        }
                        records.extend(found);
                    }
                    Err(LogError::OffsetOutOfRange { start, end, .. }) => {
                        // Retention moved the start past us, or the log was truncated.
                        let to = match self.options.start_from {
                            StartFrom::Earliest => start,
                            StartFrom::Latest => end,
                        };
                        tracing::warn!(group = %self.options.group_id, topic = %tp.0, partition = tp.1, to, "position out of range; reset");
                        self.positions.insert(tp.clone(), to);
                    }
                    Err(e) => return Err(e),
                }
            }
            if !records.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(records);
            }
            let mut woken: FuturesUnordered<_> = watches.iter_mut().map(|w| w.changed()).collect();
            let changes = &mut self.changes;
            let timed_out = tokio::select! {
                _ = woken.next(), if !woken.is_empty() => false,
                _ = changes.changed() => false,
                _ = tokio::time::sleep_until(deadline) => true,
            };
            if timed_out {
                return Ok(Vec::new());
            }
        }
    }

    async fn commit_inner(&mut self, offsets: &[(String, i32, i64)]) -> Result<(), LogError> {
        let group = self.options.group_id.clone();
        for (topic, partition, offset) in offsets {
            let p = self
                .log
                .broker
                .partition(topic, *partition)
                .map_err(|e| log_error(e, topic, *partition))?;
            let (start, end) = (p.log.log_start_offset(), p.log.log_end_offset());
            if !(0..=end).contains(offset) {
                return Err(LogError::OffsetOutOfRange {
                    topic: topic.clone(),
                    partition: *partition,
                    requested: *offset,
                    start,
                    end,
                });
            }
        }
        let partitions: Vec<CommitPartition> = offsets
            .iter()
            .map(|(topic, partition, offset)| CommitPartition {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                leader_epoch: -1,
                metadata: String::new(),
            })
            .collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (member_id, epoch) = {
                let m = self.member.lock().expect("member lock");
                (m.member_id.clone(), m.epoch)
            };
            let req = CommitRequest {
                group_id: group.clone(),
                generation: epoch,
                member_id,
                instance_id: None,
                offsets: partitions.clone(),
            };
            let outcome = self
                .log
                .broker
                .groups
                .call(move |r| r.coordinator.commit_offsets(r.now, req, r.fx))
                .await
                .map_err(|e| LogError::Backend(Box::new(e)))?;
            let failure = match outcome {
                Ok(results) => results.into_iter().find_map(Result::err),
                Err(e) => Some(e),
            };
            match failure {
                None => return Ok(()),
                // A heartbeat moved the epoch meanwhile; the next try carries the new one.
                Some(GroupError::StaleMemberEpoch { .. }) if attempt < COMMIT_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Some(e) => return Err(group_error(&group, e)),
            }
        }
    }
}

fn record_size(r: &chorus_chat::log::Record) -> usize {
    r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len()) + 16
}

fn group_error(group: &str, e: GroupError) -> LogError {
    LogError::Group {
        group: group.to_string(),
        source: Box::new(e),
    }
}

impl GroupConsumer for EmbeddedConsumer {
    fn member_id(&self) -> String {
        self.member.lock().expect("member lock").member_id.clone()
    }

    fn assignment(&self) -> Vec<(String, i32)> {
        self.owned().into_iter().collect()
    }

    fn poll(&mut self, wait: Duration) -> BoxFuture<'_, Result<Vec<Consumed>, LogError>> {
        Box::pin(self.poll_inner(wait))
    }

    fn commit<'a>(
        &'a mut self,
        offsets: &'a [(String, i32, i64)],
    ) -> BoxFuture<'a, Result<(), LogError>> {
        Box::pin(self.commit_inner(offsets))
    }

    fn close(mut self: Box<Self>) -> BoxFuture<'static, Result<(), LogError>> {
        let stop = self.stop.take();
        let task = self.task.take();
        Box::pin(async move {
            if let Some(stop) = stop {
                let _ = stop.send(());
            }
            if let Some(task) = task {
                let _ = task.await;
            }
            Ok(())
        })
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        // The task leaves the group on its own once told to stop.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One heartbeat with what the member owns now; applies the answer. The outer error is
/// the coordinator being unreachable, the inner one its refusal.
async fn heartbeat(
    log: &EmbeddedLog,
    options: &GroupOptions,
    member: &Mutex<Member>,
    bump: &watch::Sender<u64>,
) -> Result<Result<ConsumerHeartbeatResponse, GroupError>, LogError> {
    let beat = {
        let m = member.lock().expect("member lock");
        let mut owned = MemberAssignment::new();
        for (topic, partition) in &m.owned {
            owned.entry(topic.clone()).or_default().push(*partition);
        }
        ConsumerHeartbeat {
            group_id: options.group_id.clone(),
            member_id: m.member_id.clone(),
            member_epoch: m.epoch,
            instance_id: None,
            rack_id: None,
            client_id: options.client_id.clone(),
            client_host: "in-process".to_string(),
            rebalance_timeout_ms: REBALANCE_TIMEOUT_MS,
            topic_names: (m.epoch == 0).then(|| options.topics.clone()),
            topic_regex: None,
            server_assignor: None,
            owned: Some(owned),
        }
    };
    let counts = log
        .broker
        .logs
        .topics()
        .into_iter()
        .map(|t| (t.name, t.partitions as i32))
        .collect();
    let answer = log
        .broker
        .groups
        .call(move |r| r.coordinator.consumer_heartbeat(r.now, beat, &counts, r.fx))
        .await
        .map_err(|e: BrokerError| LogError::Backend(Box::new(e)))?;
    if let Ok(r) = &answer {
        let mut m = member.lock().expect("member lock");
        m.member_id.clone_from(&r.member_id);
        m.epoch = r.member_epoch;
        if let Some(assignment) = &r.assignment {
            m.owned = assignment
                .iter()
                .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
                .collect();
            drop(m);
            bump.send_modify(|n| *n += 1);
        }
    }
    Ok(answer)
}

/// The heartbeat task: beat at the coordinator's interval until told to stop, rejoining
/// when fenced; then leave.
async fn keep_membership(
    log: EmbeddedLog,
    options: GroupOptions,
    member: Arc<Mutex<Member>>,
    bump: watch::Sender<u64>,
    mut interval: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut stop => break,
        }
        match heartbeat(&log, &options, &member, &bump).await {
            Ok(Ok(r)) => interval = Duration::from_millis(r.heartbeat_interval_ms.max(1) as u64),
            Ok(Err(
                e @ (GroupError::UnknownMemberId { .. } | GroupError::FencedMemberEpoch { .. }),
            )) => {
                // Our place is gone (session expired, or the broker restarted): give up
                // what we held and rejoin at once with the same member id.
                tracing::info!(group = %options.group_id, error = %e, "in-process consumer fenced; rejoining");
                {
                    let mut m = member.lock().expect("member lock");
                    m.epoch = 0;
                    m.owned.clear();
                }
                bump.send_modify(|n| *n += 1);
                interval = Duration::ZERO;
            }
            Ok(Err(e)) => {
                tracing::warn!(group = %options.group_id, error = %e, "in-process consumer heartbeat refused");
                interval = RETRY_PAUSE;
            }
            Err(e) => {
                tracing::debug!(group = %options.group_id, error = %e, "coordinator unavailable for a heartbeat");
                interval = RETRY_PAUSE;
            }
        }
    }
    let leaving = {
        let mut m = member.lock().expect("member lock");
        m.owned.clear();
        m.epoch != 0
    };
    if leaving {
        member.lock().expect("member lock").epoch = -1;
        let _ = heartbeat(&log, &options, &member, &bump).await;
    }
}

/// Reads each partition from its position, within [`MAX_POLL_BYTES`] in all.
fn read_all(jobs: Vec<(Arc<Partition>, i64)>) -> Vec<Result<Vec<Consumed>, LogError>> {
    let mut budget = MAX_POLL_BYTES;
    let mut out = Vec::new();
    for (p, position) in jobs {
        if budget == 0 {
            break;
        }
        match read_records(&p, position, budget) {
            Ok(records) => {
                budget =
                    budget.saturating_sub(records.iter().map(|c| record_size(&c.record)).sum());
                out.push(Ok(records));
            }
            Err(e) => out.push(Err(e)),
        }
    }
    out
}
