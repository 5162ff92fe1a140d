//! DeleteTopics: by name (up to v5) or by topic id (v6+).

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::protocol::{Message, VersionRange};
use uuid::Uuid;

use super::{topic_name, RequestContext};
use crate::error::BrokerError;

pub const VERSIONS: VersionRange = DeleteTopicsRequest::VERSIONS;

pub async fn handle(
    ctx: &RequestContext,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    // (name if given, id if given)
    let wanted: Vec<(Option<String>, Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n.to_string()), Uuid::nil()))
            .collect()
    };
    let count = wanted.len();
    let result = ctx
        .blocking(move |broker| {
            Ok(wanted
                .into_iter()
                .map(|(name, id)| {
                    let resolved = match &name {
                        Some(n) => Ok(n.clone()),
                        None => broker
                            .topic_by_id(id)
                            .map(|m| m.name)
                            .ok_or(BrokerError::UnknownTopicId(id)),
                    };
                    let outcome = resolved.and_then(|n| broker.delete_topic(&n));
                    let base = DeletableTopicResult::default();
                    match outcome {
                        Ok(meta) => base
                            .with_name(Some(topic_name(&meta.name)))
                            .with_topic_id(meta.id),
                        Err(e) => base
                            .with_name(name.as_deref().map(topic_name))
                            .with_topic_id(id)
                            .with_error_code(e.code())
                            .with_error_message(Some(e.message())),
                    }
                })
                .collect::<Vec<_>>())
        })
        .await;
    let responses = result.unwrap_or_else(|e| {
        (0..count)
            .map(|_| DeletableTopicResult::default().with_error_code(e.code()))
            .collect()
    });
    DeleteTopicsResponse::default().with_responses(responses)
}
