//! E-mail through a real SMTP server (Python's aiosmtpd on loopback) from a `chorus serve`
//! process configured by a TOML file: one mail per conversation, none for users who are
//! online or have no address, dedup across a restart, retries while the relay is down, and
//! the dead-letter topic once the retries run out.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Child;

use crate::clients::{chorus_binary, python, script, Broker, CHAT_SECRET};

/// The SMTP server: a process we can kill and start again on the same port.
struct Relay {
    child: Child,
    port: u16,
}

async fn relay(python: &Path, port: u16, maildir: &Path) -> Relay {
    let mut child = tokio::process::Command::new(python)
        .arg(script("python/smtp_sink.py"))
        .arg(port.to_string())
        .arg(maildir)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the SMTP server");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the SMTP server did not start within 30 s")
        .unwrap()
        .expect("the SMTP server exited");
    let port = line
        .strip_prefix("READY ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected SMTP server output {line:?}"));
    Relay { child, port }
}

impl Relay {
    async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The mails received so far, in order.
fn mails(maildir: &Path) -> Vec<Value> {
    let mut found: Vec<(u32, Value)> = std::fs::read_dir(maildir)
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let n: u32 = path
                .file_name()?
                .to_str()?
                .strip_suffix(".json")?
                .parse()
                .ok()?;
            Some((n, serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?))
        })
        .collect();
    found.sort_by_key(|(n, _)| *n);
    found.into_iter().map(|(_, m)| m).collect()
}

/// Waits (up to 20 s) until `count` mails arrived, then a little longer to see that no
/// more follow; returns them all.
async fn expect_mails(maildir: &Path, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while mails(maildir).len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {count} mails, got {:#?}",
            mails(maildir)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all = mails(maildir);
    assert_eq!(all.len(), count, "more mails than expected: {all:#?}");
    all
}

fn token(user: &str, service: bool) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let mut claims = json!({"sub": user, "exp": exp});
    if service {
        claims["role"] = json!("service");
    }
    chorus_chat::auth::Verifier::new(CHAT_SECRET.as_bytes()).sign(&claims)
}

/// A POST with a JSON body; returns the status.
async fn post(http: &str, path: &str, as_user: &str, service: bool, body: Value) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(http).await.unwrap();
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        token(as_user, service),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn chat(http: &str, from: &str, to: &str, id: &str) {
    let body = json!({"msg_id": id, "sender_id": from, "receiver_id": to, "content": format!("{id}: hello {to}")});
    assert_eq!(post(http, "/chat/messages", from, false, body).await, 201);
}

async fn notify(http: &str, kind: &str, user: &str, payload: Value) {
    let body = json!({"user_id": user, "payload": payload});
    assert_eq!(
        post(http, &format!("/notifications/{kind}"), "shop", true, body).await,
        202
    );
}

fn header<'a>(mail: &'a Value, name: &str) -> &'a str {
    let text = mail["text"].as_str().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} header in {text}"))
}

fn config(dir: &Path, smtp_port: u16) -> PathBuf {
    let path = dir.join("chorus.toml");
    let text = format!(
        r#"
[chat.email]
smtp = "127.0.0.1:{smtp_port}"
from = "Chorus <chorus@example.com>"
addresses = {{ bob = "bob@example.com", carol = "carol@example.com" }}

[chat.email.retry]
retries = 4
initial_backoff_ms = 300
multiplier = 2.0
max_backoff_ms = 1000
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_goes_once_per_conversation_to_offline_users_through_a_real_relay() {
    let Some(python) = python() else { return };
    let work = tempfile::tempdir().unwrap();
    let maildir = work.path().join("mail");
    let smtp = relay(&python, 0, &maildir).await;
    let port = smtp.port;
    let mut broker = Broker::start_with(vec![
        "--config".into(),
        config(work.path(), port).to_str().unwrap().into(),
    ])
    .await;
    let http = broker.http.clone();

    // Bob is offline: a burst of messages from alice is one notification, one mail.
    for i in 0..3 {
        chat(&http, "alice", "bob", &format!("m{i}")).await;
    }
    // Carol is online: neither her chat nor a notification for her is mailed.
    let url = format!("ws://{http}/ws?token={}", token("carol", false));
    let stream = TcpStream::connect(&http).await.unwrap();
    let (carol, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("carol connects");
    chat(&http, "alice", "carol", "c0").await;
    notify(&http, "shipping", "carol", json!({"id": "parcel-1"})).await;
    // Dave has no address.
    notify(&http, "purchase", "dave", json!({"id": "order-1"})).await;
    // A purchase for bob is its own conversation.
    let order_7 = json!({"id": "order-7", "total": 39.98});
    notify(&http, "purchase", "bob", order_7.clone()).await;
    let mut got = expect_mails(&maildir, 2).await;
    // The chat mail passes through the notifier first, so either may arrive first.
    got.sort_by_key(|m| header(m, "Subject").to_string());
    let subjects: Vec<&str> = got.iter().map(|m| header(m, "Subject")).collect();
    assert_eq!(
        subjects,
        ["New message from alice", "Thank you for your purchase"]
    );
    for m in &got {
        assert_eq!(m["to"], json!(["bob@example.com"]));
        assert_eq!(m["from"], "chorus@example.com");
        assert_eq!(header(m, "To"), "bob@example.com");
    }
    let body = got[0]["text"].as_str().unwrap();
    assert!(body.contains("alice wrote:"), "{body}");
    assert!(
        body.contains("m0: hello bob"),
        "the first message is previewed: {body}"
    );
    assert!(got[1]["text"].as_str().unwrap().contains("total: 39.98"));
    drop(carol);

    // The dedup store survives a restart: more of the same conversation mails nothing.
    broker.restart().await;
    let http = broker.http.clone();
    chat(&http, "alice", "bob", "m3").await;
    notify(&http, "purchase", "bob", order_7.clone()).await;
    expect_mails(&maildir, 2).await;

    // The relay goes down and comes back within the retries: the mail arrives.
    smtp.kill().await;
    notify(&http, "payment-reminder", "bob", json!({"id": "invoice-1"})).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(mails(&maildir).len(), 2);
    let smtp = relay(&python, port, &maildir).await;
    let got = expect_mails(&maildir, 3).await;
    assert_eq!(header(&got[2], "Subject"), "Payment reminder");

    // Down for longer than the retries (0.3 + 0.6 + 1 + 1 s): the notification goes to the
    // dead-letter topic with the reason.
    smtp.kill().await;
    notify(&http, "payment-reminder", "bob", json!({"id": "invoice-2"})).await;
    let output = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let out = tokio::process::Command::new(chorus_binary())
                .args(["consume", "chat.dlq", "--from-beginning", "--exit-at-end"])
                .args(["--format", "%h %v\\n"])
                .args(["--bootstrap-server", &broker.bootstrap()])
                .output()
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.contains("invoice-2") {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("no dead letter within 30 s");
    assert!(output.contains("chorus.dlq.target=email"), "{output}");
    assert!(output.contains("chorus.dlq.attempts=5"), "{output}");
    assert!(output.contains("the relay failed"), "{output}");
    broker.stop().await;
}
