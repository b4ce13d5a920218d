//! The daily consolidation ("consolidado diário"): turns ledger events into daily balances.
//!
//! It never reads the ledger's tables; it learns everything from events on the queue. The
//! [`consumer::Consumer`] applies them exactly once in effect, whatever the queue does (late,
//! out of order, duplicated), and invalidates the report cache. The API serves one day or a
//! range, from the cache when it can, and every report says how fresh it is (`as_of`).
//!
//! # Layout
//! - [`api`]: `router()` for `/v1/balances/daily`, its queries and its error mapping.
//! - [`report`]: the report bodies ([`DailyBalanceResponse`](report::DailyBalanceResponse), …)
//!   and [`CachedReport`], a report's JSON as the caches keep it.
//! - [`consumer`]: the queue consumer.
//! - [`dedup`]: how long deduplication markers are kept ([`dedup::DedupWindow`]) and the
//!   [`dedup::Pruner`] that forgets older ones (or the [`dedup::PruneSchedule`] of a process
//!   without background tasks).
//! - [`store`]: the [`ConsolidationStore`] port; [`sqlite`] (embedded) and [`postgres`] (RDS)
//!   implement it, chosen by URL.
//! - [`cache`]: the [`ReportCache`] port; [`MemoryCache`]: the in-process implementation;
//!   [`NoCache`] for a reports-only process that cannot share one.
//! - [`redis_cache`]: [`RedisCache`], the shared implementation on Redis (ElastiCache).
//! - [`reconcile`]: the [`reconcile::Reconciler`], comparing consolidated days with the ledger
//!   (through the [`reconcile::LedgerSource`] port) and rebuilding the ones that drift.

pub mod api;
pub mod cache;
pub mod consumer;
pub mod dedup;
pub mod postgres;
pub mod reconcile;
pub mod redis_cache;
pub mod report;
pub mod sqlite;
pub mod store;

pub use api::{router, ConsolidationApi, ConsolidationState};
pub use cache::{MemoryCache, NoCache, ReportCache};
pub use consumer::{Consumer, ConsumerConfig};
pub use postgres::PostgresConsolidationStore;
pub use redis_cache::{RedisCache, RedisCacheConfig, RedisCacheError};
pub use report::CachedReport;
pub use sqlite::SqliteConsolidationStore;
pub use store::{ConsolidationStore, StoreError};
