//! The log manager: topics, partitions, configs, persistence and background work.

use std::collections::BTreeMap;

use chorus_storage::manager::BackgroundIntervals;
use chorus_storage::{LogError, LogManager, ManagerOptions};

use crate::common::*;

fn options(dir: &std::path::Path) -> ManagerOptions {
    ManagerOptions {
        background: None,
        ..ManagerOptions::new(dir)
    }
}

fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn topics_partitions_and_configs_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let m = LogManager::open(options(dir.path())).unwrap();
        let t = m
            .create_topic("orders", 3, cfg(&[("retention.ms", "1000")]))
            .unwrap();
        id = t.id;
        m.log("orders", 2)
            .unwrap()
            .append(&mut batch(2, b"x", 1))
            .unwrap();
        m.create_partitions("orders", 5).unwrap();
        m.set_topic_configs("orders", cfg(&[("retention.ms", "2000")]))
            .unwrap();
        assert_eq!(m.log("orders", 0).unwrap().config().retention_ms, 2000);
        m.shutdown().unwrap();
    }
    let m = LogManager::open(options(dir.path())).unwrap();
    let t = m.topic("orders").unwrap();
    assert_eq!(t.id, id);
    assert_eq!(t.partitions, 5);
    assert_eq!(t.configs, cfg(&[("retention.ms", "2000")]));
    assert_eq!(m.topic_config("orders").unwrap().retention_ms, 2000);
    assert_eq!(m.log("orders", 2).unwrap().log_end_offset(), 2);
    assert_eq!(m.log("orders", 4).unwrap().log_end_offset(), 0);
    assert!(m.log("orders", 4).unwrap().recovery_report().clean);
}

#[test]
fn new_partitions_stop_at_the_budget_and_stored_ones_always_open() {
    let dir = tempfile::tempdir().unwrap();
    let budget = |max| ManagerOptions {
        max_partitions: max,
        ..options(dir.path())
    };
    {
        let m = LogManager::open(budget(6)).unwrap();
        m.create_topic("a", 4, BTreeMap::new()).unwrap();
        assert!(matches!(
            m.validate_new_topic("b", 3, &BTreeMap::new()),
            Err(LogError::PartitionLimit {
                adding: 3,
                held: 4,
                max: 6,
                ..
            })
        ));
        assert!(matches!(
            m.create_topic("b", 3, BTreeMap::new()),
            Err(LogError::PartitionLimit { .. })
        ));
        assert!(matches!(
            m.create_partitions("a", 7),
            Err(LogError::PartitionLimit { adding: 3, .. })
        ));
        // Nothing was created by the refusals; the budget's last two still can be.
        assert!(m.topic("b").is_none());
        assert_eq!(m.topic("a").unwrap().partitions, 4);
        assert!(!dir.path().join("b-0").exists());
        m.create_partitions("a", 6).unwrap();
        m.shutdown().unwrap();
    }
    // A lower budget later does not hide what is stored; it only refuses more.
    let m = LogManager::open(budget(2)).unwrap();
    assert_eq!(m.topic("a").unwrap().partitions, 6);
    assert!(m.log("a", 5).is_ok());
    assert!(matches!(
        m.create_topic("c", 1, BTreeMap::new()),
        Err(LogError::PartitionLimit {
            held: 6,
            max: 2,
            ..
        })
    ));
    m.delete_topic("a").unwrap();
    m.create_topic("c", 2, BTreeMap::new()).unwrap();
}

#[test]
fn bad_requests_get_typed_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let m = LogManager::open(options(dir.path())).unwrap();
    m.create_topic("t", 1, BTreeMap::new()).unwrap();
    assert!(matches!(
        m.create_topic("t", 1, BTreeMap::new()),
        Err(LogError::TopicExists { .. })
    ));
    assert!(matches!(
        m.create_topic("bad/name", 1, BTreeMap::new()),
        Err(LogError::InvalidTopicName { .. })
    ));
    assert!(matches!(
        m.create_topic("zero", 0, BTreeMap::new()),
        Err(LogError::InvalidPartitionCount { .. })
    ));
    assert!(matches!(
        m.create_topic("cfg", 1, cfg(&[("retention.ms", "soon")])),
        Err(LogError::Config(_))
    ));
    assert!(matches!(
        m.create_topic("cfg", 1, cfg(&[("no.such.config", "1")])),
        Err(LogError::Config(_))
    ));
    assert!(matches!(
        m.create_partitions("t", 1),
        Err(LogError::InvalidPartitionCount { current: 1, .. })
    ));
    assert!(matches!(
        m.log("t", 1),
        Err(LogError::UnknownPartition { .. })
    ));
    assert!(matches!(
        m.log("nope", 0),
        Err(LogError::UnknownTopic { .. })
    ));
    assert!(matches!(
        m.delete_topic("nope"),
        Err(LogError::UnknownTopic { .. })
    ));
    assert!(matches!(
        m.set_topic_configs("t", cfg(&[("cleanup.policy", "shred")])),
        Err(LogError::Config(_))
    ));
    assert_eq!(m.topics().len(), 1);
    assert!(m.topic("t").unwrap().configs.is_empty());
}

#[test]
fn a_deleted_topic_is_gone_and_its_name_can_be_reused_empty() {
    let dir = tempfile::tempdir().unwrap();
    let m = LogManager::open(options(dir.path())).unwrap();
    m.create_topic("t", 2, BTreeMap::new()).unwrap();
    m.log("t", 0)
        .unwrap()
        .append(&mut batch(3, b"x", 1))
        .unwrap();
    let old = m.log("t", 0).unwrap();
    m.delete_topic("t").unwrap();
    assert!(m.topic("t").is_none());
    assert!(!dir.path().join("t-0").exists());
    assert!(
        old.append(&mut batch(1, b"late", 1)).is_err(),
        "old handle refuses writes"
    );
    m.create_topic("t", 1, BTreeMap::new()).unwrap();
    assert_eq!(m.log("t", 0).unwrap().log_end_offset(), 0);
    drop(m);
    let m = LogManager::open(options(dir.path())).unwrap();
    assert_eq!(m.topic("t").unwrap().partitions, 1);
}

#[test]
fn unknown_directories_are_set_aside_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("ghost-0")).unwrap();
    std::fs::write(dir.path().join("ghost-0").join("x"), b"keep me").unwrap();
    std::fs::create_dir(dir.path().join("old-1.abc.deleted")).unwrap();
    let m = LogManager::open(options(dir.path())).unwrap();
    assert!(!dir.path().join("ghost-0").exists());
    assert!(!dir.path().join("old-1.abc.deleted").exists());
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("ghost-0.stray-"))
        .collect();
    assert_eq!(aside.len(), 1);
    // Creating the topic now starts from an empty log, not the stray data.
    m.create_topic("ghost", 1, BTreeMap::new()).unwrap();
    assert_eq!(m.log("ghost", 0).unwrap().log_end_offset(), 0);
}

#[test]
fn a_partition_that_cannot_be_opened_is_offline_and_the_rest_work() {
    let dir = tempfile::tempdir().unwrap();
    {
        let m = LogManager::open(options(dir.path())).unwrap();
        m.create_topic("t", 2, cfg(&[("segment.bytes", "1024")]))
            .unwrap();
        for p in 0..2 {
            let log = m.log("t", p).unwrap();
            for _ in 0..20 {
                log.append(&mut batch(1, &[5u8; 200], 1)).unwrap();
            }
        }
    }
    // Corrupt a middle segment of partition 0 and drop its checkpoint.
    let p0 = dir.path().join("t-0");
    let mut logs: Vec<_> = std::fs::read_dir(&p0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    let mut bytes = std::fs::read(&logs[1]).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&logs[1], bytes).unwrap();
    std::fs::remove_file(p0.join("partition.checkpoint")).unwrap();

    let m = LogManager::open(options(dir.path())).unwrap();
    assert!(matches!(
        m.log("t", 0),
        Err(LogError::PartitionOffline { partition: 0, .. })
    ));
    assert_eq!(m.log("t", 1).unwrap().log_end_offset(), 20);
}

#[test]
fn broker_defaults_apply_unless_a_topic_overrides_them() {
    let dir = tempfile::tempdir().unwrap();
    let m = LogManager::open(ManagerOptions {
        defaults: cfg(&[("retention.ms", "5000"), ("segment.bytes", "2048")]),
        ..options(dir.path())
    })
    .unwrap();
    m.create_topic("a", 1, BTreeMap::new()).unwrap();
    m.create_topic("b", 1, cfg(&[("retention.ms", "9000")]))
        .unwrap();
    assert_eq!(m.log("a", 0).unwrap().config().retention_ms, 5000);
    assert_eq!(m.log("b", 0).unwrap().config().retention_ms, 9000);
    assert_eq!(m.log("b", 0).unwrap().config().segment_bytes, 2048);
}

#[test]
fn maintenance_applies_retention_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let m = LogManager::open(options(dir.path())).unwrap();
    m.create_topic(
        "sized",
        1,
        cfg(&[("segment.bytes", "1024"), ("retention.bytes", "2048")]),
    )
    .unwrap();
    m.create_topic(
        "compacted",
        1,
        cfg(&[
            ("segment.bytes", "1024"),
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0.1"),
        ]),
    )
    .unwrap();
    for i in 0..40 {
        m.log("sized", 0)
            .unwrap()
            .append(&mut batch(1, &[1u8; 200], i))
            .unwrap();
        m.log("compacted", 0)
            .unwrap()
            .append(&mut keyed("k", Some(&"v".repeat(200)), i))
            .unwrap();
    }
    let outcome = m.run_maintenance();
    assert!(outcome.segments_deleted > 0);
    assert_eq!(outcome.logs_compacted, 1);
    assert!(m.log("sized", 0).unwrap().log_start_offset() > 0);
    let compacted = read_all(&m.log("compacted", 0).unwrap(), 0);
    assert!(compacted.len() < 40);
}

#[test]
fn background_threads_flush_by_time_and_stop_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let m = LogManager::open(ManagerOptions {
        background: Some(BackgroundIntervals {
            flush_check: std::time::Duration::from_millis(10),
            ..BackgroundIntervals::default()
        }),
        ..ManagerOptions::new(dir.path())
    })
    .unwrap();
    m.create_topic("t", 1, cfg(&[("flush.ms", "20")])).unwrap();
    let log = m.log("t", 0).unwrap();
    log.append(&mut batch(1, b"x", 1)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while log.durable_offset() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "flush.ms never synced"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    m.shutdown().unwrap();
    assert!(matches!(
        log.append(&mut batch(1, b"y", 1)),
        Err(LogError::ShutDown)
    ));
}
