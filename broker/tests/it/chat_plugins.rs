//! The chat plugins on a real server: CDC ingest of Debezium-shaped events produced with
//! librdkafka, the chat notifier, and the forwarder's retries, dead letters, dedup and
//! commits (driven through a target whose deliveries fail on purpose).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_chat::cdc::{CdcMapping, Kind};
use chorus_chat::forward::dedup::DedupStore;
use chorus_chat::forward::dlq::{self, DeadLetters};
use chorus_chat::forward::{self, Failure, Outcome, Plan, RetryPolicy, Shared, Target};
use chorus_chat::log::{BoxFuture, Consumed, Log, StartFrom};
use chorus_chat::plugins::PluginsConfig;
use rdkafka::message::{Header as KafkaHeader, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

use crate::chat_ws::{
    connect, expect, http_addr, jwt, next_frame, send, service_jwt, test_chat_config, Client,
};
use crate::common::{consume, http_request, rdkafka_config, within, TestBroker};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../chat-plugins/fixtures/debezium/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        retries: 3,
        initial_backoff_ms: 50,
        multiplier: 2.0,
        max_backoff_ms: 1000,
    }
}

/// Three sources: PostgreSQL messages (ids from the row), MongoDB messages, and an outbox
/// of purchases becoming notifications.
fn cdc_plugins() -> PluginsConfig {
    let message_fields = [
        ("sender_id", "sender_id"),
        ("receiver_id", "receiver_id"),
        ("group_id", "group_id"),
        ("content", "content"),
    ];
    let mut pg = message_fields.to_vec();
    pg.push(("msg_id", "id"));
    let mut mongo = message_fields.to_vec();
    mongo.push(("msg_id", "_id"));
    PluginsConfig {
        cdc: vec![
            CdcMapping {
                topic: "pg.public.messages".into(),
                kind: Kind::ChatMessage,
                fields: fields(&pg),
                table: Some("messages".into()),
                notification_type: None,
                enabled: true,
                retry: None,
            },
            CdcMapping {
                topic: "mongo.app.messages".into(),
                kind: Kind::ChatMessage,
                fields: fields(&mongo),
                table: None,
                notification_type: None,
                enabled: true,
                retry: None,
            },
            CdcMapping {
                topic: "outbox.event.order".into(),
                kind: Kind::Notification,
                fields: fields(&[("user_id", "user_id")]),
                table: None,
                notification_type: Some("purchase".into()),
                enabled: true,
                retry: None,
            },
        ],
        retry: fast_retries(),
        ..PluginsConfig::default()
    }
}

async fn plugin_broker(plugins: PluginsConfig) -> TestBroker {
    let chat = test_chat_config();
    TestBroker::start_with(move |c| {
        c.chat_enabled = true;
        c.chat_config = Some(chat);
        c.chat_plugins = plugins;
    })
    .await
}

fn producer(broker: &TestBroker) -> FutureProducer {
    rdkafka_config(&broker.bootstrap())
        .set("linger.ms", "0")
        .create()
        .unwrap()
}

/// Produces one event to partition 0, as a connector would.
async fn produce(
    p: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    value: Option<&[u8]>,
    headers: &[(&str, &str)],
) {
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(KafkaHeader {
            key: k,
            value: Some(*v),
        });
    }
    let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).partition(0).headers(h);
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(v) = value {
        record = record.payload(v);
    }
    p.send(record, Duration::from_secs(10))
        .await
        .expect("produce");
}

/// Produces one event to the PostgreSQL messages topic, without headers.
async fn produce_pg(p: &FutureProducer, key: Option<&str>, value: Option<&[u8]>) {
    produce(p, "pg.public.messages", key, value, &[]).await;
}

/// The test broker's log, in process, as the chat plugins see it.
fn embedded_log(broker: &TestBroker) -> Arc<dyn Log> {
    Arc::new(chorus_broker::embedded::EmbeddedLog::new(
        broker.server.as_ref().unwrap().broker.clone(),
    ))
}

/// The test broker's log with a one-partition topic `jobs` for forwarder tests.
async fn jobs_log(broker: &TestBroker) -> Arc<dyn Log> {
    let log = embedded_log(broker);
    log.ensure_topic(&chorus_chat::log::TopicSpec {
        name: "jobs".into(),
        partitions: 1,
        configs: vec![],
    })
    .await
    .unwrap();
    log
}

/// Records in `topic` (8 partitions), straight from the broker's log.
async fn records_in(broker: &TestBroker, topic: &str) -> i64 {
    let log = embedded_log(broker);
    let mut total = 0;
    for p in 0..8 {
        let (start, end) = log.offsets(topic, p).await.unwrap();
        total += end - start;
    }
    total
}

/// The contents of a stream's history, in order (the first page).
async fn history(broker: &TestBroker, user: &str, other: &str) -> Vec<(u64, String)> {
    history_page(broker, user, other, 100).await
}

/// The first `limit` messages of a stream's history, in order.
async fn history_page(
    broker: &TestBroker,
    user: &str,
    other: &str,
    limit: usize,
) -> Vec<(u64, String)> {
    let stream = chorus_chat::ids::stream_id(user, other);
    let (status, body) = http_request(
        http_addr(broker),
        "GET",
        &format!("/chat/messages?stream_id={stream}&limit={limit}"),
        Some(&format!("Bearer {}", jwt(user))),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["sequence_number"].as_u64().unwrap(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The next `message` frame's content (acked, so it is not redelivered).
async fn next_message(ws: &mut Client) -> String {
    let m = expect(ws, "message").await;
    send(ws, json!({"type": "ack", "msg_id": m["msg_id"]})).await;
    m["content"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debezium_events_of_every_form_become_messages_and_notifications_once() {
    let broker = plugin_broker(cdc_plugins()).await;
    let mut alice = connect(&broker, "alice").await;
    let mut bob = connect(&broker, "bob").await;
    let p = producer(&broker);

    // PostgreSQL insert (no schemas), with an update, a delete and a tombstone after it.
    produce_pg(&p, Some("{\"id\":1001}"), Some(&fixture("pg_insert.json"))).await;
    assert_eq!(next_message(&mut bob).await, "hello from postgres");
    assert_eq!(next_message(&mut alice).await, "hello from postgres");
    for name in ["pg_update.json", "pg_delete.json"] {
        produce_pg(&p, Some("{\"id\":1001}"), Some(&fixture(name))).await;
    }
    produce_pg(&p, Some("{\"id\":1001}"), None).await;
    // The flattened form, and the same insert delivered a second time (a connector
    // restarting re-sends what it had not committed).
    produce_pg(&p, None, Some(&fixture("flattened.json"))).await;
    produce_pg(&p, Some("{\"id\":1001}"), Some(&fixture("pg_insert.json"))).await;
    assert_eq!(next_message(&mut bob).await, "flattened row");
    // MongoDB: `after` is extended JSON text. (Another topic, so another consumer: wait
    // for the one above first to know the order.)
    produce(
        &p,
        "mongo.app.messages",
        None,
        Some(&fixture("mongo_insert.json")),
        &[],
    )
    .await;
    assert_eq!(next_message(&mut bob).await, "hello from mongo");
    // The outbox router: payload as a JSON string, key = aggregate id, header id = event id;
    // the same event twice makes one notification.
    for _ in 0..2 {
        produce(
            &p,
            "outbox.event.order",
            Some("\"7\""),
            Some(&fixture("outbox_string.json")),
            &[("id", "4d47e190-0402-4048-bc2c-89dd54343cdc")],
        )
        .await;
    }
    produce(
        &p,
        "outbox.event.order",
        Some("8"),
        Some(&fixture("outbox_expanded.json")),
        &[("id", "e-8")],
    )
    .await;
    let n = expect(&mut bob, "notification").await;
    assert_eq!(n["notification_type"], "purchase");
    assert_eq!(n["payload"]["order_id"], 7);
    let n = expect(&mut bob, "notification").await;
    assert_eq!(
        n["payload"]["carrier"], "DHL",
        "the repeated event notified twice"
    );

    // One message per source row, in order, without the repeat, the update or the delete.
    assert_eq!(
        history(&broker, "alice", "bob").await,
        [
            (1, "hello from postgres".to_string()),
            (2, "flattened row".to_string()),
            (3, "hello from mongo".to_string())
        ]
    );
    assert_eq!(
        history(&broker, "bob", "alice").await.len(),
        3,
        "the same stream either way round"
    );
    assert_eq!(records_in(&broker, "notifications").await, 2);
    assert!(
        next_frame(&mut bob, 300)
            .await
            .is_none_or(|f| f["type"] != "notification"),
        "a third notification arrived"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_are_dead_lettered_with_the_reason_and_ingest_goes_on() {
    let broker = plugin_broker(cdc_plugins()).await;
    let mut bob = connect(&broker, "bob").await;
    let p = producer(&broker);
    let bad: [(&[u8], &str); 4] = [
        (b"this is not json", "not JSON"),
        (
            br#"{"op":"c","after":{"id":5,"receiver_id":"bob","content":"x"}}"#,
            "sender_id",
        ),
        (
            br#"{"op":"c","after":{"id":6,"sender_id":"alice","content":"x"}}"#,
            "neither a receiver nor a group",
        ),
        (br#"{"op":"z","after":{}}"#, "unknown op"),
    ];
    for (value, _) in &bad {
        produce(
            &p,
            "pg.public.messages",
            Some("k"),
            Some(value),
            &[("traceparent", "00-abc")],
        )
        .await;
    }
    // A group message from a non-member is refused by the write path, not by the parser.
    let (status, _) = http_request(
        http_addr(&broker),
        "POST",
        "/groups/team/members",
        Some(&format!("Bearer {}", service_jwt())),
        Some(br#"{"user_id":"alice"}"#),
    )
    .await;
    assert_eq!(status, 201);
    produce_pg(
        &p,
        None,
        Some(
            br#"{"op":"c","after":{"id":7,"sender_id":"mallory","group_id":"team","content":"x"}}"#,
        ),
    )
    .await;
    produce_pg(&p, None, Some(&fixture("pg_insert.json"))).await;
    assert_eq!(next_message(&mut bob).await, "hello from postgres");

    let letters = dead_letters(&broker, 5).await;
    let mut by_offset: Vec<_> = letters
        .iter()
        .map(|m| {
            (
                header(m, dlq::SOURCE_OFFSET).parse::<i64>().unwrap(),
                header(m, dlq::REASON),
                m.payload().map(<[u8]>::to_vec),
            )
        })
        .collect();
    by_offset.sort();
    for (i, ((offset, reason, payload), (value, expected))) in
        by_offset.iter().zip(&bad).enumerate()
    {
        assert_eq!(*offset, i as i64);
        assert!(
            reason.contains(expected),
            "{reason:?} should mention {expected:?}"
        );
        assert_eq!(
            payload.as_deref(),
            Some(*value),
            "the event is kept as it came"
        );
    }
    assert!(by_offset[4].1.contains("FORBIDDEN"), "{}", by_offset[4].1);
    let first = letters
        .iter()
        .find(|m| header(m, dlq::SOURCE_OFFSET) == "0")
        .unwrap();
    assert_eq!(header(first, dlq::TARGET), "cdc.pg.public.messages");
    assert_eq!(header(first, dlq::SOURCE_TOPIC), "pg.public.messages");
    assert_eq!(
        header(first, "traceparent"),
        "00-abc",
        "the original headers are kept"
    );
    assert_eq!(first.key(), Some(&b"k"[..]));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_for_one_conversation_keeps_source_order_and_a_bad_event_in_it_is_dead_lettered() {
    let broker = plugin_broker(cdc_plugins()).await;
    let p = producer(&broker);
    // Sent without waiting for each other: the forwarder sees them queued behind one key
    // and hands them to the write path together.
    let events: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| {
            // One too large in the middle: refused by the write path, while the rest
            // go on around it.
            let content = if i == 100 {
                "x".repeat(11 << 10)
            } else {
                format!("burst {i}")
            };
            let value = json!({
                "before": null,
                "after": {"id": 5000 + i, "sender_id": "alice", "receiver_id": "bob", "group_id": null, "content": content},
                "source": {"connector": "postgresql", "table": "messages"},
                "op": "c",
            });
            (format!("{{\"id\":{}}}", 5000 + i), value.to_string().into_bytes())
        })
        .collect();
    let sends = events.iter().map(|(key, value)| {
        p.send(
            FutureRecord::<str, [u8]>::to("pg.public.messages")
                .partition(0)
                .key(key)
                .payload(value),
            Duration::from_secs(10),
        )
    });
    for sent in futures_util::future::join_all(sends).await {
        sent.expect("produce");
    }
    let got = within(20, async {
        loop {
            let h = history_page(&broker, "alice", "bob", 1000).await;
            if h.len() >= 199 {
                break h;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let expected: Vec<(u64, String)> = (0..200)
        .filter(|i| *i != 100)
        .enumerate()
        .map(|(n, i)| (n as u64 + 1, format!("burst {i}")))
        .collect();
    assert_eq!(got, expected, "source order, sequence numbers without gaps");
    let letters = dead_letters(&broker, 1).await;
    let reason = header(&letters[0], dlq::REASON);
    assert!(reason.contains("MESSAGE_TOO_LARGE"), "{reason}");
    broker.stop().await;
}

/// The first `count` records of the dead-letter topic (all 8 partitions), within 10 s.
async fn dead_letters(broker: &TestBroker, count: usize) -> Vec<rdkafka::message::OwnedMessage> {
    consume(
        &broker.bootstrap(),
        "chat.dlq",
        &(0..8).collect::<Vec<_>>(),
        count,
        10,
    )
    .await
}

/// A header of a dead letter, as text; panics when it is missing.
fn header(m: &rdkafka::message::OwnedMessage, name: &str) -> String {
    let h = m.headers().expect("headers");
    (0..h.count())
        .map(|i| h.get(i))
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// A target that delivers several jobs at once, as the CDC target does, failing the jobs
/// a test names: per job, how many times it fails before it succeeds (`u32::MAX`: always,
/// as a permanent failure).
#[derive(Debug, Default)]
struct Batched {
    failures: Mutex<BTreeMap<String, u32>>,
    /// The jobs of each `deliver_all` call.
    calls: Mutex<Vec<Vec<String>>>,
    delivered: Mutex<Vec<String>>,
}

impl Target for Batched {
    type Job = String;

    fn name(&self) -> &str {
        "batched"
    }

    fn topics(&self) -> Vec<String> {
        vec!["jobs".into()]
    }

    fn start_from(&self) -> StartFrom {
        StartFrom::Earliest
    }

    fn plan(&self, record: &Consumed) -> Plan<String> {
        let job = value_text(record);
        Plan::Deliver {
            order_key: "one key".into(),
            dedup: None,
            job,
        }
    }

    fn deliver<'a>(&'a self, _job: &'a String) -> BoxFuture<'a, Result<Outcome, Failure>> {
        Box::pin(async { panic!("a batchable job goes through deliver_all") })
    }

    fn deliver_all<'a>(
        &'a self,
        jobs: &'a [&'a String],
    ) -> BoxFuture<'a, (Vec<Outcome>, Option<Failure>)> {
        Box::pin(async move {
            self.calls
                .lock()
                .unwrap()
                .push(jobs.iter().map(|j| j.to_string()).collect());
            if jobs[0] == "job 1" {
                // Slow, so the rest queue up behind it meanwhile.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            deliver_listed(&self.failures, &self.delivered, jobs)
        })
    }
}

/// Delivers `jobs` in order into `delivered`, stopping at the first that `failures` says
/// fails (and counting its failures down).
fn deliver_listed(
    failures: &Mutex<BTreeMap<String, u32>>,
    delivered: &Mutex<Vec<String>>,
    jobs: &[&String],
) -> (Vec<Outcome>, Option<Failure>) {
    let mut outcomes = Vec::new();
    for job in jobs {
        let mut failures = failures.lock().unwrap();
        match failures.get_mut(job.as_str()) {
            Some(&mut u32::MAX) => {
                return (outcomes, Some(Failure::Permanent(format!("{job} is bad"))))
            }
            Some(left) if *left > 0 => {
                *left -= 1;
                return (outcomes, Some(Failure::Retry(format!("{job} failed"))));
            }
            _ => {}
        }
        delivered.lock().unwrap().push(job.to_string());
        outcomes.push(Outcome::Delivered);
    }
    (outcomes, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_of_a_key_are_delivered_together_in_order_with_retries_and_dead_letters() {
    let broker = TestBroker::start().await;
    let log = jobs_log(&broker).await;
    let target = Arc::new(Batched {
        failures: Mutex::new([("job 4".to_string(), 2), ("job 6".to_string(), u32::MAX)].into()),
        ..Batched::default()
    });
    let running = forward::start(target.clone(), shared(log.clone()).await, fast_retries());
    let jobs: Vec<String> = (1..=10).map(|i| format!("job {i}")).collect();
    let refs: Vec<&str> = jobs.iter().map(String::as_str).collect();
    append(log.as_ref(), "jobs", &refs).await;
    within(10, async {
        while committed(&broker, "chorus.batched", "jobs").await != Some(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let delivered = target.delivered.lock().unwrap().clone();
    let expected: Vec<String> = jobs.iter().filter(|j| *j != "job 6").cloned().collect();
    assert_eq!(
        delivered, expected,
        "each once, in order, around the bad one"
    );
    // Jobs 2..10 queued behind job 1 and went together. After a failure the next call
    // starts at the job that failed (job 4, twice); a permanent failure (job 6) is
    // dead-lettered at once and the call after it starts at job 7.
    let calls = target.calls.lock().unwrap().clone();
    let from = |i: usize| jobs[i - 1..].to_vec();
    assert_eq!(
        calls,
        [vec![jobs[0].clone()], from(2), from(4), from(4), from(7)]
    );
    assert_eq!(running.metrics.delivered.load(Ordering::Relaxed), 9);
    assert_eq!(running.metrics.retries.load(Ordering::Relaxed), 2);
    assert_eq!(running.metrics.dead_lettered.load(Ordering::Relaxed), 1);
    let letters = log
        .read("test.dlq", 0, 0, 1 << 20, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].record.value.as_deref(), Some(&b"job 6"[..]));
    running.stop(Duration::from_secs(5)).await;
    broker.stop().await;
}

/// A target that takes the jobs of several keys at once, as the chat notifier and CDC do
/// (`key:n` jobs, ordered by key), failing the jobs a test names as [`Batched`] does.
#[derive(Debug, Default)]
struct Rounds {
    failures: Mutex<BTreeMap<String, u32>>,
    /// The runs of each `deliver_runs` call.
    rounds: Mutex<Vec<Vec<Vec<String>>>>,
    /// The jobs of each `deliver_all` call (a key on its own, retrying).
    alone: Mutex<Vec<Vec<String>>>,
    delivered: Mutex<Vec<String>>,
}

impl Rounds {
    fn run(&self, jobs: &[&String]) -> (Vec<Outcome>, Option<Failure>) {
        deliver_listed(&self.failures, &self.delivered, jobs)
    }
}

/// A test record's value as text (the job of the test targets).
fn value_text(record: &Consumed) -> String {
    String::from_utf8_lossy(record.record.value.as_deref().unwrap_or_default()).into_owned()
}

fn strings(jobs: &[&String]) -> Vec<String> {
    jobs.iter().map(|j| j.to_string()).collect()
}

impl Target for Rounds {
    type Job = String;

    fn name(&self) -> &str {
        "rounds"
    }

    fn topics(&self) -> Vec<String> {
        vec!["jobs".into()]
    }

    fn start_from(&self) -> StartFrom {
        StartFrom::Earliest
    }

    fn plan(&self, record: &Consumed) -> Plan<String> {
        let job = value_text(record);
        Plan::Deliver {
            order_key: job.split(':').next().unwrap_or_default().to_string(),
            dedup: None,
            job,
        }
    }

    fn deliver<'a>(&'a self, _job: &'a String) -> BoxFuture<'a, Result<Outcome, Failure>> {
        Box::pin(async { panic!("a batchable job goes through deliver_all or deliver_runs") })
    }

    fn deliver_all<'a>(
        &'a self,
        jobs: &'a [&'a String],
    ) -> BoxFuture<'a, (Vec<Outcome>, Option<Failure>)> {
        Box::pin(async move {
            self.alone.lock().unwrap().push(strings(jobs));
            self.run(jobs)
        })
    }

    fn delivers_runs(&self) -> bool {
        true
    }

    fn deliver_runs<'a>(
        &'a self,
        runs: &'a [Vec<&'a String>],
    ) -> BoxFuture<'a, forward::RunAnswers> {
        Box::pin(async move {
            let seen = runs.iter().map(|r| strings(r)).collect();
            self.rounds.lock().unwrap().push(seen);
            runs.iter().map(|r| self.run(r)).collect()
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_delivered_together_in_rounds_and_a_failing_key_leaves_its_round() {
    let broker = TestBroker::start().await;
    let log = jobs_log(&broker).await;
    let target = Arc::new(Rounds {
        failures: Mutex::new([("b:1".to_string(), 2), ("c:2".to_string(), u32::MAX)].into()),
        ..Rounds::default()
    });
    let running = forward::start(target.clone(), shared(log.clone()).await, fast_retries());
    append(
        log.as_ref(),
        "jobs",
        &["a:1", "b:1", "c:1", "a:2", "b:2", "c:2"],
    )
    .await;
    within(10, async {
        while committed(&broker, "chorus.rounds", "jobs").await != Some(6) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let run = |jobs: &[&str]| jobs.iter().map(|j| j.to_string()).collect::<Vec<_>>();
    // The three keys went in one call; their second jobs, queued meanwhile, in the next
    // (without b, which failed and went on by itself).
    assert_eq!(
        target.rounds.lock().unwrap().clone(),
        [
            vec![run(&["a:1"]), run(&["b:1"]), run(&["c:1"])],
            vec![run(&["a:2"]), run(&["c:2"])],
        ]
    );
    // b retried alone after its backoff (twice, the second try succeeding), then took its
    // next job; c:2's permanent failure was dead-lettered without another try.
    assert_eq!(
        target.alone.lock().unwrap().clone(),
        [run(&["b:1"]), run(&["b:1"]), run(&["b:2"])]
    );
    assert_eq!(
        target.delivered.lock().unwrap().clone(),
        run(&["a:1", "c:1", "a:2", "b:1", "b:2"]),
        "b held up no other key, and each key stayed in order"
    );
    assert_eq!(running.metrics.delivered.load(Ordering::Relaxed), 5);
    assert_eq!(running.metrics.retries.load(Ordering::Relaxed), 2);
    assert_eq!(running.metrics.dead_lettered.load(Ordering::Relaxed), 1);
    let letters = log
        .read("test.dlq", 0, 0, 1 << 20, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].record.value.as_deref(), Some(&b"c:2"[..]));
    running.stop(Duration::from_secs(5)).await;
    broker.stop().await;
}

/// The committed offset of `group` on partition 0 of `topic`, from the HTTP admin API.
async fn committed(broker: &TestBroker, group: &str, topic: &str) -> Option<i64> {
    let (status, body) = http_request(
        http_addr(broker),
        "GET",
        &format!("/consumer-groups/{group}/assignments"),
        None,
        None,
    )
    .await;
    if status != 200 {
        return None;
    }
    body["partitions"]
        .as_array()?
        .iter()
        .find(|o| o["topic"] == topic && o["partition"] == 0)
        .and_then(|o| o["committed_offset"].as_i64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_offsets_are_committed_once_the_output_is_durable_and_survive_a_restart() {
    let mut broker = plugin_broker(cdc_plugins()).await;
    let p = producer(&broker);
    let row = |id: u32, content: &str| {
        json!({"op": "c", "after": {"id": id, "sender_id": "alice", "receiver_id": "bob", "content": content}})
            .to_string()
    };
    for i in 0..5 {
        produce_pg(&p, None, Some(row(i, &format!("m{i}")).as_bytes())).await;
    }
    let group = "chorus.cdc.pg.public.messages";
    within(10, async {
        while committed(&broker, group, "pg.public.messages").await != Some(5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(history(&broker, "alice", "bob").await.len(), 5);
    drop(p);
    broker.restart().await;
    let p = producer(&broker);
    // Events 3 and 4 again (a connector replaying), then a new one.
    for i in 3..6 {
        produce_pg(&p, None, Some(row(i, &format!("m{i}")).as_bytes())).await;
    }
    within(30, async {
        while committed(&broker, group, "pg.public.messages").await != Some(8) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let got = history(&broker, "alice", "bob").await;
    let expected: Vec<(u64, String)> = (0..6).map(|i| (i as u64 + 1, format!("m{i}"))).collect();
    assert_eq!(
        got, expected,
        "nothing ingested twice, nothing lost, across a restart"
    );
    broker.stop().await;
}

/// `from` sends `to` a message over HTTP.
async fn post(broker: &TestBroker, from: &str, to: &str, id: &str) {
    let body = json!({"msg_id": id, "sender_id": from, "receiver_id": to, "content": format!("{id} from {from}")});
    let (status, _) = http_request(
        http_addr(broker),
        "POST",
        "/chat/messages",
        Some(&format!("Bearer {}", jwt(from))),
        Some(&serde_json::to_vec(&body).unwrap()),
    )
    .await;
    assert_eq!(status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_not_receiving_a_conversation_are_notified_once_per_conversation() {
    let mut broker = plugin_broker(PluginsConfig::default()).await;
    // Bob is offline: three messages from alice make one notification for bob.
    for i in 0..3 {
        post(&broker, "alice", "bob", &format!("a{i}")).await;
    }
    // Carol is online and receives the conversation: no notification for her.
    let mut carol = connect(&broker, "carol").await;
    post(&broker, "alice", "carol", "c0").await;
    assert_eq!(next_message(&mut carol).await, "c0 from alice");
    // Dave is online but unsubscribed from his stream with alice: notified, on his socket.
    let mut dave = connect(&broker, "dave").await;
    let stream = chorus_chat::ids::stream_id("alice", "dave");
    send(
        &mut dave,
        json!({"type": "unsubscribe", "stream_id": stream}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    post(&broker, "alice", "dave", "d0").await;
    let n = expect(&mut dave, "notification").await;
    assert_eq!(n["notification_type"], "chat");
    assert_eq!(n["payload"]["sender_id"], "alice");
    assert_eq!(n["payload"]["stream_id"], &*stream);
    assert_eq!(n["payload"]["preview"], "d0 from alice");

    let all: Vec<i32> = (0..8).collect();
    let read = |bootstrap: String| async move {
        let got = consume(&bootstrap, "notifications", &all, 2, 10).await;
        let mut users: Vec<String> = got
            .iter()
            .map(|m| {
                let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                v["user_id"].as_str().unwrap().to_string()
            })
            .collect();
        users.sort();
        users
    };
    assert_eq!(read(broker.bootstrap()).await, ["bob", "dave"]);
    // The dedup store is a compacted topic: after a restart, more messages to bob in the
    // same conversation still do not notify him again.
    broker.restart().await;
    post(&broker, "alice", "bob", "a3").await;
    post(&broker, "erin", "bob", "e0").await;
    // After a restart the notifier rejoins its group, which can take until the previous
    // member's session times out if it could not leave in time.
    let got = consume(
        &broker.bootstrap(),
        "notifications",
        &(0..8).collect::<Vec<_>>(),
        3,
        30,
    )
    .await;
    let last: Value = serde_json::from_slice(got[2].payload().unwrap()).unwrap();
    assert_eq!(
        last["payload"]["sender_id"], "erin",
        "a new conversation notifies"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        records_in(&broker, "notifications").await,
        3,
        "bob was notified again after the restart"
    );
    broker.stop().await;
}

/// A target whose deliveries fail as a test says: per order key, the number of failures
/// before it succeeds (or always, for `Failure::Permanent`).
#[derive(Debug)]
struct Flaky {
    name: String,
    topic: String,
    failures: Mutex<BTreeMap<String, u32>>,
    attempts: Mutex<Vec<(String, Instant)>>,
    delivered: Mutex<Vec<String>>,
    calls: AtomicU32,
}

impl Target for Flaky {
    type Job = String;

    fn name(&self) -> &str {
        &self.name
    }

    fn topics(&self) -> Vec<String> {
        vec![self.topic.clone()]
    }

    fn start_from(&self) -> StartFrom {
        StartFrom::Earliest
    }

    fn plan(&self, record: &Consumed) -> Plan<String> {
        let value = value_text(record);
        if value == "garbage" {
            return Plan::Reject("cannot read it".into());
        }
        let (key, _) = value.split_once(':').unwrap_or((&value, ""));
        Plan::Deliver {
            order_key: key.to_string(),
            dedup: Some((value.clone(), Duration::from_secs(300))),
            job: value,
        }
    }

    fn deliver<'a>(&'a self, job: &'a String) -> BoxFuture<'a, Result<Outcome, Failure>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let key = job
                .split_once(':')
                .map_or(job.as_str(), |(k, _)| k)
                .to_string();
            self.attempts
                .lock()
                .unwrap()
                .push((job.clone(), Instant::now()));
            let mut failures = self.failures.lock().unwrap();
            if let Some(left) = failures.get_mut(&key) {
                if *left > 0 {
                    *left -= 1;
                    return Err(Failure::Retry(format!("{key} is down")));
                }
            }
            drop(failures);
            self.delivered.lock().unwrap().push(job.clone());
            Ok(Outcome::Delivered)
        })
    }
}

async fn append(log: &dyn Log, topic: &str, values: &[&str]) {
    let records = values
        .iter()
        .map(|v| chorus_chat::log::Record {
            key: None,
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: Vec::new(),
            timestamp_ms: chorus_chat::now_ms(),
        })
        .collect();
    log.append(topic, 0, records).await.unwrap();
}

async fn shared(log: Arc<dyn Log>) -> Shared {
    Shared {
        dedup: Arc::new(
            DedupStore::open(log.clone(), "test.dedup", 1, chorus_chat::now_ms())
                .await
                .unwrap(),
        ),
        dead_letters: Arc::new(DeadLetters::open(log.clone(), "test.dlq", 1).await.unwrap()),
        log,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarder_retries_with_backoff_dead_letters_and_never_holds_up_other_keys() {
    let broker = TestBroker::start().await;
    let log = jobs_log(&broker).await;
    let target = Arc::new(Flaky {
        name: "flaky".into(),
        topic: "jobs".into(),
        // `slow` recovers on its third retry; `dead` never does.
        failures: Mutex::new([("slow".to_string(), 3), ("dead".to_string(), u32::MAX)].into()),
        attempts: Mutex::default(),
        delivered: Mutex::default(),
        calls: AtomicU32::new(0),
    });
    let policy = RetryPolicy {
        retries: 4,
        initial_backoff_ms: 100,
        multiplier: 2.0,
        max_backoff_ms: 250,
    };
    let running = forward::start(target.clone(), shared(log.clone()).await, policy);
    append(
        log.as_ref(),
        "jobs",
        &[
            "slow:1", "fast:1", "dead:1", "slow:2", "fast:2", "garbage", "fast:1",
        ],
    )
    .await;
    within(10, async {
        while target.delivered.lock().unwrap().len() < 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let delivered = target.delivered.lock().unwrap().clone();
    // Other keys are not held up by `slow` and `dead` retrying; each key stays in order.
    assert_eq!(&delivered[..2], ["fast:1", "fast:2"], "{delivered:?}");
    assert_eq!(&delivered[2..], ["slow:1", "slow:2"], "{delivered:?}");
    // The repeat of fast:1 was recognised by the dedup store (one delivery, one attempt).
    let attempts = target.attempts.lock().unwrap().clone();
    assert_eq!(attempts.iter().filter(|(j, _)| j == "fast:1").count(), 1);
    // Backoff between the attempts of slow:1: 100, 200, 250 (capped) ms.
    let times: Vec<Instant> = attempts
        .iter()
        .filter(|(j, _)| j == "slow:1")
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(times.len(), 4);
    for (pair, min_ms) in times.windows(2).zip([100u64, 200, 250]) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(min_ms),
            "retry after {gap:?}, expected >= {min_ms} ms"
        );
    }
    // `dead` gave up after 1 + 4 attempts; it and the garbage are in the dead-letter topic.
    let letters = within(10, async {
        loop {
            let (_, end) = log.offsets("test.dlq", 0).await.unwrap();
            if end >= 2 {
                break log
                    .read("test.dlq", 0, 0, 1 << 20, Duration::ZERO)
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let text =
        |c: &Consumed, h: &str| String::from_utf8_lossy(c.record.header(h).unwrap()).into_owned();
    let mut found: Vec<(String, String, String)> = letters
        .iter()
        .map(|c| {
            (
                String::from_utf8_lossy(c.record.value.as_deref().unwrap()).into_owned(),
                text(c, dlq::REASON),
                text(c, dlq::ATTEMPTS),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            (
                "dead:1".to_string(),
                "dead is down".to_string(),
                "5".to_string()
            ),
            (
                "garbage".to_string(),
                "cannot read it".to_string(),
                "1".to_string()
            ),
        ]
    );
    let attempts = target.attempts.lock().unwrap().clone();
    assert_eq!(attempts.iter().filter(|(j, _)| j == "dead:1").count(), 5);
    assert_eq!(running.metrics.dead_lettered.load(Ordering::Relaxed), 2);
    assert_eq!(running.metrics.deduplicated.load(Ordering::Relaxed), 1);
    assert_eq!(running.metrics.retries.load(Ordering::Relaxed), 3 + 4);
    // Everything is delivered or dead-lettered, so everything gets committed.
    let group = "chorus.flaky";
    within(10, async {
        while committed(&broker, group, "jobs").await != Some(7) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    running.stop(Duration::from_secs(5)).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_still_retrying_is_not_committed_and_runs_again_after_a_restart() {
    let mut broker = TestBroker::start().await;
    let l = jobs_log(&broker).await;
    let flaky = |failures: u32| {
        Arc::new(Flaky {
            name: "flaky".into(),
            topic: "jobs".into(),
            failures: Mutex::new([("stuck".to_string(), failures)].into()),
            attempts: Mutex::default(),
            delivered: Mutex::default(),
            calls: AtomicU32::new(0),
        })
    };
    let patient = RetryPolicy {
        retries: 100,
        initial_backoff_ms: 50,
        multiplier: 1.0,
        max_backoff_ms: 50,
    };
    let first = flaky(u32::MAX);
    let running = forward::start(first.clone(), shared(l.clone()).await, patient);
    append(l.as_ref(), "jobs", &["ok:1", "stuck:1", "ok:2"]).await;
    within(10, async {
        while first.delivered.lock().unwrap().len() < 2
            || committed(&broker, "chorus.flaky", "jobs").await != Some(1)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // ok:2 is done but stuck:1 before it is not: the commit stays at 1.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(committed(&broker, "chorus.flaky", "jobs").await, Some(1));
    running.stop(Duration::from_secs(5)).await;
    drop(l);
    broker.restart().await;
    // After the restart stuck:1 runs again and succeeds; ok:2 is not delivered twice.
    let l = embedded_log(&broker);
    let second = flaky(0);
    let running = forward::start(second.clone(), shared(l.clone()).await, patient);
    within(30, async {
        while committed(&broker, "chorus.flaky", "jobs").await != Some(3) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(*second.delivered.lock().unwrap(), ["stuck:1"]);
    assert_eq!(second.calls.load(Ordering::Relaxed), 1);
    running.stop(Duration::from_secs(5)).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_notifications_share_appends_and_each_id_is_written_once() {
    let broker = TestBroker::start().await;
    let log = embedded_log(&broker);
    let spec = chorus_chat::log::TopicSpec {
        name: "test.notifications".into(),
        partitions: 2,
        configs: vec![],
    };
    let store = Arc::new(
        chorus_chat::notifications::NotificationStore::open(log.clone(), &spec)
            .await
            .unwrap(),
    );
    // 10 ids sent 5 times each, all at once, and 10 notifications without an id. An id
    // counts per user: id-0..id-4 go to user0..user4, and id-5..id-9 to those users again.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let user = format!("user{}", i % 5);
            let id = (i < 50).then(|| format!("id-{}", i % 10));
            let answer = store
                .notify(
                    &user,
                    "purchase",
                    &json!({"n": i}),
                    id.as_deref(),
                    chorus_chat::now_ms(),
                )
                .await
                .unwrap();
            (id, answer)
        }));
    }
    let mut by_id: BTreeMap<String, Vec<(i64, bool)>> = BTreeMap::new();
    let mut without_id = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (Some(id), answer) => by_id.entry(id).or_default().push(answer),
            (None, (offset, repeated)) => {
                assert!(!repeated);
                without_id.push(offset);
            }
        }
    }
    for (id, answers) in &by_id {
        let first = answers.iter().filter(|(_, repeated)| !repeated).count();
        assert_eq!(first, 1, "{id}: one send appends, the others are repeats");
        assert!(
            answers.iter().all(|(o, _)| *o == answers[0].0),
            "{id}: every send is answered with the one offset: {answers:?}"
        );
    }
    let mut total = 0;
    for p in 0..2 {
        let (start, end) = log.offsets("test.notifications", p).await.unwrap();
        total += end - start;
    }
    assert_eq!(
        total,
        10 + 10,
        "one record per id, one per notification without"
    );
    // The same id for two users is two notifications.
    for user in ["user0", "user1"] {
        let (_, repeated) = store
            .notify(
                user,
                "purchase",
                &json!({}),
                Some("shared"),
                chorus_chat::now_ms(),
            )
            .await
            .unwrap();
        assert!(!repeated, "{user}");
    }
    broker.stop().await;
}
