//! Operator commands on credentials, merchants, external identities and closed days: list,
//! revoke, disable, rotate, link (`identity …`, [`IdentityCommand`]), close, reopen. They write
//! to the same stores the services read, so they work while the services run: every service
//! process reloads revocations, identity links and signing keys every [`REFRESH_INTERVAL`]
//! ([`cashflow_auth::revocation`]), which bounds how long a revoked credential's tokens keep
//! working and how long a new or removed link takes to apply; a close or reopen is serialized
//! with the services' writes by the ledger store itself, and its event waits in the outbox for
//! the relay.

use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use cashflow_auth::verifier::DEFAULT_LEEWAY_SECS;
use cashflow_auth::{IdentityLink, LinkKind, Scopes, REFRESH_INTERVAL};
use cashflow_domain::{Amount, BusinessDate, MerchantId};
use cashflow_ledger::store::{DayAudit, DayClose as CloseRecord};
use cashflow_ledger::Ledger;

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

/// What `day close` was asked for, as typed.
pub struct DayClose<'a> {
    pub date: &'a str,
    pub counted_cash: Option<&'a str>,
    pub note: Option<String>,
    pub by: String,
}

/// The longest note or reason, as the API allows.
const TEXT_MAX_CHARS: usize = 500;

fn business_date(what: &str, text: &str) -> anyhow::Result<BusinessDate> {
    BusinessDate::parse(text).map_err(|e| anyhow::anyhow!("--{what}: {e}"))
}

fn bounded(what: &str, text: &str) -> anyhow::Result<()> {
    if text.trim().is_empty() || text.chars().count() > TEXT_MAX_CHARS || text.chars().any(char::is_control) {
        bail!("--{what} must be 1 to {TEXT_MAX_CHARS} characters without control characters");
    }
    Ok(())
}

fn close_json(close: &CloseRecord, currency: cashflow_domain::Currency) -> Value {
    json!({
        "date": close.date.to_string(),
        "closed_at": close.closed_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "closed_by": close.closed_by,
        "currency": currency.code(),
        "credits": currency.format_minor(close.credits_minor),
        "debits": currency.format_minor(close.debits_minor),
        "entry_count": close.entry_count,
        "expected_balance": currency.format_minor(close.expected_balance_minor),
        "counted_cash": close.counted_cash_minor.map(|m| currency.format_minor(m)),
        "difference": close.difference_minor().map(|m| currency.format_minor(m)),
        "note": close.note,
    })
}

fn audit_json(audit: &DayAudit) -> Value {
    json!({
        "action": audit.action.as_str(),
        "date": audit.date.to_string(),
        "at": audit.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "by": audit.by,
        "reason": audit.reason,
        "closed_through_before": audit.closed_through_before.map(|d| d.to_string()),
        "closed_through_after": audit.closed_through_after.map(|d| d.to_string()),
    })
}

/// `day close`
pub async fn day_close(ledger: &Ledger, merchant: MerchantId, close: DayClose<'_>, json: bool) -> anyhow::Result<()> {
    let date = business_date("date", close.date)?;
    if let Some(note) = &close.note {
        bounded("note", note)?;
    }
    bounded("by", &close.by)?;
    let currency = ledger.merchant(merchant).await?.currency;
    let counted = close
        .counted_cash
        .map(|text| Amount::parse_count(text, currency).map_err(|e| anyhow::anyhow!("--counted-cash: {e}")))
        .transpose()?;
    let record = ledger.close_day(merchant, date, counted, close.note, close.by).await?;
    print(json, close_json(&record, currency), || {
        let difference = record.difference_minor().map(|m| format!(", difference {}", currency.format_minor(m)));
        format!(
            "closed through {}: {} entries that day, expected balance {} {}{}",
            record.date,
            record.entry_count,
            currency.format_minor(record.expected_balance_minor),
            currency,
            difference.unwrap_or_default()
        )
    });
    Ok(())
}

/// `day reopen`
pub async fn day_reopen(
    ledger: &Ledger,
    merchant: MerchantId,
    date: &str,
    reason: String,
    by: String,
    json: bool,
) -> anyhow::Result<()> {
    let date = business_date("date", date)?;
    bounded("reason", &reason)?;
    bounded("by", &by)?;
    let audit = ledger.reopen_day(merchant, date, reason, by).await?;
    print(json, audit_json(&audit), || match audit.closed_through_after {
        Some(through) => format!("reopened from {}; the books are closed through {through}", audit.date),
        None => format!("reopened from {}; no day is closed", audit.date),
    });
    Ok(())
}

/// `day list`
pub async fn day_list(ledger: &Ledger, merchant: MerchantId, from: &str, to: &str, json: bool) -> anyhow::Result<()> {
    let (from, to) = (business_date("from", from)?, business_date("to", to)?);
    if from > to {
        bail!("--from must not be after --to");
    }
    let currency = ledger.merchant(merchant).await?.currency;
    let closed_through = ledger.closed_through(merchant).await?;
    let closes = ledger.day_closes(merchant, from, to).await?;
    let audit = ledger.day_audit(merchant, from, to).await?;
    let value = json!({
        "closed_through": closed_through.map(|d| d.to_string()),
        "closes": closes.iter().map(|c| close_json(c, currency)).collect::<Vec<_>>(),
        "audit": audit.iter().map(audit_json).collect::<Vec<_>>(),
    });
    print(json, value, || {
        let mut lines =
            vec![format!("closed through: {}", closed_through.map_or_else(|| "-".to_owned(), |d| d.to_string()))];
        lines.extend(audit.iter().map(|a| {
            format!(
                "{}  {:<6}  {}  by {}  {}",
                a.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                a.action.as_str(),
                a.date,
                a.by,
                a.reason.as_deref().unwrap_or("")
            )
        }));
        lines.join("\n")
    });
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
