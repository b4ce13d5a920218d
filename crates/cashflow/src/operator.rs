//! Operator commands on credentials and merchants: list, revoke, disable, rotate, and link
//! external identities (`identity …`, [`IdentityCommand`]). They write
//! to the same stores the services read, so they work while the services run: every service
//! process reloads revocations and signing keys every [`REFRESH_INTERVAL`]
//! ([`cashflow_auth::revocation`]), which bounds how long a revoked credential's tokens keep
//! working, and how long a new or removed identity link takes to apply.

use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use cashflow_auth::verifier::DEFAULT_LEEWAY_SECS;
use cashflow_auth::{IdentityLink, LinkKind, Scopes, REFRESH_INTERVAL};
use cashflow_domain::MerchantId;

use crate::backends::BackendArgs;

/// Prints `value` as JSON, or `text` for people.
fn print(json: bool, value: Value, text: impl FnOnce() -> String) {
    if json {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}

fn millis_rfc3339(ms: Option<i64>) -> Option<String> {
    ms.and_then(chrono::DateTime::from_timestamp_millis).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// `merchant list`
pub async fn merchant_list(store: &BackendArgs, json: bool) -> anyhow::Result<()> {
    let merchants = store.ledger().await?.merchants().await?;
    let rows: Vec<Value> = merchants
        .iter()
        .map(|m| {
            json!({
                "merchant_id": m.id.to_string(),
                "name": m.name.as_str(),
                "currency": m.currency.to_string(),
                "time_zone": m.time_zone.to_string(),
                "created_at": m.created_at.to_rfc3339(),
            })
        })
        .collect();
    print(json, Value::Array(rows), || {
        merchants
            .iter()
            .map(|m| format!("{}  {}  {}  {}", m.id, m.currency, m.time_zone, m.name.as_str()))
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

/// `client list`
pub async fn client_list(store: &BackendArgs, json: bool) -> anyhow::Result<()> {
    let clients = store.identity().await?.clients().await?;
    let rows: Vec<Value> = clients
        .iter()
        .map(|c| {
            json!({
                "client_id": c.client_id,
                "merchant_id": c.merchant_id.to_string(),
                "scopes": c.scopes.to_string(),
                "name": c.name,
                "revoked_at": millis_rfc3339(c.revoked_at_ms),
            })
        })
        .collect();
    print(json, Value::Array(rows), || {
        clients
            .iter()
            .map(|c| {
                let state = if c.revoked_at_ms.is_some() { "revoked" } else { "active" };
                format!(
                    "{}  {}  {state}  {}  {}",
                    c.client_id,
                    c.merchant_id,
                    c.scopes,
                    c.name.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

/// `client revoke ID`
pub async fn client_revoke(store: &BackendArgs, client_id: &str, json: bool) -> anyhow::Result<()> {
    if !store.identity().await?.revoke_client(client_id).await? {
        bail!("no client {client_id}");
    }
    print(json, json!({ "client_id": client_id, "revoked": true }), || {
        format!("client {client_id} revoked; its tokens stop working within {} s", REFRESH_INTERVAL.as_secs())
    });
    Ok(())
}

/// `client rotate-secret ID`
pub async fn client_rotate_secret(store: &BackendArgs, client_id: &str, json: bool) -> anyhow::Result<()> {
    let Some(client) = store.identity().await?.rotate_client_secret(client_id).await? else {
        bail!("no active client {client_id}");
    };
    let secret = client.client_secret.expose_secret();
    print(json, json!({ "client_id": client.client_id, "client_secret": secret }), || {
        format!("client_id:     {}\nclient_secret: {secret}  (shown only now)", client.client_id)
    });
    Ok(())
}

/// `user list`
pub async fn user_list(store: &BackendArgs, json: bool) -> anyhow::Result<()> {
    let users = store.identity().await?.users().await?;
    let rows: Vec<Value> = users
        .iter()
        .map(|u| {
            json!({
                "username": u.username,
                "merchant_id": u.merchant_id.to_string(),
                "scopes": u.scopes.to_string(),
                "disabled_at": millis_rfc3339(u.disabled_at_ms),
            })
        })
        .collect();
    print(json, Value::Array(rows), || {
        users
            .iter()
            .map(|u| {
                let state = if u.disabled_at_ms.is_some() { "disabled" } else { "active" };
                format!("{}  {}  {state}  {}", u.username, u.merchant_id, u.scopes)
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

/// `user disable NAME` and `user enable NAME`
pub async fn user_set_disabled(store: &BackendArgs, username: &str, disabled: bool, json: bool) -> anyhow::Result<()> {
    if !store.identity().await?.set_user_disabled(username, disabled).await? {
        bail!("no user {username}");
    }
    let state = if disabled { "disabled" } else { "enabled" };
    print(json, json!({ "username": username, "disabled": disabled }), || format!("user {username} {state}"));
    Ok(())
}

/// `user set-password NAME`
pub async fn user_set_password(
    store: &BackendArgs,
    username: &str,
    password: String,
    json: bool,
) -> anyhow::Result<()> {
    if !store.identity().await?.set_password(username, &SecretString::from(password)).await? {
        bail!("no user {username}");
    }
    print(json, json!({ "username": username, "password_set": true }), || format!("password of {username} set"));
    Ok(())
}

/// `issuer rotate-key`: the new key signs two reload intervals from now (every process has it
/// by then); the old one stays published until its last token (signed up to then, living
/// `token_ttl`, plus the verifiers' leeway) has expired.
pub async fn issuer_rotate_key(store: &BackendArgs, token_ttl: Duration, json: bool) -> anyhow::Result<()> {
    let identities = store.identity().await?;
    identities.signing_key().await?;
    let leeway = Duration::from_secs(DEFAULT_LEEWAY_SECS);
    let key = identities.rotate_signing_key(REFRESH_INTERVAL * 2, token_ttl, leeway).await?;
    let activates_at = millis_rfc3339(Some(key.activates_at_ms));
    let old_retires_ms = key.activates_at_ms.saturating_add(i64::try_from((token_ttl + leeway).as_millis())?);
    let old_retires_at = millis_rfc3339(Some(old_retires_ms));
    print(
        json,
        json!({ "kid": key.key.kid(), "signs_from": activates_at, "old_key_retires_at": old_retires_at }),
        || {
            format!(
                "new signing key {} signs from {}; the old key leaves the JWKS at {}",
                key.key.kid(),
                activates_at.as_deref().unwrap_or("?"),
                old_retires_at.as_deref().unwrap_or("?")
            )
        },
    );
    Ok(())
}

/// `identity …`: which merchant an external issuer's (Cognito's) subject or machine client acts
/// for when its tokens carry no merchant claim ([`cashflow_auth::links`]).
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Link a subject (a person's `sub`) or a machine client (`client_id`) to a merchant; every
    /// process applies it within 5 s.
    Link {
        /// The merchant its tokens act for.
        #[arg(long)]
        merchant: String,
        #[command(flatten)]
        who: Who,
        /// The most its tokens may grant, comma- or space-separated (default: what the token
        /// grants through its groups and scopes).
        #[arg(long)]
        scopes: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: BackendArgs,
    },
    /// Remove a link; its tokens are refused (no merchant) within 5 s everywhere.
    Unlink {
        #[command(flatten)]
        who: Who,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: BackendArgs,
    },
    /// List the links.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: BackendArgs,
    },
}

/// The identity a link is for: exactly one of `--subject` and `--client-id`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Who {
    /// The token's `sub` (a person; Cognito: the user's `sub` attribute).
    #[arg(long)]
    subject: Option<String>,
    /// A machine-to-machine token's `client_id` (Cognito: the app client id).
    #[arg(long)]
    client_id: Option<String>,
}

impl Who {
    fn kind_and_id(&self) -> anyhow::Result<(LinkKind, &str)> {
        match (&self.subject, &self.client_id) {
            (Some(subject), None) => Ok((LinkKind::Subject, subject)),
            (None, Some(client)) => Ok((LinkKind::Client, client)),
            _ => bail!("give exactly one of --subject and --client-id"),
        }
    }
}

/// A link as `identity … --json` prints it (and the `admin` Lambda function answers).
pub fn link_json(link: &IdentityLink) -> Value {
    json!({
        "kind": link.kind.as_str(),
        "external_id": link.external_id,
        "merchant_id": link.merchant_id.to_string(),
        "scopes": link.scopes.map(|s| s.to_string()),
        "created_at": millis_rfc3339(Some(link.created_at_ms)),
    })
}

fn cap(scopes: Option<Scopes>) -> String {
    scopes.map_or_else(|| "what the token grants".to_owned(), |s| s.to_string())
}

/// Runs an `identity` command.
pub async fn identity(command: IdentityCommand) -> anyhow::Result<()> {
    match command {
        IdentityCommand::Link { merchant, who, scopes, json, store } => {
            let (kind, id) = who.kind_and_id()?;
            let scopes = scopes.map(|s| Scopes::parse_list(&s)).transpose().map_err(|e| anyhow::anyhow!("{e}"))?;
            let merchant = MerchantId::parse(&merchant)?;
            if store.ledger().await?.merchant(merchant).await?.is_none() {
                bail!("merchant {merchant} does not exist (create it with `cashflow merchant create`)");
            }
            let link = store.identity().await?.link(kind, id, merchant, scopes).await?;
            print(json, link_json(&link), || {
                format!(
                    "{kind} {id} linked to merchant {merchant} (scopes: {}); every process applies it within {} s",
                    cap(scopes),
                    REFRESH_INTERVAL.as_secs()
                )
            });
        }
        IdentityCommand::Unlink { who, json, store } => {
            let (kind, id) = who.kind_and_id()?;
            if !store.identity().await?.unlink(kind, id).await? {
                bail!("no link for {kind} {id}");
            }
            print(json, json!({ "kind": kind.as_str(), "external_id": id, "unlinked": true }), || {
                format!("{kind} {id} unlinked; its tokens are refused within {} s", REFRESH_INTERVAL.as_secs())
            });
        }
        IdentityCommand::List { json, store } => {
            let links = store.identity().await?.links().await?;
            print(json, Value::Array(links.iter().map(link_json).collect()), || {
                links
                    .iter()
                    .map(|l| format!("{}  {}  {}  {}", l.kind, l.external_id, l.merchant_id, cap(l.scopes)))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(())
}
