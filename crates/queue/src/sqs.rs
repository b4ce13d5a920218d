//! The Amazon SQS queue: the production backend of the queue port.
//!
//! SQS has the same contract as the embedded queue, which is why the rest of the system cannot
//! tell them apart:
//! - **At least once.** A received message is only leased for the visibility timeout; it is
//!   deleted when the consumer acknowledges it after its transaction committed. A consumer that
//!   crashes (or a lease that expires) means a redelivery, and the consolidator deduplicates on
//!   the event id, so redeliveries change nothing.
//! - **Dead letters through the queue's own redrive policy.** This adapter never deletes a
//!   message it could not process: SQS counts receives (`ApproximateReceiveCount`, reported as
//!   [`Delivery::receive_count`]) and moves a message received `maxReceiveCount` times to the
//!   dead-letter queue named in the queue's `RedrivePolicy`. Configure one on every queue.
//! - **Deduplication ids.** Every message carries its event id as the batch entry id and as the
//!   `event_id` message attribute. On a FIFO queue (URL ending in `.fifo`) the event id is also
//!   the `MessageDeduplicationId`, so a relay that republishes after a crash enqueues nothing new
//!   within SQS's five-minute window; each event is its own `MessageGroupId` because
//!   consolidation does not need ordering. Standard queues may still duplicate; consumers
//!   deduplicate regardless.
//!
//! A publish fails as a whole ([`QueueError::Unavailable`]) if any entry is still refused after
//! bounded retries; the relay then republishes the whole batch, which is harmless.
//!
//! # Configuration
//! [`SqsQueue::connect`] loads credentials and region the standard AWS way (environment,
//! profile, web identity, container or instance role) and honours `AWS_ENDPOINT_URL` /
//! `AWS_ENDPOINT_URL_SQS`. The queue URL completes what is missing: the region of an
//! `https://sqs.<region>.amazonaws.com/…` URL is the queue's region, and a URL on any other host
//! (an emulator such as moto, ElasticMQ or LocalStack) is also the endpoint unless one is
//! configured. Credentials are never logged: only the queue URL and error messages from SQS are.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::config::retry::RetryConfig;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::config::{BehaviorVersion, Region};
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, MessageSystemAttributeName, MessageSystemAttributeNameForSends, MessageSystemAttributeValue,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use tokio::task::JoinSet;

use cashflow_events::{Delivery, EventPublisher, EventSource, OutboundMessage, QueueError};

/// The AWS crates this adapter is built on, so that callers can build an [`aws_config::SdkConfig`]
/// or an [`aws_sdk_sqs::Client`] without depending on matching versions themselves.
pub use {aws_config, aws_sdk_sqs};

/// Entries per `SendMessageBatch` / `DeleteMessageBatch` and messages per `ReceiveMessage`: the
/// SQS maximum.
pub const MAX_BATCH: usize = 10;
/// The longest long poll SQS allows.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// The longest visibility timeout SQS allows.
pub const MAX_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(12 * 60 * 60);
/// The message attribute carrying the event id, for consumers and operators that look at a
/// message without parsing its body (for example in the dead-letter queue console).
pub const EVENT_ID_ATTRIBUTE: &str = "event_id";
/// The message attribute carrying the W3C trace context of the producing request.
pub const TRACEPARENT_ATTRIBUTE: &str = "traceparent";

/// X-Ray's trace header (`Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=<0|1>`) of a W3C
/// `traceparent` (`00-<32 hex>-<16 hex>-<flags>`): the same trace and parent span.
fn aws_trace_header(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.split('-');
    let (_, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !(hex(trace, 32) && hex(span, 16) && hex(flags, 2)) {
        return None;
    }
    let sampled = u8::from_str_radix(flags, 16).ok()? & 1;
    Some(format!("Root=1-{}-{};Parent={span};Sampled={sampled}", trace.get(..8)?, trace.get(8..)?))
}

/// Region used to sign requests to an emulator when none is configured (emulators accept any).
const EMULATOR_REGION: &str = "us-east-1";
/// How long establishing a connection may take (the SDK's own default for current behaviour
/// versions, restated because setting a timeout config replaces it).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);
/// Ceiling of the backoff between retries of refused batch entries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Settings of the SQS adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsConfig {
    /// The queue URL as SQS returns it, e.g. `https://sqs.sa-east-1.amazonaws.com/123456789012/cashflow-events`;
    /// a `.fifo` suffix turns on deduplication and group ids.
    pub queue_url: String,
    /// How long a received message stays invisible to other receives. Longer than a batch
    /// takes to apply, or messages are redelivered while still being applied (harmless, wasteful).
    pub visibility_timeout: Duration,
    /// Upper bound on a receive's long poll (at most [`MAX_WAIT`]); the caller's `wait` is
    /// capped at it and rounded up to whole seconds.
    pub wait_time: Duration,
    /// Messages asked for per `ReceiveMessage` call (1 to [`MAX_BATCH`]).
    pub max_messages_per_receive: usize,
    /// Requests one `publish`, `receive` or `ack` may have in flight at once; a receive of
    /// `max` messages makes at most this many calls.
    pub max_concurrent_requests: usize,
    /// Attempts per request (the SDK retries throttling, 5xx and connection errors) and per
    /// refused batch entry (retried by this adapter). At least 1.
    pub max_attempts: u32,
    /// First backoff between attempts; it doubles (with jitter in the SDK) up to a few seconds.
    pub base_delay: Duration,
    /// Time limit of one request attempt; it must exceed `wait_time` so a long poll can finish.
    pub attempt_timeout: Duration,
}

impl SqsConfig {
    /// The defaults for `queue_url`: 30 s visibility, 20 s long polls, 10 messages per receive,
    /// 10 concurrent requests, 3 attempts from 100 ms, 30 s per attempt.
    pub fn new(queue_url: impl Into<String>) -> Self {
        Self {
            queue_url: queue_url.into(),
            visibility_timeout: Duration::from_secs(30),
            wait_time: MAX_WAIT,
            max_messages_per_receive: MAX_BATCH,
            max_concurrent_requests: 10,
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            attempt_timeout: Duration::from_secs(30),
        }
    }

    /// Whether the queue is a FIFO queue (SQS requires FIFO queue names to end in `.fifo`).
    pub fn is_fifo(&self) -> bool {
        self.queue_url.trim_end_matches('/').ends_with(".fifo")
    }

    /// Checks every field against the limits of SQS.
    pub fn validate(&self) -> Result<(), SqsConfigError> {
        let invalid = |why: String| Err(SqsConfigError::Invalid(why));
        if split_url(&self.queue_url).is_none() {
            return invalid(format!("queue URL `{}` is not an http(s) URL with a host", self.queue_url));
        }
        if self.visibility_timeout > MAX_VISIBILITY_TIMEOUT {
            return invalid(format!("visibility timeout {:?} exceeds 12 hours", self.visibility_timeout));
        }
        if self.wait_time > MAX_WAIT {
            return invalid(format!("wait time {:?} exceeds 20 seconds", self.wait_time));
        }
        if !(1..=MAX_BATCH).contains(&self.max_messages_per_receive) {
            return invalid(format!(
                "max messages per receive {} is not between 1 and 10",
                self.max_messages_per_receive
            ));
        }
        if self.max_concurrent_requests == 0 {
            return invalid("max concurrent requests must be at least 1".into());
        }
        if self.max_attempts == 0 {
            return invalid("max attempts must be at least 1".into());
        }
        if self.attempt_timeout <= self.wait_time {
            return invalid(format!(
                "attempt timeout {:?} must exceed the long-poll wait time {:?}",
                self.attempt_timeout, self.wait_time
            ));
        }
        Ok(())
    }
}

/// A configuration the adapter cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum SqsConfigError {
    #[error("invalid SQS configuration: {0}")]
    Invalid(String),
}

/// The SQS-backed queue; cheap to clone (the client is shared).
#[derive(Clone)]
pub struct SqsQueue {
    client: Client,
    config: std::sync::Arc<SqsConfig>,
}

impl std::fmt::Debug for SqsQueue {
    // The client's configuration holds the credentials provider: show only what is ours.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsQueue").field("config", &self.config).finish_non_exhaustive()
    }
}

impl SqsQueue {
    /// Connects to `config.queue_url` with the standard AWS configuration of the environment
    /// (see the module docs). Nothing is sent yet: use [`SqsQueue::ping`] to check the queue.
    pub async fn connect(config: SqsConfig) -> Result<Self, SqsConfigError> {
        config.validate()?;
        let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
        Self::from_sdk_config(&sdk, config)
    }

    /// Like [`SqsQueue::connect`], with an AWS configuration built by the caller.
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig, config: SqsConfig) -> Result<Self, SqsConfigError> {
        config.validate()?;
        let mut builder = aws_sdk_sqs::config::Builder::from(sdk);
        let (_, host) = split_url(&config.queue_url)
            .ok_or_else(|| SqsConfigError::Invalid(format!("queue URL `{}` has no host", config.queue_url)))?;
        if is_aws_host(host) {
            // A queue lives in exactly one region: the one in its URL.
            if let Some(region) = region_of_aws_host(host) {
                if sdk.region().is_some_and(|r| r.as_ref() != region) {
                    tracing::warn!(queue_url = %config.queue_url, "the configured AWS region differs from the queue's; using the queue's");
                }
                builder.set_region(Some(Region::new(region.to_owned())));
            }
        } else {
            if sdk.region().is_none() {
                builder.set_region(Some(Region::new(EMULATOR_REGION)));
            }
            let endpoint_configured =
                sdk.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_SQS").is_some();
            if !endpoint_configured {
                builder.set_endpoint_url(origin(&config.queue_url));
            }
        }
        Ok(Self::with_builder(builder, config))
    }

    /// Uses an existing client (its credentials, region and endpoint), with the retry and
    /// timeout settings of `config`.
    pub fn from_client(client: &Client, config: SqsConfig) -> Result<Self, SqsConfigError> {
        config.validate()?;
        Ok(Self::with_builder(client.config().to_builder(), config))
    }

    fn with_builder(builder: aws_sdk_sqs::config::Builder, config: SqsConfig) -> Self {
        let retry = RetryConfig::standard()
            .with_max_attempts(config.max_attempts)
            .with_initial_backoff(config.base_delay)
            .with_max_backoff(MAX_BACKOFF);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(config.attempt_timeout)
            .build();
        let client = Client::from_conf(builder.retry_config(retry).timeout_config(timeouts).build());
        Self { client, config: std::sync::Arc::new(config) }
    }

    /// The queue URL.
    pub fn queue_url(&self) -> &str {
        &self.config.queue_url
    }

    /// The underlying client, for operations this adapter does not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Readiness probe: one cheap `GetQueueAttributes`, which fails if the queue does not
    /// exist, the credentials are refused or SQS cannot be reached.
    #[tracing::instrument(skip_all, fields(queue_url = %self.config.queue_url))]
    pub async fn ping(&self) -> Result<(), QueueError> {
        self.client
            .get_queue_attributes()
            .queue_url(&self.config.queue_url)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .send()
            .await
            .map_err(|e| sdk_error("GetQueueAttributes", &e))?;
        Ok(())
    }

    fn entry(&self, message: &OutboundMessage) -> Result<SendMessageBatchRequestEntry, QueueError> {
        let event_id = message.event_id.to_string();
        let attribute = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(&event_id)
            .build()
            .map_err(build_error)?;
        let mut entry = SendMessageBatchRequestEntry::builder()
            // A UUID is a valid entry id (letters, digits, hyphens; at most 80 characters).
            .id(&event_id)
            .message_body(&message.body)
            .message_attributes(EVENT_ID_ATTRIBUTE, attribute);
        // The producing request's trace context, where tracing tools (X-Ray, OpenTelemetry)
        // look for it.
        if let Some(traceparent) = cashflow_events::Event::trace_of(&message.body) {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(&traceparent)
                .build()
                .map_err(build_error)?;
            entry = entry.message_attributes(TRACEPARENT_ATTRIBUTE, value);
            // The same context as X-Ray's header, in the system attribute Lambda and X-Ray read.
            if let Some(header) = aws_trace_header(&traceparent) {
                let value = MessageSystemAttributeValue::builder()
                    .data_type("String")
                    .string_value(header)
                    .build()
                    .map_err(build_error)?;
                entry = entry.message_system_attributes(MessageSystemAttributeNameForSends::AwsTraceHeader, value);
            }
        }
        if self.config.is_fifo() {
            entry = entry.message_deduplication_id(&event_id).message_group_id(&event_id);
        }
        entry.build().map_err(build_error)
    }

    /// Sends one batch of at most ten entries, retrying the entries SQS refused for its own
    /// reasons (throttling, internal errors); an entry refused for the sender's fault is final.
    async fn send_batch(self, mut entries: Vec<SendMessageBatchRequestEntry>) -> Result<(), QueueError> {
        let mut attempt = 1;
        loop {
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.config.queue_url)
                .set_entries(Some(entries.clone()))
                .send()
                .await
                .map_err(|e| sdk_error("SendMessageBatch", &e))?;
            let failed = out.failed();
            // Every entry must be answered, stored or refused: one the response does not
            // mention is taken as not stored and sent again (a duplicate is harmless, a loss is
            // not).
            let answered: HashSet<&str> =
                out.successful().iter().map(|s| s.id()).chain(failed.iter().map(BatchResultErrorEntry::id)).collect();
            let unanswered: Vec<String> =
                entries.iter().map(|e| e.id()).filter(|id| !answered.contains(id)).map(str::to_owned).collect();
            if failed.is_empty() && unanswered.is_empty() {
                return Ok(());
            }
            if let Some(f) = failed.iter().find(|f| f.sender_fault()) {
                return Err(entry_error("SendMessageBatch", f, failed.len()));
            }
            if attempt >= self.config.max_attempts {
                return Err(match failed.first() {
                    Some(first) => entry_error("SendMessageBatch", first, failed.len() + unanswered.len()),
                    None => QueueError::Unavailable(format!(
                        "SendMessageBatch left {} of {} entries unanswered",
                        unanswered.len(),
                        entries.len()
                    )),
                });
            }
            tracing::warn!(
                failed = failed.len(),
                unanswered = unanswered.len(),
                code = failed.first().map(|f| f.code()),
                attempt,
                "SQS did not store some messages; retrying them"
            );
            let retry: HashSet<&str> =
                failed.iter().map(BatchResultErrorEntry::id).chain(unanswered.iter().map(String::as_str)).collect();
            entries.retain(|e| retry.contains(e.id()));
            tokio::time::sleep(backoff(self.config.base_delay, attempt)).await;
            attempt += 1;
        }
    }

    /// Deletes one batch of at most ten receipts, retrying deletions SQS failed on its side.
    async fn delete_batch(self, mut entries: Vec<DeleteMessageBatchRequestEntry>) -> Result<(), QueueError> {
        let mut attempt = 1;
        loop {
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.config.queue_url)
                .set_entries(Some(entries.clone()))
                .send()
                .await
                .map_err(|e| sdk_error("DeleteMessageBatch", &e))?;
            // A receipt that is no longer valid belongs to a message whose lease ran out and that
            // was received again (by us or another consumer): its effect is already committed
            // here, and the new holder's application is a duplicate that it acknowledges itself.
            let (stale, failed): (Vec<&BatchResultErrorEntry>, Vec<&BatchResultErrorEntry>) =
                out.failed().iter().partition(|f| f.code() == "ReceiptHandleIsInvalid");
            if !stale.is_empty() {
                tracing::info!(
                    count = stale.len(),
                    "acknowledged messages had been received again after their lease ran out"
                );
            }
            if failed.is_empty() {
                return Ok(());
            }
            if attempt >= self.config.max_attempts || failed.iter().any(|f| f.sender_fault()) {
                let first = failed.iter().find(|f| f.sender_fault()).unwrap_or(&failed[0]);
                return Err(entry_error("DeleteMessageBatch", first, failed.len()));
            }
            tracing::warn!(
                failed = failed.len(),
                code = failed[0].code(),
                attempt,
                "SQS failed some deletions; retrying them"
            );
            let retry: HashSet<&str> = failed.iter().map(|f| f.id()).collect();
            entries.retain(|e| retry.contains(e.id()));
            tokio::time::sleep(backoff(self.config.base_delay, attempt)).await;
            attempt += 1;
        }
    }

    /// Ends the lease of one batch of at most ten receipts. No retry: a message whose release
    /// failed reappears after its visibility timeout anyway.
    async fn release_batch(self, entries: Vec<ChangeMessageVisibilityBatchRequestEntry>) -> Result<(), QueueError> {
        let out = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.config.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| sdk_error("ChangeMessageVisibilityBatch", &e))?;
        // A receipt whose lease already ended (the message was received again) releases nothing.
        let failed: Vec<&BatchResultErrorEntry> = out
            .failed()
            .iter()
            .filter(|f| !matches!(f.code(), "ReceiptHandleIsInvalid" | "MessageNotInflight"))
            .collect();
        match failed.first() {
            None => Ok(()),
            Some(first) => Err(entry_error("ChangeMessageVisibilityBatch", first, failed.len())),
        }
    }

    /// One `ReceiveMessage` call.
    async fn receive_once(self, max: usize, wait_seconds: i32) -> Result<Vec<Delivery>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.config.queue_url)
            .max_number_of_messages(i32::try_from(max.min(MAX_BATCH)).unwrap_or(1))
            .wait_time_seconds(wait_seconds)
            .visibility_timeout(whole_seconds(self.config.visibility_timeout))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| sdk_error("ReceiveMessage", &e))?;
        Ok(out.messages().iter().filter_map(delivery).collect())
    }
}

#[async_trait]
impl EventPublisher for SqsQueue {
    #[tracing::instrument(skip_all, fields(count = messages.len()))]
    async fn publish(&self, messages: &[OutboundMessage]) -> Result<(), QueueError> {
        // Entry ids must be distinct within a batch, and a duplicate would be delivered twice
        // for nothing: keep the first message of each event.
        let mut seen = HashSet::new();
        let unique: Vec<&OutboundMessage> = messages.iter().filter(|m| seen.insert(m.event_id)).collect();
        let mut batches = Vec::with_capacity(unique.len().div_ceil(MAX_BATCH));
        for chunk in unique.chunks(MAX_BATCH) {
            let entries = chunk.iter().map(|m| self.entry(m)).collect::<Result<Vec<_>, _>>()?;
            batches.push(self.clone().send_batch(entries));
        }
        all_or_error(run_concurrently(self.config.max_concurrent_requests, batches).await)
    }
}

#[async_trait]
impl EventSource for SqsQueue {
    #[tracing::instrument(skip_all, fields(max = max, wait_ms = wait.as_millis()))]
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let per_call = self.config.max_messages_per_receive;
        // Only the first call long-polls: an idle queue costs one waiting request, not many.
        let started = std::time::Instant::now();
        let mut deliveries =
            self.clone().receive_once(max.min(per_call), wait_seconds(wait, self.config.wait_time)).await?;
        if deliveries.len() < per_call || max <= per_call {
            return Ok(deliveries);
        }
        // A queue that answers slowly (a long poll that waited, an overloaded endpoint) gets no
        // more calls in this round: the messages leased now must be applied and acknowledged well
        // within their visibility timeout, or they are received again (and, past the redrive
        // limit, dead-lettered) while still in our hands.
        if started.elapsed() > self.config.visibility_timeout / 8 {
            return Ok(deliveries);
        }
        // The first call came back full: the queue has a backlog, so fetch the rest at once.
        let remaining = max - deliveries.len();
        let calls = remaining.div_ceil(per_call).min(self.config.max_concurrent_requests);
        let requests =
            (0..calls).map(|i| self.clone().receive_once(per_call.min(remaining - i * per_call), 0)).collect();
        for result in run_concurrently(self.config.max_concurrent_requests, requests).await {
            match result {
                Ok(more) => deliveries.extend(more),
                // The messages already leased are worth returning; the failed call's messages
                // (if it leased any) come back after their visibility timeout.
                Err(e) => tracing::warn!(error = %e, "an additional SQS receive failed"),
            }
        }
        Ok(deliveries)
    }

    #[tracing::instrument(skip_all, fields(count = receipts.len()))]
    async fn ack(&self, receipts: &[String]) -> Result<(), QueueError> {
        let batches = receipt_batches(receipts, |id, receipt| {
            DeleteMessageBatchRequestEntry::builder().id(id).receipt_handle(receipt).build()
        })?;
        let requests = batches.into_iter().map(|entries| self.clone().delete_batch(entries)).collect();
        all_or_error(run_concurrently(self.config.max_concurrent_requests, requests).await)
    }

    /// `ChangeMessageVisibilityBatch` to 0 seconds; SQS keeps the receive count, so the redrive
    /// policy still dead-letters a message that is released every time.
    #[tracing::instrument(skip_all, fields(count = receipts.len()))]
    async fn release(&self, receipts: &[String]) -> Result<(), QueueError> {
        let batches = receipt_batches(receipts, |id, receipt| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(id)
                .receipt_handle(receipt)
                .visibility_timeout(0)
                .build()
        })?;
        let requests = batches.into_iter().map(|entries| self.clone().release_batch(entries)).collect();
        all_or_error(run_concurrently(self.config.max_concurrent_requests, requests).await)
    }

    #[tracing::instrument(skip_all, fields(queue_url = %self.config.queue_url))]
    async fn depth(&self) -> Result<Option<u64>, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.config.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| sdk_error("GetQueueAttributes", &e))?;
        let Some(attributes) = out.attributes() else { return Ok(None) };
        let mut total = 0u64;
        for name in
            [QueueAttributeName::ApproximateNumberOfMessages, QueueAttributeName::ApproximateNumberOfMessagesNotVisible]
        {
            let Some(value) = attributes.get(&name) else { return Ok(None) };
            let n: u64 = value.parse().map_err(|_| {
                QueueError::Unavailable(format!("SQS returned a non-numeric {}: `{value}`", name.as_str()))
            })?;
            total = total.saturating_add(n);
        }
        Ok(Some(total))
    }
}

/// The distinct receipts as batch entries, at most [`MAX_BATCH`] a batch, each entry's id its
/// index in its batch (ids must be distinct within a batch).
fn receipt_batches<T>(
    receipts: &[String],
    entry: impl Fn(String, &str) -> Result<T, aws_sdk_sqs::error::BuildError>,
) -> Result<Vec<Vec<T>>, QueueError> {
    let mut seen = HashSet::new();
    let unique: Vec<&String> = receipts.iter().filter(|r| seen.insert(r.as_str())).collect();
    unique
        .chunks(MAX_BATCH)
        .map(|chunk| {
            chunk.iter().enumerate().map(|(i, receipt)| entry(i.to_string(), receipt).map_err(build_error)).collect()
        })
        .collect()
}

/// A received message as a [`Delivery`]; `None` for a message without a receipt handle, which
/// could never be acknowledged (SQS always sends one).
fn delivery(message: &Message) -> Option<Delivery> {
    let Some(receipt) = message.receipt_handle() else {
        tracing::warn!(message_id = message.message_id(), "SQS message without a receipt handle ignored");
        return None;
    };
    let receive_count = message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    Some(Delivery {
        receipt: receipt.to_owned(),
        // An empty body is not an event: the consumer leaves it to the dead-letter queue.
        body: message.body().unwrap_or_default().to_owned(),
        receive_count,
    })
}

/// Runs the futures at most `limit` at a time on the runtime and returns their results in
/// completion order. A lone future runs inline (the common case: one batch).
async fn run_concurrently<T, F>(limit: usize, jobs: Vec<F>) -> Vec<Result<T, QueueError>>
where
    T: Send + 'static,
    F: Future<Output = Result<T, QueueError>> + Send + 'static,
{
    let mut results = Vec::with_capacity(jobs.len());
    if jobs.len() <= 1 {
        for job in jobs {
            results.push(job.await);
        }
        return results;
    }
    let joined = |r: Result<Result<T, QueueError>, tokio::task::JoinError>| {
        r.unwrap_or_else(|e| Err(QueueError::Unavailable(format!("SQS request task failed: {e}"))))
    };
    // Dropping the set (when the caller is cancelled) aborts the requests still running.
    let mut set = JoinSet::new();
    for job in jobs {
        if set.len() >= limit.max(1) {
            if let Some(r) = set.join_next().await {
                results.push(joined(r));
            }
        }
        set.spawn(job);
    }
    while let Some(r) = set.join_next().await {
        results.push(joined(r));
    }
    results
}

fn all_or_error(results: Vec<Result<(), QueueError>>) -> Result<(), QueueError> {
    results.into_iter().collect()
}

fn sdk_error<E, R>(operation: &str, e: &aws_sdk_sqs::error::SdkError<E, R>) -> QueueError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    // The error chain names the failure (e.g. `QueueDoesNotExist`, a connection refused); it
    // holds neither credentials nor signatures.
    QueueError::Unavailable(format!("SQS {operation} failed: {}", DisplayErrorContext(e)))
}

fn entry_error(operation: &str, entry: &BatchResultErrorEntry, failed: usize) -> QueueError {
    QueueError::Unavailable(format!(
        "SQS {operation} refused {failed} entries, e.g. `{}`: {} {}",
        entry.id(),
        entry.code(),
        entry.message().unwrap_or_default()
    ))
}

fn build_error(e: aws_sdk_sqs::error::BuildError) -> QueueError {
    QueueError::Unavailable(format!("building an SQS request: {e}"))
}

/// `base · 2^(attempt-1)`, at most [`MAX_BACKOFF`], less up to half of it at random so that
/// concurrent batches do not retry in lockstep.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let full = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(MAX_BACKOFF);
    let jitter = u32::try_from(uuid::Uuid::new_v4().as_u128() % 1000).unwrap_or(0);
    full.saturating_sub(full / 2 * jitter / 1000)
}

/// The long-poll wait of a receive: the caller's `wait`, rounded up to whole seconds (a short
/// wait still waits), capped at the configured maximum.
fn wait_seconds(wait: Duration, cap: Duration) -> i32 {
    whole_seconds(wait.min(cap).min(MAX_WAIT))
}

/// Whole seconds, rounded up (SQS counts time in seconds).
fn whole_seconds(d: Duration) -> i32 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// `(scheme, host)` of an `http(s)://host[:port]/…` URL.
fn split_url(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or_default()
    };
    (!host.is_empty()).then_some((scheme, host))
}

/// `scheme://host[:port]` of a URL: the endpoint of an emulator's queue URL.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    Some(format!("{scheme}://{authority}"))
}

fn is_aws_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn") || host.ends_with(".api.aws")
}

/// The region of `sqs.<region>.amazonaws.com` (also `sqs-fips.…`, `sqs.<region>.api.aws`) or of
/// the legacy `<region>.queue.amazonaws.com`.
fn region_of_aws_host(host: &str) -> Option<&str> {
    let mut labels = host.split('.');
    let first = labels.next()?;
    let second = labels.next()?;
    if first.starts_with("sqs") {
        Some(second)
    } else if second == "queue" {
        Some(first)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aws_trace_header_is_the_traceparents_trace_and_parent_in_xrays_form() {
        // (moto does not keep system attributes sent in a batch, so this is checked here.)
        assert_eq!(
            aws_trace_header("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").as_deref(),
            Some("Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1")
        );
        assert_eq!(
            aws_trace_header("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").as_deref(),
            Some("Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=0")
        );
        assert_eq!(aws_trace_header("00-4bf92f35-00f067aa0ba902b7-01"), None);
    }

    #[test]
    fn the_defaults_are_valid_and_within_sqs_limits() {
        let config = SqsConfig::new("https://sqs.sa-east-1.amazonaws.com/123456789012/cashflow-events");
        config.validate().unwrap();
        assert!(!config.is_fifo());
        assert!(SqsConfig::new("http://127.0.0.1:5000/123456789012/events.fifo").is_fifo());
    }

    #[test]
    fn settings_beyond_sqs_limits_are_refused() {
        let base = SqsConfig::new("https://sqs.us-east-1.amazonaws.com/1/q");
        let bad = [
            SqsConfig { queue_url: "sqs://nope".into(), ..base.clone() },
            SqsConfig { queue_url: "https:///no-host".into(), ..base.clone() },
            SqsConfig { wait_time: Duration::from_secs(21), ..base.clone() },
            SqsConfig { visibility_timeout: Duration::from_secs(43_201), ..base.clone() },
            SqsConfig { max_messages_per_receive: 0, ..base.clone() },
            SqsConfig { max_messages_per_receive: 11, ..base.clone() },
            SqsConfig { max_concurrent_requests: 0, ..base.clone() },
            SqsConfig { max_attempts: 0, ..base.clone() },
            SqsConfig { attempt_timeout: Duration::from_secs(20), ..base.clone() },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?} should be refused");
        }
    }

    #[tokio::test]
    async fn connecting_with_an_invalid_configuration_fails_before_any_request() {
        let config = SqsConfig { max_messages_per_receive: 50, ..SqsConfig::new("http://127.0.0.1:1/1/q") };
        assert!(matches!(SqsQueue::connect(config).await, Err(SqsConfigError::Invalid(_))));
    }

    #[test]
    fn the_region_comes_from_an_aws_queue_url() {
        let host = |url| split_url(url).unwrap().1;
        assert_eq!(region_of_aws_host(host("https://sqs.sa-east-1.amazonaws.com/1/q")), Some("sa-east-1"));
        assert_eq!(region_of_aws_host(host("https://sqs-fips.us-gov-west-1.amazonaws.com/1/q")), Some("us-gov-west-1"));
        assert_eq!(region_of_aws_host(host("https://eu-west-1.queue.amazonaws.com/1/q")), Some("eu-west-1"));
        assert!(is_aws_host(host("https://sqs.cn-north-1.amazonaws.com.cn/1/q")));
        assert!(!is_aws_host(host("http://localhost:4566/000000000000/q")));
    }

    #[test]
    fn an_emulator_queue_url_names_its_endpoint() {
        assert_eq!(origin("http://127.0.0.1:5000/123456789012/q").as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(split_url("http://user@[::1]:9324/q").map(|(_, h)| h), Some("[::1]"));
    }

    #[test]
    fn waits_round_up_to_whole_seconds_and_stop_at_the_sqs_maximum() {
        assert_eq!(wait_seconds(Duration::ZERO, MAX_WAIT), 0);
        assert_eq!(wait_seconds(Duration::from_millis(200), MAX_WAIT), 1);
        assert_eq!(wait_seconds(Duration::from_secs(60), MAX_WAIT), 20);
        assert_eq!(wait_seconds(Duration::from_secs(60), Duration::from_secs(5)), 5);
    }

    #[test]
    fn backoff_doubles_up_to_a_ceiling_with_jitter() {
        let base = Duration::from_millis(100);
        for attempt in 1..40 {
            let d = backoff(base, attempt);
            let full = base.saturating_mul(1 << (attempt - 1).min(16)).min(MAX_BACKOFF);
            assert!(d <= full && d >= full / 2, "attempt {attempt}: {d:?} vs {full:?}");
        }
    }

    #[test]
    fn a_message_becomes_a_delivery_with_its_receive_count() {
        let message = Message::builder()
            .receipt_handle("r-1")
            .body("{}")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "3")
            .build();
        assert_eq!(delivery(&message), Some(Delivery { receipt: "r-1".into(), body: "{}".into(), receive_count: 3 }));
        assert_eq!(delivery(&Message::builder().body("{}").build()), None);
    }
}
