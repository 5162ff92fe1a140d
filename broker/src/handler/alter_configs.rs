//! AlterConfigs (the legacy, replace-everything form): a topic's overrides become exactly the
//! given set. Broker settings are static and refused.

use std::collections::BTreeMap;

use chorus_storage::LogConfig;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::{Message, StrBytes, VersionRange};

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::RequestContext;
use crate::broker::Broker;
use crate::error::BrokerError;

pub const VERSIONS: VersionRange = AlterConfigsRequest::VERSIONS;

/// Validates `overrides` for `topic` and, unless `validate_only`, applies them. Blocking.
pub fn apply_topic_configs(
    broker: &Broker,
    topic: &str,
    overrides: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), BrokerError> {
    if broker.logs.topic(topic).is_none() {
        return Err(BrokerError::Log(chorus_storage::LogError::UnknownTopic {
            name: topic.to_string(),
        }));
    }
    if validate_only {
        LogConfig::from_layers(&broker.logs.defaults(), &overrides)
            .map_err(chorus_storage::LogError::from)?;
        return Ok(());
    }
    broker.logs.set_topic_configs(topic, overrides)?;
    Ok(())
}

/// Checks a resource's type before any change is attempted.
pub fn check_resource(resource_type: i8) -> Result<(), BrokerError> {
    match resource_type {
        RESOURCE_TOPIC => Ok(()),
        RESOURCE_BROKER => Err(BrokerError::BrokerConfigReadOnly),
        other => Err(BrokerError::UnsupportedResource(other)),
    }
}

pub async fn handle(
    ctx: &RequestContext,
    request: AlterConfigsRequest,
    _version: i16,
) -> AlterConfigsResponse {
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
                        let overrides = r
                            .configs
                            .iter()
                            .filter_map(|c| {
                                c.value
                                    .as_ref()
                                    .map(|v| (c.name.to_string(), v.to_string()))
                            })
                            .collect();
                        apply_topic_configs(broker, &r.resource_name, overrides, validate_only)
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
    AlterConfigsResponse::default().with_responses(responses)
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
