//! Consumer groups with librdkafka: assignors, rebalances when members come and go,
//! committed offsets across broker restarts, static membership, and no loss or duplication
//! across a rebalance with manual commits.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::common::{rdkafka_config, within, TestBroker};

async fn broker_with_partitions(n: u32) -> TestBroker {
    TestBroker::start_with(|c| c.num_partitions = n).await
}

async fn produce(bootstrap: &str, topic: &str, count: usize) {
    let producer: FutureProducer = rdkafka_config(bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let sends = (0..count).map(|i| {
        let key = format!("k{i}");
        let payload = format!("m{i}");
        let producer = &producer;
        async move {
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .expect("delivered");
        }
    });
    within(60, futures_util::future::join_all(sends)).await;
}

fn group_config(bootstrap: &str, group: &str, strategy: &str) -> rdkafka::ClientConfig {
    let mut c = rdkafka_config(bootstrap);
    c.set("group.id", group)
        .set("partition.assignment.strategy", strategy)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100");
    c
}

/// A group member polled on its own task, recording what it receives.
struct Member {
    consumer: Arc<StreamConsumer>,
    received: Arc<Mutex<Vec<(i32, i64, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Member {
    fn start(config: &rdkafka::ClientConfig, topic: &str, commit_each: bool) -> Member {
        let consumer: Arc<StreamConsumer> = Arc::new(config.create().unwrap());
        consumer.subscribe(&[topic]).unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let (c, r) = (consumer.clone(), received.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(200), c.recv()).await
                else {
                    continue;
                };
                let payload = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
                let (partition, offset) = (m.partition(), m.offset());
                // With manual commits a message counts as processed only once its commit
                // succeeded; a failed commit means the next owner processes it again.
                if commit_each && c.commit_message(&m, CommitMode::Sync).is_err() {
                    continue;
                }
                r.lock().unwrap().push((partition, offset, payload));
            }
        });
        Member {
            consumer,
            received,
            task,
        }
    }

    fn partitions(&self) -> BTreeSet<i32> {
        self.consumer
            .assignment()
            .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default()
    }

    fn stop(self) {
        self.task.abort();
        // Dropping the consumer closes it: a dynamic member sends LeaveGroup.
        drop(self.consumer);
    }
}

/// Waits until the members' assignments have the given sizes and cover `total` partitions
/// exactly once.
async fn wait_for_assignment(members: &[&Member], sizes: &[usize], total: usize, secs: u64) {
    within(secs, async {
        loop {
            let parts: Vec<BTreeSet<i32>> = members.iter().map(|m| m.partitions()).collect();
            let mut got: Vec<usize> = parts.iter().map(BTreeSet::len).collect();
            got.sort_unstable();
            let union: BTreeSet<i32> = parts.iter().flatten().copied().collect();
            let sum: usize = parts.iter().map(BTreeSet::len).sum();
            if got == sizes && union.len() == total && sum == total {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

async fn three_members_share_six_partitions(strategy: &str) {
    let broker = broker_with_partitions(6).await;
    let topic = format!("shared-{strategy}");
    produce(&broker.bootstrap(), &topic, 60).await;
    let config = group_config(&broker.bootstrap(), &format!("g-{strategy}"), strategy);
    let members: Vec<Member> = (0..3)
        .map(|_| Member::start(&config, &topic, false))
        .collect();
    let refs: Vec<&Member> = members.iter().collect();
    wait_for_assignment(&refs, &[2, 2, 2], 6, 30).await;
    within(30, async {
        loop {
            let n: usize = members
                .iter()
                .map(|m| m.received.lock().unwrap().len())
                .sum();
            if n >= 60 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // A member leaves: its partitions move to the others well within the session timeout.
    let mut members = members;
    let leaving = members.pop().unwrap();
    let started = std::time::Instant::now();
    leaving.stop();
    let refs: Vec<&Member> = members.iter().collect();
    wait_for_assignment(&refs, &[3, 3], 6, 30).await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "rebalance after a leave took {:?}",
        started.elapsed()
    );
    for m in members {
        m.stop();
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_group_of_three_rebalances_when_one_leaves() {
    three_members_share_six_partitions("range").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn roundrobin_group_of_three_rebalances_when_one_leaves() {
    three_members_share_six_partitions("roundrobin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cooperative_sticky_group_of_three_rebalances_when_one_leaves() {
    three_members_share_six_partitions("cooperative-sticky").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fresh_consumer_gets_data_within_the_initial_delay_plus_a_round_trip() {
    let broker = TestBroker::start_with(|c| {
        c.num_partitions = 1;
        c.groups.initial_rebalance_delay_ms = 1000;
    })
    .await;
    produce(&broker.bootstrap(), "fresh", 1).await;
    eprintln!("DBG produced");
    let started = std::time::Instant::now();
    let consumer: StreamConsumer = group_config(&broker.bootstrap(), "fresh-group", "range")
        .create()
        .unwrap();
    consumer.subscribe(&["fresh"]).unwrap();
    // Copy the payload out: librdkafka will not close a consumer while one of its messages
    // is still alive.
    let payload = within(20, consumer.recv())
        .await
        .unwrap()
        .payload()
        .map(<[u8]>::to_vec);
    assert_eq!(payload.as_deref(), Some(&b"m0"[..]));
    // 1 s initial delay; not half a session timeout or more.
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "first message after {:?}",
        started.elapsed()
    );
    drop(consumer);
    broker.stop().await;
    eprintln!("DBG stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn committed_offsets_survive_a_broker_restart() {
    let mut broker = broker_with_partitions(2).await;
    produce(&broker.bootstrap(), "durable", 20).await;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("durable", 0, Offset::Offset(4))
        .unwrap();
    tpl.add_partition_offset("durable", 1, Offset::Offset(7))
        .unwrap();
    {
        let consumer: StreamConsumer = group_config(&broker.bootstrap(), "keeper", "range")
            .create()
            .unwrap();
        consumer.subscribe(&["durable"]).unwrap();
        let _ = within(20, consumer.recv()).await.unwrap();
        within(10, async { consumer.commit(&tpl, CommitMode::Sync) })
            .await
            .unwrap();
    }
    broker.restart().await;
    let consumer: BaseConsumer = group_config(&broker.bootstrap(), "keeper", "range")
        .create()
        .unwrap();
    let mut ask = TopicPartitionList::new();
    ask.add_partition("durable", 0);
    ask.add_partition("durable", 1);
    let committed = tokio::task::spawn_blocking(move || {
        consumer.committed_offsets(ask, Duration::from_secs(10))
    })
    .await
    .unwrap()
    .unwrap();
    let offsets: Vec<Offset> = committed.elements().iter().map(|e| e.offset()).collect();
    assert_eq!(offsets, vec![Offset::Offset(4), Offset::Offset(7)]);

    // A consumer of the group resumes from the committed positions.
    let consumer: StreamConsumer = group_config(&broker.bootstrap(), "keeper", "range")
        .create()
        .unwrap();
    consumer.subscribe(&["durable"]).unwrap();
    let mut first = BTreeMap::new();
    within(20, async {
        while first.len() < 2 {
            let m = consumer.recv().await.unwrap();
            first.entry(m.partition()).or_insert(m.offset());
        }
    })
    .await;
    assert_eq!(first, BTreeMap::from([(0, 4), (1, 7)]));
    drop(consumer);
    broker.stop().await;
}

/// Counts rebalances a member goes through.
struct Counting(Arc<AtomicUsize>);
impl ClientContext for Counting {}
impl ConsumerContext for Counting {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Assign(_)) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_static_member_rejoins_without_a_rebalance() {
    let broker = broker_with_partitions(4).await;
    produce(&broker.bootstrap(), "static", 8).await;
    let config = |instance: &str| {
        let mut c = group_config(&broker.bootstrap(), "statics", "range");
        c.set("group.instance.id", instance);
        c
    };
    let rebalances = Arc::new(AtomicUsize::new(0));
    let steady: StreamConsumer<Counting> = config("steady")
        .create_with_context(Counting(rebalances.clone()))
        .unwrap();
    steady.subscribe(&["static"]).unwrap();
    let steady = Arc::new(steady);
    let poller = {
        let s = steady.clone();
        tokio::spawn(async move {
            loop {
                let _ = tokio::time::timeout(Duration::from_millis(200), s.recv()).await;
            }
        })
    };
    let flaky = Member::start(&config("flaky"), "static", false);
    within(30, async {
        loop {
            let mine = steady.assignment().map(|t| t.count()).unwrap_or_default();
            if mine == 2 && flaky.partitions().len() == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let before = flaky.partitions();
    let rebalances_before = rebalances.load(Ordering::SeqCst);
    // A static member closing does not leave the group; coming back under the same
    // instance id within the session timeout gets the same partitions, and nobody else
    // rebalances.
    flaky.stop();
    let again = Member::start(&config("flaky"), "static", false);
    within(20, async {
        while again.partitions() != before {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rebalances.load(Ordering::SeqCst), rebalances_before);
    assert_eq!(steady.assignment().unwrap().count(), 2);
    again.stop();
    poller.abort();
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_message_is_lost_or_duplicated_across_rebalances_with_manual_commits() {
    let broker = broker_with_partitions(6).await;
    let topic = "exactly";
    let total = 600;
    produce(&broker.bootstrap(), topic, total / 2).await;
    let config = group_config(&broker.bootstrap(), "careful", "roundrobin");
    let first = Member::start(&config, topic, true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = Member::start(&config, topic, true);
    produce(&broker.bootstrap(), topic, total / 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first_received = first.received.clone();
    first.stop();
    let third = Member::start(&config, topic, true);
    let all = [
        first_received,
        second.received.clone(),
        third.received.clone(),
    ];
    within(60, async {
        loop {
            let n: usize = all.iter().map(|r| r.lock().unwrap().len()).sum();
            if n >= total {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for r in &all {
        for (p, o, _) in r.lock().unwrap().iter() {
            *seen.entry((*p, *o)).or_default() += 1;
        }
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "processed twice: {dups:?}");
    assert_eq!(seen.len(), total, "every message processed");
    second.stop();
    third.stop();
    broker.stop().await;
}

/// KIP-848 with librdkafka's `group.protocol=consumer`: the broker assigns, members
/// converge by heartbeats, and a leaving member's partitions move to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kip848_group_of_three_shares_partitions_and_rebalances_when_one_leaves() {
    let broker = broker_with_partitions(6).await;
    produce(&broker.bootstrap(), "next-gen", 60).await;
    let mut config = rdkafka_config(&broker.bootstrap());
    config
        .set("group.id", "kip848")
        .set("group.protocol", "consumer")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100");
    let members: Vec<Member> = (0..3)
        .map(|_| Member::start(&config, "next-gen", true))
        .collect();
    let refs: Vec<&Member> = members.iter().collect();
    wait_for_assignment(&refs, &[2, 2, 2], 6, 30).await;
    within(30, async {
        loop {
            let n: usize = members
                .iter()
                .map(|m| m.received.lock().unwrap().len())
                .sum();
            if n >= 60 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let mut members = members;
    members.pop().unwrap().stop();
    let refs: Vec<&Member> = members.iter().collect();
    wait_for_assignment(&refs, &[3, 3], 6, 30).await;
    // Every message was committed with a member epoch (whichever member read it; the
    // first member to get partitions may read them all before the others join).
    let committed: i64 = broker
        .server
        .as_ref()
        .unwrap()
        .broker
        .groups
        .call(|r| r.coordinator.fetch_offsets("kip848", None))
        .await
        .unwrap()
        .iter()
        .filter_map(|f| f.committed.as_ref().map(|c| c.offset))
        .sum();
    assert_eq!(committed, 60);
    for m in members {
        m.stop();
    }
    broker.stop().await;
}
