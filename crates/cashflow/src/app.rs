//! Composition: wires the ledger, the consolidation, the relay, the consumer and the token
//! issuer over the configured backends. `serve` runs them all in one process; the split
//! deployment runs the same parts in separate processes ([`crate::processes`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use cashflow_auth::issuer::{Issuer, IssuerConfig};
use cashflow_auth::{IdentityStore, JwtVerifier, TokenVerifier};
use cashflow_consolidation::{ConsolidationState, ConsolidationStore, Consumer, ConsumerConfig, ReportCache};
use cashflow_events::EventSource;
use cashflow_ledger::{Ledger, LedgerState, LedgerStore, Relay, RelayConfig};

use crate::backends::{BackendArgs, Queue};
use crate::ops::{self, Readiness};

/// Settings of the application.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub backends: BackendArgs,
    /// The tokens' `iss`, and the base of the URLs in the OpenID configuration.
    pub public_url: String,
    pub audience: String,
    pub token_ttl: Duration,
}

/// The built-in issuer and the verifier that trusts it.
pub async fn auth(
    config: &AppConfig,
    identity: Arc<dyn IdentityStore>,
) -> anyhow::Result<(Arc<Issuer>, Arc<dyn TokenVerifier>)> {
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
    Ok((issuer, verifier))
}

/// The all-in-one application: every service behind one router, plus the background workers.
pub struct Application {
    pub ledger_store: Arc<dyn LedgerStore>,
    pub consolidation_store: Arc<dyn ConsolidationStore>,
    pub identity: Arc<dyn IdentityStore>,
    pub queue: Queue,
    pub cache: Arc<dyn ReportCache>,
    pub ledger: Arc<Ledger>,
    pub issuer: Arc<Issuer>,
    pub verifier: Arc<dyn TokenVerifier>,
    /// Consolidation commits, pushed to the web app's pages.
    pub live: cashflow_web::Live,
    router: Router,
}

impl Application {
    /// Opens the backends and wires everything.
    pub async fn build(config: &AppConfig) -> anyhow::Result<Self> {
        let b = &config.backends;
        crate::telemetry::metrics();
        let ledger_store = b.ledger().await?;
        let consolidation_store = b.consolidation().await?;
        let identity = b.identity().await?;
        let queue = b.queue().await?;
        let cache = b.cache().await?;
        let (issuer, verifier) = auth(config, identity.clone()).await?;
        let ledger = Arc::new(Ledger::new(ledger_store.clone()));

        let readiness = Readiness::default()
            .ledger(ledger_store.clone())
            .consolidation(consolidation_store.clone())
            .queue(queue.source.clone())
            .identity(identity.clone())
            .cache(cache.clone());
        let api = cashflow_ledger::router(LedgerState { ledger: ledger.clone(), verifier: verifier.clone() })
            .merge(cashflow_consolidation::router(ConsolidationState {
                store: consolidation_store.clone(),
                cache: cache.clone(),
                verifier: verifier.clone(),
            }))
            .merge(cashflow_auth::issuer::router(issuer.clone()))
            .merge(ops::router(readiness));
        let live = cashflow_web::Live::default();
        let web =
            cashflow_web::router(cashflow_web::WebState::in_process(api.clone(), live.clone(), &config.public_url));
        let router = cashflow_http::layers::common(api.merge(web));
        Ok(Self { ledger_store, consolidation_store, identity, queue, cache, ledger, issuer, verifier, live, router })
    }

    /// The HTTP API.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// A relay from the ledger's outbox to the queue.
    pub fn relay(&self) -> Relay {
        Relay::new(
            self.ledger_store.clone(),
            self.queue.publisher.clone(),
            self.ledger.outbox_signal(),
            RelayConfig::default(),
        )
    }

    /// A consumer from the queue into the consolidation store.
    pub fn consumer(&self) -> Consumer {
        Consumer::new(
            self.consolidation_store.clone(),
            self.queue.source.clone(),
            self.live.wrap(self.cache.clone()),
            ConsumerConfig::default(),
        )
    }

    /// Serves HTTP on `listener` and runs the relay, the consumer and the metrics sampler
    /// until `shutdown` turns true; in-flight requests finish, then the workers stop.
    pub async fn run(self, listener: TcpListener, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let workers = vec![
            tokio::spawn(self.relay().run(shutdown.clone())),
            tokio::spawn(self.consumer().run(shutdown.clone())),
            tokio::spawn(
                Gauges {
                    ledger: Some(self.ledger_store.clone()),
                    consolidation: Some(self.consolidation_store.clone()),
                    queue: Some(self.queue.source.clone()),
                }
                .run(shutdown.clone()),
            ),
        ];
        let live = self.live.clone();
        let mut closing = shutdown.clone();
        tokio::spawn(async move {
            let _ = closing.wait_for(|stop| *stop).await;
            live.close()
        });
        serve_http(listener, self.router, shutdown).await?;
        for worker in workers {
            let _ = worker.await;
        }
        Ok(())
    }
}

/// Serves `router` until `shutdown` turns true, letting in-flight requests finish
/// ([`crate::server`]).
pub async fn serve_http(listener: TcpListener, router: Router, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    crate::server::serve(listener, router, shutdown).await
}

/// Samples the gauges that no request updates: outbox backlog and age, queue depth, pool usage.
pub struct Gauges {
    pub ledger: Option<Arc<dyn LedgerStore>>,
    pub consolidation: Option<Arc<dyn ConsolidationStore>>,
    pub queue: Option<Arc<dyn EventSource>>,
}

impl Gauges {
    /// Every second until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.sample().await;
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn sample(&self) {
        let mut pools = Vec::new();
        if let Some(ledger) = &self.ledger {
            if let Ok(backlog) = ledger.outbox_backlog().await {
                metrics::gauge!("cashflow_outbox_backlog").set(backlog.count as f64);
                let age =
                    backlog.oldest.map_or(0.0, |t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0);
                metrics::gauge!("cashflow_outbox_oldest_age_seconds").set(age);
            }
            pools.extend(ledger.pool_usage());
        }
        if let Some(consolidation) = &self.consolidation {
            pools.extend(consolidation.pool_usage());
        }
        for (pool, open, idle) in pools {
            metrics::gauge!("cashflow_db_pool_connections", "pool" => pool, "state" => "idle").set(f64::from(idle));
            metrics::gauge!("cashflow_db_pool_connections", "pool" => pool, "state" => "in_use")
                .set(f64::from(open.saturating_sub(idle)));
        }
        if let Some(queue) = &self.queue {
            if let Ok(Some(depth)) = queue.depth().await {
                metrics::gauge!("cashflow_queue_depth").set(depth as f64);
            }
        }
    }
}
