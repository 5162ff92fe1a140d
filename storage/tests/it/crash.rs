//! Kill a writer with SIGKILL at random moments; every offset it was told is durable must be
//! there, intact, after recovery.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use chorus_storage::{LogConfig, ReadLimits};

#[path = "../../src/bin/crash_writer.rs"]
#[expect(
    dead_code,
    reason = "only `value` is used here; `main` belongs to the child"
)]
mod writer;

struct Ack {
    seed: u64,
    n: u64,
    offset: i64,
}

fn check(log: &chorus_storage::Log, acks: &[Ack]) {
    for ack in acks {
        let read = log
            .read(ack.offset, ReadLimits::bytes(1))
            .unwrap_or_else(|e| panic!("acknowledged offset {} unreadable: {e}", ack.offset));
        let (_, header, bytes) = read.batches().next().unwrap_or_else(|| {
            panic!(
                "acknowledged offset {} missing (log end {})",
                ack.offset,
                log.log_end_offset()
            )
        });
        assert_eq!(header.base_offset, ack.offset);
        chorus_storage::batch::validate(bytes, chorus_storage::batch::Strictness::Stored)
            .expect("acknowledged batch is intact");
        let mut seen = None;
        chorus_storage::batch::for_each_record(bytes, 1 << 24, |r| {
            seen = Some((r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec)));
        })
        .unwrap();
        let (key, value) = seen.expect("one record");
        assert_eq!(key.unwrap(), format!("{}-{}", ack.seed, ack.n).into_bytes());
        assert!(
            value.unwrap() == writer::value(ack.seed, ack.n),
            "value of offset {}",
            ack.offset
        );
    }
}

#[test]
fn sigkill_at_random_moments_never_loses_an_acknowledged_append() {
    let iterations: u64 = std::env::var("CHORUS_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        std::env::var("CHORUS_CRASH_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(rand::random),
    );
    let mut acks: Vec<Ack> = Vec::new();
    let mut truncations = 0;
    for seed in 1..=iterations {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chorus-storage-crash-writer"))
            .arg(dir.path())
            .arg(seed.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the writer");
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..200)));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        let stdout = child.stdout.take().unwrap();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let mut parts = line.split_whitespace().skip(1);
            let n = parts.next().unwrap().parse().unwrap();
            let offset = parts.next().unwrap().parse().unwrap();
            acks.push(Ack { seed, n, offset });
        }

        let log = chorus_storage::Log::open(
            dir.path(),
            chorus_storage::LogOptions::with_config(LogConfig::default()),
        )
        .expect("recovery opens the log");
        truncations += log.recovery_report().truncated.len();
        if let Some(last) = acks.last() {
            assert!(log.log_end_offset() > last.offset);
        }
        check(&log, &acks);
        if rng.gen_bool(0.3) {
            log.close().unwrap();
        }
    }
    assert!(!acks.is_empty(), "the writer never acknowledged anything");
    eprintln!(
        "{} acknowledged appends over {iterations} kills; {truncations} torn tails cut",
        acks.len()
    );
}
