//! Which source topic becomes what, and which fields of its rows say what: the
//! `[[chat.cdc]]` entries of the configuration.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::envelope::{Fields, OUTBOX_PREFIX};
use crate::api::NOTIFICATION_TYPES;
use crate::forward::RetryPolicy;
use crate::messages::{Draft, Recipient};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    ChatMessage,
    Notification,
}

/// One `[[chat.cdc]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdcMapping {
    /// The topic the connector writes (`<prefix>.<schema>.<table>` for PostgreSQL).
    pub topic: String,
    pub kind: Kind,
    /// Output field -> the row's field. Chat messages: `msg_id`, `sender_id`,
    /// `receiver_id`, `group_id`, `content`. Notifications: `id`, `user_id`,
    /// `notification_type`, `payload`.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Only events of this table or collection (when the event names one).
    #[serde(default)]
    pub table: Option<String>,
    /// The notification type of every event, instead of a `notification_type` field.
    #[serde(default)]
    pub notification_type: Option<String>,
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// This entry's retry policy, instead of `[chat.retry]`.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
}

fn enabled() -> bool {
    true
}

/// The outbox event id's field in a row (`__id`, see [`OUTBOX_PREFIX`]).
const OUTBOX_EVENT_ID: &str = "__id";

const MESSAGE_FIELDS: [&str; 5] = ["msg_id", "sender_id", "receiver_id", "group_id", "content"];
const NOTIFICATION_FIELDS: [&str; 4] = ["id", "user_id", "notification_type", "payload"];

/// What one insert becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Message(Draft),
    Notification {
        /// Makes a re-delivered event notify once.
        id: String,
        user: String,
        notification_type: String,
        payload: Value,
    },
}

impl CdcMapping {
    /// Checks the entry when the configuration is read.
    pub fn validate(&self) -> Result<(), String> {
        let allowed: &[&str] = match self.kind {
            Kind::ChatMessage => &MESSAGE_FIELDS,
            Kind::Notification => &NOTIFICATION_FIELDS,
        };
        if let Some(bad) = self.fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!(
                "chat.cdc for topic {}: unknown field {bad:?} (expected one of {})",
                self.topic,
                allowed.join(", ")
            ));
        }
        if self.topic.is_empty() {
            return Err("chat.cdc: topic is empty".into());
        }
        if let Some(t) = &self.notification_type {
            if !NOTIFICATION_TYPES.contains(&t.as_str()) {
                return Err(format!(
                    "chat.cdc for topic {}: notification_type {t:?} is not one of {}",
                    self.topic,
                    NOTIFICATION_TYPES.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The row's field for output field `name` (the same name when not mapped).
    fn source<'a>(&'a self, name: &'a str) -> &'a str {
        self.fields.get(name).map_or(name, String::as_str)
    }

    fn text<'r>(&self, row: &'r impl Fields, name: &str) -> Option<Cow<'r, str>> {
        row.text(self.source(name)).filter(|s| !s.is_empty())
    }

    /// Turns an inserted row into a chat message or notification. `position` names the
    /// source event (topic, partition, offset) and stands in for a missing id, so a
    /// re-delivery of the event makes the same output.
    pub fn map(&self, row: &impl Fields, position: &str) -> Result<Output, String> {
        self.map_at(row, || position.to_string())
    }

    /// [`CdcMapping::map`], with the position worked out only when the row has no id.
    pub fn map_at(
        &self,
        row: &impl Fields,
        position: impl FnOnce() -> String,
    ) -> Result<Output, String> {
        let required = |name: &str| {
            self.text(row, name).ok_or_else(|| {
                format!(
                    "field {:?} (for {name}) is missing or not text",
                    self.source(name)
                )
            })
        };
        // The outbox event id, when the event came through the router.
        let mapped_id = self
            .fields
            .get(if self.kind == Kind::ChatMessage {
                "msg_id"
            } else {
                "id"
            })
            .and_then(|f| row.text(f));
        let id = match mapped_id {
            Some(id) => id,
            None => row
                .text(OUTBOX_EVENT_ID)
                .unwrap_or_else(|| Cow::Owned(position())),
        };
        // A message's texts are shared from here on (by its record, the store, frames).
        let shared = |t: Cow<'_, str>| Arc::<str>::from(t.as_ref());
        match self.kind {
            Kind::ChatMessage => {
                let to = match (self.text(row, "receiver_id"), self.text(row, "group_id")) {
                    (Some(r), None) => Recipient::User(shared(r)),
                    (None, Some(g)) => Recipient::Group(shared(g)),
                    (Some(_), Some(_)) => {
                        return Err("the row has both a receiver and a group".into())
                    }
                    (None, None) => return Err("the row has neither a receiver nor a group".into()),
                };
                Ok(Output::Message(Draft {
                    msg_id: shared(id),
                    sender_id: shared(required("sender_id")?),
                    to,
                    content: shared(required("content")?),
                }))
            }
            Kind::Notification => {
                let notification_type = match &self.notification_type {
                    Some(t) => t.clone(),
                    None => required("notification_type")?.into_owned(),
                };
                if !NOTIFICATION_TYPES.contains(&notification_type.as_str()) {
                    return Err(format!(
                        "notification type {notification_type:?} is not one of {}",
                        NOTIFICATION_TYPES.join(", ")
                    ));
                }
                let payload = match self.fields.get("payload") {
                    None => Value::Object(
                        row.to_map()
                            .into_iter()
                            .filter(|(k, _)| !k.starts_with(OUTBOX_PREFIX))
                            .collect(),
                    ),
                    Some(f) => match row.value(f) {
                        Some(p @ Value::Object(_)) => p,
                        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
                            Ok(p @ Value::Object(_)) => p,
                            _ => return Err(format!("field {f:?} is not a JSON object")),
                        },
                        _ => return Err(format!("field {f:?} is missing or not an object")),
                    },
                };
                Ok(Output::Notification {
                    id: id.into_owned(),
                    user: required("user_id")?.into_owned(),
                    notification_type,
                    payload,
                })
            }
        }
    }
}
