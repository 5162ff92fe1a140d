//! End-to-end produce and consume with librdkafka against a `chorus` process on loopback,
//! with the same client against librdkafka's in-memory mock cluster as the reference.
//!
//! Tables:
//! 1. Produce throughput for 100 B, 1 KiB and 16 KiB messages, acks=1 and acks=all, 1 and 8
//!    partitions, and consume throughput for the same sizes: msgs/s and MB/s, as ratios to
//!    the mock cluster. Produce rows also time `write_all` of the same bytes into a new file
//!    (no sync): the mock keeps only 5 MiB per partition in memory it reuses, while a real log
//!    grows the page cache, which on VMs whose free memory goes back to the host costs far
//!    more once the first few hundred MiB are used.
//! 2. acks=all with `flush.messages=1` (every acknowledged message is on disk, fsyncs shared
//!    by group commit) at 1 KiB, against `write_all` + `fdatasync` per 1 MiB.
//! 3. End-to-end latency (produce call to consumer receipt) at a fixed rate.
//!
//! Run: `cargo bench -p chorus-benches --bench kafka` (`CHORUS_BENCH_QUICK=1` for a short
//! run, `CHORUS_BENCH_ONLY=produce,consume,durable,latency` to pick tables,
//! `CHORUS_BENCH_SIZES=100,1024,16384` to pick message sizes). It builds and starts `target/release/chorus` itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chorus_benches::{
    fsync_per_mib, median, page_cache_write, percentile, print_table, quick, size_label, wanted,
    Chorus,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, TopicPartitionList};

/// Message sizes to run (`CHORUS_BENCH_SIZES=16384` picks one row group, for profiling).
fn sizes() -> Vec<usize> {
    match std::env::var("CHORUS_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("CHORUS_BENCH_SIZES: comma-separated byte counts")
            })
            .collect(),
        Err(_) => vec![100, 1024, 16 * 1024],
    }
}

/// Counts failed deliveries, so a run that lost messages is not reported as fast.
#[derive(Default)]
struct Counting {
    failed: AtomicUsize,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4");
    c
}

fn create_topic(
    rt: &tokio::runtime::Runtime,
    bootstrap: &str,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> = client(bootstrap).create().expect("admin");
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let result = rt
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .expect("create topics");
    if let Err((_, code)) = &result[0] {
        assert_eq!(
            *code,
            RDKafkaErrorCode::TopicAlreadyExists,
            "creating {name}"
        );
    }
}

/// Produces `n` messages of `size` bytes round-robin over the partitions: (seconds, bytes).
fn produce(
    bootstrap: &str,
    topic: &str,
    size: usize,
    acks: &str,
    partitions: i32,
    n: usize,
) -> (f64, u64) {
    let producer: BaseProducer<Counting> = client(bootstrap)
        .set("acks", acks)
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "2097152")
        .create_with_context(Counting::default())
        .expect("producer");
    let payload = vec![b'x'; size];
    // Connect and learn the metadata before the clock starts.
    producer
        .send(
            BaseRecord::<(), _>::to(topic)
                .payload(&payload)
                .partition(0),
        )
        .map_err(|(e, _)| e)
        .expect("warm-up send");
    producer
        .flush(Duration::from_secs(30))
        .expect("warm-up flush");
    let start = Instant::now();
    for i in 0..n {
        let partition = (i % partitions as usize) as i32;
        loop {
            match producer.send(
                BaseRecord::<(), _>::to(topic)
                    .payload(&payload)
                    .partition(partition),
            ) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => panic!("produce failed: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
    let secs = start.elapsed().as_secs_f64();
    let failed = producer.context().failed.load(Ordering::Relaxed);
    assert_eq!(failed, 0, "{failed} deliveries failed");
    (secs, (n * size) as u64)
}

fn consumer(bootstrap: &str, topic: &str, partitions: i32) -> BaseConsumer {
    let consumer: BaseConsumer = client(bootstrap)
        .set("group.id", format!("bench-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// Consumes `n` messages from the beginning: seconds.
fn consume(bootstrap: &str, topic: &str, partitions: i32, n: usize) -> f64 {
    let consumer = consumer(bootstrap, topic, partitions);
    let mut start = Instant::now();
    let mut got = 0;
    while got < n {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(_)) => {
                // Time the transfer, not the consumer's start-up (offset lookups etc.).
                if got == 0 {
                    start = Instant::now();
                }
                got += 1
            }
            Some(Err(e)) => panic!("consume failed: {e}"),
            None => assert!(
                start.elapsed() < Duration::from_secs(300),
                "consume stalled at {got}/{n}"
            ),
        }
    }
    start.elapsed().as_secs_f64()
}

/// Messages per run for a message size.
fn count_for(size: usize) -> usize {
    let bytes = if quick() { 16 << 20 } else { 128 << 20 };
    (bytes / size).min(if quick() { 100_000 } else { 500_000 })
}

struct Targets {
    chorus: Chorus,
    mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    rt: tokio::runtime::Runtime,
}

fn throughput(t: &Targets) {
    // Files of the page-cache reference, kept until the table is done (see `page_cache_write`).
    let scratch = tempfile::tempdir().expect("scratch");
    let mut rows = Vec::new();
    for (round, size) in sizes().into_iter().enumerate() {
        for acks in ["1", "all"] {
            for partitions in [1, 8] {
                let n = count_for(size);
                let topic = format!("produce-{round}-{size}-{acks}-{partitions}");
                create_topic(&t.rt, &t.chorus.bootstrap, &topic, partitions, &[]);
                t.mock
                    .create_topic(&topic, partitions, 1)
                    .expect("mock topic");
                let (m_secs, bytes) = produce(
                    &t.mock.bootstrap_servers(),
                    &topic,
                    size,
                    acks,
                    partitions,
                    n,
                );
                // Before and after: whichever writer comes first after other memory was
                // freed gets warm pages, so one side alone is luck.
                let before = page_cache_write(scratch.path(), &format!("{topic}-before"), bytes);
                let (c_secs, _) = produce(&t.chorus.bootstrap, &topic, size, acks, partitions, n);
                let after = page_cache_write(scratch.path(), &format!("{topic}-after"), bytes);
                let page_cache = (before + after) / 2.0;
                let mbs = |secs: f64| bytes as f64 / secs / 1e6;
                rows.push(vec![
                    size_label(size),
                    acks.to_string(),
                    partitions.to_string(),
                    format!("{:.0}k / {:.0}", n as f64 / c_secs / 1e3, mbs(c_secs)),
                    format!("{:.0}k / {:.0}", n as f64 / m_secs / 1e3, mbs(m_secs)),
                    format!("{:.2}", m_secs / c_secs),
                    format!("{page_cache:.0}"),
                    format!("{:.2}", mbs(c_secs) / page_cache),
                ]);
            }
        }
    }
    print_table(
        "librdkafka produce throughput, chorus vs the mock cluster (goal at acks=1: ratio >= 0.8)",
        &[
            "message",
            "acks",
            "partitions",
            "chorus msgs/s / MB/s",
            "mock msgs/s / MB/s",
            "ratio",
            "page-cache write MB/s",
            "chorus / page-cache",
        ],
        &rows,
    );
}

/// The mock cluster keeps only the last 5 MiB of each partition, so consume runs read 4 MiB
/// per partition, several times, and report the median.
fn consumption(t: &Targets) {
    let mut rows = Vec::new();
    for size in sizes() {
        for partitions in [1, 8] {
            let n = (4 << 20) / size * partitions as usize;
            let topic = format!("consume-{size}-{partitions}");
            create_topic(&t.rt, &t.chorus.bootstrap, &topic, partitions, &[]);
            t.mock
                .create_topic(&topic, partitions, 1)
                .expect("mock topic");
            produce(
                &t.mock.bootstrap_servers(),
                &topic,
                size,
                "1",
                partitions,
                n,
            );
            produce(&t.chorus.bootstrap, &topic, size, "1", partitions, n);
            let reps = if quick() { 3 } else { 7 };
            let mut mock = Vec::new();
            let mut ours = Vec::new();
            for _ in 0..reps {
                mock.push(consume(&t.mock.bootstrap_servers(), &topic, partitions, n));
                ours.push(consume(&t.chorus.bootstrap, &topic, partitions, n));
            }
            let (m, c) = (median(mock), median(ours));
            let bytes = (n * size) as f64;
            rows.push(vec![
                size_label(size),
                partitions.to_string(),
                format!("{:.0}k / {:.0}", n as f64 / c / 1e3, bytes / c / 1e6),
                format!("{:.0}k / {:.0}", n as f64 / m / 1e3, bytes / m / 1e6),
                format!("{:.2}", m / c),
            ]);
        }
    }
    print_table(
        "librdkafka consume throughput (4 MiB per partition, median of runs), chorus vs the mock cluster (goal: ratio >= 0.8)",
        &["message", "partitions", "chorus msgs/s / MB/s", "mock msgs/s / MB/s", "ratio"],
        &rows,
    );
}

fn durable(t: &Targets) {
    let size = 1024;
    // About a second of writing: short runs are mostly the producer's ramp-up and tail.
    let n = if quick() {
        count_for(size)
    } else {
        (256 << 20) / size
    };
    let mut rows = Vec::new();
    for partitions in [1, 8] {
        let topic = format!("durable-{partitions}");
        create_topic(
            &t.rt,
            &t.chorus.bootstrap,
            &topic,
            partitions,
            &[("flush.messages", "1")],
        );
        let scratch = tempfile::tempdir().expect("scratch");
        let slice = Duration::from_secs(if quick() { 1 } else { 2 });
        let before = fsync_per_mib(scratch.path(), slice);
        let (secs, bytes) = produce(&t.chorus.bootstrap, &topic, size, "all", partitions, n);
        let after = fsync_per_mib(scratch.path(), slice);
        let reference = (before + after) / 2.0;
        let ours = bytes as f64 / secs / 1e6;
        rows.push(vec![
            partitions.to_string(),
            format!("{:.0}k", n as f64 / secs / 1e3),
            format!("{ours:.0}"),
            format!("{reference:.0} ({before:.0} before, {after:.0} after)"),
            format!("{:.2}", ours / reference),
        ]);
    }
    print_table(
        "acks=all with flush.messages=1 (on disk before the ack), 1 KiB messages (goal: >= 0.7)",
        &[
            "partitions",
            "msgs/s",
            "MB/s",
            "write_all+fdatasync/1 MiB MB/s",
            "ratio",
        ],
        &rows,
    );
}

/// Produce at `rate` messages/s for `secs`; the consumer measures produce-call-to-receipt.
fn latency_run(bootstrap: &str, topic: &str, rate: u64, secs: u64) -> Vec<f64> {
    let epoch = Instant::now();
    let total = (rate * secs) as usize;
    let consumer = consumer(bootstrap, topic, 1);
    // Let the consumer connect and position itself before the producer starts.
    let _ = consumer.poll(Duration::from_millis(500));
    let reader = {
        std::thread::spawn(move || {
            let mut samples = Vec::with_capacity(total);
            let deadline = Instant::now() + Duration::from_secs(secs + 30);
            while samples.len() < total && Instant::now() < deadline {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    let sent = u64::from_be_bytes(
                        m.payload().expect("payload")[..8]
                            .try_into()
                            .expect("8 bytes"),
                    );
                    let now = epoch.elapsed().as_nanos() as u64;
                    samples.push((now - sent) as f64 / 1e6);
                }
            }
            samples
        })
    };
    let producer: BaseProducer<Counting> = client(bootstrap)
        .set("acks", "1")
        .set("linger.ms", "0")
        .create_with_context(Counting::default())
        .expect("producer");
    let mut payload = vec![0u8; 1024];
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    for i in 0..total {
        let due = start + interval * i as u32;
        while Instant::now() < due {
            producer.poll(Duration::ZERO);
            std::hint::spin_loop();
        }
        payload[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
        producer
            .send(
                BaseRecord::<(), _>::to(topic)
                    .payload(&payload)
                    .partition(0),
            )
            .map_err(|(e, _)| e)
            .expect("send");
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let mut samples = reader.join().expect("reader");
    samples.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    samples
}

fn latency(t: &Targets) {
    let rate = 2_000;
    let secs = if quick() { 2 } else { 5 };
    let mut rows = Vec::new();
    for (name, bootstrap) in [
        ("chorus", t.chorus.bootstrap.clone()),
        ("mock cluster", t.mock.bootstrap_servers()),
    ] {
        let topic = "latency";
        if name == "chorus" {
            create_topic(&t.rt, &bootstrap, topic, 1, &[]);
        } else {
            t.mock.create_topic(topic, 1, 1).expect("mock topic");
        }
        let s = latency_run(&bootstrap, topic, rate, secs);
        rows.push(vec![
            name.to_string(),
            s.len().to_string(),
            format!("{:.2}", percentile(&s, 50.0)),
            format!("{:.2}", percentile(&s, 99.0)),
            format!("{:.2}", percentile(&s, 99.9)),
        ]);
    }
    print_table(
        &format!("End-to-end latency, 1 KiB at {rate} msgs/s, acks=1, ms (produce call to consumer receipt)"),
        &["target", "samples", "p50", "p99", "p99.9"],
        &rows,
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let targets = Targets {
        chorus: Chorus::start(),
        mock: MockCluster::new(1).expect("mock cluster"),
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
    };
    println!(
        "chorus at {}, mock cluster at {}",
        targets.chorus.bootstrap,
        targets.mock.bootstrap_servers()
    );
    if wanted("produce") {
        throughput(&targets);
    }
    if wanted("consume") {
        consumption(&targets);
    }
    if wanted("durable") {
        durable(&targets);
    }
    if wanted("latency") {
        latency(&targets);
    }
}
