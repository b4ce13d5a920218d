#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The ledger's migrations run on an existing database: one migrated by the release before
//! adjustments and reopening (migrations 1 and 2), holding a merchant, an entry and a close,
//! opens with the current store, keeps every row as it was, has its close in the audit trail
//! and takes adjustments and reopens. SQLite always; Postgres when `CASHFLOW_TEST_POSTGRES_URL`
//! is set. And a ledger made by the schema before compact entries (SQLite: migrations 1 to 4,
//! converted by 5; Postgres: migrations 1 to 5, converted by 6) converts in place and answers
//! every query the API serves as before.

mod fixtures;

use cashflow_db::MigrationSource;
use cashflow_ledger::store::{DayAction, EntryQuery, Recorded, ReopenDay};
use cashflow_ledger::{LedgerStore, PostgresLedgerStore, SqliteLedgerStore, StoreError};
use fixtures::*;

/// A migration of this crate's `dialect`, from its file.
macro_rules! migration {
    ($dialect:literal, $version:literal, $description:literal, $file:literal) => {
        MigrationSource {
            version: $version,
            description: $description,
            sql: include_str!(concat!("../migrations/", $dialect, "/", $file)),
        }
    };
}

/// The schema's migrations of earlier releases, in order: a database migrated through the
/// first n of them is what the release of the n-th left.
const SQLITE: [MigrationSource; 4] = [
    migration!("sqlite", 1, "ledger", "0001_ledger.sql"),
    migration!("sqlite", 2, "day close", "0002_day_close.sql"),
    migration!("sqlite", 3, "adjusts date", "0003_adjusts_date.sql"),
    migration!("sqlite", 4, "day audit", "0004_day_audit.sql"),
];
const POSTGRES: [MigrationSource; 5] = [
    migration!("postgres", 1, "ledger", "0001_ledger.sql"),
    migration!("postgres", 2, "day close", "0002_day_close.sql"),
    migration!("postgres", 3, "adjusts date", "0003_adjusts_date.sql"),
    migration!("postgres", 4, "day audit", "0004_day_audit.sql"),
    migration!("postgres", 5, "partial unique indexes", "0005_partial_unique_indexes.sql"),
];

/// Before adjustments and reopening: migrations 1 and 2.
const SQLITE_BEFORE_ADJUSTMENTS: &[MigrationSource] = SQLITE.split_at(2).0;
const POSTGRES_BEFORE_ADJUSTMENTS: &[MigrationSource] = POSTGRES.split_at(2).0;

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

// ---------------------------------------------------------------------------------------------
// Compact entries (SQLite's migration 5, Postgres's 6): a ledger made by the schema before it
// converts in place.
// ---------------------------------------------------------------------------------------------

/// Before compact entries: SQLite's migrations 1 to 4, Postgres's 1 to 5.
const SQLITE_BEFORE_COMPACT_ENTRIES: &[MigrationSource] = &SQLITE;
const POSTGRES_BEFORE_COMPACT_ENTRIES: &[MigrationSource] = &POSTGRES;

/// The events the old ledger left in its outbox, unpublished.
const PENDING_EVENTS: [&str; 2] = ["0193a5b2-7c1e-7d4a-9f00-1b2c3d4e5f71", "0193a5b2-7c1e-7d4a-9f00-1b2c3d4e5f72"];

/// What the release before compact entries wrote, as the domain values it stored.
struct OldLedger {
    merchants: Vec<Merchant>,
    entries: Vec<Entry>,
    /// (merchant, key, request hash, the entry it recorded)
    keys: Vec<(MerchantId, String, String, Entry)>,
}

/// Two merchants; entries over five days, with idempotency keys, reversals and adjustments; the
/// first merchant closed through the 21st, reopened from the 21st and closed through the 22nd;
/// two events still in the outbox.
fn old_ledger() -> OldLedger {
    let merchants = vec![new_merchant(), new_merchant()];
    let (mut entries, mut keys) = (Vec::new(), Vec::new());
    for (n, m) in merchants.iter().enumerate() {
        for i in 0..40_i64 {
            let day = format!("2026-11-{:02}", 20 + i % 5);
            let mut e = Entry { business_date: date(&day), ..sale(m, 100 + i * 37 + n as i64) };
            if i % 3 == 0 {
                e.kind = EntryType::Debit;
                e.category = None;
            }
            if i % 7 == 0 {
                e = e.adjusted_into(date(&day), date("2026-11-19"));
            }
            if i % 4 == 0 {
                keys.push((m.id, format!("key-{n}-{i}"), format!("{:064x}", i + 1), e.clone()));
            }
            if i % 5 == 0 {
                let reversal = Entry {
                    id: EntryId::new(),
                    kind: e.kind.opposite(),
                    reversal_of: Some(e.id),
                    description: Description::parse("Estorno").unwrap(),
                    ..e.clone()
                };
                entries.push(e);
                entries.push(reversal);
            } else {
                entries.push(e);
            }
        }
    }
    OldLedger { merchants, entries, keys }
}

async fn write_old_sqlite_ledger(pool: &sqlx::SqlitePool, old: &OldLedger) {
    for m in &old.merchants {
        sqlx::query("INSERT INTO merchants (id, name, currency, time_zone, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
            .bind(m.id.to_string())
            .bind(m.name.as_str())
            .bind(m.currency.code())
            .bind(m.time_zone.name())
            .bind(m.created_at.timestamp_micros())
            .execute(pool)
            .await
            .unwrap();
    }
    for e in &old.entries {
        let key = old.keys.iter().find(|(_, _, _, k)| k.id == e.id);
        sqlx::query(
            "INSERT INTO entries (id, merchant_id, type, amount_minor, currency, description, category, occurred_at,
                                  business_date, recorded_at, reversal_of, idempotency_key, request_hash, adjusts_date)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )
        .bind(e.id.to_string())
        .bind(e.merchant_id.to_string())
        .bind(e.kind.as_str())
        .bind(e.amount.minor())
        .bind(e.currency.code())
        .bind(e.description.as_str())
        .bind(e.category.as_ref().map(|c| c.as_str().to_owned()))
        .bind(e.occurred_at.timestamp_micros())
        .bind(e.business_date.to_string())
        .bind(e.recorded_at.timestamp_micros())
        .bind(e.reversal_of.map(|id| id.to_string()))
        .bind(key.map(|(_, k, _, _)| k.clone()))
        .bind(key.map(|(_, _, h, _)| h.clone()))
        .bind(e.adjusts_date.map(|d| d.to_string()))
        .execute(pool)
        .await
        .unwrap();
    }
    let m = old.merchants[0].id;
    for sql in [
        format!(
            "INSERT INTO day_closes (merchant_id, business_date, closed_at, closed_by, credits_minor, debits_minor,
                                     entry_count, expected_balance_minor, counted_cash_minor, note)
             VALUES ('{m}', '2026-11-21', 1, 'gerente', 10, 20, 3, -10, 0, 'ok'),
                    ('{m}', '2026-11-22', 3, 'gerente', 30, 40, 5, -20, NULL, NULL)"
        ),
        format!(
            "INSERT INTO day_audit (merchant_id, action, business_date, at, by, reason, closed_through_before,
                                    closed_through_after)
             VALUES ('{m}', 'close', '2026-11-21', 1, 'gerente', 'ok', NULL, '2026-11-21'),
                    ('{m}', 'reopen', '2026-11-21', 2, 'gerente', 'faltou', '2026-11-21', '2026-11-20'),
                    ('{m}', 'close', '2026-11-22', 3, 'gerente', NULL, '2026-11-20', '2026-11-22')"
        ),
        format!("UPDATE merchants SET closed_through = '2026-11-22' WHERE id = '{m}'"),
        format!(
            "INSERT INTO outbox (event_id, body, created_at) VALUES ('{}', '{{}}', 1), ('{}', '{{}}', 2)",
            PENDING_EVENTS[0], PENDING_EVENTS[1]
        ),
    ] {
        sqlx::query(&sql).execute(pool).await.unwrap();
    }
}

/// The same ledger, as the Postgres schema before compact entries held it.
async fn write_old_postgres_ledger(pool: &sqlx::PgPool, old: &OldLedger) {
    for m in &old.merchants {
        sqlx::query("INSERT INTO merchants (id, name, currency, time_zone, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(m.id.as_uuid())
            .bind(m.name.as_str())
            .bind(m.currency.code())
            .bind(m.time_zone.name())
            .bind(m.created_at)
            .execute(pool)
            .await
            .unwrap();
    }
    for e in &old.entries {
        let key = old.keys.iter().find(|(_, _, _, k)| k.id == e.id);
        sqlx::query(
            "INSERT INTO entries (id, merchant_id, type, amount_minor, currency, description, category, occurred_at,
                                  business_date, recorded_at, reversal_of, idempotency_key, request_hash, adjusts_date)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(e.id.as_uuid())
        .bind(e.merchant_id.as_uuid())
        .bind(e.kind.as_str())
        .bind(e.amount.minor())
        .bind(e.currency.code())
        .bind(e.description.as_str())
        .bind(e.category.as_ref().map(|c| c.as_str().to_owned()))
        .bind(e.occurred_at)
        .bind(e.business_date.naive())
        .bind(e.recorded_at)
        .bind(e.reversal_of.map(|id| *id.as_uuid()))
        .bind(key.map(|(_, k, _, _)| k.clone()))
        .bind(key.map(|(_, _, h, _)| h.clone()))
        .bind(e.adjusts_date.map(|d| d.naive()))
        .execute(pool)
        .await
        .unwrap();
    }
    let m = old.merchants[0].id;
    let at = |s: u32| format!("'2026-11-2{s} 23:00:00+00'");
    for sql in [
        format!(
            "INSERT INTO day_closes (merchant_id, business_date, closed_at, closed_by, credits_minor, debits_minor,
                                     entry_count, expected_balance_minor, counted_cash_minor, note)
             VALUES ('{m}', '2026-11-21', {}, 'gerente', 10, 20, 3, -10, 0, 'ok'),
                    ('{m}', '2026-11-22', {}, 'gerente', 30, 40, 5, -20, NULL, NULL)",
            at(1),
            at(3)
        ),
        format!(
            "INSERT INTO day_audit (merchant_id, action, business_date, at, by, reason, closed_through_before,
                                    closed_through_after)
             VALUES ('{m}', 'close', '2026-11-21', {}, 'gerente', 'ok', NULL, '2026-11-21'),
                    ('{m}', 'reopen', '2026-11-21', {}, 'gerente', 'faltou', '2026-11-21', '2026-11-20'),
                    ('{m}', 'close', '2026-11-22', {}, 'gerente', NULL, '2026-11-20', '2026-11-22')",
            at(1),
            at(2),
            at(3)
        ),
        format!("UPDATE merchants SET closed_through = '2026-11-22' WHERE id = '{m}'"),
        format!(
            "INSERT INTO outbox (event_id, body, created_at) VALUES ('{}', '{{}}', now()), ('{}', '{{}}', now())",
            PENDING_EVENTS[0], PENDING_EVENTS[1]
        ),
    ] {
        sqlx::query(&sql).execute(pool).await.unwrap();
    }
}

/// Every query the store serves, on the converted `old` ledger: what it wrote reads back alike,
/// its keys, reversals, closes, audit trail and outbox work as before, and new writes work.
async fn then_every_query_answers_as_before(store: &dyn LedgerStore, old: &OldLedger) {
    // every merchant reads back as it was
    for m in &old.merchants {
        assert_eq!(store.merchant(m.id).await.unwrap().as_ref(), Some(m));
    }
    assert_eq!(store.merchant_count().await.unwrap(), 2);

    // every entry reads back by id, for its merchant only
    let (from, to) = (date("2026-11-01"), date("2026-11-30"));
    for e in &old.entries {
        assert_eq!(store.entry(e.merchant_id, e.id).await.unwrap().as_ref(), Some(e));
        let other = old.merchants.iter().find(|m| m.id != e.merchant_id).unwrap();
        assert_eq!(store.entry(other.id, e.id).await.unwrap(), None);
    }
    for m in &old.merchants {
        let mut expected: Vec<Entry> = old.entries.iter().filter(|e| e.merchant_id == m.id).cloned().collect();
        expected.sort_by_key(|e| (e.business_date, e.id));

        // pages by cursor walk them in (business date, id) order, from any start
        let mut walked = Vec::new();
        let mut after = None;
        loop {
            let page = store.entries(m.id, &EntryQuery { from, to, after, limit: 7 }).await.unwrap();
            let Some(last) = page.last() else { break };
            after = Some((last.business_date, last.id));
            walked.extend(page);
        }
        assert_eq!(walked, expected);
        let one_day = store
            .entries(m.id, &EntryQuery { from: date("2026-11-22"), to: date("2026-11-22"), after: None, limit: 500 })
            .await
            .unwrap();
        assert_eq!(
            one_day,
            expected.iter().filter(|e| e.business_date == date("2026-11-22")).cloned().collect::<Vec<_>>()
        );

        // the day totals are the entries' sums
        let mut sums: std::collections::BTreeMap<BusinessDate, cashflow_domain::DayTotals> = Default::default();
        for e in &expected {
            sums.entry(e.business_date).or_default().post(e.kind, e.amount).unwrap();
        }
        assert_eq!(store.day_totals(m.id, from, to).await.unwrap(), sums.into_iter().collect::<Vec<_>>());
    }

    // an idempotency key replays its entry, or conflicts with another request (on an open day:
    // a write for a closed day is refused before its key is looked at, as before)
    let open = |(m, _, _, e): &&(MerchantId, String, String, Entry)| {
        *m != old.merchants[0].id || e.business_date > date("2026-11-22")
    };
    assert!(old.keys.iter().filter(open).count() >= 10);
    for (merchant, key_text, hash, original) in old.keys.iter().filter(open) {
        let again = Entry { id: EntryId::new(), ..original.clone() };
        let replay = store.record(&again, Some(&key(key_text, hash)), &recorded_event(&again)).await.unwrap();
        assert_eq!(replay, Recorded::Replayed(original.clone()), "{merchant} {key_text}");
        let other = store.record(&again, Some(&key(key_text, "another request")), &recorded_event(&again)).await;
        assert!(matches!(other, Err(StoreError::IdempotencyConflict)), "{other:?}");
    }

    // a reversed entry cannot be reversed again; another one can, once
    let m1 = &old.merchants[1];
    let reversed = old.entries.iter().find(|e| e.merchant_id == m1.id && e.reversal_of.is_some()).unwrap();
    let original = old.entries.iter().find(|e| Some(e.id) == reversed.reversal_of).unwrap();
    let not_reversed = old
        .entries
        .iter()
        .find(|e| {
            e.merchant_id == m1.id && e.reversal_of.is_none() && old.entries.iter().all(|r| r.reversal_of != Some(e.id))
        })
        .unwrap();
    for (target, refused) in [(original, true), (not_reversed, false)] {
        let reversal =
            Entry { id: EntryId::new(), kind: target.kind.opposite(), reversal_of: Some(target.id), ..target.clone() };
        let recorded = store.record(&reversal, None, &recorded_event(&reversal)).await;
        assert_eq!(matches!(recorded, Err(StoreError::AlreadyReversed)), refused, "{recorded:?}");
    }

    // the close records, the audit trail and the watermark are as they were
    let m0 = old.merchants[0].id;
    assert_eq!(store.closed_through(m0).await.unwrap(), Some(date("2026-11-22")));
    let closes = store.day_closes(m0, from, to).await.unwrap();
    assert_eq!(
        closes.iter().map(|c| (c.date, c.entry_count)).collect::<Vec<_>>(),
        vec![(date("2026-11-21"), 3), (date("2026-11-22"), 5)]
    );
    let trail = store.day_audit(m0, from, to).await.unwrap();
    assert_eq!(
        trail.iter().map(|a| a.action).collect::<Vec<_>>(),
        vec![DayAction::Close, DayAction::Reopen, DayAction::Close]
    );
    let late = Entry { business_date: date("2026-11-22"), ..sale(&old.merchants[0], 5) };
    let refused = store.record(&late, None, &recorded_event(&late)).await;
    assert!(matches!(refused, Err(StoreError::DayClosed { first_open }) if first_open == date("2026-11-23")));

    // the events not yet published are still in the outbox
    let pending: Vec<String> = store.outbox_batch(10).await.unwrap().into_iter().map(|r| r.event_id).collect();
    assert_eq!(&pending[..2], PENDING_EVENTS);

    // a new merchant and its entries work alongside the old ones
    let newcomer = new_merchant();
    store.create_merchant(&newcomer, &registration(&newcomer)).await.unwrap();
    let first = sale(&newcomer, 1234);
    store.record(&first, None, &recorded_event(&first)).await.unwrap();
    assert_eq!(store.entry(newcomer.id, first.id).await.unwrap(), Some(first));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_ledger_of_the_schema_before_compact_entries_converts_in_place_and_answers_every_query_alike() {
    // Given a ledger.db made and written by the schema before compact entries
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let pool = cashflow_db::open_sqlite(&url, 1).await.unwrap();
    cashflow_db::migrate_sqlite(&pool, SQLITE_BEFORE_COMPACT_ENTRIES).await.unwrap();
    let old = old_ledger();
    write_old_sqlite_ledger(&pool, &old).await;
    pool.close().await;

    // When the current store opens it
    let store = SqliteLedgerStore::open(&url).await.unwrap();

    // Then every query answers as before
    then_every_query_answers_as_before(&store, &old).await;

    // and the database still refuses to edit or delete an entry
    let pool = cashflow_db::open_sqlite(&url, 1).await.unwrap();
    for sql in ["UPDATE entries SET amount_minor = 1", "DELETE FROM entries"] {
        let err = sqlx::query(sql).execute(&pool).await.unwrap_err().to_string();
        assert!(err.contains("ledger entries are"), "{sql}: {err}");
    }
    let copies: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_schema WHERE name = 'entries_v4'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(copies, 0, "the old table is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "set CASHFLOW_TEST_POSTGRES_URL to run against Postgres")]
async fn a_postgres_ledger_of_the_schema_before_compact_entries_converts_in_place_and_answers_every_query_alike() {
    // Given a ledger schema made and written by the schema before compact entries
    let admin = std::env::var("CASHFLOW_TEST_POSTGRES_URL").unwrap();
    let db = cashflow_db::TestDatabase::create(&admin).await.unwrap();
    let pool = cashflow_db::open_postgres(db.url(), 1, "ledger").await.unwrap();
    cashflow_db::migrate_postgres(&pool, POSTGRES_BEFORE_COMPACT_ENTRIES).await.unwrap();
    let old = old_ledger();
    write_old_postgres_ledger(&pool, &old).await;
    pool.close().await;

    // When the current store opens it
    let store = PostgresLedgerStore::open(db.url()).await.unwrap();

    // Then every query answers as before
    then_every_query_answers_as_before(&store, &old).await;

    // and the entries are stored compact: the merchant's integer key, a one-byte type
    let pool = cashflow_db::open_postgres(db.url(), 1, "ledger").await.unwrap();
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
         WHERE attrelid = 'entries'::regclass AND attname IN ('merchant', 'merchant_id', 'type') AND NOT attisdropped
         ORDER BY attname",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(columns, [("merchant".to_owned(), "integer".to_owned()), ("type".to_owned(), "\"char\"".to_owned())]);
    let ids: Vec<uuid::Uuid> = old.entries.iter().map(|e| *e.id.as_uuid()).collect();
    let copied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM entries WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(copied as usize, old.entries.len(), "every old entry was copied, once");

    // and the database still refuses to edit, delete or truncate an entry
    for sql in ["UPDATE entries SET amount_minor = 1", "DELETE FROM entries", "TRUNCATE entries"] {
        let err = sqlx::query(sql).execute(&pool).await.unwrap_err().to_string();
        assert!(err.contains("ledger entries are immutable"), "{sql}: {err}");
    }
    let copies: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_class WHERE relname LIKE 'entries_v5%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(copies, 0, "the old table and its primary key are gone");
}
