//! DescribeConfigs: every topic config with its value and where it comes from (the topic's
//! own override, a broker-wide default from the configuration file, or Kafka's default), and
//! the broker's own (static) settings.

use std::collections::BTreeMap;

use chorus_storage::config::{ConfigDef, TOPIC_CONFIGS};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::{Message, StrBytes, VersionRange};

use super::{str_bytes, RequestContext};
use crate::broker::Broker;
use crate::error::BrokerError;

pub const VERSIONS: VersionRange = DescribeConfigsRequest::VERSIONS;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// Kafka's `ConfigSource` codes.
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

/// One config value as described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: &'static str,
    pub value: String,
    pub source: i8,
    pub def: Option<&'static ConfigDef>,
    /// Lower-precedence values hidden by this one, for `include_synonyms`.
    pub synonyms: Vec<(String, String, i8)>,
}

/// The effective topic configs: overrides, then broker defaults, then built-in defaults.
pub fn topic_entries(
    broker_defaults: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
) -> Vec<Entry> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let mut layers: Vec<(String, String, i8)> = Vec::new();
            if let Some(v) = overrides.get(def.name) {
                layers.push((def.name.to_string(), v.clone(), SOURCE_TOPIC));
            }
            if let Some(v) = broker_defaults.get(def.name) {
                layers.push((format!("log.{}", def.name), v.clone(), SOURCE_STATIC_BROKER));
            }
            layers.push((
                def.name.to_string(),
                def.default.to_string(),
                SOURCE_DEFAULT,
            ));
            let (_, value, source) = layers[0].clone();
            Entry {
                name: def.name,
                value,
                source,
                def: Some(def),
                synonyms: layers,
            }
        })
        .collect()
}

/// The broker's own settings (read-only: they come from its configuration).
fn broker_entries(broker: &Broker) -> Vec<Entry> {
    let c = &broker.config;
    let entry = |name: &'static str, value: String| Entry {
        name,
        value: value.clone(),
        source: SOURCE_STATIC_BROKER,
        def: None,
        synonyms: vec![(name.to_string(), value, SOURCE_STATIC_BROKER)],
    };
    vec![
        entry(
            "advertised.listeners",
            format!("PLAINTEXT://{}:{}", c.advertised_host, c.advertised_port),
        ),
        entry(
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
        ),
        entry("broker.id", c.node_id.to_string()),
        entry(
            "connections.max.idle.ms",
            c.idle_timeout.as_millis().to_string(),
        ),
        entry("listeners", format!("PLAINTEXT://{}", c.listen)),
        entry("log.dirs", c.data_dir.display().to_string()),
        entry("max.connections", c.max_connections.to_string()),
        entry("node.id", c.node_id.to_string()),
        entry("num.partitions", c.num_partitions.to_string()),
        entry("socket.request.max.bytes", c.max_request_bytes.to_string()),
    ]
}

pub async fn handle(
    ctx: &RequestContext,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let broker = &ctx.broker;
    let results = request
        .resources
        .into_iter()
        .map(|r| {
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let entries = match r.resource_type {
                RESOURCE_TOPIC => match broker.logs.topic(&r.resource_name) {
                    Some(t) => Ok(topic_entries(&broker.logs.defaults(), &t.configs)),
                    None => Err(BrokerError::Log(chorus_storage::LogError::UnknownTopic {
                        name: r.resource_name.to_string(),
                    })),
                },
                RESOURCE_BROKER => {
                    if r.resource_name.is_empty()
                        || r.resource_name.as_str() == broker.node_id().to_string()
                    {
                        Ok(broker_entries(broker))
                    } else {
                        Err(BrokerError::InvalidRequest("unknown broker id"))
                    }
                }
                other => Err(BrokerError::UnsupportedResource(other)),
            };
            match entries {
                Ok(entries) => {
                    let wanted = r.configuration_keys.as_ref();
                    let configs = entries
                        .into_iter()
                        .filter(|e| {
                            wanted.is_none_or(|keys| keys.iter().any(|k| k.as_str() == e.name))
                        })
                        .map(|e| {
                            encode_entry(
                                e,
                                r.resource_type == RESOURCE_BROKER,
                                version,
                                request.include_synonyms,
                                request.include_documentation,
                            )
                        })
                        .collect();
                    base.with_configs(configs)
                }
                Err(e) => base
                    .with_error_code(e.code())
                    .with_error_message(Some(e.message())),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn encode_entry(
    e: Entry,
    read_only: bool,
    version: i16,
    include_synonyms: bool,
    include_documentation: bool,
) -> DescribeConfigsResourceResult {
    let mut r = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_static_str(e.name))
        .with_value(Some(str_bytes(e.value)))
        .with_read_only(read_only)
        .with_config_source(e.source);
    if version >= 3 {
        if let Some(def) = e.def {
            r = r.with_config_type(def.kind.kafka_code());
            if include_documentation {
                r = r.with_documentation(Some(StrBytes::from_static_str(def.doc)));
            }
        } else {
            r = r.with_config_type(2); // STRING
        }
    }
    if include_synonyms {
        r = r.with_synonyms(
            e.synonyms
                .into_iter()
                .map(|(name, value, source)| {
                    DescribeConfigsSynonym::default()
                        .with_name(str_bytes(name))
                        .with_value(Some(str_bytes(value)))
                        .with_source(source)
                })
                .collect(),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_follow_precedence() {
        let defaults = BTreeMap::from([("retention.ms".to_string(), "5".to_string())]);
        let overrides = BTreeMap::from([("segment.bytes".to_string(), "2048".to_string())]);
        let entries = topic_entries(&defaults, &overrides);
        let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap().clone();
        assert_eq!(
            (
                get("segment.bytes").value.as_str(),
                get("segment.bytes").source
            ),
            ("2048", SOURCE_TOPIC)
        );
        assert_eq!(
            (
                get("retention.ms").value.as_str(),
                get("retention.ms").source
            ),
            ("5", SOURCE_STATIC_BROKER)
        );
        assert_eq!(
            (
                get("cleanup.policy").value.as_str(),
                get("cleanup.policy").source
            ),
            ("delete", SOURCE_DEFAULT)
        );
        assert_eq!(get("retention.ms").synonyms.len(), 2);
        assert_eq!(entries.len(), TOPIC_CONFIGS.len());
    }
}
