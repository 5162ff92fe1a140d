//! A property test against a simple in-memory model of a log, including reopen (clean and
//! after a "crash", i.e. without close).

use proptest::prelude::*;

use chorus_storage::batch::BatchBuilder;
use chorus_storage::{Log, LogConfig, LogOptions, ReadLimits};

use crate::common::read_all;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u16>),
    Read(f64),
    Truncate(f64),
    DeleteRecords(f64),
    Roll,
    Reopen { clean: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(0u16..600, 1..5).prop_map(Op::Append),
        3 => (0.0..=1.0f64).prop_map(Op::Read),
        1 => (0.0..=1.0f64).prop_map(Op::Truncate),
        1 => (0.0..=1.0f64).prop_map(Op::DeleteRecords),
        1 => Just(Op::Roll),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

#[derive(Debug, Default)]
struct Model {
    /// (base offset, values) of every batch still in the log.
    batches: Vec<(i64, Vec<Vec<u8>>)>,
    log_start: i64,
    log_end: i64,
    counter: u64,
}

impl Model {
    fn records_from(&self, from: i64) -> Vec<(i64, Vec<u8>)> {
        self.batches
            .iter()
            .flat_map(|(base, vals)| {
                vals.iter()
                    .enumerate()
                    .map(move |(i, v)| (base + i as i64, v.clone()))
            })
            .filter(|(o, _)| *o >= from)
            .collect()
    }

    fn pick(&self, at: f64) -> i64 {
        let span = self.log_end - self.log_start;
        self.log_start + ((span as f64) * at).round() as i64
    }
}

fn config() -> LogConfig {
    LogConfig::with_overrides([("segment.bytes", "2048"), ("index.interval.bytes", "200")]).unwrap()
}

fn check_all(log: &Log, model: &Model) {
    assert_eq!(log.log_start_offset(), model.log_start);
    assert_eq!(log.log_end_offset(), model.log_end);
    let actual: Vec<(i64, Vec<u8>)> = read_all(log, model.log_start)
        .into_iter()
        .map(|r| (r.offset, r.value.unwrap()))
        .collect();
    assert_eq!(actual, model.records_from(model.log_start));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_log_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), LogOptions::with_config(config())).unwrap();
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Append(lens) => {
                    let mut b = BatchBuilder::new();
                    let mut vals = Vec::new();
                    for len in lens {
                        model.counter += 1;
                        let v: Vec<u8> = format!("{}:", model.counter)
                            .bytes()
                            .cycle()
                            .take(len as usize + 1)
                            .collect();
                        b = b.record(None, Some(&v), model.counter as i64);
                        vals.push(v);
                    }
                    let info = log.append(&mut b.build().unwrap()).unwrap();
                    prop_assert_eq!(info.first_offset, model.log_end);
                    model.batches.push((model.log_end, vals.clone()));
                    model.log_end += vals.len() as i64;
                }
                Op::Read(at) => {
                    let offset = model.pick(at);
                    let read = log.read(offset, ReadLimits::bytes(1)).unwrap();
                    if offset == model.log_end {
                        prop_assert!(read.bytes.is_empty());
                    } else {
                        let (_, h, _) = read.batches().next().unwrap();
                        prop_assert!(h.base_offset <= offset && offset <= h.last_offset());
                        let (base, vals) = model
                            .batches
                            .iter()
                            .find(|(b, v)| *b <= offset && offset < b + v.len() as i64)
                            .unwrap();
                        prop_assert_eq!(h.base_offset, *base);
                        prop_assert_eq!(h.records_count as usize, vals.len());
                    }
                }
                Op::Truncate(at) => {
                    let target = model.pick(at);
                    let expected = model
                        .batches
                        .iter()
                        .find(|(b, v)| *b <= target && target < b + v.len() as i64)
                        .map_or(target, |(b, _)| *b);
                    let new_end = log.truncate_to(target).unwrap();
                    prop_assert_eq!(new_end, expected.min(model.log_end));
                    if new_end < model.log_end {
                        model.batches.retain(|(b, _)| *b < new_end);
                        model.log_end = new_end;
                        model.log_start = model.log_start.min(new_end);
                    }
                }
                Op::DeleteRecords(at) => {
                    let target = model.pick(at);
                    let start = log.delete_records_before(target).unwrap();
                    model.log_start = model.log_start.max(target);
                    prop_assert_eq!(start, model.log_start);
                }
                Op::Roll => log.roll().unwrap(),
                Op::Reopen { clean } => {
                    if clean {
                        log.close().unwrap();
                    }
                    drop(log);
                    log = Log::open(dir.path(), LogOptions::with_config(config())).unwrap();
                    prop_assert!(log.recovery_report().truncated.is_empty());
                    check_all(&log, &model);
                }
            }
        }
        check_all(&log, &model);
    }
}
