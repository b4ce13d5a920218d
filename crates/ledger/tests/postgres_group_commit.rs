#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Group commit in the Postgres ledger store: records written by one batch statement get exactly
//! the answers they would have had one after the other, and a failure stays with its request.
//!
//! To put records in one batch, a test locks the entries table from another connection: every
//! writer task blocks on it with a first record while the others pile up in the queue, and the
//! next batch takes them all at once when the lock is released. Whether they really shared a
//! transaction is read from the rows' `xmin` (the id of the transaction that wrote them).
//!
//! Needs a server: run with `CASHFLOW_TEST_POSTGRES_URL` set (see `build.rs`); otherwise these
//! tests are ignored.

mod fixtures;

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use uuid::Uuid;

use cashflow_db::TestDatabase;
use cashflow_ledger::postgres::WRITERS;
use cashflow_ledger::store::{Idempotency, Recorded};
use cashflow_ledger::{LedgerStore, PostgresLedgerStore, StoreError};
use fixtures::*;

struct Harness {
    store: Arc<dyn LedgerStore>,
    url: String,
    _db: TestDatabase,
}

async fn harness() -> Harness {
    let admin = std::env::var("CASHFLOW_TEST_POSTGRES_URL")
        .expect("CASHFLOW_TEST_POSTGRES_URL (an admin URL such as postgres://postgres@127.0.0.1:5432/postgres)");
    let db = TestDatabase::create(&admin).await.unwrap();
    let url = db.url().to_owned();
    let store = Arc::new(PostgresLedgerStore::open(&url).await.unwrap());
    Harness { store, url, _db: db }
}

type Write = (Entry, Option<Idempotency>);

/// Runs `writes` so that they reach the writers together: locks the entries table while every
/// writer is busy with a first record of its own and the writes queue up behind them, then lets
/// the writers go. Returns the answers in `writes` order.
async fn in_one_batch(harness: &Harness, writes: Vec<Write>) -> Vec<Result<Recorded, StoreError>> {
    // Given the entries table locked against inserts elsewhere
    let mut blocker = sqlx::PgConnection::connect(&harness.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("LOCK TABLE ledger.entries IN SHARE MODE").execute(&mut blocker).await.unwrap();

    // and every writer busy (waiting for that lock) with a first record
    let other = given_a_merchant(&harness.store).await;
    let mut firsts = Vec::new();
    for _ in 0..WRITERS {
        let store = harness.store.clone();
        let e = sale(&other, 1);
        firsts.push(tokio::spawn(async move { store.record(&e, None, &recorded_event(&e)).await }));
        // One each: a writer that took two would leave the next write to the other alone.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // When the writes arrive meanwhile (in this order), and the lock is released
    let mut tasks = Vec::new();
    for (e, idem) in writes {
        let store = harness.store.clone();
        tasks.push(tokio::spawn(async move { store.record(&e, idem.as_ref(), &recorded_event(&e)).await }));
        // Queued in order: the batch keeps arrival order.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    for first in firsts {
        first.await.unwrap().unwrap();
    }

    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// How many transactions wrote these entries.
async fn transactions_that_wrote(harness: &Harness, entries: &[&Entry]) -> i64 {
    let mut conn = sqlx::PgConnection::connect(&harness.url).await.unwrap();
    let ids: Vec<Uuid> = entries.iter().map(|e| *e.id.as_uuid()).collect();
    sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM ledger.entries WHERE id = ANY($1)")
        .bind(ids)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

fn sorted(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort_by_key(|e| (e.business_date, e.id));
    entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(postgres_tests), ignore = "set CASHFLOW_TEST_POSTGRES_URL to run against Postgres")]
async fn a_batch_replays_and_conflicts_on_keys_as_if_its_requests_came_one_after_the_other() {
    let harness = harness().await;
    let store = harness.store.clone();

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
    let answers = in_one_batch(
        &harness,
        vec![
            (good_1.clone(), None),
            (conflicting_old_key.clone(), Some(key("old-key", "hash-b"))),
            (replay_of_new_key.clone(), Some(key("new-key", "hash-n"))),
            (new_key.clone(), Some(key("new-key", "hash-other"))),
            (conflict_on_new_key.clone(), Some(key("new-key", "hash-n"))),
            (replay_of_old_key.clone(), Some(key("old-key", "hash-a"))),
            (other_key.clone(), Some(key("a-key", "hash-x"))),
            (good_2.clone(), None),
        ],
    )
    .await;

    // Then each got its own answer, as if the requests had come one after the other: the first
    // use of a key wins it, later ones replay or conflict
    let mut answers = answers.into_iter();
    let mut next = || answers.next().unwrap();
    assert!(matches!(next(), Ok(Recorded::Created(e)) if e == good_1));
    assert!(matches!(next(), Err(StoreError::IdempotencyConflict)));
    assert!(matches!(next(), Ok(Recorded::Created(e)) if e == replay_of_new_key));
    assert!(matches!(next(), Err(StoreError::IdempotencyConflict)));
    assert!(matches!(next(), Ok(Recorded::Replayed(e)) if e == replay_of_new_key));
    assert!(matches!(next(), Ok(Recorded::Replayed(e)) if e == keyed));
    assert!(matches!(next(), Ok(Recorded::Created(e)) if e == other_key));
    assert!(matches!(next(), Ok(Recorded::Created(e)) if e == good_2));

    // And exactly the accepted entries are stored, each with its event, by one transaction
    let created = [&good_1, &replay_of_new_key, &other_key, &good_2];
    assert_eq!(transactions_that_wrote(&harness, &created).await, 1, "the batch was one statement");
    let expected = sorted(vec![keyed, good_1.clone(), replay_of_new_key.clone(), other_key.clone(), good_2.clone()]);
    assert_eq!(entries_of(&store, &m).await, expected);
    // 2 registrations (m, the blocked first records' merchant) + WRITERS first records + 1 + 4
    assert_eq!(store.outbox_backlog().await.unwrap().count, 2 + u64::from(WRITERS) + 1 + 4);

    // And the keys used in the batch work afterwards as if written alone
    let retry = sale(&m, 13);
    assert_eq!(
        store.record(&retry, Some(&key("new-key", "hash-n")), &recorded_event(&retry)).await.unwrap(),
        Recorded::Replayed(replay_of_new_key)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(postgres_tests), ignore = "set CASHFLOW_TEST_POSTGRES_URL to run against Postgres")]
async fn each_request_of_a_refused_batch_gets_the_answer_it_would_get_alone() {
    let harness = harness().await;
    let store = harness.store.clone();

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

    // When one batch mixes good writes with refusals the batch statement cannot take (second
    // reversals), and keys first used in the batch
    let good_1 = sale(&m, 11);
    let conflicting_old_key = sale(&m, 12);
    let duplicate_reversal = reversed.reversal(EntryId::new(), None, m.time_zone, now()).unwrap();
    let new_key = sale(&m, 13);
    let replay_of_new_key = sale(&m, 13);
    let conflict_on_new_key = sale(&m, 14);
    let first_reversal = unreversed.reversal(EntryId::new(), None, m.time_zone, now()).unwrap();
    let second_reversal = unreversed.reversal(EntryId::new(), None, m.time_zone, now()).unwrap();
    let replay_of_old_key = sale(&m, 2_000);
    let good_2 = sale(&m, 16);
    let answers = in_one_batch(
        &harness,
        vec![
            (good_1.clone(), None),
            (conflicting_old_key.clone(), Some(key("old-key", "hash-b"))),
            (duplicate_reversal.clone(), None),
            (new_key.clone(), Some(key("new-key", "hash-n"))),
            (replay_of_new_key.clone(), Some(key("new-key", "hash-n"))),
            (conflict_on_new_key.clone(), Some(key("new-key", "hash-other"))),
            (first_reversal.clone(), None),
            (second_reversal.clone(), None),
            (replay_of_old_key.clone(), Some(key("old-key", "hash-a"))),
            (good_2.clone(), None),
        ],
    )
    .await;

    // Then each got its own answer, as if the requests had come one after the other
    let mut answers = answers.into_iter();
    let mut next = || answers.next().unwrap();
    assert!(matches!(next(), Ok(Recorded::Created(e)) if e == good_1));
    assert!(matches!(next(), Err(StoreError::IdempotencyConflict)));
    assert!(matches!(next(), Err(StoreError::AlreadyReversed)));
    assert!(matches!(next(), Ok(Recorded::Created(e)) if e == new_key));
    assert!(matches!(next(), Ok(Recorded::Replayed(e)) if e == new_key));
    assert!(matches!(next(), Err(StoreError::IdempotencyConflict)));
    assert!(matches!(next(), Ok(Recorded::Created(e)) if e == first_reversal));
    assert!(matches!(next(), Err(StoreError::AlreadyReversed)));
    assert!(matches!(next(), Ok(Recorded::Replayed(e)) if e == keyed));
    assert!(matches!(next(), Ok(Recorded::Created(e)) if e == good_2));

    // And exactly the accepted writes are stored, each with its event
    let expected = sorted(vec![reversed, reversal, keyed, unreversed, good_1, new_key, first_reversal, good_2]);
    assert_eq!(entries_of(&store, &m).await, expected);
    // 2 registrations + WRITERS first records + 4 + 4
    assert_eq!(store.outbox_backlog().await.unwrap().count, 2 + u64::from(WRITERS) + 4 + 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(postgres_tests), ignore = "set CASHFLOW_TEST_POSTGRES_URL to run against Postgres")]
async fn a_request_that_fails_unexpectedly_fails_alone() {
    let harness = harness().await;
    let store = harness.store.clone();

    // Given a merchant
    let m = given_a_merchant(&store).await;

    // When a batch holds good writes around one the database rejects for another reason than
    // the expected refusals (an entry of an unknown merchant breaks a foreign key)
    let before = sale(&m, 1);
    let orphan = sale(&new_merchant(), 2);
    let after = sale(&m, 3);
    let answers =
        in_one_batch(&harness, vec![(before.clone(), None), (orphan.clone(), None), (after.clone(), None)]).await;

    // Then only that request fails, and the others are recorded
    assert!(matches!(&answers[0], Ok(Recorded::Created(e)) if *e == before), "{answers:?}");
    assert!(matches!(&answers[1], Err(StoreError::Unavailable(_))), "{answers:?}");
    assert!(matches!(&answers[2], Ok(Recorded::Created(e)) if *e == after), "{answers:?}");
    assert_eq!(entries_of(&store, &m).await, sorted(vec![before, after]));
    // 2 registrations + WRITERS first records + 2
    assert_eq!(store.outbox_backlog().await.unwrap().count, 2 + u64::from(WRITERS) + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(postgres_tests), ignore = "set CASHFLOW_TEST_POSTGRES_URL to run against Postgres")]
async fn a_batch_of_good_writes_reads_back_exactly_with_its_events_in_arrival_order() {
    let harness = harness().await;
    let store = harness.store.clone();

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
        (plain.clone(), None),
        (keyed_z.clone(), Some(key("z-1", "h-1"))),
        (debit.clone(), None),
        (keyed_a.clone(), Some(key("a-1", "h-2"))),
    ];
    let answers = in_one_batch(&harness, writes).await;

    // Then each is created by one transaction and reads back field for field
    let written = [&plain, &keyed_z, &debit, &keyed_a];
    for (answer, e) in answers.iter().zip(written) {
        assert!(matches!(answer, Ok(Recorded::Created(created)) if created == e), "{answer:?}");
        assert_eq!(store.entry(m.id, e.id).await.unwrap().as_ref(), Some(e));
    }
    assert_eq!(transactions_that_wrote(&harness, &written).await, 1, "the batch was one statement");

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

#[test]
#[cfg_attr(not(postgres_tests), ignore = "set CASHFLOW_TEST_POSTGRES_URL to run against Postgres")]
fn a_store_whose_writer_tasks_are_gone_answers_unavailable() {
    // Given a store whose writer tasks died with the runtime that ran them
    let first = tokio::runtime::Runtime::new().unwrap();
    let (harness, m) = first.block_on(async {
        let harness = harness().await;
        let m = given_a_merchant(&harness.store).await;
        (harness, m)
    });
    drop(first);

    // When it is asked to record
    let second = tokio::runtime::Runtime::new().unwrap();
    let e = sale(&m, 1);
    let result = second.block_on(harness.store.record(&e, None, &recorded_event(&e)));

    // Then the caller is told the store is unavailable (no panic, no hang)
    assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");
}
