//! `outbox-sweep`: on an EventBridge schedule, publishes what the ledger's outbox still holds,
//! the events whose inline publish by `ledger-api` failed or timed out. It is the relay's
//! own code ([`cashflow_ledger::Relay::drain`]), run to completion once per invocation.
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
    let published = relay.drain().await?;
    tracing::info!(published, scheduled = ?event.time, "outbox swept");
    Ok(Swept { published })
}
