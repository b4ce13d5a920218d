//! Composition: opens the stores and wires the ledger, the consolidation, the relay, the
//! consumer and the token issuer into one application. The same pieces will be wired into
//! separate processes (ledger, relay, consolidator) by the split deployment.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use cashflow_auth::issuer::{Issuer, IssuerConfig};
use cashflow_auth::{IdentityStore, JwtVerifier, SqliteIdentityStore, TokenVerifier};
use cashflow_consolidation::{
    ConsolidationState, ConsolidationStore, Consumer, ConsumerConfig, MemoryCache, ReportCache,
    SqliteConsolidationStore,
};
use cashflow_events::{EmbeddedQueue, EmbeddedQueueConfig};
use cashflow_ledger::{Ledger, LedgerState, LedgerStore, Relay, RelayConfig, SqliteLedgerStore};

use crate::ops;

/// The embedded stores under one data directory.
#[derive(Clone)]
pub struct Stores {
    pub ledger: Arc<SqliteLedgerStore>,
    pub consolidation: Arc<SqliteConsolidationStore>,
    pub queue: Arc<EmbeddedQueue>,
    pub identity: Arc<SqliteIdentityStore>,
}

fn sqlite_url(dir: &Path, file: &str) -> String {
    format!("sqlite://{}", dir.join(file).display())
}

impl Stores {
    /// Opens (creating and migrating as needed) every embedded store in `data_dir`.
    pub async fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        let ledger =
            SqliteLedgerStore::open(&sqlite_url(data_dir, "ledger.db")).await.context("opening the ledger store")?;
        let consolidation = SqliteConsolidationStore::open(&sqlite_url(data_dir, "consolidation.db"))
            .await
            .context("opening the consolidation store")?;
        let queue = EmbeddedQueue::open(&sqlite_url(data_dir, "queue.db"), EmbeddedQueueConfig::default())
            .await
            .context("opening the embedded queue")?;
        let identity = SqliteIdentityStore::open(&sqlite_url(data_dir, "identity.db"))
            .await
            .context("opening the identity store")?;
        Ok(Self {
            ledger: Arc::new(ledger),
            consolidation: Arc::new(consolidation),
            queue: Arc::new(queue),
            identity: Arc::new(identity),
        })
    }
}

/// Settings of the all-in-one application.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub data_dir: PathBuf,
    /// The tokens' `iss`, and the base of the URLs in the OpenID configuration.
    pub public_url: String,
    pub audience: String,
    pub token_ttl: Duration,
}

/// The all-in-one application: every service behind one router, plus the background workers.
pub struct Application {
    pub stores: Stores,
    pub ledger: Arc<Ledger>,
    pub issuer: Arc<Issuer>,
    pub verifier: Arc<dyn TokenVerifier>,
    pub cache: Arc<dyn ReportCache>,
    router: Router,
}

impl Application {
    /// Opens the stores and wires everything.
    pub async fn build(config: &AppConfig) -> anyhow::Result<Self> {
        let stores = Stores::open(&config.data_dir).await?;
        let identity: Arc<dyn IdentityStore> = stores.identity.clone();
        let key = identity.signing_key().await.context("loading the token signing key")?;
        let issuer = Arc::new(Issuer::new(
            IssuerConfig {
                issuer: config.public_url.trim_end_matches('/').to_owned(),
                audience: config.audience.clone(),
                token_ttl: config.token_ttl,
            },
            key,
            identity,
        ));
        let verifier: Arc<dyn TokenVerifier> =
            Arc::new(JwtVerifier::new(issuer.verifier_config(), issuer.jwks()).context("building the token verifier")?);
        let ledger_store: Arc<dyn LedgerStore> = stores.ledger.clone();
        let ledger = Arc::new(Ledger::new(ledger_store));
        let cache: Arc<dyn ReportCache> = Arc::new(MemoryCache::default());
        let consolidation_store: Arc<dyn ConsolidationStore> = stores.consolidation.clone();

        let api = cashflow_ledger::router(LedgerState { ledger: ledger.clone(), verifier: verifier.clone() })
            .merge(cashflow_consolidation::router(ConsolidationState {
                store: consolidation_store,
                cache: cache.clone(),
                verifier: verifier.clone(),
            }))
            .merge(cashflow_auth::issuer::router(issuer.clone()))
            .merge(ops::router(ops::Readiness::from_stores(&stores)));
        let router = cashflow_http::layers::common(api);
        Ok(Self { stores, ledger, issuer, verifier, cache, router })
    }

    /// The HTTP API.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// A relay from the ledger's outbox to the embedded queue.
    pub fn relay(&self) -> Relay {
        Relay::new(
            self.stores.ledger.clone(),
            self.stores.queue.clone(),
            self.ledger.outbox_signal(),
            RelayConfig::default(),
        )
    }

    /// A consumer from the embedded queue into the consolidation store.
    pub fn consumer(&self) -> Consumer {
        Consumer::new(
            self.stores.consolidation.clone(),
            self.stores.queue.clone(),
            self.cache.clone(),
            ConsumerConfig::default(),
        )
    }

    /// Serves HTTP on `listener` and runs the relay and the consumer until `shutdown` turns
    /// true; in-flight requests finish, then the workers stop.
    pub async fn run(self, listener: TcpListener, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let relay = tokio::spawn(self.relay().run(shutdown.clone()));
        let consumer = tokio::spawn(self.consumer().run(shutdown.clone()));
        let mut http_shutdown = shutdown.clone();
        axum::serve(listener, self.router)
            .with_graceful_shutdown(async move {
                let _ = http_shutdown.wait_for(|stop| *stop).await;
            })
            .await
            .context("serving HTTP")?;
        let _ = tokio::join!(relay, consumer);
        Ok(())
    }
}
