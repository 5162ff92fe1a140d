//! The "consumer" embedded protocol: what Kafka consumers put in JoinGroup metadata
//! (ConsumerProtocolSubscription) and SyncGroup assignments (ConsumerProtocolAssignment).
//!
//! The classic protocol relays both opaquely; the coordinator only reads subscriptions to
//! answer "is this group subscribed to topic T" (OffsetDelete) and assignments for the admin
//! views, and writes assignments for server-side assignment.

use std::collections::BTreeMap;

use crate::record::{Reader, RecordError, Writer};

/// The topics a consumer subscribes to (the rest of the subscription is not needed here).
pub fn subscription_topics(metadata: &[u8]) -> Result<Vec<String>, RecordError> {
    let mut r = Reader(metadata);
    let _version = r.i16()?;
    let count = r.len()?;
    let mut topics = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        topics.push(r.str()?);
    }
    Ok(topics)
}

/// Encodes a version 0 subscription (topics, no user data).
pub fn encode_subscription(topics: &[String]) -> Vec<u8> {
    let mut w = Writer::default();
    w.i16(0);
    w.i32(topics.len() as i32);
    for t in topics {
        w.str(t);
    }
    w.i32(-1);
    w.0
}

/// The partitions in an assignment, by topic. An empty assignment (no bytes) is no partitions.
pub fn assignment_partitions(assignment: &[u8]) -> Result<BTreeMap<String, Vec<i32>>, RecordError> {
    if assignment.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut r = Reader(assignment);
    let _version = r.i16()?;
    r.assignment()
}

/// Encodes a version 0 assignment (no user data).
pub fn encode_assignment(partitions: &BTreeMap<String, Vec<i32>>) -> Vec<u8> {
    let mut w = Writer::default();
    w.i16(0);
    w.assignment(partitions);
    w.i32(-1);
    w.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_and_assignments_round_trip() {
        let topics = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            subscription_topics(&encode_subscription(&topics)).unwrap(),
            topics
        );
        let mut asg = BTreeMap::new();
        asg.insert("a".to_string(), vec![0, 2]);
        asg.insert("b".to_string(), vec![1]);
        assert_eq!(
            assignment_partitions(&encode_assignment(&asg)).unwrap(),
            asg
        );
        assert!(assignment_partitions(&[]).unwrap().is_empty());
        assert!(subscription_topics(&[0, 0, 0, 0, 0, 5]).is_err());
    }
}
