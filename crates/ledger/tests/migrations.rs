#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The ledger's migrations run on an existing database: one migrated by the release before
//! adjustments and reopening (migrations 1 and 2), holding a merchant, an entry and a close,
//! opens with the current store, keeps every row as it was, has its close in the audit trail
//! and takes adjustments and reopens. SQLite always; Postgres when `CASHFLOW_TEST_POSTGRES_URL`
//! is set.

mod fixtures;

use cashflow_db::MigrationSource;
use cashflow_ledger::store::{DayAction, Recorded, ReopenDay};
use cashflow_ledger::{LedgerStore, PostgresLedgerStore, SqliteLedgerStore};
use fixtures::*;

const SQLITE_BEFORE_ADJUSTMENTS: &[MigrationSource] = &[
    MigrationSource { version: 1, description: "ledger", sql: include_str!("../migrations/sqlite/0001_ledger.sql") },
    MigrationSource {
        version: 2,
        description: "day close",
        sql: include_str!("../migrations/sqlite/0002_day_close.sql"),
    },
];

const POSTGRES_BEFORE_ADJUSTMENTS: &[MigrationSource] = &[
    MigrationSource { version: 1, description: "ledger", sql: include_str!("../migrations/postgres/0001_ledger.sql") },
    MigrationSource {
        version: 2,
        description: "day close",
        sql: include_str!("../migrations/postgres/0002_day_close.sql"),
    },
];

fn date(s: &str) -> BusinessDate {
    BusinessDate::parse(s).unwrap()
}

/// What the older release wrote: a merchant closed through the 23rd and a sale on the 22nd.
const MERCHANT: &str = "0193a5b2-7c1e-7d4a-9f00-1b2c3d4e5f61";
const ENTRY: &str = "0193a5b2-7c1e-7d4a-9f00-1b2c3d4e5f63";

async fn then_the_old_rows_read_as_before_and_an_adjustment_is_taken(store: &dyn LedgerStore) {
    let merchant = MerchantId::parse(MERCHANT).unwrap();
    let old = store.entry(merchant, EntryId::parse(ENTRY).unwrap()).await.unwrap().expect("the old entry");
    assert_eq!((old.business_date, old.adjusts_date, old.amount.minor()), (date("2026-11-22"), None, 15_000));
    assert_eq!(store.closed_through(merchant).await.unwrap(), Some(date("2026-11-23")));

    let m = store.merchant(merchant).await.unwrap().unwrap();
    let adjustment = Entry { business_date: date("2026-11-22"), ..sale(&m, 700) }
        .adjusted_into(date("2026-11-24"), date("2026-11-22"));
    let recorded = store.record(&adjustment, None, &recorded_event(&adjustment)).await.unwrap();
    assert_eq!(recorded, Recorded::Created(adjustment.clone()));
    assert_eq!(store.entry(merchant, adjustment.id).await.unwrap(), Some(adjustment));

    let audit = store.day_audit(merchant, date("2026-11-01"), date("2026-11-30")).await.unwrap();
    let trail: Vec<_> =
        audit.iter().map(|a| (a.action, a.date, a.closed_through_before, a.closed_through_after)).collect();
    assert_eq!(trail, vec![(DayAction::Close, date("2026-11-23"), None, Some(date("2026-11-23")))]);
    let reopen = ReopenDay {
        merchant_id: merchant,
        date: date("2026-11-23"),
        reopened_at: now(),
        reopened_by: "gerente".into(),
        reason: "conferência".into(),
    };
    store.reopen_day(&reopen).await.unwrap();
    assert_eq!(store.closed_through(merchant).await.unwrap(), Some(date("2026-11-22")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_ledger_of_the_release_before_adjustments_and_reopening_migrates_in_place() {
    // Given a ledger.db migrated and written by the release before adjustments and reopening
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let pool = cashflow_db::open_sqlite(&url, 1).await.unwrap();
    cashflow_db::migrate_sqlite(&pool, SQLITE_BEFORE_ADJUSTMENTS).await.unwrap();
    for sql in [
        format!(
            "INSERT INTO merchants (id, name, currency, time_zone, created_at, closed_through)
             VALUES ('{MERCHANT}', 'Padaria', 'BRL', 'America/Sao_Paulo', 0, '2026-11-23')"
        ),
        format!(
            "INSERT INTO entries (id, merchant_id, type, amount_minor, currency, description, occurred_at,
                                  business_date, recorded_at)
             VALUES ('{ENTRY}', '{MERCHANT}', 'credit', 15000, 'BRL', 'Venda', 0, '2026-11-22', 0)"
        ),
        format!(
            "INSERT INTO day_closes (merchant_id, business_date, closed_at, closed_by, credits_minor, debits_minor,
                                     entry_count, expected_balance_minor)
             VALUES ('{MERCHANT}', '2026-11-23', 0, 'operator', 0, 0, 0, 15000)"
        ),
    ] {
        sqlx::query(&sql).execute(&pool).await.unwrap();
    }
    pool.close().await;

    // When the current store opens it
    let store = SqliteLedgerStore::open(&url).await.unwrap();

    // Then
    then_the_old_rows_read_as_before_and_an_adjustment_is_taken(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "set CASHFLOW_TEST_POSTGRES_URL to run against Postgres")]
async fn a_postgres_ledger_of_the_release_before_adjustments_and_reopening_migrates_in_place() {
    // Given a ledger schema migrated and written by the release before adjustments and reopening
    let admin = std::env::var("CASHFLOW_TEST_POSTGRES_URL").unwrap();
    let db = cashflow_db::TestDatabase::create(&admin).await.unwrap();
    let pool = cashflow_db::open_postgres(db.url(), 1, "ledger").await.unwrap();
    cashflow_db::migrate_postgres(&pool, POSTGRES_BEFORE_ADJUSTMENTS).await.unwrap();
    for sql in [
        format!(
            "INSERT INTO merchants (id, name, currency, time_zone, created_at, closed_through)
             VALUES ('{MERCHANT}', 'Padaria', 'BRL', 'America/Sao_Paulo', now(), '2026-11-23')"
        ),
        format!(
            "INSERT INTO entries (id, merchant_id, type, amount_minor, currency, description, occurred_at,
                                  business_date, recorded_at)
             VALUES ('{ENTRY}', '{MERCHANT}', 'credit', 15000, 'BRL', 'Venda', now(), '2026-11-22', now())"
        ),
        format!(
            "INSERT INTO day_closes (merchant_id, business_date, closed_at, closed_by, credits_minor, debits_minor,
                                     entry_count, expected_balance_minor)
             VALUES ('{MERCHANT}', '2026-11-23', now(), 'operator', 0, 0, 0, 15000)"
        ),
    ] {
        sqlx::query(&sql).execute(&pool).await.unwrap();
    }
    pool.close().await;

    // When the current store opens it
    let store = PostgresLedgerStore::open(db.url()).await.unwrap();

    // Then
    then_the_old_rows_read_as_before_and_an_adjustment_is_taken(&store).await;
}
