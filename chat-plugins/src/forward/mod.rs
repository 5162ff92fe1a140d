//! The idempotent forwarder: each delivery target (chat notifications, e-mail, CDC ingest)
//! is its own consumer group on the log, with its own policy.
//!
//! For every record the target makes a plan: nothing to do, a job, or a rejection (straight
//! to the dead-letter topic). Jobs with the same ordering key (a conversation, a user) run
//! one after another; different keys run at once, so one conversation that is retrying does
//! not hold up the others. A job whose dedup key the target delivered within its TTL is
//! skipped. A failed delivery is retried with exponential backoff; after the last retry the
//! record goes to the dead-letter topic with the reason. Offsets are committed only below
//! the oldest record not yet delivered or dead-lettered, so a crash re-delivers rather than
//! loses, and the dedup store keeps the re-delivery from repeating what was done.

pub mod dedup;
pub mod dlq;
pub mod email;
pub mod notify;
pub mod progress;
pub mod retry;

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::log::{BoxFuture, Consumed, GroupConsumer, GroupOptions, Log, StartFrom};
use crate::now_ms;
use dedup::DedupStore;
use dlq::DeadLetters;
use progress::Progress;
pub use retry::RetryPolicy;

/// Records waiting or being delivered before the forwarder stops polling for more.
const MAX_IN_FLIGHT: usize = 4096;
/// Longest a poll waits for records (also bounds how late a commit can be).
const POLL_WAIT: Duration = Duration::from_millis(200);
/// How often finished offsets are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(200);
/// Pause before rejoining after the group refused us, or re-polling after a failed poll.
const REJOIN_PAUSE: Duration = Duration::from_millis(500);

/// What a target does with one record.
#[derive(Debug)]
pub enum Plan<J> {
    /// Nothing for this target.
    Skip,
    /// The record cannot be handled (malformed, unmappable): dead-letter it at once.
    Reject(String),
    Deliver {
        /// Jobs with equal keys run in order, one at a time.
        order_key: String,
        /// Skip the job when this key was delivered within the TTL; mark it after.
        dedup: Option<(String, Duration)>,
        job: J,
    },
}

/// What a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Nothing had to be done after all (the user turned out to be online): not recorded
    /// in the dedup store, so a later record with the same key is still delivered.
    NotNeeded,
}

/// Why a delivery failed.
#[derive(Debug)]
pub enum Failure {
    /// Worth trying again after a pause (the relay is down, a queue was full).
    Retry(String),
    /// Trying again cannot help: dead-letter it now.
    Permanent(String),
}

/// One delivery target.
pub trait Target: Send + Sync + 'static {
    type Job: Send + Sync + 'static;

    /// Names the consumer group (`chorus.<name>`), the dedup keys and dead letters.
    fn name(&self) -> &str;

    /// The topics it consumes.
    fn topics(&self) -> Vec<String>;

    /// Where a new group starts. (Notifications and e-mail start at the beginning too, so
    /// nothing sent just after a fresh start is missed, and skip what is too old.)
    fn start_from(&self) -> StartFrom;

    fn plan(&self, record: &Consumed) -> Plan<Self::Job>;

    /// Delivers one job. A partial delivery is a failure: the whole job is retried.
    fn deliver<'a>(&'a self, job: &'a Self::Job) -> BoxFuture<'a, Result<Outcome, Failure>>;

    /// Called after a job was dead-lettered (chat delivery tells the affected clients to
    /// reconnect and catch up from history).
    fn dead_lettered(&self, _job: &Self::Job) {}
}

/// Counters of one target, shown on `/metrics`.
#[derive(Debug, Default)]
pub struct ForwardMetrics {
    pub delivered: AtomicU64,
    pub deduplicated: AtomicU64,
    pub retries: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub skipped: AtomicU64,
}

impl ForwardMetrics {
    fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text for target `name`.
    pub fn render(&self, name: &str, out: &mut String) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (metric, help, value) in [
            ("delivered", "Records delivered.", load(&self.delivered)),
            (
                "deduplicated",
                "Records skipped because they were delivered before.",
                load(&self.deduplicated),
            ),
            ("retries", "Delivery retries.", load(&self.retries)),
            (
                "dead_lettered",
                "Records sent to the dead-letter topic.",
                load(&self.dead_lettered),
            ),
            (
                "skipped",
                "Records with nothing to do for this target.",
                load(&self.skipped),
            ),
        ] {
            let full = format!("chorus_forward_{metric}_total");
            let _ = writeln!(
                out,
                "# HELP {full} {help}\n# TYPE {full} counter\n{full}{{target=\"{name}\"}} {value}"
            );
        }
    }
}

/// What every target's forwarder shares.
#[derive(Debug, Clone)]
pub struct Shared {
    pub log: Arc<dyn Log>,
    pub dedup: Arc<DedupStore>,
    pub dead_letters: Arc<DeadLetters>,
}

/// A record with what its plan says to do (never [`Plan::Skip`]), kept together for the
/// dead-letter topic.
struct Item<J> {
    record: Consumed,
    plan: Plan<J>,
}

impl<J> Item<J> {
    fn order_key(&self) -> Option<&str> {
        match &self.plan {
            Plan::Deliver { order_key, .. } => Some(order_key),
            Plan::Skip | Plan::Reject(_) => None,
        }
    }
}

/// A job finished (delivered, skipped as a duplicate, or dead-lettered).
struct Done {
    topic: String,
    partition: i32,
    offset: i64,
}

/// A running forwarder. Dropping the handle does not stop it; [`Running::stop`] does.
#[derive(Debug)]
pub struct Running {
    pub metrics: Arc<ForwardMetrics>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops polling, commits what finished, leaves the group, and waits (up to `wait`).
    /// Jobs still retrying are abandoned uncommitted, so the next run delivers them.
    pub async fn stop(self, wait: Duration) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(wait, self.task).await;
    }
}

/// Starts a forwarder for `target`.
pub fn start<T: Target>(target: Arc<T>, shared: Shared, policy: RetryPolicy) -> Running {
    let metrics = Arc::new(ForwardMetrics::default());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(target, shared, policy, metrics.clone(), stop_rx));
    Running {
        metrics,
        stop,
        task,
    }
}

async fn run<T: Target>(
    target: Arc<T>,
    shared: Shared,
    policy: RetryPolicy,
    metrics: Arc<ForwardMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let options = GroupOptions {
        group_id: format!("chorus.{}", target.name()),
        topics: target.topics(),
        start_from: target.start_from(),
        client_id: format!("chorus-{}", target.name()),
    };
    let mut consumer = loop {
        match shared.log.join_group(options.clone()).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(target = target.name(), error = %e, "cannot join the forwarder's group; retrying");
                if pause_or_stop(&mut stop, REJOIN_PAUSE).await {
                    return;
                }
            }
        }
    };
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let worker = Worker {
        target: target.clone(),
        shared: shared.clone(),
        policy,
        metrics: metrics.clone(),
        stop: stop.clone(),
        queues: Arc::new(Mutex::new(HashMap::new())),
        done_tx,
    };
    let mut progress = Progress::default();
    let mut last_commit = Instant::now();
    loop {
        while let Ok(done) = done_rx.try_recv() {
            progress.finish(&done.topic, done.partition, done.offset);
        }
        if *stop.borrow() {
            break;
        }
        if progress.in_flight() >= MAX_IN_FLIGHT {
            tokio::select! {
                Some(done) = done_rx.recv() => progress.finish(&done.topic, done.partition, done.offset),
                _ = stop.changed() => {}
            }
        } else {
            match consumer.poll(POLL_WAIT).await {
                Ok(records) => {
                    for record in records {
                        progress.start(&record.topic, record.partition, record.offset);
                        schedule(record, &target, &metrics, &mut progress, &worker);
                    }
                }
                Err(e) => {
                    tracing::warn!(target = target.name(), error = %e, "forwarder poll failed");
                    if pause_or_stop(&mut stop, REJOIN_PAUSE).await {
                        break;
                    }
                }
            }
        }
        if last_commit.elapsed() >= COMMIT_EVERY {
            last_commit = Instant::now();
            commit(consumer.as_mut(), &mut progress, target.name()).await;
        }
    }
    while let Ok(done) = done_rx.try_recv() {
        progress.finish(&done.topic, done.partition, done.offset);
    }
    commit(consumer.as_mut(), &mut progress, target.name()).await;
    if let Err(e) = consumer.close().await {
        tracing::debug!(target = target.name(), error = %e, "leaving the forwarder's group failed");
    }
}

async fn commit(consumer: &mut dyn GroupConsumer, progress: &mut Progress, name: &str) {
    let owned = consumer.assignment();
    progress.retain(&owned);
    let offsets = progress.take_commits(&owned);
    if offsets.is_empty() {
        return;
    }
    if let Err(e) = consumer.commit(&offsets).await {
        // The offsets are committed again with the next progress; until then a restart
        // re-delivers, which the dedup store absorbs.
        tracing::warn!(target = name, error = %e, "forwarder commit failed");
    }
}

/// True when the forwarder was told to stop during the pause.
async fn pause_or_stop(stop: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(pause) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

fn schedule<T: Target>(
    record: Consumed,
    target: &Arc<T>,
    metrics: &ForwardMetrics,
    progress: &mut Progress,
    worker: &Worker<T>,
) {
    let plan = target.plan(&record);
    if let Plan::Skip = plan {
        ForwardMetrics::inc(&metrics.skipped);
        progress.finish(&record.topic, record.partition, record.offset);
        return;
    }
    let item = Item { record, plan };
    if let Some(key) = item.order_key() {
        let mut queues = worker.queues.lock().expect("queues lock");
        if let Some(waiting) = queues.get_mut(key) {
            waiting.push_back(item);
            return;
        }
        queues.insert(key.to_string(), VecDeque::new());
    }
    worker.spawn(item);
}

/// Jobs waiting behind a running job with the same ordering key. The task running a key's
/// job takes the next one itself when it finishes, so a key's jobs follow each other at
/// once whatever the poll loop is doing.
type Queues<J> = Arc<Mutex<HashMap<String, VecDeque<Item<J>>>>>;

/// Runs jobs: dedup check, delivery with retries, dead letters.
struct Worker<T: Target> {
    target: Arc<T>,
    shared: Shared,
    policy: RetryPolicy,
    metrics: Arc<ForwardMetrics>,
    stop: watch::Receiver<bool>,
    queues: Queues<T::Job>,
    done_tx: mpsc::UnboundedSender<Done>,
}

impl<T: Target> Clone for Worker<T> {
    fn clone(&self) -> Self {
        Worker {
            target: self.target.clone(),
            shared: self.shared.clone(),
            policy: self.policy,
            metrics: self.metrics.clone(),
            stop: self.stop.clone(),
            queues: self.queues.clone(),
            done_tx: self.done_tx.clone(),
        }
    }
}

impl<T: Target> Worker<T> {
    /// Runs `item`, then the jobs queued behind it under the same key.
    fn spawn(&self, item: Item<T::Job>) {
        let mut worker = self.clone();
        tokio::spawn(async move {
            let mut item = item;
            loop {
                let done = Done {
                    topic: item.record.topic.clone(),
                    partition: item.record.partition,
                    offset: item.record.offset,
                };
                let key = item.order_key().map(str::to_string);
                // Abandoned when stopping: the offset stays uncommitted and the next run
                // delivers it.
                if !worker.process(item).await {
                    return;
                }
                let _ = worker.done_tx.send(done);
                let Some(key) = key else {
                    return;
                };
                let mut queues = worker.queues.lock().expect("queues lock");
                match queues.get_mut(&key).and_then(VecDeque::pop_front) {
                    Some(next) => item = next,
                    None => {
                        queues.remove(&key);
                        return;
                    }
                }
            }
        });
    }

    /// Handles one item; false when it was abandoned because the forwarder is stopping.
    async fn process(&mut self, item: Item<T::Job>) -> bool {
        let name = self.target.name().to_string();
        let (dedup, job) = match item.plan {
            Plan::Skip => return true,
            Plan::Reject(reason) => return self.dead_letter(&item.record, &reason, 1).await,
            Plan::Deliver { dedup, job, .. } => (dedup, job),
        };
        if let Some((key, _)) = &dedup {
            if self.shared.dedup.seen(&name, key, now_ms()) {
                ForwardMetrics::inc(&self.metrics.deduplicated);
                return true;
            }
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let failure = match self.target.deliver(&job).await {
                Ok(Outcome::Delivered) => break,
                Ok(Outcome::NotNeeded) => {
                    ForwardMetrics::inc(&self.metrics.skipped);
                    return true;
                }
                Err(f) => f,
            };
            let reason = match failure {
                Failure::Permanent(reason) => reason,
                Failure::Retry(reason) if attempts <= self.policy.retries => {
                    ForwardMetrics::inc(&self.metrics.retries);
                    tracing::debug!(target = %name, attempts, %reason, "delivery failed; retrying");
                    if pause_or_stop(&mut self.stop, self.policy.backoff(attempts)).await {
                        return false;
                    }
                    continue;
                }
                Failure::Retry(reason) => reason,
            };
            let dead = self.dead_letter(&item.record, &reason, attempts).await;
            if dead {
                self.target.dead_lettered(&job);
            }
            return dead;
        }
        if let Some((key, ttl)) = &dedup {
            if let Err(e) = self.shared.dedup.mark(&name, key, *ttl, now_ms()).await {
                // Delivered, but a re-delivery after a restart would not be recognised.
                tracing::warn!(target = %name, error = %e, "could not record a delivery in the dedup store");
            }
        }
        ForwardMetrics::inc(&self.metrics.delivered);
        true
    }

    /// Appends the record to the dead-letter topic, retrying until it is durable (a record
    /// is never dropped) or the forwarder stops.
    async fn dead_letter(&mut self, record: &Consumed, reason: &str, attempts: u32) -> bool {
        let name = self.target.name().to_string();
        tracing::warn!(target = %name, topic = %record.topic, partition = record.partition, offset = record.offset, %reason, "dead-lettering a record");
        let mut pause = self.policy.backoff(1);
        loop {
            match self
                .shared
                .dead_letters
                .send(record, &name, reason, attempts, now_ms())
                .await
            {
                Ok(()) => {
                    ForwardMetrics::inc(&self.metrics.dead_lettered);
                    return true;
                }
                Err(e) => {
                    tracing::warn!(target = %name, error = %e, "cannot write to the dead-letter topic; retrying");
                    if pause_or_stop(&mut self.stop, pause).await {
                        return false;
                    }
                    pause = (pause * 2).min(Duration::from_millis(self.policy.max_backoff_ms));
                }
            }
        }
    }
}
