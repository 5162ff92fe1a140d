//! `chorus topics create|list|describe|alter|delete`.

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::client::Cluster;
use super::error::{CliError, Result};
use super::lookup::{self, topic_name, EARLIEST, LATEST};
use super::output::{print, print_json, Format, Table};

/// Kafka's resource type for topics in the config APIs.
const TOPIC_RESOURCE: i8 = 2;
/// DescribeConfigs sources that mean "set on this topic".
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// Splits `K=V`.
pub fn key_value(arg: &'static str, text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(CliError::InvalidArgument {
            arg,
            value: text.to_string(),
            reason: "expected KEY=VALUE",
        }),
    }
}

pub async fn create(
    cluster: &mut Cluster,
    name: &str,
    partitions: Option<i32>,
    replication_factor: Option<i16>,
    configs: &[String],
    if_not_exists: bool,
    timeout_ms: i32,
) -> Result<()> {
    let configs = configs
        .iter()
        .map(|c| key_value("--config", c))
        .collect::<Result<Vec<_>>>()?;
    let conn = cluster.any();
    // v4+ lets the broker pick defaults (-1); older brokers need numbers.
    let version = conn.version::<CreateTopicsRequest>(i16::MAX)?;
    let default_partitions = if version >= 4 { -1 } else { 1 };
    let default_replicas = if version >= 4 { -1 } else { 1 };
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions.unwrap_or(default_partitions))
            .with_replication_factor(replication_factor.unwrap_or(default_replicas))
            .with_configs(
                configs
                    .into_iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k))
                            .with_value(Some(StrBytes::from_string(v)))
                    })
                    .collect(),
            )]);
    let response = conn.call(&request).await?;
    let t = response.topics.first().ok_or(CliError::Protocol {
        api: "CreateTopics",
        version,
        action: "matched to the request",
    })?;
    if t.error_code == 36 && if_not_exists {
        return print(&format!("Topic {name} already exists.\n"));
    }
    CliError::check(
        t.error_code,
        format!("creating topic {name}"),
        t.error_message.as_deref(),
    )?;
    print(&format!("Created topic {name}.\n"))
}

pub async fn list(cluster: &mut Cluster, include_internal: bool, format: Format) -> Result<()> {
    let metadata = cluster.metadata(None).await?;
    let mut topics: Vec<(String, usize, bool)> = metadata
        .topics
        .iter()
        .filter(|t| include_internal || !t.is_internal)
        .filter_map(|t| {
            let name = t.name.as_ref()?.to_string();
            Some((name, t.partitions.len(), t.is_internal))
        })
        .collect();
    topics.sort();
    match format {
        Format::Json => print_json(&json!(topics
            .iter()
            .map(|(n, p, i)| json!({"name": n, "partitions": p, "internal": i}))
            .collect::<Vec<_>>())),
        Format::Table => {
            let mut table = Table::new(&["TOPIC", "PARTITIONS"]);
            for (name, partitions, _) in topics {
                table.push(vec![name, partitions.to_string()]);
            }
            print(&table.render())
        }
    }
}

/// Configs set on the topic itself (not defaults).
async fn topic_configs(cluster: &mut Cluster, name: &str) -> Result<Vec<(String, String)>> {
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configuration_keys(None)]);
    let response = cluster.any().call(&request).await?;
    let mut out = Vec::new();
    for r in response.results {
        CliError::check(
            r.error_code,
            format!("configs of topic {name}"),
            r.error_message.as_deref(),
        )?;
        for c in r.configs {
            if c.config_source == DYNAMIC_TOPIC_CONFIG {
                let value = if c.is_sensitive {
                    "(sensitive)".to_string()
                } else {
                    c.value.map(|v| v.to_string()).unwrap_or_default()
                };
                out.push((c.name.to_string(), value));
            }
        }
    }
    out.sort();
    Ok(out)
}

pub async fn describe(cluster: &mut Cluster, name: &str, format: Format) -> Result<()> {
    let info = lookup::topic(cluster, name).await?;
    let all: Vec<(String, i32)> = info
        .partitions
        .iter()
        .map(|p| (name.to_string(), p.partition))
        .collect();
    let starts = lookup::offsets_at(cluster, &all, EARLIEST).await?;
    let ends = lookup::offsets_at(cluster, &all, LATEST).await?;
    let configs = topic_configs(cluster, name).await?;
    let offsets = |p: i32| {
        let key = (name.to_string(), p);
        (starts.get(&key).copied(), ends.get(&key).copied())
    };
    let join = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    match format {
        Format::Json => print_json(&json!({
            "name": name,
            "topic_id": info.id.to_string(),
            "internal": info.internal,
            "configs": configs.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "partitions": info.partitions.iter().map(|p| {
                let (start, end) = offsets(p.partition);
                json!({
                    "partition": p.partition,
                    "leader": p.leader,
                    "replicas": p.replicas,
                    "isr": p.isr,
                    "log_start_offset": start,
                    "log_end_offset": end,
                })
            }).collect::<Vec<_>>(),
        })),
        Format::Table => {
            let configs_text = if configs.is_empty() {
                "-".to_string()
            } else {
                configs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let mut out = format!(
                "Topic: {name}\tTopicId: {}\tPartitionCount: {}\tConfigs: {configs_text}\n\n",
                info.id,
                info.partitions.len()
            );
            let mut table = Table::new(&[
                "PARTITION",
                "LEADER",
                "REPLICAS",
                "ISR",
                "LOG-START-OFFSET",
                "LOG-END-OFFSET",
            ]);
            for p in &info.partitions {
                let (start, end) = offsets(p.partition);
                table.push(vec![
                    p.partition.to_string(),
                    p.leader.to_string(),
                    join(&p.replicas),
                    join(&p.isr),
                    super::output::or_dash(start),
                    super::output::or_dash(end),
                ]);
            }
            out.push_str(&table.render());
            print(&out)
        }
    }
}

pub async fn alter(
    cluster: &mut Cluster,
    name: &str,
    partitions: Option<i32>,
    set: &[String],
    delete: &[String],
    timeout_ms: i32,
) -> Result<()> {
    if partitions.is_none() && set.is_empty() && delete.is_empty() {
        return Err(CliError::InvalidArgument {
            arg: "topics alter",
            value: name.to_string(),
            reason: "nothing to change: give --partitions, --config or --delete-config",
        });
    }
    // Fail early, before changing anything, on a topic that is not there.
    lookup::topic(cluster, name).await?;
    let set = set
        .iter()
        .map(|c| key_value("--config", c))
        .collect::<Result<Vec<_>>>()?;
    if let Some(count) = partitions {
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(timeout_ms)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(name))
                .with_count(count)
                .with_assignments(None)]);
        let response = cluster.any().call(&request).await?;
        for r in response.results {
            CliError::check(
                r.error_code,
                format!("growing topic {name} to {count} partitions"),
                r.error_message.as_deref(),
            )?;
        }
        print(&format!("Topic {name} now has {count} partitions.\n"))?;
    }
    if !set.is_empty() || !delete.is_empty() {
        let mut configs: Vec<AlterableConfig> = set
            .iter()
            .map(|(k, v)| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(OP_SET)
                    .with_value(Some(StrBytes::from_string(v.clone())))
            })
            .collect();
        configs.extend(delete.iter().map(|k| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_config_operation(OP_DELETE)
        }));
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_configs(configs),
        ]);
        let response = cluster.any().call(&request).await?;
        for r in response.responses {
            CliError::check(
                r.error_code,
                format!("changing the configs of topic {name}"),
                r.error_message.as_deref(),
            )?;
        }
        print(&format!("Updated the configs of topic {name}.\n"))?;
    }
    Ok(())
}

pub async fn delete(cluster: &mut Cluster, names: &[String], timeout_ms: i32) -> Result<()> {
    let conn = cluster.any();
    let version = conn.version::<DeleteTopicsRequest>(i16::MAX)?;
    let request = if version >= 6 {
        DeleteTopicsRequest::default().with_topics(
            names
                .iter()
                .map(|n| DeleteTopicState::default().with_name(Some(topic_name(n))))
                .collect(),
        )
    } else {
        DeleteTopicsRequest::default()
            .with_topic_names(names.iter().map(|n| topic_name(n)).collect())
    }
    .with_timeout_ms(timeout_ms);
    let response = conn.call(&request).await?;
    let mut failure = None;
    for r in response.responses {
        let name = r.name.map(|n| n.to_string()).unwrap_or_default();
        match r.error_code {
            0 => print(&format!("Deleted topic {name}.\n"))?,
            3 => {
                failure.get_or_insert(CliError::UnknownTopic(name));
            }
            code => {
                failure.get_or_insert(CliError::Kafka {
                    what: format!("deleting topic {name}"),
                    code,
                    message: r.error_message.map(|m| m.to_string()),
                });
            }
        }
    }
    failure.map_or(Ok(()), Err)
}
