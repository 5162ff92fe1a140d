//! Shared helpers for the Chorus benchmarks in `benches/benches/`.
//!
//! Every benchmark measures a reference in the same run (plain file I/O, a mock cluster, ...)
//! and prints its own number next to it as a ratio, because absolute times on shared machines
//! say little.

pub mod floor;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `CHORUS_BENCH_QUICK` is set: a short smoke run.
pub fn quick() -> bool {
    std::env::var_os("CHORUS_BENCH_QUICK").is_some()
}

/// Whether part `name` of a benchmark is to run: `CHORUS_BENCH_ONLY` lists the wanted
/// parts, comma-separated; unset, every part runs.
pub fn wanted(name: &str) -> bool {
    std::env::var("CHORUS_BENCH_ONLY").map_or(true, |only| only.split(',').any(|w| w == name))
}

/// Runs `f` and returns how long it took.
pub fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed(), out)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Bytes per second in MB/s (10^6).
pub fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// Prints a Markdown table so the output can go straight into the README.
pub fn print_table(title: &str, header: &[&str], rows: &[Vec<String>]) {
    println!("\n### {title}\n");
    println!("| {} |", header.join(" | "));
    println!(
        "|{}|",
        header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for row in rows {
        println!("| {} |", row.join(" | "));
    }
}

/// Human-readable size: 1 KiB, 16 KiB, 1 MiB.
pub fn size_label(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes % (1 << 10) == 0 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// Percentile (0..=100) of already sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// One writer, `write_all` + `fdatasync` per 1 MiB, for `duration`, in `dir`: MB/s. The
/// reference for durable appends.
pub fn fsync_per_mib(dir: &std::path::Path, duration: Duration) -> f64 {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("fsync-reference")).expect("reference file");
    let chunk = vec![7u8; 1 << 20];
    let start = Instant::now();
    let mut bytes = 0u64;
    while start.elapsed() < duration {
        f.write_all(&chunk).expect("write");
        f.sync_data().expect("fdatasync");
        bytes += chunk.len() as u64;
    }
    let elapsed = start.elapsed();
    let _ = std::fs::remove_file(dir.join("fsync-reference"));
    mb_per_s(bytes, elapsed)
}

/// `write_all` of `bytes` in 1 MiB chunks into a new file `name` in `dir`, no sync: MB/s.
/// The ceiling for appends that grow the page cache. The file is kept, so the pages stay
/// in use and a later writer cannot reuse them.
pub fn page_cache_write(dir: &std::path::Path, name: &str, bytes: u64) -> f64 {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join(name)).expect("reference file");
    let chunk = vec![7u8; 1 << 20];
    let start = Instant::now();
    let mut written = 0u64;
    while written < bytes {
        let n = (bytes - written).min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).expect("write");
        written += n as u64;
    }
    mb_per_s(written, start.elapsed())
}

/// A `chorus serve` child process, with a data directory of its own (removed with it) or
/// one it was given.
#[derive(Debug)]
pub struct Chorus {
    child: Child,
    pub bootstrap: String,
    /// The HTTP listener (admin endpoints, chat API, WebSocket gateway).
    pub http: String,
    _dir: Option<tempfile::TempDir>,
}

impl Chorus {
    pub fn start() -> Chorus {
        Self::start_with(&[])
    }

    /// Builds (if needed) and starts `target/release/chorus` with `extra` flags, and waits
    /// until it listens. The ports are picked free just before the start, so another
    /// process can take one in between; a server that exits at start-up is started again
    /// on new ports.
    pub fn start_with(extra: &[&str]) -> Chorus {
        let dir = tempfile::tempdir().expect("data dir");
        let mut chorus = Self::start_in(dir.path(), extra);
        chorus._dir = Some(dir);
        chorus
    }

    /// [`Chorus::start_with`] on the data directory `dir`, which outlives the server (a
    /// later server can start on what this one wrote; see [`Chorus::stop`]).
    pub fn start_in(dir: &std::path::Path, extra: &[&str]) -> Chorus {
        let bin = chorus_binary();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match Self::try_start(&bin, dir, extra) {
                Some(chorus) => return chorus,
                None if attempts < 3 => eprintln!("chorus exited at start-up; retrying"),
                None => panic!("chorus exited at start-up {attempts} times"),
            }
        }
    }

    /// Stops the server as an operator would (SIGTERM, so it closes its logs cleanly) and
    /// waits up to 30 s for it to exit before killing it.
    pub fn stop(mut self) {
        // SAFETY: kill(2) with a pid this process spawned and has not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("chorus did not exit within 30 s of SIGTERM; killing it");
    }

    /// One start; `None` when the server exited before it listened.
    fn try_start(bin: &std::path::Path, dir: &std::path::Path, extra: &[&str]) -> Option<Chorus> {
        let port = free_port();
        let http = free_port();
        let bootstrap = format!("127.0.0.1:{port}");
        let http_addr = format!("127.0.0.1:{http}");
        let mut child = Command::new(bin)
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--listen", &bootstrap])
            .args(["--http-listen", &http_addr])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        for addr in [&bootstrap, &http_addr] {
            while std::net::TcpStream::connect(addr).is_err() {
                if let Ok(Some(_)) = child.try_wait() {
                    return None;
                }
                assert!(
                    Instant::now() < deadline,
                    "chorus did not start listening on {addr}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // A connect can succeed on a port the server failed to take (another process
        // has it), so check a moment later that the server is still there.
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        Some(Chorus {
            child,
            bootstrap,
            http: http_addr,
            _dir: None,
        })
    }

    /// The server's resident memory in bytes (from `/proc`).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// CPU time the server's threads have used so far.
    pub fn cpu_time(&self) -> Duration {
        process_cpu_time(self.child.id())
    }
}

/// CPU time all threads of process `pid` have used so far, summed from each thread's
/// `schedstat` (nanoseconds, unlike the 10 ms ticks of `/proc/<pid>/stat`). Threads that
/// have exited are not counted.
pub fn process_cpu_time(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

impl Drop for Chorus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/release/chorus`, built first so it matches the sources.
fn chorus_binary() -> PathBuf {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-p",
            "chorus-broker",
            "--bin",
            "chorus",
            "--manifest-path",
        ])
        .arg(manifest)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building chorus failed");
    let exe = std::env::current_exe().expect("bench path");
    // target/release/deps/kafka-<hash> -> target/release/chorus
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|release| release.join("chorus"))
        .expect("target directory")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Client settings for the benchmarks' WebSocket load generators. tungstenite zero-fills
/// `read_buffer_size` bytes before every read (128 KiB by default); with that default the
/// chat benchmark's clients spent a fifth of the machine's CPU in memset during a fan-out,
/// time taken from the server they measure. The frames here are a few hundred bytes.
pub fn ws_client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096)
}

/// The fields of a pushed chat frame the load generators look at, borrowed from its text
/// (no JSON tree: the generators share the cores with the server they measure).
#[derive(Debug, serde::Deserialize)]
pub struct Pushed<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub msg_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub content: Option<std::borrow::Cow<'a, str>>,
}

impl<'a> Pushed<'a> {
    pub fn parse(text: &'a str) -> serde_json::Result<Pushed<'a>> {
        serde_json::from_str(text)
    }

    /// The `ack` frame for this push.
    pub fn ack(&self) -> String {
        let msg_id = serde_json::to_string(&self.msg_id).expect("a string");
        format!(r#"{{"type":"ack","msg_id":{msg_id}}}"#)
    }
}
