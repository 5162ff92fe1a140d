//! Starting brokers for tests.

use std::time::Duration;

use chorus_broker::{BrokerConfig, Server};

/// A broker on 127.0.0.1:0 with its own data directory, stopped by the test.
pub struct TestBroker {
    pub server: Option<Server>,
    /// Kept so the data directory lives as long as the broker.
    _dir: tempfile::TempDir,
    /// What it was started with; a restart uses it again.
    config: BrokerConfig,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
        init_logging();
        let dir = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig::for_tests(dir.path());
        tweak(&mut config);
        let server = Server::start(config.clone()).await.unwrap();
        TestBroker {
            server: Some(server),
            _dir: dir,
            config,
        }
    }

    pub fn bootstrap(&self) -> String {
        self.server.as_ref().unwrap().bootstrap()
    }

    /// Graceful stop, then a new broker on the same data directory (and a new port).
    pub async fn restart(&mut self) {
        self.server.take().unwrap().shutdown().await.unwrap();
        self.server = Some(Server::start(self.config.clone()).await.unwrap());
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }
}

pub fn rdkafka_config(bootstrap: &str) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "10000")
        .set("socket.timeout.ms", "10000")
        .set("broker.address.family", "v4");
    c
}

/// Fails the test instead of hanging when a wait runs long.
pub async fn within<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("timed out")
}

/// Reads `count` messages from the start of each listed partition with librdkafka (manual
/// assignment: no consumer group needed), or fails after `secs`.
pub async fn consume(
    bootstrap: &str,
    topic: &str,
    partitions: &[i32],
    count: usize,
    secs: u64,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    // librdkafka wants a group id even for manual assignment; nothing is committed.
    let consumer: StreamConsumer = rdkafka_config(bootstrap)
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    within(secs, async {
        while out.len() < count {
            let m = consumer.recv().await.expect("consume");
            out.push(m.detach());
        }
    })
    .await;
    out
}

/// Broker logs in test output, filtered by `RUST_LOG` (default: warnings).
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
    });
}

/// One HTTP/1.1 request on a fresh connection: status and JSON body (`Null` when empty or
/// not JSON).
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(a) = authorization {
        request.push_str(&format!("Authorization: {a}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    within(10, stream.read_to_end(&mut raw)).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}
