//! The plugins beside the gateway, each a forwarder target with its own consumer group:
//! CDC ingest (one per `[[chat.cdc]]` entry), the chat notifier and e-mail. Configured by
//! the `[chat]` section of the TOML file; each can be switched off.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::cdc::{CdcMapping, CdcTarget};
use crate::forward::dedup::DedupStore;
use crate::forward::dlq::DeadLetters;
use crate::forward::email::{EmailConfig, EmailConfigError, Mailer};
use crate::forward::notify::{ChatNotifier, NotifyConfig};
use crate::forward::{self, RetryPolicy, Running, Shared, Target};
use crate::gateway::Gateway;
use crate::log::Log;
use crate::{now_ms, Chat};

/// How often expired dedup entries are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The `[chat]` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// `[[chat.cdc]]`: one entry per source topic.
    pub cdc: Vec<CdcMapping>,
    /// `[chat.notify]`.
    pub notify: NotifyConfig,
    /// `[chat.email]`: no mail without it.
    pub email: Option<EmailConfig>,
    /// `[chat.retry]`: the retry policy of targets that do not set their own.
    pub retry: RetryPolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum PluginsError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Email(#[from] EmailConfigError),
    #[error(transparent)]
    Log(#[from] crate::log::LogError),
}

impl PluginsConfig {
    /// Checks what serde cannot (field names of mappings, duplicate topics).
    pub fn validate(&self) -> Result<(), String> {
        let mut topics = std::collections::HashSet::new();
        for m in &self.cdc {
            m.validate()?;
            if !topics.insert(&m.topic) {
                return Err(format!("chat.cdc: topic {} is mapped twice", m.topic));
            }
        }
        Ok(())
    }
}

/// The running plugins.
#[derive(Debug)]
pub struct Plugins {
    running: Vec<Running>,
    /// The dedup sweeper, and its followers when other processes share the log.
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Plugins {
    pub async fn start(
        chat: Arc<Chat>,
        gateway: Arc<Gateway>,
        log: Arc<dyn Log>,
        config: &PluginsConfig,
    ) -> Result<Plugins, PluginsError> {
        config.validate().map_err(PluginsError::Config)?;
        let partitions = chat.config.partitions;
        let dedup = Arc::new(
            DedupStore::open(log.clone(), &chat.config.dedup_topic, partitions, now_ms()).await?,
        );
        let dead_letters =
            Arc::new(DeadLetters::open(log.clone(), &chat.config.dlq_topic, partitions).await?);
        let shared = Shared {
            log: log.clone(),
            dedup: dedup.clone(),
            dead_letters,
        };
        let mut running = Vec::new();
        // Keeps a started target and shows its counters on /metrics.
        let mut launch = |r: Running, name: &str| {
            gateway
                .metrics
                .register_forwarder(name.to_string(), r.metrics.clone());
            running.push(r);
        };
        for mapping in config.cdc.iter().filter(|m| m.enabled) {
            // Source topics may not exist before the connector's first write.
            log.ensure_topic(&crate::log::TopicSpec {
                name: mapping.topic.clone(),
                partitions,
                configs: Vec::new(),
            })
            .await?;
            let target = Arc::new(CdcTarget::new(mapping.clone(), chat.clone()));
            let policy = mapping.retry.unwrap_or(config.retry);
            launch(
                forward::start(target.clone(), shared.clone(), policy),
                target.name(),
            );
        }
        if config.notify.enabled {
            let notifier =
                ChatNotifier::new(chat.clone(), gateway.clone(), dedup.clone(), &config.notify);
            let policy = config.notify.retry.unwrap_or(config.retry);
            launch(
                forward::start(Arc::new(notifier), shared.clone(), policy),
                ChatNotifier::NAME,
            );
        }
        if let Some(email) = config.email.as_ref().filter(|e| e.enabled) {
            let mailer = Mailer::new(email, &chat.config.notifications_topic, gateway.clone())?;
            let policy = email.retry.unwrap_or(config.retry);
            launch(
                forward::start(Arc::new(mailer), shared.clone(), policy),
                Mailer::NAME,
            );
        }
        let mut background = Vec::new();
        if log.shared() {
            for p in 0..dedup.partitions() {
                background.push(tokio::spawn(dedup.clone().follow(p)));
            }
        }
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tick.tick().await;
                if let Err(e) = dedup.sweep(now_ms()).await {
                    tracing::warn!(error = %e, "sweeping the dedup store failed");
                }
            }
        }));
        Ok(Plugins {
            running,
            background,
        })
    }

    /// Stops every plugin: what finished is committed, what did not runs again next time.
    pub async fn stop(self, wait: Duration) {
        for task in self.background {
            task.abort();
        }
        for r in self.running {
            r.stop(wait).await;
        }
    }
}
