//! The ledger ("lançamentos"): records a merchant's debits and credits. Integrity above all.
//!
//! An entry and the event announcing it are written in one transaction (the transactional
//! outbox), and the HTTP response never waits for consolidation: the ledger keeps accepting
//! entries while consolidation, or the queue, is down. A [`relay::Relay`] moves outbox events
//! to the queue.
//!
//! # Layout
//! - [`api`]: `router()` for `/v1/entries`, its DTOs and its error mapping.
//! - [`service`]: the [`Ledger`] use cases.
//! - [`store`]: the [`LedgerStore`] port; [`sqlite`] (embedded) and [`postgres`] (RDS)
//!   implement it, chosen by URL.
//! - [`relay`]: the outbox relay.
//! - [`outbox_source`]: the outbox read as the queue, where one process consumes beside the ledger.

pub mod api;
mod group_commit;
pub mod outbox_source;
pub mod postgres;
pub mod relay;
pub mod service;
pub mod sqlite;
pub mod store;

pub use api::{router, LedgerApi, LedgerState};
pub use outbox_source::{OutboxSource, OutboxSourceConfig};
pub use postgres::PostgresLedgerStore;
pub use relay::{Committed, Relay, RelayConfig};
pub use service::{ClosedDay, Ledger, LedgerError};
pub use sqlite::SqliteLedgerStore;
pub use store::{LedgerStore, StoreError};
