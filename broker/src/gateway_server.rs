//! `chorus gateway`: the chat fabric alone (HTTP API, WebSocket gateway, CDC, notifier,
//! e-mail) on an external Kafka cluster, through librdkafka ([`crate::remote`]). Several
//! gateways can serve one cluster: each fans out to its own connections what any of them
//! writes, and the plugins' consumer groups spread the work over them.
//!
//! Settings come from (later wins) the defaults, the TOML file given with `--config` (its
//! `http_listen`, `jwt_secret`, `chat_allowed_origins` and `[chat]` section; broker settings
//! in it are ignored), `CHORUS_*` environment variables, and flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use chorus_chat::gateway::Gateway;
use chorus_chat::plugins::Plugins;

use crate::config::{ConfigError, FileConfig};
use crate::remote::{KafkaLog, KafkaSettings};

/// How long shutdown waits for chat connections to say goodbye.
const GOODBYE: Duration = Duration::from_secs(5);
/// How long shutdown waits for each plugin to commit and leave its group.
const PLUGINS_STOP: Duration = Duration::from_secs(5);

/// `chorus gateway` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GatewayArgs {
    /// The Kafka cluster, as host:port[,host:port...].
    #[arg(long, env = "CHORUS_BOOTSTRAP_SERVER")]
    pub bootstrap_server: String,
    /// TOML configuration file (`http_listen`, `jwt_secret`, `chat_allowed_origins`, `[chat]`).
    #[arg(long, env = "CHORUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the HTTP listener (chat API, WebSockets, metrics) [default: 127.0.0.1:8080].
    #[arg(long, env = "CHORUS_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// HS256 secret of the chat fabric's JWTs; every gateway of a cluster needs the same one
    /// [default: a random one, printed at start].
    #[arg(long, env = "CHORUS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// An `Origin` allowed to open chat WebSockets (repeatable) [default: any].
    #[arg(long = "chat-allowed-origin", value_name = "ORIGIN")]
    pub chat_allowed_origins: Vec<String>,
    /// A librdkafka property for every client, as NAME=VALUE (repeatable), such as
    /// `security.protocol=ssl`.
    #[arg(long = "kafka-option", value_name = "NAME=VALUE")]
    pub kafka_options: Vec<String>,
}

/// The validated settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub kafka: KafkaSettings,
    pub http_listen: SocketAddr,
    pub jwt_secret: Option<String>,
    pub chat_allowed_origins: Vec<String>,
    /// The whole chat configuration, when a test tunes its timings.
    pub chat_config: Option<chorus_chat::ChatConfig>,
    pub chat_plugins: chorus_chat::plugins::PluginsConfig,
}

impl GatewayConfig {
    pub fn load(args: GatewayArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        let http_listen = args
            .http_listen
            .or(file.http_listen)
            .unwrap_or_else(|| "127.0.0.1:8080".to_string());
        let http_listen = http_listen.parse().map_err(|_| ConfigError::Invalid {
            name: "http_listen",
            value: http_listen.clone(),
            reason: "expected HOST:PORT with a numeric IP",
        })?;
        if args.bootstrap_server.trim().is_empty() {
            return Err(ConfigError::Invalid {
                name: "bootstrap_server",
                value: args.bootstrap_server,
                reason: "expected host:port",
            });
        }
        let mut options = Vec::new();
        for option in &args.kafka_options {
            let Some((k, v)) = option.split_once('=') else {
                return Err(ConfigError::Invalid {
                    name: "kafka-option",
                    value: option.clone(),
                    reason: "expected NAME=VALUE",
                });
            };
            options.push((k.trim().to_string(), v.trim().to_string()));
        }
        let chat_plugins = file.chat.unwrap_or_default();
        chat_plugins.validate().map_err(ConfigError::Plugins)?;
        let mut origins = args.chat_allowed_origins;
        if origins.is_empty() {
            origins = file.chat_allowed_origins.unwrap_or_default();
        }
        Ok(GatewayConfig {
            kafka: KafkaSettings {
                bootstrap_servers: args.bootstrap_server,
                options,
            },
            http_listen,
            jwt_secret: args.jwt_secret.or(file.jwt_secret),
            chat_allowed_origins: origins,
            chat_config: None,
            chat_plugins,
        })
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct GatewayServer {
    pub http_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    plugins: Plugins,
    http: JoinHandle<()>,
    shutdown: watch::Sender<bool>,
}

impl GatewayServer {
    /// Connects to the cluster, rebuilds the chat state from it, and starts serving.
    pub async fn start(config: GatewayConfig) -> anyhow::Result<GatewayServer> {
        let log = Arc::new(KafkaLog::new(config.kafka.clone())?);
        log.check().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the Kafka cluster at {}: {e}",
                config.kafka.bootstrap_servers
            )
        })?;
        let chat_config = crate::server::chat_config(
            config.jwt_secret.as_deref(),
            config.chat_config.as_ref(),
            &config.chat_allowed_origins,
        );
        let (gateway, plugins) =
            crate::server::start_chat_on(log, chat_config, &config.chat_plugins).await?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let services = crate::http::Services {
            broker: None,
            gateway: Some(gateway.clone()),
        };
        let (http_addr, http) =
            crate::http::start(config.http_listen, services, shutdown_rx).await?;
        tracing::info!(
            http = %http_addr,
            bootstrap = %config.kafka.bootstrap_servers,
            "chorus gateway ready"
        );
        Ok(GatewayServer {
            http_addr,
            gateway,
            plugins,
            http,
            shutdown,
        })
    }

    /// Tells chat clients to reconnect, lets the plugins commit and leave their groups, and
    /// stops the HTTP listener.
    pub async fn shutdown(self) {
        self.gateway.shutdown(GOODBYE).await;
        self.plugins.stop(PLUGINS_STOP).await;
        let _ = self.shutdown.send(true);
        let _ = self.http.await;
        tracing::info!("chorus gateway stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(bootstrap: &str) -> GatewayArgs {
        GatewayArgs {
            bootstrap_server: bootstrap.to_string(),
            http_listen: Some("127.0.0.1:0".into()),
            ..GatewayArgs::default()
        }
    }

    #[test]
    fn settings_are_checked_with_the_name_of_what_is_wrong() {
        let ok = GatewayConfig::load(GatewayArgs {
            kafka_options: vec!["security.protocol = ssl".into()],
            ..args("k1:9092,k2:9092")
        })
        .unwrap();
        assert_eq!(ok.kafka.bootstrap_servers, "k1:9092,k2:9092");
        assert_eq!(
            ok.kafka.options,
            [("security.protocol".to_string(), "ssl".to_string())]
        );
        let wrong = |a: GatewayArgs| match GatewayConfig::load(a) {
            Err(ConfigError::Invalid { name, .. }) => name,
            other => panic!("expected an invalid setting, got {other:?}"),
        };
        assert_eq!(wrong(args(" ")), "bootstrap_server");
        assert_eq!(
            wrong(GatewayArgs {
                kafka_options: vec!["no-equals-sign".into()],
                ..args("k:9092")
            }),
            "kafka-option"
        );
        assert_eq!(
            wrong(GatewayArgs {
                http_listen: Some("localhost".into()),
                ..args("k:9092")
            }),
            "http_listen"
        );
    }
}
