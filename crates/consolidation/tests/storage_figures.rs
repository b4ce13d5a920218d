#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Bytes on disk per applied event: a measurement for BENCHMARKS.md, not a specification. Run
//! with `cargo test -p cashflow-consolidation --release --test storage_figures -- --ignored
//! --nocapture` (`FIGURE_EVENTS`, default 200,000).
//!
//! Entry events of 32 merchants on one day are applied in batches of 100, one after another like
//! the consumer; then the WAL is checkpointed into the file, and the file's size is divided by
//! the events applied. Nothing is pruned: this is what a window's worth of markers costs.

use chrono::{SubsecRound, Utc};

use cashflow_consolidation::{ConsolidationStore, SqliteConsolidationStore};
use cashflow_domain::{Amount, BusinessDate, Currency, EntryId, EntryType, MerchantId};
use cashflow_events::{EntryRecorded, Event, EventBody};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture (see the module docs)"]
async fn sqlite_bytes_on_disk_per_applied_event() {
    let n: u64 = std::env::var("FIGURE_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("consolidation.db").display());
    let store = SqliteConsolidationStore::open(&url).await.unwrap();
    let merchants: Vec<MerchantId> = (0..32).map(|_| MerchantId::new()).collect();
    let day = BusinessDate::parse("2026-11-23").unwrap();
    let mut applied = 0;
    while applied < n {
        let batch: Vec<Event> = (0..100)
            .map(|i| {
                let now = Utc::now().trunc_subsecs(6);
                Event::new(
                    now,
                    EventBody::EntryRecorded(EntryRecorded {
                        merchant_id: merchants[(applied as usize + i) % merchants.len()],
                        entry_id: EntryId::new(),
                        business_date: day,
                        kind: EntryType::Credit,
                        amount: Amount::from_minor(100).unwrap(),
                        currency: Currency::BRL,
                        recorded_at: now,
                        reversal_of: None,
                        adjusts_date: None,
                    }),
                )
            })
            .collect();
        applied += store.apply(&batch).await.unwrap().applied.len() as u64;
    }
    drop(store);
    let pool = cashflow_db::open_sqlite(&url, 1).await.unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await.unwrap();
    if let Ok(rows) = sqlx::query_as::<_, (String, i64)>(
        "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name HAVING SUM(pgsize) > 8192 ORDER BY 2 DESC",
    )
    .fetch_all(&pool)
    .await
    {
        for (name, size) in rows {
            println!("  {name:40} {:>7.1} bytes/event", size as f64 / applied as f64);
        }
    }
    pool.close().await;
    let bytes = std::fs::metadata(dir.path().join("consolidation.db")).unwrap().len();
    println!(
        "SQLite consolidation.db: {bytes} bytes for {applied} applied events = {:.1} bytes/event",
        bytes as f64 / applied as f64
    );
}
