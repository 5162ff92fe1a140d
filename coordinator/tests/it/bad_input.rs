//! Bad requests get the protocol's error and change no other group.

use bytes::Bytes;
use chorus_coordinator::*;

use crate::harness::*;

#[test]
fn bad_joins_are_refused_and_leave_other_groups_alone() {
    let mut h = Harness::new();
    let (ids, generation) = h.stable_group("good", 2);
    let before = h.c.persisted_view();

    type Expect = fn(&GroupError) -> bool;
    let cases: Vec<(JoinRequest, Expect)> = vec![
        (join_request("", "", "c"), |e| {
            *e == GroupError::InvalidGroupId
        }),
        (
            JoinRequest {
                session_timeout_ms: 10,
                ..join_request("bad", "", "c")
            },
            |e| matches!(e, GroupError::InvalidSessionTimeout { given: 10, .. }),
        ),
        (
            JoinRequest {
                protocols: vec![],
                ..join_request("bad", "", "c")
            },
            |e| *e == GroupError::InconsistentGroupProtocol,
        ),
        (
            JoinRequest {
                protocol_type: String::new(),
                ..join_request("bad", "", "c")
            },
            |e| *e == GroupError::InconsistentGroupProtocol,
        ),
        (
            JoinRequest {
                protocols: vec![Protocol {
                    name: "range".into(),
                    metadata: Bytes::from(vec![0u8; 2 << 20]),
                }],
                ..join_request("bad", "", "c")
            },
            |e| matches!(e, GroupError::MemberMetadataTooLarge { .. }),
        ),
        (join_request("bad", "never-issued", "c"), |e| {
            matches!(e, GroupError::UnknownMemberId { .. })
        }),
        (join_request("good", "never-issued", "c"), |e| {
            matches!(e, GroupError::UnknownMemberId { .. })
        }),
        (
            JoinRequest {
                protocol_type: "connect".into(),
                ..join_request("good", "", "c")
            },
            |e| *e == GroupError::InconsistentGroupProtocol,
        ),
    ];
    for (req, expected) in cases {
        let t = h.join(req.clone());
        let err = h.take_join(t).expect_err("refused");
        assert!(expected(&err), "{req:?} answered {err:?}");
    }
    assert!(
        h.c.group("bad").is_none(),
        "a refused join does not create a group"
    );
    assert_eq!(h.c.persisted_view(), before);
    assert_eq!(h.state("good"), GroupState::Stable);
    h.heartbeat("good", generation, &ids[0]).unwrap();
}

#[test]
fn requests_for_unknown_groups_are_errors_not_new_groups() {
    let mut h = Harness::new();
    assert!(matches!(
        h.heartbeat("nope", 1, "m"),
        Err(GroupError::UnknownMemberId { .. })
    ));
    let t = h.sync(sync_request("nope", 1, "m", vec![]));
    assert!(matches!(
        h.take_sync(t),
        Err(GroupError::UnknownMemberId { .. })
    ));
    assert!(matches!(
        h.leave("nope", "m"),
        Err(GroupError::UnknownMemberId { .. })
    ));
    assert!(matches!(
        h.commit("nope", 3, "m", &[("t", 0, 1)]),
        Err(GroupError::IllegalGeneration { .. })
    ));
    assert_eq!(
        h.commit("", -1, "", &[("t", 0, 1)]),
        Err(GroupError::InvalidGroupId)
    );
    let mut fx = Effects::default();
    assert!(matches!(
        h.c.delete_group("nope", &mut fx),
        Err(GroupError::GroupIdNotFound { .. })
    ));
    assert!(h.c.describe_group("nope").is_none());
    assert_eq!(h.c.groups().count(), 0);
    assert!(fx.records.is_empty());
}

#[test]
fn a_sync_with_the_wrong_protocol_is_inconsistent() {
    let mut h = Harness::new();
    let (ids, generation) = h.stable_group("g", 1);
    let t = h.sync(SyncRequest {
        protocol: Some("roundrobin".into()),
        ..sync_request("g", generation, &ids[0], vec![])
    });
    assert_eq!(h.take_sync(t), Err(GroupError::InconsistentGroupProtocol));
}
