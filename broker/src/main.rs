//! The `chorus` binary.
//!
//! Today only the storage engine exists: `chorus serve` opens (and recovers) the data
//! directory and reports what it found. The Kafka listener, the CLI and the chat fabric follow.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => {
            let data_dir = args
                .windows(2)
                .find(|w| w[0] == "--data-dir")
                .map_or_else(|| PathBuf::from("./data"), |w| PathBuf::from(&w[1]));
            let manager =
                chorus_storage::LogManager::open(chorus_storage::ManagerOptions::new(&data_dir))?;
            for topic in manager.topics() {
                println!("topic {} ({} partitions)", topic.name, topic.partitions);
            }
            manager.shutdown()?;
            anyhow::bail!(
                "storage in {} is ready, but the Kafka listener is not built yet",
                data_dir.display()
            );
        }
        _ => anyhow::bail!("usage: chorus serve [--data-dir DIR]"),
    }
}
