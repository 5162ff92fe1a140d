//! Group coordinator benchmarks: the pure state machine in-process, and the same operations
//! over the wire against a `chorus` process (a minimal pipelining Kafka client built on
//! `kafka-protocol`, so the client costs as little as possible).
//!
//! Tables:
//! 1. State machine: heartbeats/s, offset commits/s, join+sync rounds/s, and the time for a
//!    classic group of 100 members over 1,000 partitions to be stable again after a member
//!    joins (every member rejoins, the leader runs the range assignor, everyone syncs).
//! 2. Over the wire: heartbeats/s and offset commits/s (many connections, pipelined),
//!    join+sync rounds/s (one-member groups, one round in flight per connection), and the
//!    100-member rebalance with simulated members that heartbeat every 10 ms.
//!
//! Run: `cargo bench -p chorus-benches --bench groups` (`CHORUS_BENCH_QUICK=1` for a short
//! run, `CHORUS_BENCH_ONLY=machine,wire` to pick tables). It builds and starts
//! `target/release/chorus` itself. KIP-848 rebalances are not measured: the consumer
//! protocol is not implemented yet.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use chorus_benches::{median, print_table, quick, wanted, Chorus};
use chorus_coordinator::assignor::{Assignor, GroupAssignment, RangeAssignor, Subscriber};
use chorus_coordinator::consumer_protocol::{
    encode_assignment, encode_subscription, subscription_topics,
};
use chorus_coordinator::{
    CommitPartition, CommitRequest, Coordinator, Effects, GroupConfig, GroupState, JoinRequest,
    JoinResponse, Millis, Protocol, Reply, SyncRequest,
};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs benches without it, and
    // a benchmark is not a test.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if wanted("machine") {
        state_machine();
    }
    if wanted("wire") {
        wire();
    }
}

fn per_sec(n: u64, d: Duration) -> String {
    format!("{:.0}", n as f64 / d.as_secs_f64())
}

// ------------------------------------------------------------------ state machine

fn subscription() -> Bytes {
    Bytes::from(encode_subscription(&["bench".to_string()]))
}

fn join_req(group: &str, member: &str) -> JoinRequest {
    JoinRequest {
        group_id: group.into(),
        member_id: member.into(),
        instance_id: None,
        client_id: "bench".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 60_000,
        rebalance_timeout_ms: 60_000,
        protocol_type: "consumer".into(),
        protocols: vec![Protocol {
            name: "range".into(),
            metadata: subscription(),
        }],
        require_known_member_id: false,
    }
}

fn sync_req(
    group: &str,
    generation: i32,
    member: &str,
    assignments: Vec<(String, Bytes)>,
) -> SyncRequest {
    SyncRequest {
        group_id: group.into(),
        generation,
        member_id: member.into(),
        instance_id: None,
        protocol_type: None,
        protocol: None,
        assignments,
    }
}

fn join_reply(fx: &mut Effects) -> JoinResponse {
    match fx.replies.pop() {
        Some((_, Reply::Join(Ok(r)))) => r,
        other => panic!("join failed: {other:?}"),
    }
}

/// A coordinator holding `groups` stable one-member groups; returns their member ids.
fn one_member_groups(c: &mut Coordinator, now: Millis, groups: usize) -> Vec<String> {
    (0..groups)
        .map(|i| {
            let group = format!("g{i}");
            let mut fx = Effects::default();
            c.join(now, 0, join_req(&group, ""), &mut fx);
            let r = join_reply(&mut fx);
            c.sync(
                now,
                0,
                sync_req(&group, r.generation, &r.member_id, vec![]),
                &mut fx,
            );
            r.member_id
        })
        .collect()
}

fn state_machine() {
    let config = GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    };
    let now: Millis = 1_000_000;
    let n: u64 = if quick() { 200_000 } else { 2_000_000 };
    let mut rows = Vec::new();

    let mut c = Coordinator::new(config.clone(), 1);
    c.start(now);
    let members = one_member_groups(&mut c, now, 1000);
    let beats: Vec<chorus_coordinator::HeartbeatRequest> = members
        .iter()
        .enumerate()
        .map(|(i, m)| chorus_coordinator::HeartbeatRequest {
            group_id: format!("g{i}"),
            generation: 1,
            member_id: m.clone(),
            instance_id: None,
        })
        .collect();
    let started = Instant::now();
    for i in 0..n {
        c.heartbeat(now, &beats[i as usize % beats.len()])
            .expect("heartbeat");
    }
    rows.push(vec!["heartbeats/s".into(), per_sec(n, started.elapsed())]);

    let commits = n / 4;
    let started = Instant::now();
    let mut records = 0usize;
    for i in 0..commits {
        let g = i as usize % members.len();
        let mut fx = Effects::default();
        let req = CommitRequest {
            group_id: format!("g{g}"),
            generation: 1,
            member_id: members[g].clone(),
            instance_id: None,
            offsets: vec![CommitPartition {
                topic: "bench".into(),
                partition: 0,
                offset: i as i64,
                leader_epoch: -1,
                metadata: String::new(),
            }],
        };
        c.commit_offsets(now, req, &mut fx).expect("commit");
        // Encoding the record is part of a commit's cost; writing it is the broker's.
        for r in &fx.records {
            records += r.encode_key().len() + r.encode_value().map_or(0, |v| v.len());
        }
    }
    assert!(records > 0);
    rows.push(vec![
        "offset commits/s (records encoded)".into(),
        per_sec(commits, started.elapsed()),
    ]);

    let rounds = n / 10;
    let started = Instant::now();
    for i in 0..rounds {
        let g = i as usize % members.len();
        let group = format!("g{g}");
        let mut fx = Effects::default();
        // The leader rejoining starts a rebalance that completes at once (one member).
        c.join(now, 0, join_req(&group, &members[g]), &mut fx);
        let r = join_reply(&mut fx);
        c.sync(
            now,
            0,
            sync_req(
                &group,
                r.generation,
                &r.member_id,
                vec![(r.member_id.clone(), Bytes::from_static(b"a"))],
            ),
            &mut fx,
        );
    }
    rows.push(vec![
        "join+sync rounds/s".into(),
        per_sec(rounds, started.elapsed()),
    ]);

    let times: Vec<f64> = (0..if quick() { 5 } else { 20 })
        .map(|_| big_rebalance_in_process(&config, now).as_secs_f64() * 1000.0)
        .collect();
    rows.push(vec![
        "classic rebalance, 100 members / 1,000 partitions (ms, median)".into(),
        format!("{:.2}", median(times)),
    ]);
    let (times, rounds): (Vec<f64>, Vec<f64>) = (0..if quick() { 5 } else { 20 })
        .map(|_| {
            let (d, rounds) = kip848_rebalance_in_process(&config, now);
            (d.as_secs_f64() * 1000.0, rounds as f64)
        })
        .unzip();
    rows.push(vec![
        format!(
            "KIP-848 rebalance, 100 members / 1,000 partitions (ms, median; {} heartbeat rounds)",
            median(rounds)
        ),
        format!("{:.2}", median(times)),
    ]);
    print_table(
        "Coordinator state machine (in-process)",
        &["operation", "result"],
        &rows,
    );
}

/// A KIP-848 member as a client keeps it.
struct Kip848Client {
    id: String,
    epoch: i32,
    owned: chorus_coordinator::assignor::MemberAssignment,
}

fn kip848_beat(
    c: &mut Coordinator,
    now: Millis,
    client: &mut Kip848Client,
    topics: &BTreeMap<String, i32>,
) {
    let req = chorus_coordinator::ConsumerHeartbeat {
        group_id: "k".into(),
        member_id: client.id.clone(),
        member_epoch: client.epoch,
        instance_id: None,
        rack_id: None,
        client_id: "bench".into(),
        client_host: "/127.0.0.1".into(),
        rebalance_timeout_ms: 60_000,
        topic_names: (client.epoch == 0).then(|| vec!["bench".to_string()]),
        topic_regex: None,
        server_assignor: None,
        owned: Some(client.owned.clone()),
    };
    // The records it returns are what the broker would persist; the bench measures the
    // state machine, so they are produced and dropped.
    let mut fx = Effects::default();
    let r = c
        .consumer_heartbeat(now, req, topics, &mut fx)
        .expect("heartbeat");
    client.id = r.member_id;
    client.epoch = r.member_epoch;
    if let Some(a) = r.assignment {
        client.owned = a;
    }
}

/// 100 converged KIP-848 members; a 101st joins; every member heartbeats once per round
/// until the group is stable. Returns the time and the rounds it took.
fn kip848_rebalance_in_process(config: &GroupConfig, now: Millis) -> (Duration, usize) {
    let mut c = Coordinator::new(config.clone(), 3);
    c.start(now);
    let topics = BTreeMap::from([("bench".to_string(), 1000)]);
    let new = || Kip848Client {
        id: String::new(),
        epoch: 0,
        owned: Default::default(),
    };
    let mut clients: Vec<Kip848Client> = (0..100).map(|_| new()).collect();
    let stable = |c: &Coordinator| {
        c.describe_consumer_group("k")
            .is_some_and(|d| d.state == "Stable")
    };
    while !stable(&c) || clients.iter().any(|m| m.epoch == 0) {
        for m in clients.iter_mut() {
            kip848_beat(&mut c, now, m, &topics);
        }
    }
    let started = Instant::now();
    clients.push(new());
    let mut rounds = 0;
    loop {
        for m in clients.iter_mut() {
            kip848_beat(&mut c, now, m, &topics);
        }
        rounds += 1;
        if stable(&c) {
            break;
        }
    }
    (started.elapsed(), rounds)
}

/// 100 stable members; a 101st joins; time until everyone has synced the new generation.
fn big_rebalance_in_process(config: &GroupConfig, now: Millis) -> Duration {
    let mut c = Coordinator::new(config.clone(), 2);
    c.start(now);
    let group = "big";
    let mut fx = Effects::default();
    let mut ids = Vec::new();
    for i in 0..100u64 {
        c.join(now, i, join_req(group, ""), &mut fx);
    }
    fx.replies.clear();
    let g = c.group(group).expect("group");
    ids.extend(g.members.keys().cloned());
    let generation = g.generation;
    let leader = g.leader.clone().expect("leader");
    complete_sync(&mut c, now, group, generation, &leader, &ids);

    let started = Instant::now();
    let mut fx = Effects::default();
    c.join(now, 1000, join_req(group, ""), &mut fx);
    for (i, id) in ids.iter().enumerate() {
        c.join(now, i as u64, join_req(group, id), &mut fx);
    }
    let g = c.group(group).expect("group");
    assert_eq!(g.state, GroupState::CompletingRebalance);
    let all: Vec<String> = g.members.keys().cloned().collect();
    let (generation, leader) = (g.generation, g.leader.clone().expect("leader"));
    complete_sync(&mut c, now, group, generation, &leader, &all);
    assert_eq!(c.group(group).expect("group").state, GroupState::Stable);
    started.elapsed()
}

/// Followers sync, then the leader with a range assignment of 1,000 partitions.
fn complete_sync(
    c: &mut Coordinator,
    now: Millis,
    group: &str,
    generation: i32,
    leader: &str,
    members: &[String],
) {
    let mut fx = Effects::default();
    for m in members.iter().filter(|m| *m != leader) {
        c.sync(now, 0, sync_req(group, generation, m, vec![]), &mut fx);
    }
    let assignments = range_assignment(members, 1000);
    c.sync(
        now,
        0,
        sync_req(group, generation, leader, assignments),
        &mut fx,
    );
}

fn range_assignment(members: &[String], partitions: i32) -> Vec<(String, Bytes)> {
    let subscribers: Vec<Subscriber> = members
        .iter()
        .map(|m| Subscriber {
            member_id: m.clone(),
            topics: ["bench".to_string()].into(),
        })
        .collect();
    let topics = BTreeMap::from([("bench".to_string(), partitions)]);
    let assignment = RangeAssignor.assign(&subscribers, &topics, &GroupAssignment::new());
    assignment
        .into_iter()
        .map(|(m, a)| (m, Bytes::from(encode_assignment(&a))))
        .collect()
}

// ------------------------------------------------------------------ over the wire

/// A raw Kafka connection that can pipeline requests.
struct Conn {
    stream: TcpStream,
    next: i32,
}

impl Conn {
    async fn connect(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Conn { stream, next: 0 }
    }

    fn frame<R: Encodable>(&mut self, out: &mut BytesMut, api: ApiKey, version: i16, req: &R) {
        self.next += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.next)
            .with_client_id(Some(StrBytes::from_static_str("bench")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, api.request_header_version(version))
            .expect("header");
        req.encode(&mut body, version).expect("body");
        out.put_i32(body.len() as i32);
        out.extend_from_slice(&body);
    }

    async fn read<Resp: Decodable>(&mut self, api: ApiKey, version: i16) -> Resp {
        let size = self.stream.read_i32().await.expect("response size");
        let mut buf = vec![0u8; size as usize];
        self.stream.read_exact(&mut buf).await.expect("response");
        let mut buf = Bytes::from(buf);
        ResponseHeader::decode(&mut buf, api.response_header_version(version)).expect("header");
        let resp = Resp::decode(&mut buf, version).expect("decode");
        debug_assert!(!buf.has_remaining());
        resp
    }

    /// Sends `reqs` back to back and reads all the answers.
    async fn pipeline<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        reqs: &[Req],
    ) -> Vec<Resp> {
        let mut out = BytesMut::new();
        for r in reqs {
            self.frame(&mut out, api, version, r);
        }
        self.stream.write_all(&out).await.expect("write");
        let mut resps = Vec::with_capacity(reqs.len());
        for _ in reqs {
            resps.push(self.read(api, version).await);
        }
        resps
    }

    async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> Resp {
        self.pipeline(api, version, std::slice::from_ref(req))
            .await
            .pop()
            .expect("one")
    }
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn wire_join(group: &str, member: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(subscription())])
}

fn wire_sync(
    group: &str,
    generation: i32,
    member: &str,
    assignments: Vec<(String, Bytes)>,
) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_assignments(
            assignments
                .into_iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(&m))
                        .with_assignment(a)
                })
                .collect(),
        )
}

/// Joins (KIP-394 round trip at v5) and syncs a one-member group; returns (member, generation).
async fn stable_member(conn: &mut Conn, group: &str) -> (String, i32) {
    let first: JoinGroupResponse = conn.call(ApiKey::JoinGroup, 5, &wire_join(group, "")).await;
    let member = first.member_id.to_string();
    let joined: JoinGroupResponse = conn
        .call(ApiKey::JoinGroup, 5, &wire_join(group, &member))
        .await;
    assert_eq!(joined.error_code, 0, "join");
    let synced: SyncGroupResponse = conn
        .call(
            ApiKey::SyncGroup,
            3,
            &wire_sync(
                group,
                joined.generation_id,
                &member,
                vec![(member.clone(), Bytes::from_static(b"a"))],
            ),
        )
        .await;
    assert_eq!(synced.error_code, 0, "sync");
    (member, joined.generation_id)
}

fn wire() {
    let chorus = Chorus::start_with(&[
        "--group-initial-rebalance-delay-ms",
        "0",
        "--group-consumer-heartbeat-interval-ms",
        &KIP848_INTERVAL_MS.to_string(),
    ]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let addr = chorus.bootstrap.clone();
    let secs = if quick() { 2 } else { 5 };
    let rows = rt.block_on(async move {
        let mut setup = Conn::connect(&addr).await;
        let created: CreateTopicsResponse = setup
            .call(
                ApiKey::CreateTopics,
                5,
                &CreateTopicsRequest::default()
                    .with_timeout_ms(30_000)
                    .with_topics(vec![
                        CreatableTopic::default()
                            .with_name(TopicName(s("bench")))
                            .with_num_partitions(1)
                            .with_replication_factor(1),
                        CreatableTopic::default()
                            .with_name(TopicName(s("wide")))
                            .with_num_partitions(1000)
                            .with_replication_factor(1),
                    ]),
            )
            .await;
        assert!(
            created.topics.iter().all(|t| t.error_code == 0),
            "create topics"
        );
        let mut rows = Vec::new();
        let connections = 8;
        let depth = 64;
        let heartbeats = pipelined(
            &addr,
            connections,
            depth,
            secs,
            "hb",
            |group, member, generation| {
                let req = HeartbeatRequest::default()
                    .with_group_id(GroupId(s(group)))
                    .with_generation_id(generation)
                    .with_member_id(s(member));
                Box::new(move |conn: &mut Conn, n: usize| {
                    let reqs = vec![req.clone(); n];
                    Box::pin(async move {
                        let resps: Vec<HeartbeatResponse> =
                            conn.pipeline(ApiKey::Heartbeat, 4, &reqs).await;
                        resps.iter().filter(|r| r.error_code == 0).count()
                    })
                })
            },
        )
        .await;
        rows.push(vec![
            format!("heartbeats/s ({connections} connections, {depth} in flight)"),
            heartbeats,
        ]);
        let commits = pipelined(
            &addr,
            connections,
            depth,
            secs,
            "oc",
            |group, member, generation| {
                let req = OffsetCommitRequest::default()
                    .with_group_id(GroupId(s(group)))
                    .with_generation_id_or_member_epoch(generation)
                    .with_member_id(s(member))
                    .with_topics(vec![OffsetCommitRequestTopic::default()
                        .with_name(TopicName(s("bench")))
                        .with_partitions(vec![OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(0)])]);
                Box::new(move |conn: &mut Conn, n: usize| {
                    let reqs = vec![req.clone(); n];
                    Box::pin(async move {
                        let resps: Vec<OffsetCommitResponse> =
                            conn.pipeline(ApiKey::OffsetCommit, 8, &reqs).await;
                        resps
                            .iter()
                            .filter(|r| r.topics[0].partitions[0].error_code == 0)
                            .count()
                    })
                })
            },
        )
        .await;
        rows.push(vec![
            format!("offset commits/s ({connections} connections, {depth} in flight)"),
            commits,
        ]);
        rows.push(vec![
            "join+sync rounds/s (32 one-member groups)".into(),
            join_sync_rounds(&addr, 32, secs).await,
        ]);
        let times = big_rebalance_over_wire(&addr, if quick() { 2 } else { 5 }).await;
        rows.push(vec![
            "classic rebalance, 100 members / 1,000 partitions, 10 ms heartbeats (ms, median)"
                .into(),
            format!("{:.1}", median(times)),
        ]);
        let times = kip848_rebalance_over_wire(&addr, if quick() { 2 } else { 5 }).await;
        rows.push(vec![
            format!(
                "KIP-848 rebalance, 100 members / 1,000 partitions, {KIP848_INTERVAL_MS} ms heartbeat interval (ms, median)"
            ),
            format!("{:.1}", median(times)),
        ]);
        rows
    });
    print_table(
        "Coordinator over the wire (chorus process)",
        &["operation", "result"],
        &rows,
    );
    drop(chorus);
}

type Work = Box<
    dyn FnMut(
            &mut Conn,
            usize,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = usize> + Send + '_>>
        + Send,
>;

/// `connections` one-member groups, each hammered with `depth` pipelined requests made by
/// `make` for `secs`; returns successful requests per second.
async fn pipelined(
    addr: &str,
    connections: usize,
    depth: usize,
    secs: u64,
    prefix: &str,
    make: impl Fn(&str, &str, i32) -> Work,
) -> String {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for i in 0..connections {
        let mut conn = Conn::connect(addr).await;
        let group = format!("{prefix}-{i}");
        let (member, generation) = stable_member(&mut conn, &group).await;
        let mut work = make(&group, &member, generation);
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = work(&mut conn, depth).await;
                done.fetch_add(ok as u64, Ordering::Relaxed);
            }
        }));
    }
    let measure_from = (Instant::now(), done.load(Ordering::Relaxed));
    let _ = started;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let n = done.load(Ordering::Relaxed) - measure_from.1;
    let elapsed = measure_from.0.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    per_sec(n, elapsed)
}

async fn join_sync_rounds(addr: &str, groups: usize, secs: u64) -> String {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..groups {
        let mut conn = Conn::connect(addr).await;
        let group = format!("js-{i}");
        let (member, _) = stable_member(&mut conn, &group).await;
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let joined: JoinGroupResponse = conn
                    .call(ApiKey::JoinGroup, 5, &wire_join(&group, &member))
                    .await;
                assert_eq!(joined.error_code, 0);
                let synced: SyncGroupResponse = conn
                    .call(
                        ApiKey::SyncGroup,
                        3,
                        &wire_sync(
                            &group,
                            joined.generation_id,
                            &member,
                            vec![(member.clone(), Bytes::from_static(b"a"))],
                        ),
                    )
                    .await;
                assert_eq!(synced.error_code, 0);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let (from, base) = (Instant::now(), done.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let n = done.load(Ordering::Relaxed) - base;
    let elapsed = from.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    per_sec(n, elapsed)
}

/// A simulated consumer: joins, syncs (running the range assignor when it leads), then
/// heartbeats every 10 ms and rejoins when told to. Reports each generation it synced.
async fn simulated_member(
    addr: String,
    synced: Arc<tokio::sync::Mutex<BTreeMap<String, i32>>>,
    stop: Arc<AtomicBool>,
) {
    let mut conn = Conn::connect(&addr).await;
    let group = "wide-group";
    let first: JoinGroupResponse = conn.call(ApiKey::JoinGroup, 5, &wire_join(group, "")).await;
    let member = first.member_id.to_string();
    while !stop.load(Ordering::Relaxed) {
        let joined: JoinGroupResponse = conn
            .call(ApiKey::JoinGroup, 5, &wire_join(group, &member))
            .await;
        if joined.error_code != 0 {
            continue;
        }
        let assignments = if joined.leader.as_str() == member {
            let members: Vec<String> = joined
                .members
                .iter()
                .filter(|m| subscription_topics(&m.metadata).is_ok())
                .map(|m| m.member_id.to_string())
                .collect();
            range_assignment(&members, 1000)
        } else {
            Vec::new()
        };
        let sync: SyncGroupResponse = conn
            .call(
                ApiKey::SyncGroup,
                3,
                &wire_sync(group, joined.generation_id, &member, assignments),
            )
            .await;
        if sync.error_code != 0 {
            continue;
        }
        synced
            .lock()
            .await
            .insert(member.clone(), joined.generation_id);
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            let beat: HeartbeatResponse = conn
                .call(
                    ApiKey::Heartbeat,
                    4,
                    &HeartbeatRequest::default()
                        .with_group_id(GroupId(s(group)))
                        .with_generation_id(joined.generation_id)
                        .with_member_id(s(&member)),
                )
                .await;
            if beat.error_code != 0 {
                break; // rejoin
            }
        }
    }
}

async fn big_rebalance_over_wire(addr: &str, repeats: usize) -> Vec<f64> {
    let synced = Arc::new(tokio::sync::Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let spawn = |tasks: &mut Vec<_>| {
        tasks.push(tokio::spawn(simulated_member(
            addr.to_string(),
            synced.clone(),
            stop.clone(),
        )));
    };
    for _ in 0..100 {
        spawn(&mut tasks);
    }
    // Wait until all 100 agree on one generation.
    let settled = |want: usize| {
        let synced = synced.clone();
        async move {
            loop {
                {
                    let s = synced.lock().await;
                    let generations: std::collections::BTreeSet<i32> =
                        s.values().copied().collect();
                    if s.len() == want && generations.len() == 1 {
                        return *generations.iter().next().expect("one");
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), settled(100))
        .await
        .expect("100 members settle");
    let mut times = Vec::new();
    for i in 0..repeats {
        let started = Instant::now();
        spawn(&mut tasks);
        tokio::time::timeout(Duration::from_secs(60), settled(101 + i))
            .await
            .expect("group settles");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    times
}

/// The heartbeat interval the broker hands KIP-848 members in this benchmark.
const KIP848_INTERVAL_MS: i32 = 100;

/// A simulated KIP-848 consumer: heartbeats at the interval the broker gives it, and at
/// once after giving partitions up (as librdkafka does, to confirm the revocation).
async fn kip848_member(addr: String, stop: Arc<AtomicBool>) {
    use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
    let mut conn = Conn::connect(&addr).await;
    let (mut member_id, mut epoch) = (String::new(), 0);
    let mut owned: Vec<TopicPartitions> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut req = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s("kip848")))
            .with_member_id(s(&member_id))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(60_000)
            .with_topic_partitions(Some(owned.clone()));
        if epoch == 0 {
            req = req.with_subscribed_topic_names(Some(vec![TopicName(s("wide"))]));
        }
        let r: ConsumerGroupHeartbeatResponse =
            conn.call(ApiKey::ConsumerGroupHeartbeat, 0, &req).await;
        if r.error_code != 0 {
            (member_id, epoch, owned) = (String::new(), 0, Vec::new());
            continue;
        }
        member_id = r.member_id.map(|m| m.to_string()).unwrap_or(member_id);
        epoch = r.member_epoch;
        let interval = Duration::from_millis(r.heartbeat_interval_ms.max(1) as u64);
        let mut shrank = false;
        if let Some(a) = r.assignment {
            let before: usize = owned.iter().map(|t| t.partitions.len()).sum();
            owned = a
                .topic_partitions
                .into_iter()
                .map(|t| {
                    TopicPartitions::default()
                        .with_topic_id(t.topic_id)
                        .with_partitions(t.partitions)
                })
                .collect();
            let after: usize = owned.iter().map(|t| t.partitions.len()).sum();
            shrank = after < before;
        }
        if !shrank {
            tokio::time::sleep(interval).await;
        }
    }
}

/// Polls ConsumerGroupDescribe until the group is stable with `members` members.
async fn kip848_settled(watcher: &mut Conn, members: usize) {
    loop {
        let d: ConsumerGroupDescribeResponse = watcher
            .call(
                ApiKey::ConsumerGroupDescribe,
                0,
                &ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s("kip848"))]),
            )
            .await;
        let g = &d.groups[0];
        if g.error_code == 0 && g.group_state.as_str() == "Stable" && g.members.len() == members {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn kip848_rebalance_over_wire(addr: &str, repeats: usize) -> Vec<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        tasks.push(tokio::spawn(kip848_member(addr.to_string(), stop.clone())));
    }
    let mut watcher = Conn::connect(addr).await;
    tokio::time::timeout(Duration::from_secs(60), kip848_settled(&mut watcher, 100))
        .await
        .expect("100 members settle");
    let mut times = Vec::new();
    for i in 0..repeats {
        let started = Instant::now();
        tasks.push(tokio::spawn(kip848_member(addr.to_string(), stop.clone())));
        tokio::time::timeout(
            Duration::from_secs(60),
            kip848_settled(&mut watcher, 101 + i),
        )
        .await
        .expect("group settles");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    times
}
