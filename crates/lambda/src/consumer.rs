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

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};

use cashflow::app::Parts;
use cashflow_consolidation::{Consumer, ConsumerConfig};
use cashflow_events::{Delivery, EventSource, QueueError};

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
                if let Some(trace) = message.attributes.get("AWSTraceHeader") {
                    tracing::debug!(message_id = %receipt, aws_trace = %trace, "received");
                }
                Some(Delivery { receipt, body: message.body.clone().unwrap_or_default(), receive_count })
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

/// Applies `event`'s batch; the ids of the messages not applied.
pub async fn handle(parts: &Parts, event: SqsEvent) -> SqsBatchResponse {
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
    let acked = batch.acked();
    let mut response = SqsBatchResponse::default();
    for id in ids.into_iter().filter(|id| !acked.contains(id)) {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = id;
        response.batch_item_failures.push(failure);
    }
    response
}
