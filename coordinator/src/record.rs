//! The records the coordinator asks the broker to persist in `__consumer_offsets`, encoded with
//! the key and value layouts Kafka uses in that topic, so the topic reads the same way:
//!
//! * offset commit: key v1 `(group, topic, partition)`, value v3
//!   `(offset, leader_epoch, metadata, commit_timestamp)`;
//! * group metadata: key v2 `(group)`, value v3 `(protocol_type, generation, protocol, leader,
//!   current_state_timestamp, members[])`.
//!
//! A `None` value is a tombstone; compaction then forgets the key. Replaying the latest record
//! per key rebuilds the coordinator (see [`crate::Coordinator::replay`]).

use bytes::Bytes;

use crate::Millis;

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

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
            Record::Offset { group, .. } | Record::Group { group, .. } => group,
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
