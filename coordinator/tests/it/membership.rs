//! The classic protocol, one test per transition of the group state table.

use bytes::Bytes;
use chorus_coordinator::*;

use crate::harness::*;

#[test]
fn first_join_gets_member_id_required_then_waits_out_the_initial_delay() {
    let mut h = Harness::new();
    let (t, id) = h.join_new("g", "c1");
    assert!(id.starts_with("c1-"), "member id {id}");
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    h.advance(Millis::from(DELAY) - 1);
    assert!(!h.answered(t), "answered before the initial delay");
    h.advance(1);
    let r = h.take_join(t).unwrap();
    assert_eq!((r.generation, r.leader.as_str()), (1, id.as_str()));
    assert_eq!(r.members.len(), 1, "the leader gets the member list");
    assert_eq!(r.protocol.as_deref(), Some("range"));
    assert_eq!(h.state("g"), GroupState::CompletingRebalance);
}

#[test]
fn members_arriving_during_the_initial_delay_extend_it_and_join_one_generation() {
    let mut h = Harness::new();
    let (t1, _) = h.join_new("g", "c1");
    h.advance(Millis::from(DELAY) - 10);
    let (t2, _) = h.join_new("g", "c2");
    h.advance(10);
    assert!(
        !h.answered(t1),
        "a new member arrived: the delay is extended"
    );
    h.advance(Millis::from(DELAY));
    let (a, b) = (h.take_join(t1).unwrap(), h.take_join(t2).unwrap());
    assert_eq!((a.generation, b.generation), (1, 1));
    assert_eq!(
        a.members.len() + b.members.len(),
        2,
        "only the leader gets members"
    );
}

#[test]
fn leader_sync_makes_the_group_stable_and_answers_waiting_followers() {
    let mut h = Harness::new();
    let (t1, m1) = h.join_new("g", "c1");
    let (t2, m2) = h.join_new("g", "c2");
    h.advance(Millis::from(DELAY) * 2);
    let r1 = h.take_join(t1).unwrap();
    h.take_join(t2).unwrap();
    let (leader, follower) = if r1.leader == m1 { (m1, m2) } else { (m2, m1) };
    let tf = h.sync(sync_request("g", 1, &follower, vec![]));
    assert!(!h.answered(tf), "a follower waits for the leader");
    let tl = h.sync(sync_request(
        "g",
        1,
        &leader,
        vec![
            (leader.clone(), Bytes::from_static(b"L")),
            (follower.clone(), Bytes::from_static(b"F")),
        ],
    ));
    assert_eq!(
        h.take_sync(tl).unwrap().assignment,
        Bytes::from_static(b"L")
    );
    assert_eq!(
        h.take_sync(tf).unwrap().assignment,
        Bytes::from_static(b"F")
    );
    assert_eq!(h.state("g"), GroupState::Stable);
    assert!(
        h.records.iter().any(|r| matches!(r, Record::Group { value: Some(m), .. } if m.generation == 1 && m.members.len() == 2)),
        "the stable generation is persisted"
    );
    // A sync in a stable group answers the member's assignment again.
    let again = h.sync(sync_request("g", 1, &follower, vec![]));
    assert_eq!(
        h.take_sync(again).unwrap().assignment,
        Bytes::from_static(b"F")
    );
}

#[test]
fn a_new_member_rebalances_a_stable_group_as_soon_as_everyone_rejoined() {
    let mut h = Harness::new();
    let (ids, generation) = h.stable_group("g", 2);
    let (t_new, _) = h.join_new("g", "c9");
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    assert_eq!(
        h.heartbeat("g", generation, &ids[1]),
        Err(GroupError::RebalanceInProgress)
    );
    let t0 = h.join(join_request("g", &ids[0], "c0"));
    assert!(!h.answered(t0));
    let t1 = h.join(join_request("g", &ids[1], "c1"));
    // No waiting for a timeout: the last rejoin completes the generation.
    for t in [t0, t1, t_new] {
        assert_eq!(h.take_join(t).unwrap().generation, generation + 1);
    }
    assert_eq!(h.state("g"), GroupState::CompletingRebalance);
}

#[test]
fn a_follower_rejoining_unchanged_gets_the_current_generation_without_rebalance() {
    let mut h = Harness::new();
    let (ids, generation) = h.stable_group("g", 2);
    let t = h.join(join_request("g", &ids[1], "c1"));
    let r = h.take_join(t).unwrap();
    assert_eq!(r.generation, generation);
    assert_eq!(h.state("g"), GroupState::Stable);
}

#[test]
fn leave_rebalances_and_the_rest_complete_when_they_rejoin() {
    let mut h = Harness::new();
    let (ids, generation) = h.stable_group("g", 3);
    h.leave("g", &ids[2]).unwrap();
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    let t0 = h.join(join_request("g", &ids[0], "c0"));
    let t1 = h.join(join_request("g", &ids[1], "c1"));
    let r0 = h.take_join(t0).unwrap();
    h.take_join(t1).unwrap();
    assert_eq!(r0.generation, generation + 1);
    assert_eq!(r0.members.len(), 2);
    assert_eq!(
        h.leave("g", &ids[2]),
        Err(GroupError::UnknownMemberId {
            member_id: ids[2].clone()
        })
    );
}

#[test]
fn a_silent_member_expires_after_its_session_timeout() {
    let mut h = Harness::new();
    let (ids, generation) = h.stable_group("g", 2);
    for _ in 0..5 {
        h.advance(Millis::from(SESSION) / 2);
        let _ = h.heartbeat("g", generation, &ids[0]);
    }
    assert_eq!(
        h.state("g"),
        GroupState::PreparingRebalance,
        "ids[1] never heartbeated"
    );
    assert_eq!(
        h.heartbeat("g", generation, &ids[1]),
        Err(GroupError::UnknownMemberId {
            member_id: ids[1].clone()
        })
    );
    let t = h.join(join_request("g", &ids[0], "c0"));
    let r = h.take_join(t).unwrap();
    assert_eq!((r.generation, r.members.len()), (generation + 1, 1));
}

#[test]
fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
    let mut h = Harness::new();
    let (ids, generation) = h.stable_group("g", 2);
    let t0 = h.join(join_request("g", &ids[0], "c0"));
    // ids[1] keeps heartbeating but never rejoins.
    for _ in 0..(REBALANCE / 2000) {
        h.advance(2000);
        let _ = h.heartbeat("g", generation, &ids[1]);
    }
    h.advance(2000);
    let r = h.take_join(t0).unwrap();
    assert_eq!((r.generation, r.members.len()), (generation + 1, 1));
}

#[test]
fn completing_rebalance_goes_back_to_preparing_when_a_member_never_syncs() {
    let mut h = Harness::new();
    let (t1, m1) = h.join_new("g", "c1");
    let (t2, m2) = h.join_new("g", "c2");
    h.advance(Millis::from(DELAY) * 2);
    let leader = h.take_join(t1).unwrap().leader;
    h.take_join(t2).unwrap();
    let follower = if leader == m1 { m2 } else { m1 };
    let tf = h.sync(sync_request("g", 1, &follower, vec![]));
    // The leader heartbeats but never sends SyncGroup.
    while !h.answered(tf) {
        h.advance(2000);
        let _ = h.heartbeat("g", 1, &leader);
    }
    assert_eq!(h.take_sync(tf), Err(GroupError::RebalanceInProgress));
    assert_eq!(h.state("g"), GroupState::PreparingRebalance);
    assert!(!h.c.group("g").unwrap().members.contains_key(&leader));
}

#[test]
fn a_join_with_new_metadata_during_completing_rebalance_restarts_the_rebalance() {
    let mut h = Harness::new();
    let (t1, m1) = h.join_new("g", "c1");
    h.advance(Millis::from(DELAY));
    h.take_join(t1).unwrap();
    let mut req = join_request("g", &m1, "c1");
    req.protocols[0].metadata = Bytes::from_static(b"changed");
    let t = h.join(req);
    // A one-member group completes at once with the next generation.
    assert_eq!(h.take_join(t).unwrap().generation, 2);
}

#[test]
fn the_last_member_leaving_empties_the_group() {
    let mut h = Harness::new();
    let (ids, _) = h.stable_group("g", 1);
    h.leave("g", &ids[0]).unwrap();
    assert_eq!(h.state("g"), GroupState::Empty);
    assert!(h
        .records
        .iter()
        .any(|r| matches!(r, Record::Group { value: Some(m), .. } if m.members.is_empty())));
}

#[test]
fn delete_takes_an_empty_group_to_dead_and_refuses_a_live_one() {
    let mut h = Harness::new();
    let (ids, generation) = h.stable_group("g", 1);
    h.commit("g", generation, &ids[0], &[("t", 0, 5)]).unwrap();
    let mut fx = Effects::default();
    assert_eq!(
        h.c.delete_group("g", &mut fx),
        Err(GroupError::NonEmptyGroup {
            group_id: "g".into()
        })
    );
    h.leave("g", &ids[0]).unwrap();
    h.c.delete_group("g", &mut fx).unwrap();
    assert_eq!(h.state("g"), GroupState::Dead);
    assert!(fx.records.contains(&Record::Group {
        group: "g".into(),
        value: None
    }));
    assert!(fx
        .records
        .iter()
        .any(|r| matches!(r, Record::Offset { value: None, .. })));
    assert_eq!(
        h.c.delete_group("g", &mut fx),
        Err(GroupError::GroupIdNotFound {
            group_id: "g".into()
        })
    );
}

#[test]
fn fencing_errors_for_stale_generation_unknown_member_and_wrong_protocol() {
    let mut h = Harness::new();
    let (ids, generation) = h.stable_group("g", 2);
    assert_eq!(
        h.heartbeat("g", generation - 1, &ids[0]),
        Err(GroupError::IllegalGeneration {
            given: generation - 1,
            current: generation
        })
    );
    assert_eq!(
        h.heartbeat("g", generation, "never-issued"),
        Err(GroupError::UnknownMemberId {
            member_id: "never-issued".into()
        })
    );
    let t = h.sync(sync_request("g", generation + 5, &ids[0], vec![]));
    assert!(matches!(
        h.take_sync(t),
        Err(GroupError::IllegalGeneration { .. })
    ));
    let mut other = join_request("g", "", "x");
    other.protocol_type = "connect".into();
    let t = h.join(other);
    assert_eq!(h.take_join(t), Err(GroupError::InconsistentGroupProtocol));
    assert_eq!(
        h.state("g"),
        GroupState::Stable,
        "bad requests change nothing"
    );
}

fn static_join(group: &str, member: &str, instance: &str) -> JoinRequest {
    JoinRequest {
        instance_id: Some(instance.into()),
        ..join_request(group, member, "static")
    }
}

#[test]
fn a_restarted_static_member_gets_its_assignment_back_without_a_rebalance() {
    let mut h = Harness::new();
    let t1 = h.join(static_join("g", "", "i1"));
    let t2 = h.join(static_join("g", "", "i2"));
    h.advance(Millis::from(DELAY) * 2);
    let r1 = h.take_join(t1).unwrap();
    let r2 = h.take_join(t2).unwrap();
    let (leader, follower) = if r1.leader == r1.member_id {
        (r1, r2)
    } else {
        (r2, r1)
    };
    let ts = h.sync(sync_request("g", 1, &follower.member_id, vec![]));
    let tl = h.sync(sync_request(
        "g",
        1,
        &leader.member_id,
        vec![
            (leader.member_id.clone(), Bytes::from_static(b"L")),
            (follower.member_id.clone(), Bytes::from_static(b"F")),
        ],
    ));
    h.take_sync(ts).unwrap();
    h.take_sync(tl).unwrap();

    // The follower restarts: it rejoins with its instance id and no member id.
    let instance = if follower.member_id.starts_with("i1") {
        "i1"
    } else {
        "i2"
    };
    let t = h.join(static_join("g", "", instance));
    let rejoined = h.take_join(t).unwrap();
    assert_eq!(rejoined.generation, 1, "no new generation");
    assert_ne!(rejoined.member_id, follower.member_id);
    assert_eq!(h.state("g"), GroupState::Stable);
    let t = h.sync(SyncRequest {
        instance_id: Some(instance.into()),
        ..sync_request("g", 1, &rejoined.member_id, vec![])
    });
    assert_eq!(h.take_sync(t).unwrap().assignment, Bytes::from_static(b"F"));
    // The old incarnation is fenced.
    let stale = h.c.heartbeat(
        h.now,
        &HeartbeatRequest {
            group_id: "g".into(),
            generation: 1,
            member_id: follower.member_id,
            instance_id: Some(instance.into()),
        },
    );
    assert_eq!(
        stale,
        Err(GroupError::FencedInstanceId {
            instance_id: instance.into()
        })
    );
}

#[test]
fn a_pending_member_that_never_rejoins_expires_and_does_not_block_the_group() {
    let mut h = Harness::new();
    let (ids, generation) = h.stable_group("g", 1);
    let t = h.join(join_request("g", "", "ghost"));
    assert!(matches!(
        h.take_join(t),
        Err(GroupError::MemberIdRequired { .. })
    ));
    // The ghost never comes back; the stable member is unaffected.
    for _ in 0..4 {
        h.advance(Millis::from(SESSION) / 3);
        h.heartbeat("g", generation, &ids[0]).unwrap();
    }
    assert_eq!(h.state("g"), GroupState::Stable);
    assert!(h.c.group("g").unwrap().members.len() == 1);
}

#[test]
fn batch_leave_reports_each_member() {
    let mut h = Harness::new();
    let (ids, _) = h.stable_group("g", 2);
    let mut fx = Effects::default();
    let results = h.c.leave(
        h.now,
        "g",
        &[
            LeaveMember {
                member_id: ids[0].clone(),
                instance_id: None,
            },
            LeaveMember {
                member_id: "nobody".into(),
                instance_id: None,
            },
            LeaveMember {
                member_id: ids[1].clone(),
                instance_id: None,
            },
        ],
        &mut fx,
    );
    assert_eq!(results[0], Ok(()));
    assert!(matches!(
        results[1],
        Err(GroupError::UnknownMemberId { .. })
    ));
    assert_eq!(results[2], Ok(()));
    assert_eq!(h.state("g"), GroupState::Empty);
}
