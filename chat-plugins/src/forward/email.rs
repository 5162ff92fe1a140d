//! E-mail: notifications become mails through an SMTP relay, for users with an address
//! who have no live connection, at most one per conversation per TTL (24 h by default).
//! A chat notification's conversation is its stream or group; any other notification is
//! its own conversation (its `payload.id`, or where it sits in the topic).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use serde_json::Value;

use super::{Failure, Outcome, Plan, RetryPolicy, Target};
use crate::gateway::Gateway;
use crate::log::{BoxFuture, Consumed, StartFrom};

/// `[chat.email]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The relay, `host:port`.
    pub smtp: String,
    /// The sender, `name@host` or `Name <name@host>`.
    pub from: String,
    /// User id -> address. Users not listed get no mail.
    #[serde(default)]
    pub addresses: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// At most one mail per conversation and user within this many seconds.
    #[serde(default = "day")]
    pub dedup_seconds: u64,
    /// Longest wait for the relay per mail.
    #[serde(default = "ten")]
    pub timeout_seconds: u64,
    /// Notifications older than this are not mailed (a new group reads the topic from
    /// the start, so the first notifications after a fresh start are not missed).
    #[serde(default = "hour")]
    pub max_age_seconds: u64,
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
}

fn yes() -> bool {
    true
}
fn day() -> u64 {
    24 * 3600
}
fn ten() -> u64 {
    10
}
fn hour() -> u64 {
    3600
}

#[derive(Debug, thiserror::Error)]
pub enum EmailConfigError {
    #[error("chat.email.smtp must be host:port, not {0:?}")]
    Relay(String),
    #[error("chat.email: {what} {address:?} is not an e-mail address")]
    Address { what: String, address: String },
}

#[derive(Debug)]
pub struct Mailer {
    notifications_topic: String,
    gateway: Arc<Gateway>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    addresses: BTreeMap<String, Mailbox>,
    ttl: Duration,
    max_age_ms: i64,
}

#[derive(Debug)]
pub struct Mail {
    user: String,
    to: Mailbox,
    subject: String,
    body: String,
}

impl Mailer {
    pub const NAME: &'static str = "email";

    pub fn new(
        config: &EmailConfig,
        notifications_topic: &str,
        gateway: Arc<Gateway>,
    ) -> Result<Mailer, EmailConfigError> {
        let (host, port) = config
            .smtp
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| EmailConfigError::Relay(config.smtp.clone()))?;
        let mailbox = |what: &str, address: &str| {
            address
                .parse::<Mailbox>()
                .map_err(|_| EmailConfigError::Address {
                    what: what.to_string(),
                    address: address.to_string(),
                })
        };
        let addresses = config
            .addresses
            .iter()
            .map(|(user, a)| Ok((user.clone(), mailbox(&format!("the address of {user}"), a)?)))
            .collect::<Result<_, EmailConfigError>>()?;
        // A local relay without TLS, as in a datacenter; TLS to the relay is not offered yet.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(Duration::from_secs(config.timeout_seconds)))
            .build();
        Ok(Mailer {
            notifications_topic: notifications_topic.to_string(),
            gateway,
            transport,
            from: mailbox("from", &config.from)?,
            addresses,
            ttl: Duration::from_secs(config.dedup_seconds),
            max_age_ms: config.max_age_seconds.saturating_mul(1000) as i64,
        })
    }
}

/// A payload value as text in a mail.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Subject and body for one notification type.
pub fn render(notification_type: &str, payload: &Value) -> (String, String) {
    let field = |name: &str| payload.get(name).map(text).unwrap_or_default();
    let mut details = String::new();
    if let Some(map) = payload.as_object() {
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        for k in keys {
            let _ = writeln!(details, "  {k}: {}", text(&map[k]));
        }
    }
    match notification_type {
        "chat" => {
            let sender = field("sender_id");
            let place = match payload.get("group_id") {
                Some(g) => format!(" in {}", text(g)),
                None => String::new(),
            };
            (
                format!("New message from {sender}{place}"),
                format!(
                    "{sender} wrote{place}:\n\n  {}\n\nOpen the chat to read the conversation and reply.\n",
                    field("preview")
                ),
            )
        }
        "purchase" => (
            "Thank you for your purchase".into(),
            format!("We received your order.\n\n{details}"),
        ),
        "payment-reminder" => (
            "Payment reminder".into(),
            format!("A payment is waiting for you.\n\n{details}"),
        ),
        "shipping" => (
            "Shipping update".into(),
            format!("There is news about your delivery.\n\n{details}"),
        ),
        other => (format!("Notification: {other}"), details),
    }
}

impl Target for Mailer {
    type Job = Mail;

    fn name(&self) -> &str {
        Self::NAME
    }

    fn topics(&self) -> Vec<String> {
        vec![self.notifications_topic.clone()]
    }

    fn start_from(&self) -> StartFrom {
        StartFrom::Earliest
    }

    fn plan(&self, record: &Consumed) -> Plan<Mail> {
        if record.record.timestamp_ms < crate::now_ms() - self.max_age_ms {
            return Plan::Skip;
        }
        let Some(n) = record
            .record
            .value
            .as_deref()
            .and_then(|v| serde_json::from_slice::<Value>(v).ok())
        else {
            return Plan::Reject("the notification is not JSON".into());
        };
        let (Some(user), Some(kind)) = (
            n.get("user_id").and_then(Value::as_str),
            n.get("notification_type").and_then(Value::as_str),
        ) else {
            return Plan::Reject("the notification has no user_id or notification_type".into());
        };
        let Some(to) = self.addresses.get(user) else {
            return Plan::Skip;
        };
        let payload = n.get("payload").cloned().unwrap_or(Value::Null);
        let conversation = match (
            kind,
            payload.get("stream_id").or_else(|| payload.get("group_id")),
            payload.get("id"),
        ) {
            ("chat", Some(c), _) => format!("chat/{}", text(c)),
            (_, _, Some(id)) => format!("{kind}/{}", text(id)),
            _ => format!(
                "{kind}/{}:{}:{}",
                record.topic, record.partition, record.offset
            ),
        };
        let (subject, body) = render(kind, &payload);
        Plan::Deliver {
            order_key: user.to_string(),
            dedup: Some((format!("{user}/{conversation}"), self.ttl)),
            job: Mail {
                user: user.to_string(),
                to: to.clone(),
                subject,
                body,
            },
        }
    }

    fn deliver<'a>(&'a self, mail: &'a Mail) -> BoxFuture<'a, Result<Outcome, Failure>> {
        Box::pin(async move {
            // Someone online reads it there; a later notification may still mail them.
            if self.gateway.is_connected(&mail.user) {
                return Ok(Outcome::NotNeeded);
            }
            let message = Message::builder()
                .from(self.from.clone())
                .to(mail.to.clone())
                .subject(mail.subject.clone())
                .header(ContentType::TEXT_PLAIN)
                .body(mail.body.clone())
                .map_err(|e| Failure::Permanent(format!("cannot build the mail: {e}")))?;
            match self.transport.send(message).await {
                Ok(_) => Ok(Outcome::Delivered),
                Err(e) if e.is_permanent() => Err(Failure::Permanent(format!(
                    "the relay refused the mail: {e}"
                ))),
                Err(e) => Err(Failure::Retry(format!("the relay failed: {e}"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::render;
    use serde_json::json;

    #[test]
    fn each_type_has_its_template() {
        let (subject, body) = render(
            "chat",
            &json!({"sender_id": "alice", "preview": "lunch?", "stream_id": "ab"}),
        );
        assert_eq!(subject, "New message from alice");
        assert!(body.contains("alice wrote:\n\n  lunch?"), "{body}");
        let (subject, _) = render("chat", &json!({"sender_id": "a", "group_id": "team"}));
        assert_eq!(subject, "New message from a in team");
        let (subject, body) = render("purchase", &json!({"order_id": 7, "total": 9.5}));
        assert_eq!(subject, "Thank you for your purchase");
        assert!(body.contains("  order_id: 7\n  total: 9.5\n"), "{body}");
        assert_eq!(render("payment-reminder", &json!({})).0, "Payment reminder");
        assert_eq!(render("shipping", &json!({})).0, "Shipping update");
    }
}
