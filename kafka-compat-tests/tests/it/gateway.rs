//! `chorus gateway --bootstrap-server`: two gateway processes on one cluster (a third
//! process, `chorus serve` with its own chat fabric off, plays the Kafka cluster), with
//! WebSocket and HTTP clients on different gateways chatting with each other.

use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio_tungstenite::tungstenite::Message;

use crate::clients::{chorus_binary, field, ready_line, Broker, CHAT_SECRET};

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A `chorus gateway` process, killed when dropped.
struct Gateway {
    child: Child,
    http: String,
}

impl Gateway {
    async fn start(bootstrap: &str) -> Gateway {
        let mut child = tokio::process::Command::new(chorus_binary())
            .arg("gateway")
            .args(["--bootstrap-server", bootstrap])
            .args(["--http-listen", "127.0.0.1:0"])
            .args(["--jwt-secret", CHAT_SECRET])
            .env("RUST_LOG", "warn,chorus_broker::gateway_server=info")
            .env("NO_COLOR", "1")
            .env_remove("CHORUS_CONFIG")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start chorus gateway");
        let ready = ready_line(&mut child, "chorus gateway ready").await;
        let http = field(&ready, "http=");
        Gateway { child, http }
    }

    /// SIGTERM, and a clean exit within 30 s.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling a child process we started and have not reaped.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the gateway did not stop within 30 s of SIGTERM")
            .expect("wait for the gateway");
        assert!(status.success(), "the gateway exited with {status}");
    }
}

fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    chorus_chat::auth::Verifier::new(CHAT_SECRET.as_bytes()).sign(&json!({"sub": user, "exp": exp}))
}

/// One HTTP request; returns the status and the JSON body (`null` when there is none).
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    user: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        token(user),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("no HTTP answer within 20 s")
    .unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let json = response
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

/// A WebSocket client that keeps the frames it has not been asked for yet, so waiting for
/// one kind (acks) loses none of another (pushes) that arrive in between.
struct Client {
    ws: Ws,
    unclaimed: std::collections::VecDeque<Value>,
}

async fn connect(http: &str, user: &str) -> Client {
    let stream = TcpStream::connect(http).await.unwrap();
    let url = format!("ws://{http}/ws?token={}", token(user));
    let (ws, response) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(url, stream),
    )
    .await
    .expect("no WebSocket handshake within 10 s")
    .expect("WebSocket handshake");
    assert_eq!(response.status(), 101);
    Client {
        ws,
        unclaimed: Default::default(),
    }
}

impl Client {
    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }

    /// The first frame of `kind` not yet taken, failing after 15 s.
    async fn expect(&mut self, kind: &str) -> Value {
        if let Some(i) = self.unclaimed.iter().position(|f| f["type"] == kind) {
            return self.unclaimed.remove(i).unwrap();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no {kind} frame within 15 s"))
                .expect("the connection ended")
                .expect("a frame");
            if let Message::Text(t) = frame {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == kind {
                    return v;
                }
                self.unclaimed.push_back(v);
            }
        }
    }

    /// Takes `count` `message` frames in arrival order, acking each.
    async fn messages(&mut self, count: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < count {
            let m = self.expect("message").await;
            self.send(json!({"type": "ack", "msg_id": m["msg_id"]}))
                .await;
            out.push(m);
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_two_gateways_on_one_cluster_chat_with_each_other() {
    let cluster = Broker::start_with(vec!["--chat-enabled".into(), "false".into()]).await;
    let a = Gateway::start(&cluster.bootstrap()).await;
    let b = Gateway::start(&cluster.bootstrap()).await;
    let mut alice = connect(&a.http, "alice").await;
    let mut bob = connect(&b.http, "bob").await;

    // One message each way: each is acked where it was sent and pushed by the other gateway.
    alice
        .send(
            json!({"type": "send_msg", "msg_id": "a1", "recipient": "bob", "content": "hi from A"}),
        )
        .await;
    assert_eq!(alice.expect("ack").await["sequence_number"], 1);
    let m = bob.messages(1).await.remove(0);
    assert_eq!(
        (
            m["sender"].as_str(),
            m["content"].as_str(),
            m["sequence_number"].as_u64()
        ),
        (Some("alice"), Some("hi from A"), Some(1))
    );
    bob.send(
        json!({"type": "send_msg", "msg_id": "b1", "recipient": "alice", "content": "hi from B"}),
    )
    .await;
    assert_eq!(bob.expect("ack").await["sequence_number"], 2);
    let echo = alice.messages(2).await;
    assert_eq!(
        echo.iter()
            .map(|m| m["msg_id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["a1", "b1"]
    );

    // Both gateways write the conversation at once: the sequence numbers still have no
    // gaps or repeats, every receipt matches what the clients are pushed, and both sides
    // see one order.
    let n = 25;
    for i in 0..n {
        alice.send( json!({"type": "send_msg", "msg_id": format!("ra{i}"), "recipient": "bob", "content": format!("a{i}")})).await;
        bob.send( json!({"type": "send_msg", "msg_id": format!("rb{i}"), "recipient": "alice", "content": format!("b{i}")})).await;
    }
    let mut receipts = std::collections::HashMap::new();
    for ws in [&mut alice, &mut bob] {
        for _ in 0..n {
            let ack = ws.expect("ack").await;
            receipts.insert(
                ack["msg_id"].as_str().unwrap().to_string(),
                ack["sequence_number"].as_u64().unwrap(),
            );
        }
    }
    // Both parties get every push, their own messages too; bob has not taken b1 yet.
    let seen_by_alice = alice.messages(2 * n).await;
    let seen_by_bob = bob.messages(2 * n + 1).await;
    let order = |frames: &[Value]| -> Vec<(String, u64)> {
        frames
            .iter()
            .filter(|m| m["msg_id"] != "b1")
            .map(|m| {
                (
                    m["msg_id"].as_str().unwrap().to_string(),
                    m["sequence_number"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let (alice_order, bob_order) = (order(&seen_by_alice), order(&seen_by_bob));
    assert_eq!(
        alice_order, bob_order,
        "the two gateways pushed different orders"
    );
    let numbers: Vec<u64> = alice_order.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        numbers,
        (3..3 + 2 * n as u64).collect::<Vec<_>>(),
        "numbers have gaps or repeats"
    );
    for (msg_id, seq) in &alice_order {
        assert_eq!(
            receipts.get(msg_id),
            Some(seq),
            "the receipt of {msg_id} differs from the push"
        );
    }

    // A retry through the other gateway is recognised: the original comes back, nothing new
    // is written.
    let (status, receipt) = http(&a.http, "POST", "/chat/messages", "bob", Some(json!({"msg_id": "b1", "sender_id": "bob", "receiver_id": "alice", "content": "hi from B"}))).await;
    assert_eq!(
        (status, receipt["sequence_number"].as_u64()),
        (200, Some(2))
    );

    // History through either gateway has the whole conversation, numbered the same way.
    let stream = receipt["stream_id"].as_str().unwrap().to_string();
    for gw in [&a, &b] {
        let (status, page) = http(
            &gw.http,
            "GET",
            &format!("/chat/messages?stream_id={stream}&limit=1000"),
            "alice",
            None,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        let listed: Vec<u64> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(listed, (1..3 + 2 * n as u64).collect::<Vec<_>>());
    }

    // Membership written through one gateway counts on the other: carol joins the group on
    // B and alice (on A) can write to her at once.
    let mut carol = connect(&b.http, "carol").await;
    for (gw, user) in [(&a, "alice"), (&b, "carol")] {
        let (status, body) = http(
            &gw.http,
            "POST",
            "/groups/crew/members",
            user,
            Some(json!({"user_id": user})),
        )
        .await;
        assert!(
            status == 200 || status == 201,
            "join {user}: {status} {body}"
        );
    }
    alice
        .send(json!({"type": "send_msg", "msg_id": "g1", "group_id": "crew", "content": "welcome"}))
        .await;
    let ack = alice.expect("ack").await;
    assert_eq!(
        (ack["msg_id"].as_str(), ack["sequence_number"].as_u64()),
        (Some("g1"), Some(1)),
        "{ack}"
    );
    let pushed = carol.messages(1).await.remove(0);
    assert_eq!(
        (pushed["group_id"].as_str(), pushed["content"].as_str()),
        (Some("crew"), Some("welcome"))
    );

    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_a_reachable_cluster_exits_with_a_clear_error() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(chorus_binary())
            .arg("gateway")
            .args(["--bootstrap-server", &format!("127.0.0.1:{port}")])
            .args(["--http-listen", "127.0.0.1:0", "--jwt-secret", CHAT_SECRET])
            .env("RUST_LOG", "error")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the gateway neither started nor failed within 60 s")
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach the Kafka cluster"),
        "{stderr}"
    );
}

/// Every record value of `topic` on the cluster, read with librdkafka from the start to
/// the current end of each partition.
fn read_topic(bootstrap: &str, topic: &str) -> Vec<Value> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message as _;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "gateway-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        if high > 0 {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
                .unwrap();
            ends.insert(p, high);
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !ends.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "could not read {topic} within 20 s"
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        if let Some(v) = m.payload() {
            out.push(serde_json::from_slice(v).unwrap());
        }
        if ends.get(&m.partition()) == Some(&(m.offset() + 1)) {
            ends.remove(&m.partition());
        }
    }
    out
}

/// Waits (up to 30 s) until group `group` has committed every record of `topic`, as the
/// cluster's admin endpoint reports.
async fn wait_until_group_caught_up(cluster: &Broker, group: &str, topic: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http(
            &cluster.http,
            "GET",
            &format!("/consumer-groups/{group}"),
            "admin",
            None,
        )
        .await;
        let caught_up = status == 200
            && body["offsets"].as_array().is_some_and(|rows| {
                let rows: Vec<&Value> = rows.iter().filter(|r| r["topic"] == topic).collect();
                !rows.is_empty()
                    && rows.iter().all(|r| {
                        r["log_end_offset"].as_i64().unwrap_or(0) == 0
                            || r["committed_offset"] == r["log_end_offset"]
                    })
            });
        if caught_up {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{group} did not catch up on {topic}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of a gauge on a gateway's /metrics.
async fn gauge(http_addr: &str, name: &str) -> i64 {
    let mut stream = TcpStream::connect(http_addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_connected_to_the_other_gateway_is_not_notified() {
    let cluster = Broker::start_with(vec!["--chat-enabled".into(), "false".into()]).await;
    let a = Gateway::start(&cluster.bootstrap()).await;
    let b = Gateway::start(&cluster.bootstrap()).await;
    // One user on B per partition of chat.messages (8), so however the notifier's group
    // splits the partitions, A's notifier handles some of their conversations with alice.
    let partitions = 8;
    let users_on_b: Vec<String> = (0..partitions)
        .map(|p| {
            (0..)
                .map(|i| format!("bob{i}"))
                .find(|u| {
                    let stream = chorus_chat::ids::stream_id("alice", u);
                    chorus_chat::log::partition_for_key(stream.as_bytes(), partitions) == p
                })
                .unwrap()
        })
        .collect();
    let mut on_b = Vec::new();
    for u in &users_on_b {
        on_b.push(connect(&b.http, u).await);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while gauge(&a.http, "chorus_chat_users_elsewhere").await < partitions as i64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never learned who is on B"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // alice (on A) writes to each of them and to dave, who is connected nowhere: only dave
    // is notified.
    let mut alice = connect(&a.http, "alice").await;
    let recipients = users_on_b
        .iter()
        .map(String::as_str)
        .chain(["dave", "dave"]);
    for (i, to) in recipients.enumerate() {
        alice
            .send(json!({"type": "send_msg", "msg_id": format!("n{i}"), "recipient": to, "content": "ping"}))
            .await;
        alice.expect("ack").await;
    }
    wait_until_group_caught_up(&cluster, "chorus.notify", "chat.messages").await;
    let bootstrap = cluster.bootstrap();
    let notified: Vec<String> =
        tokio::task::spawn_blocking(move || read_topic(&bootstrap, "notifications"))
            .await
            .unwrap()
            .iter()
            .map(|n| n["user_id"].as_str().unwrap().to_string())
            .collect();
    assert_eq!(
        notified,
        ["dave"],
        "one notification for dave's conversation, none for users on B"
    );
    a.stop().await;
    b.stop().await;
    cluster.stop().await;
}
