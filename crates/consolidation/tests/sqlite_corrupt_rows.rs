#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A row of `consolidation.db` that does not decode (a hand edit, a disk error, another
//! version's data) is a typed [`StoreError::Corrupt`] from the SQLite store, which the API
//! turns into a logged 500 problem: a read never panics on what it finds in the file.
//!
//! Each test writes its corrupt row straight into the database file, next to the store.

use sqlx::sqlite::SqlitePool;

use cashflow_consolidation::{ConsolidationStore, SqliteConsolidationStore, StoreError};
use cashflow_domain::{BusinessDate, MerchantId};

/// A store on a fresh file, and a raw connection pool on the same file.
struct Corruptible {
    store: SqliteConsolidationStore,
    raw: SqlitePool,
    _dir: tempfile::TempDir,
}

impl Corruptible {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("consolidation.db").display());
        let store = SqliteConsolidationStore::open(&url).await.unwrap();
        let raw = SqlitePool::connect(&url).await.unwrap();
        Self { store, raw, _dir: dir }
    }

    /// Writes one row of `daily_totals` as given, SQL literals included.
    async fn day_row(&self, merchant: MerchantId, date: &str, credits: &str, debits: &str, count: &str) {
        let sql = format!(
            "INSERT INTO daily_totals (merchant_id, business_date, total_credits, total_debits, entry_count)
             VALUES ('{merchant}', '{date}', {credits}, {debits}, {count})"
        );
        sqlx::query(&sql).execute(&self.raw).await.unwrap();
    }

    async fn merchant_row(&self, merchant: MerchantId, currency: &str, as_of: &str) {
        let sql =
            format!("INSERT INTO merchants (merchant_id, currency, as_of) VALUES ('{merchant}', {currency}, {as_of})");
        sqlx::query(&sql).execute(&self.raw).await.unwrap();
    }
}

fn date(s: &str) -> BusinessDate {
    BusinessDate::parse(s).unwrap()
}

fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "expected a corrupt-row error, got {result:?}");
}

#[tokio::test]
async fn a_day_whose_total_is_not_an_integer_is_a_corrupt_row_not_a_panic() {
    // Given a day whose credits are text
    let db = Corruptible::new().await;
    let m = MerchantId::new();
    db.day_row(m, "2026-11-23", "'lots'", "0", "1").await;

    // When its report is read, then the store says the row is corrupt
    assert_corrupt(db.store.days(m, date("2026-11-23"), date("2026-11-23")).await);
}

#[tokio::test]
async fn an_earlier_day_that_is_not_an_integer_corrupts_the_opening_balance() {
    // Given a day before the range whose debits are a real number
    let db = Corruptible::new().await;
    let m = MerchantId::new();
    db.day_row(m, "2026-11-20", "100", "2.5", "1").await;

    // When a later range is read, then its opening balance cannot be computed
    assert_corrupt(db.store.days(m, date("2026-11-23"), date("2026-11-24")).await);
}

#[tokio::test]
async fn a_negative_entry_count_is_a_corrupt_row_not_zero_entries() {
    // Given a day with a negative entry count
    let db = Corruptible::new().await;
    let m = MerchantId::new();
    db.day_row(m, "2026-11-23", "100", "0", "-3").await;

    // When it is read, then it is not reported as a day without entries
    assert_corrupt(db.store.days(m, date("2026-11-23"), date("2026-11-23")).await);
}

#[tokio::test]
async fn a_day_whose_date_is_not_a_date_is_a_corrupt_row() {
    let db = Corruptible::new().await;
    let m = MerchantId::new();
    db.day_row(m, "2026-11-2x", "100", "0", "1").await;

    assert_corrupt(db.store.days(m, date("2026-11-01"), date("2026-11-30")).await);
}

#[tokio::test]
async fn a_merchant_whose_as_of_is_not_an_integer_is_a_corrupt_row_not_a_panic() {
    // Given a merchant whose freshness is text
    let db = Corruptible::new().await;
    let m = MerchantId::new();
    db.merchant_row(m, "'BRL'", "'yesterday'").await;

    // When its books are read, then the store says the row is corrupt
    assert_corrupt(db.store.merchant(m).await);
}

#[tokio::test]
async fn a_merchant_whose_currency_is_not_text_is_a_corrupt_row_not_a_panic() {
    let db = Corruptible::new().await;
    let m = MerchantId::new();
    db.merchant_row(m, "986", "0").await;

    assert_corrupt(db.store.merchant(m).await);
}
