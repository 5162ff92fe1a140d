//! The records the coordinator asks the broker to persist in `__consumer_offsets`, encoded with
//! the key and value layouts Kafka uses in that topic, so the topic reads the same way:
//!
//! * offset commit: key v1 `(group, topic, partition)`, value v3
//!   `(offset, leader_epoch, metadata, commit_timestamp)`;
//! * group metadata: key v2 `(group)`, value v3 `(protocol_type, generation, protocol, leader,
//!   current_state_timestamp, members[])`.
//!
//! KIP-848 groups have no layout of Kafka's that fits this coordinator's state, so they use
//! two record kinds of our own under key versions Kafka does not use (1000: the group's
//! epochs, assignor and subscribed topics; 1001: one member, its subscription, epochs and
//! assignments). Kafka's loader skips key versions it does not know.
//!
//! A `None` value is a tombstone; compaction then forgets the key. Replaying the latest record
//! per key rebuilds the coordinator (see [`crate::Coordinator::replay`]).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::assignor::MemberAssignment;
use crate::Millis;

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;
const CONSUMER_GROUP_KEY_VERSION: i16 = 1000;
const CONSUMER_MEMBER_KEY_VERSION: i16 = 1001;
const CONSUMER_VALUE_VERSION: i16 = 0;

/// A committed offset as stored and fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: Millis,
}

/// What a group's metadata record holds: the generation and members as of the last completed
/// rebalance (or the moment the group became empty).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupMetadata {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: Millis,
    pub members: Vec<MemberMetadata>,
}

/// One member in a [`GroupMetadata`] record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetadata {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A KIP-848 group as persisted: everything but its members.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerGroupRecord {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    /// Partition counts of the subscribed topics the target assignment was computed from.
    pub subscribed: BTreeMap<String, i32>,
}

/// A KIP-848 member as persisted. Timers are not: a loaded member gets a fresh session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerMemberRecord {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub topic_names: Vec<String>,
    pub topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub member_epoch: i32,
    pub previous_epoch: i32,
    pub assigned: MemberAssignment,
    pub revoking: MemberAssignment,
    /// The member's share of the group's target assignment.
    pub target: MemberAssignment,
}

/// One record for `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<CommittedOffset>,
    },
    Group {
        group: String,
        value: Option<GroupMetadata>,
    },
    ConsumerGroup {
        group: String,
        value: Option<ConsumerGroupRecord>,
    },
    ConsumerMember {
        group: String,
        member_id: String,
        value: Option<ConsumerMemberRecord>,
    },
}

/// Why a stored record could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record has no key")]
    MissingKey,
    #[error("record is truncated")]
    Truncated,
    #[error("unknown {what} version {version}")]
    UnknownVersion { what: &'static str, version: i16 },
    #[error("string is not UTF-8")]
    NotUtf8,
    #[error("negative length {0}")]
    NegativeLength(i32),
}

impl Record {
    /// The group the record belongs to; it picks the offsets partition.
    pub fn group(&self) -> &str {
        match self {
            Record::Offset { group, .. }
            | Record::Group { group, .. }
            | Record::ConsumerGroup { group, .. }
            | Record::ConsumerMember { group, .. } => group,
        }
    }

    pub fn encode_key(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Record::Offset {
                group,
                topic,
                partition,
                ..
            } => {
                w.i16(OFFSET_KEY_VERSION);
                w.str(group);
                w.str(topic);
                w.i32(*partition);
            }
            Record::Group { group, .. } => {
                w.i16(GROUP_KEY_VERSION);
                w.str(group);
            }
            Record::ConsumerGroup { group, .. } => {
                w.i16(CONSUMER_GROUP_KEY_VERSION);
                w.str(group);
            }
            Record::ConsumerMember {
                group, member_id, ..
            } => {
                w.i16(CONSUMER_MEMBER_KEY_VERSION);
                w.str(group);
                w.str(member_id);
            }
        }
        w.0
    }

    /// The value, or `None` for a tombstone.
    pub fn encode_value(&self) -> Option<Vec<u8>> {
        let mut w = Writer::default();
        match self {
            Record::Offset { value, .. } => {
                let v = value.as_ref()?;
                w.i16(OFFSET_VALUE_VERSION);
                w.i64(v.offset);
                w.i32(v.leader_epoch);
                w.str(&v.metadata);
                w.i64(v.commit_timestamp);
            }
            Record::Group { value, .. } => {
                let g = value.as_ref()?;
                w.i16(GROUP_VALUE_VERSION);
                w.str(&g.protocol_type);
                w.i32(g.generation);
                w.opt_str(g.protocol.as_deref());
                w.opt_str(g.leader.as_deref());
                w.i64(g.state_timestamp);
                w.i32(g.members.len() as i32);
                for m in &g.members {
                    w.str(&m.member_id);
                    w.opt_str(m.instance_id.as_deref());
                    w.str(&m.client_id);
                    w.str(&m.client_host);
                    w.i32(m.rebalance_timeout_ms);
                    w.i32(m.session_timeout_ms);
                    w.bytes(&m.subscription);
                    w.bytes(&m.assignment);
                }
            }
            Record::ConsumerGroup { value, .. } => {
                let g = value.as_ref()?;
                w.i16(CONSUMER_VALUE_VERSION);
                w.i32(g.group_epoch);
                w.i32(g.assignment_epoch);
                w.str(&g.assignor);
                w.i32(g.subscribed.len() as i32);
                for (topic, partitions) in &g.subscribed {
                    w.str(topic);
                    w.i32(*partitions);
                }
            }
            Record::ConsumerMember { value, .. } => {
                let m = value.as_ref()?;
                w.i16(CONSUMER_VALUE_VERSION);
                w.opt_str(m.instance_id.as_deref());
                w.opt_str(m.rack_id.as_deref());
                w.str(&m.client_id);
                w.str(&m.client_host);
                w.i32(m.rebalance_timeout_ms);
                w.i32(m.topic_names.len() as i32);
                for t in &m.topic_names {
                    w.str(t);
                }
                w.opt_str(m.topic_regex.as_deref());
                w.opt_str(m.server_assignor.as_deref());
                w.i32(m.member_epoch);
                w.i32(m.previous_epoch);
                for a in [&m.assigned, &m.revoking, &m.target] {
                    w.assignment(a);
                }
            }
        }
        Some(w.0)
    }

    /// Reads a record back from its key and value (`None` value: tombstone).
    pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Record, RecordError> {
        let mut k = Reader(key.ok_or(RecordError::MissingKey)?);
        match k.i16()? {
            0 | 1 => {
                let group = k.str()?;
                let topic = k.str()?;
                let partition = k.i32()?;
                let value = value.map(decode_offset_value).transpose()?;
                Ok(Record::Offset {
                    group,
                    topic,
                    partition,
                    value,
                })
            }
            2 => {
                let group = k.str()?;
                let value = value.map(decode_group_value).transpose()?;
                Ok(Record::Group { group, value })
            }
            CONSUMER_GROUP_KEY_VERSION => {
                let group = k.str()?;
                let value = value.map(decode_consumer_group_value).transpose()?;
                Ok(Record::ConsumerGroup { group, value })
            }
            CONSUMER_MEMBER_KEY_VERSION => {
                let group = k.str()?;
                let member_id = k.str()?;
                let value = value.map(decode_consumer_member_value).transpose()?;
                Ok(Record::ConsumerMember {
                    group,
                    member_id,
                    value,
                })
            }
            version => Err(RecordError::UnknownVersion {
                what: "key",
                version,
            }),
        }
    }
}

fn decode_offset_value(buf: &[u8]) -> Result<CommittedOffset, RecordError> {
    let mut r = Reader(buf);
    let version = r.i16()?;
    // v0/v2 carry no leader epoch; v1 carries an expire timestamp after the commit timestamp.
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.str()?;
    let commit_timestamp = r.i64()?;
    if version > 4 {
        return Err(RecordError::UnknownVersion {
            what: "offset value",
            version,
        });
    }
    Ok(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
    })
}

fn decode_group_value(buf: &[u8]) -> Result<GroupMetadata, RecordError> {
    let mut r = Reader(buf);
    let version = r.i16()?;
    if !(0..=4).contains(&version) {
        return Err(RecordError::UnknownVersion {
            what: "group value",
            version,
        });
    }
    let protocol_type = r.str()?;
    let generation = r.i32()?;
    let protocol = r.opt_str()?;
    let leader = r.opt_str()?;
    let state_timestamp = if version >= 2 { r.i64()? } else { -1 };
    let count = r.len()?;
    let mut members = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let member_id = r.str()?;
        let instance_id = if version >= 3 { r.opt_str()? } else { None };
        let client_id = r.str()?;
        let client_host = r.str()?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { 0 };
        let session_timeout_ms = r.i32()?;
        let subscription = Bytes::copy_from_slice(r.bytes()?);
        let assignment = Bytes::copy_from_slice(r.bytes()?);
        members.push(MemberMetadata {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: if version >= 1 {
                rebalance_timeout_ms
            } else {
                session_timeout_ms
            },
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Ok(GroupMetadata {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp,
        members,
    })
}

fn consumer_value_version(r: &mut Reader<'_>, what: &'static str) -> Result<(), RecordError> {
    match r.i16()? {
        CONSUMER_VALUE_VERSION => Ok(()),
        version => Err(RecordError::UnknownVersion { what, version }),
    }
}

fn decode_consumer_group_value(buf: &[u8]) -> Result<ConsumerGroupRecord, RecordError> {
    let mut r = Reader(buf);
    consumer_value_version(&mut r, "consumer group value")?;
    let group_epoch = r.i32()?;
    let assignment_epoch = r.i32()?;
    let assignor = r.str()?;
    let mut subscribed = BTreeMap::new();
    for _ in 0..r.len()? {
        let topic = r.str()?;
        subscribed.insert(topic, r.i32()?);
    }
    Ok(ConsumerGroupRecord {
        group_epoch,
        assignment_epoch,
        assignor,
        subscribed,
    })
}

fn decode_consumer_member_value(buf: &[u8]) -> Result<ConsumerMemberRecord, RecordError> {
    let mut r = Reader(buf);
    consumer_value_version(&mut r, "consumer member value")?;
    let instance_id = r.opt_str()?;
    let rack_id = r.opt_str()?;
    let client_id = r.str()?;
    let client_host = r.str()?;
    let rebalance_timeout_ms = r.i32()?;
    let count = r.len()?;
    let mut topic_names = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        topic_names.push(r.str()?);
    }
    Ok(ConsumerMemberRecord {
        instance_id,
        rack_id,
        client_id,
        client_host,
        rebalance_timeout_ms,
        topic_names,
        topic_regex: r.opt_str()?,
        server_assignor: r.opt_str()?,
        member_epoch: r.i32()?,
        previous_epoch: r.i32()?,
        assigned: r.assignment()?,
        revoking: r.assignment()?,
        target: r.assignment()?,
    })
}

/// Big-endian writer for Kafka's classic (non-flexible) encodings.
#[derive(Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn i16(&mut self, v: i16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn str(&mut self, s: &str) {
        self.i16(s.len() as i16);
        self.0.extend_from_slice(s.as_bytes());
    }
    pub(crate) fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.i16(-1),
        }
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.i32(b.len() as i32);
        self.0.extend_from_slice(b);
    }
    /// Topics, each with its partitions.
    pub(crate) fn assignment(&mut self, a: &MemberAssignment) {
        self.i32(a.len() as i32);
        for (topic, partitions) in a {
            self.str(topic);
            self.i32(partitions.len() as i32);
            for p in partitions {
                self.i32(*p);
            }
        }
    }
}

/// Big-endian reader; every read is bounds-checked.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    pub(crate) fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    pub(crate) fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(crate) fn opt_str(&mut self) -> Result<Option<String>, RecordError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let raw = self.take(len as usize)?;
        String::from_utf8(raw.to_vec())
            .map(Some)
            .map_err(|_| RecordError::NotUtf8)
    }
    pub(crate) fn str(&mut self) -> Result<String, RecordError> {
        Ok(self.opt_str()?.unwrap_or_default())
    }
    /// An array or bytes length; -1 (null) reads as 0.
    pub(crate) fn len(&mut self) -> Result<usize, RecordError> {
        let n = self.i32()?;
        match n {
            -1 => Ok(0),
            n if n < 0 => Err(RecordError::NegativeLength(n)),
            n => Ok(n as usize),
        }
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], RecordError> {
        let n = self.len()?;
        self.take(n)
    }
    pub(crate) fn assignment(&mut self) -> Result<MemberAssignment, RecordError> {
        let mut out = MemberAssignment::new();
        for _ in 0..self.len()? {
            let topic = self.str()?;
            let count = self.len()?;
            // Each partition takes four bytes, so a hostile count fails on the first read.
            let mut partitions = Vec::with_capacity(count.min(self.0.len() / 4));
            for _ in 0..count {
                partitions.push(self.i32()?);
            }
            out.insert(topic, partitions);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_records_round_trip_and_tombstones_have_no_value() {
        let record = Record::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
            value: Some(CommittedOffset {
                offset: 42,
                leader_epoch: 0,
                metadata: "meta".into(),
                commit_timestamp: 1000,
            }),
        };
        let key = record.encode_key();
        let value = record.encode_value().unwrap();
        assert_eq!(Record::decode(Some(&key), Some(&value)).unwrap(), record);
        let tombstone = Record::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
            value: None,
        };
        assert_eq!(tombstone.encode_value(), None);
        assert_eq!(tombstone.encode_key(), key);
        assert_eq!(Record::decode(Some(&key), None).unwrap(), tombstone);
    }

    #[test]
    fn group_records_round_trip() {
        let record = Record::Group {
            group: "g".into(),
            value: Some(GroupMetadata {
                protocol_type: "consumer".into(),
                generation: 7,
                protocol: Some("range".into()),
                leader: Some("m1".into()),
                state_timestamp: 99,
                members: vec![MemberMetadata {
                    member_id: "m1".into(),
                    instance_id: Some("i1".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 45_000,
                    subscription: Bytes::from_static(b"sub"),
                    assignment: Bytes::from_static(b"asg"),
                }],
            }),
        };
        let decoded =
            Record::decode(Some(&record.encode_key()), record.encode_value().as_deref()).unwrap();
        assert_eq!(decoded, record);
    }

    #[test]
    fn consumer_group_and_member_records_round_trip() {
        let group = Record::ConsumerGroup {
            group: "g".into(),
            value: Some(ConsumerGroupRecord {
                group_epoch: 4,
                assignment_epoch: 3,
                assignor: "uniform".into(),
                subscribed: BTreeMap::from([("a".into(), 3), ("b".into(), 1)]),
            }),
        };
        let member = Record::ConsumerMember {
            group: "g".into(),
            member_id: "m1".into(),
            value: Some(ConsumerMemberRecord {
                instance_id: Some("i".into()),
                rack_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 30_000,
                topic_names: vec!["a".into()],
                topic_regex: Some("b.*".into()),
                server_assignor: None,
                member_epoch: 3,
                previous_epoch: 2,
                assigned: BTreeMap::from([("a".into(), vec![0, 2])]),
                revoking: BTreeMap::from([("b".into(), vec![0])]),
                target: BTreeMap::from([("a".into(), vec![0, 1, 2])]),
            }),
        };
        for record in [group, member] {
            let key = record.encode_key();
            let value = record.encode_value().unwrap();
            assert_eq!(Record::decode(Some(&key), Some(&value)).unwrap(), record);
            for cut in 0..value.len() {
                assert!(Record::decode(Some(&key), Some(&value[..cut])).is_err());
            }
            assert!(matches!(
                Record::decode(Some(&key), None).unwrap(),
                Record::ConsumerGroup { value: None, .. }
                    | Record::ConsumerMember { value: None, .. }
            ));
        }
    }

    #[test]
    fn truncated_and_unknown_records_are_errors_not_panics() {
        let record = Record::Group {
            group: "g".into(),
            value: Some(GroupMetadata::default()),
        };
        let key = record.encode_key();
        let value = record.encode_value().unwrap();
        for cut in 0..value.len() {
            assert!(Record::decode(Some(&key), Some(&value[..cut])).is_err());
        }
        for cut in 0..key.len() {
            assert!(Record::decode(Some(&key[..cut]), None).is_err());
        }
        assert_eq!(
            Record::decode(Some(&[0, 9, 0, 0]), None),
            Err(RecordError::UnknownVersion {
                what: "key",
                version: 9
            })
        );
        assert_eq!(Record::decode(None, None), Err(RecordError::MissingKey));
    }
}
