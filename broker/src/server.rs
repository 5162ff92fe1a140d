//! The Kafka listener: accepts connections up to the limit and shuts down gracefully.
//!
//! Shutdown: stop accepting, tell every connection (they finish the request in hand, long
//! polls return early), wait for them, then sync and close every log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use chorus_chat::gateway::Gateway;
use chorus_chat::plugins::Plugins;

use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::connection;

/// How long shutdown waits for connections to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for chat connections to say goodbye.
const GATEWAY_GOODBYE: Duration = Duration::from_secs(5);
/// How long shutdown waits for each chat plugin to commit and leave its group.
const PLUGINS_STOP: Duration = Duration::from_secs(5);

/// A running broker.
#[derive(Debug)]
pub struct Server {
    pub local_addr: SocketAddr,
    /// Where the HTTP listener (health, admin endpoints) is bound.
    pub http_addr: SocketAddr,
    http: JoinHandle<()>,
    pub broker: Arc<Broker>,
    /// The chat fabric's gateway, when it runs.
    pub gateway: Option<Arc<Gateway>>,
    /// The chat plugins (CDC, notifications, e-mail), when the chat fabric runs.
    plugins: Option<Plugins>,
    shutdown: watch::Sender<bool>,
    accept: JoinHandle<()>,
    connections: Arc<Semaphore>,
    max_connections: usize,
}

impl Server {
    /// Opens the data directory and starts listening. With port 0 in both the listen and the
    /// advertised address, the advertised port becomes the one actually bound.
    pub async fn start(mut config: BrokerConfig) -> anyhow::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let http_listen = config.http_listen;
        if config.advertised_port == 0 {
            config.advertised_port = local_addr.port();
        }
        let max_connections = config.max_connections;
        let broker = Arc::new(tokio::task::spawn_blocking(move || Broker::open(config)).await??);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let connections = Arc::new(Semaphore::new(max_connections));
        let (gateway, plugins) = if broker.config.chat_enabled {
            let (gateway, plugins) = start_chat(&broker).await?;
            (Some(gateway), Some(plugins))
        } else {
            (None, None)
        };
        let services = crate::http::Services {
            broker: Some(broker.clone()),
            gateway: gateway.clone(),
        };
        let (http_addr, http) =
            crate::http::start(http_listen, services, shutdown_rx.clone()).await?;
        let accept = tokio::spawn(accept_loop(
            listener,
            broker.clone(),
            connections.clone(),
            shutdown_rx,
        ));
        tracing::info!(
            listen = %local_addr,
            http = %http_addr,
            advertised = %format!("{}:{}", broker.config.advertised_host, broker.config.advertised_port),
            data_dir = %broker.config.data_dir.display(),
            "chorus broker ready"
        );
        Ok(Server {
            local_addr,
            http_addr,
            http,
            broker,
            gateway,
            plugins,
            shutdown,
            accept,
            connections,
            max_connections,
        })
    }

    /// `host:port` to give clients.
    pub fn bootstrap(&self) -> String {
        self.local_addr.to_string()
    }

    /// Graceful shutdown; returns once every log is synced and closed.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        // Chat clients are told to reconnect first, while the listener still runs.
        if let Some(gateway) = &self.gateway {
            gateway.shutdown(GATEWAY_GOODBYE).await;
        }
        // The plugins commit what they finished while the log is still open.
        if let Some(plugins) = self.plugins.take() {
            plugins.stop(PLUGINS_STOP).await;
        }
        let _ = self.shutdown.send(true);
        let _ = self.accept.await;
        let _ = self.http.await;
        let all = self.max_connections as u32;
        if tokio::time::timeout(DRAIN_TIMEOUT, self.connections.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(
                "connections did not finish within {DRAIN_TIMEOUT:?}; closing logs anyway"
            );
        }
        let broker = self.broker.clone();
        tokio::task::spawn_blocking(move || broker.shutdown()).await??;
        tracing::info!("chorus broker stopped");
        Ok(())
    }
}

/// Starts the chat fabric and its plugins over the in-process log.
async fn start_chat(broker: &Arc<Broker>) -> anyhow::Result<(Arc<Gateway>, Plugins)> {
    let config = chat_config(
        broker.config.jwt_secret.as_deref(),
        broker.config.chat_config.as_ref(),
        &broker.config.chat_allowed_origins,
    );
    let log: Arc<dyn chorus_chat::log::Log> =
        Arc::new(crate::embedded::EmbeddedLog::new(broker.clone()));
    start_chat_on(log, config, &broker.config.chat_plugins).await
}

/// The chat fabric's settings: `tuned` when a test gives them whole, else the defaults
/// with these origins. Without a secret, a random one is made and the demo page hands out
/// development tokens.
pub(crate) fn chat_config(
    secret: Option<&str>,
    tuned: Option<&chorus_chat::ChatConfig>,
    allowed_origins: &[String],
) -> chorus_chat::ChatConfig {
    let (secret, dev_tokens) = match secret {
        Some(s) => (s.to_string(), false),
        None => {
            let s = uuid::Uuid::new_v4().simple().to_string();
            tracing::warn!(secret = %s, "no --jwt-secret given; chat tokens use this random development secret, and the demo page at / hands out tokens");
            (s, true)
        }
    };
    match tuned {
        Some(c) => chorus_chat::ChatConfig {
            jwt_secret: secret.into_bytes(),
            ..c.clone()
        },
        None => chorus_chat::ChatConfig {
            allowed_origins: allowed_origins.to_vec(),
            dev_tokens,
            ..chorus_chat::ChatConfig::new(secret)
        },
    }
}

/// Starts the chat stores, the gateway's fan-out and the plugins on `log`.
pub(crate) async fn start_chat_on(
    log: Arc<dyn chorus_chat::log::Log>,
    config: chorus_chat::ChatConfig,
    plugins: &chorus_chat::plugins::PluginsConfig,
) -> anyhow::Result<(Arc<Gateway>, Plugins)> {
    let chat = chorus_chat::Chat::start(log.clone(), config).await?;
    let gateway = Gateway::start(chat.clone(), log.clone()).await?;
    let plugins = Plugins::start(chat, gateway.clone(), log, plugins).await?;
    Ok((gateway, plugins))
}

async fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    connections: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = broker.config.max_connections, "connection limit reached; refusing");
            drop(stream);
            continue;
        };
        let broker = broker.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            connection::serve(stream, peer, broker, shutdown).await;
            drop(permit);
        });
    }
}
