#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The contract of [`LedgerStore`], written once and run against every backend.
//!
//! Each test body below is an `async fn` taking the store (or, when it needs the raw database,
//! the [`Harness`]); `contract!` instantiates it as `sqlite::<name>` (a temporary file, always
//! run) and `postgres::<name>` (a fresh database per test on the server named by
//! `CASHFLOW_TEST_POSTGRES_URL`; ignored when that variable is unset, see `build.rs`).

#[macro_use]
mod fixtures;

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use cashflow_domain::EventId;
use cashflow_domain::{
    Amount, BusinessDate, Category, Currency, Description, Entry, EntryId, EntryType, Merchant, MerchantId,
    MerchantName, MerchantTimeZone,
};
use cashflow_events::Event;
use cashflow_ledger::store::{EntryQuery, Idempotency, Recorded};
use cashflow_ledger::{LedgerStore, StoreError};
use fixtures::{key, now, recorded_event, registration, Harness};

contract! {
    store: [
        an_entry_reads_back_exactly_as_recorded,
        replaying_an_idempotent_write_returns_the_original_and_writes_nothing,
        reusing_an_idempotency_key_for_another_request_conflicts,
        an_entry_can_be_reversed_only_once,
        pages_walk_a_range_in_business_date_then_id_order,
        pages_follow_the_ids_bytes_whatever_their_version,
        the_outbox_hands_out_events_in_order_until_they_are_deleted,
        the_outbox_hands_out_named_events_only_while_they_are_unpublished,
        a_merchant_is_created_once_and_read_back,
        concurrent_writes_with_one_idempotency_key_record_one_entry,
        concurrent_reversals_of_one_entry_record_one_reversal,
        many_concurrent_writes_are_all_recorded_exactly_once,
        a_healthy_store_answers_pings,
    ],
    harness: [
        the_database_refuses_to_edit_or_delete_entries,
    ],
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
}

fn date(s: &str) -> BusinessDate {
    BusinessDate::parse(s).unwrap()
}

/// What the service stores: timestamps in whole microseconds.
fn new_merchant() -> Merchant {
    Merchant {
        id: MerchantId::new(),
        name: MerchantName::parse("Padaria Pão Quente").unwrap(),
        currency: Currency::BRL,
        time_zone: MerchantTimeZone::parse("America/Sao_Paulo").unwrap(),
        created_at: at("2020-01-01T12:00:00.123456Z"),
    }
}

async fn given_a_merchant(store: &Arc<dyn LedgerStore>) -> Merchant {
    let m = new_merchant();
    store.create_merchant(&m, &registration(&m)).await.unwrap();
    m
}

fn entry_on(m: &Merchant, day: &str, kind: EntryType, minor: i64) -> Entry {
    Entry {
        id: EntryId::new(),
        merchant_id: m.id,
        kind,
        amount: Amount::from_minor(minor).unwrap(),
        currency: m.currency,
        description: Description::parse("Venda balcão").unwrap(),
        category: Some(Category::parse("sales").unwrap()),
        occurred_at: at(&format!("{day}T15:04:05.678901Z")),
        business_date: date(day),
        recorded_at: now(),
        reversal_of: None,
        adjusts_date: None,
    }
}

async fn record(store: &Arc<dyn LedgerStore>, e: &Entry, idem: Option<&Idempotency>) -> Result<Recorded, StoreError> {
    store.record(e, idem, &recorded_event(e)).await
}

fn range(from: &str, to: &str, limit: u32) -> EntryQuery {
    EntryQuery { from: date(from), to: date(to), after: None, limit }
}

/// Every page of `query`, each resuming after the last entry of the one before, as a client
/// walks them.
async fn every_page(store: &Arc<dyn LedgerStore>, merchant: MerchantId, mut query: EntryQuery) -> Vec<Vec<Entry>> {
    let mut pages = Vec::new();
    loop {
        let page = store.entries(merchant, &query).await.unwrap();
        let Some(last) = page.last() else { return pages };
        query.after = Some((last.business_date, last.id));
        pages.push(page);
    }
}

// ---------------------------------------------------------------------------------------------
// The contract
// ---------------------------------------------------------------------------------------------

async fn an_entry_reads_back_exactly_as_recorded(store: Arc<dyn LedgerStore>) {
    // Given a merchant and entries with every optional field set or not, and instants on both
    // sides of 2000-01-01 (Postgres' epoch) with microseconds
    let m = given_a_merchant(&store).await;
    let mut sale = entry_on(&m, "1999-12-31", EntryType::Credit, 15_000);
    sale.occurred_at = at("1999-12-31T23:59:59.999999Z");
    let mut payment = entry_on(&m, "2026-11-23", EntryType::Debit, 4_050);
    payment.category = None;
    payment.description = Description::parse(&"é".repeat(Description::MAX_CHARS)).unwrap();
    let reversal = sale.reversal(EntryId::new(), None, m.time_zone, now()).unwrap();

    // When they are recorded
    for e in [&sale, &payment, &reversal] {
        assert_eq!(record(&store, e, None).await.unwrap(), Recorded::Created(e.clone()));
    }

    // Then each reads back field for field, only for its merchant
    for e in [&sale, &payment, &reversal] {
        assert_eq!(store.entry(m.id, e.id).await.unwrap().as_ref(), Some(e));
        assert_eq!(store.entry(MerchantId::new(), e.id).await.unwrap(), None);
    }
    assert_eq!(store.entry(m.id, EntryId::new()).await.unwrap(), None);
    let all = store.entries(m.id, &range("1999-01-01", "2099-12-31", 100)).await.unwrap();
    let mut expected = vec![sale, payment, reversal];
    expected.sort_by_key(|e| (e.business_date, e.id));
    assert_eq!(all, expected);
}

async fn replaying_an_idempotent_write_returns_the_original_and_writes_nothing(store: Arc<dyn LedgerStore>) {
    // Given an entry recorded under an idempotency key
    let m = given_a_merchant(&store).await;
    let original = entry_on(&m, "2026-11-23", EntryType::Credit, 15_000);
    let idem = key("sale-0001", "hash-a");
    assert_eq!(record(&store, &original, Some(&idem)).await.unwrap(), Recorded::Created(original.clone()));

    // When the same request is retried (the service mints a new id for each attempt)
    let retry = entry_on(&m, "2026-11-23", EntryType::Credit, 15_000);
    let replayed = record(&store, &retry, Some(&idem)).await.unwrap();

    // Then it is the original entry, and neither an entry nor an event was added
    assert_eq!(replayed, Recorded::Replayed(original.clone()));
    assert_eq!(store.entry(m.id, retry.id).await.unwrap(), None);
    assert_eq!(store.entries(m.id, &range("2026-11-23", "2026-11-23", 10)).await.unwrap(), vec![original]);
    assert_eq!(store.outbox_backlog().await.unwrap().count, 2, "the registration and one entry");

    // And keys are per merchant: another merchant may use the same one
    let other = given_a_merchant(&store).await;
    let theirs = entry_on(&other, "2026-11-23", EntryType::Credit, 15_000);
    assert_eq!(record(&store, &theirs, Some(&idem)).await.unwrap(), Recorded::Created(theirs));
}

async fn reusing_an_idempotency_key_for_another_request_conflicts(store: Arc<dyn LedgerStore>) {
    // Given an entry recorded under a key
    let m = given_a_merchant(&store).await;
    let first = entry_on(&m, "2026-11-23", EntryType::Credit, 15_000);
    record(&store, &first, Some(&key("k", "hash-a"))).await.unwrap();

    // When another request (another hash) comes with the same key
    let second = entry_on(&m, "2026-11-23", EntryType::Credit, 99_999);
    let result = record(&store, &second, Some(&key("k", "hash-b"))).await;

    // Then it conflicts and nothing is written
    assert!(matches!(result, Err(StoreError::IdempotencyConflict)), "{result:?}");
    assert_eq!(store.entry(m.id, second.id).await.unwrap(), None);
    assert_eq!(store.outbox_backlog().await.unwrap().count, 2);
}

async fn an_entry_can_be_reversed_only_once(store: Arc<dyn LedgerStore>) {
    // Given a reversed entry
    let m = given_a_merchant(&store).await;
    let original = entry_on(&m, "2026-11-23", EntryType::Credit, 15_000);
    record(&store, &original, None).await.unwrap();
    let reversal = original.reversal(EntryId::new(), None, m.time_zone, now()).unwrap();
    record(&store, &reversal, None).await.unwrap();

    // When it is reversed again
    let again = original.reversal(EntryId::new(), None, m.time_zone, now()).unwrap();
    let result = record(&store, &again, None).await;

    // Then the store refuses, and writes nothing
    assert!(matches!(result, Err(StoreError::AlreadyReversed)), "{result:?}");
    assert_eq!(store.entry(m.id, again.id).await.unwrap(), None);
    assert_eq!(store.outbox_backlog().await.unwrap().count, 3);
}

async fn pages_walk_a_range_in_business_date_then_id_order(store: Arc<dyn LedgerStore>) {
    // Given three entries on each of five days, recorded out of order, and another merchant's
    let m = given_a_merchant(&store).await;
    let other = given_a_merchant(&store).await;
    let days = ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23", "2026-11-24"];
    let mut all = Vec::new();
    for round in 0..3 {
        for day in days.iter().rev() {
            let e = entry_on(&m, day, if round % 2 == 0 { EntryType::Credit } else { EntryType::Debit }, 100 + round);
            record(&store, &e, None).await.unwrap();
            all.push(e);
        }
    }
    record(&store, &entry_on(&other, "2026-11-22", EntryType::Credit, 1), None).await.unwrap();
    let mut expected: Vec<Entry> = all
        .into_iter()
        .filter(|e| e.business_date >= date("2026-11-21") && e.business_date <= date("2026-11-23"))
        .collect();
    expected.sort_by_key(|e| (e.business_date, e.id));
    assert_eq!(expected.len(), 9);

    // When the middle three days are read two at a time, each page resuming after the last
    let pages = every_page(&store, m.id, range("2026-11-21", "2026-11-23", 2)).await;

    // Then the pages are the range in (business date, id) order, without gaps or repeats
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [2, 2, 2, 2, 1]);
    assert_eq!(pages.concat(), expected);

    // And a cursor in the middle of a day resumes strictly after it
    let mut query = range("2026-11-21", "2026-11-23", 3);
    query.after = Some((expected[4].business_date, expected[4].id));
    assert_eq!(store.entries(m.id, &query).await.unwrap(), expected[5..8]);
    // And a cursor before the range starts at the range
    query.after = Some((date("2026-11-01"), EntryId::new()));
    assert_eq!(store.entries(m.id, &query).await.unwrap(), expected[..3]);
}

async fn pages_follow_the_ids_bytes_whatever_their_version(store: Arc<dyn LedgerStore>) {
    // Given one day's entries whose ids share their first eight bytes (as UUIDv7s of one
    // millisecond may), have their first bit set, or are all zeros or all ones, recorded in no
    // particular order
    let m = given_a_merchant(&store).await;
    let ids = [
        "0193a5b2-7c1e-7d4a-ffff-000000000001",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "0193a5b2-7c1e-7d4a-0000-000000000002",
        "80000000-0000-4000-8000-000000000000",
        "00000000-0000-0000-0000-000000000000",
        "0193a5b2-7c1e-7d4a-8000-000000000000",
        "7fffffff-ffff-4fff-bfff-ffffffffffff",
        "0193a5b2-7c1e-7d4a-0000-000000000001",
    ];
    let mut expected = Vec::new();
    for id in ids {
        let e = Entry { id: EntryId::parse(id).unwrap(), ..entry_on(&m, "2026-11-22", EntryType::Credit, 100) };
        record(&store, &e, None).await.unwrap();
        expected.push(e);
    }
    expected.sort_by_key(|e| e.id);

    // When the day is read two at a time, cursors falling between ids that share their first
    // eight bytes
    let read = every_page(&store, m.id, range("2026-11-22", "2026-11-22", 2)).await;

    // Then every entry comes once, in the byte order of its id
    assert_eq!(read.concat(), expected);
}

/// A new merchant and three credits on 2026-11-23, written to `store`: the merchant and the
/// four events its outbox now holds, in write order (the registration first).
async fn a_merchant_and_three_entries(store: &dyn LedgerStore) -> (Merchant, Vec<Event>) {
    let m = new_merchant();
    let mut events = vec![registration(&m)];
    store.create_merchant(&m, &events[0]).await.unwrap();
    for minor in [1, 2, 3] {
        let e = entry_on(&m, "2026-11-23", EntryType::Credit, minor);
        let event = recorded_event(&e);
        store.record(&e, None, &event).await.unwrap();
        events.push(event);
    }
    (m, events)
}

async fn the_outbox_hands_out_events_in_order_until_they_are_deleted(store: Arc<dyn LedgerStore>) {
    // Given an empty outbox
    assert_eq!(store.outbox_backlog().await.unwrap(), cashflow_ledger::store::OutboxBacklog { count: 0, oldest: None });
    assert!(store.outbox_batch(10).await.unwrap().is_empty());

    // When a merchant and three entries are written
    let (m, events) = a_merchant_and_three_entries(&*store).await;

    // Then their events come out in write order, as published JSON
    let backlog = store.outbox_backlog().await.unwrap();
    assert_eq!(backlog.count, 4);
    assert_eq!(backlog.oldest, Some(m.created_at), "the registration is the oldest event");
    let first = store.outbox_batch(2).await.unwrap();
    let ids: Vec<String> = first.iter().map(|r| r.event_id.clone()).collect();
    assert_eq!(ids, [events[0].event_id.to_string(), events[1].event_id.to_string()]);
    assert_eq!(Event::from_json(&first[0].body).unwrap(), events[0]);
    assert_eq!(Event::from_json(&first[1].body).unwrap(), events[1]);
    assert!(first[0].seq < first[1].seq);

    // And deleting published ones leaves the rest
    store.delete_outbox(&first.iter().map(|r| r.seq).collect::<Vec<_>>()).await.unwrap();
    store.delete_outbox(&[]).await.unwrap();
    assert_eq!(store.outbox_backlog().await.unwrap().count, 2);
    let rest = store.outbox_batch(10).await.unwrap();
    let ids: Vec<String> = rest.iter().map(|r| r.event_id.clone()).collect();
    assert_eq!(ids, [events[2].event_id.to_string(), events[3].event_id.to_string()]);
    assert_eq!(Event::from_json(&rest[1].body).unwrap(), events[3]);

    store.delete_outbox(&rest.iter().map(|r| r.seq).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(store.outbox_backlog().await.unwrap(), cashflow_ledger::store::OutboxBacklog { count: 0, oldest: None });
}

async fn the_outbox_hands_out_named_events_only_while_they_are_unpublished(store: Arc<dyn LedgerStore>) {
    // Given a registration and three entries in the outbox
    let (_, events) = a_merchant_and_three_entries(&*store).await;

    // When the third and first entries' events are asked for, with an id never written
    let asked = [events[3].event_id, events[1].event_id, EventId::new()];
    let found = store.outbox_events(&asked).await.unwrap();

    // Then exactly those two come out, in commit order, as published JSON
    let ids: Vec<String> = found.iter().map(|r| r.event_id.clone()).collect();
    assert_eq!(ids, [events[1].event_id.to_string(), events[3].event_id.to_string()]);
    assert_eq!(Event::from_json(&found[1].body).unwrap(), events[3]);
    assert!(store.outbox_events(&[]).await.unwrap().is_empty());

    // And once deleted (published), they are not handed out again; the others stay
    store.delete_outbox(&found.iter().map(|r| r.seq).collect::<Vec<_>>()).await.unwrap();
    assert!(store.outbox_events(&asked).await.unwrap().is_empty());
    let rest: Vec<String> = store.outbox_batch(10).await.unwrap().iter().map(|r| r.event_id.clone()).collect();
    assert_eq!(rest, [events[0].event_id.to_string(), events[2].event_id.to_string()]);
}

async fn a_merchant_is_created_once_and_read_back(store: Arc<dyn LedgerStore>) {
    // Given no merchants
    assert_eq!(store.merchant_count().await.unwrap(), 0);
    let m = new_merchant();

    // When one is created, and created again
    store.create_merchant(&m, &registration(&m)).await.unwrap();
    let again = store.create_merchant(&m, &registration(&m)).await;

    // Then it reads back exactly, exists once, and announced itself once
    assert!(matches!(again, Err(StoreError::MerchantExists)), "{again:?}");
    assert_eq!(store.merchants().await.unwrap(), std::slice::from_ref(&m));
    assert_eq!(store.merchant(m.id).await.unwrap(), Some(m));
    assert_eq!(store.merchant(MerchantId::new()).await.unwrap(), None);
    assert_eq!(store.merchant_count().await.unwrap(), 1);
    assert_eq!(store.outbox_backlog().await.unwrap().count, 1);
}

async fn concurrent_writes_with_one_idempotency_key_record_one_entry(store: Arc<dyn LedgerStore>) {
    // Given a merchant
    let m = given_a_merchant(&store).await;

    // When 16 retries of one request race, each with its own entry id
    let idem = key("retry-storm", "hash-a");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (store, idem) = (store.clone(), idem.clone());
        let e = entry_on(&m, "2026-11-23", EntryType::Credit, 15_000);
        tasks.spawn(async move { record(&store, &e, Some(&idem)).await });
    }
    let results: Vec<Recorded> = tasks.join_all().await.into_iter().map(|r| r.unwrap()).collect();

    // Then exactly one created the entry and every other one replayed it
    let created: Vec<&Entry> =
        results.iter().filter_map(|r| if let Recorded::Created(e) = r { Some(e) } else { None }).collect();
    assert_eq!(created.len(), 1, "{results:?}");
    for r in &results {
        let (Recorded::Created(e) | Recorded::Replayed(e)) = r;
        assert_eq!(e, created[0]);
    }
    assert_eq!(store.entries(m.id, &range("2026-11-23", "2026-11-23", 100)).await.unwrap().len(), 1);
    assert_eq!(store.outbox_backlog().await.unwrap().count, 2);
}

async fn concurrent_reversals_of_one_entry_record_one_reversal(store: Arc<dyn LedgerStore>) {
    // Given an entry
    let m = given_a_merchant(&store).await;
    let original = entry_on(&m, "2026-11-23", EntryType::Credit, 15_000);
    record(&store, &original, None).await.unwrap();

    // When 8 reversals of it race
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        let reversal = original.reversal(EntryId::new(), None, m.time_zone, now()).unwrap();
        tasks.spawn(async move { record(&store, &reversal, None).await });
    }
    let results = tasks.join_all().await;

    // Then one wins and the others are told it is already reversed
    let created = results.iter().filter(|r| matches!(r, Ok(Recorded::Created(_)))).count();
    let refused = results.iter().filter(|r| matches!(r, Err(StoreError::AlreadyReversed))).count();
    assert_eq!((created, refused), (1, 7), "{results:?}");
    assert_eq!(store.entries(m.id, &range("2000-01-01", "2099-12-31", 100)).await.unwrap().len(), 2);
}

async fn many_concurrent_writes_are_all_recorded_exactly_once(store: Arc<dyn LedgerStore>) {
    // Given a merchant
    let m = given_a_merchant(&store).await;

    // When 64 tasks record 2,000 entries between them, a third of them under idempotency keys
    // that each task uses twice in a row (a retry)
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..64 {
        let (store, m) = (store.clone(), m.clone());
        tasks.spawn(async move {
            let mut created = Vec::new();
            for i in 0..2_000 / 64 + usize::from(task < 2_000 % 64) {
                let e = entry_on(&m, "2026-11-23", EntryType::Credit, 1 + i as i64);
                if i % 3 == 0 {
                    let idem = key(&format!("task-{task}-write-{i}"), "hash");
                    assert_eq!(record(&store, &e, Some(&idem)).await.unwrap(), Recorded::Created(e.clone()));
                    let retry = entry_on(&m, "2026-11-23", EntryType::Credit, 1 + i as i64);
                    assert_eq!(record(&store, &retry, Some(&idem)).await.unwrap(), Recorded::Replayed(e.clone()));
                } else {
                    assert_eq!(record(&store, &e, None).await.unwrap(), Recorded::Created(e.clone()));
                }
                created.push(e);
            }
            created
        });
    }
    let mut expected: Vec<Entry> = tasks.join_all().await.concat();
    assert_eq!(expected.len(), 2_000);

    // Then every acknowledged entry reads back, exactly once, with exactly one event each
    expected.sort_by_key(|e| (e.business_date, e.id));
    let stored = every_page(&store, m.id, range("2026-11-23", "2026-11-23", 500)).await;
    assert_eq!(stored.concat(), expected);
    assert_eq!(store.outbox_backlog().await.unwrap().count, 2_001, "the registration and one per entry");
}

async fn a_healthy_store_answers_pings(store: Arc<dyn LedgerStore>) {
    store.ping().await.unwrap();
}

async fn the_database_refuses_to_edit_or_delete_entries(harness: &Harness) {
    // Given a recorded entry
    let store = harness.store();
    let m = given_a_merchant(&store).await;
    let e = entry_on(&m, "2026-11-23", EntryType::Credit, 15_000);
    record(&store, &e, None).await.unwrap();

    // When someone edits or deletes entries behind the store's back
    let update = harness.execute_raw("UPDATE entries SET amount_minor = 1").await;
    let delete = harness.execute_raw("DELETE FROM entries").await;

    // Then the database itself refuses, and the entry is intact
    for result in [&update, &delete] {
        let err = result.as_ref().expect_err("the database must refuse");
        assert!(err.contains("reversal"), "{err}");
    }
    assert_eq!(store.entry(m.id, e.id).await.unwrap(), Some(e));
    // (and the set of ids is unchanged)
    let ids: BTreeSet<EntryId> =
        store.entries(m.id, &range("2026-11-23", "2026-11-23", 10)).await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 1);
}
