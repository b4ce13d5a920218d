//! The integration contract between the ledger and the daily consolidation.
//!
//! The two services never read each other's tables: the ledger writes an [`Event`] into its
//! outbox in the same transaction as the entry, a relay publishes it to a queue, and the
//! consolidator consumes it. The queue delivers **at least once, in any order, possibly
//! duplicated**; consumers make that exactly-once in effect by deduplicating on
//! [`Event::event_id`].
//!
//! # Layout
//! - [`event`]: the versioned JSON event schema.
//! - [`queue`]: the queue port ([`EventPublisher`], [`EventSource`]) any backend implements.
//! - [`embedded`]: the durable SQLite-backed queue of the single-machine default.
//! - [`sqs`]: the Amazon SQS queue of the production deployment.

pub mod embedded;
pub mod event;
pub mod queue;
pub mod sqs;

pub use embedded::{EmbeddedQueue, EmbeddedQueueConfig};
pub use event::{EntryRecorded, Event, EventBody, MerchantRegistered};
pub use queue::{Delivery, EventPublisher, EventSource, OutboundMessage, QueueError};
pub use sqs::{SqsConfig, SqsConfigError, SqsQueue};
