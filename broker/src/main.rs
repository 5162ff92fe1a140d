//! The `chorus` binary.

use clap::{Parser, Subcommand};

use chorus_broker::config::{BrokerConfig, ServeArgs};
use chorus_broker::Server;

/// Chorus: a Kafka-compatible broker with a chat fabric built in.
#[derive(Debug, Parser)]
#[command(name = "chorus", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker.
    ///
    /// Every setting has a default, so `chorus serve` alone starts a broker on
    /// 127.0.0.1:9092 with data in ./data. Settings come from (later wins) the defaults, the
    /// TOML file given with --config, CHORUS_* environment variables, and flags.
    ///
    /// Examples:
    ///   chorus serve
    ///   chorus serve --data-dir /var/lib/chorus --listen 0.0.0.0:9092 --advertised-listener kafka.internal:9092
    ///   chorus serve --topic-default flush.messages=1
    Serve(ServeArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = BrokerConfig::load(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("chorus")
        .build()?;
    runtime.block_on(async {
        let server = Server::start(config).await?;
        wait_for_signal().await;
        tracing::info!("shutting down");
        server.shutdown().await
    })
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the broker");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
