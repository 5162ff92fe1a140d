//! The offset store: commits by members and from outside, fetches, deletes and retention.

use chorus_coordinator::*;

use crate::harness::*;

fn fetched(h: &Harness, group: &str) -> Vec<(String, i32, i64)> {
    h.c.fetch_offsets(group, None)
        .into_iter()
        .map(|f| (f.topic, f.partition, f.committed.unwrap().offset))
        .collect()
}

#[test]
fn a_member_commits_and_fetches_with_metadata() {
    let mut h = Harness::new();
    let (ids, generation) = h.stable_group("g", 1);
    let mut fx = Effects::default();
    let r = h.c.commit_offsets(
        h.now,
        CommitRequest {
            group_id: "g".into(),
            generation,
            member_id: ids[0].clone(),
            instance_id: None,
            offsets: vec![CommitPartition {
                topic: "t".into(),
                partition: 1,
                offset: 42,
                leader_epoch: 3,
                metadata: "checkpoint-7".into(),
            }],
        },
        &mut fx,
    );
    assert_eq!(r, Ok(vec![Ok(())]));
    assert_eq!(fx.records.len(), 1, "one record per committed partition");
    let got =
        h.c.fetch_offsets("g", Some(&[("t".to_string(), vec![0, 1])]));
    assert_eq!(got[0].committed, None);
    let c = got[1].committed.clone().unwrap();
    assert_eq!(
        (c.offset, c.leader_epoch, c.metadata.as_str()),
        (42, 3, "checkpoint-7")
    );
    assert!(h.c.fetch_offsets("nope", None).is_empty());
}

#[test]
fn commits_from_outside_are_accepted_only_while_the_group_is_empty() {
    let mut h = Harness::new();
    // A group that does not exist yet: an admin tool sets its offsets.
    assert_eq!(h.commit("admin", -1, "", &[("t", 0, 10)]), Ok(vec![Ok(())]));
    assert_eq!(h.state("admin"), GroupState::Empty);
    let (ids, generation) = h.stable_group("g", 1);
    assert_eq!(
        h.commit("g", -1, "", &[("t", 0, 10)]),
        Err(GroupError::NotEmptyForOutsideCommit {
            group_id: "g".into()
        })
    );
    h.leave("g", &ids[0]).unwrap();
    assert_eq!(h.commit("g", -1, "", &[("t", 0, 3)]), Ok(vec![Ok(())]));
    assert_eq!(fetched(&h, "g"), vec![("t".into(), 0, 3)]);
    // The departed member's generation no longer commits.
    assert!(h.commit("g", generation, &ids[0], &[("t", 0, 9)]).is_err());
}

#[test]
fn commits_are_refused_while_the_group_completes_a_rebalance() {
    let mut h = Harness::new();
    let (t, id) = h.join_new("g", "c");
    h.advance(Millis::from(DELAY));
    let r = h.take_join(t).unwrap();
    assert_eq!(
        h.commit("g", r.generation, &id, &[("t", 0, 1)]),
        Err(GroupError::RebalanceInProgress)
    );
    assert_eq!(
        h.commit("g", r.generation + 1, &id, &[("t", 0, 1)]),
        Err(GroupError::IllegalGeneration {
            given: r.generation + 1,
            current: r.generation
        })
    );
}

#[test]
fn oversized_metadata_fails_only_its_partition() {
    let mut h = Harness::new();
    let mut fx = Effects::default();
    let r =
        h.c.commit_offsets(
            h.now,
            CommitRequest {
                group_id: "g".into(),
                generation: -1,
                member_id: String::new(),
                instance_id: None,
                offsets: vec![
                    CommitPartition {
                        topic: "t".into(),
                        partition: 0,
                        offset: 1,
                        leader_epoch: -1,
                        metadata: "x".repeat(5000),
                    },
                    CommitPartition {
                        topic: "t".into(),
                        partition: 1,
                        offset: 2,
                        leader_epoch: -1,
                        metadata: String::new(),
                    },
                ],
            },
            &mut fx,
        )
        .unwrap();
    assert!(matches!(
        r[0],
        Err(GroupError::OffsetMetadataTooLarge {
            len: 5000,
            max: 4096
        })
    ));
    assert_eq!(r[1], Ok(()));
    assert_eq!(fetched(&h, "g"), vec![("t".into(), 1, 2)]);
}

#[test]
fn offset_delete_refuses_subscribed_topics_of_a_live_group() {
    let mut h = Harness::new();
    let (ids, generation) = h.stable_group("g", 1);
    h.commit("g", generation, &ids[0], &[("t", 0, 5), ("other", 0, 6)])
        .unwrap();
    let mut fx = Effects::default();
    let r =
        h.c.delete_offsets("g", &[("t".into(), 0), ("other".into(), 0)], &mut fx)
            .unwrap();
    assert_eq!(
        r[0],
        Err(GroupError::GroupSubscribedToTopic { topic: "t".into() })
    );
    assert_eq!(r[1], Ok(()));
    assert_eq!(fetched(&h, "g"), vec![("t".into(), 0, 5)]);
    assert_eq!(
        h.c.delete_offsets("missing", &[], &mut fx),
        Err(GroupError::GroupIdNotFound {
            group_id: "missing".into()
        })
    );
}

#[test]
fn offsets_expire_a_retention_period_after_the_group_became_empty() {
    let retention = 60_000;
    let mut h = Harness::with_config(GroupConfig {
        min_session_timeout_ms: 1_000,
        initial_rebalance_delay_ms: DELAY,
        offsets_retention_ms: retention,
        offsets_retention_check_interval_ms: 1_000,
        ..GroupConfig::default()
    });
    let (ids, generation) = h.stable_group("g", 1);
    h.commit("g", generation, &ids[0], &[("t", 0, 5)]).unwrap();
    // While the member is there, nothing expires, however old the commit.
    for _ in 0..(2 * retention / 5_000) {
        h.advance(5_000);
        h.heartbeat("g", generation, &ids[0]).unwrap();
    }
    assert_eq!(fetched(&h, "g").len(), 1);
    h.leave("g", &ids[0]).unwrap();
    h.advance(retention - 2_000);
    assert_eq!(
        fetched(&h, "g").len(),
        1,
        "counted from when the group became empty"
    );
    h.advance(3_000);
    assert!(fetched(&h, "g").is_empty());
    assert_eq!(
        h.state("g"),
        GroupState::Dead,
        "an empty group without offsets goes"
    );
    assert!(h.records.contains(&Record::Group {
        group: "g".into(),
        value: None
    }));
}
