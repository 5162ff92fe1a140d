//! Broker configuration: embedded defaults, then a TOML file (`--config`), then environment
//! variables (`CHORUS_*`), then flags; each later layer wins.
//!
//! [`ServeArgs`] is the raw command line (clap reads flags and the environment), [`FileConfig`]
//! the raw TOML, and [`BrokerConfig`] the validated result the broker runs with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chorus_coordinator::GroupConfig;
use serde::Deserialize;

/// `chorus serve` flags. Every one is optional so the file and the defaults can fill in.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "CHORUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where topics are stored [default: ./data].
    #[arg(long, env = "CHORUS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the Kafka listener binds [default: 127.0.0.1:9092].
    #[arg(long, env = "CHORUS_LISTEN")]
    pub listen: Option<String>,
    /// host:port clients are told to connect to [default: the listen address].
    #[arg(long, env = "CHORUS_ADVERTISED_LISTENER")]
    pub advertised_listener: Option<String>,
    /// Address of the HTTP listener (admin, metrics, chat) [default: 127.0.0.1:8080].
    #[arg(long, env = "CHORUS_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// This broker's node id [default: 1].
    #[arg(long, env = "CHORUS_NODE_ID")]
    pub node_id: Option<i32>,
    /// Largest request accepted, in bytes [default: 104857600].
    #[arg(long, env = "CHORUS_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Most client connections at once [default: 10000].
    #[arg(long, env = "CHORUS_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most partitions over all topics; creations beyond it are refused [default: a sixth
    /// of the open-file limit].
    #[arg(long, env = "CHORUS_MAX_PARTITIONS")]
    pub max_partitions: Option<u32>,
    /// Close connections idle this long, in milliseconds [default: 600000].
    #[arg(long, env = "CHORUS_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Create unknown topics when a client asks for them [default: true].
    #[arg(long, env = "CHORUS_AUTO_CREATE_TOPICS")]
    pub auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics and of CreateTopics without a count [default: 1].
    #[arg(long, env = "CHORUS_NUM_PARTITIONS")]
    pub num_partitions: Option<u32>,
    /// A default for a topic config, as NAME=VALUE with Kafka's topic config names
    /// (e.g. `--topic-default flush.messages=1`). Repeatable.
    #[arg(long = "topic-default", value_name = "NAME=VALUE")]
    pub topic_defaults: Vec<String>,
    /// How long a new consumer group waits for more members before its first generation,
    /// in milliseconds [default: 3000].
    #[arg(long, env = "CHORUS_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<i32>,
    /// Smallest session timeout a group member may ask for, in milliseconds [default: 6000].
    #[arg(long, env = "CHORUS_GROUP_MIN_SESSION_TIMEOUT_MS")]
    pub group_min_session_timeout_ms: Option<i32>,
    /// Largest session timeout a group member may ask for, in milliseconds [default: 1800000].
    #[arg(long, env = "CHORUS_GROUP_MAX_SESSION_TIMEOUT_MS")]
    pub group_max_session_timeout_ms: Option<i32>,
    /// How often KIP-848 consumers are told to heartbeat, in milliseconds [default: 5000].
    #[arg(long, env = "CHORUS_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS")]
    pub group_consumer_heartbeat_interval_ms: Option<i32>,
    /// A KIP-848 consumer silent this long is removed, in milliseconds [default: 45000].
    #[arg(long, env = "CHORUS_GROUP_CONSUMER_SESSION_TIMEOUT_MS")]
    pub group_consumer_session_timeout_ms: Option<i32>,
    /// How long an empty group's committed offsets are kept, in minutes [default: 10080].
    #[arg(long, env = "CHORUS_OFFSETS_RETENTION_MINUTES")]
    pub offsets_retention_minutes: Option<i64>,
    /// Partitions of the `__consumer_offsets` topic, fixed when it is first created
    /// [default: 50].
    #[arg(long, env = "CHORUS_OFFSETS_TOPIC_NUM_PARTITIONS")]
    pub offsets_topic_num_partitions: Option<u32>,

    /// HS256 secret of the chat fabric's JWTs [default: a random one, printed at start].
    #[arg(long, env = "CHORUS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Run the chat fabric on the HTTP listener [default: true].
    #[arg(long, env = "CHORUS_CHAT_ENABLED")]
    pub chat_enabled: Option<bool>,

    /// An `Origin` allowed to open chat WebSockets (repeatable) [default: any].
    #[arg(long = "chat-allowed-origin", value_name = "ORIGIN")]
    pub chat_allowed_origins: Vec<String>,
}

/// The TOML file. Unknown keys are an error, so a typo does not pass silently.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub advertised_listener: Option<String>,
    pub http_listen: Option<String>,
    pub node_id: Option<i32>,
    pub max_request_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_partitions: Option<u32>,
    pub idle_timeout_ms: Option<u64>,
    pub auto_create_topics: Option<bool>,
    pub num_partitions: Option<u32>,
    #[serde(default)]
    pub topic_defaults: BTreeMap<String, toml::Value>,
    pub group_initial_rebalance_delay_ms: Option<i32>,
    pub group_min_session_timeout_ms: Option<i32>,
    pub group_max_session_timeout_ms: Option<i32>,
    pub offsets_retention_minutes: Option<i64>,
    pub offsets_topic_num_partitions: Option<u32>,
    pub jwt_secret: Option<String>,
    pub chat_enabled: Option<bool>,
    pub chat_allowed_origins: Option<Vec<String>>,
    pub group_consumer_heartbeat_interval_ms: Option<i32>,
    pub group_consumer_session_timeout_ms: Option<i32>,
    /// The chat plugins: `[[chat.cdc]]`, `[chat.notify]`, `[chat.email]`, `[chat.retry]`.
    #[serde(default)]
    pub chat: Option<chorus_chat::plugins::PluginsConfig>,
}

impl FileConfig {
    /// Reads and parses a TOML configuration file.
    pub fn read(path: &std::path::Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub http_listen: SocketAddr,
    pub node_id: i32,
    pub max_request_bytes: usize,
    pub max_connections: usize,
    /// Most partitions over all topics (see `ManagerOptions::max_partitions`).
    pub max_partitions: u32,
    pub idle_timeout: Duration,
    pub auto_create_topics: bool,
    pub num_partitions: u32,
    /// Broker-wide defaults for topic configs (Kafka topic config names).
    pub topic_defaults: BTreeMap<String, String>,
    /// The group coordinator's settings.
    pub groups: GroupConfig,
    pub offsets_topic_partitions: u32,
    /// The storage engine's file layer; tests put a fault injector here. Not configurable.
    pub io: chorus_storage::io::Io,
    pub chat_enabled: bool,
    /// `None`: make a random one at start (development).
    pub jwt_secret: Option<String>,
    /// `Origin`s allowed to open chat WebSockets; empty allows any.
    pub chat_allowed_origins: Vec<String>,
    /// The whole chat configuration, when a test tunes its timings; `None` builds it from
    /// the settings above.
    pub chat_config: Option<chorus_chat::ChatConfig>,
    /// CDC ingest, chat notifications and e-mail (the `[chat]` section of the file).
    pub chat_plugins: chorus_chat::plugins::PluginsConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid configuration: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{name} = {value:?}: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("chat plugins: {0}")]
    Plugins(String),
    #[error("topic default {0}")]
    TopicDefault(#[from] chorus_storage::config::ConfigError),
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig::resolve(ServeArgs::default(), FileConfig::default())
            .expect("the embedded defaults are valid")
    }
}

impl BrokerConfig {
    /// Reads the file named by `--config` (if any) and layers everything.
    pub fn load(args: ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        BrokerConfig::resolve(args, file)
    }

    /// Layers flags/environment over the file over the defaults, and validates.
    pub fn resolve(args: ServeArgs, file: FileConfig) -> Result<Self, ConfigError> {
        let groups = group_config(&args, &file)?;
        let chat_plugins = file.chat.clone().unwrap_or_default();
        chat_plugins.validate().map_err(ConfigError::Plugins)?;
        let listen_text = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:9092".to_string());
        let listen: SocketAddr = listen_text.parse().map_err(|_| ConfigError::Invalid {
            name: "listen",
            value: listen_text.clone(),
            reason: "expected HOST:PORT with a numeric IP",
        })?;
        let advertised_text = args.advertised_listener.or(file.advertised_listener);
        let (advertised_host, advertised_port) = match advertised_text {
            Some(text) => parse_host_port(&text).ok_or(ConfigError::Invalid {
                name: "advertised_listener",
                value: text.clone(),
                reason: "expected HOST:PORT",
            })?,
            None => (listen.ip().to_string(), listen.port()),
        };
        let http_text = args
            .http_listen
            .or(file.http_listen)
            .unwrap_or_else(|| "127.0.0.1:8080".to_string());
        let http_listen = http_text.parse().map_err(|_| ConfigError::Invalid {
            name: "http_listen",
            value: http_text.clone(),
            reason: "expected HOST:PORT with a numeric IP",
        })?;
        let max_request_bytes = args
            .max_request_bytes
            .or(file.max_request_bytes)
            .unwrap_or(100 << 20);
        if max_request_bytes < 1024 || max_request_bytes > i32::MAX as usize {
            return Err(ConfigError::Invalid {
                name: "max_request_bytes",
                value: max_request_bytes.to_string(),
                reason: "must be between 1 KiB and 2 GiB",
            });
        }
        let num_partitions = args.num_partitions.or(file.num_partitions).unwrap_or(1);
        if num_partitions == 0 {
            return Err(ConfigError::Invalid {
                name: "num_partitions",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        let mut topic_defaults = BTreeMap::new();
        for (k, v) in file.topic_defaults {
            let value = match v {
                toml::Value::String(s) => s,
                other => other.to_string(),
            };
            topic_defaults.insert(k, value);
        }
        for pair in args.topic_defaults {
            let (k, v) = pair.split_once('=').ok_or(ConfigError::Invalid {
                name: "topic-default",
                value: pair.clone(),
                reason: "expected NAME=VALUE",
            })?;
            topic_defaults.insert(k.trim().to_string(), v.trim().to_string());
        }
        for (k, v) in &topic_defaults {
            chorus_storage::config::validate_value(k, v)?;
        }
        let offsets_topic_partitions = args
            .offsets_topic_num_partitions
            .or(file.offsets_topic_num_partitions)
            .unwrap_or(50);
        if !(1..=1000).contains(&offsets_topic_partitions) {
            return Err(ConfigError::Invalid {
                name: "offsets_topic_num_partitions",
                value: offsets_topic_partitions.to_string(),
                reason: "must be between 1 and 1000",
            });
        }
        Ok(BrokerConfig {
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            listen,
            advertised_host,
            advertised_port,
            http_listen,
            node_id: args.node_id.or(file.node_id).unwrap_or(1),
            max_request_bytes,
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(10_000),
            max_partitions: args
                .max_partitions
                .or(file.max_partitions)
                .unwrap_or_else(default_max_partitions),
            idle_timeout: Duration::from_millis(
                args.idle_timeout_ms
                    .or(file.idle_timeout_ms)
                    .unwrap_or(600_000),
            ),
            auto_create_topics: args
                .auto_create_topics
                .or(file.auto_create_topics)
                .unwrap_or(true),
            num_partitions,
            topic_defaults,
            groups,
            offsets_topic_partitions,
            io: chorus_storage::io::Io::new(),
            chat_enabled: args.chat_enabled.or(file.chat_enabled).unwrap_or(true),
            jwt_secret: args.jwt_secret.or(file.jwt_secret),
            chat_allowed_origins: if args.chat_allowed_origins.is_empty() {
                file.chat_allowed_origins.unwrap_or_default()
            } else {
                args.chat_allowed_origins
            },
            chat_config: None,
            chat_plugins,
        })
    }

    /// A configuration for tests: a data directory, port 0 on loopback.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Self {
        BrokerConfig {
            data_dir: data_dir.into(),
            listen: "127.0.0.1:0".parse().expect("literal"),
            http_listen: "127.0.0.1:0".parse().expect("literal"),
            advertised_port: 0,
            // Tests form groups quickly and use short sessions.
            groups: GroupConfig {
                initial_rebalance_delay_ms: 100,
                min_session_timeout_ms: 500,
                consumer_heartbeat_interval_ms: 200,
                consumer_session_timeout_ms: 6_000,
                ..GroupConfig::default()
            },
            offsets_topic_partitions: 4,
            // Tests of the chat fabric switch it on; the rest keep their topics to themselves.
            chat_enabled: false,
            jwt_secret: Some("test-secret".into()),
            ..BrokerConfig::default()
        }
    }
}

/// A partition holds three open files per segment (log, offset index, time index). By
/// default partitions' first segments may take half of the process's open-file limit; the
/// rest is for later segments, connections and everything else.
fn default_max_partitions() -> u32 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let files = if known && limit.rlim_cur != libc::RLIM_INFINITY {
        limit.rlim_cur
    } else {
        1 << 20
    };
    (files / 6).min(u32::MAX as u64) as u32
}

fn group_config(args: &ServeArgs, file: &FileConfig) -> Result<GroupConfig, ConfigError> {
    let defaults = GroupConfig::default();
    let delay = args
        .group_initial_rebalance_delay_ms
        .or(file.group_initial_rebalance_delay_ms)
        .unwrap_or(defaults.initial_rebalance_delay_ms);
    let min = args
        .group_min_session_timeout_ms
        .or(file.group_min_session_timeout_ms)
        .unwrap_or(defaults.min_session_timeout_ms);
    let max = args
        .group_max_session_timeout_ms
        .or(file.group_max_session_timeout_ms)
        .unwrap_or(defaults.max_session_timeout_ms);
    let retention_minutes = args
        .offsets_retention_minutes
        .or(file.offsets_retention_minutes)
        .unwrap_or(defaults.offsets_retention_ms / 60_000);
    let heartbeat = args
        .group_consumer_heartbeat_interval_ms
        .or(file.group_consumer_heartbeat_interval_ms)
        .unwrap_or(defaults.consumer_heartbeat_interval_ms);
    let consumer_session = args
        .group_consumer_session_timeout_ms
        .or(file.group_consumer_session_timeout_ms)
        .unwrap_or(defaults.consumer_session_timeout_ms);
    let invalid = |name, value: String, reason| ConfigError::Invalid {
        name,
        value,
        reason,
    };
    if delay < 0 {
        return Err(invalid(
            "group_initial_rebalance_delay_ms",
            delay.to_string(),
            "must not be negative",
        ));
    }
    if min <= 0 || max < min {
        return Err(invalid(
            "group_min_session_timeout_ms",
            format!("{min}..{max}"),
            "must be positive and at most group_max_session_timeout_ms",
        ));
    }
    if retention_minutes <= 0 {
        return Err(invalid(
            "offsets_retention_minutes",
            retention_minutes.to_string(),
            "must be positive",
        ));
    }
    if heartbeat <= 0 || consumer_session <= heartbeat {
        return Err(invalid(
            "group_consumer_heartbeat_interval_ms",
            format!("{heartbeat} (session {consumer_session})"),
            "must be positive and below group_consumer_session_timeout_ms",
        ));
    }
    Ok(GroupConfig {
        initial_rebalance_delay_ms: delay,
        consumer_heartbeat_interval_ms: heartbeat,
        consumer_session_timeout_ms: consumer_session,
        min_session_timeout_ms: min,
        max_session_timeout_ms: max,
        offsets_retention_ms: retention_minutes.saturating_mul(60_000),
        ..defaults
    })
}

fn parse_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = BrokerConfig::default();
        assert_eq!(c.listen, "127.0.0.1:9092".parse().unwrap());
        assert_eq!(
            (c.advertised_host.as_str(), c.advertised_port),
            ("127.0.0.1", 9092)
        );
        assert_eq!(c.http_listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.max_request_bytes, 100 << 20);
        assert!(c.auto_create_topics);
    }

    #[test]
    fn the_readme_example_of_the_chat_section_is_valid() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```toml\n[chat.retry]").expect("the example") + "```toml\n".len();
        let text = &readme[start..start + readme[start..].find("```").expect("its end")];
        let file: FileConfig = toml::from_str(text).expect("the example parses");
        let c = BrokerConfig::resolve(ServeArgs::default(), file).expect("and is valid");
        let chat = &c.chat_plugins;
        assert_eq!(chat.cdc.len(), 1);
        assert_eq!(chat.cdc[0].fields["msg_id"], "id");
        assert_eq!(chat.retry.retries, 5);
        let email = chat.email.as_ref().expect("an e-mail section");
        assert_eq!(email.addresses["alice"], "alice@example.com");
        assert_eq!(chat.notify.dedup_seconds, 6 * 3600);
        // A misspelt key or a bad mapping is refused when the file is read.
        assert!(toml::from_str::<FileConfig>("[chat.notfy]\nenabled = true").is_err());
        let bad: FileConfig = toml::from_str(
            "[[chat.cdc]]\ntopic = \"t\"\nkind = \"chat_message\"\nfields = { reciever_id = \"r\" }",
        )
        .unwrap();
        let err = BrokerConfig::resolve(ServeArgs::default(), bad).unwrap_err();
        assert!(err.to_string().contains("reciever_id"), "{err}");
    }

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let file: FileConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:9000"
            num_partitions = 3
            max_partitions = 50
            advertised_listener = "kafka.example:19092"
            [topic_defaults]
            "retention.ms" = 1000
            "cleanup.policy" = "compact"
            "#,
        )
        .unwrap();
        let args = ServeArgs {
            listen: Some("127.0.0.1:9100".into()),
            topic_defaults: vec!["retention.ms=2000".into()],
            ..ServeArgs::default()
        };
        let c = BrokerConfig::resolve(args, file).unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.num_partitions, 3);
        assert_eq!(c.max_partitions, 50);
        assert_eq!(c.advertised_host, "kafka.example");
        assert_eq!(c.advertised_port, 19092);
        assert_eq!(c.topic_defaults["retention.ms"], "2000");
        assert_eq!(c.topic_defaults["cleanup.policy"], "compact");
    }

    #[test]
    fn bad_values_are_reported_by_name() {
        let bad = |args: ServeArgs| BrokerConfig::resolve(args, FileConfig::default()).unwrap_err();
        assert!(matches!(
            bad(ServeArgs {
                listen: Some("nowhere".into()),
                ..ServeArgs::default()
            }),
            ConfigError::Invalid { name: "listen", .. }
        ));
        assert!(matches!(
            bad(ServeArgs {
                topic_defaults: vec!["retention.ms=soon".into()],
                ..ServeArgs::default()
            }),
            ConfigError::TopicDefault(_)
        ));
        assert!(toml::from_str::<FileConfig>("no_such_key = 1").is_err());
    }
}
