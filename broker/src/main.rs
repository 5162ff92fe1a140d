//! The `chorus` binary.

use clap::{Parser, Subcommand};

use chorus_broker::cli::{self, ClientArgs, GroupsCommand, TopicsCommand};
use chorus_broker::config::{BrokerConfig, ServeArgs};
use chorus_broker::gateway_server::{GatewayArgs, GatewayConfig, GatewayServer};
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
    /// Run the chat fabric alone on an external Kafka cluster.
    ///
    /// The HTTP chat API, the WebSocket gateway and the chat plugins, on the chat topics of
    /// an existing Kafka or Redpanda cluster (or a `chorus serve`), through librdkafka.
    /// Start several with the same --jwt-secret: clients of different gateways chat with
    /// each other.
    ///
    /// Examples:
    ///   chorus gateway --bootstrap-server kafka-1:9092,kafka-2:9092 --jwt-secret "$SECRET"
    ///   chorus gateway --bootstrap-server kafka:9093 --kafka-option security.protocol=ssl
    Gateway(GatewayArgs),
    /// Create, list, describe, alter and delete topics.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List, describe and delete consumer groups; reset and delete their offsets.
    Groups {
        #[command(subcommand)]
        command: GroupsCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Earliest and latest offset of each partition of a topic (and by time).
    ///
    /// Examples:
    ///   chorus offsets orders
    ///   chorus offsets orders --time 2026-11-23T10:00:00.000
    Offsets {
        #[command(flatten)]
        args: cli::OffsetsArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Produce one record per line of standard input.
    ///
    /// Examples:
    ///   seq 1 1000 | chorus produce numbers
    ///   printf 'user-1:hello\n' | chorus produce chat --key-separator : --header source=cli
    Produce {
        #[command(flatten)]
        args: cli::ProduceArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print records of a topic.
    ///
    /// Examples:
    ///   chorus consume orders --from-beginning --max-messages 10
    ///   chorus consume orders --group audit --from-beginning --exit-at-end
    ///   chorus consume orders --format '%p:%o %k=%v\n'
    Consume {
        #[command(flatten)]
        args: cli::ConsumeArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (client, command) = match cli.command {
        Command::Serve(args) => return run_server(|| serve(args)),
        Command::Gateway(args) => return run_server(|| gateway(args)),
        Command::Topics { command, client } => (client, cli::Command::Topics(command)),
        Command::Groups { command, client } => (client, cli::Command::Groups(command)),
        Command::Offsets { args, client } => (client, cli::Command::Offsets(args)),
        Command::Produce { args, client } => (client, cli::Command::Produce(args)),
        Command::Consume { args, client } => (client, cli::Command::Consume(args)),
    };
    match cli::run(&client, command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut message = format!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a long-lived server command with logging on.
fn run_server(f: impl FnOnce() -> anyhow::Result<()>) -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match f() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn gateway(args: GatewayArgs) -> anyhow::Result<()> {
    let config = GatewayConfig::load(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("chorus")
        .build()?;
    runtime.block_on(async {
        let server = GatewayServer::start(config).await?;
        wait_for_signal().await;
        tracing::info!("shutting down");
        server.shutdown().await;
        Ok(())
    })
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
