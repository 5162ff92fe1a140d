//! `chorus produce TOPIC`: one record per line of standard input.
//!
//! Lines are batched per partition (keyed lines go where Kafka's default partitioner puts
//! them; unkeyed batches rotate over the partitions) and sent to each partition's leader.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_storage::batch::{BatchBuilder, NewRecord};
use chorus_storage::codec::Compression;
use chorus_storage::record::encode_headers;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::ProduceRequest;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::client::Cluster;
use super::error::{CliError, Result};
use super::lookup::{self, topic_name, TopicInfo};

/// Produce v13 names topics by id; up to v12 by name, which every broker speaks.
const PRODUCE_MAX_VERSION: i16 = 12;
/// How often a long produce reports progress on standard error.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub key_separator: Option<String>,
    pub headers: Vec<(String, String)>,
    pub acks: i16,
    pub partition: Option<i32>,
    pub compression: Compression,
    /// Lines per request.
    pub batch_records: usize,
    pub timeout_ms: i32,
}

pub async fn run(cluster: &mut Cluster, topic: &str, opts: &ProduceOptions) -> Result<()> {
    let info = lookup::topic(cluster, topic).await?;
    if let Some(p) = opts.partition {
        info.require_partition(p)?;
    }
    let count = info.partitions.len() as i32;
    let headers: Vec<(&str, Option<&[u8]>)> = opts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), Some(v.as_bytes())))
        .collect();
    let headers = if headers.is_empty() {
        Vec::new()
    } else {
        encode_headers(&headers)
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut pending: BTreeMap<i32, Vec<NewRecord<'_>>> = BTreeMap::new();
    let mut pending_count = 0usize;
    let mut unkeyed_partition = 0i32;
    let mut sent = 0u64;
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let line = lines.next_line().await.map_err(CliError::Stdin)?;
        let done = line.is_none();
        if let Some(line) = line {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let (key, value) = match &opts.key_separator {
                Some(sep) => match line.split_once(sep.as_str()) {
                    Some((k, v)) => (Some(k.as_bytes()), v.as_bytes()),
                    None => (None, line.as_bytes()),
                },
                None => (None, line.as_bytes()),
            };
            let partition = match (opts.partition, key) {
                (Some(p), _) => p,
                (None, Some(k)) => chorus_chat::log::partition_for_key(k, count),
                (None, None) => unkeyed_partition,
            };
            let mut record = NewRecord::owned(key, Some(value), now);
            record.headers = Cow::Borrowed(&headers);
            pending.entry(partition).or_default().push(record);
            pending_count += 1;
        }
        if pending_count >= opts.batch_records || (done && pending_count > 0) {
            send(cluster, &info, std::mem::take(&mut pending), opts).await?;
            sent += pending_count as u64;
            pending_count = 0;
            unkeyed_partition = (unkeyed_partition + 1) % count.max(1);
            if last_report.elapsed() >= PROGRESS_EVERY {
                eprintln!("produced {sent} records to {topic}...");
                last_report = Instant::now();
            }
        }
        if done {
            break;
        }
    }
    eprintln!(
        "Produced {sent} records to {topic} in {:.1} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Sends one batch per partition, one request per leader, and checks every answer.
async fn send(
    cluster: &mut Cluster,
    info: &TopicInfo,
    batches: BTreeMap<i32, Vec<NewRecord<'_>>>,
    opts: &ProduceOptions,
) -> Result<()> {
    let mut by_leader: BTreeMap<i32, Vec<PartitionProduceData>> = BTreeMap::new();
    for (partition, records) in batches {
        let mut builder = BatchBuilder::new().compression(opts.compression);
        for r in records {
            builder.push(r);
        }
        let batch = builder.build().map_err(|_| CliError::Protocol {
            api: "Produce",
            version: PRODUCE_MAX_VERSION,
            action: "compressed",
        })?;
        let leader = info
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .map_or(-1, |p| p.leader);
        by_leader.entry(leader).or_default().push(
            PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(batch))),
        );
    }
    for (leader, partitions) in by_leader {
        let request = ProduceRequest::default()
            .with_acks(opts.acks)
            .with_timeout_ms(opts.timeout_ms)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(&info.name))
                .with_partition_data(partitions)]);
        let conn = cluster.node(leader).await?;
        if opts.acks == 0 {
            conn.send_only(&request, PRODUCE_MAX_VERSION).await?;
            continue;
        }
        let (response, _) = conn.call_capped(&request, PRODUCE_MAX_VERSION).await?;
        for t in response.responses {
            for p in t.partition_responses {
                CliError::check(
                    p.error_code,
                    format!("producing to {}-{}", info.name, p.index),
                    p.error_message.as_deref(),
                )?;
            }
        }
    }
    Ok(())
}
