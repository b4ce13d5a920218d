#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Bytes on disk per entry: a measurement for BENCHMARKS.md, not a specification. Run with
//! `cargo test -p cashflow-ledger --release --test storage_figures -- --ignored --nocapture`
//! (`FIGURE_ENTRIES`, default 200,000; `FIGURE_MERCHANTS`, default 32; Postgres too when
//! `CASHFLOW_TEST_POSTGRES_URL` is set).
//!
//! Entries are written through the store the way the service writes them: 64 concurrent callers
//! (so the writer commits in groups), each entry with its outbox event, one in fifty reversed,
//! one in `FIGURE_KEYED_EVERY` with an idempotency key (default 0: none, like the bench's
//! clients); the outbox is drained as the relay drains it. Then
//! SQLite's WAL is checkpointed into the file, and the file's size is divided by the entries
//! written; Postgres's figure is `pg_total_relation_size` of `entries` (rows, TOAST and every
//! index) after `VACUUM`, divided the same way, and again after `REINDEX`.

mod fixtures;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use cashflow_ledger::store::Idempotency;
use cashflow_ledger::LedgerStore;
use fixtures::*;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const CALLERS: u64 = 64;
const DESCRIPTIONS: [&str; 4] = ["Venda balcão", "Pix recebido", "Compra de farinha", "Troco"];

/// Writes `n` entries over `merchants` merchants through `store`, draining the outbox as it goes.
async fn write_entries(store: Arc<dyn LedgerStore>, merchants: u64, n: u64) -> u64 {
    let mut ms = Vec::new();
    for _ in 0..merchants {
        ms.push(given_a_merchant(&store).await);
    }
    let ms = Arc::new(ms);
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let relay = tokio::spawn({
        let (store, done_writing) = (store.clone(), done.clone());
        async move {
            loop {
                // Read before the batch: once every caller is done, an empty batch is the end.
                let done = done_writing.load(Ordering::Acquire);
                let batch = store.outbox_batch(500).await.unwrap();
                if batch.is_empty() {
                    if done {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
                store.delete_outbox(&batch.iter().map(|r| r.seq).collect::<Vec<_>>()).await.unwrap();
            }
        }
    });
    let keyed_every = env("FIGURE_KEYED_EVERY", 0);
    let mut callers = Vec::new();
    for c in 0..CALLERS {
        let (store, ms) = (store.clone(), ms.clone());
        callers.push(tokio::spawn(async move {
            let (mut i, mut written) = (c, 0);
            while i < n {
                let m = &ms[(i % merchants) as usize];
                let mut entry = sale(m, 100 + (i as i64 * 7919) % 50_000);
                entry.description = Description::parse(DESCRIPTIONS[(i % 4) as usize]).unwrap();
                entry.business_date = BusinessDate::parse("2026-11-23").unwrap();
                let idempotency = (keyed_every > 0 && i % keyed_every == 0).then(|| Idempotency {
                    key: format!("{}-{i}", m.id),
                    request_hash: "3f8a0c1b9e7d5a4f2c6b8e0d1a3f5c7e9b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a".to_owned(),
                });
                store.record(&entry, idempotency.as_ref(), &recorded_event(&entry)).await.unwrap();
                written += 1;
                if i % 50 == 0 {
                    let reversal = Entry {
                        id: EntryId::new(),
                        kind: entry.kind.opposite(),
                        reversal_of: Some(entry.id),
                        description: Description::parse("Estorno").unwrap(),
                        ..entry.clone()
                    };
                    store.record(&reversal, None, &recorded_event(&reversal)).await.unwrap();
                    written += 1;
                    i += CALLERS; // the reversal is one of the n entries
                }
                i += CALLERS;
            }
            written
        }));
    }
    let mut written = 0;
    for caller in callers {
        written += caller.await.unwrap();
    }
    done.store(true, Ordering::Release);
    relay.await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!("wrote {written} entries over {merchants} merchants in {secs:.1} s");
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture (see the module docs)"]
async fn sqlite_bytes_on_disk_per_entry() {
    let (n, merchants) = (env("FIGURE_ENTRIES", 200_000), env("FIGURE_MERCHANTS", 32));
    let harness = Harness::sqlite().await;
    let n = write_entries(harness.store(), merchants, n).await;
    let path = harness.url.trim_start_matches("sqlite://").to_owned();
    let pool = cashflow_db::open_sqlite(&harness.url, 1).await.unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM entries").fetch_one(&pool).await.unwrap();
    assert_eq!(stored as u64, n, "every entry written is stored");
    // Where the bytes are, when SQLite was built with the dbstat table.
    if let Ok(rows) = sqlx::query_as::<_, (String, i64, i64)>(
        "SELECT name, SUM(pgsize), SUM(pgsize - unused) FROM dbstat GROUP BY name ORDER BY 2 DESC",
    )
    .fetch_all(&pool)
    .await
    {
        for (name, size, used) in rows {
            println!(
                "  {name:40} {:>7.1} bytes/entry ({:>3.0}% of its pages used)",
                size as f64 / n as f64,
                100.0 * used as f64 / size.max(1) as f64
            );
        }
    }
    pool.close().await;
    let bytes = std::fs::metadata(&path).unwrap().len();
    println!("SQLite ledger.db: {bytes} bytes for {n} entries = {:.1} bytes/entry", bytes as f64 / n as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (needs CASHFLOW_TEST_POSTGRES_URL): run with --ignored --nocapture"]
async fn postgres_bytes_on_disk_per_entry() {
    let (n, merchants) = (env("FIGURE_ENTRIES", 200_000), env("FIGURE_MERCHANTS", 32));
    let harness = Harness::postgres().await;
    let n = write_entries(harness.store(), merchants, n).await;
    let pool = cashflow_db::open_postgres(&harness.url, 1, "ledger").await.unwrap();
    sqlx::query("VACUUM ANALYZE entries").execute(&pool).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM entries").fetch_one(&pool).await.unwrap();
    assert_eq!(stored as u64, n, "every entry written is stored");
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.relname::text, pg_relation_size(c.oid) FROM pg_class c
         WHERE c.oid = 'entries'::regclass OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'entries'::regclass)
         ORDER BY 2 DESC",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for (name, size) in rows {
        println!("  {name:40} {:>7.1} bytes/entry", size as f64 / n as f64);
    }
    let total: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('entries')").fetch_one(&pool).await.unwrap();
    println!("Postgres ledger.entries: {total} bytes for {n} entries = {:.1} bytes/entry", total as f64 / n as f64);
    // Inserts at many merchants' positions split index pages half and half; a rebuilt index is
    // packed (what `REINDEX INDEX CONCURRENTLY` gives an operator).
    sqlx::query("REINDEX TABLE entries").execute(&pool).await.unwrap();
    let total: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('entries')").fetch_one(&pool).await.unwrap();
    println!("  after REINDEX: {total} bytes = {:.1} bytes/entry", total as f64 / n as f64);
}
