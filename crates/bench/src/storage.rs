//! The storage ceilings: the same work the service does, made directly through the storage
//! layer the service uses (same crates, same durability settings), with no HTTP, no auth, no
//! JSON in between.
//!
//! - the ledger: `Ledger::record` (one entry + one outbox event, one transaction) from as many
//!   concurrent callers as the HTTP run had connections, spread over merchants the same way;
//! - consolidation: `ConsolidationStore::apply` of the same events in batches of the
//!   consumer's size, one batch after another like the consumer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use serde::Serialize;

use cashflow_consolidation::{ConsolidationStore, PostgresConsolidationStore, SqliteConsolidationStore};
use cashflow_domain::{
    Amount, BusinessDate, Currency, Description, EntryId, EntryType, MerchantId, MerchantName, MerchantTimeZone,
    NewEntry,
};
use cashflow_events::{EntryRecorded, Event, EventBody, MerchantRegistered};
use cashflow_ledger::{Ledger, LedgerStore, PostgresLedgerStore, SqliteLedgerStore};

/// Where a storage ceiling writes: a fresh SQLite file or a fresh Postgres database.
#[derive(Debug, Clone)]
pub enum Target {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

/// Like the service: `sqlite://…/ledger.db` through `SqliteLedgerStore::open`, so the same
/// pools, WAL and `synchronous=FULL`; or `PostgresLedgerStore::open` with its default pool.
async fn ledger_store(target: &Target) -> anyhow::Result<Arc<dyn LedgerStore>> {
    Ok(match target {
        Target::Sqlite(dir) => Arc::new(
            SqliteLedgerStore::open(&format!("sqlite://{}", dir.join("ledger.db").display()))
                .await
                .context("opening the SQLite ledger store")?,
        ),
        Target::Postgres(url) => {
            Arc::new(PostgresLedgerStore::open(url).await.context("opening the Postgres ledger store")?)
        }
    })
}

async fn consolidation_store(target: &Target) -> anyhow::Result<Arc<dyn ConsolidationStore>> {
    Ok(match target {
        Target::Sqlite(dir) => Arc::new(
            SqliteConsolidationStore::open(&format!("sqlite://{}", dir.join("consolidation.db").display()))
                .await
                .context("opening the SQLite consolidation store")?,
        ),
        Target::Postgres(url) => {
            Arc::new(PostgresConsolidationStore::open(url).await.context("opening the Postgres consolidation store")?)
        }
    })
}

/// The outcome of a ledger ceiling run.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerCeiling {
    pub callers: usize,
    pub seconds: f64,
    pub ok: u64,
    pub failures: u64,
    pub ok_per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// The entry every benchmark writes: a credit of 1.00 BRL on a fixed (past) day.
pub fn bench_entry(occurred_at: DateTime<Utc>) -> anyhow::Result<NewEntry> {
    Ok(NewEntry {
        kind: EntryType::Credit,
        amount: Amount::parse("1.00", Currency::BRL).map_err(|e| anyhow!("amount: {e}"))?,
        description: Description::parse("bench").map_err(|e| anyhow!("description: {e}"))?,
        category: Some(cashflow_domain::Category::parse("bench").map_err(|e| anyhow!("category: {e}"))?),
        occurred_at: Some(occurred_at),
    })
}

/// Records `entry` as fast as possible from `layout` callers (connections per merchant) for
/// `duration`.
pub async fn ledger_ceiling(
    target: &Target,
    layout: &[(usize, f64)],
    duration: Duration,
    entry: NewEntry,
) -> anyhow::Result<LedgerCeiling> {
    let ledger = Arc::new(Ledger::new(ledger_store(target).await?));
    let mut merchants = Vec::new();
    for i in 0..layout.len() {
        let name = MerchantName::parse(&format!("bench-{i}")).map_err(|e| anyhow!("merchant name: {e}"))?;
        let merchant = ledger
            .create_merchant(name, Currency::BRL, MerchantTimeZone::DEFAULT)
            .await
            .context("creating a merchant")?;
        merchants.push(merchant.id);
    }
    let callers: usize = layout.iter().map(|(c, _)| c).sum();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for (merchant, (connections, _)) in merchants.iter().zip(layout) {
        for _ in 0..*connections {
            let (ledger, merchant, entry) = (ledger.clone(), *merchant, entry.clone());
            tasks.push(tokio::spawn(async move { caller(&ledger, merchant, &entry, deadline).await }));
        }
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (mut l, f) = task.await.context("a storage caller panicked")?;
        latencies.append(&mut l);
        failures += f;
    }
    let seconds = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |q: f64| percentile(&latencies, q);
    Ok(LedgerCeiling {
        callers,
        seconds,
        ok: latencies.len() as u64,
        failures,
        ok_per_sec: latencies.len() as f64 / seconds,
        p50_ms: pct(0.50),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
        max_ms: latencies.last().map(|d| d.as_secs_f64() * 1000.0),
    })
}

async fn caller(ledger: &Ledger, merchant: MerchantId, entry: &NewEntry, deadline: Instant) -> (Vec<Duration>, u64) {
    let mut latencies = Vec::new();
    let mut failures = 0;
    while Instant::now() < deadline {
        let t = Instant::now();
        match ledger.record(merchant, entry.clone(), None, None).await {
            Ok(_) => latencies.push(t.elapsed()),
            Err(_) => failures += 1,
        }
    }
    (latencies, failures)
}

/// Nearest-rank percentile of sorted samples, in milliseconds.
pub fn percentile(sorted: &[Duration], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1].as_secs_f64() * 1000.0)
}

/// The outcome of a consolidation ceiling run.
#[derive(Debug, Clone, Serialize)]
pub struct ConsolidationCeiling {
    pub events: usize,
    pub batch: usize,
    pub seconds: f64,
    pub events_per_sec: f64,
}

/// Applies one `MerchantRegistered` per merchant, then `entries[i]` credits of 1.00 on `date`
/// for merchant `i` (interleaved, as they arrive from the queue), in batches of `batch`.
pub async fn consolidation_ceiling(
    target: &Target,
    entries: &[u64],
    date: &str,
    batch: usize,
) -> anyhow::Result<ConsolidationCeiling> {
    let store = consolidation_store(target).await?;
    let date = BusinessDate::parse(date).map_err(|e| anyhow!("date: {e}"))?;
    let amount = Amount::parse("1.00", Currency::BRL).map_err(|e| anyhow!("amount: {e}"))?;
    let merchants: Vec<MerchantId> = entries.iter().map(|_| MerchantId::new()).collect();
    let now = Utc::now();
    let mut events: Vec<Event> = merchants
        .iter()
        .map(|m| {
            Event::new(
                now,
                EventBody::MerchantRegistered(MerchantRegistered {
                    merchant_id: *m,
                    currency: Currency::BRL,
                    time_zone: MerchantTimeZone::DEFAULT,
                }),
            )
        })
        .collect();
    let most = entries.iter().copied().max().unwrap_or(0);
    for round in 0..most {
        for (merchant, n) in merchants.iter().zip(entries) {
            if round < *n {
                events.push(Event::new(
                    now,
                    EventBody::EntryRecorded(EntryRecorded {
                        merchant_id: *merchant,
                        entry_id: EntryId::new(),
                        business_date: date,
                        kind: EntryType::Credit,
                        amount,
                        currency: Currency::BRL,
                        recorded_at: now,
                        reversal_of: None,
                        adjusts_date: None,
                    }),
                ));
            }
        }
    }
    let start = Instant::now();
    let mut applied = 0;
    for chunk in events.chunks(batch.max(1)) {
        applied += store.apply(chunk).await.context("applying a batch")?.applied.len();
    }
    let seconds = start.elapsed().as_secs_f64();
    if applied != events.len() {
        anyhow::bail!("the consolidation store applied {applied} of {} events", events.len());
    }
    Ok(ConsolidationCeiling { events: events.len(), batch, seconds, events_per_sec: events.len() as f64 / seconds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 0.5), Some(50.0));
        assert_eq!(percentile(&samples, 0.99), Some(99.0));
        assert_eq!(percentile(&samples, 1.0), Some(100.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
