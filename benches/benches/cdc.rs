//! CDC ingest and the forwarder against a `chorus serve` process (release build), each as
//! a ratio to the raw produce rate of the same events measured in the same run:
//!
//! * raw: librdkafka produces the Debezium events (acks=all) to a plain topic; events/s
//!   until the last is acknowledged. The reference.
//! * CDC to WebSocket: the same events to a topic mapped by `[[chat.cdc]]`; events/s from
//!   the first produce until the last chat message arrives on its receiver's WebSocket.
//! * CDC + chat notifier (dedup on): the same again with every receiver offline, so each
//!   event also makes a chat notification and a durable dedup-store entry; events/s until
//!   the last notification is in the log.
//!
//! These two rows produce while the plugins work, so the producer (librdkafka, about as
//! much CPU per event as in the reference) shares the machine's cores with the server.
//! The third row measures the forwarder alone:
//!
//! * drained backlog: the offline events are produced to a topic no plugin reads, the
//!   server is stopped and a second one started on the same data directory with that
//!   topic mapped, and it works through the backlog (CDC, message, chat notification and
//!   dedup entry per event, as in the row before) with no client producing. Events/s from
//!   the moment a tenth of the notifications are in the log until all are, by their
//!   timestamps (the start-up before is not the forwarder's throughput); the server's CPU
//!   per event is over its whole life, start-up included. The timestamps are in
//!   milliseconds, so the row needs the default 50,000 events (a span of about 150 ms);
//!   with `CHORUS_BENCH_QUICK=1` the span is a few milliseconds and its rate means little.
//!
//! Goal: the forwarder at >= 0.5 of the raw produce rate.
//!
//! Run: `cargo bench -p chorus-benches --bench cdc` (`CHORUS_BENCH_QUICK=1` for fewer
//! events, `CHORUS_BENCH_EVENTS=N` for N events, e.g. a longer run to profile,
//! `CHORUS_BENCH_ONLY=websocket,notify,drain` to pick rows; the reference always runs).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_benches::{
    print_table, process_cpu_time, quick, wanted, ws_client_config, Chorus, Pushed,
};
use chorus_chat::auth::Verifier;
use futures_util::{SinkExt, StreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "bench-secret";
/// Receivers the events are spread over (one WebSocket each when online).
const RECEIVERS: usize = 200;
/// Partitions of every topic here (the chat topics' default).
const PARTITIONS: i32 = 8;

/// What a row measured: the events it counts, their wall time, and the (server, bench)
/// CPU times before and after.
struct Phase {
    events: usize,
    wall: Duration,
    /// The events the CPU times are spread over.
    cpu_events: usize,
    cpu0: (Duration, Duration),
    cpu1: (Duration, Duration),
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

/// A PostgreSQL-connector insert event, as the JSON converter writes it.
fn event(i: usize, receiver: &str) -> String {
    json!({
        "before": null,
        "after": {
            "id": i,
            "sender_id": format!("sender{}", i % 50),
            "receiver_id": receiver,
            "group_id": null,
            "content": format!("event {i}: a chat message of an ordinary length, written by a service"),
        },
        "source": {"version": "2.7.3.Final", "connector": "postgresql", "name": "pg", "ts_ms": 1732350000123u64,
                   "db": "app", "schema": "public", "table": "messages", "txId": 555, "lsn": 24023128},
        "op": "c",
        "ts_ms": 1732350000456u64,
        "transaction": null
    })
    .to_string()
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .set("broker.address.family", "v4")
        .create()
        .expect("producer")
}

/// Produces the events to `topic` (keyed by row id, as Debezium keys by primary key) and
/// returns when every one is acknowledged.
async fn produce_all(p: &FutureProducer, topic: &str, events: &[(String, String)]) {
    let sends = events.iter().map(|(key, value)| {
        p.send(
            FutureRecord::to(topic).key(key).payload(value),
            Duration::from_secs(60),
        )
    });
    for r in futures_util::future::join_all(sends).await {
        r.expect("produce");
    }
}

async fn create_topics(bootstrap: &str, topics: &[&str]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .expect("create topics");
}

/// Returns once the `notifications` topic holds `n` records (10 minutes at most).
async fn await_notifications(watcher: &BaseConsumer, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let got = records_in(watcher, "notifications");
        if got >= n {
            return;
        }
        assert!(Instant::now() < deadline, "only {got} of {n} notifications");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client for the partitions' watermarks.
fn watcher(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-watcher")
        .create()
        .expect("consumer")
}

/// Records in `topic` (sum of the partitions' high watermarks).
fn records_in(consumer: &BaseConsumer, topic: &str) -> i64 {
    (0..PARTITIONS)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .map_or(0, |(low, high)| high - low)
        })
        .sum()
}

fn token(user: &str) -> String {
    let exp = chorus_chat::now_ms() / 1000 + 3600;
    Verifier::new(SECRET.as_bytes()).sign(&json!({"sub": user, "exp": exp}))
}

async fn run() {
    let events_n = std::env::var("CHORUS_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if quick() { 5_000 } else { 50_000 });
    let dir = tempfile::tempdir().expect("config dir");
    let config = dir.path().join("chorus.toml");
    std::fs::write(
        &config,
        r#"
[[chat.cdc]]
topic = "pg.public.messages"
kind = "chat_message"
fields = { msg_id = "id", sender_id = "sender_id", receiver_id = "receiver_id", group_id = "group_id", content = "content" }

[[chat.cdc]]
topic = "pg.public.offline"
kind = "chat_message"
fields = { msg_id = "id", sender_id = "sender_id", receiver_id = "receiver_id", group_id = "group_id", content = "content" }
"#,
    )
    .expect("write config");
    let chorus = Chorus::start_with(&[
        "--jwt-secret",
        SECRET,
        "--config",
        config.to_str().expect("utf-8 path"),
        "--group-initial-rebalance-delay-ms",
        "0",
    ]);
    create_topics(&chorus.bootstrap, &["bench.raw"]).await;
    let p = producer(&chorus.bootstrap);
    let watcher = watcher(&chorus.bootstrap);

    let online: Vec<(String, String)> = (0..events_n)
        .map(|i| (i.to_string(), event(i, &format!("user{}", i % RECEIVERS))))
        .collect();
    // Offline receivers: a new conversation per event, so each one notifies.
    let offline: Vec<(String, String)> = (0..events_n)
        .map(|i| (i.to_string(), event(events_n + i, &format!("away{i}"))))
        .collect();

    // Warm-up: connections, metadata, the plugin groups' first assignment.
    produce_all(&p, "bench.raw", &online[..100]).await;

    let me = std::process::id();
    let cpu = || (chorus.cpu_time(), process_cpu_time(me));
    let cpu0 = cpu();
    let start = Instant::now();
    produce_all(&p, "bench.raw", &online).await;
    let raw = Phase {
        events: events_n,
        wall: start.elapsed(),
        cpu_events: events_n,
        cpu0,
        cpu1: cpu(),
    };
    let raw_rate = raw.events as f64 / raw.wall.as_secs_f64();

    let mut rows = vec![("raw produce, acks=all (reference)", raw)];
    if wanted("websocket") {
        let phase = websocket(&chorus, &p, &online, cpu).await;
        rows.push(("CDC -> chat message -> WebSocket", phase));
    }
    if wanted("notify") {
        let before = records_in(&watcher, "notifications");
        let cpu0 = cpu();
        let start = Instant::now();
        produce_all(&p, "pg.public.offline", &offline).await;
        await_notifications(&watcher, before + events_n as i64).await;
        rows.push((
            "CDC -> message + chat notification + dedup entry",
            Phase {
                events: events_n,
                wall: start.elapsed(),
                cpu_events: events_n,
                cpu0,
                cpu1: cpu(),
            },
        ));
    }
    drop(watcher);
    drop(p);
    drop(chorus);
    if wanted("drain") {
        let phase = drain(&offline).await;
        rows.push(("forwarder alone: drained backlog (as above)", phase));
    }

    // CPU per event of the server and of this process (the producer, the WebSocket
    // clients and the polling), from the same phase.
    let per_event = |events: usize, a: Duration, b: Duration| {
        format!(
            "{:.1}",
            b.saturating_sub(a).as_secs_f64() * 1e6 / events as f64
        )
    };
    let row = |name: &str, phase: Phase| {
        let rate = phase.events as f64 / phase.wall.as_secs_f64();
        vec![
            name.to_string(),
            phase.events.to_string(),
            format!("{rate:.0}"),
            format!("{:.2}", rate / raw_rate),
            per_event(phase.cpu_events, phase.cpu0.0, phase.cpu1.0),
            per_event(phase.cpu_events, phase.cpu0.1, phase.cpu1.1),
        ]
    };
    print_table(
        "CDC ingest and forwarding (Debezium PostgreSQL events, ~500 B)",
        &[
            "path",
            "events",
            "events/s",
            "vs raw produce",
            "server CPU µs/event",
            "bench CPU µs/event",
        ],
        &rows
            .into_iter()
            .map(|(name, phase)| row(name, phase))
            .collect::<Vec<_>>(),
    );
}

/// The WebSocket row: every receiver online, one connection each; the events' messages
/// counted as they arrive (and acked, as a chat client does).
async fn websocket(
    chorus: &Chorus,
    p: &FutureProducer,
    events: &[(String, String)],
    cpu: impl Fn() -> (Duration, Duration),
) -> Phase {
    let http: SocketAddr = chorus.http.parse().expect("http address");
    let received = Arc::new(AtomicUsize::new(0));
    for r in 0..RECEIVERS {
        let stream = TcpStream::connect(http).await.expect("connect");
        let url = format!("ws://{http}/ws?token={}", token(&format!("user{r}")));
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(ws_client_config()))
                .await
                .expect("websocket");
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(Ok(Message::Text(text))) = ws.next().await {
                let Ok(pushed) = Pushed::parse(text.as_str()) else {
                    continue;
                };
                if pushed.kind == "message" {
                    received.fetch_add(1, Ordering::Relaxed);
                    if ws.send(Message::text(pushed.ack())).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    let cpu0 = cpu();
    let start = Instant::now();
    produce_all(p, "pg.public.messages", events).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while received.load(Ordering::Relaxed) < events.len() {
        assert!(
            Instant::now() < deadline,
            "only {} of {} messages arrived",
            received.load(Ordering::Relaxed),
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Phase {
        events: events.len(),
        wall: start.elapsed(),
        cpu_events: events.len(),
        cpu0,
        cpu1: cpu(),
    }
}

/// The drained-backlog row (see the top of the file). The events go to a server of their
/// own, which is then stopped; the one started after it on the same data directory maps
/// their topic and finds them all waiting.
async fn drain(events: &[(String, String)]) -> Phase {
    const TOPIC: &str = "pg.public.backlog";
    let dir = tempfile::tempdir().expect("data dir");
    let configs = tempfile::tempdir().expect("config dir");
    let unmapped = configs.path().join("unmapped.toml");
    let mapped = configs.path().join("mapped.toml");
    std::fs::write(&unmapped, "").expect("write config");
    std::fs::write(
        &mapped,
        format!(
            r#"
[[chat.cdc]]
topic = "{TOPIC}"
kind = "chat_message"
fields = {{ msg_id = "id", sender_id = "sender_id", receiver_id = "receiver_id", group_id = "group_id", content = "content" }}
"#
        ),
    )
    .expect("write config");
    let start = |config: &std::path::Path| {
        let config = config.to_str().expect("utf-8 path");
        Chorus::start_in(
            dir.path(),
            &[
                "--jwt-secret",
                SECRET,
                "--config",
                config,
                "--group-initial-rebalance-delay-ms",
                "0",
            ],
        )
    };

    let filler = start(&unmapped);
    create_topics(&filler.bootstrap, &[TOPIC]).await;
    let p = producer(&filler.bootstrap);
    produce_all(&p, TOPIC, events).await;
    drop(p);
    filler.stop();
    let bench_cpu0 = process_cpu_time(std::process::id());

    let chorus = start(&mapped);
    let watcher = watcher(&chorus.bootstrap);
    let total = events.len();
    await_notifications(&watcher, total as i64).await;
    // CPU over the server's whole life, start-up included.
    let cpu1 = (chorus.cpu_time(), process_cpu_time(std::process::id()));
    // The span by the server's own clock (the notifications' timestamps): polling from
    // here would see the first of them late, after librdkafka's start-up.
    let stamps = notification_times(&chorus.bootstrap, total);
    let from = stamps[total / 10];
    let to = stamps[total - 1];
    Phase {
        events: total - total / 10,
        wall: Duration::from_millis((to - from).max(1) as u64),
        cpu_events: total,
        cpu0: (Duration::ZERO, bench_cpu0),
        cpu1,
    }
}

/// The timestamps of the first `n` notifications (the time each was written), sorted.
fn notification_times(bootstrap: &str, n: usize) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-timestamps")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut partitions = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        partitions
            .add_partition_offset("notifications", p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&partitions).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut stamps = Vec::with_capacity(n);
    while stamps.len() < n {
        assert!(
            Instant::now() < deadline,
            "read {} of {n} notifications",
            stamps.len()
        );
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("consume notifications");
            stamps.push(m.timestamp().to_millis().expect("timestamped"));
        }
    }
    stamps.sort_unstable();
    stamps
}
