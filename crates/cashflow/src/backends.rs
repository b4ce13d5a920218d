//! Backends chosen by URL. The same services run on the embedded default (SQLite files under
//! the data directory, the SQLite queue, the in-process cache) or on the production parts of
//! the reference architecture (Postgres, SQS, Redis), decided by configuration only.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use cashflow_auth::{Identities, IdentityStore, PostgresIdentityStore, SqliteIdentityStore};
use cashflow_consolidation::{
    ConsolidationStore, MemoryCache, PostgresConsolidationStore, RedisCache, RedisCacheConfig, ReportCache,
    SqliteConsolidationStore,
};
use cashflow_db::Backend;
use cashflow_events::{EventPublisher, EventSource};
use cashflow_ledger::{LedgerStore, OutboxSourceConfig, PostgresLedgerStore, SqliteLedgerStore};
use cashflow_queue::{EmbeddedQueue, EmbeddedQueueConfig, SqsConfig, SqsQueue};

/// Default of `--data-dir`.
pub const DEFAULT_DATA_DIR: &str = "./cashflow-data";
/// Default of `--queue-url`: the SQLite queue under the data directory.
pub const EMBEDDED_QUEUE: &str = "embedded";
/// Default of `--queue-visibility-timeout-secs`.
pub const DEFAULT_QUEUE_VISIBILITY_TIMEOUT_SECS: u64 = 30;
/// Default of `--queue-max-receives`.
pub const DEFAULT_QUEUE_MAX_RECEIVES: u32 = 5;
/// Default of `--queue-max-attempts`.
pub const DEFAULT_QUEUE_MAX_ATTEMPTS: u32 = 3;
/// Default of `--dedup-window-days`: a day longer than SQS keeps a message (14 days).
pub const DEFAULT_DEDUP_WINDOW_DAYS: u32 = 15;
/// Default of `--cache-url`: the in-process cache.
pub const MEMORY_CACHE: &str = "memory";

/// Where each backend lives.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// Directory of the embedded databases (ledger, consolidation, queue, identity).
    #[arg(long, env = "CASHFLOW_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// The ledger (and identity) database: `sqlite://PATH` or `postgres://…`. Default: SQLite
    /// files under the data directory.
    #[arg(long, env = "CASHFLOW_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// The consolidation database, if not the same as `--database-url` (Postgres: another
    /// schema of the same database by default).
    #[arg(long, env = "CASHFLOW_CONSOLIDATION_DATABASE_URL", hide_env_values = true)]
    pub consolidation_database_url: Option<String>,

    /// The queue between ledger and consolidation: `embedded` (SQLite under the data directory)
    /// or an SQS queue URL.
    #[arg(long, env = "CASHFLOW_QUEUE_URL", default_value = EMBEDDED_QUEUE)]
    pub queue_url: String,

    /// How long a received message stays invisible to other consumers before it is
    /// redelivered (unless acknowledged).
    #[arg(long, env = "CASHFLOW_QUEUE_VISIBILITY_TIMEOUT_SECS", default_value_t = DEFAULT_QUEUE_VISIBILITY_TIMEOUT_SECS)]
    pub queue_visibility_timeout_secs: u64,

    /// Embedded queue: receives after which a message is dead-lettered. (SQS: the queue's
    /// redrive policy decides.)
    #[arg(long, env = "CASHFLOW_QUEUE_MAX_RECEIVES", default_value_t = DEFAULT_QUEUE_MAX_RECEIVES)]
    pub queue_max_receives: u32,

    /// SQS: attempts per call (with exponential backoff) before the caller retries later.
    #[arg(long, env = "CASHFLOW_QUEUE_MAX_ATTEMPTS", default_value_t = DEFAULT_QUEUE_MAX_ATTEMPTS)]
    pub queue_max_attempts: u32,

    /// Consolidation: days an applied event's deduplication marker is kept before the consumer's
    /// process prunes it. Must be longer than the queue keeps a message (SQS: at most 14 days).
    #[arg(long, env = "CASHFLOW_DEDUP_WINDOW_DAYS", default_value_t = DEFAULT_DEDUP_WINDOW_DAYS)]
    pub dedup_window_days: u32,

    /// The report cache: `memory` (in-process), `redis://…`, or `rediss://…` (TLS).
    #[arg(long, env = "CASHFLOW_CACHE_URL", default_value = MEMORY_CACHE, hide_env_values = true)]
    pub cache_url: String,

    /// `rediss://` only: the CA certificates (PEM) Redis's certificate must chain to, instead
    /// of the system's roots.
    #[arg(long, env = "CASHFLOW_CACHE_CA_FILE")]
    pub cache_ca_file: Option<PathBuf>,
}

fn kind(url: &str) -> anyhow::Result<Backend> {
    Ok(Backend::of_url(url)?)
}

impl BackendArgs {
    /// Embedded everything under `data_dir`.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            database_url: None,
            consolidation_database_url: None,
            queue_url: EMBEDDED_QUEUE.into(),
            queue_visibility_timeout_secs: DEFAULT_QUEUE_VISIBILITY_TIMEOUT_SECS,
            queue_max_receives: DEFAULT_QUEUE_MAX_RECEIVES,
            queue_max_attempts: DEFAULT_QUEUE_MAX_ATTEMPTS,
            dedup_window_days: DEFAULT_DEDUP_WINDOW_DAYS,
            cache_url: MEMORY_CACHE.into(),
            cache_ca_file: None,
        }
    }

    /// The deduplication window of `--dedup-window-days`, refused when it is not longer than
    /// the longest a queue keeps a message.
    pub fn dedup_window(&self) -> anyhow::Result<cashflow_consolidation::dedup::DedupWindow> {
        let window = std::time::Duration::from_secs(u64::from(self.dedup_window_days) * 24 * 3600);
        cashflow_consolidation::dedup::DedupWindow::new(window, cashflow_consolidation::dedup::MAX_QUEUE_RETENTION)
            .with_context(|| format!("--dedup-window-days {}", self.dedup_window_days))
    }

    fn data_file(&self, file: &str) -> anyhow::Result<String> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating the data directory {}", self.data_dir.display()))?;
        Ok(format!("sqlite://{}", self.data_dir.join(file).display()))
    }

    fn ledger_url(&self) -> anyhow::Result<String> {
        match &self.database_url {
            Some(url) => Ok(url.clone()),
            None => self.data_file("ledger.db"),
        }
    }

    fn consolidation_url(&self) -> anyhow::Result<String> {
        match (&self.consolidation_database_url, &self.database_url) {
            (Some(url), _) => Ok(url.clone()),
            (None, Some(url)) if kind(url)? == Backend::Postgres => Ok(url.clone()),
            _ => self.data_file("consolidation.db"),
        }
    }

    fn identity_url(&self) -> anyhow::Result<String> {
        match &self.database_url {
            Some(url) if kind(url)? == Backend::Postgres => Ok(url.clone()),
            _ => self.data_file("identity.db"),
        }
    }

    /// The ledger store.
    pub async fn ledger(&self) -> anyhow::Result<Arc<dyn LedgerStore>> {
        let url = self.ledger_url()?;
        Ok(match kind(&url)? {
            Backend::Sqlite => Arc::new(SqliteLedgerStore::open(&url).await.context("opening the ledger store")?),
            Backend::Postgres => Arc::new(PostgresLedgerStore::open(&url).await.context("opening the ledger store")?),
        })
    }

    /// The consolidation store.
    pub async fn consolidation(&self) -> anyhow::Result<Arc<dyn ConsolidationStore>> {
        let url = self.consolidation_url()?;
        Ok(match kind(&url)? {
            Backend::Sqlite => {
                Arc::new(SqliteConsolidationStore::open(&url).await.context("opening the consolidation store")?)
            }
            Backend::Postgres => {
                Arc::new(PostgresConsolidationStore::open(&url).await.context("opening the consolidation store")?)
            }
        })
    }

    /// The identities of the built-in token issuer, on their store.
    pub async fn identity(&self) -> anyhow::Result<Arc<Identities>> {
        let url = self.identity_url()?;
        let store: Arc<dyn IdentityStore> = match kind(&url)? {
            Backend::Sqlite => Arc::new(SqliteIdentityStore::open(&url).await.context("opening the identity store")?),
            Backend::Postgres => {
                Arc::new(PostgresIdentityStore::open(&url).await.context("opening the identity store")?)
            }
        };
        Ok(Arc::new(Identities::new(store)))
    }

    /// Both ends of the queue (one object for the embedded queue, so that a publish wakes a
    /// waiting receive in the same process at once).
    pub async fn queue(&self) -> anyhow::Result<Queue> {
        if self.queue_url == EMBEDDED_QUEUE {
            let config = EmbeddedQueueConfig {
                visibility_timeout: Duration::from_secs(self.queue_visibility_timeout_secs),
                max_receives: self.queue_max_receives,
                ..EmbeddedQueueConfig::default()
            };
            let outbox = OutboxSourceConfig {
                visibility_timeout: config.visibility_timeout,
                max_receives: config.max_receives,
                ..OutboxSourceConfig::default()
            };
            let queue = Arc::new(
                EmbeddedQueue::open(&self.data_file("queue.db")?, config)
                    .await
                    .context("opening the embedded queue")?,
            );
            return Ok(Queue { publisher: queue.clone(), source: queue, outbox: Some(outbox) });
        }
        if self.queue_url.starts_with("https://") || self.queue_url.starts_with("http://") {
            let queue = Arc::new(
                SqsQueue::connect(SqsConfig {
                    visibility_timeout: Duration::from_secs(self.queue_visibility_timeout_secs),
                    max_attempts: self.queue_max_attempts,
                    ..SqsConfig::new(&self.queue_url)
                })
                .await
                .context("configuring the SQS queue")?,
            );
            return Ok(Queue { publisher: queue.clone(), source: queue, outbox: None });
        }
        bail!("unsupported queue URL `{}` (expected `embedded` or an SQS queue URL)", self.queue_url)
    }

    /// The report cache.
    pub async fn cache(&self) -> anyhow::Result<Arc<dyn ReportCache>> {
        if self.cache_url == MEMORY_CACHE {
            return Ok(Arc::new(MemoryCache::default()));
        }
        if self.cache_url.starts_with("redis://") || self.cache_url.starts_with("rediss://") {
            let ca_cert = match &self.cache_ca_file {
                Some(path) => {
                    Some(std::fs::read(path).with_context(|| format!("reading the cache CA file {}", path.display()))?)
                }
                None => None,
            };
            let cache =
                RedisCache::connect(&self.cache_url, RedisCacheConfig { ca_cert, ..RedisCacheConfig::default() })
                    .await
                    .context("configuring the Redis cache")?;
            return Ok(Arc::new(cache));
        }
        bail!(
            "unsupported cache URL `{}` (expected `memory`, redis://… or rediss://…)",
            cashflow_db::redact(&self.cache_url)
        )
    }
}

/// The two ends of the queue.
#[derive(Clone)]
pub struct Queue {
    pub publisher: Arc<dyn EventPublisher>,
    pub source: Arc<dyn EventSource>,
    /// The embedded queue's settings for an [`OutboxSource`](cashflow_ledger::OutboxSource), which
    /// takes its place where one process both relays and consumes; `None` for SQS, whose queue
    /// is the decoupling itself.
    pub outbox: Option<OutboxSourceConfig>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dedup_window_not_longer_than_the_queue_keeps_a_message_is_refused() {
        let with_days = |days| BackendArgs { dedup_window_days: days, ..BackendArgs::embedded("data") };
        let default = with_days(DEFAULT_DEDUP_WINDOW_DAYS).dedup_window().unwrap();
        assert_eq!(default.duration().as_secs(), 15 * 24 * 3600);
        for days in [0, 1, 14] {
            let refused = format!("{:#}", with_days(days).dedup_window().unwrap_err());
            assert!(refused.starts_with(&format!("--dedup-window-days {days}: ")), "{refused}");
            assert!(refused.contains("must be longer than the queue's retention"), "{refused}");
        }
    }
}
