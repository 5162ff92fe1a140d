//! Round-robin: every partition of every topic in (topic, partition) order, dealt to the
//! members in member-id order, skipping members that do not subscribe to the topic.

use super::{empty_assignment, normalize, Assignor, GroupAssignment, Subscriber, TopicPartitions};

#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobinAssignor;

impl Assignor for RoundRobinAssignor {
    fn name(&self) -> &'static str {
        "roundrobin"
    }

    fn assign(
        &self,
        members: &[Subscriber],
        topics: &TopicPartitions,
        _current: &GroupAssignment,
    ) -> GroupAssignment {
        let mut out = empty_assignment(members);
        let mut sorted: Vec<&Subscriber> = members.iter().collect();
        sorted.sort_unstable_by(|a, b| a.member_id.cmp(&b.member_id));
        if sorted.is_empty() {
            return out;
        }
        let mut cursor = 0usize;
        for (topic, &count) in topics {
            if !sorted.iter().any(|m| m.topics.contains(topic)) {
                continue;
            }
            for partition in 0..count.max(0) {
                while !sorted[cursor % sorted.len()].topics.contains(topic) {
                    cursor += 1;
                }
                let member = &sorted[cursor % sorted.len()].member_id;
                cursor += 1;
                out.get_mut(member)
                    .expect("every member present")
                    .entry(topic.clone())
                    .or_default()
                    .push(partition);
            }
        }
        normalize(out)
    }
}
