//! The split deployment: the same parts as `serve`, one concern per process, so the ledger
//! keeps accepting entries while the consolidator is down, and each side scales on its own.
//! An API front (nginx in `deploy/`, API Gateway on AWS) presents them as one `/v1` API.

use anyhow::Context;
use tokio::net::TcpListener;

use cashflow_consolidation::{ConsolidationState, Consumer, ConsumerConfig};
use cashflow_ledger::{Ledger, LedgerState, Relay, RelayConfig};

use crate::app::{auth, serve_http, Gauges};
use crate::cli::{ConsolidatorArgs, LedgerArgs, RelayArgs};
use crate::commands::{app_config, shutdown_on_signal};
use crate::ops::{self, Readiness};

/// The split processes trust tokens minted for the front door, wherever they are served.
const FRONT_URL: &str = "http://127.0.0.1:8080";

async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))
}

/// `cashflow ledger`: the ledger API, the token issuer and (unless `--no-relay`) the relay.
pub async fn ledger(args: LedgerArgs) -> anyhow::Result<()> {
    crate::telemetry::metrics();
    let listener = bind(args.listen).await?;
    let config = app_config(&args.auth, &args.backends, FRONT_URL.to_owned());
    let store = args.backends.ledger().await?;
    let identity = args.backends.identity().await?;
    let (issuer, verifier) = auth(&config, identity.clone()).await?;
    let ledger = std::sync::Arc::new(Ledger::new(store.clone()));
    let mut readiness = Readiness::default().ledger(store.clone()).identity(identity);
    let shutdown = shutdown_on_signal();
    let mut workers = Vec::new();
    if !args.no_relay {
        let queue = args.backends.queue().await?;
        readiness = readiness.queue(queue.source.clone());
        let relay = Relay::new(store.clone(), queue.publisher, ledger.outbox_signal(), RelayConfig::default());
        workers.push(tokio::spawn(relay.run(shutdown.clone())));
    }
    if let Some(addr) = args.grpc_listen {
        workers.push(crate::grpc::spawn_server(addr, store.clone(), verifier.clone(), shutdown.clone()).await?);
    }
    workers.push(tokio::spawn(Gauges { ledger: Some(store), consolidation: None, queue: None }.run(shutdown.clone())));
    let router = cashflow_http::layers::common(
        cashflow_ledger::router(LedgerState { ledger, verifier })
            .merge(cashflow_auth::issuer::router(issuer))
            .merge(ops::router(readiness)),
    );
    tracing::info!(listen = %args.listen, relay = !args.no_relay, "cashflow ledger serving");
    serve_http(listener, router, shutdown).await?;
    for w in workers {
        let _ = w.await;
    }
    Ok(())
}

/// `cashflow relay`: moves the ledger's outbox to the queue; serves health and metrics.
pub async fn relay(args: RelayArgs) -> anyhow::Result<()> {
    crate::telemetry::metrics();
    let listener = bind(args.listen).await?;
    let store = args.backends.ledger().await?;
    let queue = args.backends.queue().await?;
    let shutdown = shutdown_on_signal();
    // Another process commits the entries, so nothing signals this relay: it polls.
    let relay = Relay::new(
        store.clone(),
        queue.publisher,
        std::sync::Arc::new(tokio::sync::Notify::new()),
        RelayConfig::default(),
    );
    let workers = [
        tokio::spawn(relay.run(shutdown.clone())),
        tokio::spawn(
            Gauges { ledger: Some(store.clone()), consolidation: None, queue: Some(queue.source.clone()) }
                .run(shutdown.clone()),
        ),
    ];
    let router = cashflow_http::layers::common(ops::router(Readiness::default().ledger(store).queue(queue.source)));
    tracing::info!(listen = %args.listen, "cashflow relay running");
    serve_http(listener, router, shutdown).await?;
    for w in workers {
        let _ = w.await;
    }
    Ok(())
}

/// `cashflow consolidator`: the queue consumer and the reports API; with `--no-consumer`, the
/// reports API alone (a replica that keeps reports readable while the consumer is down).
pub async fn consolidator(args: ConsolidatorArgs) -> anyhow::Result<()> {
    crate::telemetry::metrics();
    let listener = bind(args.listen).await?;
    let config = app_config(&args.auth, &args.backends, FRONT_URL.to_owned());
    let store = args.backends.consolidation().await?;
    let cache: std::sync::Arc<dyn cashflow_consolidation::ReportCache> =
        if args.no_consumer && args.backends.cache_url == "memory" {
            std::sync::Arc::new(cashflow_consolidation::NoCache)
        } else {
            args.backends.cache().await?
        };
    let identity = args.backends.identity().await?;
    let (_, verifier) = auth(&config, identity.clone()).await?;
    let shutdown = shutdown_on_signal();
    let mut readiness = Readiness::default().consolidation(store.clone()).identity(identity).cache(cache.clone());
    let mut workers = Vec::new();
    let queue = if args.no_consumer { None } else { Some(args.backends.queue().await?.source) };
    if let Some(source) = &queue {
        readiness = readiness.queue(source.clone());
        let consumer = Consumer::new(store.clone(), source.clone(), cache.clone(), ConsumerConfig::default());
        workers.push(tokio::spawn(consumer.run(shutdown.clone())));
    }
    if let (Some(client), true) = (args.ledger_grpc.client()?, args.reconcile.reconcile_every > 0) {
        let reconciler =
            cashflow_consolidation::reconcile::Reconciler::new(store.clone(), cache.clone(), std::sync::Arc::new(client));
        let every = std::time::Duration::from_secs(args.reconcile.reconcile_every);
        workers.push(tokio::spawn(crate::reconcile::schedule(
            reconciler,
            every,
            args.reconcile.reconcile_days,
            shutdown.clone(),
        )));
    }
    workers
        .push(tokio::spawn(Gauges { ledger: None, consolidation: Some(store.clone()), queue }.run(shutdown.clone())));
    let router = cashflow_http::layers::common(
        cashflow_consolidation::router(ConsolidationState { store, cache, verifier }).merge(ops::router(readiness)),
    );
    tracing::info!(listen = %args.listen, consumer = !args.no_consumer, "cashflow consolidator serving");
    serve_http(listener, router, shutdown).await?;
    for w in workers {
        let _ = w.await;
    }
    Ok(())
}
