#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Group commit in the SQLite ledger store: requests that share one transaction get exactly the
//! answers they would have had one after the other, and a failure stays with its request.
//!
//! To put requests in one batch, a test holds SQLite's write lock from another connection: the
//! writer task waits on it with a first request while the others pile up in its queue, and the
//! next transaction takes them all at once when the lock is released.

mod fixtures;

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;

use cashflow_ledger::store::{Idempotency, Recorded};
use cashflow_ledger::{LedgerStore, SqliteLedgerStore, StoreError};
use fixtures::*;

struct Harness {
    store: Arc<dyn LedgerStore>,
    url: String,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let store = Arc::new(SqliteLedgerStore::open(&url).await.unwrap());
    Harness { store, url, _dir: dir }
}

/// One write of a batch and the answer it got.
#[derive(Debug)]
enum Answer {
    Merchant(Result<(), StoreError>),
    Entry(Result<Recorded, StoreError>),
}

/// Runs `writes` so that they share one transaction: holds the write lock while they queue up
/// behind a first request, then lets the writer go. Returns the answers in `writes` order.
async fn in_one_batch(harness: &Harness, writes: Vec<Write>) -> Vec<Answer> {
    // Given the write lock held elsewhere
    let mut blocker = sqlx::SqliteConnection::connect(&harness.url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut blocker).await.unwrap();

    // and the writer busy (waiting for that lock) with a first request
    let store = harness.store.clone();
    let first = tokio::spawn(async move {
        let m = new_merchant();
        store.create_merchant(&m, &registration(&m)).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // When the writes arrive meanwhile (in this order), and the lock is released
    let mut tasks = Vec::new();
    for write in writes {
        let store = harness.store.clone();
        tasks.push(tokio::spawn(async move {
            match write {
                Write::Merchant(m) => Answer::Merchant(store.create_merchant(&m, &registration(&m)).await),
                Write::Entry(e, idem) => Answer::Entry(store.record(&e, idem.as_ref(), &recorded_event(&e)).await),
            }
        }));
        // Queued in order: the writer applies them in arrival order.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    first.await.unwrap().unwrap();

    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

enum Write {
    Merchant(Merchant),
    Entry(Entry, Option<Idempotency>),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_request_of_a_batch_gets_the_answer_it_would_get_alone() {
    let harness = harness().await;
    let store = harness.store.clone();

    // Given a merchant with an entry already reversed and an entry recorded under a key
    let m = new_merchant();
    store.create_merchant(&m, &registration(&m)).await.unwrap();
    let reversed = sale(&m, 1_000);
    store.record(&reversed, None, &recorded_event(&reversed)).await.unwrap();
    let reversal = reversed.reversal(EntryId::new(), None, m.time_zone, now()).unwrap();
    store.record(&reversal, None, &recorded_event(&reversal)).await.unwrap();
    let keyed = sale(&m, 2_000);
    store.record(&keyed, Some(&key("old-key", "hash-a")), &recorded_event(&keyed)).await.unwrap();
    let unreversed = sale(&m, 3_000);
    store.record(&unreversed, None, &recorded_event(&unreversed)).await.unwrap();

    // When one batch mixes good writes with refusals, including a key first used in the batch
    let good_1 = sale(&m, 11);
    let conflicting_old_key = sale(&m, 12);
    let duplicate_reversal = reversed.reversal(EntryId::new(), None, m.time_zone, now()).unwrap();
    let new_key = sale(&m, 13);
    let replay_of_new_key = sale(&m, 13);
    let conflict_on_new_key = sale(&m, 14);
    let first_reversal = unreversed.reversal(EntryId::new(), None, m.time_zone, now()).unwrap();
    let second_reversal = unreversed.reversal(EntryId::new(), None, m.time_zone, now()).unwrap();
    let replay_of_old_key = sale(&m, 2_000);
    let existing_merchant = m.clone();
    let new_merchant_in_batch = new_merchant();
    let entry_of_new_merchant = sale(&new_merchant_in_batch, 15);
    let good_2 = sale(&m, 16);
    let answers = in_one_batch(
        &harness,
        vec![
            Write::Entry(good_1.clone(), None),
            Write::Entry(conflicting_old_key.clone(), Some(key("old-key", "hash-b"))),
            Write::Entry(duplicate_reversal.clone(), None),
            Write::Entry(new_key.clone(), Some(key("new-key", "hash-n"))),
            Write::Entry(replay_of_new_key.clone(), Some(key("new-key", "hash-n"))),
            Write::Entry(conflict_on_new_key.clone(), Some(key("new-key", "hash-other"))),
            Write::Entry(first_reversal.clone(), None),
            Write::Entry(second_reversal.clone(), None),
            Write::Entry(replay_of_old_key.clone(), Some(key("old-key", "hash-a"))),
            Write::Merchant(existing_merchant),
            Write::Merchant(new_merchant_in_batch.clone()),
            Write::Entry(entry_of_new_merchant.clone(), None),
            Write::Entry(good_2.clone(), None),
        ],
    )
    .await;

    // Then each got its own answer, as if the requests had come one after the other
    let mut answers = answers.into_iter();
    let mut next = || answers.next().unwrap();
    assert!(matches!(next(), Answer::Entry(Ok(Recorded::Created(e))) if e == good_1));
    assert!(matches!(next(), Answer::Entry(Err(StoreError::IdempotencyConflict))));
    assert!(matches!(next(), Answer::Entry(Err(StoreError::AlreadyReversed))));
    assert!(matches!(next(), Answer::Entry(Ok(Recorded::Created(e))) if e == new_key));
    assert!(matches!(next(), Answer::Entry(Ok(Recorded::Replayed(e))) if e == new_key));
    assert!(matches!(next(), Answer::Entry(Err(StoreError::IdempotencyConflict))));
    assert!(matches!(next(), Answer::Entry(Ok(Recorded::Created(e))) if e == first_reversal));
    assert!(matches!(next(), Answer::Entry(Err(StoreError::AlreadyReversed))));
    assert!(matches!(next(), Answer::Entry(Ok(Recorded::Replayed(e))) if e == keyed));
    assert!(matches!(next(), Answer::Merchant(Err(StoreError::MerchantExists))));
    assert!(matches!(next(), Answer::Merchant(Ok(()))));
    assert!(matches!(next(), Answer::Entry(Ok(Recorded::Created(e))) if e == entry_of_new_merchant));
    assert!(matches!(next(), Answer::Entry(Ok(Recorded::Created(e))) if e == good_2));

    // And exactly the accepted writes are stored, each with its event
    let mut expected = vec![reversed, reversal, keyed, unreversed, good_1, new_key, first_reversal, good_2];
    expected.sort_by_key(|e| (e.business_date, e.id));
    assert_eq!(entries_of(&store, &m).await, expected);
    assert_eq!(entries_of(&store, &new_merchant_in_batch).await, vec![entry_of_new_merchant]);
    // 3 registrations (m, the blocked first request's, the new merchant) + 8 + 1 entries
    assert_eq!(store.outbox_backlog().await.unwrap().count, 3 + 8 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_that_fails_unexpectedly_fails_alone() {
    let harness = harness().await;
    let store = harness.store.clone();

    // Given a merchant
    let m = new_merchant();
    store.create_merchant(&m, &registration(&m)).await.unwrap();

    // When a batch holds good writes around one the database rejects for another reason than
    // the expected refusals (an entry of an unknown merchant breaks a foreign key)
    let before = sale(&m, 1);
    let orphan = sale(&new_merchant(), 2);
    let after = sale(&m, 3);
    let answers = in_one_batch(
        &harness,
        vec![Write::Entry(before.clone(), None), Write::Entry(orphan.clone(), None), Write::Entry(after.clone(), None)],
    )
    .await;

    // Then only that request fails, and the others are recorded
    assert!(matches!(&answers[0], Answer::Entry(Ok(Recorded::Created(e))) if *e == before), "{answers:?}");
    assert!(matches!(&answers[1], Answer::Entry(Err(StoreError::Unavailable(_)))), "{answers:?}");
    assert!(matches!(&answers[2], Answer::Entry(Ok(Recorded::Created(e))) if *e == after), "{answers:?}");
    let mut expected = vec![before, after];
    expected.sort_by_key(|e| (e.business_date, e.id));
    assert_eq!(entries_of(&store, &m).await, expected);
    assert_eq!(store.outbox_backlog().await.unwrap().count, 2 + 2, "two registrations and two entries");
}

#[test]
fn the_writer_outlives_the_runtime_that_opened_the_store() {
    // Given a store opened on a runtime that is then shut down
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let first = tokio::runtime::Runtime::new().unwrap();
    let store = first.block_on(SqliteLedgerStore::open(&url)).unwrap();
    drop(first);

    // When it is asked to write from another runtime
    let second = tokio::runtime::Runtime::new().unwrap();
    let m = new_merchant();
    let result = second.block_on(store.create_merchant(&m, &registration(&m)));

    // Then the write is committed: the writer is a thread of its own, not a task of a runtime
    assert!(result.is_ok(), "{result:?}");
    let reopened = second.block_on(SqliteLedgerStore::open(&url)).unwrap();
    assert_eq!(second.block_on(reopened.merchant(m.id)).unwrap(), Some(m));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_of_good_writes_reads_back_exactly_with_its_events_in_order() {
    let harness = harness().await;
    let store = harness.store.clone();

    // Given a merchant
    let m = new_merchant();
    store.create_merchant(&m, &registration(&m)).await.unwrap();

    // When one batch records entries with and without optional fields (written together)
    let mut plain = sale(&m, 1);
    plain.category = None;
    plain.description = Description::parse("aspas \" e barra \\ e emoji 🍞").unwrap();
    let keyed = sale(&m, 999_999_999_999_999);
    let mut debit = sale(&m, 3);
    debit.kind = EntryType::Debit;
    let writes = vec![
        Write::Entry(plain.clone(), None),
        Write::Entry(keyed.clone(), Some(key("k-1", "h-1"))),
        Write::Entry(debit.clone(), None),
    ];
    let answers = in_one_batch(&harness, writes).await;

    // Then each is created and reads back field for field
    for (answer, e) in answers.iter().zip([&plain, &keyed, &debit]) {
        assert!(matches!(answer, Answer::Entry(Ok(Recorded::Created(created))) if created == e), "{answer:?}");
        assert_eq!(store.entry(m.id, e.id).await.unwrap().as_ref(), Some(e));
    }
    // And its idempotency key works as if written alone
    let retry = sale(&m, 999_999_999_999_999);
    assert_eq!(
        store.record(&retry, Some(&key("k-1", "h-1")), &recorded_event(&retry)).await.unwrap(),
        Recorded::Replayed(keyed.clone())
    );
    // And the events follow the write order
    let events = store.outbox_batch(10).await.unwrap();
    let ids: Vec<String> = events.iter().map(|r| r.event_id.clone()).collect();
    assert_eq!(ids.len(), 2 + 3, "two registrations and three entries");
    let bodies: Vec<Event> = events.iter().map(|r| Event::from_json(&r.body).unwrap()).collect();
    let entry_ids: Vec<EntryId> = bodies
        .iter()
        .filter_map(|e| if let EventBody::EntryRecorded(r) = &e.body { Some(r.entry_id) } else { None })
        .collect();
    assert_eq!(entry_ids, [plain.id, keyed.id, debit.id]);
}
