//! Finding the installed clients, starting brokers, running client scripts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn required() -> bool {
    std::env::var_os("CHORUS_REQUIRE_COMPAT").is_some()
}

/// The venv's Python with kafka-python, or `None` (after saying why) when it is not
/// installed and not required.
pub fn python() -> Option<PathBuf> {
    let path = std::env::var_os("CHORUS_COMPAT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/compat/venv/bin/python"));
    present(path, "kafka-python (run kafka-compat-tests/test-all.sh)")
}

/// `node_modules` holding kafkajs, or `None` as for [`python`].
pub fn node_modules() -> Option<PathBuf> {
    let path = std::env::var_os("CHORUS_COMPAT_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/compat/node/node_modules"));
    present(
        path.join("kafkajs"),
        "kafkajs (run kafka-compat-tests/test-all.sh)",
    )
    .map(|_| path)
}

fn present(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    assert!(
        !required(),
        "{what} is required but {} is missing",
        path.display()
    );
    eprintln!("skipping: {what} not installed at {}", path.display());
    None
}

pub fn script(relative: &str) -> PathBuf {
    workspace()
        .join("kafka-compat-tests/clients")
        .join(relative)
}

/// `target/<profile>/chorus`, built first (once per test binary) so it matches the sources.
pub fn chorus_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "-p", "chorus-broker", "--bin", "chorus"])
                .arg("--manifest-path")
                .arg(workspace().join("Cargo.toml"))
                .status()
                .expect("run cargo");
            assert!(status.success(), "building chorus failed");
            // target/debug/deps/it-<hash> -> target/debug/chorus
            std::env::current_exe()
                .expect("test binary path")
                .parent()
                .and_then(Path::parent)
                .map(|dir| dir.join("chorus"))
                .expect("target directory")
        })
        .clone()
}

/// The chat fabric's JWT secret in the test processes (client scripts sign with it).
pub const CHAT_SECRET: &str = "compat-secret";

/// A `chorus serve` process with its own data directory, listening on 127.0.0.1 ports
/// the kernel picks (read back from its startup line). Killed when dropped.
pub struct Broker {
    child: Option<Child>,
    bootstrap: String,
    pub http: String,
    pub dir: tempfile::TempDir,
    /// Extra `chorus serve` arguments, used again on a restart.
    args: Vec<String>,
}

impl Broker {
    pub async fn start() -> Broker {
        Self::start_with(Vec::new()).await
    }

    /// A broker started with extra `chorus serve` arguments (such as `--config FILE`).
    pub async fn start_with(args: Vec<String>) -> Broker {
        let dir = tempfile::tempdir().expect("data dir");
        let (child, bootstrap, http) = spawn(dir.path(), &args).await;
        Broker {
            child: Some(child),
            bootstrap,
            http,
            dir,
            args,
        }
    }

    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// Graceful stop (SIGTERM), then a new process on the same data (on new ports).
    pub async fn restart(&mut self) {
        self.terminate().await;
        let (child, bootstrap, http) = spawn(self.dir.path(), &self.args).await;
        self.child = Some(child);
        self.bootstrap = bootstrap;
        self.http = http;
    }

    pub async fn stop(mut self) {
        self.terminate().await;
    }

    async fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            // SAFETY: signalling a child process we started and have not reaped.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        match tokio::time::timeout(Duration::from_secs(40), child.wait()).await {
            Ok(status) => assert!(
                status.expect("wait for chorus").success(),
                "chorus exited with an error on SIGTERM"
            ),
            Err(_) => panic!("chorus did not stop within 40 s of SIGTERM"),
        }
    }
}

/// Starts `chorus serve` on `dir` with test-friendly group timings and returns the process
/// and its Kafka and HTTP addresses.
async fn spawn(dir: &Path, extra: &[String]) -> (Child, String, String) {
    let mut child = tokio::process::Command::new(chorus_binary())
        .arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--group-initial-rebalance-delay-ms", "100"])
        .args(["--group-min-session-timeout-ms", "500"])
        .args(["--group-consumer-heartbeat-interval-ms", "200"])
        .args(["--offsets-topic-num-partitions", "4"])
        .args(["--jwt-secret", CHAT_SECRET])
        .args(extra)
        .env("RUST_LOG", "warn,chorus_broker::server=info")
        .env("NO_COLOR", "1")
        .env_remove("CHORUS_CONFIG")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start chorus");
    let ready = ready_line(&mut child, "chorus broker ready").await;
    (child, field(&ready, "listen="), field(&ready, "http="))
}

/// Reads a chorus process's output until the line containing `marker` (failing after
/// 60 s or if it exits first), keeps draining the rest so logging never blocks it, and
/// returns that line without colour codes.
pub async fn ready_line(child: &mut Child, marker: &str) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read chorus output") {
            if line.contains(marker) {
                return Some(line);
            }
        }
        None
    })
    .await
    .unwrap_or_else(|_| panic!("no {marker:?} from chorus within 60 s"))
    .unwrap_or_else(|| panic!("chorus exited before {marker:?}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    strip_ansi(&ready)
}

/// The value of `name=` (such as `http=`) in a startup line.
pub fn field(line: &str, name: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        .to_string()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `program args...`, failing the test (with the script's output) on a non-zero exit
/// or after `secs`.
pub async fn run(program: &Path, args: &[&str], env: &[(&str, &Path)], secs: u64) {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = tokio::time::timeout(Duration::from_secs(secs), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} ran over {secs} s", program.display()))
        .expect("the client runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} {args:?} failed ({}):\n{stdout}\n{stderr}",
        program.display(),
        output.status
    );
}
