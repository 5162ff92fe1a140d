//! The chat HTTP API (`chat-protocol.md`): messages, history and group membership. It is
//! independent of any HTTP server: the host hands over method, path, query, the
//! `Authorization` header and the body, and writes back the status and JSON it gets.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::error::{ChatError, Result};
use crate::ids::{stream_id, Conversation};
use crate::messages::{Draft, Recipient};
use crate::{now_ms, Chat};

/// An HTTP request as the chat API needs it.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub body: &'a [u8],
}

/// Status and JSON body (`Value::Null`: no body, as for 204).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Value,
}

impl HttpResponse {
    fn ok(status: u16, body: Value) -> Self {
        HttpResponse { status, body }
    }
}

impl From<ChatError> for HttpResponse {
    fn from(e: ChatError) -> Self {
        HttpResponse {
            status: e.status(),
            body: e.body(),
        }
    }
}

/// True for paths the chat API serves.
pub fn serves(path: &str) -> bool {
    path == "/chat/messages"
        || path == "/dev/token"
        || path.starts_with("/groups/")
        || path.starts_with("/notifications/")
}

/// The notification types `POST /notifications/{type}` accepts.
pub const NOTIFICATION_TYPES: [&str; 4] = ["chat", "purchase", "payment-reminder", "shipping"];

impl Chat {
    /// Answers one request to a path [`serves`] accepts.
    pub async fn handle_http(&self, req: HttpRequest<'_>) -> HttpResponse {
        match self.route(req).await {
            Ok(r) => r,
            Err(e) => e.into(),
        }
    }

    async fn route(&self, req: HttpRequest<'_>) -> Result<HttpResponse> {
        let decoded: Vec<String> = req
            .path
            .trim_matches('/')
            .split('/')
            .map(|s| percent_decode(s, false))
            .collect();
        let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
        match (req.method, segments.as_slice()) {
            ("POST", ["chat", "messages"]) => self.post_message(req).await,
            ("GET", ["chat", "messages"]) => self.get_history(req).await,
            ("POST", ["groups", group, "members"]) => self.post_member(req, group).await,
            ("GET", ["groups", group, "members"]) => {
                self.authenticate(req.authorization)?;
                Ok(HttpResponse::ok(
                    200,
                    json!({"group_id": group, "members": self.membership.members(group)}),
                ))
            }
            ("DELETE", ["groups", group, "members", user]) => {
                self.delete_member(req, group, user).await
            }
            ("POST", ["notifications", kind]) => self.post_notification(req, kind).await,
            ("POST", ["dev", "token"]) => self.dev_token(req),
            (_, ["chat", "messages"] | ["groups", _, "members", ..] | ["notifications", _]) => Err(
                ChatError::InvalidMessage("this method is not allowed on this path"),
            ),
            _ => Err(ChatError::NotFound("no such chat endpoint")),
        }
    }

    /// The verified claims of `Authorization: Bearer <JWT>`.
    fn authenticate(&self, authorization: Option<&str>) -> Result<crate::auth::Claims> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or(ChatError::Unauthorized(
                "an Authorization: Bearer token is required",
            ))?;
        self.verifier.verify(token.trim(), now_ms() / 1000)
    }

    fn json_body(&self, body: &[u8]) -> Result<serde_json::Map<String, Value>> {
        if body.len() > self.config.max_body_bytes {
            return Err(ChatError::MessageTooLarge {
                len: body.len(),
                max: self.config.max_body_bytes,
            });
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(ChatError::InvalidMessage("the body must be a JSON object")),
            Err(_) => Err(ChatError::InvalidMessage("the body is not valid JSON")),
        }
    }

    async fn post_message(&self, req: HttpRequest<'_>) -> Result<HttpResponse> {
        let claims = self.authenticate(req.authorization)?;
        let body = self.json_body(req.body)?;
        let text = |name: &'static str| -> Result<Option<Arc<str>>> {
            match body.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(Arc::from(s.as_str()))),
                Some(_) => Err(ChatError::InvalidMessage("msg_id, sender_id, receiver_id, group_id, stream_id and content must be strings")),
            }
        };
        let msg_id = text("msg_id")?
            .filter(|s| !s.is_empty())
            .ok_or(ChatError::InvalidMessage("msg_id is required"))?;
        let sender_id = text("sender_id")?
            .filter(|s| !s.is_empty())
            .ok_or(ChatError::InvalidMessage("sender_id is required"))?;
        let receiver = text("receiver_id")?.filter(|s| !s.is_empty());
        let group = text("group_id")?.filter(|s| !s.is_empty());
        let supplied_stream = text("stream_id")?;
        let content = text("content")?.ok_or(ChatError::InvalidMessage("content is required"))?;
        let draft = Draft {
            msg_id,
            sender_id,
            to: match (receiver, group) {
                (Some(r), None) => Recipient::User(r),
                (None, Some(g)) => Recipient::Group(g),
                _ => {
                    return Err(ChatError::InvalidMessage(
                        "give exactly one of receiver_id and group_id",
                    ))
                }
            },
            content,
        };
        if *draft.sender_id != *claims.user && !claims.service {
            return Err(ChatError::Forbidden("a user can only send as itself"));
        }
        if let (Some(s), Recipient::User(r)) = (&supplied_stream, &draft.to) {
            if *s != stream_id(&draft.sender_id, r) {
                return Err(ChatError::InvalidMessage(
                    "stream_id does not match the sender and receiver",
                ));
            }
        }
        let (message, repeated) = self.send(draft).await?;
        Ok(HttpResponse::ok(
            if repeated { 200 } else { 201 },
            message.to_json(),
        ))
    }

    /// Checks a draft and appends it: the path HTTP and WebSocket sends share.
    pub async fn send(&self, draft: Draft) -> Result<(crate::messages::Receipt, bool)> {
        self.check(&draft).await?;
        self.messages.send(draft, now_ms()).await
    }

    /// Whether `draft` may be sent: its size, and for a group that the sender is a member.
    pub async fn check(&self, draft: &Draft) -> Result<()> {
        if draft.msg_id.len() > 256 {
            return Err(ChatError::InvalidMessage("msg_id is longer than 256 bytes"));
        }
        if draft.content.is_empty() {
            return Err(ChatError::InvalidMessage("content is empty"));
        }
        if draft.content.len() > self.config.max_content_bytes {
            return Err(ChatError::MessageTooLarge {
                len: draft.content.len(),
                max: self.config.max_content_bytes,
            });
        }
        if let Recipient::Group(g) = &draft.to {
            if !self.membership.is_member(g, &draft.sender_id) {
                // A join written through another gateway may not have reached us yet.
                self.membership.refresh(g).await?;
            }
            if self.membership.members(g).is_empty() {
                return Err(ChatError::NotFound("the group has no members"));
            }
            if !self.membership.is_member(g, &draft.sender_id) {
                return Err(ChatError::Forbidden("only members can send to a group"));
            }
        }
        Ok(())
    }

    async fn get_history(&self, req: HttpRequest<'_>) -> Result<HttpResponse> {
        let claims = self.authenticate(req.authorization)?;
        let query = parse_query(req.query.unwrap_or(""));
        let number = |name: &str, default: u64| -> Result<u64> {
            match query.iter().find(|(k, _)| k == name) {
                None => Ok(default),
                Some((_, v)) => v.parse().map_err(|_| {
                    ChatError::InvalidMessage("since and limit must be non-negative integers")
                }),
            }
        };
        let since = number("since", 0)?;
        let limit = number("limit", self.config.history_default_limit as u64)?;
        if limit == 0 || limit > self.config.history_max_limit as u64 {
            return Err(ChatError::InvalidMessage(
                "limit must be between 1 and 1000",
            ));
        }
        let value = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let conversation = match (value("stream_id"), value("group_id")) {
            (Some(s), None) => {
                // Only its two parties may read a stream (one with no messages has none).
                if !claims.service {
                    match self.messages.parties(&s).await {
                        Some((a, b)) if *a == *claims.user || *b == *claims.user => {}
                        Some(_) => {
                            return Err(ChatError::Forbidden("not a party to this conversation"))
                        }
                        None => {}
                    }
                }
                Conversation::Stream(s.into())
            }
            (None, Some(g)) => {
                if !claims.service && !self.membership.is_member(&g, &claims.user) {
                    return Err(ChatError::Forbidden("not a member of this group"));
                }
                Conversation::Group(g.into())
            }
            _ => {
                return Err(ChatError::InvalidMessage(
                    "give exactly one of stream_id and group_id",
                ))
            }
        };
        let messages = self
            .messages
            .history(&conversation, since, limit as usize)
            .await?;
        let next_since = messages.last().map_or(since, |m| m.sequence_number);
        Ok(HttpResponse::ok(
            200,
            json!({
                "messages": messages.iter().map(|m| m.frame()).collect::<Vec<_>>(),
                "next_since": next_since,
            }),
        ))
    }

    async fn post_member(&self, req: HttpRequest<'_>, group: &str) -> Result<HttpResponse> {
        let claims = self.authenticate(req.authorization)?;
        let body = self.json_body(req.body)?;
        let user = match body.get("user_id") {
            Some(Value::String(u)) if !u.is_empty() => u.clone(),
            _ => return Err(ChatError::InvalidMessage("user_id is required")),
        };
        if user != claims.user && !claims.service {
            return Err(ChatError::Forbidden(
                "users can only add themselves; a service token can add anyone",
            ));
        }
        let event = self.membership.join(group, &user, now_ms()).await?;
        Ok(HttpResponse::ok(
            201,
            json!({"group_id": group, "user_id": user, "joined": event.is_some()}),
        ))
    }

    async fn delete_member(
        &self,
        req: HttpRequest<'_>,
        group: &str,
        user: &str,
    ) -> Result<HttpResponse> {
        let claims = self.authenticate(req.authorization)?;
        if user != claims.user && !claims.service {
            return Err(ChatError::Forbidden(
                "users can only remove themselves; a service token can remove anyone",
            ));
        }
        self.membership.leave(group, user, now_ms()).await?;
        Ok(HttpResponse::ok(204, Value::Null))
    }
}

impl Chat {
    /// A one-hour user token for the demo page, when the server hands them out.
    fn dev_token(&self, req: HttpRequest<'_>) -> Result<HttpResponse> {
        if !self.config.dev_tokens {
            return Err(ChatError::Forbidden(
                "development tokens are off (the server has a configured --jwt-secret)",
            ));
        }
        let body = self.json_body(req.body)?;
        let user = match body.get("user_id") {
            Some(Value::String(u)) if !u.is_empty() && u.len() <= 256 => u.clone(),
            _ => return Err(ChatError::InvalidMessage("user_id is required")),
        };
        let token = self
            .verifier
            .sign(&json!({"sub": user, "exp": now_ms() / 1000 + 3600}));
        Ok(HttpResponse::ok(
            200,
            json!({"user_id": user, "token": token}),
        ))
    }

    async fn post_notification(&self, req: HttpRequest<'_>, kind: &str) -> Result<HttpResponse> {
        let claims = self.authenticate(req.authorization)?;
        if !claims.service {
            return Err(ChatError::Forbidden(
                "notifications are sent with a service token",
            ));
        }
        if !NOTIFICATION_TYPES.contains(&kind) {
            return Err(ChatError::NotFound("unknown notification type"));
        }
        let body = self.json_body(req.body)?;
        let user = match body.get("user_id") {
            Some(Value::String(u)) if !u.is_empty() => u.clone(),
            _ => return Err(ChatError::InvalidMessage("user_id is required")),
        };
        let payload = match body.get("payload") {
            Some(p @ Value::Object(_)) => p.clone(),
            _ => return Err(ChatError::InvalidMessage("payload must be a JSON object")),
        };
        // An id makes a retry of the same notification append nothing new.
        let id = match body.get("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if !id.is_empty() && id.len() <= 256 => Some(id.as_str()),
            Some(_) => {
                return Err(ChatError::InvalidMessage(
                    "id must be a string of 1 to 256 bytes",
                ))
            }
        };
        let offset = self.notify(&user, kind, &payload, id).await?;
        Ok(HttpResponse::ok(202, json!({"offset": offset})))
    }
}

/// `a=1&b=x%20y` -> [("a", "1"), ("b", "x y")].
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Decodes `%XX` escapes (and `+` as a space in query strings, not in paths).
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::parse_query;

    #[test]
    fn queries_are_split_and_decoded() {
        assert_eq!(
            parse_query("stream_id=ab%20c&since=3&limit=&x"),
            [
                ("stream_id".to_string(), "ab c".to_string()),
                ("since".to_string(), "3".to_string()),
                ("limit".to_string(), String::new()),
                ("x".to_string(), String::new()),
            ]
        );
        assert_eq!(
            parse_query("a=%zz%4"),
            [("a".to_string(), "%zz%4".to_string())]
        );
        assert_eq!(parse_query("a=%é1"), [("a".to_string(), "%é1".to_string())]);
    }
}
