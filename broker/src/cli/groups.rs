//! `chorus groups list|describe|delete|delete-offsets|reset-offsets`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chorus_coordinator::consumer_protocol::assignment_partitions;
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest, OffsetDeleteRequest, OffsetFetchRequest,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;
use uuid::Uuid;

use super::client::Cluster;
use super::error::{CliError, Result};
use super::lookup::{self, topic_name, EARLIEST, LATEST};
use super::output::{or_dash, print, print_json, Format, Table};

/// Kafka's GROUP_ID_NOT_FOUND.
const GROUP_ID_NOT_FOUND: i16 = 69;
/// Offsets committed per OffsetCommit request during a reset (progress is shown between).
const COMMIT_CHUNK: usize = 500;

fn gid(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_string()))
}

#[derive(Debug, Clone)]
pub struct MemberView {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    pub assignment: Vec<(String, i32)>,
}

/// A group as the commands show it, whichever protocol it speaks.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub group: String,
    pub state: String,
    /// `classic` or `consumer` (KIP-848).
    pub group_type: &'static str,
    pub protocol_type: String,
    /// The assignor: the classic protocol chosen, or the KIP-848 server assignor.
    pub assignor: String,
    pub coordinator: String,
    pub members: Vec<MemberView>,
}

impl GroupView {
    fn missing(&self) -> bool {
        self.state == "Dead"
    }
}

/// Describes `group` at its coordinator: KIP-848 groups through ConsumerGroupDescribe,
/// classic groups through DescribeGroups.
pub async fn describe_group(cluster: &mut Cluster, group: &str) -> Result<GroupView> {
    let conn = cluster.coordinator(group).await?;
    let coordinator = conn.addr.clone();
    if conn
        .version::<ConsumerGroupDescribeRequest>(i16::MAX)
        .is_ok()
    {
        let request = ConsumerGroupDescribeRequest::default().with_group_ids(vec![gid(group)]);
        let response = conn.call(&request).await?;
        if let Some(g) = response.groups.into_iter().next() {
            if g.error_code == 0 {
                let names = topic_names_by_id(cluster).await?;
                let members = g
                    .members
                    .into_iter()
                    .map(|m| MemberView {
                        member_id: m.member_id.to_string(),
                        client_id: m.client_id.to_string(),
                        host: m.client_host.to_string(),
                        assignment: m
                            .assignment
                            .topic_partitions
                            .iter()
                            .flat_map(|tp| {
                                let name = names
                                    .get(&tp.topic_id)
                                    .cloned()
                                    .unwrap_or_else(|| tp.topic_id.to_string());
                                tp.partitions.iter().map(move |p| (name.clone(), *p))
                            })
                            .collect(),
                    })
                    .collect();
                return Ok(GroupView {
                    group: group.to_string(),
                    state: g.group_state.to_string(),
                    group_type: "consumer",
                    protocol_type: "consumer".to_string(),
                    assignor: g.assignor_name.to_string(),
                    coordinator,
                    members,
                });
            }
        }
    }
    let conn = cluster.coordinator(group).await?;
    let request = DescribeGroupsRequest::default().with_groups(vec![gid(group)]);
    let response = conn.call(&request).await?;
    let g = response
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| CliError::UnknownGroup(group.to_string()))?;
    let state = if g.error_code == GROUP_ID_NOT_FOUND {
        "Dead".to_string()
    } else {
        CliError::check(
            g.error_code,
            format!("describing group {group}"),
            g.error_message.as_deref(),
        )?;
        g.group_state.to_string()
    };
    let consumer = g.protocol_type.as_str() == "consumer";
    let members = g
        .members
        .into_iter()
        .map(|m| MemberView {
            member_id: m.member_id.to_string(),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assignment: if consumer {
                assignment_partitions(&m.member_assignment)
                    .map(|a| {
                        a.into_iter()
                            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
                            .collect()
                    })
                    .unwrap_or_default()
            } else {
                Vec::new()
            },
        })
        .collect();
    Ok(GroupView {
        group: group.to_string(),
        state,
        group_type: "classic",
        protocol_type: g.protocol_type.to_string(),
        assignor: g.protocol_data.to_string(),
        coordinator,
        members,
    })
}

async fn topic_names_by_id(cluster: &mut Cluster) -> Result<HashMap<Uuid, String>> {
    let metadata = cluster.metadata(None).await?;
    Ok(metadata
        .topics
        .into_iter()
        .filter_map(|t| Some((t.topic_id, t.name?.to_string())))
        .collect())
}

/// The group's committed offsets, by partition.
pub async fn committed(cluster: &mut Cluster, group: &str) -> Result<BTreeMap<(String, i32), i64>> {
    let conn = cluster.coordinator(group).await?;
    let request = OffsetFetchRequest::default()
        .with_group_id(gid(group))
        .with_topics(None);
    // v7 and below carry one group by name, which every broker still speaks.
    let (response, _) = conn.call_capped(&request, 7).await?;
    CliError::check(
        response.error_code,
        format!("fetching the offsets of group {group}"),
        None,
    )?;
    let mut out = BTreeMap::new();
    for t in response.topics {
        for p in t.partitions {
            if p.committed_offset >= 0 {
                out.insert((t.name.to_string(), p.partition_index), p.committed_offset);
            }
        }
    }
    Ok(out)
}

/// Log end offsets of `partitions`, leaving out topics that no longer exist.
async fn log_ends(
    cluster: &mut Cluster,
    partitions: &BTreeSet<(String, i32)>,
) -> Result<BTreeMap<(String, i32), i64>> {
    let topics: BTreeSet<&String> = partitions.iter().map(|(t, _)| t).collect();
    let mut present = Vec::new();
    for t in topics {
        match lookup::topic(cluster, t).await {
            Ok(info) => present.extend(
                partitions
                    .iter()
                    .filter(|(pt, p)| pt == t && info.partitions.iter().any(|x| x.partition == *p))
                    .cloned(),
            ),
            Err(CliError::UnknownTopic(_)) => {}
            Err(e) => return Err(e),
        }
    }
    lookup::offsets_at(cluster, &present, LATEST).await
}

pub async fn list(cluster: &mut Cluster, format: Format) -> Result<()> {
    // Each broker lists the groups it coordinates.
    let metadata = cluster.metadata(Some(&[])).await?;
    let mut nodes: Vec<i32> = metadata.brokers.iter().map(|b| b.node_id.0).collect();
    nodes.sort_unstable();
    let mut names = BTreeSet::new();
    for node in nodes {
        let response = cluster
            .node(node)
            .await?
            .call(&ListGroupsRequest::default())
            .await?;
        CliError::check(response.error_code, "listing groups", None)?;
        names.extend(response.groups.into_iter().map(|g| g.group_id.to_string()));
    }
    let mut views = Vec::new();
    for name in names {
        views.push(describe_group(cluster, &name).await?);
    }
    match format {
        Format::Json => print_json(&json!(views
            .iter()
            .map(|v| json!({
                "group": v.group,
                "state": v.state,
                "type": v.group_type,
                "protocol": v.assignor,
                "members": v.members.len(),
            }))
            .collect::<Vec<_>>())),
        Format::Table => {
            let mut table = Table::new(&["GROUP", "STATE", "TYPE", "PROTOCOL", "MEMBERS"]);
            for v in views {
                table.push(vec![
                    v.group,
                    v.state,
                    v.group_type.to_string(),
                    if v.assignor.is_empty() {
                        "-".to_string()
                    } else {
                        v.assignor
                    },
                    v.members.len().to_string(),
                ]);
            }
            print(&table.render())
        }
    }
}

/// Which table `groups describe` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescribeView {
    Offsets,
    Members,
    State,
}

pub async fn describe(
    cluster: &mut Cluster,
    group: &str,
    view: DescribeView,
    format: Format,
) -> Result<()> {
    let g = describe_group(cluster, group).await?;
    let offsets = committed(cluster, group).await?;
    if g.missing() && offsets.is_empty() {
        return Err(CliError::UnknownGroup(group.to_string()));
    }
    let mut owner: BTreeMap<(String, i32), &MemberView> = BTreeMap::new();
    for m in &g.members {
        for tp in &m.assignment {
            owner.insert(tp.clone(), m);
        }
    }
    let partitions: BTreeSet<(String, i32)> = offsets.keys().chain(owner.keys()).cloned().collect();
    let ends = log_ends(cluster, &partitions).await?;
    let rows: Vec<serde_json::Value> = partitions
        .iter()
        .map(|key| {
            let current = offsets.get(key).copied();
            let end = ends.get(key).copied();
            let lag = match (current, end) {
                (Some(c), Some(e)) => Some((e - c).max(0)),
                _ => None,
            };
            let m = owner.get(key);
            json!({
                "topic": key.0,
                "partition": key.1,
                "current_offset": current,
                "log_end_offset": end,
                "lag": lag,
                "consumer_id": m.map(|m| m.member_id.clone()),
                "host": m.map(|m| m.host.clone()),
                "client_id": m.map(|m| m.client_id.clone()),
            })
        })
        .collect();
    if format == Format::Json {
        return print_json(&json!({
            "group": g.group,
            "state": g.state,
            "type": g.group_type,
            "protocol": g.assignor,
            "coordinator": g.coordinator,
            "members": g.members.iter().map(|m| json!({
                "consumer_id": m.member_id,
                "host": m.host,
                "client_id": m.client_id,
                "assignment": m.assignment.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "partitions": rows,
        }));
    }
    let mut out = String::new();
    if g.members.is_empty() {
        out.push_str(&format!(
            "Consumer group '{group}' has no active members.\n\n"
        ));
    }
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let table = match view {
        DescribeView::Offsets => {
            let header = [
                "GROUP",
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "LOG-END-OFFSET",
                "LAG",
                "CONSUMER-ID",
                "HOST",
                "CLIENT-ID",
            ];
            let mut table = Table::new(&header);
            for r in &rows {
                let mut row = vec![group.to_string()];
                for field in [
                    "topic",
                    "partition",
                    "current_offset",
                    "log_end_offset",
                    "lag",
                    "consumer_id",
                    "host",
                    "client_id",
                ] {
                    row.push(cell(&r[field]));
                }
                table.push(row);
            }
            table
        }
        DescribeView::Members => {
            let mut table = Table::new(&[
                "GROUP",
                "CONSUMER-ID",
                "HOST",
                "CLIENT-ID",
                "#PARTITIONS",
                "ASSIGNMENT",
            ]);
            for m in &g.members {
                let assignment = m
                    .assignment
                    .iter()
                    .map(|(t, p)| format!("{t}:{p}"))
                    .collect::<Vec<_>>()
                    .join(",");
                table.push(vec![
                    group.to_string(),
                    m.member_id.clone(),
                    m.host.clone(),
                    m.client_id.clone(),
                    m.assignment.len().to_string(),
                    or_dash(Some(assignment).filter(|a| !a.is_empty())),
                ]);
            }
            table
        }
        DescribeView::State => {
            let mut table = Table::new(&[
                "GROUP",
                "COORDINATOR",
                "TYPE",
                "ASSIGNMENT-STRATEGY",
                "STATE",
                "#MEMBERS",
            ]);
            table.push(vec![
                group.to_string(),
                g.coordinator.clone(),
                g.group_type.to_string(),
                or_dash(Some(g.assignor.clone()).filter(|a| !a.is_empty())),
                g.state.clone(),
                g.members.len().to_string(),
            ]);
            table
        }
    };
    out.push_str(&table.render());
    print(&out)
}

pub async fn delete(cluster: &mut Cluster, groups: &[String]) -> Result<()> {
    let mut failure = None;
    for group in groups {
        let conn = cluster.coordinator(group).await?;
        let request = DeleteGroupsRequest::default().with_groups_names(vec![gid(group)]);
        let response = conn.call(&request).await?;
        for r in response.results {
            let name = r.group_id.to_string();
            match r.error_code {
                0 => print(&format!("Deleted group {name}.\n"))?,
                GROUP_ID_NOT_FOUND => {
                    failure.get_or_insert(CliError::UnknownGroup(name));
                }
                code => {
                    failure.get_or_insert(CliError::Kafka {
                        what: format!("deleting group {name}"),
                        code,
                        message: None,
                    });
                }
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

/// `--topic T` or `--topic T:0,2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicScope {
    pub topic: String,
    pub partitions: Option<Vec<i32>>,
}

pub fn parse_topic_scope(text: &str) -> Result<TopicScope> {
    let bad = |reason| CliError::InvalidArgument {
        arg: "--topic",
        value: text.to_string(),
        reason,
    };
    match text.split_once(':') {
        None if !text.is_empty() => Ok(TopicScope {
            topic: text.to_string(),
            partitions: None,
        }),
        Some((topic, list)) if !topic.is_empty() => {
            let partitions = list
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<i32>()
                        .map_err(|_| bad("partitions must be numbers, as in TOPIC:0,1"))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(TopicScope {
                topic: topic.to_string(),
                partitions: Some(partitions),
            })
        }
        _ => Err(bad("expected TOPIC or TOPIC:PARTITION[,PARTITION...]")),
    }
}

/// The partitions a scope names (all of the topic's when none are listed).
async fn expand(cluster: &mut Cluster, scopes: &[TopicScope]) -> Result<BTreeSet<(String, i32)>> {
    let mut out = BTreeSet::new();
    for s in scopes {
        let info = lookup::topic(cluster, &s.topic).await?;
        match &s.partitions {
            None => out.extend(
                info.partitions
                    .iter()
                    .map(|p| (s.topic.clone(), p.partition)),
            ),
            Some(list) => {
                for p in list {
                    info.require_partition(*p)?;
                    out.insert((s.topic.clone(), *p));
                }
            }
        }
    }
    Ok(out)
}

pub async fn delete_offsets(
    cluster: &mut Cluster,
    group: &str,
    scopes: &[TopicScope],
) -> Result<()> {
    let partitions = expand(cluster, scopes).await?;
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in &partitions {
        by_topic.entry(t.clone()).or_default().push(*p);
    }
    let request = OffsetDeleteRequest::default()
        .with_group_id(gid(group))
        .with_topics(
            by_topic
                .iter()
                .map(|(t, ps)| {
                    OffsetDeleteRequestTopic::default()
                        .with_name(topic_name(t))
                        .with_partitions(
                            ps.iter()
                                .map(|p| {
                                    OffsetDeleteRequestPartition::default().with_partition_index(*p)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let response = cluster.coordinator(group).await?.call(&request).await?;
    if response.error_code == GROUP_ID_NOT_FOUND {
        return Err(CliError::UnknownGroup(group.to_string()));
    }
    CliError::check(
        response.error_code,
        format!("deleting offsets of group {group}"),
        None,
    )?;
    let mut table = Table::new(&["TOPIC", "PARTITION", "STATUS"]);
    let mut failure = None;
    for t in response.topics {
        for p in t.partitions {
            let status = if p.error_code == 0 {
                "Successful".to_string()
            } else {
                failure.get_or_insert(CliError::Kafka {
                    what: format!(
                        "deleting the offset of {}-{}",
                        t.name.as_str(),
                        p.partition_index
                    ),
                    code: p.error_code,
                    message: None,
                });
                format!("Error: {}", super::error::kafka_name(p.error_code))
            };
            table.push(vec![
                t.name.to_string(),
                p.partition_index.to_string(),
                status,
            ]);
        }
    }
    print(&table.render())?;
    failure.map_or(Ok(()), Err)
}

/// Where `reset-offsets` moves each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    Current,
    Offset(i64),
    /// The first offset at or after this time (ms).
    Time(i64),
    /// The first offset at or after now minus this many ms.
    Duration(i64),
    ShiftBy(i64),
}

pub async fn reset_offsets(
    cluster: &mut Cluster,
    group: &str,
    scopes: Option<&[TopicScope]>,
    to: ResetTo,
    execute: bool,
    format: Format,
) -> Result<()> {
    let view = describe_group(cluster, group).await?;
    if !view.members.is_empty() {
        return Err(CliError::GroupActive {
            group: group.to_string(),
            members: view.members.len(),
        });
    }
    let current = committed(cluster, group).await?;
    let partitions: BTreeSet<(String, i32)> = match scopes {
        Some(s) => expand(cluster, s).await?,
        // --all-topics: every partition the group has an offset for, of topics that exist.
        None => {
            let all: BTreeSet<_> = current.keys().cloned().collect();
            log_ends(cluster, &all).await?.into_keys().collect()
        }
    };
    let list: Vec<(String, i32)> = partitions.iter().cloned().collect();
    let earliest = lookup::offsets_at(cluster, &list, EARLIEST).await?;
    let latest = lookup::offsets_at(cluster, &list, LATEST).await?;
    let by_time = match to {
        ResetTo::Time(t) => Some(lookup::offsets_at(cluster, &list, t).await?),
        ResetTo::Duration(d) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            Some(lookup::offsets_at(cluster, &list, now - d).await?)
        }
        _ => None,
    };
    let mut plan: Vec<((String, i32), Option<i64>, i64)> = Vec::with_capacity(list.len());
    for key in &list {
        let (lo, hi) = (earliest[key], latest[key]);
        let now = current.get(key).copied();
        let target = match to {
            ResetTo::Earliest => lo,
            ResetTo::Latest => hi,
            ResetTo::Current => now.unwrap_or(hi),
            ResetTo::Offset(o) => o,
            ResetTo::Time(_) | ResetTo::Duration(_) => {
                let o = by_time.as_ref().expect("looked up")[key];
                if o < 0 {
                    hi
                } else {
                    o
                }
            }
            ResetTo::ShiftBy(n) => now.unwrap_or(hi).saturating_add(n),
        };
        // Kafka's tool clamps targets into the log, so a consumer can always start there.
        plan.push((key.clone(), now, target.clamp(lo, hi)));
    }
    if execute {
        let total = plan.len();
        for (done, chunk) in plan.chunks(COMMIT_CHUNK).enumerate() {
            commit(cluster, group, chunk).await?;
            if total > COMMIT_CHUNK {
                eprintln!(
                    "committed {}/{total} partitions",
                    (done * COMMIT_CHUNK + chunk.len())
                );
            }
        }
    }
    match format {
        Format::Json => print_json(&json!({
            "group": group,
            "executed": execute,
            "partitions": plan.iter().map(|((t, p), now, new)| json!({
                "topic": t, "partition": p, "current_offset": now, "new_offset": new,
            })).collect::<Vec<_>>(),
        }))?,
        Format::Table => {
            let mut table = Table::new(&[
                "GROUP",
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "NEW-OFFSET",
            ]);
            for ((t, p), now, new) in &plan {
                table.push(vec![
                    group.to_string(),
                    t.clone(),
                    p.to_string(),
                    or_dash(*now),
                    new.to_string(),
                ]);
            }
            print(&table.render())?;
        }
    }
    if !execute {
        eprintln!("Dry run: nothing was changed. Add --execute to apply these offsets.");
    }
    Ok(())
}

/// Commits `plan` as an admin (no member, generation -1), which the group accepts only
/// while it is empty.
async fn commit(
    cluster: &mut Cluster,
    group: &str,
    plan: &[((String, i32), Option<i64>, i64)],
) -> Result<()> {
    let offsets = plan.iter().map(|(k, _, new)| (k.clone(), *new)).collect();
    for ((t, p), code) in lookup::commit_offsets(cluster, group, -1, "", &offsets).await? {
        if code == 25 || code == 68 {
            // UNKNOWN_MEMBER_ID / NON_EMPTY_GROUP: a consumer joined meanwhile.
            return Err(CliError::GroupActive {
                group: group.to_string(),
                members: 1,
            });
        }
        CliError::check(code, format!("committing the offset of {t}-{p}"), None)?;
    }
    Ok(())
}
