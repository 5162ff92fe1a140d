//! IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT on a topic's overrides (APPEND and
//! SUBTRACT only for list settings such as `cleanup.policy`).

use std::collections::BTreeMap;

use chorus_storage::config::{config_def, ConfigType};
use kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::{Message, StrBytes, VersionRange};

use super::alter_configs::{apply_topic_configs, check_resource};
use super::RequestContext;
use crate::error::BrokerError;

pub const VERSIONS: VersionRange = IncrementalAlterConfigsRequest::VERSIONS;

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

/// Applies the operations to a topic's current overrides; `effective` gives the value in force
/// (override or default) that APPEND and SUBTRACT start from.
pub fn apply_ops(
    mut overrides: BTreeMap<String, String>,
    ops: &[AlterableConfig],
    effective: impl Fn(&str) -> String,
) -> Result<BTreeMap<String, String>, BrokerError> {
    for op in ops {
        let name = op.name.to_string();
        let value = op.value.as_ref().map(|v| v.to_string());
        let is_list = config_def(&name).is_some_and(|d| d.kind == ConfigType::List);
        match (op.config_operation, value) {
            (SET, Some(v)) => {
                overrides.insert(name, v);
            }
            (DELETE, _) => {
                overrides.remove(&name);
            }
            (APPEND | SUBTRACT, Some(v)) if is_list => {
                let current = overrides
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| effective(&name));
                let mut items: Vec<String> = current
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if op.config_operation == APPEND {
                        if !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        }
                    } else {
                        items.retain(|i| i != item);
                    }
                }
                overrides.insert(name, items.join(","));
            }
            (code, _) => return Err(BrokerError::InvalidConfigOperation(code, name)),
        }
    }
    Ok(overrides)
}

pub async fn handle(
    ctx: &RequestContext,
    request: IncrementalAlterConfigsRequest,
    _version: i16,
) -> IncrementalAlterConfigsResponse {
    let validate_only = request.validate_only;
    let resources = request.resources;
    let shape: Vec<(i8, StrBytes)> = resources
        .iter()
        .map(|r| (r.resource_type, r.resource_name.clone()))
        .collect();
    let result = ctx
        .blocking(move |broker| {
            Ok(resources
                .into_iter()
                .map(|r| {
                    let outcome = check_resource(r.resource_type).and_then(|()| {
                        let topic = broker.logs.topic(&r.resource_name).ok_or_else(|| {
                            BrokerError::Log(chorus_storage::LogError::UnknownTopic {
                                name: r.resource_name.to_string(),
                            })
                        })?;
                        let defaults = broker.logs.defaults();
                        let effective = |name: &str| {
                            defaults
                                .get(name)
                                .cloned()
                                .or_else(|| config_def(name).map(|d| d.default.to_string()))
                                .unwrap_or_default()
                        };
                        let next = apply_ops(topic.configs, &r.configs, effective)?;
                        apply_topic_configs(broker, &r.resource_name, next, validate_only)
                    });
                    respond(r.resource_type, r.resource_name, outcome)
                })
                .collect::<Vec<_>>())
        })
        .await;
    let responses = result.unwrap_or_else(|_| {
        // Only a failed blocking task ends here.
        shape
            .into_iter()
            .map(|(t, n)| respond(t, n, Err(BrokerError::Internal("config change failed"))))
            .collect()
    });
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

fn respond(
    resource_type: i8,
    resource_name: StrBytes,
    outcome: Result<(), BrokerError>,
) -> AlterConfigsResourceResponse {
    let base = AlterConfigsResourceResponse::default()
        .with_resource_type(resource_type)
        .with_resource_name(resource_name);
    match outcome {
        Ok(()) => base,
        Err(e) => base
            .with_error_code(e.code())
            .with_error_message(Some(e.message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(name: &'static str, code: i8, value: Option<&'static str>) -> AlterableConfig {
        AlterableConfig::default()
            .with_name(StrBytes::from_static_str(name))
            .with_config_operation(code)
            .with_value(value.map(StrBytes::from_static_str))
    }

    #[test]
    fn operations_edit_the_overrides() {
        let start = BTreeMap::from([("retention.ms".to_string(), "1".to_string())]);
        let out = apply_ops(
            start,
            &[
                op("segment.bytes", SET, Some("2048")),
                op("retention.ms", DELETE, None),
                op("cleanup.policy", APPEND, Some("compact")),
            ],
            |_| "delete".to_string(),
        )
        .unwrap();
        assert_eq!(out.get("segment.bytes").map(String::as_str), Some("2048"));
        assert!(!out.contains_key("retention.ms"));
        assert_eq!(
            out.get("cleanup.policy").map(String::as_str),
            Some("delete,compact")
        );
        let out = apply_ops(
            out,
            &[op("cleanup.policy", SUBTRACT, Some("delete"))],
            |_| String::new(),
        )
        .unwrap();
        assert_eq!(
            out.get("cleanup.policy").map(String::as_str),
            Some("compact")
        );
        assert!(apply_ops(
            BTreeMap::new(),
            &[op("retention.ms", APPEND, Some("1"))],
            |_| String::new()
        )
        .is_err());
        assert!(
            apply_ops(BTreeMap::new(), &[op("retention.ms", 9, Some("1"))], |_| {
                String::new()
            })
            .is_err()
        );
    }
}
