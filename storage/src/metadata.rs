//! The topic metadata store: topics, their ids, partition counts and config overrides, in one
//! JSON file (`topics.json`) in the data directory, replaced atomically on every change.
//!
//! A change is saved before it takes effect in memory, so a failed save changes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{IoOp, LogError, Result};
use crate::io::Io;

pub(crate) const METADATA_FILE: &str = "topics.json";

/// Longest topic name Kafka allows.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// One topic as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: u32,
    /// Config overrides by Kafka name; everything else comes from the defaults.
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredTopics {
    version: u32,
    topics: Vec<TopicMeta>,
}

#[derive(Debug)]
pub(crate) struct MetadataStore {
    path: PathBuf,
    io: Io,
    topics: BTreeMap<String, TopicMeta>,
}

impl MetadataStore {
    /// Loads the store; a missing file is an empty store, an unparsable one an error (better
    /// to refuse to start than to forget every topic).
    pub fn load(dir: &Path, io: Io) -> Result<Self> {
        let path = dir.join(METADATA_FILE);
        let topics = match std::fs::read(&path) {
            Ok(bytes) => {
                let stored: StoredTopics =
                    serde_json::from_slice(&bytes).map_err(|e| LogError::DamagedMetadata {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                stored
                    .topics
                    .into_iter()
                    .map(|t| (t.name.clone(), t))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(LogError::io(IoOp::Read, path, e)),
        };
        Ok(MetadataStore { path, io, topics })
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicMeta> {
        self.topics.values()
    }

    pub fn get(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    /// Applies `change` to a copy, saves it, then adopts it.
    pub fn update(&mut self, change: impl FnOnce(&mut BTreeMap<String, TopicMeta>)) -> Result<()> {
        let mut next = self.topics.clone();
        change(&mut next);
        let stored = StoredTopics {
            version: 1,
            topics: next.values().cloned().collect(),
        };
        let json = serde_json::to_vec_pretty(&stored).expect("metadata serialises");
        self.io.write_atomic(&self.path, &json)?;
        self.topics = next;
        Ok(())
    }
}

/// Kafka's rules: 1 to 249 characters from `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let invalid = |reason| LogError::InvalidTopicName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(invalid("longer than 249 characters"));
    }
    if name == "." || name == ".." {
        return Err(invalid("cannot be '.' or '..'"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "only ASCII letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "a b", "ümlaut", "a/b", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_failed_save_changes_nothing_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetadataStore::load(dir.path(), Io::new()).unwrap();
        store
            .update(|t| {
                t.insert(
                    "a".into(),
                    TopicMeta {
                        name: "a".into(),
                        id: Uuid::new_v4(),
                        partitions: 3,
                        configs: BTreeMap::new(),
                    },
                );
            })
            .unwrap();
        let reloaded = MetadataStore::load(dir.path(), Io::new()).unwrap();
        assert_eq!(reloaded.get("a").unwrap().partitions, 3);

        std::fs::write(dir.path().join(METADATA_FILE), b"{not json").unwrap();
        assert!(matches!(
            MetadataStore::load(dir.path(), Io::new()),
            Err(LogError::DamagedMetadata { .. })
        ));
    }
}
