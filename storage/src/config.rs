//! Per-topic log configuration with Kafka's names and defaults.
//!
//! [`TOPIC_CONFIGS`] is the one table of every topic-level setting: its name, type and default.
//! `DescribeConfigs` lists it, `CreateTopics`/`AlterConfigs` validate against it, and
//! [`LogConfig`] is the typed view the log uses, built from defaults plus overrides.

use std::collections::BTreeMap;

use crate::batch::TimestampType;

/// A setting's type, as `DescribeConfigs` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean,
    String,
    Int,
    Long,
    Double,
    List,
}

impl ConfigType {
    /// The `config_type` code of DescribeConfigs v3+.
    pub fn kafka_code(self) -> i8 {
        match self {
            ConfigType::Boolean => 1,
            ConfigType::String => 2,
            ConfigType::Int => 3,
            ConfigType::Long => 5,
            ConfigType::Double => 6,
            ConfigType::List => 7,
        }
    }
}

/// One topic-level setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    pub default: &'static str,
    /// Smallest accepted value for numeric settings.
    pub min: Option<i64>,
    pub doc: &'static str,
}

const fn def(
    name: &'static str,
    kind: ConfigType,
    default: &'static str,
    min: Option<i64>,
    doc: &'static str,
) -> ConfigDef {
    ConfigDef {
        name,
        kind,
        default,
        min,
        doc,
    }
}

const LONG_MAX: &str = "9223372036854775807";

/// Every topic-level setting Chorus knows, in Kafka's alphabetical order.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    def(
        "cleanup.policy",
        ConfigType::List,
        "delete",
        None,
        "delete, compact, or both",
    ),
    def(
        "compression.gzip.level",
        ConfigType::Int,
        "-1",
        Some(-1),
        "gzip level when the topic recompresses",
    ),
    def(
        "compression.lz4.level",
        ConfigType::Int,
        "9",
        Some(1),
        "lz4 level when the topic recompresses",
    ),
    def(
        "compression.type",
        ConfigType::String,
        "producer",
        None,
        "producer, uncompressed, gzip, snappy, lz4 or zstd",
    ),
    def(
        "compression.zstd.level",
        ConfigType::Int,
        "3",
        Some(-131072),
        "zstd level when the topic recompresses",
    ),
    def(
        "delete.retention.ms",
        ConfigType::Long,
        "86400000",
        Some(0),
        "how long compaction keeps tombstones",
    ),
    def(
        "file.delete.delay.ms",
        ConfigType::Long,
        "60000",
        Some(0),
        "delay before a deleted segment's files go",
    ),
    def(
        "flush.messages",
        ConfigType::Long,
        LONG_MAX,
        Some(1),
        "fsync after this many messages",
    ),
    def(
        "flush.ms",
        ConfigType::Long,
        LONG_MAX,
        Some(0),
        "fsync when data has been unflushed this long",
    ),
    def(
        "index.interval.bytes",
        ConfigType::Int,
        "4096",
        Some(0),
        "bytes between offset index entries",
    ),
    def(
        "local.retention.bytes",
        ConfigType::Long,
        "-2",
        Some(-2),
        "tiered storage; unused",
    ),
    def(
        "local.retention.ms",
        ConfigType::Long,
        "-2",
        Some(-2),
        "tiered storage; unused",
    ),
    def(
        "max.compaction.lag.ms",
        ConfigType::Long,
        LONG_MAX,
        Some(1),
        "longest a record stays uncompacted",
    ),
    def(
        "max.message.bytes",
        ConfigType::Int,
        "1048588",
        Some(0),
        "largest record batch accepted",
    ),
    def(
        "message.timestamp.after.max.ms",
        ConfigType::Long,
        LONG_MAX,
        Some(0),
        "how far in the future a CreateTime may be",
    ),
    def(
        "message.timestamp.before.max.ms",
        ConfigType::Long,
        LONG_MAX,
        Some(0),
        "how far in the past a CreateTime may be",
    ),
    def(
        "message.timestamp.type",
        ConfigType::String,
        "CreateTime",
        None,
        "CreateTime or LogAppendTime",
    ),
    def(
        "min.cleanable.dirty.ratio",
        ConfigType::Double,
        "0.5",
        None,
        "dirty share of the log that triggers compaction",
    ),
    def(
        "min.compaction.lag.ms",
        ConfigType::Long,
        "0",
        Some(0),
        "shortest time a record stays uncompacted",
    ),
    def(
        "min.insync.replicas",
        ConfigType::Int,
        "1",
        Some(1),
        "replicas that must acknowledge acks=all",
    ),
    def(
        "preallocate",
        ConfigType::Boolean,
        "false",
        None,
        "preallocate segment files",
    ),
    def(
        "remote.storage.enable",
        ConfigType::Boolean,
        "false",
        None,
        "tiered storage; unsupported",
    ),
    def(
        "retention.bytes",
        ConfigType::Long,
        "-1",
        Some(-1),
        "size beyond which old segments are deleted",
    ),
    def(
        "retention.ms",
        ConfigType::Long,
        "604800000",
        Some(-1),
        "age beyond which old segments are deleted",
    ),
    def(
        "segment.bytes",
        ConfigType::Int,
        "1073741824",
        Some(14),
        "size at which a segment rolls",
    ),
    def(
        "segment.index.bytes",
        ConfigType::Int,
        "10485760",
        Some(4),
        "size of a segment's offset index",
    ),
    def(
        "segment.jitter.ms",
        ConfigType::Long,
        "0",
        Some(0),
        "random jitter subtracted from segment.ms",
    ),
    def(
        "segment.ms",
        ConfigType::Long,
        "604800000",
        Some(1),
        "age at which a segment rolls",
    ),
    def(
        "unclean.leader.election.enable",
        ConfigType::Boolean,
        "false",
        None,
        "no effect on a single broker",
    ),
];

pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown topic config {name:?}")]
    Unknown { name: String },
    #[error("invalid value {value:?} for {name}: {reason}")]
    InvalidValue {
        name: String,
        value: String,
        reason: &'static str,
    },
}

/// `cleanup.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

/// The typed configuration of one partition log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub cleanup_policy: CleanupPolicy,
    pub delete_retention_ms: i64,
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub index_interval_bytes: u64,
    pub max_compaction_lag_ms: i64,
    pub max_message_bytes: usize,
    pub timestamp_type: TimestampType,
    /// How far before the broker's clock a `CreateTime` timestamp may be.
    pub timestamp_before_max_ms: i64,
    /// How far after the broker's clock a `CreateTime` timestamp may be.
    pub timestamp_after_max_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    pub min_compaction_lag_ms: i64,
    pub retention_bytes: i64,
    pub retention_ms: i64,
    pub segment_bytes: u64,
    pub segment_index_bytes: u64,
    pub segment_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig::from_layers(&BTreeMap::new(), &BTreeMap::new())
            .expect("the built-in defaults are valid")
    }
}

impl LogConfig {
    /// Builds the typed config from broker-wide defaults (names as in [`TOPIC_CONFIGS`]) and the
    /// topic's own overrides, overrides winning.
    pub fn from_layers(
        defaults: &BTreeMap<String, String>,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        for (name, value) in defaults.iter().chain(overrides) {
            validate_value(name, value)?;
        }
        let get = |name: &str| -> &str {
            overrides
                .get(name)
                .or_else(|| defaults.get(name))
                .map(String::as_str)
                .unwrap_or_else(|| config_def(name).expect("known config").default)
        };
        let long = |name: &str| -> i64 { get(name).trim().parse().expect("validated") };
        let policy = parse_cleanup_policy(get("cleanup.policy")).expect("validated");
        let timestamp_type = match get("message.timestamp.type") {
            "LogAppendTime" => TimestampType::LogAppendTime,
            _ => TimestampType::CreateTime,
        };
        Ok(LogConfig {
            cleanup_policy: policy,
            delete_retention_ms: long("delete.retention.ms"),
            flush_messages: long("flush.messages"),
            flush_ms: long("flush.ms"),
            index_interval_bytes: long("index.interval.bytes") as u64,
            max_compaction_lag_ms: long("max.compaction.lag.ms"),
            max_message_bytes: long("max.message.bytes") as usize,
            timestamp_type,
            timestamp_before_max_ms: long("message.timestamp.before.max.ms"),
            timestamp_after_max_ms: long("message.timestamp.after.max.ms"),
            min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio")
                .trim()
                .parse()
                .expect("validated"),
            min_compaction_lag_ms: long("min.compaction.lag.ms"),
            retention_bytes: long("retention.bytes"),
            retention_ms: long("retention.ms"),
            segment_bytes: long("segment.bytes") as u64,
            segment_index_bytes: long("segment.index.bytes") as u64,
            segment_ms: long("segment.ms"),
        })
    }

    /// Convenience for tests and embedders: the defaults with a few overrides.
    pub fn with_overrides<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ConfigError> {
        let overrides = pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LogConfig::from_layers(&BTreeMap::new(), &overrides)
    }

    /// True when every append must be durable before it is acknowledged.
    pub fn sync_every_append(&self) -> bool {
        self.flush_messages <= 1
    }
}

fn parse_cleanup_policy(value: &str) -> Option<CleanupPolicy> {
    let mut policy = CleanupPolicy::default();
    for part in value.split(',').map(str::trim) {
        match part {
            "delete" => policy.delete = true,
            "compact" => policy.compact = true,
            "" => {}
            _ => return None,
        }
    }
    Some(policy)
}

/// Checks one `name=value` pair against the table.
pub fn validate_value(name: &str, value: &str) -> Result<(), ConfigError> {
    let def = config_def(name).ok_or_else(|| ConfigError::Unknown {
        name: name.to_string(),
    })?;
    let invalid = |reason| ConfigError::InvalidValue {
        name: name.to_string(),
        value: value.to_string(),
        reason,
    };
    let trimmed = value.trim();
    match def.kind {
        ConfigType::Int | ConfigType::Long => {
            let v: i64 = trimmed.parse().map_err(|_| invalid("not an integer"))?;
            if def.kind == ConfigType::Int && i32::try_from(v).is_err() {
                return Err(invalid("out of the 32-bit range"));
            }
            if def.min.is_some_and(|min| v < min) {
                return Err(invalid("below the minimum"));
            }
        }
        ConfigType::Double => {
            let v: f64 = trimmed.parse().map_err(|_| invalid("not a number"))?;
            if !(0.0..=1.0).contains(&v) {
                return Err(invalid("must be between 0 and 1"));
            }
        }
        ConfigType::Boolean => {
            if !matches!(trimmed, "true" | "false") {
                return Err(invalid("must be true or false"));
            }
        }
        ConfigType::List | ConfigType::String => {}
    }
    match name {
        "cleanup.policy" if parse_cleanup_policy(trimmed).is_none() => {
            Err(invalid("must be delete, compact or both"))
        }
        "message.timestamp.type" if !matches!(trimmed, "CreateTime" | "LogAppendTime") => {
            Err(invalid("must be CreateTime or LogAppendTime"))
        }
        "compression.type"
            if !matches!(
                trimmed,
                "producer" | "uncompressed" | "none" | "gzip" | "snappy" | "lz4" | "zstd"
            ) =>
        {
            Err(invalid("unknown compression type"))
        }
        "remote.storage.enable" if trimmed == "true" => {
            Err(invalid("tiered storage is not supported"))
        }
        "segment.bytes" if trimmed.parse::<i64>().is_ok_and(|v| v > i32::MAX as i64) => {
            Err(invalid("segments are limited to 2 GiB"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_kafka() {
        let c = LogConfig::default();
        assert_eq!(c.segment_bytes, 1 << 30);
        assert_eq!(c.retention_ms, 7 * 24 * 3600 * 1000);
        assert_eq!(c.retention_bytes, -1);
        assert_eq!(c.max_message_bytes, 1_048_588);
        assert!(c.cleanup_policy.delete && !c.cleanup_policy.compact);
        assert_eq!(c.flush_messages, i64::MAX);
        assert!(!c.sync_every_append());
    }

    #[test]
    fn overrides_win_over_defaults() {
        let defaults = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        let overrides = BTreeMap::from([
            ("retention.ms".to_string(), "2000".to_string()),
            ("cleanup.policy".to_string(), "compact,delete".to_string()),
        ]);
        let c = LogConfig::from_layers(&defaults, &overrides).unwrap();
        assert_eq!(c.retention_ms, 2000);
        assert_eq!(
            c.cleanup_policy,
            CleanupPolicy {
                delete: true,
                compact: true
            }
        );
    }

    #[test]
    fn bad_values_are_typed_errors() {
        assert!(matches!(
            validate_value("retention.ms", "soon"),
            Err(ConfigError::InvalidValue { .. })
        ));
        assert!(matches!(
            validate_value("segment.bytes", "1"),
            Err(ConfigError::InvalidValue { .. })
        ));
        assert!(matches!(
            validate_value("cleanup.policy", "shred"),
            Err(ConfigError::InvalidValue { .. })
        ));
        assert!(matches!(
            validate_value("no.such.thing", "1"),
            Err(ConfigError::Unknown { .. })
        ));
        assert!(validate_value("min.cleanable.dirty.ratio", "0.1").is_ok());
    }
}
