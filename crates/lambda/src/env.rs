//! Configuration of a function: the same environment variables as the processes
//! (`CASHFLOW_DATABASE_URL`, `CASHFLOW_QUEUE_URL`, `CASHFLOW_CACHE_URL`, …), read with the
//! processes' own argument definitions, plus `CASHFLOW_DATABASE_SECRET_ARN`: the RDS-managed
//! secret whose `username` and `password` complete the database URL. The secret is read once
//! per cold start, before any connection; nothing else is opened until a request needs it.

use clap::Parser;
use serde::Deserialize;

use cashflow::app::{AppConfig, Parts};
use cashflow::backends::BackendArgs;
use cashflow::cli::AuthArgs;
use cashflow::telemetry::{self, LogFormat};

/// The `iss` the built-in verifier expects when `CASHFLOW_PUBLIC_URL` is not set.
const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:8080";

/// The environment of a function.
#[derive(Debug, Parser)]
#[command(name = "cashflow-lambda")]
pub struct Env {
    #[command(flatten)]
    pub backends: BackendArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Secrets Manager secret (`{"username":…,"password":…}`) completing the database URL.
    #[arg(long, env = "CASHFLOW_DATABASE_SECRET_ARN")]
    pub database_secret_arn: Option<String>,
    #[arg(long, env = "CASHFLOW_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

/// A failure to configure a function.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("invalid configuration: {0}")]
    Invalid(#[from] clap::Error),
    #[error("reading the database secret: {0}")]
    Secret(String),
    #[error("the database secret is set but CASHFLOW_DATABASE_URL is not a postgres:// URL")]
    NoDatabaseUrl,
    #[error("invalid configuration: {0:#}")]
    Settings(anyhow::Error),
}

#[derive(Deserialize)]
struct DatabaseSecret {
    username: String,
    password: String,
}

impl Env {
    /// The environment of this process (the command line is ignored: Lambda passes none).
    pub fn from_process() -> Result<Self, EnvError> {
        Ok(Self::try_parse_from(["cashflow-lambda"])?)
    }
}

/// The parts of a function from the process environment, logging initialised. Nothing is
/// opened but the secret.
pub async fn parts() -> Result<Parts, EnvError> {
    let mut env = Env::from_process()?;
    telemetry::init(env.log_format);
    if let Some(arn) = &env.database_secret_arn {
        let secret = read_secret(arn).await?;
        let url = env.backends.database_url.as_deref().ok_or(EnvError::NoDatabaseUrl)?;
        env.backends.database_url = Some(with_credentials(url, &secret.username, &secret.password)?);
    }
    Ok(Parts::new(config(&env).map_err(EnvError::Settings)?))
}

/// The application settings of `env`.
pub fn config(env: &Env) -> anyhow::Result<AppConfig> {
    AppConfig::from_args(&env.auth, &env.backends, DEFAULT_PUBLIC_URL.to_owned())
}

async fn read_secret(arn: &str) -> Result<DatabaseSecret, EnvError> {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let answer = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| EnvError::Secret(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string()))?;
    let text = answer.secret_string().ok_or_else(|| EnvError::Secret("the secret has no string value".into()))?;
    serde_json::from_str(text).map_err(|e| EnvError::Secret(format!("not a username/password secret: {e}")))
}

/// `url` with its user and password replaced by `username` and `password` (percent-encoded).
pub fn with_credentials(url: &str, username: &str, password: &str) -> Result<String, EnvError> {
    let rest =
        url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://")).ok_or(EnvError::NoDatabaseUrl)?;
    let host = match rest.split_once('/') {
        Some((authority, _)) => match authority.rsplit_once('@') {
            Some((_, host)) => &rest[authority.len() - host.len()..],
            None => rest,
        },
        None => rest.rsplit_once('@').map_or(rest, |(_, host)| host),
    };
    Ok(format!("postgres://{}:{}@{host}", encode(username), encode(password)))
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
