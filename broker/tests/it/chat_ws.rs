//! The WebSocket gateway on a real server with real WebSocket clients: authentication
//! before the upgrade, sends and acks, fan-out to every device, redelivery, replay with
//! `since`, groups and membership pushes, notifications, bad frames, rate limits, idle
//! connections, metrics and a graceful goodbye.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chorus_chat::auth::Verifier;
use chorus_chat::ids::stream_id;
use chorus_chat::ChatConfig;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::common::{http_request, within, TestBroker};

pub(crate) type Client = WebSocketStream<TcpStream>;

/// Chat timings shrunk so the tests do not wait for production timeouts.
pub(crate) fn test_chat_config() -> ChatConfig {
    ChatConfig {
        ack_timeout: Duration::from_millis(400),
        ping_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(1200),
        rate_limit_per_second: 20,
        ..ChatConfig::new("test-secret")
    }
}

pub(crate) async fn gateway_broker(tweak: impl FnOnce(&mut ChatConfig)) -> TestBroker {
    let mut chat = test_chat_config();
    tweak(&mut chat);
    TestBroker::start_with(move |c| {
        c.chat_enabled = true;
        c.chat_config = Some(chat);
    })
    .await
}

pub(crate) fn jwt(user: &str) -> String {
    let exp = chorus_chat::now_ms() / 1000 + 3600;
    Verifier::new(b"test-secret").sign(&json!({"sub": user, "exp": exp}))
}

pub(crate) fn service_jwt() -> String {
    let exp = chorus_chat::now_ms() / 1000 + 3600;
    Verifier::new(b"test-secret").sign(&json!({"sub": "backend", "exp": exp, "role": "service"}))
}

pub(crate) fn http_addr(broker: &TestBroker) -> std::net::SocketAddr {
    broker.server.as_ref().unwrap().http_addr
}

pub(crate) async fn connect(broker: &TestBroker, user: &str) -> Client {
    let addr = http_addr(broker);
    let stream = TcpStream::connect(addr).await.unwrap();
    let url = format!("ws://{addr}/ws?token={}", jwt(user));
    let (ws, response) = within(10, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("websocket handshake");
    assert_eq!(response.status(), 101);
    ws
}

pub(crate) async fn send(ws: &mut Client, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

/// The next JSON frame (pings and pongs skipped), or `None` if none comes within `ms`.
pub(crate) async fn next_frame(ws: &mut Client, ms: u64) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        match frame.ok()? {
            Message::Text(t) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

/// The next frame of `kind`, skipping others, failing after 5 s.
pub(crate) async fn expect(ws: &mut Client, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = next_frame(ws, left.as_millis() as u64)
            .await
            .unwrap_or_else(|| panic!("no {kind} frame within 5 s"));
        if frame["type"] == kind {
            return frame;
        }
    }
}

/// The close code the server ends with (`None`: it ended without a close frame), within 5 s.
async fn close_code(ws: &mut Client) -> Option<CloseCode> {
    within(5, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| f.code),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
}

pub(crate) async fn http_post(
    broker: &TestBroker,
    path: &str,
    token: &str,
    body: Value,
) -> (u16, Value) {
    let bytes = serde_json::to_vec(&body).unwrap();
    http_request(
        http_addr(broker),
        "POST",
        path,
        Some(&format!("Bearer {token}")),
        Some(&bytes),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_origins_are_refused_before_the_upgrade() {
    let broker = gateway_broker(|c| c.allowed_origins = vec!["https://chat.example".into()]).await;
    let addr = http_addr(&broker);
    let expired = Verifier::new(b"test-secret").sign(&json!({"sub": "alice", "exp": 1}));
    for (path, code) in [
        ("/ws".to_string(), 401),
        ("/ws?token=garbage".to_string(), 401),
        (format!("/ws?token={expired}"), 401),
    ] {
        let (status, body) = http_request(addr, "GET", &path, None, None).await;
        assert_eq!(status, code, "{path}");
        assert_eq!(body["error_code"], "UNAUTHORIZED");
    }
    // A foreign origin is refused; the allowed one upgrades.
    let url = format!("ws://{addr}/ws?token={}", jwt("alice"));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            url.as_str(),
        )
        .unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    let stream = TcpStream::connect(addr).await.unwrap();
    let refused = tokio_tungstenite::client_async(request, stream).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected a 403, got {other:?}"),
    }
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            url.as_str(),
        )
        .unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://chat.example".parse().unwrap());
    let stream = TcpStream::connect(addr).await.unwrap();
    let (_ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    // The token may also come in the Authorization header.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{addr}/ws"
        ))
        .unwrap();
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", jwt("bob")).parse().unwrap(),
    );
    let stream = TcpStream::connect(addr).await.unwrap();
    let (_ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_acked_and_reaches_every_device_of_both_parties() {
    let broker = gateway_broker(|_| {}).await;
    let mut alice_phone = connect(&broker, "alice").await;
    let mut alice_laptop = connect(&broker, "alice").await;
    let mut bob = connect(&broker, "bob").await;
    send(&mut alice_phone, json!({"type": "send_msg", "msg_id": "m1", "recipient": "bob", "content": "hi bob", "timestamp": 1})).await;
    let ack = expect(&mut alice_phone, "ack").await;
    assert_eq!(ack["msg_id"], "m1");
    assert_eq!(ack["sequence_number"], 1);
    assert_eq!(ack["stream_id"], &*stream_id("alice", "bob"));
    for ws in [&mut bob, &mut alice_laptop] {
        let m = expect(ws, "message").await;
        assert_eq!(m["msg_id"], "m1");
        assert_eq!(m["sender"], "alice");
        assert_eq!(m["recipient"], "bob");
        assert_eq!(m["content"], "hi bob");
        assert_eq!(m["sequence_number"], 1);
        send(ws, json!({"type": "ack", "msg_id": "m1"})).await;
    }
    // HTTP and WebSocket writers share the conversation's sequence.
    let (status, body) = http_post(
        &broker,
        "/chat/messages",
        &jwt("bob"),
        json!({"msg_id": "h1", "sender_id": "bob", "receiver_id": "alice", "content": "via http"}),
    )
    .await;
    assert_eq!((status, body["sequence_number"].as_u64()), (201, Some(2)));
    let pushed = expect(&mut alice_laptop, "message").await;
    assert_eq!(
        (
            pushed["msg_id"].as_str(),
            pushed["sequence_number"].as_u64()
        ),
        (Some("h1"), Some(2))
    );
    // A repeated msg_id is acked with the original sequence number.
    send(
        &mut alice_phone,
        json!({"type": "send_msg", "msg_id": "m1", "recipient": "bob", "content": "hi bob"}),
    )
    .await;
    assert_eq!(expect(&mut alice_phone, "ack").await["sequence_number"], 1);
    send(&mut bob, json!({"type": "heartbeat"})).await;
    assert!(expect(&mut bob, "heartbeat").await["timestamp"].is_i64());
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacked_push_is_redelivered_until_acked() {
    // The ack timeout here is 400 ms (`test_chat_config`).
    let broker = gateway_broker(|_| {}).await;
    let mut bob = connect(&broker, "bob").await;
    http_post(
        &broker,
        "/chat/messages",
        &jwt("alice"),
        json!({"msg_id": "r1", "sender_id": "alice", "receiver_id": "bob", "content": "ack me"}),
    )
    .await;
    let first = expect(&mut bob, "message").await;
    let first_at = Instant::now();
    // No ack: the same message comes again after the ack timeout, and again after that.
    let again = expect(&mut bob, "message").await;
    assert_eq!(again, first);
    assert!(
        first_at.elapsed() >= Duration::from_millis(300),
        "redelivered before the ack timeout: {:?}",
        first_at.elapsed()
    );
    assert_eq!(expect(&mut bob, "message").await, first);
    // An ack whose msg_id is not a string is refused and acks nothing.
    send(&mut bob, json!({"type": "ack", "msg_id": 1})).await;
    assert_eq!(
        expect(&mut bob, "error").await["error_code"],
        "INVALID_MESSAGE"
    );
    send(&mut bob, json!({"type": "ack", "msg_id": "r1"})).await;
    // Drain anything already in flight, then nothing more comes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    while next_frame(&mut bob, 50).await.is_some() {}
    assert!(
        next_frame(&mut bob, 1000).await.is_none(),
        "redelivered after the ack"
    );
    // After a quiet spell (no push waiting, so no redelivery timer), a new unacked push
    // is redelivered too.
    http_post(
        &broker,
        "/chat/messages",
        &jwt("alice"),
        json!({"msg_id": "r2", "sender_id": "alice", "receiver_id": "bob", "content": "and me"}),
    )
    .await;
    let second = expect(&mut bob, "message").await;
    assert_eq!(second["msg_id"], "r2");
    assert_eq!(expect(&mut bob, "message").await, second);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_with_since_replays_then_goes_live_without_gap_or_duplicate() {
    let broker = gateway_broker(|c| c.rate_limit_per_second = 1000).await;
    for i in 1..=5 {
        http_post(&broker, "/chat/messages", &jwt("alice"), json!({"msg_id": format!("p{i}"), "sender_id": "alice", "receiver_id": "bob", "content": "before"})).await;
    }
    let mut bob = connect(&broker, "bob").await;
    let stream = stream_id("alice", "bob");
    send(
        &mut bob,
        json!({"type": "subscribe", "stream_id": stream, "since": 2}),
    )
    .await;
    // Writes keep coming while bob catches up.
    let writer = {
        let addr = http_addr(&broker);
        tokio::spawn(async move {
            for i in 6..=30 {
                let body = serde_json::to_vec(&json!({"msg_id": format!("p{i}"), "sender_id": "alice", "receiver_id": "bob", "content": "during"})).unwrap();
                let (status, _) = http_request(
                    addr,
                    "POST",
                    "/chat/messages",
                    Some(&format!("Bearer {}", jwt("alice"))),
                    Some(&body),
                )
                .await;
                assert_eq!(status, 201);
            }
        })
    };
    let mut seqs = Vec::new();
    within(20, async {
        while seqs.last() != Some(&30) {
            let m = expect(&mut bob, "message").await;
            send(&mut bob, json!({"type": "ack", "msg_id": m["msg_id"]})).await;
            seqs.push(m["sequence_number"].as_u64().unwrap());
        }
    })
    .await;
    writer.await.unwrap();
    // Every message after `since` exactly once. A live push racing the subscribe may come
    // just before the replayed ones; clients order by sequence number.
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (3..=30).collect::<Vec<u64>>(),
        "a gap or a duplicate at the seam: {seqs:?}"
    );
    // Someone else's conversation cannot be subscribed to.
    let mut mallory = connect(&broker, "mallory").await;
    send(
        &mut mallory,
        json!({"type": "subscribe", "stream_id": stream, "since": 0}),
    )
    .await;
    assert_eq!(
        expect(&mut mallory, "error").await["error_code"],
        "FORBIDDEN"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_messages_reach_members_and_membership_changes_are_pushed() {
    let broker = gateway_broker(|_| {}).await;
    for user in ["alice", "carol"] {
        let (status, _) = http_post(
            &broker,
            "/groups/team/members",
            &jwt(user),
            json!({"user_id": user}),
        )
        .await;
        assert_eq!(status, 201);
    }
    let mut alice = connect(&broker, "alice").await;
    let mut carol = connect(&broker, "carol").await;
    let mut bob = connect(&broker, "bob").await;
    send(
        &mut alice,
        json!({"type": "send_msg", "msg_id": "g1", "group_id": "team", "content": "hello team"}),
    )
    .await;
    assert_eq!(expect(&mut alice, "ack").await["group_id"], "team");
    let m = expect(&mut carol, "message").await;
    assert_eq!(
        (m["group_id"].as_str(), m["content"].as_str()),
        (Some("team"), Some("hello team"))
    );
    // bob is not a member: he gets nothing, cannot send or subscribe.
    send(
        &mut bob,
        json!({"type": "send_msg", "msg_id": "b1", "group_id": "team", "content": "let me in"}),
    )
    .await;
    let refused = expect(&mut bob, "error").await;
    assert_eq!(
        (refused["error_code"].as_str(), refused["msg_id"].as_str()),
        (Some("FORBIDDEN"), Some("b1"))
    );
    send(&mut bob, json!({"type": "subscribe", "group_id": "team"})).await;
    assert_eq!(expect(&mut bob, "error").await["error_code"], "FORBIDDEN");
    // dave joins: the connected members hear of it, dave does not hear of himself.
    let mut dave = connect(&broker, "dave").await;
    http_post(
        &broker,
        "/groups/team/members",
        &jwt("dave"),
        json!({"user_id": "dave"}),
    )
    .await;
    for ws in [&mut alice, &mut carol] {
        // Skip the earlier joins of alice and carol, which may still be fanning out.
        let change = loop {
            let change = expect(ws, "membership_change").await;
            if change["user_id"] == "dave" {
                break change;
            }
        };
        assert_eq!(
            (change["group_id"].as_str(), change["event_type"].as_str()),
            (Some("team"), Some("join"))
        );
    }
    // The cache was invalidated by the event: dave gets the next group message.
    send(
        &mut carol,
        json!({"type": "send_msg", "msg_id": "g2", "group_id": "team", "content": "welcome dave"}),
    )
    .await;
    assert_eq!(expect(&mut dave, "message").await["msg_id"], "g2");
    assert!(
        next_frame(&mut dave, 300)
            .await
            .is_none_or(|f| f["type"] != "membership_change"),
        "dave was told about his own join"
    );
    assert!(
        next_frame(&mut bob, 300).await.is_none(),
        "a non-member received group traffic"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_the_users_connections() {
    let broker = gateway_broker(|_| {}).await;
    let mut erin = connect(&broker, "erin").await;
    let (status, body) = http_post(
        &broker,
        "/notifications/shipping",
        &service_jwt(),
        json!({"user_id": "erin", "payload": {"order": 42, "status": "shipped"}}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert!(body["offset"].is_i64());
    let n = expect(&mut erin, "notification").await;
    assert_eq!(n["notification_type"], "shipping");
    assert_eq!(n["payload"], json!({"order": 42, "status": "shipped"}));
    let (status, _) = http_post(
        &broker,
        "/notifications/shipping",
        &jwt("erin"),
        json!({"user_id": "erin", "payload": {}}),
    )
    .await;
    assert_eq!(status, 403, "only services send notifications");
    let (status, _) = http_post(
        &broker,
        "/notifications/lottery",
        &service_jwt(),
        json!({"user_id": "erin", "payload": {}}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = http_post(
        &broker,
        "/notifications/chat",
        &service_jwt(),
        json!({"user_id": "erin", "payload": "text"}),
    )
    .await;
    assert_eq!(status, 400);
    // With an id, a retry appends nothing new and answers the original offset.
    let service = service_jwt();
    let post = |id: Value| {
        http_post(
            &broker,
            "/notifications/purchase",
            &service,
            json!({"user_id": "erin", "payload": {"order": 7}, "id": id}),
        )
    };
    let (status, first) = post(json!("order-7")).await;
    assert_eq!(status, 202, "{first}");
    let (_, again) = post(json!("order-7")).await;
    assert_eq!(again["offset"], first["offset"]);
    assert_eq!(
        expect(&mut erin, "notification").await["payload"]["order"],
        7
    );
    let (_, other) = post(json!("order-8")).await;
    assert_ne!(other["offset"], first["offset"]);
    for bad in [json!(7), json!(""), json!("x".repeat(300))] {
        assert_eq!(post(bad).await.0, 400);
    }
    // The next push is order-8's (same payload); a second order-7 never comes.
    let n = expect(&mut erin, "notification").await;
    assert_eq!(n["payload"]["order"], 7);
    assert!(next_frame(&mut erin, 300)
        .await
        .is_none_or(|f| f["type"] != "notification"));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_is_capped_per_connection_and_the_connection_survives() {
    let broker = gateway_broker(|_| {}).await;
    let mut ws = connect(&broker, "ulla").await;
    for i in 0..1000 {
        send(
            &mut ws,
            json!({"type": "unsubscribe", "stream_id": format!("s{i}")}),
        )
        .await;
    }
    // The same one again is no growth; a new one is refused.
    send(&mut ws, json!({"type": "unsubscribe", "stream_id": "s5"})).await;
    send(
        &mut ws,
        json!({"type": "unsubscribe", "group_id": "one-more"}),
    )
    .await;
    let e = expect(&mut ws, "error").await;
    assert_eq!(e["error_code"], "INVALID_MESSAGE");
    assert!(e["error_message"].as_str().unwrap().contains("too many"));
    send(&mut ws, json!({"type": "heartbeat"})).await;
    expect(&mut ws, "heartbeat").await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_and_a_flood_of_them_closes_the_connection() {
    let broker = gateway_broker(|c| c.max_bad_frames = 5).await;
    let mut ws = connect(&broker, "alice").await;
    let big = "x".repeat(10 * 1024 + 1);
    for (frame, code) in [
        (Message::text("{not json"), "INVALID_MESSAGE"),
        (Message::text("[1,2,3]"), "INVALID_MESSAGE"),
        (Message::text(json!({"type": "dance"}).to_string()), "INVALID_MESSAGE"),
        (Message::text(json!({"type": "send_msg", "msg_id": "x"}).to_string()), "INVALID_MESSAGE"),
        (Message::text(json!({"type": "send_msg", "msg_id": "x", "recipient": 7, "content": "c"}).to_string()), "INVALID_MESSAGE"),
        (Message::text(json!({"type": "send_msg", "msg_id": "x", "recipient": "bob", "group_id": "g", "content": "c"}).to_string()), "INVALID_MESSAGE"),
        (Message::text(json!({"type": "send_msg", "msg_id": "x", "recipient": "bob", "content": big}).to_string()), "MESSAGE_TOO_LARGE"),
        (Message::binary(vec![1, 2, 3]), "INVALID_MESSAGE"),
        (Message::text(json!({"type": "subscribe", "since": -1, "stream_id": "s"}).to_string()), "INVALID_MESSAGE"),
    ] {
        ws.send(frame).await.unwrap();
        let error = expect(&mut ws, "error").await;
        assert_eq!(error["error_code"], code, "{error}");
    }
    // The connection survived all that; the good frames in between reset the count.
    send(
        &mut ws,
        json!({"type": "send_msg", "msg_id": "ok", "recipient": "bob", "content": "still here"}),
    )
    .await;
    assert_eq!(expect(&mut ws, "ack").await["sequence_number"], 1);
    // Garbage in a row closes it with 1008.
    for _ in 0..5 {
        ws.send(Message::text("garbage")).await.unwrap();
    }
    let code = close_code(&mut ws).await;
    assert_eq!(code, Some(CloseCode::Policy));
    // Only the one good message reached the log.
    let (_, history) = http_request(
        http_addr(&broker),
        "GET",
        &format!("/chat/messages?stream_id={}", stream_id("alice", "bob")),
        Some(&format!("Bearer {}", jwt("alice"))),
        None,
    )
    .await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_rate_limited_per_user() {
    let broker = gateway_broker(|c| c.rate_limit_per_second = 5).await;
    let mut ws = connect(&broker, "speedy").await;
    for i in 0..20 {
        send(&mut ws, json!({"type": "send_msg", "msg_id": format!("f{i}"), "recipient": "bob", "content": "spam"})).await;
    }
    let mut acked = 0;
    let mut limited = 0;
    while acked + limited < 20 {
        let f = next_frame(&mut ws, 5000)
            .await
            .expect("an answer to every send");
        match f["type"].as_str() {
            Some("ack") => acked += 1,
            Some("error") => {
                assert_eq!(f["error_code"], "RATE_LIMIT_EXCEEDED");
                limited += 1;
            }
            _ => {}
        }
    }
    assert!((5..12).contains(&acked), "acked {acked}");
    assert!(limited >= 8, "limited {limited}");
    let (_, metrics) = {
        let addr = http_addr(&broker);
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        ((), raw)
    };
    assert!(
        metrics.contains(&format!("chorus_chat_rate_limited_total {limited}")),
        "{metrics}"
    );
    assert!(metrics.contains("chorus_chat_connections 1"), "{metrics}");
    assert!(
        metrics.contains("chorus_chat_delivery_latency_ms_count"),
        "{metrics}"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_and_a_live_one_is_kept() {
    let broker = gateway_broker(|_| {}).await;
    let mut silent = connect(&broker, "quiet").await;
    let mut live = connect(&broker, "chatty").await;
    // The live client reads (its library answers pings); the silent one does not.
    let kept = within(10, async {
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(2000) {
            if let Ok(Some(Ok(Message::Close(_)))) =
                tokio::time::timeout(Duration::from_millis(100), live.next()).await
            {
                return false;
            }
        }
        true
    })
    .await;
    assert!(kept, "a client answering pings was closed");
    // The server closed the silent one (its pings unanswered for the idle timeout). The
    // client may not get to read the close frame: answering the queued pings on a closed
    // socket fails first. Either way its stream ends, and only the live one is counted.
    let connections = || {
        broker
            .server
            .as_ref()
            .unwrap()
            .gateway
            .as_ref()
            .unwrap()
            .metrics
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    within(5, async {
        while connections() != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let ended = close_code(&mut silent).await;
    assert!(
        ended.is_none_or(|code| code == CloseCode::Away),
        "{ended:?}"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_clients_to_reconnect_and_closes_with_1001() {
    let broker = gateway_broker(|_| {}).await;
    let mut ws = connect(&broker, "alice").await;
    let stopping = tokio::spawn(broker.stop());
    let reconnect = expect(&mut ws, "reconnect").await;
    assert!(reconnect["reason"].is_string());
    let code = close_code(&mut ws).await;
    assert_eq!(code, Some(CloseCode::Away));
    within(30, stopping).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_devices_and_users_each_get_exactly_their_messages() {
    let broker = gateway_broker(|c| c.rate_limit_per_second = 1000).await;
    let mut a1 = connect(&broker, "amy").await;
    let mut a2 = connect(&broker, "amy").await;
    let mut z = connect(&broker, "zed").await;
    for i in 0..10 {
        let to = if i % 2 == 0 { "zed" } else { "yan" };
        http_post(&broker, "/chat/messages", &jwt("amy"), json!({"msg_id": format!("d{i}"), "sender_id": "amy", "receiver_id": to, "content": "x"})).await;
    }
    let mut got_z = BTreeSet::new();
    while got_z.len() < 5 {
        let m = expect(&mut z, "message").await;
        send(&mut z, json!({"type": "ack", "msg_id": m["msg_id"]})).await;
        got_z.insert(m["msg_id"].as_str().unwrap().to_string());
    }
    assert_eq!(got_z, (0..10).step_by(2).map(|i| format!("d{i}")).collect());
    for a in [&mut a1, &mut a2] {
        let mut got = BTreeSet::new();
        while got.len() < 10 {
            let m = expect(a, "message").await;
            send(a, json!({"type": "ack", "msg_id": m["msg_id"]})).await;
            got.insert(m["msg_id"].as_str().unwrap().to_string());
        }
    }
    assert!(
        next_frame(&mut z, 300).await.is_none(),
        "zed got a message that was not his"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_devices_of_both_users_see_the_same_order() {
    let broker = gateway_broker(|c| c.rate_limit_per_second = 1000).await;
    let mut devices = [
        connect(&broker, "ann").await,
        connect(&broker, "ann").await,
        connect(&broker, "bo").await,
        connect(&broker, "bo").await,
    ];
    // Both users write at once, from one device each.
    for i in 0..15 {
        let (from, to) = if i % 2 == 0 {
            ("ann", "bo")
        } else {
            ("bo", "ann")
        };
        let sender = if from == "ann" { 0 } else { 2 };
        send(&mut devices[sender], json!({"type": "send_msg", "msg_id": format!("o{i}"), "recipient": to, "content": format!("{i}")})).await;
    }
    let mut orders = Vec::new();
    for ws in devices.iter_mut() {
        let mut order = Vec::new();
        while order.len() < 15 {
            let m = expect(ws, "message").await;
            send(ws, json!({"type": "ack", "msg_id": m["msg_id"]})).await;
            order.push((
                m["sequence_number"].as_u64().unwrap(),
                m["msg_id"].as_str().unwrap().to_string(),
            ));
        }
        orders.push(order);
    }
    let seqs: Vec<u64> = orders[0].iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=15).collect::<Vec<u64>>());
    for other in &orders[1..] {
        assert_eq!(other, &orders[0], "devices saw different orders");
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_leaves_a_group_of_five_stops_receiving_and_the_others_are_told() {
    let broker = gateway_broker(|_| {}).await;
    let users = ["u1", "u2", "u3", "u4", "u5"];
    for u in users {
        http_post(
            &broker,
            "/groups/five/members",
            &jwt(u),
            json!({"user_id": u}),
        )
        .await;
    }
    let mut conns = Vec::new();
    for u in users {
        conns.push(connect(&broker, u).await);
    }
    let (status, _) = http_request(
        http_addr(&broker),
        "DELETE",
        "/groups/five/members/u5",
        Some(&format!("Bearer {}", jwt("u5"))),
        None,
    )
    .await;
    assert_eq!(status, 204);
    for ws in conns.iter_mut().take(4) {
        // The joins above may still be fanning out as the members connect; the leave is
        // the change this test is about.
        loop {
            let change = expect(ws, "membership_change").await;
            if change["event_type"] == "leave" {
                assert_eq!(change["user_id"], "u5");
                break;
            }
        }
    }
    send(
        &mut conns[0],
        json!({"type": "send_msg", "msg_id": "after", "group_id": "five", "content": "u5 is gone"}),
    )
    .await;
    for ws in conns.iter_mut().take(4) {
        assert_eq!(expect(ws, "message").await["msg_id"], "after");
    }
    let leaver = &mut conns[4];
    while let Some(f) = next_frame(leaver, 500).await {
        assert_ne!(
            f["type"], "message",
            "a member who left still receives: {f}"
        );
        assert_ne!(
            f["type"], "membership_change",
            "the leaver was told of their own leave: {f}"
        );
    }
    send(
        leaver,
        json!({"type": "send_msg", "msg_id": "late", "group_id": "five", "content": "hello?"}),
    )
    .await;
    assert_eq!(expect(leaver, "error").await["error_code"], "FORBIDDEN");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_without_slowing_others() {
    let broker = gateway_broker(|c| {
        c.connection_queue = 256;
        c.rate_limit_per_second = 100_000;
    })
    .await;
    let mut slow = connect(&broker, "slow").await;
    let mut fast = connect(&broker, "fast").await;
    // A group both are in, so one send reaches both.
    for u in ["slow", "fast", "writer"] {
        http_post(
            &broker,
            "/groups/flood/members",
            &jwt(u),
            json!({"user_id": u}),
        )
        .await;
    }
    // Enough large messages that the slow client's socket buffers fill and its queue
    // overflows; the fast one keeps reading and acking throughout.
    let content = "y".repeat(10_000);
    let total = 1500;
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < total {
            let m = expect(&mut fast, "message").await;
            send(&mut fast, json!({"type": "ack", "msg_id": m["msg_id"]})).await;
            got += 1;
        }
        got
    });
    // Written over HTTP: the writer has no connection that would need reading too.
    let token = jwt("writer");
    for i in 0..total {
        let (status, _) = http_post(&broker, "/chat/messages", &token, json!({"msg_id": format!("w{i}"), "sender_id": "writer", "group_id": "flood", "content": content})).await;
        assert_eq!(status, 201);
    }
    assert_eq!(
        within(60, reader).await.unwrap(),
        total,
        "the fast client missed messages"
    );
    // The slow client, reading at last, finds its connection closed with the reason.
    let ended = within(30, async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| (f.code, f.reason.to_string())),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await;
    if let Some((code, reason)) = ended {
        assert_eq!(code, CloseCode::Again);
        assert!(reason.contains("too slow"), "{reason}");
    }
    let gateway = broker.server.as_ref().unwrap().gateway.clone().unwrap();
    assert_eq!(
        gateway
            .metrics
            .slow_disconnects
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_logs_in_with_a_dev_token_and_chats() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = gateway_broker(|c| c.dev_tokens = true).await;
    let addr = http_addr(&broker);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut page = String::new();
    within(5, stream.read_to_string(&mut page)).await.unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("text/html"));
    assert!(page.contains("<title>Chorus chat</title>"));
    assert!(page.contains("/dev/token") && page.contains("/ws?token="));

    // What the page does: get a token, open the socket, send, get the ack and the push.
    let (status, body) = http_request(
        addr,
        "POST",
        "/dev/token",
        None,
        Some(br#"{"user_id":"zoe"}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut zoe, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/ws?token={token}"), stream)
            .await
            .expect("the dev token opens a socket");
    let mut yan = connect(&broker, "yan").await;
    send(
        &mut zoe,
        json!({"type": "send_msg", "msg_id": "d1", "recipient": "yan", "content": "hi from the page"}),
    )
    .await;
    assert_eq!(expect(&mut zoe, "ack").await["sequence_number"], 1);
    assert_eq!(expect(&mut yan, "message").await["sender"], "zoe");
    for bad in [&b"{}"[..], b"not json", br#"{"user_id":""}"#] {
        let (status, _) = http_request(addr, "POST", "/dev/token", None, Some(bad)).await;
        assert_eq!(status, 400);
    }
    broker.stop().await;

    // A server with a configured secret hands out nothing.
    let broker = gateway_broker(|_| {}).await;
    let (status, body) = http_request(
        http_addr(&broker),
        "POST",
        "/dev/token",
        None,
        Some(br#"{"user_id":"zoe"}"#),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["error_code"], "FORBIDDEN");
    broker.stop().await;
}
