//! The log manager: every partition log under one data directory, the topic metadata store,
//! and the background work (flush by `flush.ms`, recovery checkpoints, retention, compaction).
//!
//! Layout of the data directory:
//!
//! ```text
//! topics.json                 topic metadata (see `metadata`)
//! <topic>-<partition>/        one partition log (see `log`)
//! <topic>-<partition>.deleted a deleted partition whose files are being removed
//! <name>.stray-<ms>           a directory no topic owns, set aside (never loaded or deleted)
//! ```
//!
//! Topic changes are saved to the metadata store before partition directories are created, and
//! partition directories are renamed aside before the topic leaves the store, so a crash never
//! leaves a topic whose directories hold another topic's data.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::clock::{Clock, SystemClock};
use crate::config::LogConfig;
use crate::error::{IoOp, LogError, Result};
use crate::io::Io;
use crate::log::{Log, LogOptions};
use crate::metadata::{validate_topic_name, MetadataStore, TopicMeta};

/// Most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;

/// A topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// How often background work runs.
#[derive(Debug, Clone, Copy)]
pub struct BackgroundIntervals {
    /// How often `flush.ms` is checked.
    pub flush_check: Duration,
    /// How often recovery checkpoints are written (Kafka: 60 s).
    pub checkpoint: Duration,
    /// How often retention runs (Kafka's `log.retention.check.interval.ms`: 5 min).
    pub retention_check: Duration,
    /// How often compaction looks for dirty logs (Kafka's cleaner backoff: 15 s).
    pub compaction_check: Duration,
}

impl Default for BackgroundIntervals {
    fn default() -> Self {
        BackgroundIntervals {
            flush_check: Duration::from_millis(100),
            checkpoint: Duration::from_secs(60),
            retention_check: Duration::from_secs(300),
            compaction_check: Duration::from_secs(15),
        }
    }
}

/// How a log manager is opened.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    pub data_dir: PathBuf,
    /// Broker-wide defaults for topic configs, by topic config name.
    pub defaults: BTreeMap<String, String>,
    pub io: Io,
    pub clock: Arc<dyn Clock>,
    /// `None` runs no background threads (tests call [`LogManager::run_maintenance`]).
    pub background: Option<BackgroundIntervals>,
    /// Most partitions, over all topics, that new topics and new partitions may bring the
    /// manager to. Each partition holds three open files per segment, so without a bound one
    /// request could spend the process's open-file limit, after which nothing (a connection,
    /// a segment roll) can open a file. Partitions already stored are always opened.
    pub max_partitions: u32,
}

impl ManagerOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ManagerOptions {
            data_dir: data_dir.into(),
            defaults: BTreeMap::new(),
            io: Io::new(),
            clock: Arc::new(SystemClock),
            background: Some(BackgroundIntervals::default()),
            max_partitions: u32::MAX,
        }
    }
}

#[derive(Debug, Clone)]
enum Slot {
    Online(Arc<Log>),
    Offline(String),
}

#[derive(Debug)]
struct State {
    meta: MetadataStore,
    logs: HashMap<TopicPartition, Slot>,
}

#[derive(Debug)]
struct Inner {
    data_dir: PathBuf,
    defaults: RwLock<BTreeMap<String, String>>,
    io: Io,
    clock: Arc<dyn Clock>,
    max_partitions: u32,
    state: RwLock<State>,
    stop: Mutex<bool>,
    stop_cv: Condvar,
}

/// All partition logs of one broker.
#[derive(Debug)]
pub struct LogManager {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// What a maintenance pass did, summed over all logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceOutcome {
    pub flushed: usize,
    pub segments_deleted: usize,
    pub logs_compacted: usize,
}

impl LogManager {
    /// Opens every partition of every stored topic. A partition that fails to open (say, a
    /// corrupt segment in the middle) is logged and kept offline; the rest work.
    pub fn open(options: ManagerOptions) -> Result<LogManager> {
        let ManagerOptions {
            data_dir: dir,
            defaults,
            io,
            clock,
            background,
            max_partitions,
        } = options;
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io(IoOp::Create, &dir, e))?;
        let meta = MetadataStore::load(&dir, io.clone())?;
        set_aside_unknown_dirs(&dir, &meta)?;
        let mut logs = HashMap::new();
        for topic in meta.topics() {
            let config = LogConfig::from_layers(&defaults, &topic.configs)?;
            for p in 0..topic.partitions as i32 {
                let tp = TopicPartition::new(&topic.name, p);
                let log_options = LogOptions {
                    config: config.clone(),
                    io: io.clone(),
                    clock: clock.clone(),
                };
                logs.insert(tp.clone(), open_slot(&dir, &tp, log_options));
            }
        }
        let inner = Arc::new(Inner {
            data_dir: dir,
            defaults: RwLock::new(defaults),
            io,
            clock,
            max_partitions,
            state: RwLock::new(State { meta, logs }),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
        });
        let manager = LogManager {
            inner,
            threads: Mutex::new(Vec::new()),
        };
        if let Some(intervals) = background {
            manager.start_background(intervals);
        }
        Ok(manager)
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// Broker-wide defaults for topic configs.
    pub fn defaults(&self) -> BTreeMap<String, String> {
        self.inner.defaults.read().expect("defaults lock").clone()
    }

    pub fn topics(&self) -> Vec<TopicMeta> {
        let st = self.inner.state.read().expect("state lock");
        st.meta.topics().cloned().collect()
    }

    pub fn topic(&self, name: &str) -> Option<TopicMeta> {
        let st = self.inner.state.read().expect("state lock");
        st.meta.get(name).cloned()
    }

    /// The typed config of a topic (defaults plus its overrides).
    pub fn topic_config(&self, name: &str) -> Result<LogConfig> {
        let topic = self.topic(name).ok_or_else(|| LogError::UnknownTopic {
            name: name.to_string(),
        })?;
        Ok(LogConfig::from_layers(&self.defaults(), &topic.configs)?)
    }

    /// Checks everything `create_topic` would, without creating anything.
    pub fn validate_new_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: &BTreeMap<String, String>,
    ) -> Result<LogConfig> {
        validate_topic_name(name)?;
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(LogError::InvalidPartitionCount {
                topic: name.to_string(),
                requested: partitions as i64,
                current: 0,
            });
        }
        let config = LogConfig::from_layers(&self.defaults(), configs)?;
        let st = self.inner.state.read().expect("state lock");
        if st.meta.get(name).is_some() {
            return Err(LogError::TopicExists {
                name: name.to_string(),
            });
        }
        self.check_partition_budget(&st, name, partitions)?;
        Ok(config)
    }

    /// Refuses `adding` more partitions when they would pass `max_partitions`.
    fn check_partition_budget(&self, st: &State, topic: &str, adding: u32) -> Result<()> {
        let held = st.logs.len() as u64;
        let max = self.inner.max_partitions;
        if held + adding as u64 > max as u64 {
            return Err(LogError::PartitionLimit {
                topic: topic.to_string(),
                adding,
                held: held as u32,
                max,
            });
        }
        Ok(())
    }

    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta> {
        let config = self.validate_new_topic(name, partitions, &configs)?;
        let mut st = self.inner.state.write().expect("state lock");
        if st.meta.get(name).is_some() {
            return Err(LogError::TopicExists {
                name: name.to_string(),
            });
        }
        // Again under the write lock: another creation may have come between.
        self.check_partition_budget(&st, name, partitions)?;
        let topic = TopicMeta {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            configs,
        };
        st.meta.update(|t| {
            t.insert(name.to_string(), topic.clone());
        })?;
        for p in 0..partitions as i32 {
            let tp = TopicPartition::new(name, p);
            let slot = open_slot(&self.inner.data_dir, &tp, self.log_options(config.clone()));
            st.logs.insert(tp, slot);
        }
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<TopicMeta> {
        let mut st = self.inner.state.write().expect("state lock");
        let topic = st
            .meta
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic {
                name: name.to_string(),
            })?;
        let mut doomed = Vec::new();
        for p in 0..topic.partitions as i32 {
            let tp = TopicPartition::new(name, p);
            if let Some(Slot::Online(log)) = st.logs.get(&tp) {
                // Stop writers first; the files go below.
                let _ = log.close();
            }
            let dir = partition_dir(&self.inner.data_dir, &tp);
            let aside = self
                .inner
                .data_dir
                .join(format!("{tp}.{}.deleted", topic.id.simple()));
            if dir.exists() {
                self.inner.io.rename(&dir, &aside)?;
                doomed.push(aside);
            }
        }
        self.inner.io.sync_dir(&self.inner.data_dir)?;
        st.meta.update(|t| {
            t.remove(name);
        })?;
        for p in 0..topic.partitions as i32 {
            st.logs.remove(&TopicPartition::new(name, p));
        }
        drop(st);
        for dir in doomed {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove deleted partition; will retry at start");
            }
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(topic)
    }

    /// Grows a topic to `total` partitions.
    pub fn create_partitions(&self, name: &str, total: u32) -> Result<TopicMeta> {
        let mut st = self.inner.state.write().expect("state lock");
        let topic = st
            .meta
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic {
                name: name.to_string(),
            })?;
        if total <= topic.partitions || total > MAX_PARTITIONS {
            return Err(LogError::InvalidPartitionCount {
                topic: name.to_string(),
                requested: total as i64,
                current: topic.partitions,
            });
        }
        self.check_partition_budget(&st, name, total - topic.partitions)?;
        let config = LogConfig::from_layers(&self.defaults(), &topic.configs)?;
        let updated = TopicMeta {
            partitions: total,
            ..topic.clone()
        };
        st.meta.update(|t| {
            t.insert(name.to_string(), updated.clone());
        })?;
        for p in topic.partitions as i32..total as i32 {
            let tp = TopicPartition::new(name, p);
            let slot = open_slot(&self.inner.data_dir, &tp, self.log_options(config.clone()));
            st.logs.insert(tp, slot);
        }
        Ok(updated)
    }

    /// Replaces a topic's config overrides and applies them to its open logs.
    pub fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta> {
        let config = LogConfig::from_layers(&self.defaults(), &configs)?;
        let mut st = self.inner.state.write().expect("state lock");
        let topic = st
            .meta
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic {
                name: name.to_string(),
            })?;
        let updated = TopicMeta { configs, ..topic };
        st.meta.update(|t| {
            t.insert(name.to_string(), updated.clone());
        })?;
        for p in 0..updated.partitions as i32 {
            if let Some(Slot::Online(log)) = st.logs.get(&TopicPartition::new(name, p)) {
                log.set_config(config.clone());
            }
        }
        Ok(updated)
    }

    /// The log of a partition.
    pub fn log(&self, topic: &str, partition: i32) -> Result<Arc<Log>> {
        let st = self.inner.state.read().expect("state lock");
        match st.logs.get(&TopicPartition::new(topic, partition)) {
            Some(Slot::Online(log)) => Ok(log.clone()),
            Some(Slot::Offline(reason)) => Err(LogError::PartitionOffline {
                topic: topic.to_string(),
                partition,
                reason: reason.clone(),
            }),
            None if st.meta.get(topic).is_some() => Err(LogError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            }),
            None => Err(LogError::UnknownTopic {
                name: topic.to_string(),
            }),
        }
    }

    fn online_logs(&self) -> Vec<(TopicPartition, Arc<Log>)> {
        self.inner.online_logs()
    }

    /// One pass of all background work, as the background threads run it.
    pub fn run_maintenance(&self) -> MaintenanceOutcome {
        let mut outcome = MaintenanceOutcome::default();
        for (tp, log) in self.online_logs() {
            outcome.flushed +=
                usize::from(report(&tp, "flush", log.flush_if_due()).unwrap_or(false));
            if let Some(r) = report(&tp, "retention", log.apply_retention()) {
                outcome.segments_deleted += r.segments_deleted;
            }
            if log.compaction_due() && report(&tp, "compaction", log.compact()).is_some() {
                outcome.logs_compacted += 1;
            }
            report(&tp, "checkpoint", log.checkpoint());
        }
        outcome
    }

    fn start_background(&self, intervals: BackgroundIntervals) {
        let mut threads = self.threads.lock().expect("threads lock");
        let weak = Arc::downgrade(&self.inner);
        let flusher = std::thread::Builder::new()
            .name("chorus-log-flusher".into())
            .spawn(move || {
                let mut last_checkpoint = Instant::now();
                while let Some(inner) = weak.upgrade() {
                    if inner.wait_stop(intervals.flush_check) {
                        return;
                    }
                    let checkpoint_due = last_checkpoint.elapsed() >= intervals.checkpoint;
                    for (tp, log) in inner.online_logs() {
                        report(&tp, "flush", log.flush_if_due());
                        if checkpoint_due {
                            report(&tp, "checkpoint", log.checkpoint());
                        }
                    }
                    if checkpoint_due {
                        last_checkpoint = Instant::now();
                    }
                }
            })
            .expect("spawn flusher thread");
        threads.push(flusher);
        let weak = Arc::downgrade(&self.inner);
        let cleaner = std::thread::Builder::new()
            .name("chorus-log-cleaner".into())
            .spawn(move || {
                let tick = intervals.retention_check.min(intervals.compaction_check);
                let mut last_retention = Instant::now();
                let mut last_compaction = Instant::now();
                while let Some(inner) = weak.upgrade() {
                    if inner.wait_stop(tick) {
                        return;
                    }
                    let retention = last_retention.elapsed() >= intervals.retention_check;
                    let compaction = last_compaction.elapsed() >= intervals.compaction_check;
                    for (tp, log) in inner.online_logs() {
                        if retention {
                            report(&tp, "retention", log.apply_retention());
                        }
                        if compaction && log.compaction_due() {
                            report(&tp, "compaction", log.compact());
                        }
                    }
                    if retention {
                        last_retention = Instant::now();
                    }
                    if compaction {
                        last_compaction = Instant::now();
                    }
                }
            })
            .expect("spawn cleaner thread");
        threads.push(cleaner);
    }

    /// Stops background work, syncs every log and closes it cleanly.
    pub fn shutdown(&self) -> Result<()> {
        self.stop_threads();
        let mut first_error = None;
        for (tp, log) in self.online_logs() {
            if let Err(e) = log.close() {
                tracing::error!(partition = %tp, error = %e, "clean close failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn stop_threads(&self) {
        *self.inner.stop.lock().expect("stop lock") = true;
        self.inner.stop_cv.notify_all();
        for t in self.threads.lock().expect("threads lock").drain(..) {
            let _ = t.join();
        }
    }

    fn log_options(&self, config: LogConfig) -> LogOptions {
        LogOptions {
            config,
            io: self.inner.io.clone(),
            clock: self.inner.clock.clone(),
        }
    }
}

impl Drop for LogManager {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

impl Inner {
    /// Sleeps up to `d`; true when asked to stop.
    fn wait_stop(&self, d: Duration) -> bool {
        let stop = self.stop.lock().expect("stop lock");
        if *stop {
            return true;
        }
        let (stop, _) = self.stop_cv.wait_timeout(stop, d).expect("stop lock");
        *stop
    }

    fn online_logs(&self) -> Vec<(TopicPartition, Arc<Log>)> {
        let st = self.state.read().expect("state lock");
        st.logs
            .iter()
            .filter_map(|(tp, slot)| match slot {
                Slot::Online(log) => Some((tp.clone(), log.clone())),
                Slot::Offline(_) => None,
            })
            .collect()
    }
}

fn report<T>(tp: &TopicPartition, what: &str, r: Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(partition = %tp, error = %e, "{what} failed");
            None
        }
    }
}

fn partition_dir(data_dir: &Path, tp: &TopicPartition) -> PathBuf {
    data_dir.join(tp.to_string())
}

fn open_slot(data_dir: &Path, tp: &TopicPartition, log_options: LogOptions) -> Slot {
    match Log::open(partition_dir(data_dir, tp), log_options) {
        Ok(log) => Slot::Online(Arc::new(log)),
        Err(e) => {
            tracing::error!(partition = %tp, error = %e, "partition is offline");
            Slot::Offline(e.to_string())
        }
    }
}

/// Removes the leftovers of deleted topics and sets aside directories no topic owns.
fn set_aside_unknown_dirs(dir: &Path, meta: &MetadataStore) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| LogError::io(IoOp::ListDir, dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(IoOp::ListDir, dir, e))?;
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".deleted") {
            std::fs::remove_dir_all(&path).map_err(|e| LogError::io(IoOp::Remove, &path, e))?;
            continue;
        }
        if name.contains(".stray-") {
            continue;
        }
        let owned = name.rsplit_once('-').is_some_and(|(topic, p)| {
            p.parse::<u32>()
                .is_ok_and(|p| meta.get(topic).is_some_and(|t| p < t.partitions))
        });
        if !owned {
            let now = SystemClock.now_ms();
            let aside = dir.join(format!("{name}.stray-{now}"));
            tracing::warn!(dir = %path.display(), aside = %aside.display(), "no topic owns this directory; setting it aside");
            std::fs::rename(&path, &aside).map_err(|e| LogError::io(IoOp::Rename, &path, e))?;
        }
    }
    Ok(())
}
