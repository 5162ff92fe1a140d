//! Who is connected to the other gateways of a shared cluster, so the chat notifier and
//! e-mail do not treat a user as away because their connection is elsewhere.
//!
//! Each gateway announces, per connected user, the conversations every one of that
//! user's connections there has unsubscribed from, in the compacted topic
//! `chat.presence` (key `gateway/user`; a tombstone when the user's last connection there
//! closes). Announcements carry an expiry and are renewed while the user stays, so a
//! gateway that dies stops counting after [`TTL`]; a gateway that stops withdraws its
//! users at once. Announcements that ran out more than a TTL ago are forgotten and
//! tombstoned by whichever gateway sweeps first, so the topic does not keep dead
//! gateways' users. Every gateway reads the topic from the start and then follows it.
//!
//! Only used when the log is shared: a single `chorus serve` knows all its connections.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::ids::Conversation;
use crate::log::{partition_for_key, Consumed, Log, LogError, Record, TopicSpec};
use crate::metrics::Metrics;
use crate::now_ms;
use crate::scan::{follow_next, scan_partition};
use crate::HashMap;

use super::Gateway;

/// How long an announcement counts without being renewed.
pub const TTL: Duration = Duration::from_secs(90);
/// How often a gateway renews the announcements of its connected users.
const RENEW_EVERY: Duration = Duration::from_secs(30);

/// The value of an announcement.
#[derive(Debug, Serialize, Deserialize)]
struct Announcement {
    /// Conversations none of the user's connections on that gateway receives, as `s:<id>`
    /// or `g:<id>`.
    muted: Vec<String>,
    expires_at: i64,
}

fn muted_key(c: &Conversation) -> String {
    match c {
        Conversation::Stream(s) => format!("s:{s}"),
        Conversation::Group(g) => format!("g:{g}"),
    }
}

/// What another gateway announced for one user.
#[derive(Debug)]
struct Elsewhere {
    muted: HashSet<String>,
    expires_at: i64,
}

#[derive(Debug)]
pub(crate) struct Presence {
    log: Arc<dyn Log>,
    topic: String,
    partitions: i32,
    /// This gateway's id, unique per process.
    me: String,
    /// user -> gateway -> what it announced.
    others: Mutex<HashMap<String, HashMap<String, Elsewhere>>>,
    /// Users whose local state changed, for the announcer.
    changed: mpsc::UnboundedSender<String>,
    metrics: Arc<Metrics>,
}

impl Presence {
    /// Loads what the other gateways announced and returns the presence with the receiving
    /// end of its change queue (for [`announce`]).
    pub(crate) async fn open(
        log: Arc<dyn Log>,
        topic: &str,
        partitions: i32,
        metrics: Arc<Metrics>,
    ) -> crate::log::Result<(Arc<Presence>, mpsc::UnboundedReceiver<String>, Vec<i64>)> {
        let partitions = log
            .ensure_topic(&TopicSpec::compacted(topic, partitions))
            .await?;
        let (changed, queue) = mpsc::unbounded_channel();
        let presence = Arc::new(Presence {
            log: log.clone(),
            topic: topic.to_string(),
            partitions,
            me: format!("{:016x}", rand_id()),
            others: Mutex::new(HashMap::default()),
            changed,
            metrics,
        });
        let mut ends = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let mut read = Vec::new();
            ends.push(scan_partition(log.as_ref(), topic, p, |c| read.push(c)).await?);
            presence.take_in(&read);
        }
        Ok((presence, queue, ends))
    }

    /// Notes that `user`'s connections here changed (opened, closed, unsubscribed).
    pub(crate) fn changed(&self, user: &str) {
        let _ = self.changed.send(user.to_string());
    }

    /// Whether another gateway has a live announcement for `user`.
    pub(crate) fn connected_elsewhere(&self, user: &str) -> bool {
        let now = now_ms();
        self.others
            .lock()
            .expect("presence lock")
            .get(user)
            .is_some_and(|gws| gws.values().any(|e| e.expires_at > now))
    }

    /// Whether a connection of `user` on another gateway receives `conversation`.
    pub(crate) fn receiving_elsewhere(&self, user: &str, conversation: &Conversation) -> bool {
        let now = now_ms();
        let key = muted_key(conversation);
        self.others
            .lock()
            .expect("presence lock")
            .get(user)
            .is_some_and(|gws| {
                gws.values()
                    .any(|e| e.expires_at > now && !e.muted.contains(&key))
            })
    }

    /// Forgets announcements that ran out more than a [`TTL`] ago and returns their keys,
    /// so they can be tombstoned: a gateway that died never removes its own.
    fn sweep(&self) -> Vec<String> {
        let now = now_ms();
        let long_ago = now - TTL.as_millis() as i64;
        let mut gone = Vec::new();
        let mut others = self.others.lock().expect("presence lock");
        others.retain(|user, gws| {
            gws.retain(|gateway, e| {
                let keep = e.expires_at > long_ago;
                if !keep {
                    gone.push(format!("{gateway}/{user}"));
                }
                keep
            });
            !gws.is_empty()
        });
        self.count_live(&others, now);
        gone
    }

    fn count_live(&self, others: &HashMap<String, HashMap<String, Elsewhere>>, now: i64) {
        let live = others
            .values()
            .filter(|gws| gws.values().any(|e| e.expires_at > now))
            .count();
        self.metrics
            .users_elsewhere
            .store(live as i64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Applies announcements read from the topic (our own are skipped: local state is
    /// known better here).
    fn take_in(&self, records: &[Consumed]) {
        let mut others = self.others.lock().expect("presence lock");
        for c in records {
            let Some((gateway, user)) = c
                .record
                .key
                .as_deref()
                .and_then(|k| std::str::from_utf8(k).ok())
                .and_then(|k| k.split_once('/'))
            else {
                continue;
            };
            if gateway == self.me {
                continue;
            }
            let announced = c
                .record
                .value
                .as_deref()
                .and_then(|v| serde_json::from_slice::<Announcement>(v).ok());
            match announced {
                Some(a) => {
                    others.entry(user.to_string()).or_default().insert(
                        gateway.to_string(),
                        Elsewhere {
                            muted: a.muted.into_iter().collect(),
                            expires_at: a.expires_at,
                        },
                    );
                }
                None => {
                    if let Some(gws) = others.get_mut(user) {
                        gws.remove(gateway);
                        if gws.is_empty() {
                            others.remove(user);
                        }
                    }
                }
            }
        }
        self.count_live(&others, now_ms());
    }

    /// This gateway's key for `user`.
    pub(crate) fn key_of(&self, user: &str) -> String {
        format!("{}/{user}", self.me)
    }

    /// Publishes each key's state (`None`: a tombstone), one append per partition.
    pub(crate) async fn publish(
        &self,
        states: Vec<(String, Option<Vec<String>>)>,
    ) -> crate::log::Result<()> {
        let now = now_ms();
        let mut by_partition: HashMap<i32, Vec<Record>> = HashMap::default();
        for (key, muted) in states {
            let value = muted.map(|muted| {
                let a = Announcement {
                    muted,
                    expires_at: now + TTL.as_millis() as i64,
                };
                Bytes::from(serde_json::to_vec(&a).expect("announcements serialize"))
            });
            let partition = partition_for_key(key.as_bytes(), self.partitions);
            by_partition.entry(partition).or_default().push(Record {
                key: Some(Bytes::from(key.into_bytes())),
                value,
                headers: Vec::new(),
                timestamp_ms: now,
            });
        }
        for (partition, records) in by_partition {
            self.log.append(&self.topic, partition, records).await?;
        }
        Ok(())
    }
}

/// A random id: the standard library seeds each `RandomState` from the OS.
fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// Publishes what changed, and renews every connected user's announcement, until the
/// gateway is gone.
pub(crate) async fn announce(gateway: Weak<Gateway>, mut queue: mpsc::UnboundedReceiver<String>) {
    let mut renew = tokio::time::interval(RENEW_EVERY);
    renew.tick().await;
    loop {
        let mut gone = Vec::new();
        let users: Vec<String> = tokio::select! {
            user = queue.recv() => match user {
                Some(u) => {
                    // Coalesce a burst: each user is published once with its latest state.
                    let mut batch = HashSet::from([u]);
                    while let Ok(more) = queue.try_recv() {
                        batch.insert(more);
                    }
                    batch.into_iter().collect()
                }
                None => return,
            },
            _ = renew.tick() => match gateway.upgrade() {
                Some(g) => {
                    if let Some(p) = &g.presence {
                        gone = p.sweep();
                    }
                    g.connected_users()
                }
                None => return,
            },
        };
        let Some(g) = gateway.upgrade() else { return };
        let Some(presence) = g.presence.clone() else {
            return;
        };
        let mut states: Vec<(String, Option<Vec<String>>)> = users
            .into_iter()
            .map(|user| {
                let muted = g
                    .local_state(&user)
                    .map(|m| m.iter().map(muted_key).collect());
                (presence.key_of(&user), muted)
            })
            .collect();
        states.extend(gone.into_iter().map(|key| (key, None)));
        drop(g);
        if let Err(e) = presence.publish(states).await {
            // Connected users are announced again at the next renewal; a departure that
            // was not announced runs out with its expiry.
            tracing::warn!(error = %e, "announcing presence failed");
            if matches!(e, LogError::ShuttingDown) {
                return;
            }
        }
    }
}

/// Follows announcements of `partition` from `offset` on, until the gateway stops.
pub(crate) async fn follow(
    presence: Arc<Presence>,
    partition: i32,
    mut offset: i64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let (log, topic) = (presence.log.clone(), presence.topic.clone());
    loop {
        let records = tokio::select! {
            r = follow_next(log.as_ref(), &topic, partition, &mut offset) => r,
            _ = super::stopped(&mut stop) => return,
        };
        presence.take_in(&records);
    }
}
