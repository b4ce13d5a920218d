#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Group commit in the ledger stores, one spec suite run against both backends: requests that
//! share one batch get exactly the answers they would have had one after the other, and a
//! failure stays with its request.
//!
//! To put requests in one batch, a test blocks the writers' inserts from another connection
//! (SQLite: it holds the write lock; Postgres: it locks the entries table): every writer (the
//! SQLite writer thread, the Postgres writer tasks) waits on it with a first record of its own
//! while the others pile up in the queue, and the next batch takes them all at once when the
//! lock is released. On Postgres, whether they really shared a transaction is read from the
//! rows' `xmin` (the id of the transaction that wrote them).
//!
//! `contract!` instantiates each body as `sqlite::<name>` and `postgres::<name>` (ignored
//! without `CASHFLOW_TEST_POSTGRES_URL`, see `build.rs`).

#[macro_use]
mod fixtures;

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use uuid::Uuid;

use cashflow_db::Backend;
use cashflow_ledger::postgres::WRITERS;
use cashflow_ledger::store::{Idempotency, Recorded};
use cashflow_ledger::{LedgerStore, SqliteLedgerStore, StoreError};
use fixtures::*;

contract! {
    store: [],
    harness: [
        each_request_of_a_batch_gets_the_answer_it_would_get_alone,
        a_batch_replays_and_conflicts_on_keys_as_if_its_requests_came_one_after_the_other,
        a_request_that_fails_unexpectedly_fails_alone,
        a_batch_of_good_writes_reads_back_exactly_with_its_events_in_arrival_order,
    ],
}

// ---------------------------------------------------------------------------------------------
// Putting writes in one batch
// ---------------------------------------------------------------------------------------------

/// A connection holding what the writers need to insert entries.
enum Blocker {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Blocker {
    async fn block(harness: &Harness) -> Self {
        match harness.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&harness.url).await.unwrap();
                sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.unwrap();
                Self::Sqlite(conn)
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&harness.url).await.unwrap();
                sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
                sqlx::query("LOCK TABLE ledger.entries IN SHARE MODE").execute(&mut conn).await.unwrap();
                Self::Postgres(conn)
            }
        }
    }

    async fn release(self) {
        match self {
            Self::Sqlite(mut conn) => sqlx::query("ROLLBACK").execute(&mut conn).await.map(drop).unwrap(),
            Self::Postgres(mut conn) => sqlx::query("ROLLBACK").execute(&mut conn).await.map(drop).unwrap(),
        }
    }
}

/// The writers draining the store's queue, each taking one batch at a time.
fn writers(harness: &Harness) -> u32 {
    match harness.backend {
        Backend::Sqlite => 1,
        Backend::Postgres => WRITERS,
    }
}

/// The outbox events [`in_one_batch`] writes besides the batch's: a merchant's registration and
/// one first record per writer.
fn events_of_the_first_records(harness: &Harness) -> u64 {
    1 + u64::from(writers(harness))
}

enum Write {
    Merchant(Merchant),
    Entry(Entry, Option<Idempotency>),
}

/// One write of a batch and the answer it got.
#[derive(Debug)]
enum Answer {
    Merchant(Result<(), StoreError>),
    Entry(Result<Recorded, StoreError>),
}

/// Runs `writes` so that they reach the writers together: blocks inserts while every writer is
/// busy with a first record of its own and the writes queue up behind them, then lets the
/// writers go. Returns the answers in `writes` order.
async fn in_one_batch(harness: &Harness, writes: Vec<Write>) -> Vec<Answer> {
    // Given inserts blocked elsewhere
    let store = harness.store();
    let other = given_a_merchant(&store).await;
    let blocker = Blocker::block(harness).await;

    // and every writer busy (waiting for that lock) with a first record
    let mut firsts = Vec::new();
    for _ in 0..writers(harness) {
        let store = store.clone();
        let e = sale(&other, 1);
        firsts.push(tokio::spawn(async move { store.record(&e, None, &recorded_event(&e)).await }));
        // One each: a writer that took two would leave the next write to the other alone.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // When the writes arrive meanwhile (in this order), and the lock is released
    let mut tasks = Vec::new();
    for write in writes {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            match write {
                Write::Merchant(m) => Answer::Merchant(store.create_merchant(&m, &registration(&m)).await),
                Write::Entry(e, idem) => Answer::Entry(store.record(&e, idem.as_ref(), &recorded_event(&e)).await),
            }
        }));
        // Queued in order: the batch keeps arrival order.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    blocker.release().await;
    for first in firsts {
        first.await.unwrap().unwrap();
    }

    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// What a write of a batch must have been told.
#[derive(Debug)]
enum Told<'a> {
    Created(&'a Entry),
    Replayed(&'a Entry),
    IdempotencyConflict,
    AlreadyReversed,
    Unavailable,
    MerchantCreated,
    MerchantExists,
}

/// Asserts that the `i`-th write was told `expected[i]`.
fn assert_told(answers: &[Answer], expected: &[Told<'_>]) {
    assert_eq!(answers.len(), expected.len(), "{answers:?}");
    for (i, (answer, told)) in answers.iter().zip(expected).enumerate() {
        let right = match (answer, told) {
            (Answer::Entry(Ok(Recorded::Created(e))), Told::Created(x)) => e == *x,
            (Answer::Entry(Ok(Recorded::Replayed(e))), Told::Replayed(x)) => e == *x,
            (Answer::Entry(Err(StoreError::IdempotencyConflict)), Told::IdempotencyConflict) => true,
            (Answer::Entry(Err(StoreError::AlreadyReversed)), Told::AlreadyReversed) => true,
            (Answer::Entry(Err(StoreError::Unavailable(_))), Told::Unavailable) => true,
            (Answer::Merchant(Ok(())), Told::MerchantCreated) => true,
            (Answer::Merchant(Err(StoreError::MerchantExists)), Told::MerchantExists) => true,
            _ => false,
        };
        assert!(right, "write {i}: expected {told:?}, got {answer:?}");
    }
}

/// How many transactions wrote these entries, where the database can tell (Postgres' `xmin`;
/// SQLite keeps no such record, and its single writer commits a batch as one transaction).
async fn transactions_that_wrote(harness: &Harness, entries: &[&Entry]) -> Option<i64> {
    if harness.backend != Backend::Postgres {
        return None;
    }
    let mut conn = sqlx::PgConnection::connect(&harness.url).await.unwrap();
    let ids: Vec<Uuid> = entries.iter().map(|e| *e.id.as_uuid()).collect();
    let n = sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM ledger.entries WHERE id = ANY($1)")
        .bind(ids)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    Some(n)
}

fn sorted(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort_by_key(|e| (e.business_date, e.id));
    entries
}

// ---------------------------------------------------------------------------------------------
// The specs
// ---------------------------------------------------------------------------------------------

async fn each_request_of_a_batch_gets_the_answer_it_would_get_alone(harness: &Harness) {
    let store = harness.store();

    // Given a merchant with an entry already reversed, an entry recorded under a key and an
    // entry not reversed yet
    let m = given_a_merchant(&store).await;
    let reversed = sale(&m, 1_000);
    store.record(&reversed, None, &recorded_event(&reversed)).await.unwrap();
    let reversal = reversed.reversal(EntryId::new(), None, m.time_zone, now()).unwrap();
    store.record(&reversal, None, &recorded_event(&reversal)).await.unwrap();
    let keyed = sale(&m, 2_000);
    store.record(&keyed, Some(&key("old-key", "hash-a")), &recorded_event(&keyed)).await.unwrap();
    let unreversed = sale(&m, 3_000);
    store.record(&unreversed, None, &recorded_event(&unreversed)).await.unwrap();

    // When one batch mixes good writes with refusals (second reversals, which a Postgres batch
    // statement cannot take), including keys first used in the batch, and merchants
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
        harness,
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
    assert_told(
        &answers,
        &[
            Told::Created(&good_1),
            Told::IdempotencyConflict,
            Told::AlreadyReversed,
            Told::Created(&new_key),
            Told::Replayed(&new_key),
            Told::IdempotencyConflict,
            Told::Created(&first_reversal),
            Told::AlreadyReversed,
            Told::Replayed(&keyed),
            Told::MerchantExists,
            Told::MerchantCreated,
            Told::Created(&entry_of_new_merchant),
            Told::Created(&good_2),
        ],
    );

    // And exactly the accepted writes are stored, each with its event
    let expected = sorted(vec![reversed, reversal, keyed, unreversed, good_1, new_key, first_reversal, good_2]);
    assert_eq!(entries_of(&store, &m).await, expected);
    assert_eq!(entries_of(&store, &new_merchant_in_batch).await, vec![entry_of_new_merchant]);
    // the first records' + 2 registrations (m, the new merchant) + 8 + 1 entries
    assert_eq!(store.outbox_backlog().await.unwrap().count, events_of_the_first_records(harness) + 2 + 8 + 1);
}

async fn a_batch_replays_and_conflicts_on_keys_as_if_its_requests_came_one_after_the_other(harness: &Harness) {
    let store = harness.store();

    // Given a merchant with an entry recorded under a key
    let m = given_a_merchant(&store).await;
    let keyed = sale(&m, 2_000);
    store.record(&keyed, Some(&key("old-key", "hash-a")), &recorded_event(&keyed)).await.unwrap();

    // When one batch reuses that key, and uses a new key several times (the first use arriving
    // after a later key in sort order, so that arrival, not key order, must decide)
    let good_1 = sale(&m, 11);
    let conflicting_old_key = sale(&m, 12);
    let new_key = sale(&m, 13);
    let replay_of_new_key = sale(&m, 13);
    let conflict_on_new_key = sale(&m, 14);
    let replay_of_old_key = sale(&m, 2_000);
    let other_key = sale(&m, 15);
    let good_2 = sale(&m, 16);
    let writes = vec![
        Write::Entry(good_1.clone(), None),
        Write::Entry(conflicting_old_key.clone(), Some(key("old-key", "hash-b"))),
        Write::Entry(replay_of_new_key.clone(), Some(key("new-key", "hash-n"))),
        Write::Entry(new_key.clone(), Some(key("new-key", "hash-other"))),
        Write::Entry(conflict_on_new_key.clone(), Some(key("new-key", "hash-n"))),
        Write::Entry(replay_of_old_key.clone(), Some(key("old-key", "hash-a"))),
        Write::Entry(other_key.clone(), Some(key("a-key", "hash-x"))),
        Write::Entry(good_2.clone(), None),
    ];
    let answers = in_one_batch(harness, writes).await;

    // Then each got its own answer, as if the requests had come one after the other: the first
    // use of a key wins it, later ones replay or conflict
    let told = [
        Told::Created(&good_1),
        Told::IdempotencyConflict,
        Told::Created(&replay_of_new_key),
        Told::IdempotencyConflict,
        Told::Replayed(&replay_of_new_key),
        Told::Replayed(&keyed),
        Told::Created(&other_key),
        Told::Created(&good_2),
    ];
    assert_told(&answers, &told);

    // And exactly the accepted entries are stored, each with its event, by one transaction
    let created = [&good_1, &replay_of_new_key, &other_key, &good_2];
    if let Some(n) = transactions_that_wrote(harness, &created).await {
        assert_eq!(n, 1, "the batch was one statement");
    }
    let expected = sorted(vec![keyed, good_1.clone(), replay_of_new_key.clone(), other_key.clone(), good_2.clone()]);
    assert_eq!(entries_of(&store, &m).await, expected);
    // the first records' + 1 registration (m) + 1 + 4 entries
    assert_eq!(store.outbox_backlog().await.unwrap().count, events_of_the_first_records(harness) + 1 + 1 + 4);

    // And the keys used in the batch work afterwards as if written alone
    let retry = sale(&m, 13);
    assert_eq!(
        store.record(&retry, Some(&key("new-key", "hash-n")), &recorded_event(&retry)).await.unwrap(),
        Recorded::Replayed(replay_of_new_key)
    );
}

async fn a_request_that_fails_unexpectedly_fails_alone(harness: &Harness) {
    let store = harness.store();

    // Given a merchant
    let m = given_a_merchant(&store).await;

    // When a batch holds good writes around one the database rejects for another reason than
    // the expected refusals (an entry of an unknown merchant breaks a foreign key)
    let before = sale(&m, 1);
    let orphan = sale(&new_merchant(), 2);
    let after = sale(&m, 3);
    let answers = in_one_batch(
        harness,
        vec![Write::Entry(before.clone(), None), Write::Entry(orphan.clone(), None), Write::Entry(after.clone(), None)],
    )
    .await;

    // Then only that request fails, and the others are recorded
    assert_told(&answers, &[Told::Created(&before), Told::Unavailable, Told::Created(&after)]);
    assert_eq!(entries_of(&store, &m).await, sorted(vec![before, after]));
    // the first records' + 1 registration (m) + 2 entries
    assert_eq!(store.outbox_backlog().await.unwrap().count, events_of_the_first_records(harness) + 1 + 2);
}

async fn a_batch_of_good_writes_reads_back_exactly_with_its_events_in_arrival_order(harness: &Harness) {
    let store = harness.store();

    // Given a merchant
    let m = given_a_merchant(&store).await;

    // When one batch records entries with and without optional fields, whose keys sort in
    // another order than they arrive in
    let mut plain = sale(&m, 1);
    plain.category = None;
    plain.description = Description::parse("aspas \" e barra \\ e emoji 🍞").unwrap();
    let keyed_z = sale(&m, 999_999_999_999_999);
    let mut debit = sale(&m, 3);
    debit.kind = EntryType::Debit;
    let keyed_a = sale(&m, 4);
    let writes = vec![
        Write::Entry(plain.clone(), None),
        Write::Entry(keyed_z.clone(), Some(key("z-1", "h-1"))),
        Write::Entry(debit.clone(), None),
        Write::Entry(keyed_a.clone(), Some(key("a-1", "h-2"))),
    ];
    let answers = in_one_batch(harness, writes).await;

    // Then each is created by one transaction and reads back field for field
    let written = [&plain, &keyed_z, &debit, &keyed_a];
    assert_told(&answers, &written.map(Told::Created));
    for e in written {
        assert_eq!(store.entry(m.id, e.id).await.unwrap().as_ref(), Some(e));
    }
    if let Some(n) = transactions_that_wrote(harness, &written).await {
        assert_eq!(n, 1, "the batch was one statement");
    }

    // And its idempotency keys work as if written alone
    let retry = sale(&m, 999_999_999_999_999);
    assert_eq!(
        store.record(&retry, Some(&key("z-1", "h-1")), &recorded_event(&retry)).await.unwrap(),
        Recorded::Replayed(keyed_z.clone())
    );

    // And the events follow the arrival order, as published JSON
    let events = store.outbox_batch(100).await.unwrap();
    let bodies: Vec<Event> = events.iter().map(|r| Event::from_json(&r.body).unwrap()).collect();
    let entry_ids: Vec<EntryId> = bodies
        .iter()
        .filter_map(|e| if let EventBody::EntryRecorded(r) = &e.body { Some(r.entry_id) } else { None })
        .filter(|id| written.iter().any(|e| e.id == *id))
        .collect();
    assert_eq!(entry_ids, [plain.id, keyed_z.id, debit.id, keyed_a.id]);
    for e in written {
        let event = bodies.iter().find(|b| matches!(&b.body, EventBody::EntryRecorded(r) if r.entry_id == e.id));
        let expected = recorded_event(e);
        assert_eq!(event.map(|ev| (&ev.body, ev.occurred_at)), Some((&expected.body, expected.occurred_at)));
    }
}

// ---------------------------------------------------------------------------------------------
// Where each backend's writers run
// ---------------------------------------------------------------------------------------------

#[test]
fn the_sqlite_writer_outlives_the_runtime_that_opened_the_store() {
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

#[test]
#[cfg_attr(not(postgres_tests), ignore = "set CASHFLOW_TEST_POSTGRES_URL to run against Postgres")]
fn a_postgres_store_whose_writer_tasks_are_gone_answers_unavailable() {
    // Given a store whose writer tasks died with the runtime that ran them
    let first = tokio::runtime::Runtime::new().unwrap();
    let (harness, m) = first.block_on(async {
        let harness = Harness::postgres().await;
        let m = given_a_merchant(&harness.store()).await;
        (harness, m)
    });
    drop(first);

    // When it is asked to record
    let second = tokio::runtime::Runtime::new().unwrap();
    let e = sale(&m, 1);
    let store: Arc<dyn LedgerStore> = harness.store();
    let result = second.block_on(store.record(&e, None, &recorded_event(&e)));

    // Then the caller is told the store is unavailable (no panic, no hang)
    assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");
}
