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
//! Goal: the forwarder at >= 0.5 of the raw produce rate.
//!
//! Run: `cargo bench -p chorus-benches --bench cdc` (`CHORUS_BENCH_QUICK=1` for fewer
//! events, `CHORUS_BENCH_EVENTS=N` for N events, e.g. a longer run to profile,
//! `CHORUS_BENCH_ONLY=websocket,notify` to pick rows; the reference always runs).

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
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "bench-secret";
/// Receivers the events are spread over (one WebSocket each when online).
const RECEIVERS: usize = 200;
/// Partitions of every topic here (the chat topics' default).
const PARTITIONS: i32 = 8;

/// A phase's wall time and the (server, bench) CPU times before and after it.
type Phase = (Duration, (Duration, Duration), (Duration, Duration));

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
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &chorus.bootstrap)
        .set("group.id", "bench-watcher")
        .create()
        .expect("consumer");

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
    let raw = (start.elapsed(), cpu0, cpu());

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
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let got = records_in(&watcher, "notifications") - before;
            if got >= events_n as i64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {got} of {events_n} notifications"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        rows.push((
            "CDC -> message + chat notification + dedup entry",
            (start.elapsed(), cpu0, cpu()),
        ));
    }

    let rate = |d: Duration| events_n as f64 / d.as_secs_f64();
    // CPU per event of the server and of this process (the producer, the WebSocket
    // clients and the polling), from the same phase.
    let per_event = |a: Duration, b: Duration| {
        format!(
            "{:.1}",
            b.saturating_sub(a).as_secs_f64() * 1e6 / events_n as f64
        )
    };
    let row = |name: &str, (d, (server0, me0), (server1, me1)): Phase| {
        vec![
            name.to_string(),
            events_n.to_string(),
            format!("{:.0}", rate(d)),
            format!("{:.2}", rate(d) / rate(raw.0)),
            per_event(server0, server1),
            per_event(me0, me1),
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
    (start.elapsed(), cpu0, cpu())
}
