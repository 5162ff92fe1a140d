//! The idempotent forwarder: each delivery target (chat notifications, e-mail, CDC ingest)
//! is its own consumer group on the log, with its own policy.
//!
//! For every record the target makes a plan: nothing to do, a job, or a rejection (straight
//! to the dead-letter topic). Jobs with the same ordering key (a conversation, a user) run
//! one after another; different keys run at once, so one conversation that is retrying does
//! not hold up the others. The keys a poll brings to life run side by side in one task
//! (not a task each: a stream of new conversations would otherwise cost a spawn per
//! record). Jobs that queued up behind a key are handed to the target
//! together ([`Target::deliver_all`]), so a busy conversation costs one durable append per
//! round rather than one per record. A target that writes to the log takes the keys of a
//! poll together too ([`Target::deliver_runs`]): a round of keys then shares its appends,
//! and a key that fails leaves the round to retry on its own. A job whose dedup key the
//! target delivered within its TTL is skipped. A failed delivery is retried with
//! exponential backoff; after the last retry the record goes to the dead-letter topic with
//! the reason. Offsets are committed only below the oldest record not yet delivered or
//! dead-lettered, so a crash re-delivers rather than loses, and the dedup store keeps the
//! re-delivery from repeating what was done.

pub mod dedup;
pub mod dlq;
pub mod email;
pub mod notify;
pub mod progress;
pub mod retry;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, watch};

use crate::log::{BoxFuture, Consumed, GroupConsumer, GroupOptions, Log, StartFrom};
use crate::now_ms;
use crate::HashMap;
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
/// Most keys run side by side in one task. Some keep the spawns rare; many more
/// would share one task's cooperative budget of the runtime (a task that uses it up has
/// its channel and lock operations refused until it yields) and one thread.
const KEYS_PER_TASK: usize = 16;
/// Most keys in one round of [`Target::deliver_runs`] (a round is one task, and what the
/// target does for it between awaits runs on one thread at a time).
const KEYS_PER_ROUND: usize = 64;
/// Most jobs of one key handed to [`Target::deliver_all`] at once (64 chat messages at
/// their 10 KiB limit stay well inside one append's 1 MiB).
const KEY_BATCH: usize = 64;

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

/// Per run of jobs handed to [`Target::deliver_runs`]: the outcomes of the jobs delivered
/// (a prefix of the run) and, when it stopped at a failure, why.
pub type RunAnswers = Vec<(Vec<Outcome>, Option<Failure>)>;

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

    /// Delivers jobs of one ordering key, in order, stopping at the first failure. Returns
    /// the outcomes of the jobs delivered (a prefix of `jobs`, at least one unless it
    /// failed) and, when it failed, why the job after them failed. Jobs after that are not
    /// attempted, and a short prefix without a failure is fine: the forwarder hands over
    /// the rest again. The default delivers one at a time; a target that can write several
    /// jobs at once (in one append) overrides it.
    fn deliver_all<'a>(
        &'a self,
        jobs: &'a [&'a Self::Job],
    ) -> BoxFuture<'a, (Vec<Outcome>, Option<Failure>)> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(jobs.len());
            for job in jobs {
                match self.deliver(job).await {
                    Ok(outcome) => outcomes.push(outcome),
                    Err(failure) => return (outcomes, Some(failure)),
                }
            }
            (outcomes, None)
        })
    }

    /// Whether jobs of different keys go to the target together, through
    /// [`Target::deliver_runs`]. Worth it when the target writes to a log, where many keys
    /// share one append: a round of keys then costs one call instead of one per key. The
    /// keys of a round wait for each other (one that fails leaves the round at once and
    /// retries on its own), so a target whose deliveries can be slow without failing keeps
    /// the default, which runs every key on its own.
    fn delivers_runs(&self) -> bool {
        false
    }

    /// Delivers the jobs of several keys: `runs[i]` holds jobs of one ordering key, in
    /// order, and no two runs share a key. Answers each run as [`Target::deliver_all`]
    /// answers its jobs; a failure in one run does not stop the others. Used only when
    /// [`Target::delivers_runs`]; the default delivers the runs side by side, each through
    /// [`Target::deliver_all`].
    fn deliver_runs<'a>(&'a self, runs: &'a [Vec<&'a Self::Job>]) -> BoxFuture<'a, RunAnswers> {
        Box::pin(futures_util::future::join_all(
            runs.iter().map(|run| self.deliver_all(run)),
        ))
    }

    /// Called after a job was dead-lettered (chat delivery tells the affected clients to
    /// reconnect and catch up from history).
    fn dead_lettered(&self, _job: &Self::Job) {}
}

/// [`Target::deliver`] for a target whose deliveries are written as runs
/// ([`Target::deliver_runs`]): one run of one job, so there is one way to deliver.
pub async fn deliver_one_as_run<T: Target>(target: &T, job: &T::Job) -> Result<Outcome, Failure> {
    let runs = [vec![job]];
    match target.deliver_runs(&runs).await.pop() {
        Some((_, Some(failure))) => Err(failure),
        Some((outcomes, None)) if !outcomes.is_empty() => Ok(outcomes[0]),
        _ => Err(Failure::Retry("the job was not delivered".into())),
    }
}

/// [`Target::deliver_all`] for such a target: the jobs of one key as one run.
pub async fn deliver_all_as_run<T: Target>(
    target: &T,
    jobs: &[&T::Job],
) -> (Vec<Outcome>, Option<Failure>) {
    let runs = [jobs.to_vec()];
    target.deliver_runs(&runs).await.pop().unwrap_or_default()
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

    fn job(&self) -> Option<&J> {
        match &self.plan {
            Plan::Deliver { job, .. } => Some(job),
            Plan::Skip | Plan::Reject(_) => None,
        }
    }

    /// Whether it may be delivered together with others of its key: one with a dedup key
    /// must see the marks of those before it, so it goes alone.
    fn batchable(&self) -> bool {
        matches!(self.plan, Plan::Deliver { dedup: None, .. })
    }
}

/// The jobs at the front of a key's queue that go together: one that is not batchable,
/// or a run of batchable ones up to [`KEY_BATCH`] (those always go through
/// [`Target::deliver_all`]).
fn take_next<J>(waiting: &mut VecDeque<Item<J>>) -> Vec<Item<J>> {
    let mut out: Vec<Item<J>> = Vec::new();
    while let Some(next) = waiting.front() {
        if let Some(first) = out.first() {
            if !first.batchable() || !next.batchable() || out.len() >= KEY_BATCH {
                break;
            }
        }
        out.extend(waiting.pop_front());
    }
    out
}

/// A job finished (delivered, skipped as a duplicate, or dead-lettered).
struct Done {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
}

impl From<Consumed> for Done {
    fn from(record: Consumed) -> Done {
        Done {
            topic: record.topic,
            partition: record.partition,
            offset: record.offset,
        }
    }
}

impl Done {
    fn of(record: &Consumed) -> Done {
        Done {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
        }
    }
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
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Vec<Done>>();
    let finish = |progress: &mut Progress, done: Vec<Done>| {
        for d in done {
            progress.finish(&d.topic, d.partition, d.offset);
        }
    };
    let worker = Worker {
        target: target.clone(),
        shared: shared.clone(),
        policy,
        metrics: metrics.clone(),
        stop: stop.clone(),
        queues: Arc::new(Mutex::new(HashMap::default())),
        done_tx,
    };
    let mut progress = Progress::default();
    let mut last_commit = Instant::now();
    loop {
        while let Ok(done) = done_rx.try_recv() {
            finish(&mut progress, done);
        }
        if *stop.borrow() {
            break;
        }
        if progress.in_flight() >= MAX_IN_FLIGHT {
            tokio::select! {
                Some(done) = done_rx.recv() => finish(&mut progress, done),
                _ = stop.changed() => {}
            }
        } else {
            match consumer.poll(POLL_WAIT).await {
                Ok(records) => {
                    let mut starting = Vec::new();
                    for record in records {
                        starting.extend(schedule(
                            record,
                            &target,
                            &metrics,
                            &mut progress,
                            &worker,
                        ));
                    }
                    worker.start(starting);
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
        finish(&mut progress, done);
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

/// Plans `record` and queues it behind its key; returns it when it is to start now (its
/// key has nothing running).
fn schedule<T: Target>(
    record: Consumed,
    target: &Arc<T>,
    metrics: &ForwardMetrics,
    progress: &mut Progress,
    worker: &Worker<T>,
) -> Option<Item<T::Job>> {
    let plan = target.plan(&record);
    if let Plan::Skip = plan {
        ForwardMetrics::inc(&metrics.skipped);
        progress.pass(&record.topic, record.partition, record.offset);
        return None;
    }
    progress.start(&record.topic, record.partition, record.offset);
    let item = Item { record, plan };
    if let Some(key) = item.order_key() {
        let mut queues = worker.queues.lock().expect("queues lock");
        if let Some(waiting) = queues.get_mut(key) {
            waiting.push_back(item);
            return None;
        }
        queues.insert(key.to_string(), VecDeque::new());
    }
    Some(item)
}

/// Jobs waiting behind a running job with the same ordering key. The task running a key's
/// job takes the next one itself when it finishes, so a key's jobs follow each other at
/// once whatever the poll loop is doing.
type Queues<J> = Arc<Mutex<HashMap<String, VecDeque<Item<J>>>>>;

/// What follows a failed delivery attempt.
enum AfterFailure {
    TryAgain,
    DeadLetter(String),
    /// The forwarder stopped during the backoff.
    Stopping,
}

/// Runs jobs: dedup check, delivery with retries, dead letters.
struct Worker<T: Target> {
    target: Arc<T>,
    shared: Shared,
    policy: RetryPolicy,
    metrics: Arc<ForwardMetrics>,
    stop: watch::Receiver<bool>,
    queues: Queues<T::Job>,
    /// Finished jobs, a round's or a key's at a time.
    done_tx: mpsc::UnboundedSender<Vec<Done>>,
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
    /// Runs each of `items` (the first job of a key with nothing running) and then the
    /// jobs queued behind it: in rounds of keys when the target delivers runs of several
    /// keys together, else the keys side by side in one task.
    fn start(&self, items: Vec<Item<T::Job>>) {
        let (together, alone): (Vec<_>, Vec<_>) = if self.target.delivers_runs() {
            items.into_iter().partition(Item::batchable)
        } else {
            (Vec::new(), items)
        };
        let mut together = together.into_iter().peekable();
        while together.peek().is_some() {
            let worker = self.clone();
            let runs: Vec<_> = together
                .by_ref()
                .take(KEYS_PER_ROUND)
                .map(|i| vec![i])
                .collect();
            tokio::spawn(async move { worker.run_rounds(runs).await });
        }
        let mut alone = alone.into_iter().peekable();
        while alone.peek().is_some() {
            let worker = self.clone();
            let chunk: Vec<_> = alone.by_ref().take(KEYS_PER_TASK).collect();
            tokio::spawn(async move {
                let mut keys: FuturesUnordered<_> = chunk
                    .into_iter()
                    .map(|item| worker.run_key(vec![item], None))
                    .collect();
                while keys.next().await.is_some() {}
            });
        }
    }

    /// Hands the target the runs of several keys at once ([`Target::deliver_runs`]), then
    /// what queued up behind each key meanwhile, until every key's queue is empty. A key
    /// whose run fails goes on by itself ([`Worker::run_key`], with its retries), so it
    /// holds up no other key.
    async fn run_rounds(&self, mut runs: Vec<Vec<Item<T::Job>>>) {
        while !runs.is_empty() {
            let answers = {
                let jobs: Vec<Vec<&T::Job>> = runs
                    .iter()
                    .map(|run| run.iter().filter_map(Item::job).collect())
                    .collect();
                self.target.deliver_runs(&jobs).await
            };
            let mut next = Vec::new();
            // Keys whose run was delivered whole: what queued behind them goes next.
            let mut finished = Vec::new();
            let mut answers = answers.into_iter();
            let mut done = Vec::new();
            for run in runs {
                let (outcomes, failure) = answers.next().unwrap_or_default();
                // Nothing delivered and no reason given: a failure all the same, so the
                // key retries with backoff instead of coming straight back.
                let failure = match failure {
                    None if outcomes.is_empty() => Some(Failure::Retry(
                        "the target delivered none of the jobs".into(),
                    )),
                    other => other,
                };
                let n = outcomes.len().min(run.len());
                let mut run = VecDeque::from(run);
                // The key, taken from the first finished job (needed when all finish).
                let mut key = None;
                for (outcome, item) in outcomes.into_iter().zip(run.drain(..n)) {
                    self.count(outcome);
                    if let (None, Plan::Deliver { order_key, .. }) = (&key, item.plan) {
                        key = Some(order_key);
                    }
                    done.push(Done::from(item.record));
                }
                if let Some(failure) = failure {
                    let worker = self.clone();
                    tokio::spawn(async move { worker.run_key(run.into(), Some(failure)).await });
                } else if !run.is_empty() {
                    // A short answer: the rest goes again in the next round.
                    next.push(run.into());
                } else {
                    finished.extend(key);
                }
            }
            if !done.is_empty() {
                let _ = self.done_tx.send(done);
            }
            let mut queues = self.queues.lock().expect("queues lock");
            for key in finished {
                let more = queues.get_mut(&key).map(take_next).unwrap_or_default();
                match more.first() {
                    None => {
                        queues.remove(&key);
                    }
                    Some(item) if item.batchable() => next.push(more),
                    Some(_) => {
                        let worker = self.clone();
                        tokio::spawn(async move { worker.run_key(more, None).await });
                    }
                }
            }
            drop(queues);
            if *self.stop.borrow() {
                // Abandoned: the offsets stay uncommitted and the next run delivers them.
                return;
            }
            runs = next;
        }
    }

    /// The jobs to run next for `key` ([`take_next`]); when none are queued, the key is
    /// done and the next record with it starts afresh.
    fn next_of(&self, key: &str) -> Vec<Item<T::Job>> {
        let mut queues = self.queues.lock().expect("queues lock");
        let items = queues.get_mut(key).map(take_next).unwrap_or_default();
        if items.is_empty() {
            queues.remove(key);
        }
        items
    }

    fn count(&self, outcome: Outcome) {
        ForwardMetrics::inc(match outcome {
            Outcome::Delivered => &self.metrics.delivered,
            Outcome::NotNeeded => &self.metrics.skipped,
        });
    }

    /// Runs `items` (of one key; `failed` says why a first try at them, in a round, failed),
    /// then the jobs queued behind them under the same key.
    async fn run_key(&self, mut items: Vec<Item<T::Job>>, mut failed: Option<Failure>) {
        loop {
            let key = items[0].order_key().map(str::to_string);
            // Abandoned when stopping: the offsets stay uncommitted and the next run
            // delivers them.
            if !self.process_all(items, failed.take()).await {
                return;
            }
            let Some(key) = key else {
                return;
            };
            items = self.next_of(&key);
            if items.is_empty() {
                return;
            }
        }
    }

    /// Handles `items` (one, or batchable jobs of one key) and reports each as done;
    /// false when abandoned because the forwarder is stopping. `failed`: the first try at
    /// `items` already failed so.
    async fn process_all(&self, mut items: Vec<Item<T::Job>>, mut failed: Option<Failure>) -> bool {
        if items.len() == 1 && !items[0].batchable() {
            let item = items.pop().expect("one item");
            let done = Done::of(&item.record);
            // Boxed: the single-job path would otherwise widen every key's future.
            if !Box::pin(self.process(item)).await {
                return false;
            }
            let _ = self.done_tx.send(vec![done]);
            return true;
        }
        let mut records = Vec::with_capacity(items.len());
        let mut jobs = Vec::with_capacity(items.len());
        for item in items {
            if let Plan::Deliver { job, .. } = item.plan {
                records.push(item.record);
                jobs.push(job);
            }
        }
        let done = Done::of;
        let mut start = 0;
        // Attempts at jobs[start].
        let mut attempts = 0;
        while start < jobs.len() {
            attempts += 1;
            let (outcomes, failure) = match failed.take() {
                Some(f) => (Vec::new(), Some(f)),
                None => {
                    let refs: Vec<&T::Job> = jobs[start..].iter().collect();
                    self.target.deliver_all(&refs).await
                }
            };
            let delivered_some = !outcomes.is_empty();
            if delivered_some {
                attempts = 1;
            }
            for outcome in outcomes.into_iter().take(jobs.len() - start) {
                self.count(outcome);
                let _ = self.done_tx.send(vec![done(&records[start])]);
                start += 1;
            }
            let failure = match failure {
                Some(f) => f,
                None if delivered_some || start >= jobs.len() => continue,
                None => Failure::Retry("the target delivered none of the jobs".into()),
            };
            // The failure paths are boxed: a key's future is moved whole when it starts,
            // and their timers would make every one of them several times larger.
            let reason = match Box::pin(self.after_failure(failure, attempts)).await {
                AfterFailure::TryAgain => continue,
                AfterFailure::Stopping => return false,
                AfterFailure::DeadLetter(reason) => reason,
            };
            if !Box::pin(self.dead_letter(&records[start], &reason, attempts)).await {
                return false;
            }
            self.target.dead_lettered(&jobs[start]);
            let _ = self.done_tx.send(vec![done(&records[start])]);
            start += 1;
            attempts = 0;
        }
        true
    }

    /// Decides what follows a failed attempt (the `attempts`-th) and waits out the backoff
    /// when it is to be tried again.
    async fn after_failure(&self, failure: Failure, attempts: u32) -> AfterFailure {
        match failure {
            Failure::Permanent(reason) => AfterFailure::DeadLetter(reason),
            Failure::Retry(reason) if attempts <= self.policy.retries => {
                ForwardMetrics::inc(&self.metrics.retries);
                tracing::debug!(target = self.target.name(), attempts, %reason, "delivery failed; retrying");
                if pause_or_stop(&mut self.stop.clone(), self.policy.backoff(attempts)).await {
                    AfterFailure::Stopping
                } else {
                    AfterFailure::TryAgain
                }
            }
            Failure::Retry(reason) => AfterFailure::DeadLetter(reason),
        }
    }

    /// Handles one item; false when it was abandoned because the forwarder is stopping.
    async fn process(&self, item: Item<T::Job>) -> bool {
        let name = self.target.name().to_string();
        let (dedup, job) = match item.plan {
            Plan::Skip => return true,
            Plan::Reject(reason) => {
                return Box::pin(self.dead_letter(&item.record, &reason, 1)).await
            }
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
            let reason = match Box::pin(self.after_failure(failure, attempts)).await {
                AfterFailure::TryAgain => continue,
                AfterFailure::Stopping => return false,
                AfterFailure::DeadLetter(reason) => reason,
            };
            let dead = Box::pin(self.dead_letter(&item.record, &reason, attempts)).await;
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
    async fn dead_letter(&self, record: &Consumed, reason: &str, attempts: u32) -> bool {
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
                    if pause_or_stop(&mut self.stop.clone(), pause).await {
                        return false;
                    }
                    pause = (pause * 2).min(Duration::from_millis(self.policy.max_backoff_ms));
                }
            }
        }
    }
}
