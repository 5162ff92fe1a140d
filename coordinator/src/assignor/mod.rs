//! Server-side partition assignors: who consumes which partition. Pure functions of the
//! members' subscriptions, the topics' partition counts and (for sticky) the current
//! assignment. Used by KIP-848 groups and by in-process consumers; classic-protocol clients
//! run their own assignors and the coordinator relays the result untouched.
//!
//! Implement [`Assignor`] to add one; [`by_name`] resolves the built-in ones.

mod range;
mod round_robin;
mod sticky;

use std::collections::{BTreeMap, BTreeSet};

pub use range::RangeAssignor;
pub use round_robin::RoundRobinAssignor;
pub use sticky::StickyAssignor;

/// Partition count per topic.
pub type TopicPartitions = BTreeMap<String, i32>;
/// Partitions per topic, for one member.
pub type MemberAssignment = BTreeMap<String, Vec<i32>>;
/// Every member's assignment, by member id.
pub type GroupAssignment = BTreeMap<String, MemberAssignment>;

/// A member and the topics it subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub member_id: String,
    pub topics: BTreeSet<String>,
}

/// Computes a group's assignment. The result has an entry (possibly empty) for every member,
/// assigns every partition of every subscribed topic to exactly one subscriber of that topic,
/// and lists each member's partitions in ascending order.
pub trait Assignor: std::fmt::Debug + Send + Sync {
    /// The name clients ask for (`range`, `roundrobin`/`uniform`, `sticky`).
    fn name(&self) -> &'static str;

    fn assign(
        &self,
        members: &[Subscriber],
        topics: &TopicPartitions,
        current: &GroupAssignment,
    ) -> GroupAssignment;
}

/// The built-in assignor called `name`. KIP-848 clients call the sticky one `uniform`.
pub fn by_name(name: &str) -> Option<Box<dyn Assignor>> {
    match name {
        "range" => Some(Box::new(RangeAssignor)),
        "roundrobin" | "round-robin" => Some(Box::new(RoundRobinAssignor)),
        "sticky" | "uniform" | "cooperative-sticky" => Some(Box::new(StickyAssignor)),
        _ => None,
    }
}

/// An assignment with every member present and nothing assigned.
fn empty_assignment(members: &[Subscriber]) -> GroupAssignment {
    members
        .iter()
        .map(|m| (m.member_id.clone(), MemberAssignment::new()))
        .collect()
}

/// Sorts each member's partition lists and drops topics with none.
fn normalize(mut assignment: GroupAssignment) -> GroupAssignment {
    for topics in assignment.values_mut() {
        topics.retain(|_, ps| !ps.is_empty());
        for ps in topics.values_mut() {
            ps.sort_unstable();
        }
    }
    assignment
}
