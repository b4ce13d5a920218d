//! `consumer`: applies an SQS batch with the local consumer's own code
//! ([`cashflow_consolidation::Consumer::poll_once`]) and answers with a partial batch response.
//!
//! Lambda has already received the batch, so the consumer reads it from a [`LambdaBatch`]: an
//! event source whose one receive is the batch and whose acknowledgements are recorded
//! instead of deleted. Every message the consumer did not acknowledge (poison, rejected, or
//! the whole batch when the store failed: a release is the default no-op, the report is what
//! hands them back) is reported in `batchItemFailures`; Lambda deletes
//! the others and SQS redelivers those, dead-lettering them after the queue's maximum
//! receives. An invocation never fails as a whole because of one message.
//!
//! Each event gets the local consumer's `consolidation.apply` span, a child of the request
//! that recorded it: its `traceparent` travels in the event, and, for a producer that only
//! sets the message's `traceparent` attribute or SQS's `AWSTraceHeader`, is taken from those
//! ([`LambdaBatch::new`]). The binary flushes the spans before it answers.
//!
//! The processes prune deduplication markers past their window with a background task, which
//! a frozen function cannot keep: after its batch, an invocation deletes one batch of expired
//! markers when a pass is due in its execution environment ([`PRUNING`]: once a minute, or at
//! every invocation while a backlog lasts). Markers are written only by applying events, so
//! pruning as events are applied keeps the table flat; a failed pass is logged and left to a
//! later invocation, never failing this one.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};

use cashflow::app::Parts;
use cashflow_consolidation::dedup::PruneSchedule;
use cashflow_consolidation::{Consumer, ConsumerConfig};
use cashflow_events::{Delivery, Event, EventSource, QueueError};

/// The message attribute the queue adapter writes the producing request's `traceparent` in.
const TRACEPARENT_ATTRIBUTE: &str = "traceparent";

/// When this execution environment next prunes deduplication markers.
static PRUNING: PruneSchedule = PruneSchedule::new(Duration::from_secs(60));

/// One Lambda batch as an [`EventSource`]: delivered once, acknowledgements recorded.
#[derive(Default)]
pub struct LambdaBatch {
    deliveries: Mutex<Vec<Delivery>>,
    acked: Mutex<HashSet<String>>,
}

impl LambdaBatch {
    /// The batch of `event`, each delivery's receipt its message id. Messages without an id
    /// cannot be reported, so they are left out (SQS never sends one).
    pub fn new(event: &SqsEvent) -> Self {
        let deliveries = event
            .records
            .iter()
            .filter_map(|message| {
                let receipt = message.message_id.clone()?;
                let receive_count =
                    message.attributes.get("ApproximateReceiveCount").and_then(|n| n.parse().ok()).unwrap_or(1);
                let body = with_trace(message.body.clone().unwrap_or_default(), message);
                Some(Delivery { receipt, body, receive_count })
            })
            .collect();
        Self { deliveries: Mutex::new(deliveries), acked: Mutex::default() }
    }

    fn acked(&self) -> HashSet<String> {
        self.acked.lock().map(|acked| acked.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl EventSource for LambdaBatch {
    async fn receive(&self, _max: usize, _wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let mut deliveries = self.deliveries.lock().map_err(|_| QueueError::Unavailable("batch poisoned".into()))?;
        Ok(std::mem::take(&mut *deliveries))
    }

    async fn ack(&self, receipts: &[String]) -> Result<(), QueueError> {
        let mut acked = self.acked.lock().map_err(|_| QueueError::Unavailable("batch poisoned".into()))?;
        acked.extend(receipts.iter().cloned());
        Ok(())
    }

    async fn depth(&self) -> Result<Option<u64>, QueueError> {
        Ok(None)
    }
}

/// The message's trace context: the event's own (`trace`, which the ledger writes), else the
/// message's `traceparent` attribute, else its `AWSTraceHeader` system attribute (an event
/// from a producer that sets only those, or one whose body lost it), written into the body
/// so that the consumer's span of the event continues that trace. A body that is not a JSON
/// object is left as it is (the consumer reports it as poison).
fn with_trace(body: String, message: &SqsMessage) -> String {
    if Event::trace_of(&body).is_some() {
        return body;
    }
    let attribute = message
        .message_attributes
        .get(TRACEPARENT_ATTRIBUTE)
        .and_then(|a| a.string_value.clone())
        .filter(|t| cashflow_http::context::is_valid(t));
    let Some(traceparent) = attribute.or_else(|| {
        message.attributes.get("AWSTraceHeader").and_then(|header| cashflow_http::context::from_xray(header))
    }) else {
        return body;
    };
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(mut event)) => {
            event.insert("trace".into(), serde_json::Value::String(traceparent));
            serde_json::Value::Object(event).to_string()
        }
        _ => body,
    }
}

/// One batch of expired deduplication markers, when `pruning` says a pass is due.
async fn prune(parts: &Parts, pruning: &PruneSchedule) {
    let pruned =
        async { anyhow::Ok(pruning.prune_if_due(&*parts.consolidation_store().await?, parts.dedup_window()?).await?) };
    match pruned.await {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "deduplication markers past the window pruned"),
        Err(e) => tracing::warn!(
            error = format!("{e:#}"),
            "pruning deduplication markers failed; a later invocation tries again"
        ),
    }
}

/// Applies `event`'s batch, then prunes expired deduplication markers if due in this
/// execution environment; the ids of the messages not applied.
pub async fn handle(parts: &Parts, event: SqsEvent) -> SqsBatchResponse {
    handle_with(parts, &PRUNING, event).await
}

/// [`handle`] with the pruning schedule `pruning` instead of the execution environment's.
pub async fn handle_with(parts: &Parts, pruning: &PruneSchedule, event: SqsEvent) -> SqsBatchResponse {
    let ids: Vec<String> = event.records.iter().filter_map(|m| m.message_id.clone()).collect();
    let batch = Arc::new(LambdaBatch::new(&event));
    let applied = async {
        let store = parts.consolidation_store().await?;
        let cache = parts.cache().await?;
        let consumer = Consumer::new(
            store,
            batch.clone(),
            cache,
            ConsumerConfig { batch_size: ids.len().max(1), ..ConsumerConfig::default() },
        );
        consumer.poll_once(Duration::ZERO).await
    };
    if let Err(e) = applied.await {
        tracing::warn!(error = format!("{e:#}"), messages = ids.len(), "batch not applied; every message is retried");
    }
    prune(parts, pruning).await;
    let acked = batch.acked();
    let mut response = SqsBatchResponse::default();
    for id in ids.into_iter().filter(|id| !acked.contains(id)) {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = id;
        response.batch_item_failures.push(failure);
    }
    response
}
