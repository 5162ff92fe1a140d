//! Replaying the persisted records gives exactly the state of the live run.

use bytes::Bytes;
use chorus_coordinator::*;
use proptest::prelude::*;

use crate::harness::*;

#[test]
fn replay_rebuilds_groups_offsets_and_deletions() {
    let mut h = Harness::new();
    let (ids, generation) = h.stable_group("live", 3);
    h.commit("live", generation, &ids[1], &[("t", 0, 5), ("t", 1, 7)])
        .unwrap();
    h.commit("admin", -1, "", &[("t", 0, 1)]).unwrap();
    let (gone, _) = h.stable_group("gone", 1);
    h.commit("gone", 1, &gone[0], &[("t", 2, 2)]).unwrap();
    h.leave("gone", &gone[0]).unwrap();
    let mut fx = Effects::default();
    h.c.delete_group("gone", &mut fx).unwrap();
    h.records.extend(fx.records);
    let (empty, _) = h.stable_group("emptied", 1);
    h.leave("emptied", &empty[0]).unwrap();

    let rebuilt = replayed(&h);
    assert_eq!(rebuilt.persisted_view(), h.c.persisted_view());
    assert!(rebuilt.group("gone").is_none());
    assert_eq!(rebuilt.group("live").unwrap().state, GroupState::Stable);
    assert_eq!(rebuilt.group("emptied").unwrap().state, GroupState::Empty);
}

#[test]
fn a_replayed_stable_group_keeps_serving_its_members() {
    let mut h = Harness::new();
    let (ids, generation) = h.stable_group("g", 2);
    let mut rebuilt = replayed(&h);
    rebuilt
        .heartbeat(
            h.now,
            &HeartbeatRequest {
                group_id: "g".into(),
                generation,
                member_id: ids[1].clone(),
                instance_id: None,
            },
        )
        .unwrap();
    let mut fx = Effects::default();
    rebuilt.sync(
        h.now,
        1,
        sync_request("g", generation, &ids[1], vec![]),
        &mut fx,
    );
    match &fx.replies[0] {
        (1, Reply::Sync(Ok(r))) => assert_eq!(r.assignment, Bytes::from(format!("asg-{}", ids[1]))),
        other => panic!("unexpected {other:?}"),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Join(u8),
    Leave(u8),
    Commit(u8, i32, i64),
    AdminCommit(u8, i32, i64),
    Advance(u16),
    SyncAll,
    DeleteGroup(u8),
    DeleteOffset(u8, i32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4).prop_map(Op::Join),
        (0u8..4).prop_map(Op::Leave),
        (0u8..4, 0i32..3, 0i64..1000).prop_map(|(m, p, o)| Op::Commit(m, p, o)),
        (0u8..2, 0i32..3, 0i64..1000).prop_map(|(g, p, o)| Op::AdminCommit(g, p, o)),
        (0u16..8000).prop_map(Op::Advance),
        Just(Op::SyncAll),
        (0u8..2).prop_map(Op::DeleteGroup),
        (0u8..2, 0i32..3).prop_map(|(g, p)| Op::DeleteOffset(g, p)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any sequence of operations, brought to rest (every member synced or gone), replays to
    /// the same persisted state.
    #[test]
    fn replay_equals_live_after_any_history(ops in prop::collection::vec(op(), 1..60)) {
        let mut h = Harness::new();
        let groups = ["g0", "g1"];
        // member slot -> (group, member id)
        let mut members: Vec<Option<(String, String)>> = vec![None; 4];
        for op in ops {
            match op {
                Op::Join(slot) => {
                    let group = groups[(slot % 2) as usize];
                    let id = members[slot as usize].as_ref().map(|(_, id)| id.clone()).unwrap_or_default();
                    let t = h.join(join_request(group, &id, &format!("c{slot}")));
                    if let Some(Reply::Join(Err(GroupError::MemberIdRequired { member_id }))) = h.replies.remove(&t) {
                        h.join(join_request(group, &member_id, &format!("c{slot}")));
                        members[slot as usize] = Some((group.to_string(), member_id));
                    }
                }
                Op::Leave(slot) => {
                    if let Some((g, id)) = members[slot as usize].take() {
                        let _ = h.leave(&g, &id);
                    }
                }
                Op::Commit(slot, p, o) => {
                    if let Some((g, id)) = members[slot as usize].clone() {
                        let generation = h.c.group(&g).map_or(-1, |g| g.generation);
                        let _ = h.commit(&g, generation, &id, &[("t", p, o)]);
                    }
                }
                Op::AdminCommit(g, p, o) => { let _ = h.commit(groups[g as usize], -1, "", &[("t", p, o)]); }
                Op::Advance(ms) => h.advance(Millis::from(ms)),
                Op::SyncAll => sync_everyone(&mut h),
                Op::DeleteGroup(g) => {
                    let mut fx = Effects::default();
                    let _ = h.c.delete_group(groups[g as usize], &mut fx);
                    h.records.extend(fx.records);
                }
                Op::DeleteOffset(g, p) => {
                    let mut fx = Effects::default();
                    let _ = h.c.delete_offsets(groups[g as usize], &[("t".into(), p)], &mut fx);
                    h.records.extend(fx.records);
                }
            }
        }
        // Bring every group to rest: finish rebalances, sync, or let everyone expire.
        for _ in 0..20 {
            if h.c.groups().all(|g| matches!(g.state, GroupState::Stable | GroupState::Empty)) {
                break;
            }
            h.advance(Millis::from(DELAY));
            rejoin_everyone(&mut h);
            h.advance(Millis::from(DELAY));
            sync_everyone(&mut h);
        }
        prop_assume!(h.c.groups().all(|g| matches!(g.state, GroupState::Stable | GroupState::Empty)));
        prop_assert_eq!(replayed(&h).persisted_view(), h.c.persisted_view());
    }
}

/// Every member of a rebalancing group rejoins.
fn rejoin_everyone(h: &mut Harness) {
    let waiting: Vec<(String, String)> =
        h.c.groups()
            .filter(|g| g.state == GroupState::PreparingRebalance)
            .flat_map(|g| g.members.keys().map(move |m| (g.id.clone(), m.clone())))
            .collect();
    for (g, m) in waiting {
        h.join(join_request(&g, &m, "c"));
    }
}

/// In every group completing a rebalance, followers then the leader sync.
fn sync_everyone(h: &mut Harness) {
    let groups: Vec<(String, i32, Option<String>, Vec<String>)> =
        h.c.groups()
            .filter(|g| g.state == GroupState::CompletingRebalance)
            .map(|g| {
                (
                    g.id.clone(),
                    g.generation,
                    g.leader.clone(),
                    g.members.keys().cloned().collect(),
                )
            })
            .collect();
    for (g, generation, leader, members) in groups {
        for m in members.iter().filter(|m| Some(*m) != leader.as_ref()) {
            h.sync(sync_request(&g, generation, m, vec![]));
        }
        if let Some(l) = leader {
            let assignments = members
                .iter()
                .map(|m| (m.clone(), Bytes::from(m.clone())))
                .collect();
            h.sync(sync_request(&g, generation, &l, assignments));
        }
    }
}
