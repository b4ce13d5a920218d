#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `LedgerStore::day_totals`, the ledger's own totals per business date that consolidation is
//! reconciled with, on both backends (Postgres ignored unless `CASHFLOW_TEST_POSTGRES_URL`).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Duration, Utc};

use cashflow_db::TestDatabase;
use cashflow_domain::{
    Amount, BusinessDate, Currency, DayTotals, Description, EntryType, MerchantId, MerchantName, MerchantTimeZone,
    NewEntry,
};
use cashflow_ledger::{Ledger, LedgerStore, PostgresLedgerStore, SqliteLedgerStore};

async fn given_entries_on_three_days(store: Arc<dyn LedgerStore>) {
    // Given a merchant with credits, debits and a reversal over three days, and another merchant
    let ledger = Ledger::new(store.clone());
    let utc = MerchantTimeZone::parse("UTC").unwrap();
    let mut merchants = Vec::new();
    for name in ["Padaria", "Vizinho"] {
        let m = ledger.create_merchant(MerchantName::parse(name).unwrap(), Currency::BRL, utc).await.unwrap();
        merchants.push(m.id);
    }
    let mut expected: BTreeMap<BusinessDate, DayTotals> = BTreeMap::new();
    let mut first = None;
    for i in 0..12i64 {
        let kind = if i % 4 == 0 { EntryType::Debit } else { EntryType::Credit };
        let occurred_at = Utc::now() - Duration::days(i % 3);
        let new = NewEntry {
            kind,
            amount: Amount::from_minor(1_000 + i).unwrap(),
            description: Description::parse("venda").unwrap(),
            category: None,
            occurred_at: Some(occurred_at),
        };
        let entry = match ledger.record(merchants[0], new.clone(), None, None).await.unwrap() {
            cashflow_ledger::store::Recorded::Created(e) | cashflow_ledger::store::Recorded::Replayed(e) => e,
        };
        expected.entry(entry.business_date).or_default().post(kind, entry.amount).unwrap();
        first.get_or_insert(entry.id);
        ledger.record(merchants[1], new, None, None).await.unwrap();
    }
    let reversal = ledger.reverse(merchants[0], first.unwrap(), None, None).await.unwrap();
    expected.entry(reversal.business_date).or_default().post(reversal.kind, reversal.amount).unwrap();

    // When the day totals of a range are asked
    let today = BusinessDate::of(Utc::now(), utc);
    let from = BusinessDate::of(Utc::now() - Duration::days(30), utc);
    let totals: BTreeMap<_, _> = store.day_totals(merchants[0], from, today).await.unwrap().into_iter().collect();

    // Then they are the sums of that merchant's entries, per day, reversals included
    assert_eq!(totals, expected);
    assert_eq!(totals.len(), 3);
    // And a range without entries is empty, a range of one day has that day only
    assert!(store.day_totals(merchants[0], from, from).await.unwrap().is_empty());
    let one = store.day_totals(merchants[0], today, today).await.unwrap();
    assert_eq!(one, vec![(today, expected[&today])]);
    assert!(store.day_totals(MerchantId::new(), from, today).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_day_totals_are_the_sums_of_each_business_date() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    given_entries_on_three_days(Arc::new(SqliteLedgerStore::open(&url).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "set CASHFLOW_TEST_POSTGRES_URL to run against Postgres")]
async fn postgres_day_totals_are_the_sums_of_each_business_date() {
    let admin = std::env::var("CASHFLOW_TEST_POSTGRES_URL").unwrap();
    let db = TestDatabase::create(&admin).await.unwrap();
    given_entries_on_three_days(Arc::new(PostgresLedgerStore::open(db.url()).await.unwrap())).await;
}
