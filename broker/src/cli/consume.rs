//! `chorus consume TOPIC`: print records from the start, the end or an offset, alone or as
//! a member of a consumer group (committing what it printed), until a count, the end of the
//! log, or Ctrl-C.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use chorus_storage::batch::{self, BatchIter, TimestampType};
use chorus_storage::record::decode_headers;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest};
use serde_json::json;

use super::client::Cluster;
use super::error::{CliError, Result};
use super::lookup::{self, topic_name, EARLIEST, LATEST};
use super::member::{Beat, Member};
use super::output::{print, Format};

/// Fetch v13 names topics by id; up to v12 by name.
const FETCH_MAX_VERSION: i16 = 12;
const FETCH_WAIT_MS: i32 = 500;
const PARTITION_MAX_BYTES: i32 = 1 << 20;
const MAX_DECODED_BATCH: usize = 64 << 20;
/// Kafka error codes the loop recovers from.
const OFFSET_OUT_OF_RANGE: i16 = 1;

#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    pub group: Option<String>,
    pub from_beginning: bool,
    pub offset: Option<i64>,
    pub partition: Option<i32>,
    pub max_messages: Option<u64>,
    pub exit_at_end: bool,
    /// kcat-style: %t topic, %p partition, %o offset, %k key, %v value, %T timestamp,
    /// %h headers, %% a percent sign; `\n` and `\t` escapes.
    pub format: String,
    pub output: Format,
}

/// One record as printed.
struct Printed<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<(String, Option<String>)>,
}

fn render(fmt: &str, r: &Printed<'_>, output: Format) -> String {
    let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
    if output == Format::Json {
        let mut line = json!({
            "topic": r.topic,
            "partition": r.partition,
            "offset": r.offset,
            "timestamp": r.timestamp,
            "key": text(r.key),
            "value": text(r.value),
            "headers": r.headers.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
        })
        .to_string();
        line.push('\n');
        return line;
    }
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => match chars.next() {
                Some('t') => out.push_str(r.topic),
                Some('p') => {
                    let _ = write!(out, "{}", r.partition);
                }
                Some('o') => {
                    let _ = write!(out, "{}", r.offset);
                }
                Some('T') => {
                    let _ = write!(out, "{}", r.timestamp);
                }
                Some('k') => out.push_str(&text(r.key).unwrap_or_default()),
                Some('v') => out.push_str(&text(r.value).unwrap_or_default()),
                Some('h') => {
                    let joined: Vec<String> = r
                        .headers
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("")))
                        .collect();
                    out.push_str(&joined.join(","));
                }
                Some('%') => out.push('%'),
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            },
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

pub async fn run(cluster: &mut Cluster, topic: &str, opts: &ConsumeOptions) -> Result<()> {
    let info = lookup::topic(cluster, topic).await?;
    if let Some(p) = opts.partition {
        info.require_partition(p)?;
    }
    let mut member = match &opts.group {
        Some(g) => Some(Member::join(cluster, g, &[topic.to_string()]).await?),
        None => None,
    };
    let mut positions: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut printed = 0u64;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let result = loop {
        // Which partitions to read, and from where.
        let owned: Vec<(String, i32)> = match &member {
            Some(m) => m.assignment.iter().cloned().collect(),
            None => info
                .partitions
                .iter()
                .filter(|p| opts.partition.is_none_or(|x| x == p.partition))
                .map(|p| (topic.to_string(), p.partition))
                .collect(),
        };
        positions.retain(|k, _| owned.contains(k));
        if let Err(e) = position_new(cluster, &owned, &mut positions, member.as_ref(), opts).await {
            break Err(e);
        }
        let fetched = tokio::select! {
            f = fetch(cluster, &info, &positions) => f,
            _ = &mut stop => break Ok(()),
        };
        let (records, at_end) = match fetched {
            Ok(f) => f,
            Err(e) => break Err(e),
        };
        let mut out = String::new();
        let mut reached_max = false;
        for (key, rs) in records {
            for r in rs {
                if opts.max_messages.is_some_and(|m| printed >= m) {
                    reached_max = true;
                    break;
                }
                out.push_str(&render(
                    &opts.format,
                    &r.printed(&key.0, key.1),
                    opts.output,
                ));
                positions.insert(key.clone(), r.offset + 1);
                printed += 1;
            }
        }
        if let Err(e) = print(&out) {
            break Err(e);
        }
        if let Some(m) = member.as_mut() {
            if !out.is_empty() {
                if let Err(e) = m.commit(cluster, &positions).await {
                    break Err(e);
                }
            }
            match m.heartbeat(cluster).await {
                Ok(Beat::Fine) => {}
                Ok(Beat::Rejoin) => {
                    if let Err(e) = m.rejoin(cluster).await {
                        break Err(e);
                    }
                    positions.clear();
                }
                Err(e) => break Err(e),
            }
        }
        if reached_max || opts.max_messages.is_some_and(|m| printed >= m) {
            break Ok(());
        }
        if opts.exit_at_end && at_end && !owned.is_empty() {
            break Ok(());
        }
    };
    if let Some(m) = member {
        // Commit what was printed and leave, even after an error in the loop.
        let committed = m_commit_and_leave(cluster, m, &positions).await;
        result?;
        committed?;
    } else {
        result?;
    }
    eprintln!("Consumed {printed} records from {topic}.");
    Ok(())
}

async fn m_commit_and_leave(
    cluster: &mut Cluster,
    mut m: Member,
    positions: &BTreeMap<(String, i32), i64>,
) -> Result<()> {
    m.commit(cluster, positions).await?;
    m.leave(cluster).await
}

/// Starting offsets for partitions without a position: `--offset`, the group's commit,
/// `--from-beginning`, or the end.
async fn position_new(
    cluster: &mut Cluster,
    owned: &[(String, i32)],
    positions: &mut BTreeMap<(String, i32), i64>,
    member: Option<&Member>,
    opts: &ConsumeOptions,
) -> Result<()> {
    let fresh: Vec<(String, i32)> = owned
        .iter()
        .filter(|k| !positions.contains_key(*k))
        .cloned()
        .collect();
    if fresh.is_empty() {
        return Ok(());
    }
    let committed = match member {
        Some(m) => super::groups::committed(cluster, &m.group).await?,
        None => BTreeMap::new(),
    };
    let fallback = if opts.from_beginning {
        EARLIEST
    } else {
        LATEST
    };
    let defaults = lookup::offsets_at(cluster, &fresh, fallback).await?;
    let (lo, hi) = match opts.offset {
        Some(_) => (
            lookup::offsets_at(cluster, &fresh, EARLIEST).await?,
            lookup::offsets_at(cluster, &fresh, LATEST).await?,
        ),
        None => (BTreeMap::new(), BTreeMap::new()),
    };
    for key in fresh {
        let start = match (committed.get(&key), opts.offset) {
            (Some(c), _) => *c,
            (None, Some(o)) => o.clamp(lo[&key], hi[&key]),
            (None, None) => defaults[&key],
        };
        positions.insert(key, start);
    }
    Ok(())
}

/// A decoded record, owned.
struct Fetched {
    offset: i64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<String>)>,
}

impl Fetched {
    fn printed<'a>(&'a self, topic: &'a str, partition: i32) -> Printed<'a> {
        Printed {
            topic,
            partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: self.headers.clone(),
        }
    }
}

type Records = BTreeMap<(String, i32), Vec<Fetched>>;

/// One fetch round over every positioned partition (one request per leader). Also says
/// whether every partition is at its high watermark.
async fn fetch(
    cluster: &mut Cluster,
    info: &lookup::TopicInfo,
    positions: &BTreeMap<(String, i32), i64>,
) -> Result<(Records, bool)> {
    let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
    for ((_, p), offset) in positions {
        let leader = info
            .partitions
            .iter()
            .find(|x| x.partition == *p)
            .map_or(-1, |x| x.leader);
        by_leader.entry(leader).or_default().push((*p, *offset));
    }
    let mut records = Records::new();
    let mut at_end = true;
    if by_leader.is_empty() {
        // Nothing assigned (yet): wait a little rather than spin.
        tokio::time::sleep(Duration::from_millis(FETCH_WAIT_MS as u64)).await;
        return Ok((records, false));
    }
    for (leader, partitions) in by_leader {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(FETCH_WAIT_MS)
            .with_min_bytes(1)
            .with_max_bytes(16 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(&info.name))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|(p, offset)| {
                            FetchPartition::default()
                                .with_partition(*p)
                                .with_fetch_offset(*offset)
                                .with_partition_max_bytes(PARTITION_MAX_BYTES)
                        })
                        .collect(),
                )]);
        let (response, _) = cluster
            .node(leader)
            .await?
            .call_capped(&request, FETCH_MAX_VERSION)
            .await?;
        CliError::check(
            response.error_code,
            format!("fetching from {}", info.name),
            None,
        )?;
        for t in response.responses {
            for p in t.partitions {
                let key = (info.name.clone(), p.partition_index);
                let position = positions.get(&key).copied().unwrap_or(0);
                if p.error_code == OFFSET_OUT_OF_RANGE {
                    return Err(CliError::Kafka {
                        what: format!(
                            "offset {position} of {}-{} is outside the log",
                            info.name, p.partition_index
                        ),
                        code: p.error_code,
                        message: None,
                    });
                }
                CliError::check(
                    p.error_code,
                    format!("fetching {}-{}", info.name, p.partition_index),
                    None,
                )?;
                let decoded = decode(p.records.as_deref().unwrap_or_default(), position)?;
                let next = decoded.last().map_or(position, |r| r.offset + 1);
                if next < p.high_watermark {
                    at_end = false;
                }
                records.insert(key, decoded);
            }
        }
    }
    Ok((records, at_end))
}

/// The records of whole batches in `bytes` at or after `from`.
fn decode(bytes: &[u8], from: i64) -> Result<Vec<Fetched>> {
    let mut out = Vec::new();
    for (_, header, batch_bytes) in BatchIter::new(bytes) {
        if header.is_control() || header.next_offset() <= from {
            continue;
        }
        let append_time = header.timestamp_type() == TimestampType::LogAppendTime;
        batch::for_each_record(batch_bytes, MAX_DECODED_BATCH, |r| {
            let offset = header.base_offset + i64::from(r.offset_delta);
            if offset < from {
                return;
            }
            let headers = decode_headers(r.headers_raw)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(k).into_owned(),
                        v.map(|v| String::from_utf8_lossy(v).into_owned()),
                    )
                })
                .collect();
            out.push(Fetched {
                offset,
                timestamp: if append_time {
                    header.max_timestamp
                } else {
                    header.base_timestamp + r.timestamp_delta
                },
                key: r.key.map(<[u8]>::to_vec),
                value: r.value.map(<[u8]>::to_vec),
                headers,
            });
        })
        .map_err(|_| CliError::Protocol {
            api: "Fetch",
            version: FETCH_MAX_VERSION,
            action: "decoded (a record batch is damaged)",
        })?;
    }
    Ok(out)
}
