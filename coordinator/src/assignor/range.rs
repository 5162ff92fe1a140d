//! Range: per topic, consecutive partition ranges to the topic's subscribers in member-id
//! order; the first `partitions % subscribers` members get one extra.

use super::{empty_assignment, normalize, Assignor, GroupAssignment, Subscriber, TopicPartitions};

#[derive(Debug, Clone, Copy, Default)]
pub struct RangeAssignor;

impl Assignor for RangeAssignor {
    fn name(&self) -> &'static str {
        "range"
    }

    fn assign(
        &self,
        members: &[Subscriber],
        topics: &TopicPartitions,
        _current: &GroupAssignment,
    ) -> GroupAssignment {
        let mut out = empty_assignment(members);
        for (topic, &count) in topics {
            let mut subscribers: Vec<&str> = members
                .iter()
                .filter(|m| m.topics.contains(topic))
                .map(|m| m.member_id.as_str())
                .collect();
            if subscribers.is_empty() || count <= 0 {
                continue;
            }
            subscribers.sort_unstable();
            let n = subscribers.len() as i32;
            let (base, extra) = (count / n, count % n);
            let mut next = 0;
            for (i, member) in subscribers.into_iter().enumerate() {
                let take = base + i32::from((i as i32) < extra);
                let ps: Vec<i32> = (next..next + take).collect();
                next += take;
                if !ps.is_empty() {
                    out.get_mut(member)
                        .expect("every member present")
                        .insert(topic.clone(), ps);
                }
            }
        }
        normalize(out)
    }
}
