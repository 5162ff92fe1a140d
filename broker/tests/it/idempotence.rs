//! Idempotent producers: retries are deduplicated, gaps and stale epochs refused, and the
//! state survives a restart. Exercised both exactly (raw protocol) and with librdkafka
//! through a proxy that drops produce responses so that it really retries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chorus_storage::batch::BatchBuilder;
use kafka_protocol::messages::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;
use crate::protocol::{create_topic, produce_request};
use crate::wire::Wire;

fn idempotent_batch(pid: i64, epoch: i16, seq: i32, values: &[&str]) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    for v in values {
        b = b.record(None, Some(v.as_bytes()), 1);
    }
    b.producer_id = pid;
    b.producer_epoch = epoch;
    b.base_sequence = seq;
    b.build().unwrap()
}

async fn produce(wire: &mut Wire, batch: Vec<u8>) -> (i16, i64) {
    let resp: ProduceResponse = wire
        .call(ApiKey::Produce, 9, &produce_request("idem", 0, batch, -1))
        .await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

async fn log_end(wire: &mut Wire) -> i64 {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let resp: ListOffsetsResponse = wire
        .call(
            ApiKey::ListOffsets,
            8,
            &ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
                .with_name(crate::protocol::topic("idem"))
                .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)])]),
        )
        .await;
    resp.topics[0].partitions[0].offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_batches_are_acknowledged_once_and_sequence_errors_refused() {
    let mut broker = TestBroker::start().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    create_topic(&mut wire, "idem", 1).await;
    let pid = 4242;
    assert_eq!(
        produce(&mut wire, idempotent_batch(pid, 0, 0, &["a", "b"])).await,
        (0, 0)
    );
    assert_eq!(
        produce(&mut wire, idempotent_batch(pid, 0, 2, &["c"])).await,
        (0, 2)
    );
    // The retry of the first batch gets its original offset and writes nothing.
    assert_eq!(
        produce(&mut wire, idempotent_batch(pid, 0, 0, &["a", "b"])).await,
        (0, 0)
    );
    assert_eq!(log_end(&mut wire).await, 3);
    // A gap in the sequence.
    assert_eq!(
        produce(&mut wire, idempotent_batch(pid, 0, 7, &["x"]))
            .await
            .0,
        45
    );
    // A new producer starting mid-sequence.
    assert_eq!(
        produce(&mut wire, idempotent_batch(999, 0, 5, &["x"]))
            .await
            .0,
        59
    );
    assert_eq!(log_end(&mut wire).await, 3);

    // The state survives a restart: the retry is still recognised.
    broker.restart().await;
    let mut wire = Wire::connect(&broker.bootstrap()).await;
    assert_eq!(
        produce(&mut wire, idempotent_batch(pid, 0, 2, &["c"])).await,
        (0, 2)
    );
    assert_eq!(
        produce(&mut wire, idempotent_batch(pid, 0, 3, &["d"])).await,
        (0, 3)
    );
    // A new epoch restarts the sequence and fences the old one.
    assert_eq!(
        produce(&mut wire, idempotent_batch(pid, 1, 0, &["e"])).await,
        (0, 4)
    );
    assert_eq!(
        produce(&mut wire, idempotent_batch(pid, 0, 4, &["f"]))
            .await
            .0,
        47
    );
    assert_eq!(log_end(&mut wire).await, 5);
    broker.stop().await;
}

/// Forwards Kafka traffic and, every `drop_every`-th produce response, drops the response and
/// both connections, so the client must retry a produce the broker already appended.
struct FlakyProxy {
    port: u16,
    target: Arc<Mutex<Option<String>>>,
    dropped: Arc<AtomicUsize>,
}

impl FlakyProxy {
    async fn start(drop_every: usize) -> FlakyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target: Arc<Mutex<Option<String>>> = Arc::default();
        let dropped = Arc::new(AtomicUsize::new(0));
        let produce_responses = Arc::new(AtomicUsize::new(0));
        let (t, d) = (target.clone(), dropped.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Some(addr) = t.lock().unwrap().clone() else {
                    continue;
                };
                let Ok(server) = TcpStream::connect(addr).await else {
                    continue;
                };
                tokio::spawn(pump(
                    client,
                    server,
                    drop_every,
                    d.clone(),
                    produce_responses.clone(),
                ));
            }
        });
        FlakyProxy {
            port,
            target,
            dropped,
        }
    }
}

async fn read_frame(s: &mut (impl AsyncReadExt + Unpin)) -> Option<Vec<u8>> {
    let size = s.read_i32().await.ok()?;
    let mut buf = vec![0u8; size as usize];
    s.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

async fn pump(
    client: TcpStream,
    server: TcpStream,
    drop_every: usize,
    dropped: Arc<AtomicUsize>,
    produce_responses: Arc<AtomicUsize>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let apis: Arc<Mutex<HashMap<i32, i16>>> = Arc::default();
    let requests = {
        let apis = apis.clone();
        tokio::spawn(async move {
            while let Some(frame) = read_frame(&mut cr).await {
                let api = i16::from_be_bytes([frame[0], frame[1]]);
                let id = i32::from_be_bytes(frame[4..8].try_into().unwrap());
                apis.lock().unwrap().insert(id, api);
                if sw
                    .write_all(&(frame.len() as i32).to_be_bytes())
                    .await
                    .is_err()
                    || sw.write_all(&frame).await.is_err()
                {
                    return;
                }
            }
        })
    };
    while let Some(frame) = read_frame(&mut sr).await {
        let id = i32::from_be_bytes(frame[..4].try_into().unwrap());
        let api = apis.lock().unwrap().remove(&id);
        if api == Some(ApiKey::Produce as i16)
            && produce_responses.fetch_add(1, Ordering::SeqCst) % drop_every == drop_every - 1
        {
            dropped.fetch_add(1, Ordering::SeqCst);
            break; // swallow the response and cut the connection
        }
        if cw
            .write_all(&(frame.len() as i32).to_be_bytes())
            .await
            .is_err()
            || cw.write_all(&frame).await.is_err()
        {
            break;
        }
    }
    requests.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_retries_through_a_flaky_link_leave_no_duplicates() {
    let proxy = FlakyProxy::start(7).await;
    let broker = TestBroker::start_with(|c| c.advertised_port = proxy.port).await;
    *proxy.target.lock().unwrap() = Some(broker.bootstrap());
    let via_proxy = format!("127.0.0.1:{}", proxy.port);

    let producer: FutureProducer = rdkafka_config(&via_proxy)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.num.messages", "20")
        .set("message.timeout.ms", "60000")
        .set("retry.backoff.ms", "50")
        .create()
        .unwrap();
    const N: usize = 600;
    let mut deliveries = Vec::new();
    for i in 0..N {
        let payload = format!("{i:05}");
        let record = FutureRecord::<(), _>::to("flaky")
            .partition(0)
            .payload(&payload);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for d in deliveries {
        within(90, d)
            .await
            .unwrap()
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
    assert!(
        proxy.dropped.load(Ordering::SeqCst) > 0,
        "the proxy never forced a retry"
    );

    let messages = consume(&broker.bootstrap(), "flaky", &[0], N, 30).await;
    let values: Vec<String> = messages
        .iter()
        .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
        .collect();
    let expected: Vec<String> = (0..N).map(|i| format!("{i:05}")).collect();
    assert_eq!(values, expected, "every message once, in order");
    // And nothing after them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let end = broker
        .server
        .as_ref()
        .unwrap()
        .broker
        .logs
        .log("flaky", 0)
        .unwrap()
        .log_end_offset();
    assert_eq!(end, N as i64);
    broker.stop().await;
}
