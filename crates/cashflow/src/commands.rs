//! What each subcommand does.

use std::time::Duration;

use anyhow::{bail, Context};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use cashflow_auth::Scopes;
use cashflow_domain::{Currency, MerchantId, MerchantName, MerchantTimeZone};
use cashflow_ledger::Ledger;

use crate::app::{AppConfig, Application};
use crate::backends::BackendArgs;
use crate::cli::{AuthArgs, ClientCommand, Command, MerchantCommand, ServeArgs, UserCommand};
use crate::processes;

/// Runs one command to completion.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(args).await,
        Command::Ledger(args) => processes::ledger(args).await,
        Command::Relay(args) => processes::relay(args).await,
        Command::Consolidator(args) => processes::consolidator(args).await,
        Command::Reconcile(args) => crate::reconcile::run(args).await,
        Command::Migrate(backends) => {
            backends.ledger().await?;
            backends.consolidation().await?;
            backends.identity().await?;
            backends.queue().await?;
            println!("schemas are up to date");
            Ok(())
        }
        Command::Merchant(MerchantCommand::Create { name, currency, timezone, json, store }) => {
            let name = MerchantName::parse(&name).map_err(anyhow::Error::msg)?;
            let currency = Currency::parse(&currency)?;
            let time_zone = MerchantTimeZone::parse(&timezone)?;
            let ledger = ledger(&store).await?;
            let merchant = ledger.create_merchant(name, currency, time_zone).await?;
            if json {
                println!("{}", json!({ "merchant_id": merchant.id.to_string() }));
            } else {
                println!("merchant_id: {}", merchant.id);
            }
            Ok(())
        }
        Command::Client(ClientCommand::Create { merchant, scopes, name, json, store }) => {
            let scopes = Scopes::parse_list(&scopes).map_err(|e| anyhow::anyhow!("{e}"))?;
            let merchant = existing_merchant(&store, &merchant).await?;
            let client = store.identity().await?.create_client(merchant, scopes, name.as_deref()).await?;
            if json {
                println!(
                    "{}",
                    json!({ "client_id": client.client_id, "client_secret": client.client_secret.expose_secret(), "scopes": scopes.to_string() })
                );
            } else {
                println!("client_id:     {}", client.client_id);
                println!("client_secret: {}  (shown only now)", client.client_secret.expose_secret());
            }
            Ok(())
        }
        Command::User(UserCommand::Create { merchant, username, password, scopes, json, store }) => {
            let scopes = Scopes::parse_list(&scopes).map_err(|e| anyhow::anyhow!("{e}"))?;
            let merchant = existing_merchant(&store, &merchant).await?;
            store.identity().await?.create_user(&username, &SecretString::from(password), merchant, scopes).await?;
            if json {
                println!("{}", json!({ "username": username, "merchant_id": merchant.to_string() }));
            } else {
                println!("user {username} created for merchant {merchant}");
            }
            Ok(())
        }
    }
}

async fn ledger(backends: &BackendArgs) -> anyhow::Result<Ledger> {
    Ok(Ledger::new(backends.ledger().await?))
}

async fn existing_merchant(backends: &BackendArgs, id: &str) -> anyhow::Result<MerchantId> {
    let id = MerchantId::parse(id)?;
    if backends.ledger().await?.merchant(id).await?.is_none() {
        bail!("merchant {id} does not exist (create it with `cashflow merchant create`)");
    }
    Ok(id)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;
    let config = app_config(&args.auth, &args.backends, format!("http://{local}"));
    let public_url = config.public_url.clone();
    let app = Application::build(&config).await?;
    if !args.no_demo && app.ledger_store.merchant_count().await? == 0 {
        create_demo(&app, &public_url).await?;
    }
    tracing::info!(listen = %local, "cashflow serving");
    let shutdown = shutdown_on_signal();
    let grpc = match args.grpc_listen {
        Some(addr) => Some(
            crate::grpc::spawn_server(addr, app.ledger_store.clone(), app.verifier.clone(), shutdown.clone()).await?,
        ),
        None => None,
    };
    app.run(listener, shutdown).await?;
    if let Some(grpc) = grpc {
        let _ = grpc.await;
    }
    Ok(())
}

/// The application settings from the command line; `default_public_url` when none is given.
pub fn app_config(auth: &AuthArgs, backends: &BackendArgs, default_public_url: String) -> AppConfig {
    AppConfig {
        backends: backends.clone(),
        public_url: auth.public_url.clone().unwrap_or(default_public_url),
        audience: auth.audience.clone(),
        token_ttl: Duration::from_secs(auth.token_ttl_secs),
    }
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
    let client = app.identity.create_client(merchant.id, Scopes::all(), Some("demo")).await?;
    let id = &client.client_id;
    let secret = client.client_secret.expose_secret();
    println!(
        r#"
First start: created a demo merchant and an API client (the secret is shown only now).
  merchant_id:   {merchant_id}
  client_id:     {id}
  client_secret: {secret}

Try it:
  TOKEN=$(curl -s -u '{id}:{secret}' -d grant_type=client_credentials {base}/oauth2/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  curl -s -X POST {base}/v1/entries -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{{"type":"credit","amount":"150.00","description":"First sale","category":"sales"}}'
  curl -s {base}/v1/balances/daily/$(TZ=America/Sao_Paulo date +%F) -H "Authorization: Bearer $TOKEN"
"#,
        merchant_id = merchant.id
    );
    Ok(())
}
