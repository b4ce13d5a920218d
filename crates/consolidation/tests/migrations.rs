#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A `consolidation.db` made by the schema before the deduplication window (migrations 1 to 3,
//! event ids as text) converts in place: the events it applied are still duplicates afterwards,
//! and the markers can be pruned by time.

use chrono::{SubsecRound, Utc};

use cashflow_consolidation::{ConsolidationStore, SqliteConsolidationStore};
use cashflow_db::MigrationSource;
use cashflow_domain::{Amount, BusinessDate, Currency, EntryId, EntryType, MerchantId};
use cashflow_events::{EntryRecorded, Event, EventBody};

const BEFORE_THE_WINDOW: &[MigrationSource] = &[
    MigrationSource {
        version: 1,
        description: "consolidation",
        sql: include_str!("../migrations/sqlite/0001_consolidation.sql"),
    },
    MigrationSource {
        version: 2,
        description: "day marks",
        sql: include_str!("../migrations/sqlite/0002_day_marks.sql"),
    },
    MigrationSource {
        version: 3,
        description: "day adjustments",
        sql: include_str!("../migrations/sqlite/0003_day_adjustments.sql"),
    },
];

fn sale(merchant: MerchantId) -> Event {
    let now = Utc::now().trunc_subsecs(6);
    Event::new(
        now,
        EventBody::EntryRecorded(EntryRecorded {
            merchant_id: merchant,
            entry_id: EntryId::new(),
            business_date: BusinessDate::parse("2026-11-23").unwrap(),
            kind: EntryType::Credit,
            amount: Amount::from_minor(1500).unwrap(),
            currency: Currency::BRL,
            recorded_at: now,
            reversal_of: None,
            adjusts_date: None,
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_of_the_schema_before_the_window_still_absorb_their_redeliveries() {
    // Given a consolidation.db of the schema before the window, which applied one event
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("consolidation.db").display());
    let pool = cashflow_db::open_sqlite(&url, 1).await.unwrap();
    cashflow_db::migrate_sqlite(&pool, BEFORE_THE_WINDOW).await.unwrap();
    let merchant = MerchantId::new();
    let applied = sale(merchant);
    sqlx::query("INSERT INTO processed_events (event_id, applied_at) VALUES (?1, ?2)")
        .bind(applied.event_id.to_string())
        .bind(Utc::now().timestamp_micros() - 1_000_000)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    // When the current store opens it and the event is delivered again, with a new one
    let store = SqliteConsolidationStore::open(&url).await.unwrap();
    let fresh = sale(merchant);
    let summary = store.apply(&[applied.clone(), fresh.clone()]).await.unwrap();

    // Then the old event is a duplicate and the new one applies
    assert_eq!((summary.duplicates, summary.applied), (vec![applied.event_id], vec![fresh.event_id]));
    // and the old marker is pruned by its time, the new one kept
    assert_eq!(store.prune_processed(Utc::now() - chrono::Duration::milliseconds(500), 10).await.unwrap(), 1);
    let again = store.apply(std::slice::from_ref(&fresh)).await.unwrap();
    assert_eq!(again.duplicates, vec![fresh.event_id]);
}
