#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A row of `ledger.db` that no longer decodes (written by hand, by another tool, by a bug) is a
//! typed [`StoreError::Corrupt`] for its reader, which the API answers as a logged 500 problem:
//! never a panic of the request or of the process.
//!
//! SQLite stores any value in any column (the tables are not `STRICT`), so the corrupt rows
//! here are inserted through a raw connection; entries cannot be updated (a trigger refuses it).

mod fixtures;

use cashflow_ledger::store::EntryQuery;
use cashflow_ledger::StoreError;
use fixtures::*;

fn whole_range() -> EntryQuery {
    let (from, to) = (BusinessDate::parse("2000-01-01").unwrap(), BusinessDate::parse("2099-12-31").unwrap());
    EntryQuery { from, to, after: None, limit: 500 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_whose_amount_is_text_reads_as_corrupt_not_as_a_panic() {
    // Given a merchant and, written behind the store's back, an entry whose amount is text
    let harness = Harness::sqlite().await;
    let store = harness.store();
    let m = given_a_merchant(&store).await;
    let id = EntryId::new();
    harness
        .execute_raw(&format!(
            "INSERT INTO entries (id, merchant, type, amount_minor, currency, description, occurred_at,
                                  business_date, recorded_at)
             VALUES (unhex('{}'), (SELECT seq FROM merchants WHERE id = '{}'), 0, 'a lot', 'BRL', 'Venda', 0,
                     20261123, 0)",
            id.as_uuid().simple(),
            m.id
        ))
        .await
        .unwrap();

    // When it is read on its own and in a page
    let one = tokio::spawn({
        let store = store.clone();
        async move { store.entry(m.id, id).await }
    })
    .await;
    let page = tokio::spawn({
        let store = store.clone();
        async move { store.entries(m.id, &whole_range()).await }
    })
    .await;

    // Then both reads return a corruption error naming the column, and nothing panicked
    let one = one.expect("reading a corrupt entry panicked");
    assert!(matches!(&one, Err(StoreError::Corrupt(what)) if what.contains("amount")), "{one:?}");
    let page = page.expect("reading a page with a corrupt entry panicked");
    assert!(matches!(&page, Err(StoreError::Corrupt(what)) if what.contains("amount")), "{page:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_whose_creation_time_is_text_reads_as_corrupt_not_as_a_panic() {
    // Given a merchant row, written behind the store's back, whose creation time is text
    let harness = Harness::sqlite().await;
    let store = harness.store();
    let id = MerchantId::new();
    harness
        .execute_raw(&format!(
            "INSERT INTO merchants (id, name, currency, time_zone, created_at)
             VALUES ('{id}', 'Padaria', 'BRL', 'America/Sao_Paulo', 'yesterday')"
        ))
        .await
        .unwrap();

    // When it is read
    let read = tokio::spawn(async move { store.merchant(id).await }).await;

    // Then the read returns a corruption error naming the column, and nothing panicked
    let read = read.expect("reading a corrupt merchant panicked");
    assert!(matches!(&read, Err(StoreError::Corrupt(what)) if what.contains("created_at")), "{read:?}");
}
