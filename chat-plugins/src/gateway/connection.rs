//! One WebSocket connection: a single task that reads the client's frames, writes what the
//! fan-out queues for it, pings, redelivers unacked pushes and says goodbye.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::{stopped, Admitted, Gateway, Outgoing, Push};
use crate::error::ChatError;
use crate::ids::Conversation;
use crate::messages::{Draft, Recipient};
use crate::metrics::Metrics;
use crate::now_ms;
use crate::HashMap;

/// Largest frame read from a client: the 10 KiB content plus its JSON envelope. Larger
/// frames are answered MESSAGE_TOO_LARGE by the content check when they fit here, and
/// close the connection (1009) when they do not.
const MAX_FRAME_BYTES: usize = 64 << 10;
/// Messages replayed per history read of a `subscribe` with `since`.
const REPLAY_PAGE: usize = 500;
/// Conversations one connection may be unsubscribed from at once (the list is kept per
/// connection, so a client must not grow it without end).
const MAX_UNSUBSCRIBED: usize = 1000;
/// Pushes taken from the queue for one write.
const BATCH_PUSHES: usize = 64;

/// A pushed message waiting for the client's ack.
struct Pending {
    /// Shared with every other recipient of the same push.
    frame: Utf8Bytes,
    sent_at: Instant,
}

/// The sequence numbers of one conversation a client has: everything up to `through`,
/// and the ones in `above` (pushed live before a replay filled in what came before).
#[derive(Debug, Default)]
struct Delivered {
    through: u64,
    above: std::collections::BTreeSet<u64>,
}

impl Delivered {
    /// Records `seq`; false when the client already has it.
    fn insert(&mut self, seq: u64) -> bool {
        if seq <= self.through || !self.above.insert(seq) {
            return false;
        }
        while self.above.remove(&(self.through + 1)) {
            self.through += 1;
        }
        true
    }

    /// The client says it has everything up to `seq`.
    fn has_through(&mut self, seq: u64) {
        if seq > self.through {
            self.through = seq;
            self.above.retain(|s| *s > seq);
            while self.above.remove(&(self.through + 1)) {
                self.through += 1;
            }
        }
    }
}

/// Per-connection state.
struct Session<'a> {
    gateway: &'a Gateway,
    user: String,
    /// Sequence numbers delivered per conversation, so a replay and the live stream meet
    /// without a gap or a duplicate.
    delivered: HashMap<Conversation, Delivered>,
    /// Shared with the gateway (the chat notifier asks who is not receiving what).
    conn: Arc<super::Conn>,
    /// Pushes awaiting the client's ack, by message id.
    pending: HashMap<Arc<str>, Pending>,
    bad_frames: u32,
}

/// Bytes of frames collected before a write mid-turn (the turn's flush writes the rest).
const WRITE_BATCH_BYTES: usize = 64 << 10;

/// Serves an upgraded connection (admitted with [`Gateway::admit`]) until it closes or
/// the gateway stops.
///
/// One task per connection, woken by the client's frames, by pushes and by two timers.
/// A fan-out to a big group wakes every member's task, so the loop keeps its wake-ups
/// cheap: the futures that rarely fire (shutdown, timers) are made once rather than on
/// every turn, the redelivery timer is armed only while pushes await their acks (an idle
/// connection sets no timer), and the stream is not split (a split adds a lock to every
/// read and write).
pub async fn serve<S>(mut admitted: Admitted, io: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let gateway: Arc<Gateway> = admitted.gateway.clone();
    // Held for the connection's life so shutdown can wait for the goodbye.
    let Ok(_open) = gateway.open.acquire().await else {
        return;
    };
    let Some(mut queue) = admitted.queue.take() else {
        return;
    };
    let conn = admitted.conn.clone();
    let user = admitted.claims.user.clone();
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .read_buffer_size(1024)
        // Frames fed in one turn collect here and go out with the flush at its end: a
        // burst of pushes is one write, not one per frame. (At 0 every frame is its own
        // write.)
        .write_buffer_size(WRITE_BATCH_BYTES);
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let chat_config = &gateway.chat.config;
    let mut session = Session {
        gateway: &gateway,
        user,
        delivered: HashMap::default(),
        conn: conn.clone(),
        pending: HashMap::default(),
        bad_frames: 0,
    };
    let mut stop = gateway.shutdown.subscribe();
    let stopping = stopped(&mut stop);
    tokio::pin!(stopping);
    let mut ping = tokio::time::interval(chat_config.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping.tick().await;
    let redeliver = tokio::time::sleep(chat_config.ack_timeout);
    tokio::pin!(redeliver);
    let mut redeliver_armed = false;
    let mut last_heard = Instant::now();
    let close = |code: CloseCode, reason: &str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_string().into(),
        }))
    };
    let mut out: Vec<Utf8Bytes> = Vec::new();
    let goodbye: Option<Message> = loop {
        if conn.overflowed.load(Ordering::Acquire) {
            break Some(close(
                CloseCode::Again,
                "too slow: the delivery queue overflowed; reconnect and resume with since",
            ));
        }
        if !redeliver_armed {
            if let Some(due) = session.next_redelivery() {
                redeliver.as_mut().reset(due.into());
                redeliver_armed = true;
            }
        }
        tokio::select! {
            // The client's frames first: a `subscribe` already sent is handled before live
            // pushes queued after it, so its replay comes ahead of them.
            biased;
            frame = ws.next() => {
                last_heard = Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        match session.handle(text.as_str(), &mut out).await {
                            Ok(()) => session.bad_frames = 0,
                            Err(e) => {
                                out.push(error_frame_bytes(&e, None));
                                session.bad_frames += 1;
                                if session.bad_frames >= chat_config.max_bad_frames {
                                    for f in out.drain(..) {
                                        let _ = ws.send(Message::Text(f)).await;
                                    }
                                    break Some(close(CloseCode::Policy, "too many malformed frames"));
                                }
                            }
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        out.push(error_frame_bytes(&ChatError::InvalidMessage("frames must be JSON text"), None));
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(e)) => {
                        tracing::debug!(user = %session.user, error = %e, "websocket read failed");
                        break Some(close(CloseCode::Size, "frame too large or malformed"));
                    }
                }
            }
            push = queue.recv() => {
                if let Some(push) = push {
                    session.push(push, &mut out);
                    // Take what else is waiting, so a burst goes out in one write.
                    for _ in 0..BATCH_PUSHES {
                        match queue.try_recv() {
                            Ok(push) => session.push(push, &mut out),
                            Err(_) => break,
                        }
                    }
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() >= chat_config.idle_timeout {
                    break Some(close(CloseCode::Away, "no traffic from the client"));
                }
                if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break None;
                }
            }
            () = &mut redeliver, if redeliver_armed => {
                redeliver_armed = false;
                session.redeliver(&mut out);
            }
            () = &mut stopping => {
                let bye = json!({"type": "reconnect", "reason": "the server is shutting down", "timestamp": now_ms()});
                let _ = ws.send(Message::text(bye.to_string())).await;
                break Some(close(CloseCode::Away, "server shutting down"));
            }
        }
        if !out.is_empty() {
            let sent = out.len() as u64;
            let mut failed = false;
            for frame in out.drain(..) {
                if ws.feed(Message::Text(frame)).await.is_err() {
                    failed = true;
                    break;
                }
            }
            if failed || ws.flush().await.is_err() {
                break None;
            }
            gateway
                .metrics
                .messages_out
                .fetch_add(sent, Ordering::Relaxed);
        }
    };
    if let Some(frame) = goodbye {
        let _ = ws.send(frame).await;
    }
    let _ = SinkExt::close(&mut ws).await;
    // Dropping `admitted` unregisters the connection.
    drop(admitted);
}

fn error_frame_bytes(e: &ChatError, msg_id: Option<&str>) -> Utf8Bytes {
    Utf8Bytes::from(error_frame(e, msg_id))
}

fn error_frame(e: &ChatError, msg_id: Option<&str>) -> String {
    let mut frame = json!({
        "type": "error",
        "error_code": e.code(),
        "error_message": e.to_string(),
        "timestamp": now_ms(),
    });
    if let Some(id) = msg_id {
        frame["msg_id"] = json!(id);
    }
    frame.to_string()
}

/// The fields of an `ack` frame, borrowed from the text where it has no escapes.
#[derive(Deserialize)]
struct AckFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    msg_id: Option<Cow<'a, str>>,
}

fn string_field<'a>(
    frame: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, ChatError> {
    match frame.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(ChatError::InvalidMessage("a field has the wrong type")),
    }
}

impl Session<'_> {
    /// Handles one client frame, queueing answers in `out`. An `Err` is a malformed frame
    /// (counted toward closing the connection); protocol refusals are answered in `out`.
    async fn handle(&mut self, text: &str, out: &mut Vec<Utf8Bytes>) -> Result<(), ChatError> {
        // Acks are most of what clients send (one per push), so they skip the general
        // parse into a map. Anything else, or an ack that does not read cleanly, takes
        // the general path, which also words the errors.
        if let Ok(AckFrame {
            kind: Some(kind),
            msg_id: Some(id),
        }) = serde_json::from_str::<AckFrame>(text)
        {
            if kind == "ack" {
                self.pending.remove(id.as_ref());
                return Ok(());
            }
        }
        let frame: Map<String, Value> = match serde_json::from_str(text) {
            Ok(Value::Object(map)) => map,
            _ => return Err(ChatError::InvalidMessage("frames must be JSON objects")),
        };
        match string_field(&frame, "type")? {
            Some("send_msg") => {
                let msg_id = string_field(&frame, "msg_id")?
                    .unwrap_or_default()
                    .to_string();
                match self.send(&frame, &msg_id).await {
                    Ok(m) => {
                        let mut ack = m.to_json();
                        ack["type"] = json!("ack");
                        out.push(ack.to_string().into());
                    }
                    Err(e) => out.push(error_frame_bytes(
                        &e,
                        Some(&msg_id).filter(|s| !s.is_empty()).map(|s| s.as_str()),
                    )),
                }
                Ok(())
            }
            Some("ack") => {
                let id = string_field(&frame, "msg_id")?
                    .ok_or(ChatError::InvalidMessage("ack needs msg_id"))?;
                self.pending.remove(id);
                Ok(())
            }
            Some("subscribe") => {
                let conversation = conversation_of(&frame)?;
                let since = match frame.get("since") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(v.as_u64().ok_or(ChatError::InvalidMessage(
                        "since must be a non-negative integer",
                    ))?),
                };
                if let Err(e) = self.subscribe(conversation, since, out).await {
                    out.push(error_frame_bytes(&e, None));
                }
                Ok(())
            }
            Some("unsubscribe") => {
                let conversation = conversation_of(&frame)?;
                let mut muted = self.conn.muted.lock().expect("muted lock");
                if !muted.contains(&conversation) {
                    if muted.len() >= MAX_UNSUBSCRIBED {
                        return Err(ChatError::InvalidMessage(
                            "too many unsubscribed conversations on this connection",
                        ));
                    }
                    muted.push(conversation);
                    drop(muted);
                    self.gateway.presence_changed(&self.user);
                }
                Ok(())
            }
            Some("heartbeat") => {
                out.push(
                    json!({"type": "heartbeat", "timestamp": now_ms()})
                        .to_string()
                        .into(),
                );
                Ok(())
            }
            Some(_) => Err(ChatError::InvalidMessage("unknown frame type")),
            None => Err(ChatError::InvalidMessage("frames need a type")),
        }
    }

    async fn send(
        &mut self,
        frame: &Map<String, Value>,
        msg_id: &str,
    ) -> Result<crate::messages::Receipt, ChatError> {
        if msg_id.is_empty() {
            return Err(ChatError::InvalidMessage("send_msg needs msg_id"));
        }
        let content = string_field(frame, "content")?
            .ok_or(ChatError::InvalidMessage("send_msg needs content"))?;
        let to = match (
            string_field(frame, "recipient")?,
            string_field(frame, "group_id")?,
        ) {
            (Some(r), None) if !r.is_empty() => Recipient::User(r.into()),
            (None, Some(g)) if !g.is_empty() => Recipient::Group(g.into()),
            _ => {
                return Err(ChatError::InvalidMessage(
                    "send_msg needs exactly one of recipient and group_id",
                ))
            }
        };
        if !self.gateway.limits.allow(&self.user) {
            Metrics::inc(&self.gateway.metrics.rate_limited);
            return Err(ChatError::RateLimited);
        }
        let draft = Draft {
            msg_id: msg_id.into(),
            sender_id: self.user.as_str().into(),
            to,
            content: content.into(),
        };
        let (message, _) = self.gateway.chat.send(draft).await?;
        Metrics::inc(&self.gateway.metrics.messages_in);
        Ok(message)
    }

    async fn subscribe(
        &mut self,
        conversation: Conversation,
        since: Option<u64>,
        out: &mut Vec<Utf8Bytes>,
    ) -> Result<(), ChatError> {
        let chat = &self.gateway.chat;
        match &conversation {
            Conversation::Stream(s) => {
                if let Some((a, b)) = chat.messages.parties(s).await {
                    if *a != *self.user && *b != *self.user {
                        return Err(ChatError::Forbidden("not a party to this conversation"));
                    }
                }
            }
            Conversation::Group(g) => {
                if !chat.membership.is_member(g, &self.user) {
                    return Err(ChatError::Forbidden("not a member of this group"));
                }
            }
        }
        let was_muted = {
            let mut muted = self.conn.muted.lock().expect("muted lock");
            let before = muted.len();
            muted.retain(|c| *c != conversation);
            muted.len() != before
        };
        if was_muted {
            self.gateway.presence_changed(&self.user);
        }
        let Some(mut since) = since else {
            return Ok(());
        };
        // Live pushes for this conversation already flow to this connection (the fan-out
        // does not wait for subscriptions), and those arriving while the replay runs wait
        // in its queue; what came before is in the log. `delivered` drops the overlap, so
        // the replay and the live stream meet without a gap or a duplicate.
        self.delivered
            .entry(conversation.clone())
            .or_default()
            .has_through(since);
        loop {
            let page = chat
                .messages
                .history(&conversation, since, REPLAY_PAGE)
                .await?;
            let Some(last) = page.last() else {
                break;
            };
            since = last.sequence_number;
            let full = page.len() == REPLAY_PAGE;
            for m in page.iter().filter_map(Outgoing::new) {
                self.deliver_message(&m, out);
            }
            if !full {
                break;
            }
        }
        Ok(())
    }

    fn push(&mut self, push: Push, out: &mut Vec<Utf8Bytes>) {
        match push {
            Push::Message(m) => self.deliver_message(&m, out),
            Push::Membership(e) => out.push(e.frame().to_string().into()),
            Push::Notification(n) => {
                let frame = json!({
                    "type": "notification",
                    "notification_type": n.get("notification_type").cloned().unwrap_or(Value::Null),
                    "payload": n.get("payload").cloned().unwrap_or(Value::Null),
                    "timestamp": n.get("timestamp").cloned().unwrap_or(json!(now_ms())),
                });
                out.push(frame.to_string().into());
            }
        }
    }

    /// Queues `m` unless muted or already delivered.
    fn deliver_message(&mut self, m: &Outgoing, out: &mut Vec<Utf8Bytes>) {
        if self.conn.is_muted(&m.conversation) {
            return;
        }
        let fresh = match self.delivered.get_mut(&m.conversation) {
            Some(d) => d.insert(m.sequence_number),
            None => self
                .delivered
                .entry(m.conversation.clone())
                .or_default()
                .insert(m.sequence_number),
        };
        if !fresh {
            return;
        }
        self.gateway
            .metrics
            .observe_delivery(now_ms().saturating_sub(m.timestamp).max(0) as u64);
        self.pending.insert(
            m.msg_id.clone(),
            Pending {
                frame: m.frame.clone(),
                sent_at: Instant::now(),
            },
        );
        out.push(m.frame.clone());
    }

    /// When the oldest unacked push is due to be sent again, if there is one.
    fn next_redelivery(&self) -> Option<Instant> {
        let oldest = self.pending.values().map(|p| p.sent_at).min()?;
        Some(oldest + self.gateway.chat.config.ack_timeout)
    }

    /// Sends again every push not acked within the ack timeout.
    fn redeliver(&mut self, out: &mut Vec<Utf8Bytes>) {
        let timeout = self.gateway.chat.config.ack_timeout;
        for pending in self.pending.values_mut() {
            if pending.sent_at.elapsed() >= timeout {
                Metrics::inc(&self.gateway.metrics.ack_timeouts);
                pending.sent_at = Instant::now();
                out.push(pending.frame.clone());
            }
        }
    }
}

fn conversation_of(frame: &Map<String, Value>) -> Result<Conversation, ChatError> {
    match (
        string_field(frame, "stream_id")?,
        string_field(frame, "group_id")?,
    ) {
        (Some(s), None) if !s.is_empty() => Ok(Conversation::Stream(s.into())),
        (None, Some(g)) if !g.is_empty() => Ok(Conversation::Group(g.into())),
        _ => Err(ChatError::InvalidMessage(
            "give exactly one of stream_id and group_id",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::Delivered;

    #[test]
    fn delivered_sequence_numbers_are_never_sent_twice() {
        let mut d = Delivered::default();
        assert!(d.insert(6));
        assert!(d.insert(7));
        d.has_through(2);
        assert!(d.insert(3));
        assert!(d.insert(4));
        assert!(d.insert(5));
        assert!(!d.insert(6), "pushed live already");
        assert!(!d.insert(4));
        assert!(d.insert(8));
        assert_eq!((d.through, d.above.len()), (8, 0));
        d.has_through(20);
        assert!(!d.insert(15));
        assert!(d.insert(21));
    }
}
