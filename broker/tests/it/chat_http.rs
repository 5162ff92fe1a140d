//! The chat HTTP API on a real server: the write path (sequence numbers, retries by
//! msg_id, one append per message), history, group membership, a restart, and bad input.

use std::net::SocketAddr;

use chorus_broker::embedded::EmbeddedLog;
use chorus_chat::auth::Verifier;
use chorus_chat::ids::stream_id;
use chorus_chat::log::Log;
use serde_json::{json, Value};

use crate::common::{http_request, TestBroker};

async fn chat_broker() -> TestBroker {
    TestBroker::start_with(|c| c.chat_enabled = true).await
}

fn token(user: &str) -> String {
    let exp = chorus_chat::now_ms() / 1000 + 3600;
    format!(
        "Bearer {}",
        Verifier::new(b"test-secret").sign(&json!({"sub": user, "exp": exp}))
    )
}

fn service_token() -> String {
    let exp = chorus_chat::now_ms() / 1000 + 3600;
    format!(
        "Bearer {}",
        Verifier::new(b"test-secret")
            .sign(&json!({"sub": "backend", "exp": exp, "role": "service"}))
    )
}

fn addr(broker: &TestBroker) -> SocketAddr {
    broker.server.as_ref().unwrap().http_addr
}

async fn post(broker: &TestBroker, path: &str, auth: &str, body: &Value) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    http_request(addr(broker), "POST", path, Some(auth), Some(&bytes)).await
}

async fn get(broker: &TestBroker, path: &str, auth: &str) -> (u16, Value) {
    http_request(addr(broker), "GET", path, Some(auth), None).await
}

async fn send(
    broker: &TestBroker,
    from: &str,
    to: &str,
    msg_id: &str,
    content: &str,
) -> (u16, Value) {
    post(
        broker,
        "/chat/messages",
        &token(from),
        &json!({"msg_id": msg_id, "sender_id": from, "receiver_id": to, "content": content}),
    )
    .await
}

/// Records in `topic` across all its partitions.
async fn records_in(broker: &TestBroker, topic: &str) -> i64 {
    let log = EmbeddedLog::new(broker.server.as_ref().unwrap().broker.clone());
    let mut total = 0;
    for p in 0..log.partition_count(topic).await.unwrap() {
        let (start, end) = log.offsets(topic, p).await.unwrap();
        total += end - start;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_get_sequence_numbers_and_a_retry_returns_the_original() {
    let broker = chat_broker().await;
    let stream = stream_id("alice", "bob");
    let (status, first) = send(&broker, "alice", "bob", "m1", "hello").await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["stream_id"], &*stream);
    assert_eq!(first["sequence_number"], 1);
    assert_eq!(first["msg_id"], "m1");
    let (status, second) = send(&broker, "alice", "bob", "m2", "how are you").await;
    assert_eq!((status, second["sequence_number"].as_u64()), (201, Some(2)));
    // A retry of m1 gets m1 back, unchanged, and writes nothing.
    let (status, again) = send(&broker, "alice", "bob", "m1", "hello").await;
    assert_eq!(status, 200);
    assert_eq!(again, first);
    // The other side writes to the same conversation.
    let (status, reply) = send(&broker, "bob", "alice", "r1", "fine").await;
    assert_eq!((status, reply["sequence_number"].as_u64()), (201, Some(3)));
    assert_eq!(reply["stream_id"], &*stream);
    // The same msg_id from another sender is another message.
    let (status, other) = send(&broker, "bob", "alice", "m1", "mine").await;
    assert_eq!((status, other["sequence_number"].as_u64()), (201, Some(4)));
    assert_eq!(records_in(&broker, "chat.messages").await, 4);

    let (status, history) = get(
        &broker,
        &format!("/chat/messages?stream_id={stream}"),
        &token("bob"),
    )
    .await;
    assert_eq!(status, 200, "{history}");
    let messages = history["messages"].as_array().unwrap();
    let seqs: Vec<u64> = messages
        .iter()
        .map(|m| m["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(messages[0]["type"], "message");
    assert_eq!(messages[0]["sender"], "alice");
    assert_eq!(messages[0]["recipient"], "bob");
    assert_eq!(messages[0]["content"], "hello");
    assert_eq!(messages[0]["timestamp"], first["timestamp"]);
    assert_eq!(history["next_since"], 4);
    let (_, page) = get(
        &broker,
        &format!("/chat/messages?stream_id={stream}&since=1&limit=2"),
        &token("alice"),
    )
    .await;
    let seqs: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 3]);
    assert_eq!(page["next_since"], 3);
    // Only the two parties may read it.
    let (status, denied) = get(
        &broker,
        &format!("/chat/messages?stream_id={stream}"),
        &token("mallory"),
    )
    .await;
    assert_eq!(
        (status, denied["error_code"].as_str()),
        (403, Some("FORBIDDEN"))
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_leave_no_gaps_in_sequence_numbers() {
    let broker = chat_broker().await;
    let sends = (0..60).map(|i| {
        let broker = &broker;
        async move {
            let (from, to) = if i % 2 == 0 {
                ("ann", "ben")
            } else {
                ("ben", "ann")
            };
            let (status, body) = send(broker, from, to, &format!("c{i}"), "x").await;
            assert_eq!(status, 201, "{body}");
            body["sequence_number"].as_u64().unwrap()
        }
    });
    let mut seqs = futures_util::future::join_all(sends).await;
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=60).collect::<Vec<u64>>());
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_admit_members_and_only_members_write_and_read() {
    let broker = chat_broker().await;
    let (status, joined) = post(
        &broker,
        "/groups/team/members",
        &token("alice"),
        &json!({"user_id": "alice"}),
    )
    .await;
    assert_eq!(status, 201, "{joined}");
    let (status, _) = post(
        &broker,
        "/groups/team/members",
        &token("bob"),
        &json!({"user_id": "carol"}),
    )
    .await;
    assert_eq!(status, 403, "a user cannot add someone else");
    let (status, _) = post(
        &broker,
        "/groups/team/members",
        &service_token(),
        &json!({"user_id": "carol"}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, members) = get(&broker, "/groups/team/members", &token("bob")).await;
    assert_eq!(status, 200);
    assert_eq!(
        members,
        json!({"group_id": "team", "members": ["alice", "carol"]})
    );

    let group_send = |from: &'static str, id: &'static str| {
        let broker = &broker;
        async move {
            post(
                broker,
                "/chat/messages",
                &token(from),
                &json!({"msg_id": id, "sender_id": from, "group_id": "team", "content": "hi team"}),
            )
            .await
        }
    };
    let (status, denied) = group_send("bob", "b1").await;
    assert_eq!(
        (status, denied["error_code"].as_str()),
        (403, Some("FORBIDDEN"))
    );
    let (status, sent) = group_send("alice", "a1").await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["group_id"], "team");
    assert_eq!(sent["sequence_number"], 1);
    let (status, history) = get(&broker, "/chat/messages?group_id=team", &token("carol")).await;
    assert_eq!(status, 200);
    assert_eq!(history["messages"][0]["group_id"], "team");
    let (status, _) = get(&broker, "/chat/messages?group_id=team", &token("bob")).await;
    assert_eq!(status, 403);

    let (status, _) = http_request(
        addr(&broker),
        "DELETE",
        "/groups/team/members/carol",
        Some(&token("alice")),
        None,
    )
    .await;
    assert_eq!(status, 403, "a user cannot remove someone else");
    let (status, _) = http_request(
        addr(&broker),
        "DELETE",
        "/groups/team/members/carol",
        Some(&token("carol")),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, gone) = http_request(
        addr(&broker),
        "DELETE",
        "/groups/team/members/carol",
        Some(&token("carol")),
        None,
    )
    .await;
    assert_eq!(
        (status, gone["error_code"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    let (status, missing) = post(
        &broker,
        "/chat/messages",
        &token("alice"),
        &json!({"msg_id": "x", "sender_id": "alice", "group_id": "nobody-here", "content": "?"}),
    )
    .await;
    assert_eq!(
        (status, missing["error_code"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    assert_eq!(records_in(&broker, "chat.membership").await, 3);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_numbers_retries_and_members_survive_a_restart() {
    let mut broker = chat_broker().await;
    for i in 1..=3 {
        send(&broker, "dora", "eli", &format!("d{i}"), "before").await;
    }
    let (_, original) = send(&broker, "dora", "eli", "d1", "before").await;
    post(
        &broker,
        "/groups/club/members",
        &token("dora"),
        &json!({"user_id": "dora"}),
    )
    .await;
    broker.restart().await;
    let (status, next) = send(&broker, "eli", "dora", "e1", "after").await;
    assert_eq!((status, next["sequence_number"].as_u64()), (201, Some(4)));
    let (status, retry) = send(&broker, "dora", "eli", "d1", "before").await;
    assert_eq!(status, 200);
    assert_eq!(retry, original);
    let (_, members) = get(&broker, "/groups/club/members", &token("eli")).await;
    assert_eq!(members["members"], json!(["dora"]));
    let stream = stream_id("dora", "eli");
    let (_, history) = get(
        &broker,
        &format!("/chat/messages?stream_id={stream}"),
        &token("eli"),
    )
    .await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 4);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_protocols_errors_and_write_nothing() {
    let broker = chat_broker().await;
    let a = addr(&broker);
    let ok_body =
        json!({"msg_id": "1", "sender_id": "alice", "receiver_id": "bob", "content": "hi"});
    let ok_bytes = serde_json::to_vec(&ok_body).unwrap();
    let expired = format!(
        "Bearer {}",
        Verifier::new(b"test-secret").sign(&json!({"sub": "alice", "exp": 1}))
    );
    let foreign = format!(
        "Bearer {}",
        Verifier::new(b"other-secret").sign(&json!({"sub": "alice", "exp": 9_999_999_999i64}))
    );
    for (auth, code) in [
        (None, "UNAUTHORIZED"),
        (Some("Bearer not.a.jwt"), "UNAUTHORIZED"),
        (Some(expired.as_str()), "UNAUTHORIZED"),
        (Some(foreign.as_str()), "UNAUTHORIZED"),
        (Some("Basic YWxpY2U6cHc="), "UNAUTHORIZED"),
    ] {
        let (status, body) = http_request(a, "POST", "/chat/messages", auth, Some(&ok_bytes)).await;
        assert_eq!(
            (status, body["error_code"].as_str()),
            (401, Some(code)),
            "{auth:?}"
        );
    }
    let alice = token("alice");
    let big = "x".repeat(10 * 1024 + 1);
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{not json".to_vec(), 400, "INVALID_MESSAGE"),
        (b"[1, 2]".to_vec(), 400, "INVALID_MESSAGE"),
        (serde_json::to_vec(&json!({"sender_id": "alice", "receiver_id": "bob", "content": "x"})).unwrap(), 400, "INVALID_MESSAGE"),
        (serde_json::to_vec(&json!({"msg_id": 5, "sender_id": "alice", "receiver_id": "bob", "content": "x"})).unwrap(), 400, "INVALID_MESSAGE"),
        (serde_json::to_vec(&json!({"msg_id": "1", "sender_id": "alice", "content": "x"})).unwrap(), 400, "INVALID_MESSAGE"),
        (serde_json::to_vec(&json!({"msg_id": "1", "sender_id": "alice", "receiver_id": "bob", "group_id": "g", "content": "x"})).unwrap(), 400, "INVALID_MESSAGE"),
        (serde_json::to_vec(&json!({"msg_id": "1", "sender_id": "alice", "receiver_id": "bob", "content": ""})).unwrap(), 400, "INVALID_MESSAGE"),
        (serde_json::to_vec(&json!({"msg_id": "1", "sender_id": "alice", "receiver_id": "bob", "content": "x", "stream_id": "0000000000000000"})).unwrap(), 400, "INVALID_MESSAGE"),
        (serde_json::to_vec(&json!({"msg_id": "1", "sender_id": "bob", "receiver_id": "alice", "content": "x"})).unwrap(), 403, "FORBIDDEN"),
        (serde_json::to_vec(&json!({"msg_id": "1", "sender_id": "alice", "receiver_id": "bob", "content": big})).unwrap(), 413, "MESSAGE_TOO_LARGE"),
        (vec![b' '; 70 * 1024], 413, "MESSAGE_TOO_LARGE"),
    ];
    for (body, status, code) in cases {
        let (got, answer) =
            http_request(a, "POST", "/chat/messages", Some(&alice), Some(&body)).await;
        assert_eq!(
            (got, answer["error_code"].as_str()),
            (status, Some(code)),
            "{}",
            String::from_utf8_lossy(&body[..body.len().min(120)])
        );
        assert!(answer["error_message"].is_string());
    }
    let stream = stream_id("alice", "bob");
    for query in [
        format!("stream_id={stream}&limit=5000"),
        format!("stream_id={stream}&limit=0"),
        format!("stream_id={stream}&since=abc"),
        "".to_string(),
        format!("stream_id={stream}&group_id=g"),
    ] {
        let (status, body) = get(&broker, &format!("/chat/messages?{query}"), &alice).await;
        assert_eq!(
            (status, body["error_code"].as_str()),
            (400, Some("INVALID_MESSAGE")),
            "{query}"
        );
    }
    let (status, _) = http_request(a, "PUT", "/chat/messages", Some(&alice), None).await;
    assert_eq!(status, 400);
    let (status, _) = post(&broker, "/groups/g/members", &alice, &json!({"user_id": 7})).await;
    assert_eq!(status, 400);
    assert_eq!(records_in(&broker, "chat.messages").await, 0);
    assert_eq!(records_in(&broker, "chat.membership").await, 0);
    broker.stop().await;
}
