//! `outbox-sweep`: on an EventBridge schedule, publishes what the ledger's outbox still holds,
//! the events whose inline publish by `ledger-api` failed or timed out. It is the relay's
//! own code ([`cashflow_ledger::Relay::drain`]), run to completion once per invocation. Its
//! metrics line ([`crate::emf`]) says how many it published and how old the oldest was.
//!
//! It publishes every row, including any a `ledger-api` invocation is publishing at that
//! moment: a double publish is harmless (the queue and the consolidation deduplicate by event
//! id), and the outbox has no age column to skip fresh rows by.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde::Serialize;

use cashflow::app::Parts;

/// What a sweep did.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Swept {
    pub published: usize,
}

/// Publishes the outbox. Fails the invocation when the ledger or the queue is unavailable
/// (the rows stay; the next scheduled sweep retries).
pub async fn handle(parts: &Parts, event: EventBridgeEvent) -> anyhow::Result<Swept> {
    let relay = parts.relay().await?;
    // What the sweep found: the age of the oldest event the inline publishes left (0 when
    // none), the `OutboxOldestAgeSeconds` the template's alarm watches.
    let backlog = parts.ledger_store().await?.outbox_backlog().await?;
    let age = backlog.oldest.map_or(0.0, |t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0);
    metrics::gauge!("cashflow_outbox_oldest_age_seconds").set(age);
    let published = relay.drain().await?;
    tracing::info!(published, scheduled = ?event.time, "outbox swept");
    Ok(Swept { published })
}
