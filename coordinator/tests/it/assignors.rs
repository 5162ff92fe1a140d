//! Properties of the server-side assignors.

use std::collections::{BTreeMap, BTreeSet};

use chorus_coordinator::assignor::*;
use proptest::prelude::*;

fn subscribers(n: usize, topics: &[String], uniform: bool, mask: &[u8]) -> Vec<Subscriber> {
    (0..n)
        .map(|i| Subscriber {
            member_id: format!("m{i:02}"),
            topics: topics
                .iter()
                .enumerate()
                .filter(|(t, _)| uniform || mask.get(i * 7 + t).is_none_or(|b| b % 3 != 0))
                .map(|(_, name)| name.clone())
                .collect(),
        })
        .collect()
}

fn owners(a: &GroupAssignment) -> BTreeMap<(String, i32), Vec<String>> {
    let mut out: BTreeMap<(String, i32), Vec<String>> = BTreeMap::new();
    for (m, topics) in a {
        for (t, ps) in topics {
            for p in ps {
                out.entry((t.clone(), *p)).or_default().push(m.clone());
            }
        }
    }
    out
}

fn load(a: &GroupAssignment, m: &str) -> usize {
    a[m].values().map(Vec::len).sum()
}

/// Every partition of every subscribed topic goes to exactly one of its subscribers.
fn check_complete(members: &[Subscriber], topics: &TopicPartitions, a: &GroupAssignment) {
    let owners = owners(a);
    for m in members {
        assert!(a.contains_key(&m.member_id), "{} missing", m.member_id);
    }
    for (t, &n) in topics {
        let subscribed = members.iter().any(|m| m.topics.contains(t));
        for p in 0..n {
            match owners.get(&(t.clone(), p)) {
                Some(o) => {
                    assert_eq!(o.len(), 1, "{t}-{p} owned by {o:?}");
                    let m = members.iter().find(|m| m.member_id == o[0]).unwrap();
                    assert!(
                        m.topics.contains(t),
                        "{t}-{p} given to non-subscriber {}",
                        o[0]
                    );
                }
                None => assert!(!subscribed, "{t}-{p} unassigned"),
            }
        }
    }
    assert_eq!(
        owners.len(),
        owners
            .keys()
            .filter(|(t, p)| topics.get(t).is_some_and(|n| p < n))
            .count()
    );
}

/// No partition could move to another subscriber of its topic and narrow a gap of two.
fn check_balanced(members: &[Subscriber], a: &GroupAssignment) {
    for (m, ts) in a {
        for t in ts.keys() {
            for other in members
                .iter()
                .filter(|o| o.topics.contains(t) && o.member_id != *m)
            {
                assert!(
                    load(a, m) <= load(a, &other.member_id) + 1,
                    "{m} has {} while {} (also on {t}) has {}",
                    load(a, m),
                    other.member_id,
                    load(a, &other.member_id)
                );
            }
        }
    }
}

fn topic_map(counts: &[i32]) -> TopicPartitions {
    counts
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("t{i}"), *n))
        .collect()
}

fn moved(before: &GroupAssignment, after: &GroupAssignment) -> usize {
    let (b, a) = (owners(before), owners(after));
    a.iter()
        .filter(|(tp, o)| b.get(*tp).is_some_and(|x| x != *o))
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_assignor_assigns_each_partition_once(
        n in 1usize..9,
        counts in prop::collection::vec(0i32..12, 1..5),
        uniform in any::<bool>(),
        mask in prop::collection::vec(any::<u8>(), 70),
    ) {
        let topics = topic_map(&counts);
        let names: Vec<String> = topics.keys().cloned().collect();
        let members = subscribers(n, &names, uniform, &mask);
        for assignor in [by_name("range").unwrap(), by_name("roundrobin").unwrap(), by_name("sticky").unwrap()] {
            let a = assignor.assign(&members, &topics, &GroupAssignment::new());
            check_complete(&members, &topics, &a);
        }
    }

    #[test]
    fn round_robin_and_sticky_balance_uniform_groups_to_within_one(
        n in 1usize..9,
        counts in prop::collection::vec(0i32..12, 1..5),
    ) {
        let topics = topic_map(&counts);
        let names: Vec<String> = topics.keys().cloned().collect();
        let members = subscribers(n, &names, true, &[]);
        for assignor in [by_name("roundrobin").unwrap(), by_name("sticky").unwrap()] {
            let a = assignor.assign(&members, &topics, &GroupAssignment::new());
            let loads: Vec<usize> = members.iter().map(|m| load(&a, &m.member_id)).collect();
            prop_assert!(loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1, "{} {loads:?}", assignor.name());
        }
        // Range balances each topic on its own.
        let a = RangeAssignor.assign(&members, &topics, &GroupAssignment::new());
        for t in &names {
            let per: Vec<usize> = members.iter().map(|m| a[&m.member_id].get(t).map_or(0, Vec::len)).collect();
            prop_assert!(per.iter().max().unwrap() - per.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn sticky_balances_any_subscriptions_as_far_as_they_allow(
        n in 1usize..9,
        counts in prop::collection::vec(0i32..12, 1..5),
        mask in prop::collection::vec(any::<u8>(), 70),
    ) {
        let topics = topic_map(&counts);
        let names: Vec<String> = topics.keys().cloned().collect();
        let members = subscribers(n, &names, false, &mask);
        let a = StickyAssignor.assign(&members, &topics, &GroupAssignment::new());
        check_balanced(&members, &a);
    }

    /// Members come and go in a uniform group: sticky moves only the departed members'
    /// partitions plus each remaining member's surplus over its fair share — the minimum.
    #[test]
    fn sticky_moves_the_minimum_when_members_come_and_go(
        before_n in 1usize..9,
        leave in prop::collection::btree_set(0usize..9, 0..4),
        join in 0usize..4,
        counts in prop::collection::vec(1i32..16, 1..4),
    ) {
        let topics = topic_map(&counts);
        let names: Vec<String> = topics.keys().cloned().collect();
        let before_members = subscribers(before_n, &names, true, &[]);
        let before = StickyAssignor.assign(&before_members, &topics, &GroupAssignment::new());
        // Nothing changes: nothing moves.
        prop_assert_eq!(&StickyAssignor.assign(&before_members, &topics, &before), &before);

        let mut after_members: Vec<Subscriber> = before_members
            .iter()
            .enumerate()
            .filter(|(i, _)| !leave.contains(i))
            .map(|(_, m)| m.clone())
            .collect();
        for j in 0..join {
            after_members.push(Subscriber { member_id: format!("new{j}"), topics: names.iter().cloned().collect() });
        }
        prop_assume!(!after_members.is_empty());
        let after = StickyAssignor.assign(&after_members, &topics, &before);
        check_complete(&after_members, &topics, &after);
        check_balanced(&after_members, &after);

        // Lower bound on moves: orphans must move; members over the ceiling must shed the
        // surplus; and only `total % n` members may stay at the ceiling.
        let total: usize = counts.iter().map(|c| *c as usize).sum();
        let m = after_members.len();
        let (floor, extra) = (total / m, total % m);
        let ceil = floor + usize::from(extra > 0);
        let staying: BTreeSet<&str> = after_members.iter().map(|m| m.member_id.as_str()).collect();
        let kept: Vec<usize> = before
            .keys()
            .filter(|id| staying.contains(id.as_str()))
            .map(|id| load(&before, id))
            .collect();
        let surplus: usize = kept.iter().map(|k| k.saturating_sub(ceil)).sum();
        let at_ceiling = kept.iter().filter(|k| **k >= ceil).count();
        let ceiling_excess = if extra > 0 { at_ceiling.saturating_sub(extra) } else { 0 };
        let lower_bound = surplus + ceiling_excess;
        let departed_moves = moved(&before, &after);
        // `moved` counts partitions whose owner changed, which includes the orphans of the
        // members that left; those are forced, so count them out.
        let orphans: usize = before
            .keys()
            .filter(|id| !staying.contains(id.as_str()))
            .map(|id| load(&before, id))
            .sum();
        prop_assert_eq!(departed_moves - orphans, lower_bound);
    }
}

#[test]
fn range_gives_the_extra_partitions_to_the_first_members() {
    let members = subscribers(3, &["t".to_string()], true, &[]);
    let a = RangeAssignor.assign(&members, &topic_map(&[7]), &GroupAssignment::new());
    assert_eq!(a["m00"].get("t0"), None);
    let topics: TopicPartitions = [("t".to_string(), 7)].into();
    let a = RangeAssignor.assign(&members, &topics, &GroupAssignment::new());
    assert_eq!(a["m00"]["t"], vec![0, 1, 2]);
    assert_eq!(a["m01"]["t"], vec![3, 4]);
    assert_eq!(a["m02"]["t"], vec![5, 6]);
}

#[test]
fn round_robin_deals_in_member_order() {
    let members = subscribers(2, &["a".to_string(), "b".to_string()], true, &[]);
    let topics: TopicPartitions = [("a".to_string(), 3), ("b".to_string(), 2)].into();
    let a = RoundRobinAssignor.assign(&members, &topics, &GroupAssignment::new());
    assert_eq!(a["m00"]["a"], vec![0, 2]);
    assert_eq!(a["m01"]["a"], vec![1]);
    assert_eq!(a["m00"]["b"], vec![1]);
    assert_eq!(a["m01"]["b"], vec![0]);
}
