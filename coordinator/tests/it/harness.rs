//! A coordinator driven by hand: a fake clock, tokens, and the records and replies it emits.

use std::collections::BTreeMap;

use bytes::Bytes;
use chorus_coordinator::consumer_protocol::encode_subscription;
use chorus_coordinator::*;

pub const SESSION: i32 = 10_000;
pub const REBALANCE: i32 = 30_000;
pub const DELAY: i32 = 3_000;

pub struct Harness {
    pub c: Coordinator,
    pub now: Millis,
    next_token: Token,
    pub records: Vec<Record>,
    pub replies: BTreeMap<Token, Reply>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(GroupConfig {
            min_session_timeout_ms: 1_000,
            initial_rebalance_delay_ms: DELAY,
            ..GroupConfig::default()
        })
    }

    pub fn with_config(config: GroupConfig) -> Self {
        let mut c = Coordinator::new(config, 0xC0FFEE);
        let now = 1_000_000;
        c.start(now);
        Harness {
            c,
            now,
            next_token: 0,
            records: Vec::new(),
            replies: BTreeMap::new(),
        }
    }

    fn absorb(&mut self, fx: Effects) {
        self.records.extend(fx.records);
        for (t, r) in fx.replies {
            assert!(
                self.replies.insert(t, r).is_none(),
                "token {t} answered twice"
            );
        }
    }

    /// A KIP-848 heartbeat; its records are kept like every other operation's.
    pub fn consumer_heartbeat(
        &mut self,
        req: ConsumerHeartbeat,
        topics: &BTreeMap<String, i32>,
    ) -> Result<ConsumerHeartbeatResponse, GroupError> {
        let mut fx = Effects::default();
        let result = self.c.consumer_heartbeat(self.now, req, topics, &mut fx);
        self.absorb(fx);
        result
    }

    pub fn token(&mut self) -> Token {
        self.next_token += 1;
        self.next_token
    }

    pub fn advance(&mut self, ms: Millis) {
        let until = self.now + ms;
        // Fire timers in deadline order, as a real clock would.
        while let Some(at) = self.c.next_deadline() {
            if at > until {
                break;
            }
            self.now = self.now.max(at);
            let mut fx = Effects::default();
            self.c.tick(self.now, &mut fx);
            self.absorb(fx);
        }
        self.now = until;
    }

    pub fn join(&mut self, req: JoinRequest) -> Token {
        let t = self.token();
        let mut fx = Effects::default();
        self.c.join(self.now, t, req, &mut fx);
        self.absorb(fx);
        t
    }

    pub fn sync(&mut self, req: SyncRequest) -> Token {
        let t = self.token();
        let mut fx = Effects::default();
        self.c.sync(self.now, t, req, &mut fx);
        self.absorb(fx);
        t
    }

    pub fn heartbeat(
        &mut self,
        group: &str,
        generation: i32,
        member: &str,
    ) -> Result<(), GroupError> {
        self.c.heartbeat(
            self.now,
            &HeartbeatRequest {
                group_id: group.into(),
                generation,
                member_id: member.into(),
                instance_id: None,
            },
        )
    }

    pub fn leave(&mut self, group: &str, member: &str) -> Result<(), GroupError> {
        let mut fx = Effects::default();
        let mut r = self.c.leave(
            self.now,
            group,
            &[LeaveMember {
                member_id: member.into(),
                instance_id: None,
            }],
            &mut fx,
        );
        self.absorb(fx);
        r.remove(0)
    }

    pub fn commit(
        &mut self,
        group: &str,
        generation: i32,
        member: &str,
        offsets: &[(&str, i32, i64)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let mut fx = Effects::default();
        let r = self.c.commit_offsets(
            self.now,
            CommitRequest {
                group_id: group.into(),
                generation,
                member_id: member.into(),
                instance_id: None,
                offsets: offsets
                    .iter()
                    .map(|(t, p, o)| CommitPartition {
                        topic: t.to_string(),
                        partition: *p,
                        offset: *o,
                        leader_epoch: -1,
                        metadata: String::new(),
                    })
                    .collect(),
            },
            &mut fx,
        );
        self.absorb(fx);
        r
    }

    pub fn take_join(&mut self, t: Token) -> Result<JoinResponse, GroupError> {
        match self.replies.remove(&t) {
            Some(Reply::Join(r)) => r,
            other => panic!("expected a join reply for token {t}, got {other:?}"),
        }
    }

    pub fn take_sync(&mut self, t: Token) -> Result<SyncResponse, GroupError> {
        match self.replies.remove(&t) {
            Some(Reply::Sync(r)) => r,
            other => panic!("expected a sync reply for token {t}, got {other:?}"),
        }
    }

    pub fn answered(&self, t: Token) -> bool {
        self.replies.contains_key(&t)
    }

    pub fn state(&self, group: &str) -> GroupState {
        self.c.group(group).map_or(GroupState::Dead, |g| g.state)
    }

    /// Joins a new dynamic member through the KIP-394 round trip; returns the token of its
    /// second join (still waiting for the group) and its member id.
    pub fn join_new(&mut self, group: &str, client: &str) -> (Token, String) {
        let t = self.join(join_request(group, "", client));
        let member_id = match self.take_join(t) {
            Err(GroupError::MemberIdRequired { member_id }) => member_id,
            other => panic!("expected MEMBER_ID_REQUIRED, got {other:?}"),
        };
        let t = self.join(join_request(group, &member_id, client));
        (t, member_id)
    }

    /// Forms a stable group of `n` members: joins, waits out the initial delay, syncs with a
    /// trivial assignment. Returns the member ids (leader first) and the generation.
    pub fn stable_group(&mut self, group: &str, n: usize) -> (Vec<String>, i32) {
        let joined: Vec<(Token, String)> = (0..n)
            .map(|i| self.join_new(group, &format!("c{i}")))
            .collect();
        // Members arriving during the initial delay extend it, one delay at a time.
        while !joined.iter().all(|(t, _)| self.answered(*t)) {
            self.advance(Millis::from(DELAY));
        }
        let mut leader = None;
        let mut generation = 0;
        for (t, id) in &joined {
            let r = self.take_join(*t).expect("join completes");
            generation = r.generation;
            if r.leader == *id {
                leader = Some(id.clone());
            }
        }
        let leader = leader.expect("a leader");
        let ids: Vec<String> = std::iter::once(leader.clone())
            .chain(
                joined
                    .iter()
                    .map(|(_, id)| id.clone())
                    .filter(|id| *id != leader),
            )
            .collect();
        let assignments = ids
            .iter()
            .map(|id| (id.clone(), Bytes::from(format!("asg-{id}"))))
            .collect();
        let mut tokens = Vec::new();
        for id in ids.iter().skip(1) {
            tokens.push(self.sync(sync_request(group, generation, id, vec![])));
        }
        tokens.push(self.sync(sync_request(group, generation, &leader, assignments)));
        for t in tokens {
            self.take_sync(t).expect("sync completes");
        }
        assert_eq!(self.state(group), GroupState::Stable);
        (ids, generation)
    }
}

pub fn join_request(group: &str, member: &str, client: &str) -> JoinRequest {
    JoinRequest {
        group_id: group.into(),
        member_id: member.into(),
        instance_id: None,
        client_id: client.into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION,
        rebalance_timeout_ms: REBALANCE,
        protocol_type: "consumer".into(),
        protocols: vec![Protocol {
            name: "range".into(),
            metadata: Bytes::from(encode_subscription(&["t".to_string()])),
        }],
        require_known_member_id: true,
    }
}

pub fn sync_request(
    group: &str,
    generation: i32,
    member: &str,
    assignments: Vec<(String, Bytes)>,
) -> SyncRequest {
    SyncRequest {
        group_id: group.into(),
        generation,
        member_id: member.into(),
        instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol: Some("range".into()),
        assignments,
    }
}

/// A fresh coordinator fed every record the live one emitted, each encoded and decoded as it
/// would be through `__consumer_offsets` (what a broker restart does).
pub fn replayed(h: &Harness) -> Coordinator {
    let mut c = Coordinator::new(GroupConfig::default(), 1);
    for r in &h.records {
        let key = r.encode_key();
        let value = r.encode_value();
        c.replay(Record::decode(Some(&key), value.as_deref()).unwrap());
    }
    c.start(h.now);
    c
}
