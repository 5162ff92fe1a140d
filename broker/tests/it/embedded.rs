//! The chat plugins' log served in-process (`chorus_broker::embedded`): appends and reads
//! on the partitions, and consumer groups on the coordinator, cross-checked with librdkafka.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_broker::embedded::EmbeddedLog;
use chorus_chat::log::{
    GroupConsumer, GroupOptions, Header, Log, LogError, Record, StartFrom, TopicSpec,
};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::common::{consume, rdkafka_config, within, TestBroker};

fn log_of(broker: &TestBroker) -> EmbeddedLog {
    EmbeddedLog::new(broker.server.as_ref().unwrap().broker.clone())
}

fn spec(name: &str, partitions: i32) -> TopicSpec {
    TopicSpec {
        name: name.into(),
        partitions,
        configs: Vec::new(),
    }
}

fn record(key: Option<&str>, value: Option<&str>) -> Record {
    Record {
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        headers: Vec::new(),
        timestamp_ms: -1,
    }
}

fn options(group: &str, topic: &str) -> GroupOptions {
    GroupOptions {
        group_id: group.into(),
        topics: vec![topic.into()],
        start_from: StartFrom::Earliest,
        client_id: "embedded-test".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_appends_are_read_back_by_librdkafka_and_by_the_log() {
    let broker = TestBroker::start().await;
    let log = log_of(&broker);
    assert_eq!(log.ensure_topic(&spec("plugin.out", 3)).await.unwrap(), 3);
    // Ensuring again keeps the existing topic.
    assert_eq!(log.ensure_topic(&spec("plugin.out", 8)).await.unwrap(), 3);
    let mut with_headers = record(Some("k1"), Some("v1"));
    with_headers.headers = vec![
        Header {
            key: "kind".into(),
            value: Some(Bytes::from_static(b"chat")),
        },
        Header {
            key: "empty".into(),
            value: None,
        },
    ];
    with_headers.timestamp_ms = 1_700_000_000_000;
    let first = log
        .append(
            "plugin.out",
            1,
            vec![
                with_headers.clone(),
                record(Some("k2"), None),
                record(None, Some("v3")),
            ],
        )
        .await
        .unwrap();
    assert_eq!((first.partition, first.base_offset), (1, 0));
    assert_eq!(first.timestamp_ms, 1_700_000_000_000);
    let second = log
        .append("plugin.out", 1, vec![record(Some("k4"), Some("v4"))])
        .await
        .unwrap();
    assert_eq!(second.base_offset, 3);
    assert_eq!(log.offsets("plugin.out", 1).await.unwrap(), (0, 4));

    let all = log
        .read("plugin.out", 1, 0, 1 << 20, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|c| c.offset).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert_eq!(all[0].record, with_headers);
    assert_eq!(all[1].record.value, None);
    assert_eq!(all[2].record.key, None);
    // From the middle of a batch: the records before the offset are left out.
    let tail = log
        .read("plugin.out", 1, 2, 1 << 20, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(tail.iter().map(|c| c.offset).collect::<Vec<_>>(), [2, 3]);

    // A Kafka client sees the same records, headers included.
    let seen = consume(&broker.bootstrap(), "plugin.out", &[1], 4, 30).await;
    assert_eq!(seen[0].key(), Some(&b"k1"[..]));
    assert_eq!(seen[0].timestamp().to_millis(), Some(1_700_000_000_000));
    let headers = seen[0].headers().expect("headers");
    assert_eq!(headers.count(), 2);
    assert_eq!(headers.get(0).key, "kind");
    assert_eq!(headers.get(0).value, Some(&b"chat"[..]));
    assert_eq!(headers.get(1).value, None);
    assert_eq!(seen[1].payload(), None);
    broker.stop().await;
}

/// An append encodes its records' header blocks one after another: each record gets back
/// exactly its own headers, whatever its neighbours carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_record_of_an_embedded_append_keeps_its_own_headers() {
    let broker = TestBroker::start().await;
    let log = log_of(&broker);
    log.ensure_topic(&spec("headed", 1)).await.unwrap();
    let header = |key: &'static str, value: Option<&'static [u8]>| Header {
        key: key.into(),
        value: value.map(Bytes::from_static),
    };
    let mut records = vec![
        record(Some("plain"), Some("0")),
        record(Some("one"), Some("1")),
        record(Some("plain"), Some("2")),
        record(Some("two"), Some("3")),
    ];
    records[1].headers = vec![header("a", Some(b"x"))];
    // "type" is a key the chat plugins write (read back as a static name), the others
    // are not (read back as copies): both come back as written.
    records[3].headers = vec![
        header("b", None),
        header("type", Some(b"chat_message")),
        header("c", Some(b"yz")),
    ];
    log.append("headed", 0, records.clone()).await.unwrap();
    let read = log
        .read("headed", 0, 0, 1 << 20, Duration::ZERO)
        .await
        .unwrap();
    let headers: Vec<&[Header]> = read.iter().map(|c| c.record.headers.as_slice()).collect();
    let wanted: Vec<&[Header]> = records.iter().map(|r| r.headers.as_slice()).collect();
    assert_eq!(headers, wanted);
    assert!(matches!(
        headers[3][1].key,
        std::borrow::Cow::Borrowed("type")
    ));
    assert!(matches!(headers[3][0].key, std::borrow::Cow::Owned(_)));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_reads_decode_what_a_kafka_producer_compressed() {
    let broker = TestBroker::start().await;
    let log = log_of(&broker);
    log.ensure_topic(&spec("from-kafka", 1)).await.unwrap();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let producer: FutureProducer = rdkafka_config(&broker.bootstrap())
            .set("compression.codec", codec)
            .create()
            .unwrap();
        within(
            30,
            producer.send(
                FutureRecord::to("from-kafka")
                    .key(codec)
                    .payload(&codec.repeat(100)),
                Duration::from_secs(10),
            ),
        )
        .await
        .expect("delivered");
    }
    let read = log
        .read("from-kafka", 0, 0, 1 << 20, Duration::ZERO)
        .await
        .unwrap();
    let got: Vec<(String, usize)> = read
        .iter()
        .map(|c| {
            (
                String::from_utf8(c.record.key.clone().unwrap().to_vec()).unwrap(),
                c.record.value.as_ref().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("gzip".to_string(), 400),
            ("snappy".to_string(), 600),
            ("lz4".to_string(), 300),
            ("zstd".to_string(), 400)
        ]
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_read_wakes_on_append_and_waits_out_its_time_without_one() {
    let broker = TestBroker::start().await;
    let log = log_of(&broker);
    log.ensure_topic(&spec("waits", 1)).await.unwrap();
    let started = Instant::now();
    let none = log
        .read("waits", 0, 0, 1 << 20, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(none.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300));

    let reader = log.clone();
    let pending = tokio::spawn(async move {
        reader
            .read("waits", 0, 0, 1 << 20, Duration::from_secs(20))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    log.append("waits", 0, vec![record(Some("k"), Some("wake"))])
        .await
        .unwrap();
    let got = within(10, pending).await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the read should answer as soon as the append lands, took {:?}",
        started.elapsed()
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_log_answers_bad_input_with_typed_errors_and_writes_nothing() {
    let broker = TestBroker::start().await;
    let log = log_of(&broker);
    log.ensure_topic(&TopicSpec {
        name: "small".into(),
        partitions: 2,
        configs: vec![("max.message.bytes".into(), "1024".into())],
    })
    .await
    .unwrap();
    let err = log
        .append("missing", 0, vec![record(None, Some("x"))])
        .await
        .unwrap_err();
    assert!(
        matches!(err, LogError::UnknownPartition { ref topic, partition: 0 } if topic == "missing"),
        "{err:?}"
    );
    let err = log
        .append("small", 7, vec![record(None, Some("x"))])
        .await
        .unwrap_err();
    assert!(
        matches!(err, LogError::UnknownPartition { partition: 7, .. }),
        "{err:?}"
    );
    let big = "x".repeat(4096);
    let err = log
        .append("small", 0, vec![record(None, Some(&big))])
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::TooLarge { .. }), "{err:?}");
    assert_eq!(log.offsets("small", 0).await.unwrap(), (0, 0));
    let err = log
        .read("small", 0, 5, 1024, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LogError::OffsetOutOfRange {
                requested: 5,
                start: 0,
                end: 0,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        log.partition_count("missing").await,
        Err(LogError::UnknownPartition { .. })
    ));
    // A group with no id is refused by the coordinator; a commit past the log end is
    // refused before it reaches the coordinator.
    let err = log.join_group(options("", "small")).await.err().unwrap();
    assert!(matches!(err, LogError::Group { .. }), "{err:?}");
    let mut member = log
        .join_group(options("bad-commits", "small"))
        .await
        .unwrap();
    let err = member.commit(&[("small".into(), 0, 10)]).await.unwrap_err();
    assert!(
        matches!(err, LogError::OffsetOutOfRange { requested: 10, .. }),
        "{err:?}"
    );
    member.close().await.unwrap();
    broker.stop().await;
}

/// Appends that roll segments or must be flushed (which the embedded log leaves to
/// blocking threads) and reads of older segments (likewise) give the same log as the plain
/// appends and tail reads done on the calling task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_appends_across_segment_rolls_and_flushes_read_back_in_order() {
    let broker = TestBroker::start().await;
    let log = log_of(&broker);
    log.ensure_topic(&TopicSpec {
        name: "rolling".into(),
        partitions: 1,
        configs: vec![
            ("segment.bytes".into(), "20000".into()),
            ("flush.messages".into(), "1".into()),
        ],
    })
    .await
    .unwrap();
    let value = |i: usize| format!("{i:04}-{}", "v".repeat(1500));
    for i in (0..60).step_by(3) {
        let records = (i..i + 3)
            .map(|j| record(Some(&j.to_string()), Some(&value(j))))
            .collect();
        let appended = log.append("rolling", 0, records).await.unwrap();
        assert_eq!(appended.base_offset, i as i64);
    }
    let p = broker
        .server
        .as_ref()
        .unwrap()
        .broker
        .partition("rolling", 0)
        .unwrap();
    assert!(p.log.segment_count() >= 4, "{}", p.log.segment_count());
    assert_eq!(p.log.durable_offset(), 60, "flush.messages=1 was applied");
    // From the start (older segments) and from near the end (the tail).
    for from in [0i64, 55] {
        let mut at = from;
        while at < 60 {
            let got = log
                .read("rolling", 0, at, 8 << 10, Duration::ZERO)
                .await
                .unwrap();
            assert!(!got.is_empty(), "from {at}");
            for c in got {
                assert_eq!(c.offset, at);
                let expected = value(at as usize);
                assert_eq!(c.record.value.as_deref(), Some(expected.as_bytes()));
                at += 1;
            }
        }
    }
    broker.stop().await;
}

/// Polls `member` until it has `count` records or `secs` pass, committing after each poll.
async fn drain(
    member: &mut Box<dyn GroupConsumer>,
    seen: &mut Vec<(i32, i64)>,
    count: usize,
    secs: u64,
) {
    within(secs, async {
        while seen.len() < count {
            let got = member.poll(Duration::from_millis(200)).await.unwrap();
            let mut commits = Vec::new();
            for c in &got {
                seen.push((c.partition, c.offset));
                commits.push((c.topic.to_string(), c.partition, c.offset + 1));
            }
            if !commits.is_empty() {
                member.commit(&commits).await.unwrap();
            }
        }
    })
    .await;
}

async fn wait_for_assignment(members: &[&dyn GroupConsumer], sizes: &[usize], secs: u64) {
    within(secs, async {
        loop {
            let now: Vec<usize> = members.iter().map(|m| m.assignment().len()).collect();
            if now == sizes {
                let all: BTreeSet<(String, i32)> =
                    members.iter().flat_map(|m| m.assignment()).collect();
                assert_eq!(
                    all.len(),
                    sizes.iter().sum::<usize>(),
                    "a partition is owned twice"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_members_share_partitions_and_take_over_when_one_leaves() {
    let broker = TestBroker::start().await;
    let log = log_of(&broker);
    log.ensure_topic(&spec("fanout", 4)).await.unwrap();
    for i in 0..40 {
        log.append("fanout", i % 4, vec![record(None, Some(&format!("m{i}")))])
            .await
            .unwrap();
    }
    let mut a = log.join_group(options("workers", "fanout")).await.unwrap();
    let mut b = log.join_group(options("workers", "fanout")).await.unwrap();
    assert_ne!(a.member_id(), b.member_id());
    wait_for_assignment(&[a.as_ref(), b.as_ref()], &[2, 2], 30).await;

    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    within(30, async {
        while seen_a.len() + seen_b.len() < 40 {
            for (m, seen) in [(&mut a, &mut seen_a), (&mut b, &mut seen_b)] {
                let got = m.poll(Duration::from_millis(100)).await.unwrap();
                let commits: Vec<_> = got
                    .iter()
                    .map(|c| (c.topic.to_string(), c.partition, c.offset + 1))
                    .collect();
                seen.extend(got.iter().map(|c| (c.partition, c.offset)));
                if !commits.is_empty() {
                    m.commit(&commits).await.unwrap();
                }
            }
        }
    })
    .await;
    // Each read only its own partitions.
    let parts_a: BTreeSet<i32> = seen_a.iter().map(|(p, _)| *p).collect();
    let parts_b: BTreeSet<i32> = seen_b.iter().map(|(p, _)| *p).collect();
    assert!(parts_a.is_disjoint(&parts_b), "{parts_a:?} {parts_b:?}");

    // The group is a KIP-848 group the admin side can see.
    let described = broker
        .server
        .as_ref()
        .unwrap()
        .broker
        .groups
        .call(|r| r.coordinator.describe_consumer_group("workers"))
        .await
        .unwrap()
        .expect("group");
    assert_eq!(described.members.len(), 2);
    assert_eq!(described.state, "Stable");

    // One leaves: the other takes every partition and continues from the commits.
    a.close().await.unwrap();
    wait_for_assignment(&[b.as_ref()], &[4], 30).await;
    for i in 40..60 {
        log.append("fanout", i % 4, vec![record(None, Some(&format!("m{i}")))])
            .await
            .unwrap();
    }
    let before = seen_b.len();
    drain(&mut b, &mut seen_b, before + 20, 30).await;
    let mut all: Vec<(i32, i64)> = seen_a.iter().chain(&seen_b).copied().collect();
    let total = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), total, "a record was delivered twice");
    assert_eq!(total, 60);
    b.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_member_resumes_from_commits_after_a_broker_restart() {
    let mut broker = TestBroker::start().await;
    let log = log_of(&broker);
    log.ensure_topic(&spec("resume", 1)).await.unwrap();
    let batch: Vec<Record> = (0..20)
        .map(|i| record(None, Some(&format!("m{i}"))))
        .collect();
    log.append("resume", 0, batch).await.unwrap();
    let mut member = log.join_group(options("resumers", "resume")).await.unwrap();
    wait_for_assignment(&[member.as_ref()], &[1], 30).await;
    let got = within(30, member.poll(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(got.len(), 20);
    member.commit(&[("resume".into(), 0, 10)]).await.unwrap();
    member.close().await.unwrap();

    broker.restart().await;
    let log = log_of(&broker);
    let mut member = log.join_group(options("resumers", "resume")).await.unwrap();
    wait_for_assignment(&[member.as_ref()], &[1], 30).await;
    let got = within(30, member.poll(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(got.first().map(|c| c.offset), Some(10));
    assert_eq!(got.len(), 10);
    member.close().await.unwrap();

    // A new group that starts from the end sees only what comes next.
    let mut latest = log
        .join_group(GroupOptions {
            start_from: StartFrom::Latest,
            ..options("tailers", "resume")
        })
        .await
        .unwrap();
    wait_for_assignment(&[latest.as_ref()], &[1], 30).await;
    assert!(latest
        .poll(Duration::from_millis(200))
        .await
        .unwrap()
        .is_empty());
    log.append("resume", 0, vec![record(None, Some("new"))])
        .await
        .unwrap();
    let got = within(30, latest.poll(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(got.iter().map(|c| c.offset).collect::<Vec<_>>(), [20]);
    latest.close().await.unwrap();
    broker.stop().await;
}
