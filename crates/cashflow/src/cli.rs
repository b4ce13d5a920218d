//! The command line. Every option also reads an environment variable, so the same binary is
//! configured by flags on a laptop and by the environment in a container.

use anyhow::bail;
use cashflow_auth::oidc::{
    default_discovery_url, default_jwks_url, parse_group_scopes, OidcConfig, OidcPolicy, WebClient, WebEndpoints,
    DEFAULT_OIDC_MERCHANT_CLAIM,
};
use cashflow_auth::Scopes;
use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::backends::BackendArgs;
use crate::server::{self, ServerConfig};
use crate::telemetry::LogFormat;
use crate::tls::{ServerTls, TlsError};

/// cashflow: a merchant's ledger and daily consolidated balance.
#[derive(Debug, Parser)]
#[command(name = "cashflow", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "CASHFLOW_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// How tokens are issued and checked.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Public base URL of the API (the front door clients call): the `iss` of the tokens the
    /// built-in issuer mints and requires. `serve` defaults to `http://<listen>`; the split
    /// processes default to the local front, `http://127.0.0.1:8080`; `https://` instead with
    /// `--tls-cert`.
    #[arg(long, env = "CASHFLOW_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// A secret of at least 32 bytes (e.g. `openssl rand -base64 48`) from which the web app
    /// derives its CSRF and sign-in-flow keys, so that every process given it accepts the forms
    /// another rendered: needed with more than one process serving the web app (the split
    /// deployment scaled out, Lambda). Without it each process draws keys of its own.
    #[arg(long, env = "CASHFLOW_WEB_SECRET", hide_env_values = true, allow_hyphen_values = true)]
    pub web_secret: Option<SecretString>,

    /// The `aud` tokens are issued for and must carry.
    #[arg(long, env = "CASHFLOW_AUDIENCE", default_value = "cashflow")]
    pub audience: String,

    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, env = "CASHFLOW_TOKEN_TTL_SECS", default_value_t = 3600)]
    pub token_ttl_secs: u64,

    /// Throttle failed token requests by the last `X-Forwarded-For` address instead of the
    /// peer's. Set it only behind a proxy that appends that header (the split deployment's
    /// nginx does); without one, clients could pick their own address.
    #[arg(long, env = "CASHFLOW_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    #[command(flatten)]
    pub oidc: OidcArgs,
}

/// External OpenID Connect issuers (Amazon Cognito) whose tokens are trusted ([`OidcConfig`]).
#[derive(Debug, Clone, Default, Args)]
pub struct OidcArgs {
    /// The exact `iss` of an issuer to trust, e.g.
    /// `https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC123`. Repeatable (the
    /// environment variable takes a comma-separated list).
    #[arg(long = "oidc-issuer", env = "CASHFLOW_OIDC_ISSUER", value_delimiter = ',')]
    pub oidc_issuers: Vec<String>,

    /// Where each issuer's keys are, in the order of the issuers; default
    /// `{issuer}/.well-known/jwks.json` (an emulator serves them at another host than its `iss`).
    #[arg(long = "oidc-jwks-url", env = "CASHFLOW_OIDC_JWKS_URL", value_delimiter = ',')]
    pub oidc_jwks_urls: Vec<String>,

    /// The app clients accepted: an access token's `client_id`, an ID token's `aud`.
    #[arg(long, env = "CASHFLOW_OIDC_CLIENT_IDS", value_delimiter = ',')]
    pub oidc_client_ids: Vec<String>,

    /// Accept ID tokens as well as access tokens (`token_use` is checked either way).
    #[arg(long, env = "CASHFLOW_OIDC_ACCEPT_ID_TOKENS")]
    pub oidc_accept_id_tokens: bool,

    /// The claim holding the merchant id.
    #[arg(long, env = "CASHFLOW_OIDC_MERCHANT_CLAIM", default_value = DEFAULT_OIDC_MERCHANT_CLAIM)]
    pub oidc_merchant_claim: String,

    /// Scopes granted by a group of `cognito:groups`: `group=scope scope …`. Repeatable (the
    /// environment variable takes a comma-separated list), e.g.
    /// `owner=entries:write entries:read reports:read,accountant=entries:read reports:read`.
    #[arg(long, env = "CASHFLOW_OIDC_GROUP_SCOPES", value_delimiter = ',', value_parser = parse_group_scopes)]
    pub oidc_group_scopes: Vec<(String, Scopes)>,

    /// The resource server's identifier: `{prefix}/{scope}` in a token's `scope` grants `{scope}`.
    #[arg(long, env = "CASHFLOW_OIDC_SCOPE_PREFIX")]
    pub oidc_scope_prefix: Option<String>,

    /// Refuse the built-in issuer's tokens: only the external issuers are trusted.
    #[arg(long, env = "CASHFLOW_NO_BUILTIN_ISSUER")]
    pub no_builtin_issuer: bool,

    /// The app client the web app signs people in with, through the issuer's hosted UI (the
    /// authorization code flow with PKCE; callback `{public URL}/auth/callback`). Its access
    /// tokens are accepted like those of `--oidc-client-ids`.
    #[arg(long, env = "CASHFLOW_OIDC_WEB_CLIENT_ID")]
    pub oidc_web_client_id: Option<String>,

    /// The secret of `--oidc-web-client-id`, for an app client that has one (sent to the token
    /// endpoint with HTTP Basic).
    #[arg(
        long,
        env = "CASHFLOW_OIDC_WEB_CLIENT_SECRET",
        hide_env_values = true,
        requires = "oidc_web_client_id",
        allow_hyphen_values = true
    )]
    pub oidc_web_client_secret: Option<SecretString>,

    /// Which `--oidc-issuer` the web app signs in with; needed only when several are trusted.
    #[arg(long, env = "CASHFLOW_OIDC_WEB_ISSUER", requires = "oidc_web_client_id")]
    pub oidc_web_issuer: Option<String>,

    /// A Cognito user pool's hosted UI domain, e.g.
    /// `https://padaria.auth.us-east-1.amazoncognito.com`: its `/oauth2/authorize`,
    /// `/oauth2/token` and `/logout`. Without it, the endpoints come from the issuer's
    /// `/.well-known/openid-configuration`.
    #[arg(long, env = "CASHFLOW_OIDC_WEB_DOMAIN", requires = "oidc_web_client_id")]
    pub oidc_web_domain: Option<String>,

    /// The scopes the web app asks for, space-separated.
    #[arg(long, env = "CASHFLOW_OIDC_WEB_SCOPES", default_value = "openid")]
    pub oidc_web_scopes: String,

    /// The provider's name on the sign-in button ("Entrar com Cognito").
    #[arg(long, env = "CASHFLOW_OIDC_WEB_NAME", default_value = "Cognito")]
    pub oidc_web_name: String,
}

impl OidcArgs {
    /// The issuers to trust. Fails on settings that cannot work: JWKS URLs not one per issuer,
    /// an issuer without accepted clients, or no issuer trusted at all.
    pub fn config(&self) -> anyhow::Result<OidcConfig> {
        let issuers: Vec<(String, String)> = match self.oidc_jwks_urls.as_slice() {
            [] => self.oidc_issuers.iter().map(|iss| (iss.clone(), default_jwks_url(iss))).collect(),
            urls if urls.len() == self.oidc_issuers.len() => {
                self.oidc_issuers.iter().cloned().zip(urls.iter().cloned()).collect()
            }
            urls => bail!(
                "{} --oidc-jwks-url for {} --oidc-issuer: give one per issuer, in order",
                urls.len(),
                self.oidc_issuers.len()
            ),
        };
        if !issuers.is_empty() && self.oidc_client_ids.is_empty() && self.oidc_web_client_id.is_none() {
            bail!("--oidc-issuer needs --oidc-client-ids (or --oidc-web-client-id): the app clients whose tokens are accepted");
        }
        if issuers.is_empty() && self.no_builtin_issuer {
            bail!("--no-builtin-issuer without any --oidc-issuer would trust no token at all");
        }
        let web = self.web_client(&issuers)?;
        let mut client_ids = self.oidc_client_ids.clone();
        // The web app calls the API with the access tokens of its own app client.
        if let Some(web) = &web {
            if !client_ids.contains(&web.client_id) {
                client_ids.push(web.client_id.clone());
            }
        }
        Ok(OidcConfig {
            issuers,
            web,
            policy: OidcPolicy {
                client_ids,
                accept_id_tokens: self.oidc_accept_id_tokens,
                merchant_claim: self.oidc_merchant_claim.clone(),
                group_scopes: self.oidc_group_scopes.clone(),
                scope_prefix: self.oidc_scope_prefix.clone(),
                ..OidcPolicy::default()
            },
            trust_builtin: !self.no_builtin_issuer,
        })
    }
}

impl OidcArgs {
    /// The web app's app client, if `--oidc-web-client-id` is given: of the one trusted issuer,
    /// or of the one `--oidc-web-issuer` names.
    fn web_client(&self, issuers: &[(String, String)]) -> anyhow::Result<Option<WebClient>> {
        let Some(client_id) = self.oidc_web_client_id.clone().filter(|id| !id.is_empty()) else {
            return Ok(None);
        };
        let issuer = match (&self.oidc_web_issuer, issuers) {
            (Some(issuer), _) if issuers.iter().any(|(iss, _)| iss == issuer) => issuer.clone(),
            (Some(issuer), _) => bail!("--oidc-web-issuer {issuer} is not one of the --oidc-issuer trusted"),
            (None, [(issuer, _)]) => issuer.clone(),
            (None, []) => bail!("--oidc-web-client-id needs the --oidc-issuer it signs in with"),
            (None, _) => bail!("several --oidc-issuer are trusted: name the web app's with --oidc-web-issuer"),
        };
        if !self.oidc_web_scopes.split_whitespace().any(|s| s == "openid") {
            bail!("--oidc-web-scopes must include `openid`: the sign-in needs an ID token");
        }
        let endpoints = match &self.oidc_web_domain {
            Some(domain) => WebEndpoints::CognitoDomain(domain.trim_end_matches('/').to_owned()),
            None => WebEndpoints::Discovery(default_discovery_url(&issuer)),
        };
        Ok(Some(WebClient {
            issuer,
            client_id,
            client_secret: self.oidc_web_client_secret.clone(),
            endpoints,
            scopes: self.oidc_web_scopes.clone(),
            display_name: self.oidc_web_name.clone(),
        }))
    }
}

/// How long the HTTP server waits for slow clients, and how many it keeps ([`ServerConfig`]).
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Seconds a request's header may take to arrive, from the connection's accept or from the
    /// header's first byte.
    #[arg(long, env = "CASHFLOW_HTTP_HEADER_TIMEOUT_SECS", default_value_t = server::DEFAULT_HEADER_READ_TIMEOUT.as_secs())]
    pub http_header_timeout_secs: u64,

    /// Seconds an idle keep-alive connection is kept open.
    #[arg(long, env = "CASHFLOW_HTTP_KEEP_ALIVE_TIMEOUT_SECS", default_value_t = server::DEFAULT_KEEP_ALIVE_TIMEOUT.as_secs())]
    pub http_keep_alive_timeout_secs: u64,

    /// Seconds a request's body may take to arrive.
    #[arg(long, env = "CASHFLOW_HTTP_BODY_TIMEOUT_SECS", default_value_t = server::DEFAULT_BODY_READ_TIMEOUT.as_secs())]
    pub http_body_timeout_secs: u64,

    /// Open connections per process; past it, new connections are closed at once.
    #[arg(long, env = "CASHFLOW_HTTP_MAX_CONNECTIONS", default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
    pub http_max_connections: usize,

    /// Serve HTTPS only, with this certificate chain (PEM, leaf first). Reloaded with its key
    /// on `SIGHUP`.
    #[arg(long, env = "CASHFLOW_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of `--tls-cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "CASHFLOW_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl HttpArgs {
    /// The server's settings.
    pub fn config(&self) -> ServerConfig {
        ServerConfig {
            header_read_timeout: Duration::from_secs(self.http_header_timeout_secs),
            keep_alive_timeout: Duration::from_secs(self.http_keep_alive_timeout_secs),
            body_read_timeout: Duration::from_secs(self.http_body_timeout_secs),
            max_connections: self.http_max_connections,
        }
    }

    /// The server's certificate, when `--tls-cert` and `--tls-key` are given.
    pub fn tls(&self) -> Result<Option<Arc<ServerTls>>, TlsError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(Arc::new(ServerTls::load(cert, key)?))),
            _ => Ok(None),
        }
    }

    /// `https` with a certificate, else `http`: the scheme of the default public URLs.
    pub fn scheme(&self) -> &'static str {
        if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve everything in one process: ledger, consolidation, relay, consumer, token issuer.
    Serve(ServeArgs),
    /// Split deployment: the ledger API and the token issuer (and the relay, unless --no-relay).
    Ledger(LedgerArgs),
    /// Split deployment: the outbox relay alone.
    Relay(RelayArgs),
    /// Split deployment: the queue consumer and the reports API.
    Consolidator(ConsolidatorArgs),
    /// Create or upgrade the database schemas, then exit.
    Migrate(BackendArgs),
    /// Manage merchants.
    #[command(subcommand)]
    Merchant(MerchantCommand),
    /// Manage API clients (OAuth 2.0 client credentials).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage users (OAuth 2.0 password grant).
    #[command(subcommand)]
    User(UserCommand),
    /// Compare every consolidated day with the ledger (over gRPC), print the drifting days,
    /// and with --repair rebuild them. Exit status 1 while something drifts.
    Reconcile(crate::reconcile::ReconcileArgs),
    /// Manage the built-in token issuer.
    #[command(subcommand)]
    Issuer(IssuerCommand),
    /// Close, reopen and list a merchant's days (the same rules as `/v1/days`).
    #[command(subcommand)]
    Day(DayCommand),
    /// Link external issuers' (Cognito's) subjects and machine clients to merchants.
    #[command(subcommand)]
    Identity(crate::operator::IdentityCommand),
}

/// `day …`: written to the ledger store the services use, so it works while they run (the
/// relay publishes the close's or reopen's event like any other).
#[derive(Debug, Subcommand)]
pub enum DayCommand {
    /// Close the merchant's books through a day (that day and every earlier one).
    Close {
        /// The merchant.
        #[arg(long)]
        merchant: String,
        /// The business day, YYYY-MM-DD.
        #[arg(long)]
        date: String,
        /// What was counted in the drawer, a decimal in the merchant's currency (`150.00`).
        #[arg(long)]
        counted_cash: Option<String>,
        /// A note kept with the close (at most 500 characters).
        #[arg(long)]
        note: Option<String>,
        /// Who closes, for the audit trail.
        #[arg(long, default_value = "operator")]
        by: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: BackendArgs,
    },
    /// Reopen the merchant's books from a day: the watermark moves back to the day before.
    Reopen {
        /// The merchant.
        #[arg(long)]
        merchant: String,
        /// The first business day to reopen, YYYY-MM-DD.
        #[arg(long)]
        date: String,
        /// Why (required; kept in the audit trail, at most 500 characters).
        #[arg(long)]
        reason: String,
        /// Who reopens, for the audit trail.
        #[arg(long, default_value = "operator")]
        by: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: BackendArgs,
    },
    /// List the close records and the audit trail of closes and reopens of a range of days.
    List {
        /// The merchant.
        #[arg(long)]
        merchant: String,
        /// First business day, inclusive (YYYY-MM-DD).
        #[arg(long)]
        from: String,
        /// Last business day, inclusive (YYYY-MM-DD).
        #[arg(long)]
        to: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: BackendArgs,
    },
}

/// `issuer …`
#[derive(Debug, Subcommand)]
pub enum IssuerCommand {
    /// Rotate the signing key: the new key signs after every process has loaded it; the old one
    /// stays in the JWKS until every token it signed has expired.
    RotateKey {
        /// The services' token lifetime (at least): how long the old key must stay published.
        #[arg(long, env = "CASHFLOW_TOKEN_TTL_SECS", default_value_t = 3600)]
        token_ttl_secs: u64,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: BackendArgs,
    },
}

/// Options of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CASHFLOW_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub http: HttpArgs,

    #[command(flatten)]
    pub backends: BackendArgs,

    #[command(flatten)]
    pub auth: AuthArgs,

    /// Also serve the ledger's gRPC service (`cashflow.ledger.v1.LedgerService`, health,
    /// reflection) on this address.
    #[arg(long, env = "CASHFLOW_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,

    /// Do not create the demo merchant and client on first start.
    #[arg(long, env = "CASHFLOW_NO_DEMO")]
    pub no_demo: bool,
}

/// Options of `ledger`.
#[derive(Debug, Clone, Args)]
pub struct LedgerArgs {
    /// Address to listen on.
    #[arg(long, env = "CASHFLOW_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub http: HttpArgs,

    #[command(flatten)]
    pub backends: BackendArgs,

    #[command(flatten)]
    pub auth: AuthArgs,

    /// Also serve the ledger's gRPC service (`cashflow.ledger.v1.LedgerService`, health,
    /// reflection) on this address.
    #[arg(long, env = "CASHFLOW_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,

    /// Do not run the outbox relay in this process (run `cashflow relay` instead).
    #[arg(long, env = "CASHFLOW_NO_RELAY")]
    pub no_relay: bool,
}

/// Options of `relay`.
#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// Address of the health and metrics endpoints.
    #[arg(long, env = "CASHFLOW_LISTEN", default_value = "127.0.0.1:8083")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub http: HttpArgs,

    #[command(flatten)]
    pub backends: BackendArgs,
}

/// Options of `consolidator`.
#[derive(Debug, Clone, Args)]
pub struct ConsolidatorArgs {
    /// Address to listen on.
    #[arg(long, env = "CASHFLOW_LISTEN", default_value = "127.0.0.1:8082")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub http: HttpArgs,

    /// Serve the reports API only, without consuming the queue: a replica that keeps reports
    /// available while the consuming consolidator is down or redeployed. With the in-process
    /// cache (`memory`) it reads the store on every request: no consumer could invalidate its
    /// cache. With Redis it shares the consumer's cache.
    #[arg(long, env = "CASHFLOW_NO_CONSUMER")]
    pub no_consumer: bool,

    #[command(flatten)]
    pub ledger_grpc: crate::grpc::LedgerGrpcArgs,

    #[command(flatten)]
    pub reconcile: crate::reconcile::ScheduleArgs,

    #[command(flatten)]
    pub backends: BackendArgs,

    #[command(flatten)]
    pub auth: AuthArgs,
}

/// `merchant …`
#[derive(Debug, Subcommand)]
pub enum MerchantCommand {
    /// List merchants.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: BackendArgs,
    },
    /// Register a merchant.
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// ISO 4217 currency of all its entries.
        #[arg(long, default_value = "BRL")]
        currency: String,
        /// IANA time zone that decides each entry's business date.
        #[arg(long, default_value = "America/Sao_Paulo")]
        timezone: String,
        /// Print `{"merchant_id": …}` instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: BackendArgs,
    },
}

/// `client …`
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// List API clients (never their secrets).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: BackendArgs,
    },
    /// Revoke a client: no new tokens, and its tokens stop working within 5 s everywhere.
    Revoke {
        client_id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: BackendArgs,
    },
    /// Give a client a new secret (printed once); the old one stops working at once.
    RotateSecret {
        client_id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: BackendArgs,
    },
    /// Create an API client for a merchant; prints its secret once.
    Create {
        /// The merchant the client acts for.
        #[arg(long)]
        merchant: String,
        /// Allowed scopes, comma- or space-separated.
        #[arg(long, default_value = "entries:write,entries:read,reports:read,days:close,days:reopen")]
        scopes: String,
        /// A label for operators.
        #[arg(long)]
        name: Option<String>,
        /// Print `{"client_id": …, "client_secret": …}` instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: BackendArgs,
    },
}

/// `user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List users.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: BackendArgs,
    },
    /// Disable a user: no new tokens, and their tokens stop working within 5 s everywhere.
    Disable {
        username: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: BackendArgs,
    },
    /// Enable a disabled user again.
    Enable {
        username: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: BackendArgs,
    },
    /// Set a user's password.
    SetPassword {
        username: String,
        /// The new password; prefer the environment variable, which stays out of the process list.
        #[arg(long, env = "CASHFLOW_USER_PASSWORD", hide_env_values = true, allow_hyphen_values = true)]
        password: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: BackendArgs,
    },
    /// Create a user who signs in with a password (password grant).
    Create {
        /// The merchant the user acts for.
        #[arg(long)]
        merchant: String,
        /// Login name.
        #[arg(long)]
        username: String,
        /// The password; prefer the environment variable, which stays out of the process list.
        #[arg(long, env = "CASHFLOW_USER_PASSWORD", hide_env_values = true, allow_hyphen_values = true)]
        password: String,
        /// Allowed scopes, comma- or space-separated.
        #[arg(long, default_value = "entries:write,entries:read,reports:read,days:close,days:reopen")]
        scopes: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: BackendArgs,
    },
}
