//! The chat gateway under load, against a `chorus serve` process (release build):
//!
//! * memory per idle WebSocket connection: the slope of the server's RSS over the number
//!   of open connections (client sockets spread over 127.0.0.x source addresses);
//! * fan-out: one group message to every connected member (10,000 in a full run), time
//!   from the POST to each receipt (p50/p99/max);
//! * delivered messages per second during a burst of group messages;
//! * end-to-end latency of 1:1 messages posted over HTTP at a fixed rate (5,000/s in a full
//!   run) to their receipt on a WebSocket (p50/p99/p99.9).
//!
//! Goals: <= 8 KiB of server memory per idle connection; p99 <= 5 ms at 5,000 messages/s;
//! one message to 10,000 members delivered to all within 50 ms p99. There is no reference
//! system to compare with here, so these are absolute numbers; the machine's noise shows in
//! the spread between runs.
//!
//! Run: `cargo bench -p chorus-benches --bench chat` (`CHORUS_BENCH_QUICK=1` for a short
//! run with fewer connections).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_benches::{
    floor, percentile, print_table, process_cpu_time, quick, ws_client_config, Chorus, Pushed,
};
use chorus_chat::auth::Verifier;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "bench-secret";

fn main() {
    // Started again as the writer end of the kernel-floor reference.
    floor::run_writer_if_asked();
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs benches without it.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    raise_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

/// Up to the hard limit (20,000 here): each side holds one socket per connection.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit calls on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn token(user: &str, service: bool) -> String {
    let exp = chorus_chat::now_ms() / 1000 + 24 * 3600;
    let mut claims = json!({"sub": user, "exp": exp});
    if service {
        claims["role"] = json!("service");
    }
    Verifier::new(SECRET.as_bytes()).sign(&claims)
}

/// A keep-alive HTTP/1.1 client for JSON POSTs.
struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    async fn connect(addr: &str) -> Http {
        let stream = TcpStream::connect(addr).await.expect("http connect");
        stream.set_nodelay(true).ok();
        Http {
            stream,
            buf: Vec::new(),
        }
    }

    async fn post(&mut self, path: &str, token: &str, body: &Value) -> u16 {
        let body = body.to_string();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream
            .write_all(request.as_bytes())
            .await
            .expect("http write");
        // Headers, then Content-Length bytes of body.
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let status: u16 = head[9..12].parse().expect("status");
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    self.fill().await;
                }
                self.buf.drain(..end + 4 + len);
                return status;
            }
            self.fill().await;
        }
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.expect("http read");
        assert!(n > 0, "the server closed the HTTP connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// Opens a WebSocket as `user`, from source address 127.0.0.`source`.
async fn open_ws(
    http: SocketAddr,
    user: &str,
    source: u8,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, source), 0)))
        .expect("bind a loopback source address");
    let stream = socket.connect(http).await.expect("connect");
    let url = format!("ws://{http}/ws?token={}", token(user, false));
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(ws_client_config()))
            .await
            .expect("websocket handshake");
    ws
}

/// Receipt times (ns since `epoch`) of messages by their content marker.
type Receipts = Arc<Mutex<Vec<(String, u64)>>>;

/// Reads a connection's frames, acking messages and recording when each arrived. Kept
/// lean (borrowed parse, no JSON tree), as it shares the cores with the server it
/// measures.
fn reader(
    mut ws: tokio_tungstenite::WebSocketStream<TcpStream>,
    epoch: Instant,
    receipts: Receipts,
    count: Arc<AtomicUsize>,
) {
    tokio::spawn(async move {
        while let Some(Ok(frame)) = ws.next().await {
            let Message::Text(text) = frame else {
                continue;
            };
            let at = epoch.elapsed().as_nanos() as u64;
            let Ok(pushed) = Pushed::parse(text.as_str()) else {
                continue;
            };
            if pushed.kind == "message" {
                let content = pushed.content.as_deref().unwrap_or_default().to_string();
                receipts.lock().unwrap().push((content, at));
                count.fetch_add(1, Ordering::Relaxed);
                if ws.send(Message::text(pushed.ack())).await.is_err() {
                    return;
                }
            }
        }
    });
}

async fn run() {
    let chorus = Chorus::start_with(&[
        "--jwt-secret",
        SECRET,
        "--group-initial-rebalance-delay-ms",
        "0",
    ]);
    let http: SocketAddr = chorus.http.parse().expect("http address");
    let members = if quick() { 2_000 } else { 10_000 };
    let rounds = if quick() { 5 } else { 10 };
    let idle_steps: Vec<usize> = if quick() {
        vec![500, 1_000, 2_000]
    } else {
        vec![2_000, 5_000, 10_000]
    };
    let epoch = Instant::now();
    let receipts: Receipts = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));

    // Group membership for everyone the fan-out will reach (as a service, over HTTP).
    let service = token("bench-service", true);
    let mut admin = Http::connect(&chorus.http).await;
    for i in 0..members {
        let status = admin
            .post(
                "/groups/everyone/members",
                &service,
                &json!({"user_id": format!("u{i}")}),
            )
            .await;
        assert_eq!(status, 201);
    }

    // Reference: the same fan-out over raw loopback sockets, before the WebSocket clients
    // take their file descriptors.
    let (floor_member, floor_all) = tokio::task::spawn_blocking(move || {
        let mut floor = floor::Floor::start(members);
        let mut per_member = Vec::new();
        let mut to_all = Vec::new();
        for _ in 0..rounds {
            let at = floor.round();
            to_all.push(at.last().copied().unwrap_or_default());
            per_member.extend(at);
        }
        per_member.sort_by(|a, b| a.partial_cmp(b).unwrap());
        to_all.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (per_member, to_all)
    })
    .await
    .expect("floor");

    // Memory: RSS as idle connections open (after the gateway has taken in the joins).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut samples = vec![(0usize, chorus.rss_bytes())];
    let mut opened = 0;
    for &target in &idle_steps {
        while opened < target {
            let ws = open_ws(http, &format!("u{opened}"), 1 + (opened % 200) as u8).await;
            reader(ws, epoch, receipts.clone(), count.clone());
            opened += 1;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        samples.push((opened, chorus.rss_bytes()));
    }
    while opened < members {
        let ws = open_ws(http, &format!("u{opened}"), 1 + (opened % 200) as u8).await;
        reader(ws, epoch, receipts.clone(), count.clone());
        opened += 1;
    }
    let slope = slope_bytes_per_connection(&samples);

    // Fan-out: one group message at a time to every connected member.
    let mut sender = Http::connect(&chorus.http).await;
    let u0 = token("u0", false);
    let mut per_member = Vec::new();
    let mut to_all = Vec::new();
    let me = std::process::id();
    let (server_cpu, client_cpu) = (chorus.cpu_time(), process_cpu_time(me));
    for round in 0..rounds {
        let marker = format!("fan-{round}");
        let before = count.load(Ordering::Relaxed);
        let sent_at = epoch.elapsed().as_nanos() as u64;
        let status = sender
            .post(
                "/chat/messages",
                &u0,
                &json!({"msg_id": marker, "sender_id": "u0", "group_id": "everyone", "content": marker}),
            )
            .await;
        assert_eq!(status, 201);
        let deadline = Instant::now() + Duration::from_secs(30);
        while count.load(Ordering::Relaxed) < before + members && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let got: Vec<f64> = receipts
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| *c == marker)
            .map(|(_, at)| (at.saturating_sub(sent_at)) as f64 / 1e6)
            .collect();
        assert_eq!(
            got.len(),
            members,
            "round {round}: not every member got the message"
        );
        to_all.push(got.iter().cloned().fold(0.0, f64::max));
        per_member.extend(got);
    }
    let per_member_us = |d: Duration| d.as_secs_f64() * 1e6 / (rounds * members) as f64;
    let server_us = per_member_us(chorus.cpu_time() - server_cpu);
    let client_us = per_member_us(process_cpu_time(me) - client_cpu);
    per_member.sort_by(|a, b| a.partial_cmp(b).unwrap());
    to_all.sort_by(|a, b| a.partial_cmp(b).unwrap());

    // Throughput: a burst of group messages, deliveries per second.
    let burst = if quick() { 20 } else { 50 };
    let before = count.load(Ordering::Relaxed);
    let started = Instant::now();
    for i in 0..burst {
        sender
            .post(
                "/chat/messages",
                &u0,
                &json!({"msg_id": format!("burst-{i}"), "sender_id": "u0", "group_id": "everyone", "content": "burst"}),
            )
            .await;
    }
    let want = before + burst * members;
    let deadline = Instant::now() + Duration::from_secs(120);
    while count.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delivered = count.load(Ordering::Relaxed) - before;
    let burst_rate = delivered as f64 / started.elapsed().as_secs_f64();

    // Latency: 1:1 messages posted at a fixed rate to one connected receiver.
    let rate = if quick() { 2_000 } else { 5_000 };
    let seconds = if quick() { 3 } else { 5 };
    let lat_receipts: Receipts = Arc::new(Mutex::new(Vec::new()));
    let lat_count = Arc::new(AtomicUsize::new(0));
    let ws = open_ws(http, "lat-receiver", 250).await;
    reader(ws, epoch, lat_receipts.clone(), lat_count.clone());
    let senders = 8;
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(senders as f64 / rate as f64);
    let mut tasks = Vec::new();
    for s in 0..senders {
        let addr = chorus.http.clone();
        tasks.push(tokio::spawn(async move {
            let mut http = Http::connect(&addr).await;
            let user = format!("lat-sender-{s}");
            let tok = token(&user, false);
            let mut next = tokio::time::Instant::now();
            for i in 0..total / senders {
                tokio::time::sleep_until(next).await;
                next += interval;
                let sent = epoch.elapsed().as_nanos() as u64;
                http.post(
                    "/chat/messages",
                    &tok,
                    &json!({"msg_id": format!("l{s}-{i}"), "sender_id": user, "receiver_id": "lat-receiver", "content": sent.to_string()}),
                )
                .await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while lat_count.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut latency: Vec<f64> = lat_receipts
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(c, at)| {
            c.parse::<u64>()
                .ok()
                .map(|sent| at.saturating_sub(sent) as f64 / 1e6)
        })
        .collect();
    latency.sort_by(|a, b| a.partial_cmp(b).unwrap());

    let mb = |b: u64| format!("{:.1}", b as f64 / (1 << 20) as f64);
    print_table(
        "Server memory with idle WebSocket connections",
        &["connections", "server RSS (MiB)"],
        &samples
            .iter()
            .map(|(n, rss)| vec![n.to_string(), mb(*rss)])
            .collect::<Vec<_>>(),
    );
    print_table(
        "Chat gateway",
        &["measure", "result", "goal"],
        &[
            vec!["memory per idle connection (slope)".into(), format!("{:.1} KiB", slope / 1024.0), "<= 8 KiB".into()],
            vec![format!("fan-out of one group message to {members} members, per member p50 / p99 (ms)"), format!("{:.1} / {:.1}", percentile(&per_member, 50.0), percentile(&per_member, 99.0)), "p99 < 50 ms".into()],
            vec!["... until the last member has it, median / worst of rounds (ms)".into(), format!("{:.1} / {:.1}", percentile(&to_all, 50.0), percentile(&to_all, 100.0)), "".into()],
            vec![format!("reference: the same fan-out over {members} raw loopback TCP sockets (epoll, {}-byte frame, {}-byte ack; no WebSocket, JSON or runtime), per member p50 / p99 (ms)", floor::FRAME_BYTES, floor::ACK_BYTES), format!("{:.1} / {:.1}", percentile(&floor_member, 50.0), percentile(&floor_member, 99.0)), "".into()],
            vec!["... reference until the last member has it, median / worst of rounds (ms)".into(), format!("{:.1} / {:.1}", percentile(&floor_all, 50.0), percentile(&floor_all, 100.0)), "".into()],
            vec!["... CPU per member and round: server / this load generator (us)".into(), format!("{server_us:.1} / {client_us:.1}"), "".into()],
            vec![format!("deliveries per second ({burst} group messages x {members} members)"), format!("{burst_rate:.0}"), "".into()],
            vec![format!("1:1 latency at {rate} msg/s, HTTP post to WebSocket receipt, p50 / p99 / p99.9 (ms)"), format!("{:.2} / {:.2} / {:.2}", percentile(&latency, 50.0), percentile(&latency, 99.0), percentile(&latency, 99.9)), "p99 <= 5 ms".into()],
            vec!["1:1 messages received / sent".into(), format!("{} / {total}", latency.len()), "".into()],
        ],
    );
}

/// Least-squares slope of RSS over connection count.
fn slope_bytes_per_connection(samples: &[(usize, u64)]) -> f64 {
    let n = samples.len() as f64;
    let mean_x = samples.iter().map(|(x, _)| *x as f64).sum::<f64>() / n;
    let mean_y = samples.iter().map(|(_, y)| *y as f64).sum::<f64>() / n;
    let cov: f64 = samples
        .iter()
        .map(|(x, y)| (*x as f64 - mean_x) * (*y as f64 - mean_y))
        .sum();
    let var: f64 = samples
        .iter()
        .map(|(x, _)| (*x as f64 - mean_x).powi(2))
        .sum();
    cov / var
}
