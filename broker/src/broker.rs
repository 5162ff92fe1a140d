//! The broker's shared state: configuration, the log manager, the partitions being served,
//! producer ids and the cluster identity. Handlers reach everything through [`Broker`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use chorus_storage::manager::BackgroundIntervals;
use chorus_storage::{LogError, LogManager, ManagerOptions, TopicMeta};
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::error::{BrokerError, Result};
use crate::groups::offsets_topic::{self, OFFSETS_TOPIC};
use crate::groups::GroupService;
use crate::partition::Partition;
use crate::producer_id::ProducerIds;

const CLUSTER_ID_FILE: &str = "cluster.id";

#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    pub logs: LogManager,
    pub producer_ids: ProducerIds,
    pub cluster_id: String,
    pub groups: GroupService,
    partitions: RwLock<HashMap<(String, i32), Arc<Partition>>>,
}

impl Broker {
    /// Opens the data directory (recovering every partition). Blocking.
    pub fn open(config: BrokerConfig) -> Result<Broker> {
        let logs = LogManager::open(ManagerOptions {
            defaults: config.topic_defaults.clone(),
            background: Some(BackgroundIntervals::default()),
            io: config.io.clone(),
            max_partitions: config.max_partitions,
            ..ManagerOptions::new(&config.data_dir)
        })?;
        let cluster_id = load_cluster_id(&config.data_dir)?;
        let producer_ids = ProducerIds::open(&config.data_dir)?;
        // The coordinator's topic is opened here, before any request, so its partitions
        // are the ones the broker serves and replay sees everything.
        let offsets_partitions =
            offsets_topic::ensure_topic(&logs, config.offsets_topic_partitions)?;
        let offsets_meta = logs
            .topic(OFFSETS_TOPIC)
            .ok_or(BrokerError::Internal("__consumer_offsets vanished"))?;
        let mut partitions = HashMap::new();
        let mut offsets = Vec::new();
        for index in 0..offsets_partitions as i32 {
            let log = logs.log(OFFSETS_TOPIC, index)?;
            let p = Arc::new(Partition::new(
                OFFSETS_TOPIC.into(),
                index,
                offsets_meta.id,
                log,
            ));
            partitions.insert((OFFSETS_TOPIC.to_string(), index), p.clone());
            offsets.push(p);
        }
        let groups = GroupService::start(config.groups.clone(), offsets)?;
        Ok(Broker {
            config,
            logs,
            producer_ids,
            cluster_id,
            groups,
            partitions: RwLock::new(partitions),
        })
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// The partition, opened on first use.
    pub fn partition(&self, topic: &str, index: i32) -> Result<Arc<Partition>> {
        let key = (topic.to_string(), index);
        if let Some(p) = self.partitions.read().expect("partitions lock").get(&key) {
            return Ok(p.clone());
        }
        let log = self.logs.log(topic, index)?;
        let meta = self
            .logs
            .topic(topic)
            .ok_or_else(|| LogError::UnknownTopic {
                name: topic.to_string(),
            })?;
        let mut map = self.partitions.write().expect("partitions lock");
        let p = map
            .entry(key)
            .or_insert_with(|| Arc::new(Partition::new(topic.to_string(), index, meta.id, log)));
        Ok(p.clone())
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<TopicMeta> {
        self.logs.topics().into_iter().find(|t| t.id == id)
    }

    /// Creates a topic. Blocking.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta> {
        Ok(self.logs.create_topic(name, partitions, configs)?)
    }

    /// Creates a topic a client asked for by name, when auto-creation is on. Blocking.
    pub fn auto_create(&self, name: &str) -> Result<TopicMeta> {
        match self.create_topic(name, self.config.num_partitions, BTreeMap::new()) {
            Ok(t) => {
                tracing::info!(topic = name, "auto-created topic");
                Ok(t)
            }
            // Another request created it meanwhile.
            Err(BrokerError::Log(LogError::TopicExists { .. })) => self
                .logs
                .topic(name)
                .ok_or_else(|| BrokerError::Log(LogError::UnknownTopic { name: name.into() })),
            Err(e) => Err(e),
        }
    }

    /// Deletes a topic and forgets its partitions. Blocking.
    pub fn delete_topic(&self, name: &str) -> Result<TopicMeta> {
        let meta = self.logs.delete_topic(name)?;
        self.partitions
            .write()
            .expect("partitions lock")
            .retain(|(t, _), _| t != name);
        Ok(meta)
    }

    /// Stops the coordinator, then syncs and closes every log. Blocking.
    pub fn shutdown(&self) -> Result<()> {
        self.groups.shutdown();
        Ok(self.logs.shutdown()?)
    }
}

/// The cluster id, made once (22 characters of URL-safe base64 like Kafka's) and kept.
fn load_cluster_id(data_dir: &std::path::Path) -> Result<String> {
    let path = data_dir.join(CLUSTER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(BrokerError::Log(LogError::Io {
                op: chorus_storage::error::IoOp::Read,
                path,
                source: e,
            }))
        }
    }
    let id = base64_url(Uuid::new_v4().as_bytes());
    chorus_storage::io::Io::new().write_atomic(&path, id.as_bytes())?;
    Ok(id)
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn cluster_ids_look_like_kafkas_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let a = super::load_cluster_id(dir.path()).unwrap();
        assert_eq!(a.len(), 22);
        assert_eq!(super::load_cluster_id(dir.path()).unwrap(), a);
    }
}
