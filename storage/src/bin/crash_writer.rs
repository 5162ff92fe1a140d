//! Child process of the storage crash test (`tests/it/crash.rs`).
//!
//! Usage: `chorus-storage-crash-writer DIR SEED`. Opens the log in DIR with `flush.messages=1`
//! (every append durable before it returns), appends single-record batches whose key is
//! `SEED-N` and whose value is derived from (SEED, N), and after each append prints
//! `ACK N OFFSET` on stdout, until it is killed.

use std::io::Write;

use chorus_storage::batch::BatchBuilder;
use chorus_storage::{Log, LogConfig, LogOptions};

/// The value the test expects for record `n` of writer `seed`.
pub fn value(seed: u64, n: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let len = match next() % 10 {
        0 => 100_000 + (next() % 400_000) as usize,
        _ => 10 + (next() % 5_000) as usize,
    };
    (0..len).map(|_| next() as u8).collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(seed)) = (args.next(), args.next()) else {
        eprintln!("usage: chorus-storage-crash-writer DIR SEED");
        std::process::exit(2);
    };
    let seed: u64 = seed.parse().expect("numeric seed");
    let config = LogConfig::with_overrides([
        ("flush.messages", "1"),
        ("segment.bytes", "1048576"),
        ("max.message.bytes", "1000000"),
    ])
    .expect("valid config");
    let log = Log::open(&dir, LogOptions::with_config(config)).expect("open log");
    let stdout = std::io::stdout();
    for n in 0.. {
        let key = format!("{seed}-{n}");
        let mut batch = BatchBuilder::new()
            .record(Some(key.as_bytes()), Some(&value(seed, n)), n as i64)
            .build()
            .expect("build batch");
        let info = log.append(&mut batch).expect("append");
        let mut out = stdout.lock();
        writeln!(out, "ACK {n} {}", info.first_offset).expect("stdout");
        out.flush().expect("stdout");
    }
}
