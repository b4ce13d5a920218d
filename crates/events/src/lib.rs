//! The integration contract between the ledger and the daily consolidation.
//!
//! The two services never read each other's tables: the ledger writes an [`Event`] into its
//! outbox in the same transaction as the entry, a relay publishes it to a queue, and the
//! consolidator consumes it. The queue delivers **at least once, in any order, possibly
//! duplicated**; consumers make that exactly-once in effect by deduplicating on
//! [`Event::event_id`].
//!
//! This crate is only the contract: the services depend on it without compiling a queue
//! client or a database driver. The adapters that implement the port live in `cashflow-queue`.
//!
//! # Layout
//! - [`event`]: the versioned JSON event schema.
//! - [`queue`]: the queue port ([`EventPublisher`], [`EventSource`]) any backend implements.

pub mod event;
mod instant;
pub mod queue;

pub use event::{DayClosed, DayReopened, EntryRecorded, Event, EventBody, MerchantRegistered};
pub use queue::{Delivery, EventPublisher, EventSource, OutboundMessage, QueueError};
