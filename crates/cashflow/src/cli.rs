//! The command line. Every option also reads an environment variable, so the same binary is
//! configured by flags on a laptop and by the environment in a container or on Lambda.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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

/// Where the embedded stores live.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory of the embedded databases (ledger, consolidation, queue, identity).
    #[arg(long, env = "CASHFLOW_DATA_DIR", default_value = "./cashflow-data")]
    pub data_dir: PathBuf,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve everything in one process: ledger, consolidation, relay, consumer, token issuer.
    Serve(ServeArgs),
    /// Create or upgrade the database schemas, then exit.
    Migrate(StoreArgs),
    /// Manage merchants.
    #[command(subcommand)]
    Merchant(MerchantCommand),
    /// Manage API clients (OAuth 2.0 client credentials).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage users (OAuth 2.0 password grant).
    #[command(subcommand)]
    User(UserCommand),
}

/// Options of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CASHFLOW_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub store: StoreArgs,

    /// Public base URL of this server: the `iss` of the tokens it issues. Default:
    /// `http://<listen>`.
    #[arg(long, env = "CASHFLOW_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// The `aud` tokens are issued for and must carry.
    #[arg(long, env = "CASHFLOW_AUDIENCE", default_value = "cashflow")]
    pub audience: String,

    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, env = "CASHFLOW_TOKEN_TTL_SECS", default_value_t = 3600)]
    pub token_ttl_secs: u64,

    /// Do not create the demo merchant and client on first start.
    #[arg(long, env = "CASHFLOW_NO_DEMO")]
    pub no_demo: bool,
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
        store: StoreArgs,
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
        store: StoreArgs,
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
        store: StoreArgs,
    },
}
