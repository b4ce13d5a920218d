//! `admin`: migrations and operator commands for a VPC with no shell, one JSON object per
//! invocation, answering what the CLI's `--json` prints (the contract is in
//! `docs/deploy-aws.md`). A bad payload fails the invocation with `errorType`
//! `invalid_payload` (so does an identity already linked), a backend failure with `database`. Secrets appear only in the answer.
//! `merchant-create` publishes the merchant's registration before answering, as `ledger-api`
//! publishes its entries' events.

use serde::Deserialize;
use serde_json::{json, Value};

use cashflow::app::Parts;
use cashflow::operator;
use cashflow_auth::{LinkKind, Scopes, StoreError};
use cashflow_domain::{Currency, MerchantId, MerchantName, MerchantTimeZone};
use cashflow_ledger::Committed;
use secrecy::ExposeSecret;

/// One operator command.
#[derive(Debug, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Command {
    /// Creates or migrates every schema.
    Migrate {},
    MerchantCreate {
        name: String,
        #[serde(default = "default_currency")]
        currency: String,
        #[serde(default = "default_timezone")]
        timezone: String,
    },
    /// A client of the built-in issuer.
    ClientCreate { merchant: String, scopes: Vec<String> },
    /// Links a Cognito subject or machine app client to a merchant (`cashflow identity link`);
    /// without `scopes`, its tokens grant what they carry.
    IdentityLink { merchant: String, subject: Option<String>, client_id: Option<String>, scopes: Option<Vec<String>> },
    /// Removes a link (`cashflow identity unlink`).
    IdentityUnlink { subject: Option<String>, client_id: Option<String> },
    /// Every link (`cashflow identity list`).
    IdentityList {},
}

fn default_currency() -> String {
    "BRL".into()
}

fn default_timezone() -> String {
    "America/Sao_Paulo".into()
}

/// Why a command failed; its variant is the invocation's `errorType`.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    InvalidPayload(String),
    #[error("{0:#}")]
    Database(anyhow::Error),
}

impl AdminError {
    /// The `errorType` of the failed invocation.
    pub fn error_type(&self) -> &'static str {
        match self {
            AdminError::InvalidPayload(_) => "invalid_payload",
            AdminError::Database(_) => "database",
        }
    }
}

impl From<AdminError> for lambda_runtime::Diagnostic {
    fn from(error: AdminError) -> Self {
        lambda_runtime::Diagnostic { error_type: error.error_type().into(), error_message: error.to_string() }
    }
}

fn invalid(e: impl std::fmt::Display) -> AdminError {
    AdminError::InvalidPayload(e.to_string())
}

/// Runs the command `payload` holds.
pub async fn handle(parts: &Parts, payload: Value) -> Result<Value, AdminError> {
    let command: Command = serde_json::from_value(payload).map_err(invalid)?;
    match command {
        Command::Migrate {} => {
            parts.ledger_store().await.map_err(AdminError::Database)?;
            parts.consolidation_store().await.map_err(AdminError::Database)?;
            parts.identity().await.map_err(AdminError::Database)?;
            Ok(json!({ "migrated": ["ledger", "consolidation", "identity"] }))
        }
        Command::MerchantCreate { name, currency, timezone } => {
            let name = MerchantName::parse(&name).map_err(invalid)?;
            let currency = Currency::parse(&currency).map_err(invalid)?;
            let time_zone = MerchantTimeZone::parse(&timezone).map_err(invalid)?;
            let ledger = parts.ledger().await.map_err(AdminError::Database)?;
            let (created, committed) = Committed::collect(ledger.create_merchant(name, currency, time_zone)).await;
            let merchant = created.map_err(|e| AdminError::Database(e.into()))?;
            // Consolidation learns the merchant (currency, time zone) now rather than at the next
            // sweep; a queue that cannot be reached leaves the event to the sweep.
            match parts.relay().await {
                Ok(relay) => crate::http::publish(&relay, &committed, crate::http::PUBLISH_TIMEOUT).await,
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "queue unavailable; the sweep publishes the merchant")
                }
            }
            Ok(json!({ "merchant_id": merchant.id.to_string() }))
        }
        Command::ClientCreate { merchant, scopes } => {
            let scopes = Scopes::parse_list(&scopes.join(" ")).map_err(invalid)?;
            let merchant = existing_merchant(parts, &merchant).await?;
            let identity = parts.identity().await.map_err(AdminError::Database)?;
            let client =
                identity.create_client(merchant, scopes, None).await.map_err(|e| AdminError::Database(e.into()))?;
            Ok(json!({
                "client_id": client.client_id,
                "client_secret": client.client_secret.expose_secret(),
                "scopes": scopes.to_string(),
            }))
        }
        Command::IdentityLink { merchant, subject, client_id, scopes } => {
            let (kind, id) = who(subject, client_id)?;
            let scopes = scopes.map(|s| Scopes::parse_list(&s.join(" "))).transpose().map_err(invalid)?;
            let merchant = existing_merchant(parts, &merchant).await?;
            let identity = parts.identity().await.map_err(AdminError::Database)?;
            let link = identity.link(kind, &id, merchant, scopes).await.map_err(store_error)?;
            Ok(operator::link_json(&link))
        }
        Command::IdentityUnlink { subject, client_id } => {
            let (kind, id) = who(subject, client_id)?;
            let identity = parts.identity().await.map_err(AdminError::Database)?;
            if !identity.unlink(kind, &id).await.map_err(store_error)? {
                return Err(invalid(format!("no link for {kind} {id}")));
            }
            Ok(json!({ "kind": kind.as_str(), "external_id": id, "unlinked": true }))
        }
        Command::IdentityList {} => {
            let identity = parts.identity().await.map_err(AdminError::Database)?;
            let links = identity.links().await.map_err(store_error)?;
            Ok(Value::Array(links.iter().map(operator::link_json).collect()))
        }
    }
}

/// Exactly one of `subject` and `client_id`.
fn who(subject: Option<String>, client_id: Option<String>) -> Result<(LinkKind, String), AdminError> {
    match (subject, client_id) {
        (Some(subject), None) => Ok((LinkKind::Subject, subject)),
        (None, Some(client)) => Ok((LinkKind::Client, client)),
        _ => Err(invalid("give exactly one of `subject` and `client_id`")),
    }
}

/// An operator's mistake (a bad id, an identity already linked) is the payload's fault.
fn store_error(error: StoreError) -> AdminError {
    match error {
        StoreError::Invalid(_) | StoreError::Conflict(_) => invalid(error),
        other => AdminError::Database(other.into()),
    }
}

async fn existing_merchant(parts: &Parts, id: &str) -> Result<MerchantId, AdminError> {
    let id = MerchantId::parse(id).map_err(invalid)?;
    let store = parts.ledger_store().await.map_err(AdminError::Database)?;
    match store.merchant(id).await {
        Ok(Some(_)) => Ok(id),
        Ok(None) => Err(invalid(format!("merchant {id} does not exist"))),
        Err(e) => Err(AdminError::Database(e.into())),
    }
}
