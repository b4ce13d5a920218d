//! The queue adapters of the event port ([`cashflow_events::EventPublisher`],
//! [`cashflow_events::EventSource`]).
//!
//! They are apart from the contract so that the ledger and the consolidation compile neither
//! SQLite's queue tables nor the AWS SDK: only the binary that picks a queue depends on this
//! crate.
//!
//! # Layout
//! - [`embedded`]: the durable SQLite-backed queue of the single-machine default.
//! - [`sqs`]: the Amazon SQS queue of the production deployment.

pub mod embedded;
pub mod sqs;

pub use embedded::{EmbeddedQueue, EmbeddedQueueConfig};
pub use sqs::{SqsConfig, SqsConfigError, SqsQueue};
