//! The WebSocket gateway (`chat-protocol.md`): authenticated connections, fan-out of what
//! lands in the chat topics to the local connections that should see it, per-user rate
//! limits, acks with redelivery, and a graceful goodbye.
//!
//! Fan-out: one task per partition of `chat.messages`, `chat.membership` and
//! `notifications` reads from the end of the log (every gateway delivers to its own
//! connections) and hands each event to the connections of the users it concerns: both
//! parties of a 1:1 message, the connected members of a group (from a membership cache
//! with a TTL, invalidated by the group's membership events), the user of a notification.
//! Each connection has a bounded queue; one that overflows is closed with a reason rather
//! than slowing the others.

mod cache;
mod connection;
mod presence;
mod ratelimit;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::auth::Claims;
use crate::error::ChatError;
use crate::event::{MembershipEvent, StoredMessage};
use crate::ids::Conversation;
use crate::log::Log;
use crate::metrics::Metrics;
use crate::scan::follow_next;
use crate::HashMap;
use crate::{now_ms, Chat};

pub use connection::serve;

/// What the fan-out hands a connection.
#[derive(Debug, Clone)]
pub enum Push {
    Message(Arc<Outgoing>),
    Membership(Arc<MembershipEvent>),
    Notification(Arc<Value>),
}

/// A message as every connection it goes to needs it, worked out once per message rather
/// than once per recipient: a fan-out to a big group does per member only what must be
/// per member.
#[derive(Debug)]
pub struct Outgoing {
    pub msg_id: Arc<str>,
    pub conversation: Conversation,
    pub sequence_number: u64,
    /// Server time of the append, in ms.
    pub timestamp: i64,
    /// The `message` frame.
    pub frame: Utf8Bytes,
}

impl Outgoing {
    /// `None` for a message that names no conversation (not one the write path makes).
    pub fn new(m: &StoredMessage) -> Option<Outgoing> {
        Some(Outgoing {
            msg_id: m.msg_id.clone(),
            conversation: m.conversation()?,
            sequence_number: m.sequence_number,
            timestamp: m.timestamp,
            frame: Utf8Bytes::from(m.frame_text()),
        })
    }
}

/// The gateway's view of one connection.
#[derive(Debug)]
struct Conn {
    id: u64,
    tx: mpsc::Sender<Push>,
    /// Set when its queue overflowed. The connection checks it before each wait, and a
    /// full queue always has something to wake it, so it closes itself promptly.
    overflowed: AtomicBool,
    /// Conversations the client unsubscribed from (usually none).
    muted: Mutex<Vec<Conversation>>,
}

impl Conn {
    fn is_muted(&self, conversation: &Conversation) -> bool {
        self.is_muted_with(&|| conversation)
    }

    /// [`Conn::is_muted`], with the conversation asked for only when something is muted.
    fn is_muted_with<'c>(&self, conversation: &dyn Fn() -> &'c Conversation) -> bool {
        let muted = self.muted.lock().expect("muted lock");
        !muted.is_empty() && muted.contains(conversation())
    }
}

#[derive(Debug)]
pub struct Gateway {
    chat: Arc<Chat>,
    pub metrics: Arc<Metrics>,
    connections: Mutex<HashMap<String, Vec<Arc<Conn>>>>,
    next_id: AtomicU64,
    members: cache::MembershipCache,
    limits: ratelimit::RateLimits,
    shutdown: watch::Sender<bool>,
    /// The connections' tasks register here so shutdown can wait for their goodbyes.
    open: tokio::sync::Semaphore,
    /// Who is connected to the other gateways, when the log is shared with them.
    presence: Option<Arc<presence::Presence>>,
}

/// Most connections a gateway waits for at shutdown (a semaphore's permit count).
const MAX_TRACKED: u32 = 1 << 24;

impl Gateway {
    /// Starts the fan-out tasks over `log`.
    pub async fn start(chat: Arc<Chat>, log: Arc<dyn Log>) -> crate::log::Result<Arc<Gateway>> {
        let metrics = Arc::new(Metrics::default());
        let (shutdown, _) = watch::channel(false);
        let presence = if log.shared() {
            Some(
                presence::Presence::open(
                    log.clone(),
                    &chat.config.presence_topic,
                    chat.config.partitions,
                    metrics.clone(),
                )
                .await?,
            )
        } else {
            None
        };
        let gateway = Arc::new(Gateway {
            members: cache::MembershipCache::new(chat.config.membership_ttl),
            limits: ratelimit::RateLimits::new(chat.config.rate_limit_per_second),
            chat: chat.clone(),
            metrics,
            connections: Mutex::new(HashMap::default()),
            next_id: AtomicU64::new(1),
            shutdown,
            open: tokio::sync::Semaphore::new(MAX_TRACKED as usize),
            presence: presence.as_ref().map(|(p, _, _)| p.clone()),
        });
        if let Some((presence, queue, ends)) = presence {
            for (partition, end) in ends.into_iter().enumerate() {
                tokio::spawn(presence::follow(
                    presence.clone(),
                    partition as i32,
                    end,
                    gateway.shutdown.subscribe(),
                ));
            }
            tokio::spawn(presence::announce(Arc::downgrade(&gateway), queue));
        }
        // Each store says where it is up to; its fan-out continues from there, so every
        // record is taken in (and numbered) once, in order.
        let topics = [
            (chat.config.messages_topic.clone(), Topic::Messages),
            (chat.config.membership_topic.clone(), Topic::Membership),
            (
                chat.config.notifications_topic.clone(),
                Topic::Notifications,
            ),
        ];
        for (name, topic) in topics {
            for partition in 0..log.partition_count(&name).await? {
                let from = match topic {
                    Topic::Messages => chat.messages.applied_end(partition),
                    Topic::Membership => chat.membership.applied_end(partition),
                    Topic::Notifications => chat.notifications.applied_end(partition),
                };
                tokio::spawn(fan_out(
                    gateway.clone(),
                    log.clone(),
                    name.clone(),
                    topic,
                    partition,
                    from,
                ));
            }
        }
        Ok(gateway)
    }

    pub fn chat(&self) -> &Arc<Chat> {
        &self.chat
    }

    /// Checks a WebSocket request before the upgrade: the token (query `token=` or
    /// `Authorization: Bearer`) and the `Origin`.
    pub fn authorize(
        &self,
        query: Option<&str>,
        authorization: Option<&str>,
        origin: Option<&str>,
    ) -> Result<Claims, ChatError> {
        if let Some(origin) = origin {
            let allowed = &self.chat.config.allowed_origins;
            if !allowed.is_empty() && !allowed.iter().any(|a| a == origin) {
                return Err(ChatError::Forbidden(
                    "this origin may not open a chat connection",
                ));
            }
        }
        let from_query = query.and_then(|q| {
            q.split('&')
                .find_map(|pair| pair.strip_prefix("token="))
                .map(str::to_string)
        });
        let token = match (
            from_query,
            authorization.and_then(|h| h.strip_prefix("Bearer ")),
        ) {
            (Some(t), _) => t,
            (None, Some(t)) => t.trim().to_string(),
            (None, None) => {
                return Err(ChatError::Unauthorized(
                    "a token is required (?token= or Authorization: Bearer)",
                ))
            }
        };
        self.chat.verifier.verify(&token, now_ms() / 1000)
    }

    /// Registers a connection for `claims.user` before its upgrade is answered, so every
    /// event fanned out after the client sees the 101 reaches it. Hand the result to
    /// [`serve`]; dropping it unregisters.
    pub fn admit(self: &Arc<Self>, claims: Claims) -> Admitted {
        let (conn, queue) = self.register(&claims.user);
        Admitted {
            gateway: self.clone(),
            claims,
            conn,
            queue: Some(queue),
        }
    }

    fn register(&self, user: &str) -> (Arc<Conn>, mpsc::Receiver<Push>) {
        let (tx, rx) = mpsc::channel(self.chat.config.connection_queue);
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            tx,
            overflowed: AtomicBool::new(false),
            muted: Mutex::new(Vec::new()),
        });
        self.connections
            .lock()
            .expect("connections lock")
            .entry(user.to_string())
            .or_default()
            .push(conn.clone());
        self.metrics.connections.fetch_add(1, Ordering::Relaxed);
        self.presence_changed(user);
        (conn, rx)
    }

    /// Tells the other gateways (when there are any) that `user`'s connections here
    /// changed.
    fn presence_changed(&self, user: &str) {
        if let Some(p) = &self.presence {
            p.changed(user);
        }
    }

    /// Whether `user` has a connection here.
    fn connected_here(&self, user: &str) -> bool {
        self.connections
            .lock()
            .expect("connections lock")
            .contains_key(user)
    }

    /// Users with a connection here.
    fn connected_users(&self) -> Vec<String> {
        self.connections
            .lock()
            .expect("connections lock")
            .keys()
            .cloned()
            .collect()
    }

    /// `None` when `user` has no connection here, else the conversations none of the
    /// user's connections here receives.
    fn local_state(&self, user: &str) -> Option<Vec<Conversation>> {
        let table = self.connections.lock().expect("connections lock");
        let conns = table.get(user)?;
        let (first, rest) = conns.split_first()?;
        let mut muted = first.muted.lock().expect("muted lock").clone();
        for c in rest {
            let theirs = c.muted.lock().expect("muted lock");
            muted.retain(|m| theirs.contains(m));
        }
        Some(muted)
    }

    fn unregister(&self, user: &str, id: u64) {
        let mut all = self.connections.lock().expect("connections lock");
        if let Some(list) = all.get_mut(user) {
            list.retain(|c| c.id != id);
            if list.is_empty() {
                all.remove(user);
            }
        }
        drop(all);
        self.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        self.presence_changed(user);
    }

    /// Whether `user` has a live connection, here or (on a shared cluster) on another
    /// gateway.
    pub fn is_connected(&self, user: &str) -> bool {
        let here = self
            .connections
            .lock()
            .expect("connections lock")
            .contains_key(user);
        here || self
            .presence
            .as_ref()
            .is_some_and(|p| p.connected_elsewhere(user))
    }

    /// Those of `users` who would not see a new message of `conversation`: no connection,
    /// or every connection unsubscribed from it, here and on the other gateways.
    pub fn not_receiving(&self, users: &[String], conversation: &Conversation) -> Vec<String> {
        let table = self.connections.lock().expect("connections lock");
        users
            .iter()
            .filter(|u| !self.receives(&table, u, &|| conversation))
            .cloned()
            .collect()
    }

    /// Whether every one of `users` would see a new message of a conversation (none of
    /// them is [`Gateway::not_receiving`] it). The conversation is made only if some
    /// connection unsubscribed from something: the notifier asks this of every message,
    /// and the answer is nearly always yes.
    pub fn all_receiving<'a>(
        &self,
        mut users: impl Iterator<Item = &'a str>,
        conversation: impl Fn() -> Conversation,
    ) -> bool {
        let made = std::cell::OnceCell::new();
        let conversation = || made.get_or_init(&conversation);
        let table = self.connections.lock().expect("connections lock");
        users.all(|u| self.receives(&table, u, &conversation))
    }

    /// Whether `user` has a connection here, or on another gateway, that did not
    /// unsubscribe from the conversation (asked for only when it must be compared).
    fn receives<'c>(
        &self,
        table: &HashMap<String, Vec<Arc<Conn>>>,
        user: &str,
        conversation: &dyn Fn() -> &'c Conversation,
    ) -> bool {
        let here = table
            .get(user)
            .is_some_and(|conns| conns.iter().any(|c| !c.is_muted_with(conversation)));
        here || self
            .presence
            .as_ref()
            .is_some_and(|p| p.receiving_elsewhere(user, conversation()))
    }

    /// Queues `push` for every connection of each of `users`; a full queue marks that
    /// connection too slow (it closes itself) without touching the others. The connection
    /// table is locked once for the whole list.
    fn deliver_all(&self, users: &[String], push: &Push) {
        let conns = self.connections_of(users.iter().map(String::as_str));
        self.push_to(conns, push);
    }

    fn push_to(&self, conns: Vec<Arc<Conn>>, push: &Push) {
        for conn in conns {
            if conn.tx.try_send(push.clone()).is_err()
                && !conn.overflowed.swap(true, Ordering::AcqRel)
            {
                Metrics::inc(&self.metrics.slow_disconnects);
            }
        }
    }

    /// The connections here of `users` (the table locked once for the whole list).
    fn connections_of<'a>(&self, users: impl Iterator<Item = &'a str>) -> Vec<Arc<Conn>> {
        let table = self.connections.lock().expect("connections lock");
        users
            .filter_map(|u| table.get(u))
            .flatten()
            .cloned()
            .collect()
    }

    /// The connections here of the users a message goes to: its sender and receiver, or
    /// its group's members.
    fn audience(&self, m: &StoredMessage) -> Vec<Arc<Conn>> {
        match (&m.receiver_id, &m.group_id) {
            (Some(r), _) if *r == m.sender_id => self.connections_of([r.as_ref()].into_iter()),
            (Some(r), _) => self.connections_of([m.sender_id.as_ref(), r.as_ref()].into_iter()),
            (None, Some(g)) => {
                let members = self.group_members(g);
                self.connections_of(members.iter().map(String::as_str))
            }
            _ => Vec::new(),
        }
    }

    /// The group's members with a connection here. Walks the connected users and asks the
    /// membership store, so a burst of joins to a big group costs each event the number of
    /// connected users, not the group's size (and does not refill the cache each time).
    fn connected_members(&self, group: &str) -> Vec<String> {
        let users: Vec<String> = self
            .connections
            .lock()
            .expect("connections lock")
            .keys()
            .cloned()
            .collect();
        users
            .into_iter()
            .filter(|u| self.chat.membership.is_member(group, u))
            .collect()
    }

    /// A group's members, through the cache.
    fn group_members(&self, group: &str) -> Arc<[String]> {
        let version = self.chat.membership.version();
        if let Some(members) = self.members.get(group, version) {
            Metrics::inc(&self.metrics.cache_hits);
            return members;
        }
        Metrics::inc(&self.metrics.cache_misses);
        let members: Arc<[String]> = self.chat.membership.members(group).into();
        self.members.put(group, version, members.clone());
        members
    }

    /// Tells every connection to say goodbye (`reconnect`, then close 1001) and waits, up
    /// to `wait`, until they have.
    pub async fn shutdown(&self, wait: Duration) {
        let users = self.connected_users();
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(wait, self.open.acquire_many(MAX_TRACKED)).await;
        // The other gateways stop counting these users now rather than at expiry.
        if let Some(p) = &self.presence {
            let gone = users.iter().map(|u| (p.key_of(u), None)).collect();
            match tokio::time::timeout(wait, p.publish(gone)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "withdrawing presence failed"),
                Err(_) => tracing::warn!("withdrawing presence took too long"),
            }
        }
    }
}

/// A connection registered with the gateway and not yet served.
#[derive(Debug)]
pub struct Admitted {
    gateway: Arc<Gateway>,
    claims: Claims,
    conn: Arc<Conn>,
    queue: Option<mpsc::Receiver<Push>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.gateway.unregister(&self.claims.user, self.conn.id);
    }
}

/// Resolves once the gateway is stopping, at once if it already is (a connection that
/// starts during shutdown must still say goodbye).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// The chat topics the fan-out reads.
#[derive(Debug, Clone, Copy)]
enum Topic {
    Messages,
    Membership,
    Notifications,
}

/// Reads one partition of a chat topic from `offset` on, has its store take in what
/// arrives, and delivers what the store says is new.
async fn fan_out(
    gateway: Arc<Gateway>,
    log: Arc<dyn Log>,
    name: String,
    topic: Topic,
    partition: i32,
    mut offset: i64,
) {
    let mut stop = gateway.shutdown.subscribe();
    let chat = gateway.chat.clone();
    loop {
        let records = tokio::select! {
            r = follow_next(log.as_ref(), &name, partition, &mut offset) => r,
            _ = stopped(&mut stop) => return,
        };
        if records.is_empty() {
            continue;
        }
        match topic {
            Topic::Messages => {
                for m in chat.messages.follow(partition, &records) {
                    // The frame is written only for a message someone here receives.
                    let audience = gateway.audience(&m);
                    if audience.is_empty() {
                        continue;
                    }
                    let Some(out) = Outgoing::new(&m) else {
                        continue;
                    };
                    gateway.push_to(audience, &Push::Message(Arc::new(out)));
                }
            }
            Topic::Membership => {
                for e in chat.membership.follow(partition, &records) {
                    gateway.members.invalidate(&e.group_id);
                    let mut others = gateway.connected_members(&e.group_id);
                    others.retain(|u| *u != e.user_id);
                    gateway.deliver_all(&others, &Push::Membership(Arc::new(e)));
                }
            }
            Topic::Notifications => {
                for (r, own) in chat.notifications.follow(partition, &records) {
                    let Some(value) = r.record.value.as_deref() else {
                        continue;
                    };
                    // A record this process appended is keyed by its user: whether the
                    // user is here is known without reading the value.
                    let key = r.record.key.as_deref();
                    if own
                        && key
                            .and_then(|k| std::str::from_utf8(k).ok())
                            .is_some_and(|user| !gateway.connected_here(user))
                    {
                        continue;
                    }
                    // Most notifications are for users with no connection here (that is
                    // why they were made): the whole notification is read only for one
                    // who has.
                    #[derive(serde::Deserialize)]
                    struct Addressee<'a> {
                        #[serde(borrow)]
                        user_id: std::borrow::Cow<'a, str>,
                    }
                    let Ok(to) = serde_json::from_slice::<Addressee>(value) else {
                        continue;
                    };
                    if !gateway.connected_here(&to.user_id) {
                        continue;
                    }
                    let Ok(n) = serde_json::from_slice::<Value>(value) else {
                        continue;
                    };
                    let user = to.user_id.into_owned();
                    gateway.deliver_all(&[user], &Push::Notification(Arc::new(n)));
                }
            }
        }
    }
}

/// The `Sec-WebSocket-Accept` answer to a `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key)
}
