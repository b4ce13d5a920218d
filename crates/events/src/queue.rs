//! The queue port. The embedded queue and SQS implement it; the relay publishes through
//! [`EventPublisher`] and the consolidator consumes through [`EventSource`].

use std::time::Duration;

use async_trait::async_trait;
use cashflow_domain::EventId;

/// A queue failure. Callers retry with backoff: nothing is lost while the queue is down,
/// because unpublished events stay in the ledger's outbox and unacknowledged deliveries
/// reappear after their visibility timeout.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(String),
}

/// An event on its way to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// Deduplication id.
    pub event_id: EventId,
    /// The JSON event.
    pub body: String,
}

/// One received message, leased to this consumer until its visibility timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Opaque handle to acknowledge this delivery (and only this one).
    pub receipt: String,
    pub body: String,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
}

/// Publishes events.
#[async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    /// Publishes every message or fails as a whole; publishing twice is allowed (consumers
    /// deduplicate).
    async fn publish(&self, messages: &[OutboundMessage]) -> Result<(), QueueError>;
}

/// Receives events.
#[async_trait]
pub trait EventSource: Send + Sync + 'static {
    /// Up to `max` messages, waiting up to `wait` for the first one (long poll).
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError>;

    /// Deletes delivered messages after they were applied.
    async fn ack(&self, receipts: &[String]) -> Result<(), QueueError>;

    /// Hands delivered messages back at once (their lease ends now) instead of leaving them
    /// invisible until their visibility timeout: for a batch that failed for a reason of the
    /// consumer's own, such as its database being down, not because of the messages.
    ///
    /// A release keeps the receive count: a message released again and again still reaches
    /// the dead-letter queue after its maximum receives, so a release never keeps a poison
    /// message alive. (A consumer that does not receive while its store is down spends one
    /// receive per outage, not one per retry.) A receipt whose lease already ended releases
    /// nothing. The default releases nothing, and the messages reappear after their timeout.
    async fn release(&self, receipts: &[String]) -> Result<(), QueueError> {
        let _ = receipts;
        Ok(())
    }

    /// Messages waiting (visible or leased), for metrics and the benchmark; `None` when the
    /// backend cannot tell cheaply.
    async fn depth(&self) -> Result<Option<u64>, QueueError>;

    /// Messages in the dead-letter queue, for an alert; `None` when the backend cannot tell
    /// cheaply (or has no dead-letter queue configured).
    async fn dead_letter_depth(&self) -> Result<Option<u64>, QueueError> {
        Ok(None)
    }
}
