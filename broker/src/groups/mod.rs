//! The group coordinator as the broker runs it: one thread owns the
//! `chorus_coordinator::Coordinator`, applies requests in arrival order, fires its timers,
//! persists the records it returns to `__consumer_offsets`, and only then answers.
//!
//! Handlers talk to it through [`GroupService`]: a job goes over a channel, the answer comes
//! back on a oneshot. Jobs that arrive together are applied together and their records
//! written in one append per offsets partition (group commit for coordinator writes).
//! A dedicated thread rather than a tokio task because persisting blocks on file writes.
//!
//! When a round's records cannot be written, its answers say "coordinator not available"
//! and the coordinator is rebuilt from `__consumer_offsets`: the log is the truth, so what
//! was applied in memory but never written is forgotten rather than served.

pub mod offsets_topic;

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_coordinator::{
    Coordinator, Effects, GroupConfig, GroupError, JoinRequest, JoinResponse, Millis, Reply,
    SyncRequest, SyncResponse, Token,
};
use tokio::sync::oneshot;

use crate::error::{BrokerError, Result};
use crate::partition::Partition;

/// Most jobs applied before their records are written and their answers sent.
const MAX_JOBS_PER_ROUND: usize = 4096;

type Job = Box<dyn FnOnce(&mut Round<'_>) + Send>;
/// Runs once the round's records are written (`true`) or failed to be (`false`).
type Delivery = Box<dyn FnOnce(bool) + Send>;

enum Message {
    Run(Job),
    Stop,
}

/// What a job sees: the coordinator, the round's clock and effects, and where to register
/// answers.
pub struct Round<'a> {
    pub coordinator: &'a mut Coordinator,
    pub now: Millis,
    pub fx: &'a mut Effects,
    deliveries: &'a mut Vec<Delivery>,
    waiting: &'a mut HashMap<Token, oneshot::Sender<Option<Reply>>>,
    next_token: &'a mut Token,
}

impl std::fmt::Debug for Round<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Round")
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// Handle to the coordinator thread.
#[derive(Debug)]
pub struct GroupService {
    tx: Mutex<mpsc::Sender<Message>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    config: GroupConfig,
}

impl GroupService {
    /// Replays `__consumer_offsets` (its `partitions`) and starts the coordinator thread.
    /// Blocking.
    pub fn start(config: GroupConfig, partitions: Vec<Arc<Partition>>) -> Result<GroupService> {
        let coordinator = load(&config, &partitions)?;
        let (tx, rx) = mpsc::channel();
        let thread_config = config.clone();
        let thread = std::thread::Builder::new()
            .name("chorus-coordinator".into())
            .spawn(move || run(coordinator, &thread_config, &partitions, &rx))
            .map_err(|_| BrokerError::Internal("could not start the coordinator thread"))?;
        Ok(GroupService {
            tx: Mutex::new(tx),
            thread: Mutex::new(Some(thread)),
            config,
        })
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    fn send(&self, job: Job) -> Result<()> {
        self.tx
            .lock()
            .expect("coordinator channel lock")
            .send(Message::Run(job))
            .map_err(|_| BrokerError::CoordinatorUnavailable)
    }

    /// Queues `f` for the coordinator thread now, in call order, and returns a future of
    /// its result, which resolves once the records `f` produced are durable. Handlers that
    /// submit before they await let one connection keep several requests at the
    /// coordinator at once without reordering them.
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Round<'_>) -> T + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(Box::new(move |round| {
            let out = f(round);
            round.deliveries.push(Box::new(move |persisted| {
                let _ = tx.send(persisted.then_some(out));
            }));
        }));
        async move {
            sent?;
            rx.await
                .ok()
                .flatten()
                .ok_or(BrokerError::CoordinatorUnavailable)
        }
    }

    /// Runs `f` on the coordinator thread and waits for its result (see
    /// [`GroupService::submit`]).
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Round<'_>) -> T + Send + 'static,
    ) -> Result<T> {
        self.submit(f).await
    }

    /// Runs `f` with a fresh token and waits for the coordinator's reply under it (which
    /// may come much later: a JoinGroup waits for the rebalance).
    async fn wait_reply(
        &self,
        f: impl FnOnce(&mut Round<'_>, Token) + Send + 'static,
    ) -> Result<Reply> {
        let (tx, rx) = oneshot::channel();
        self.send(Box::new(move |round| {
            *round.next_token += 1;
            let token = *round.next_token;
            round.waiting.insert(token, tx);
            f(round, token);
        }))?;
        rx.await
            .ok()
            .flatten()
            .ok_or(BrokerError::CoordinatorUnavailable)
    }

    pub async fn join(&self, req: JoinRequest) -> Result<Result<JoinResponse, GroupError>> {
        match self
            .wait_reply(move |r, token| r.coordinator.join(r.now, token, req, r.fx))
            .await?
        {
            Reply::Join(result) => Ok(result),
            Reply::Sync(_) => Err(BrokerError::Internal("a join was answered as a sync")),
        }
    }

    pub async fn sync(&self, req: SyncRequest) -> Result<Result<SyncResponse, GroupError>> {
        match self
            .wait_reply(move |r, token| r.coordinator.sync(r.now, token, req, r.fx))
            .await?
        {
            Reply::Sync(result) => Ok(result),
            Reply::Join(_) => Err(BrokerError::Internal("a sync was answered as a join")),
        }
    }

    /// Stops the thread after it finishes the jobs already sent. Waiting joins and syncs
    /// are answered COORDINATOR_NOT_AVAILABLE (clients retry elsewhere or later).
    pub fn shutdown(&self) {
        let _ = self
            .tx
            .lock()
            .expect("coordinator channel lock")
            .send(Message::Stop);
        if let Some(thread) = self.thread.lock().expect("thread lock").take() {
            let _ = thread.join();
        }
    }
}

/// A coordinator holding exactly what `__consumer_offsets` holds. Blocking.
fn load(config: &GroupConfig, partitions: &[Arc<Partition>]) -> Result<Coordinator> {
    // Member ids carry a per-load nonce so ids issued before a reload are never reissued.
    let nonce = uuid::Uuid::new_v4().as_u64_pair().0;
    let mut coordinator = Coordinator::new(config.clone(), nonce);
    let started = std::time::Instant::now();
    let applied = offsets_topic::replay(partitions, &mut coordinator)?;
    coordinator.start(now_ms());
    tracing::info!(
        records = applied,
        groups = coordinator.groups().count(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "loaded consumer groups from __consumer_offsets"
    );
    Ok(coordinator)
}

fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// The coordinator thread: wait for jobs or the next timer, apply, persist, answer.
fn run(
    mut coordinator: Coordinator,
    config: &GroupConfig,
    partitions: &[Arc<Partition>],
    rx: &mpsc::Receiver<Message>,
) {
    let mut waiting: HashMap<Token, oneshot::Sender<Option<Reply>>> = HashMap::new();
    let mut next_token: Token = 0;
    let mut jobs: Vec<Job> = Vec::new();
    let mut stopping = false;
    while !stopping {
        let timeout = coordinator
            .next_deadline()
            .map_or(Duration::from_secs(3600), |at| {
                Duration::from_millis((at - now_ms()).clamp(0, 3_600_000) as u64)
            });
        match rx.recv_timeout(timeout) {
            Ok(Message::Run(job)) => jobs.push(job),
            Ok(Message::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => stopping = true,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        while !stopping && jobs.len() < MAX_JOBS_PER_ROUND {
            match rx.try_recv() {
                Ok(Message::Run(job)) => jobs.push(job),
                Ok(Message::Stop) => stopping = true,
                Err(_) => break,
            }
        }
        let now = now_ms();
        let mut fx = Effects::default();
        let mut deliveries = Vec::new();
        {
            let mut round = Round {
                coordinator: &mut coordinator,
                now,
                fx: &mut fx,
                deliveries: &mut deliveries,
                waiting: &mut waiting,
                next_token: &mut next_token,
            };
            for job in jobs.drain(..) {
                job(&mut round);
            }
        }
        coordinator.tick(now, &mut fx);
        let persisted = match offsets_topic::persist(partitions, &fx.records, now) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, records = fx.records.len(), "could not persist coordinator records; reloading from __consumer_offsets");
                false
            }
        };
        for deliver in deliveries {
            deliver(persisted);
        }
        for (token, reply) in fx.replies {
            if let Some(tx) = waiting.remove(&token) {
                let _ = tx.send(persisted.then_some(reply));
            }
        }
        if !persisted {
            // Forget what memory holds beyond the log. Parked joins and syncs belong to
            // the state being dropped: answering them "not available" makes them retry.
            waiting.clear();
            match load(config, partitions) {
                Ok(reloaded) => coordinator = reloaded,
                Err(e) => {
                    tracing::error!(error = %e, "could not reload the coordinator; keeping the state in memory")
                }
            }
        }
    }
    // Dropping `waiting` answers every parked join and sync with "unavailable".
}
