//! What each subcommand does: the operator commands here, the serving processes in
//! [`crate::processes`].

use std::time::Duration;

use anyhow::bail;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use cashflow_auth::Scopes;
use cashflow_domain::{Currency, MerchantId, MerchantName, MerchantTimeZone};
use cashflow_ledger::Ledger;

use crate::backends::BackendArgs;
use crate::cli::{ClientCommand, Command, DayCommand, IssuerCommand, MerchantCommand, UserCommand};
use crate::{operator, processes};

/// Runs one command to completion.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => processes::serve(args).await,
        Command::Ledger(args) => processes::ledger(args).await,
        Command::Relay(args) => processes::relay(args).await,
        Command::Consolidator(args) => processes::consolidator(args).await,
        Command::Reconcile(args) => crate::reconcile::run(args).await,
        Command::Identity(command) => operator::identity(command).await,
        Command::Migrate(backends) => {
            backends.ledger().await?;
            backends.consolidation().await?;
            backends.identity().await?;
            backends.queue().await?;
            println!("schemas are up to date");
            Ok(())
        }
        Command::Merchant(MerchantCommand::List { json, store }) => operator::merchant_list(&store, json).await,
        Command::Client(ClientCommand::List { json, store }) => operator::client_list(&store, json).await,
        Command::Client(ClientCommand::Revoke { client_id, json, store }) => {
            operator::client_revoke(&store, &client_id, json).await
        }
        Command::Client(ClientCommand::RotateSecret { client_id, json, store }) => {
            operator::client_rotate_secret(&store, &client_id, json).await
        }
        Command::User(UserCommand::List { json, store }) => operator::user_list(&store, json).await,
        Command::User(UserCommand::Disable { username, json, store }) => {
            operator::user_set_disabled(&store, &username, true, json).await
        }
        Command::User(UserCommand::Enable { username, json, store }) => {
            operator::user_set_disabled(&store, &username, false, json).await
        }
        Command::User(UserCommand::SetPassword { username, password, json, store }) => {
            operator::user_set_password(&store, &username, password, json).await
        }
        Command::Issuer(IssuerCommand::RotateKey { token_ttl_secs, json, store }) => {
            operator::issuer_rotate_key(&store, Duration::from_secs(token_ttl_secs), json).await
        }
        Command::Day(DayCommand::Close { merchant, date, counted_cash, note, by, json, store }) => {
            let merchant = existing_merchant(&store, &merchant).await?;
            let close = operator::DayClose { date: &date, counted_cash: counted_cash.as_deref(), note, by };
            operator::day_close(&ledger(&store).await?, merchant, close, json).await
        }
        Command::Day(DayCommand::Reopen { merchant, date, reason, by, json, store }) => {
            let merchant = existing_merchant(&store, &merchant).await?;
            operator::day_reopen(&ledger(&store).await?, merchant, &date, reason, by, json).await
        }
        Command::Day(DayCommand::List { merchant, from, to, json, store }) => {
            let merchant = existing_merchant(&store, &merchant).await?;
            operator::day_list(&ledger(&store).await?, merchant, &from, &to, json).await
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
