//! gRPC in the binary: the ledger side serves `LedgerService` (`--grpc-listen`), the
//! consolidation side calls it with a service token (`--ledger-grpc-url`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use cashflow_auth::TokenVerifier;
use cashflow_grpc::client::{StaticToken, TokenSource};
use cashflow_grpc::{ClientError, LedgerGrpcClient};
use cashflow_ledger::LedgerStore;

/// With `--grpc-listen`, serves the ledger's gRPC service there until `shutdown` turns true.
pub async fn serve_if(
    addr: Option<SocketAddr>,
    store: Arc<dyn LedgerStore>,
    verifier: Arc<dyn TokenVerifier>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    match addr {
        Some(addr) => Ok(Some(spawn_server(addr, store, verifier, shutdown).await?)),
        None => Ok(None),
    }
}

/// Waits for a worker started beside a process (it stops on the same shutdown).
pub async fn join(worker: Option<JoinHandle<()>>) {
    if let Some(worker) = worker {
        let _ = worker.await;
    }
}

/// Serves the ledger's gRPC service on `addr` until `shutdown` turns true.
pub async fn spawn_server(
    addr: SocketAddr,
    store: Arc<dyn LedgerStore>,
    verifier: Arc<dyn TokenVerifier>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding gRPC {addr}"))?;
    let routes = cashflow_grpc::routes(store, verifier).await.context("building the gRPC reflection service")?;
    Ok(tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        if let Err(e) = cashflow_grpc::serve(listener, routes, stop).await {
            tracing::error!(error = %e, "the gRPC server stopped");
        }
    }))
}

/// How the consolidation side reaches the ledger's gRPC service.
#[derive(Debug, Clone, Args)]
pub struct LedgerGrpcArgs {
    /// The ledger's gRPC endpoint, e.g. `http://127.0.0.1:50051` (its `--grpc-listen`).
    #[arg(long, env = "CASHFLOW_LEDGER_GRPC_URL")]
    pub ledger_grpc_url: Option<String>,

    /// A client with the scope `ledger:read`, whose service tokens come from `--token-url`.
    #[arg(long, env = "CASHFLOW_LEDGER_CLIENT_ID")]
    pub client_id: Option<String>,

    /// The secret of `--client-id`. Ours are base64url, so one in 64 begins with `-`: taken
    /// as the value, not as an option.
    #[arg(long, env = "CASHFLOW_LEDGER_CLIENT_SECRET", hide_env_values = true, allow_hyphen_values = true)]
    pub client_secret: Option<SecretString>,

    /// A service token given directly, instead of `--client-id`/`--client-secret`.
    #[arg(long, env = "CASHFLOW_LEDGER_TOKEN", hide_env_values = true, allow_hyphen_values = true)]
    pub ledger_token: Option<SecretString>,

    /// The built-in issuer's token endpoint (`client_credentials`).
    #[arg(long, env = "CASHFLOW_TOKEN_URL", default_value = "http://127.0.0.1:8080/oauth2/token")]
    pub token_url: String,
}

impl LedgerGrpcArgs {
    /// The client, or `None` without `--ledger-grpc-url`.
    pub fn client(&self) -> anyhow::Result<Option<LedgerGrpcClient>> {
        let Some(url) = &self.ledger_grpc_url else {
            return Ok(None);
        };
        let tokens: Arc<dyn TokenSource> = match (&self.ledger_token, &self.client_id, &self.client_secret) {
            (Some(token), _, _) => Arc::new(StaticToken(token.expose_secret().to_owned())),
            (None, Some(id), Some(secret)) => Arc::new(ClientCredentials {
                token_url: self.token_url.clone(),
                client_id: id.clone(),
                client_secret: secret.clone(),
                http: reqwest::Client::new(),
                current: Mutex::new(None),
            }),
            _ => bail!("the ledger's gRPC service needs --ledger-token, or --client-id and --client-secret"),
        };
        Ok(Some(LedgerGrpcClient::new(url, tokens)?))
    }
}

/// Service tokens from the built-in issuer's token endpoint, renewed a minute before expiry.
struct ClientCredentials {
    token_url: String,
    client_id: String,
    client_secret: SecretString,
    http: reqwest::Client,
    /// The token and when to stop using it.
    current: Mutex<Option<(SecretString, Instant)>>,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[async_trait]
impl TokenSource for ClientCredentials {
    async fn token(&self) -> Result<String, ClientError> {
        let mut current = self.current.lock().await;
        if let Some((token, until)) = current.as_ref() {
            if Instant::now() < *until {
                return Ok(token.expose_secret().to_owned());
            }
        }
        let fail = |e: &dyn std::fmt::Display| ClientError::Token(e.to_string());
        let response = self
            .http
            .post(&self.token_url)
            .basic_auth(&self.client_id, Some(self.client_secret.expose_secret()))
            .form(&[("grant_type", "client_credentials"), ("scope", "ledger:read")])
            .send()
            .await
            .map_err(|e| fail(&e))?;
        if !response.status().is_success() {
            return Err(ClientError::Token(format!("token endpoint answered {}", response.status())));
        }
        let body: TokenResponse = response.json().await.map_err(|e| fail(&e))?;
        let until = Instant::now() + Duration::from_secs(body.expires_in.saturating_sub(60).max(1));
        *current = Some((SecretString::from(body.access_token.clone()), until));
        Ok(body.access_token)
    }
}
