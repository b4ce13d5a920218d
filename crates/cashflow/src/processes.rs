//! The processes: `serve` runs every part in one; the split deployment runs one concern per
//! process, so the ledger keeps accepting entries while the consolidator is down and each side
//! scales on its own. An API front (nginx in `deploy/`) presents them as one `/v1` API. Each
//! only picks its [`Part`]s; [`crate::app`] builds and runs them.

use std::sync::Arc;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio::sync::watch;

use cashflow_auth::{Scope, Scopes};
use cashflow_domain::{Currency, MerchantName, MerchantTimeZone};

use crate::app::{AppConfig, Application, Part, Parts, Process};
use crate::cli::{ConsolidatorArgs, HttpArgs, LedgerArgs, RelayArgs, ServeArgs};
use crate::server::ServerConfig;
use crate::tls::ServerTls;

/// The split processes trust tokens minted for the front door, wherever they are served
/// (`https://` when the process serves HTTPS).
const FRONT: &str = "127.0.0.1:8080";

fn front_url(http: &HttpArgs) -> String {
    format!("{}://{FRONT}", http.scheme())
}

/// The server's settings and certificate; a certificate is reloaded on `SIGHUP` from now on.
fn http(args: &HttpArgs) -> anyhow::Result<(ServerConfig, Option<Arc<ServerTls>>)> {
    let tls = args.tls().context("loading the TLS certificate")?;
    if let Some(tls) = &tls {
        crate::tls::reload_on_hangup(tls.clone());
    }
    Ok((args.config(), tls))
}

async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))
}

/// `cashflow serve`: everything, and the demo merchant on the first start.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (server, tls) = http(&args.http)?;
    let listener = bind(args.listen).await?;
    let local = listener.local_addr()?;
    let config = AppConfig::from_args(&args.auth, &args.backends, format!("{}://{local}", args.http.scheme()))?;
    let app = Application::build(&config).await?;
    if !args.no_demo && app.ledger_store.merchant_count().await? == 0 {
        create_demo(&app, &config.public_url).await?;
    }
    tracing::info!(listen = %local, tls = tls.is_some(), "cashflow serving");
    let shutdown = shutdown_on_signal();
    let grpc =
        crate::grpc::serve_if(args.grpc_listen, app.ledger_store.clone(), app.verifier.clone(), shutdown.clone())
            .await?;
    app.into_process().run(listener, server, tls, shutdown).await?;
    crate::grpc::join(grpc).await;
    Ok(())
}

/// `cashflow ledger`: the ledger API, the token issuer and (unless `--no-relay`) the relay.
pub async fn ledger(args: LedgerArgs) -> anyhow::Result<()> {
    let (server, tls) = http(&args.http)?;
    let listener = bind(args.listen).await?;
    let config = AppConfig::from_args(&args.auth, &args.backends, front_url(&args.http))?;
    let mut run = vec![Part::LedgerApi, Part::TokenIssuer];
    if !args.no_relay {
        run.push(Part::Relay);
    }
    let (process, parts) = Process::assemble(Parts::new(config), &run).await?;
    tracing::info!(listen = %args.listen, relay = !args.no_relay, "cashflow ledger serving");
    let shutdown = shutdown_on_signal();
    let (store, verifier) = (parts.ledger_store().await?, parts.auth().await?.1);
    let grpc = crate::grpc::serve_if(args.grpc_listen, store, verifier, shutdown.clone()).await?;
    process.run(listener, server, tls, shutdown).await?;
    crate::grpc::join(grpc).await;
    Ok(())
}

/// `cashflow relay`: moves the ledger's outbox to the queue; serves health and metrics.
/// Another process commits the entries, so nothing signals this relay: it polls.
pub async fn relay(args: RelayArgs) -> anyhow::Result<()> {
    let (server, tls) = http(&args.http)?;
    let listener = bind(args.listen).await?;
    // The relay builds no part that issues or checks tokens: the auth settings are never read.
    let config = AppConfig {
        backends: args.backends,
        public_url: front_url(&args.http),
        audience: String::new(),
        token_ttl: std::time::Duration::ZERO,
        trust_forwarded_for: false,
        web_secret: None,
        oidc: cashflow_auth::oidc::OidcConfig::default(),
    };
    let (process, _) = Process::assemble(Parts::new(config), &[Part::Relay]).await?;
    tracing::info!(listen = %args.listen, "cashflow relay running");
    process.run(listener, server, tls, shutdown_on_signal()).await
}

/// `cashflow consolidator`: the queue consumer and the reports API; with `--no-consumer`, the
/// reports API alone (a replica that keeps reports readable while the consumer is down).
pub async fn consolidator(args: ConsolidatorArgs) -> anyhow::Result<()> {
    let (server, tls) = http(&args.http)?;
    let listener = bind(args.listen).await?;
    let config = AppConfig::from_args(&args.auth, &args.backends, front_url(&args.http))?;
    let mut run = vec![Part::ReportsApi];
    if !args.no_consumer {
        run.push(Part::Consumer);
    }
    let (process, parts) = Process::assemble(Parts::new(config), &run).await?;
    tracing::info!(listen = %args.listen, consumer = !args.no_consumer, "cashflow consolidator serving");
    let shutdown = shutdown_on_signal();
    let reconcile = match (args.ledger_grpc.client()?, args.reconcile.reconcile_every) {
        (Some(client), every) if every > 0 => {
            let reconciler = cashflow_consolidation::reconcile::Reconciler::new(
                parts.consolidation_store().await?,
                parts.cache().await?,
                std::sync::Arc::new(client),
            );
            let every = std::time::Duration::from_secs(every);
            Some(tokio::spawn(crate::reconcile::schedule(
                reconciler,
                every,
                args.reconcile.reconcile_days,
                shutdown.clone(),
            )))
        }
        _ => None,
    };
    process.run(listener, server, tls, shutdown).await?;
    crate::grpc::join(reconcile).await;
    Ok(())
}

/// A shutdown flag that turns true on SIGTERM or Ctrl-C.
pub fn shutdown_on_signal() -> watch::Receiver<bool> {
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    shutdown
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The first start of an empty store: a demo merchant, an API client, and a ready-to-paste
/// walk-through. The secret is printed here once and stored only as a hash.
async fn create_demo(app: &Application, base: &str) -> anyhow::Result<()> {
    let merchant = app
        .ledger
        .create_merchant(
            MerchantName::parse("Demo Merchant").map_err(anyhow::Error::msg)?,
            Currency::BRL,
            MerchantTimeZone::DEFAULT,
        )
        .await?;
    // The demo is the merchant's owner: it records, reads and closes the till (the README's
    // close example and the web app's "Fechar o caixa" use it).
    let owner = Scopes::all().with(Scope::DaysClose).with(Scope::DaysReopen);
    let client = app.identity.create_client(merchant.id, owner, Some("demo")).await?;
    let password = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    app.identity.create_user("demo", &SecretString::from(password.clone()), merchant.id, owner).await?;
    let id = &client.client_id;
    let secret = client.client_secret.expose_secret();
    println!(
        r#"
First start: created a demo merchant, an API client and a web user (secrets are shown only now).
  merchant_id:   {merchant_id}
  client_id:     {id}
  client_secret: {secret}
  web app:       {base}/  username: demo  password: {password}

Try it:
  TOKEN=$(curl -s -u '{id}:{secret}' -d grant_type=client_credentials {base}/oauth2/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  curl -s -X POST {base}/v1/entries -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{{"type":"credit","amount":"150.00","description":"First sale","category":"sales"}}'
  curl -s {base}/v1/balances/daily/$(TZ=America/Sao_Paulo date +%F) -H "Authorization: Bearer $TOKEN"
"#,
        merchant_id = merchant.id
    );
    Ok(())
}
