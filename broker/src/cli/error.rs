//! What can go wrong in an admin command, each with the facts the operator needs.

use kafka_protocol::error::ResponseError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach a broker at {addr}")]
    Unreachable {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{addr} did not answer {api} within {timeout_ms} ms")]
    Timeout {
        addr: String,
        api: &'static str,
        timeout_ms: u64,
    },

    #[error("the connection to {addr} failed during {api}")]
    Connection {
        addr: String,
        api: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("{addr} does not support {api} in any version this tool speaks")]
    UnsupportedApi { addr: String, api: &'static str },

    #[error("{api} v{version}: the message could not be {action}")]
    Protocol {
        api: &'static str,
        version: i16,
        action: &'static str,
    },

    #[error("unknown topic {0}")]
    UnknownTopic(String),

    #[error("unknown partition {topic}-{partition}")]
    UnknownPartition { topic: String, partition: i32 },

    #[error("unknown group {0}")]
    UnknownGroup(String),

    #[error("{what}: {}{}", kafka_name(*code), message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kafka {
        what: String,
        code: i16,
        message: Option<String>,
    },

    #[error("group {group} has {members} active member(s); stop its consumers before changing its offsets")]
    GroupActive { group: String, members: usize },

    #[error("{arg} {value:?}: {reason}")]
    InvalidArgument {
        arg: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error("could not read standard input")]
    Stdin(#[source] std::io::Error),

    #[error("could not write the output")]
    Stdout(#[source] std::io::Error),

    #[error("could not start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// Kafka's name for an error code, such as `UnknownTopicOrPartition`.
pub fn kafka_name(code: i16) -> String {
    ResponseError::try_from_code(code).map_or_else(|| "no error".to_string(), |e| e.to_string())
}

impl CliError {
    /// The error for a non-zero Kafka error code, or `Ok`.
    pub fn check(
        code: i16,
        what: impl Into<String>,
        message: Option<&str>,
    ) -> Result<(), CliError> {
        if code == 0 {
            return Ok(());
        }
        Err(CliError::Kafka {
            what: what.into(),
            code,
            message: message.map(str::to_string),
        })
    }
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;
