//! Sticky: balanced, and moving as few partitions as possible from the current assignment.
//!
//! 1. Each member keeps the partitions it owns that are still valid (the topic exists and
//!    still has the partition, the member still subscribes, no one else claimed it first).
//! 2. Every other partition goes to the least-loaded subscriber of its topic.
//! 3. While some partition's owner has at least two more partitions than another subscriber
//!    of that topic, it moves from the most-loaded owner to the least-loaded subscriber.
//!
//! Step 3 only ever takes from members above their fair share, so with equal subscriptions
//! the number of moved partitions is the minimum: the orphans plus each member's surplus.

use std::collections::{BTreeMap, BTreeSet};

use super::{empty_assignment, normalize, Assignor, GroupAssignment, Subscriber, TopicPartitions};

#[derive(Debug, Clone, Copy, Default)]
pub struct StickyAssignor;

impl Assignor for StickyAssignor {
    fn name(&self) -> &'static str {
        "sticky"
    }

    fn assign(
        &self,
        members: &[Subscriber],
        topics: &TopicPartitions,
        current: &GroupAssignment,
    ) -> GroupAssignment {
        let subscriptions: BTreeMap<&str, &BTreeSet<String>> = members
            .iter()
            .map(|m| (m.member_id.as_str(), &m.topics))
            .collect();
        // owned[member] = its partitions; owner[(topic, p)] = member.
        let mut owned: BTreeMap<&str, BTreeSet<(&str, i32)>> = subscriptions
            .keys()
            .map(|m| (*m, BTreeSet::new()))
            .collect();
        let mut owner: BTreeMap<(&str, i32), &str> = BTreeMap::new();
        for (member, topics_owned) in current {
            let Some((member, subscribed)) = subscriptions.get_key_value(member.as_str()) else {
                continue;
            };
            for (topic, ps) in topics_owned {
                let Some((topic, &count)) = topics.get_key_value(topic) else {
                    continue;
                };
                if !subscribed.contains(topic) {
                    continue;
                }
                for &p in ps {
                    if (0..count).contains(&p) && !owner.contains_key(&(topic.as_str(), p)) {
                        owner.insert((topic.as_str(), p), member);
                        owned
                            .get_mut(member)
                            .expect("member")
                            .insert((topic.as_str(), p));
                    }
                }
            }
        }

        // Step 2: orphans to the least-loaded subscriber.
        for (topic, &count) in topics {
            let subscribers: Vec<&str> = subscriptions
                .iter()
                .filter(|(_, t)| t.contains(topic))
                .map(|(m, _)| *m)
                .collect();
            if subscribers.is_empty() {
                continue;
            }
            for p in 0..count.max(0) {
                if owner.contains_key(&(topic.as_str(), p)) {
                    continue;
                }
                let least = *subscribers
                    .iter()
                    .min_by_key(|m| (owned[**m].len(), **m))
                    .expect("non-empty");
                owner.insert((topic.as_str(), p), least);
                owned
                    .get_mut(least)
                    .expect("member")
                    .insert((topic.as_str(), p));
            }
        }

        // Step 3: move from the most loaded to the least loaded while it narrows the gap.
        loop {
            let mut best: Option<(usize, &str, &str, (&str, i32))> = None;
            for (&from, parts) in &owned {
                // The candidate receiver depends only on the topic: look once per topic.
                let mut last_of_topic: BTreeMap<&str, i32> = BTreeMap::new();
                for &(topic, p) in parts {
                    last_of_topic.insert(topic, p);
                }
                for (topic, p) in last_of_topic {
                    let Some(to) = subscriptions
                        .iter()
                        .filter(|(m, t)| **m != from && t.contains(topic))
                        .map(|(m, _)| *m)
                        .min_by_key(|m| (owned[*m].len(), *m))
                    else {
                        continue;
                    };
                    let gap = parts.len().saturating_sub(owned[to].len());
                    if gap >= 2 && best.is_none_or(|(g, ..)| gap > g) {
                        best = Some((gap, from, to, (topic, p)));
                    }
                }
            }
            let Some((_, from, to, tp)) = best else { break };
            owned.get_mut(from).expect("member").remove(&tp);
            owned.get_mut(to).expect("member").insert(tp);
        }

        let mut out = empty_assignment(members);
        for (member, parts) in owned {
            let entry = out.get_mut(member).expect("member");
            for (topic, p) in parts {
                entry.entry(topic.to_string()).or_default().push(p);
            }
        }
        normalize(out)
    }
}
