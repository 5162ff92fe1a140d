//! `/consumer-groups`: the groups, one group's members and offsets, and one row per
//! partition with its owner and lag (log end offset minus committed offset).

use std::collections::BTreeMap;

use chorus_coordinator::consumer_protocol::assignment_partitions;
use chorus_coordinator::{FetchedOffset, GroupDescription};
use hyper::{Response, StatusCode};
use serde::Serialize;

use super::{error, json, Body};
use crate::broker::Broker;

#[derive(Debug, Serialize)]
struct GroupSummary {
    group_id: String,
    state: &'static str,
    protocol_type: String,
    group_type: &'static str,
}

#[derive(Debug, Serialize)]
struct GroupDetail {
    group_id: String,
    state: &'static str,
    protocol_type: String,
    protocol: String,
    generation: i32,
    members: Vec<MemberDetail>,
    offsets: Vec<PartitionRow>,
}

#[derive(Debug, Serialize)]
struct MemberDetail {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    host: String,
    /// Partitions by topic (consumer-protocol groups only).
    assignment: BTreeMap<String, Vec<i32>>,
}

/// One partition the group owns or has an offset for.
#[derive(Debug, Serialize)]
struct PartitionRow {
    topic: String,
    partition: i32,
    committed_offset: Option<i64>,
    log_end_offset: Option<i64>,
    /// `None` without a commit (or when the partition is gone).
    lag: Option<i64>,
    member_id: Option<String>,
    client_id: Option<String>,
    host: Option<String>,
}

pub async fn list(broker: &Broker) -> Response<Body> {
    let listed = broker
        .groups
        .call(|r| r.coordinator.list_groups(&[], &[]))
        .await;
    match listed {
        Ok(groups) => {
            let groups: Vec<GroupSummary> = groups
                .into_iter()
                .map(|g| GroupSummary {
                    group_id: g.group_id,
                    state: g.state,
                    protocol_type: g.protocol_type,
                    group_type: g.group_type,
                })
                .collect();
            json(StatusCode::OK, &serde_json::json!({ "groups": groups }))
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// The group's description and offsets, in one trip to the coordinator.
async fn load(
    broker: &Broker,
    group: &str,
) -> Result<(GroupDescription, Vec<FetchedOffset>), Response<Body>> {
    let id = group.to_string();
    let found = broker
        .groups
        .call(move |r| {
            let d = r.coordinator.describe_group(&id)?;
            Some((d, r.coordinator.fetch_offsets(&id, None)))
        })
        .await;
    match found {
        Ok(Some(found)) => Ok(found),
        Ok(None) => Err(error(
            StatusCode::NOT_FOUND,
            &format!("group {group} does not exist"),
        )),
        Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())),
    }
}

fn members(d: &GroupDescription) -> Vec<MemberDetail> {
    d.members
        .iter()
        .map(|m| MemberDetail {
            member_id: m.member_id.clone(),
            group_instance_id: m.instance_id.clone(),
            client_id: m.client_id.clone(),
            host: m.client_host.clone(),
            assignment: if d.protocol_type == "consumer" {
                assignment_partitions(&m.assignment).unwrap_or_default()
            } else {
                BTreeMap::new()
            },
        })
        .collect()
}

/// Every partition assigned or committed, with owner and lag.
fn rows(broker: &Broker, members: &[MemberDetail], offsets: &[FetchedOffset]) -> Vec<PartitionRow> {
    let mut owner: BTreeMap<(String, i32), &MemberDetail> = BTreeMap::new();
    for m in members {
        for (topic, ps) in &m.assignment {
            for p in ps {
                owner.insert((topic.clone(), *p), m);
            }
        }
    }
    let mut committed: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for f in offsets {
        if let Some(c) = &f.committed {
            committed.insert((f.topic.clone(), f.partition), c.offset);
        }
    }
    let mut keys: Vec<(String, i32)> = owner.keys().chain(committed.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|(topic, partition)| {
            let end = broker
                .partition(&topic, partition)
                .ok()
                .map(|p| p.log.log_end_offset());
            let offset = committed.get(&(topic.clone(), partition)).copied();
            let m = owner.get(&(topic.clone(), partition));
            PartitionRow {
                lag: offset.zip(end).map(|(o, e)| (e - o).max(0)),
                committed_offset: offset,
                log_end_offset: end,
                member_id: m.map(|m| m.member_id.clone()),
                client_id: m.map(|m| m.client_id.clone()),
                host: m.map(|m| m.host.clone()),
                topic,
                partition,
            }
        })
        .collect()
}

pub async fn describe(broker: &Broker, group: &str) -> Response<Body> {
    let (d, offsets) = match load(broker, group).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let members = members(&d);
    let offsets = rows(broker, &members, &offsets);
    json(
        StatusCode::OK,
        &GroupDetail {
            group_id: d.group_id,
            state: d.state,
            protocol_type: d.protocol_type,
            protocol: d.protocol,
            generation: d.generation,
            members,
            offsets,
        },
    )
}

pub async fn assignments(broker: &Broker, group: &str) -> Response<Body> {
    let (d, offsets) = match load(broker, group).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let members = members(&d);
    let partitions = rows(broker, &members, &offsets);
    let total_lag: i64 = partitions.iter().filter_map(|p| p.lag).sum();
    json(
        StatusCode::OK,
        &serde_json::json!({
            "group_id": d.group_id,
            "state": d.state,
            "total_lag": total_lag,
            "partitions": partitions,
        }),
    )
}
