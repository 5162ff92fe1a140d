//! KIP-848 consumer groups: server-side assignment, incremental revocation, epochs.

use std::collections::{BTreeMap, BTreeSet};

use chorus_coordinator::assignor::MemberAssignment;
use chorus_coordinator::*;

use crate::harness::{replayed, Harness};

fn topics(counts: &[(&str, i32)]) -> BTreeMap<String, i32> {
    counts.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

fn beat(member: &str, epoch: i32) -> ConsumerHeartbeat {
    ConsumerHeartbeat {
        group_id: "cg".into(),
        member_id: member.into(),
        member_epoch: epoch,
        instance_id: None,
        rack_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        rebalance_timeout_ms: 30_000,
        topic_names: (epoch == 0).then(|| vec!["t".to_string()]),
        topic_regex: None,
        server_assignor: None,
        owned: None,
    }
}

fn count(a: &MemberAssignment) -> usize {
    a.values().map(Vec::len).sum()
}

fn pairs(a: &MemberAssignment) -> BTreeSet<(String, i32)> {
    a.iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
        .collect()
}

/// A member as the client keeps it: what it owns and its epoch.
struct Client {
    id: String,
    epoch: i32,
    owned: MemberAssignment,
}

impl Client {
    fn heartbeat(
        &mut self,
        h: &mut Harness,
        t: &BTreeMap<String, i32>,
    ) -> ConsumerHeartbeatResponse {
        let mut req = beat(&self.id, self.epoch);
        req.owned = Some(self.owned.clone());
        let r = h.consumer_heartbeat(req, t).expect("heartbeat");
        self.epoch = r.member_epoch;
        if let Some(a) = &r.assignment {
            self.owned = a.clone();
        }
        r
    }
}

fn join(h: &mut Harness, t: &BTreeMap<String, i32>) -> Client {
    let r = h.consumer_heartbeat(beat("", 0), t).expect("join");
    Client {
        id: r.member_id,
        epoch: r.member_epoch,
        owned: r.assignment.unwrap_or_default(),
    }
}

/// Two members that joined and heartbeat until the group is stable.
fn converged_pair(h: &mut Harness, t: &BTreeMap<String, i32>) -> (Client, Client) {
    let mut a = join(h, t);
    let mut b = join(h, t);
    for _ in 0..3 {
        a.heartbeat(h, t);
        b.heartbeat(h, t);
    }
    (a, b)
}

#[test]
fn a_lone_member_gets_every_partition() {
    let mut h = Harness::new();
    let t = topics(&[("t", 6)]);
    let c = join(&mut h, &t);
    assert_eq!(c.epoch, 1);
    assert_eq!(count(&c.owned), 6);
    assert_eq!(h.c.describe_consumer_group("cg").unwrap().state, "Stable");
}

#[test]
fn a_second_member_gets_partitions_only_after_the_first_revokes_them() {
    let mut h = Harness::new();
    let t = topics(&[("t", 6)]);
    let mut a = join(&mut h, &t);
    let mut b = join(&mut h, &t);
    assert_eq!(count(&b.owned), 0, "nothing is free yet");
    assert_eq!(
        h.c.describe_consumer_group("cg").unwrap().state,
        "Reconciling"
    );
    // a's next heartbeat tells it to give up three partitions, without a new epoch.
    let epoch_before = a.epoch;
    let r = a.heartbeat(&mut h, &t);
    assert_eq!(count(r.assignment.as_ref().unwrap()), 3);
    assert_eq!(
        r.member_epoch, epoch_before,
        "revocation first, epoch after"
    );
    // b still gets nothing until a confirms.
    b.heartbeat(&mut h, &t);
    assert_eq!(count(&b.owned), 0);
    // a confirms (its heartbeat lists what it owns now) and moves to the new epoch.
    let r = a.heartbeat(&mut h, &t);
    assert_eq!(r.member_epoch, 2);
    b.heartbeat(&mut h, &t);
    assert_eq!(count(&b.owned), 3);
    assert!(
        pairs(&a.owned).is_disjoint(&pairs(&b.owned)),
        "no partition owned twice"
    );
    assert_eq!(pairs(&a.owned).len() + pairs(&b.owned).len(), 6);
    assert_eq!(h.c.describe_consumer_group("cg").unwrap().state, "Stable");
}

#[test]
fn partitions_are_never_owned_twice_while_members_churn() {
    let mut h = Harness::new();
    let t = topics(&[("t", 12), ("u", 5)]);
    let mut clients: Vec<Client> = Vec::new();
    for round in 0..40 {
        if round % 7 == 0 && clients.len() < 5 {
            clients.push(join(&mut h, &t));
        }
        if round % 11 == 10 {
            let gone = clients.remove(0);
            let mut req = beat(&gone.id, -1);
            req.topic_names = None;
            h.consumer_heartbeat(req, &t).unwrap();
        }
        for c in clients.iter_mut() {
            c.heartbeat(&mut h, &t);
        }
        let mut seen = BTreeSet::new();
        for c in &clients {
            for tp in pairs(&c.owned) {
                assert!(
                    seen.insert(tp.clone()),
                    "{tp:?} owned twice in round {round}"
                );
            }
        }
    }
    for _ in 0..3 {
        for c in clients.iter_mut() {
            c.heartbeat(&mut h, &t);
        }
    }
    let total: usize = clients.iter().map(|c| count(&c.owned)).sum();
    assert_eq!(
        total, 12,
        "all of t (u has no subscriber) once the group settles"
    );
    let loads: Vec<usize> = clients.iter().map(|c| count(&c.owned)).collect();
    assert!(
        loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1,
        "{loads:?}"
    );
}

#[test]
fn a_silent_member_is_removed_and_its_partitions_move() {
    let mut h = Harness::new();
    let t = topics(&[("t", 4)]);
    let (mut a, b) = converged_pair(&mut h, &t);
    assert_eq!(count(&a.owned), 2);
    // b goes silent past the session timeout; a keeps heartbeating.
    for _ in 0..10 {
        h.advance(5_000);
        a.heartbeat(&mut h, &t);
    }
    assert_eq!(count(&a.owned), 4);
    let err = h.consumer_heartbeat(beat(&b.id, b.epoch), &t).unwrap_err();
    assert!(matches!(err, GroupError::UnknownMemberId { .. }));
}

#[test]
fn stale_epochs_are_fenced_and_commits_need_the_current_epoch() {
    let mut h = Harness::new();
    let t = topics(&[("t", 2)]);
    let a = join(&mut h, &t);
    let err = h
        .consumer_heartbeat(beat(&a.id, a.epoch + 5), &t)
        .unwrap_err();
    assert_eq!(
        err,
        GroupError::FencedMemberEpoch {
            given: a.epoch + 5,
            current: a.epoch
        }
    );
    assert_eq!(
        h.commit("cg", a.epoch, &a.id, &[("t", 0, 1)]),
        Ok(vec![Ok(())])
    );
    assert_eq!(
        h.commit("cg", a.epoch - 1, &a.id, &[("t", 0, 1)]),
        Err(GroupError::StaleMemberEpoch {
            given: a.epoch - 1,
            current: a.epoch
        })
    );
    assert!(matches!(
        h.commit("cg", -1, "", &[("t", 0, 1)]),
        Err(GroupError::NotEmptyForOutsideCommit { .. })
    ));
    let listed = h.c.list_groups(&[], &["consumer".to_string()]);
    assert_eq!(
        (listed[0].group_type, listed[0].state),
        ("consumer", "Stable")
    );
    let mut fx = Effects::default();
    assert!(matches!(
        h.c.delete_group("cg", &mut fx),
        Err(GroupError::NonEmptyGroup { .. })
    ));
    // A classic member cannot join a group in use by the consumer protocol.
    let t2 = h.join(crate::harness::join_request("cg", "", "classic"));
    assert_eq!(h.take_join(t2), Err(GroupError::InconsistentGroupProtocol));
}

#[test]
fn regex_subscriptions_follow_new_topics() {
    let mut h = Harness::new();
    let mut req = beat("", 0);
    req.topic_names = None;
    req.topic_regex = Some("^orders-.*".into());
    let t = topics(&[("orders-eu", 2), ("other", 3), ("__consumer_offsets", 4)]);
    let r = h.consumer_heartbeat(req, &t).unwrap();
    assert_eq!(
        r.assignment.unwrap().keys().collect::<Vec<_>>(),
        vec!["orders-eu"]
    );
    let t = topics(&[("orders-eu", 2), ("orders-us", 1), ("other", 3)]);
    let r = h
        .consumer_heartbeat(beat(&r.member_id, r.member_epoch), &t)
        .unwrap();
    assert_eq!(
        r.assignment.unwrap().keys().collect::<Vec<_>>(),
        vec!["orders-eu", "orders-us"]
    );
}

#[test]
fn bad_heartbeats_are_refused() {
    let mut h = Harness::new();
    let t = topics(&[("t", 1)]);
    let mut bad = beat("", 0);
    bad.topic_regex = Some("(".into());
    assert!(matches!(
        h.consumer_heartbeat(bad, &t),
        Err(GroupError::InvalidRegularExpression { .. })
    ));
    let mut bad = beat("", 0);
    bad.server_assignor = Some("magic".into());
    assert!(matches!(
        h.consumer_heartbeat(bad, &t),
        Err(GroupError::UnsupportedAssignor { .. })
    ));
    let mut bad = beat("", 0);
    bad.topic_names = None;
    assert!(matches!(
        h.consumer_heartbeat(bad, &t),
        Err(GroupError::InvalidHeartbeat { .. })
    ));
    assert!(matches!(
        h.consumer_heartbeat(beat("ghost", 3), &t),
        Err(GroupError::UnknownMemberId { .. })
    ));
    let mut empty = beat("", 0);
    empty.group_id = String::new();
    assert_eq!(
        h.consumer_heartbeat(empty, &t),
        Err(GroupError::InvalidGroupId)
    );
}

#[test]
fn a_replayed_consumer_group_keeps_its_members_epochs_and_assignments() {
    let mut h = Harness::new();
    let t = topics(&[("t", 6)]);
    let (mut a, mut b) = converged_pair(&mut h, &t);
    assert_eq!(h.c.describe_consumer_group("cg").unwrap().state, "Stable");
    let before = h.c.describe_consumer_group("cg").unwrap();

    // The broker restarts: a new coordinator from the records alone.
    let rebuilt = replayed(&h);
    assert_eq!(rebuilt.persisted_view(), h.c.persisted_view());
    assert_eq!(rebuilt.describe_consumer_group("cg").unwrap(), before);
    h.c = rebuilt;
    // Both members carry on with the epochs they had, keeping their partitions.
    let (epoch_a, owned_a) = (a.epoch, a.owned.clone());
    let r = a.heartbeat(&mut h, &t);
    assert_eq!(r.member_epoch, epoch_a);
    assert_eq!(a.owned, owned_a);
    b.heartbeat(&mut h, &t);
    assert_eq!(count(&a.owned) + count(&b.owned), 6);
    assert_eq!(h.c.describe_consumer_group("cg").unwrap().state, "Stable");
}

#[test]
fn a_replayed_member_that_never_returns_expires_and_its_partitions_move() {
    let mut h = Harness::new();
    let t = topics(&[("t", 4)]);
    let (mut a, _b) = converged_pair(&mut h, &t);
    h.c = replayed(&h);
    // Only `a` comes back; `b` runs out its fresh session.
    let session = Millis::from(GroupConfig::default().consumer_session_timeout_ms);
    for _ in 0..4 {
        h.advance(session / 3);
        a.heartbeat(&mut h, &t);
    }
    a.heartbeat(&mut h, &t);
    assert_eq!(count(&a.owned), 4);
    let described = h.c.describe_consumer_group("cg").unwrap();
    assert_eq!(described.members.len(), 1);
    // And that expiry was itself persisted.
    assert_eq!(replayed(&h).persisted_view(), h.c.persisted_view());
}

mod replay_property {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Join(u8),
        Beat(u8),
        Leave(u8),
        Advance(u16),
        Grow(i32),
        DeleteGroup,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..4).prop_map(Op::Join),
            (0u8..4).prop_map(Op::Beat),
            (0u8..4).prop_map(Op::Beat),
            (0u8..4).prop_map(Op::Leave),
            (0u16..20_000).prop_map(Op::Advance),
            (1i32..4).prop_map(Op::Grow),
            Just(Op::DeleteGroup),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever joins, heartbeats, leaves, expiries, topic growth and deletions happen,
        /// the records replay to exactly the live state.
        #[test]
        fn kip848_replay_equals_live_after_any_history(ops in prop::collection::vec(op(), 1..60)) {
            let mut h = Harness::new();
            let mut t = topics(&[("t", 3)]);
            let mut clients: Vec<Option<Client>> = (0..4).map(|_| None).collect();
            for op in ops {
                match op {
                    Op::Join(slot) => {
                        if clients[slot as usize].is_none() {
                            clients[slot as usize] = Some(join(&mut h, &t));
                        }
                    }
                    Op::Beat(slot) => {
                        if let Some(c) = clients[slot as usize].as_mut() {
                            let mut req = beat(&c.id, c.epoch);
                            req.owned = Some(c.owned.clone());
                            match h.consumer_heartbeat(req, &t) {
                                Ok(r) => {
                                    c.epoch = r.member_epoch;
                                    if let Some(a) = r.assignment {
                                        c.owned = a;
                                    }
                                }
                                // Expired or fenced: the client is gone.
                                Err(_) => clients[slot as usize] = None,
                            }
                        }
                    }
                    Op::Leave(slot) => {
                        if let Some(c) = clients[slot as usize].take() {
                            let mut req = beat(&c.id, -1);
                            req.topic_names = None;
                            let _ = h.consumer_heartbeat(req, &t);
                        }
                    }
                    Op::Advance(ms) => h.advance(Millis::from(ms)),
                    Op::Grow(n) => {
                        *t.get_mut("t").unwrap() += n;
                    }
                    Op::DeleteGroup => {
                        let mut fx = Effects::default();
                        let _ = h.c.delete_group("cg", &mut fx);
                        h.records.extend(fx.records);
                    }
                }
                prop_assert_eq!(replayed(&h).persisted_view(), h.c.persisted_view());
            }
        }
    }
}

#[test]
fn an_idle_group_switches_protocols_and_replay_agrees() {
    let mut h = Harness::new();
    let t = topics(&[("t", 2)]);
    let a = join(&mut h, &t);
    let mut leave = beat(&a.id, -1);
    leave.topic_names = None;
    h.consumer_heartbeat(leave, &t).unwrap();
    // Empty KIP-848 group -> classic.
    let (ids, _) = h.stable_group("cg", 1);
    assert_eq!(h.c.group("cg").unwrap().group_type(), "classic");
    assert_eq!(replayed(&h).persisted_view(), h.c.persisted_view());
    assert_eq!(replayed(&h).group("cg").unwrap().group_type(), "classic");
    // While a classic member is in it, a KIP-848 member cannot join.
    assert_eq!(
        h.consumer_heartbeat(beat("", 0), &t).unwrap_err(),
        GroupError::InconsistentGroupProtocol
    );
    // Empty classic group -> KIP-848.
    h.leave("cg", &ids[0]).unwrap();
    join(&mut h, &t);
    assert_eq!(h.c.group("cg").unwrap().group_type(), "consumer");
    assert_eq!(replayed(&h).persisted_view(), h.c.persisted_view());
    assert_eq!(replayed(&h).group("cg").unwrap().group_type(), "consumer");
}
