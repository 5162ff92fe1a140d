//! Finding the installed clients, starting brokers, running client scripts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chorus_broker::{BrokerConfig, Server};

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

/// A broker with its own data directory on 127.0.0.1:0.
pub struct Broker {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
}

impl Broker {
    pub async fn start() -> Broker {
        init_logging();
        let dir = tempfile::tempdir().expect("data dir");
        let server = Server::start(BrokerConfig::for_tests(dir.path()))
            .await
            .expect("broker starts");
        Broker {
            server: Some(server),
            dir,
        }
    }

    pub fn bootstrap(&self) -> String {
        self.server.as_ref().expect("running").bootstrap()
    }

    /// Graceful stop, then a new broker on the same data (on a new port).
    pub async fn restart(&mut self) {
        self.server
            .take()
            .expect("running")
            .shutdown()
            .await
            .expect("stops");
        let config = BrokerConfig::for_tests(self.dir.path());
        self.server = Some(Server::start(config).await.expect("restarts"));
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("stops");
        }
    }
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

/// Broker logs in test output, filtered by `RUST_LOG` (default: warnings).
fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
    });
}
