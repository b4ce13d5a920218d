//! The command line. Every option also reads an environment variable, so the same binary is
//! configured by flags on a laptop and by the environment in a container or on Lambda.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;

use crate::backends::BackendArgs;
use crate::telemetry::LogFormat;

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
    /// processes default to the local front, `http://127.0.0.1:8080`.
    #[arg(long, env = "CASHFLOW_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// The `aud` tokens are issued for and must carry.
    #[arg(long, env = "CASHFLOW_AUDIENCE", default_value = "cashflow")]
    pub audience: String,

    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, env = "CASHFLOW_TOKEN_TTL_SECS", default_value_t = 3600)]
    pub token_ttl_secs: u64,
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
}

/// Options of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CASHFLOW_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

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
    pub backends: BackendArgs,
}

/// Options of `consolidator`.
#[derive(Debug, Clone, Args)]
pub struct ConsolidatorArgs {
    /// Address to listen on.
    #[arg(long, env = "CASHFLOW_LISTEN", default_value = "127.0.0.1:8082")]
    pub listen: SocketAddr,

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
    /// Create an API client for a merchant; prints its secret once.
    Create {
        /// The merchant the client acts for.
        #[arg(long)]
        merchant: String,
        /// Allowed scopes, comma- or space-separated.
        #[arg(long, default_value = "entries:write,entries:read,reports:read")]
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
    /// Create a user who signs in with a password (password grant).
    Create {
        /// The merchant the user acts for.
        #[arg(long)]
        merchant: String,
        /// Login name.
        #[arg(long)]
        username: String,
        /// The password; prefer the environment variable, which stays out of the process list.
        #[arg(long, env = "CASHFLOW_USER_PASSWORD", hide_env_values = true)]
        password: String,
        /// Allowed scopes, comma- or space-separated.
        #[arg(long, default_value = "entries:write,entries:read,reports:read")]
        scopes: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: BackendArgs,
    },
}
