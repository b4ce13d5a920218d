#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Reconciliation and repair, against every backend: drift injected the three ways it happens
//! (a consolidated total altered in the database, an applied-event marker lost and its event
//! redelivered, an event dropped from the queue) is found exactly, repaired, and stays repaired
//! when the in-flight events arrive; a property test holds any mix of deliveries, duplicates,
//! drops and repairs to reports equal to the ledger.
//!
//! The ledger is an in-memory [`LedgerSource`] here (the gRPC client is tested in
//! `cashflow-grpc`). Bodies are written once; `contract!` runs them on SQLite (always) and on
//! Postgres (ignored unless `CASHFLOW_TEST_POSTGRES_URL` is set).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use cashflow_consolidation::reconcile::{LedgerDays, LedgerError, LedgerSource, Reconciler, Report, Scope};
use cashflow_consolidation::store::{DayRebuild, LedgerPosting, RebuildOutcome};
use cashflow_consolidation::{
    ConsolidationStore, MemoryCache, PostgresConsolidationStore, ReportCache, SqliteConsolidationStore,
};
use cashflow_db::TestDatabase;
use cashflow_domain::{Amount, BusinessDate, Currency, DayTotals, EntryId, EntryType, MerchantId};
use cashflow_events::{EntryRecorded, Event, EventBody, MerchantRegistered};

// ---------------------------------------------------------------------------------------------
// Harness: a store, and raw SQL on its database to tamper with it
// ---------------------------------------------------------------------------------------------

enum Db {
    Sqlite(sqlx::SqlitePool, #[allow(dead_code)] tempfile::TempDir),
    Postgres(sqlx::PgPool, #[allow(dead_code)] TestDatabase),
}

struct Harness {
    store: Arc<dyn ConsolidationStore>,
    db: Db,
}

impl Harness {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("consolidation.db").display());
        let store = Arc::new(SqliteConsolidationStore::open(&url).await.unwrap());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        Self { store, db: Db::Sqlite(pool, dir) }
    }

    async fn postgres() -> Self {
        let admin = std::env::var("CASHFLOW_TEST_POSTGRES_URL").expect("CASHFLOW_TEST_POSTGRES_URL");
        let db = TestDatabase::create(&admin).await.unwrap();
        let store = Arc::new(PostgresConsolidationStore::open(db.url()).await.unwrap());
        let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
        Self { store, db: Db::Postgres(pool, db) }
    }

    /// Runs `sql` with `{t}` naming the consolidation tables' prefix (the schema on Postgres),
    /// `$m`/`$d`/`$e` the merchant, date and event id (test values, inlined as literals).
    async fn tamper(&self, sql: &str, merchant: MerchantId, date: BusinessDate, event: Option<&Event>) {
        let event = event.map(|e| *e.event_id.as_uuid()).unwrap_or_default();
        let sql = sql.replace("$m", &format!("'{merchant}'")).replace("$d", &format!("'{date}'"));
        match &self.db {
            Db::Sqlite(pool, _) => {
                // SQLite keeps an event id as its 16 bytes.
                let sql = sql.replace("$e", &format!("unhex('{}')", event.simple())).replace("{t}", "");
                sqlx::query(&sql).execute(pool).await.unwrap();
            }
            Db::Postgres(pool, _) => {
                let sql = sql.replace("$e", &format!("'{event}'")).replace("{t}", "consolidation.");
                sqlx::query(&sql).execute(pool).await.unwrap();
            }
        }
    }
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(not(postgres_tests), ignore = "set CASHFLOW_TEST_POSTGRES_URL to run against Postgres")]
                async fn $name() {
                    super::$name(super::Harness::postgres().await).await;
                }
            )*
        }
    };
}

contract! {
    reconcile_finds_exactly_the_injected_drift_and_repair_makes_every_report_equal_the_ledger,
    a_day_that_moved_since_it_was_read_is_not_rebuilt,
    a_day_the_ledger_does_not_have_is_removed_by_its_repair,
    any_entries_duplicates_drops_and_repairs_end_with_reports_equal_to_the_ledger,
}

// ---------------------------------------------------------------------------------------------
// The ledger, in memory
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct FakeLedger {
    /// Every entry's event, in commit order.
    entries: Mutex<Vec<EntryRecorded>>,
}

impl FakeLedger {
    fn record(&self, merchant: MerchantId, date: BusinessDate, kind: EntryType, minor: i64) -> Event {
        let entry = EntryRecorded {
            merchant_id: merchant,
            entry_id: EntryId::new(),
            business_date: date,
            kind,
            amount: Amount::from_minor(minor).unwrap(),
            currency: Currency::BRL,
            recorded_at: Utc::now(),
            reversal_of: None,
            adjusts_date: None,
        };
        self.entries.lock().unwrap().push(entry.clone());
        Event::new(entry.recorded_at, EventBody::EntryRecorded(entry.clone()))
            .with_id(Event::id_of_entry(entry.entry_id))
    }

    fn totals(&self, merchant: MerchantId) -> BTreeMap<BusinessDate, DayTotals> {
        let mut days: BTreeMap<BusinessDate, DayTotals> = BTreeMap::new();
        for e in self.entries.lock().unwrap().iter().filter(|e| e.merchant_id == merchant) {
            days.entry(e.business_date).or_default().post(e.kind, e.amount).unwrap();
        }
        days
    }
}

#[async_trait]
impl LedgerSource for FakeLedger {
    async fn day_totals(
        &self,
        merchant: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<LedgerDays, LedgerError> {
        let days = self.totals(merchant).into_iter().filter(|(d, _)| *d >= from && *d <= to).collect();
        Ok(LedgerDays { currency: Some(Currency::BRL), days })
    }

    async fn day_entries(&self, merchant: MerchantId, date: BusinessDate) -> Result<Vec<LedgerPosting>, LedgerError> {
        Ok(self
            .entries
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.merchant_id == merchant && e.business_date == date)
            .map(|e| LedgerPosting {
                event_id: Event::id_of_entry(e.entry_id),
                kind: e.kind,
                amount: e.amount,
                recorded_at: e.recorded_at,
            })
            .collect())
    }
}

fn day(n: u32) -> BusinessDate {
    BusinessDate::parse(&format!("2026-11-{:02}", n + 1)).unwrap()
}

fn registered(merchant: MerchantId) -> Event {
    Event::new(
        Utc::now(),
        EventBody::MerchantRegistered(MerchantRegistered {
            merchant_id: merchant,
            currency: Currency::BRL,
            time_zone: cashflow_domain::MerchantTimeZone::parse("UTC").unwrap(),
        }),
    )
}

fn every_day() -> Scope {
    Scope { merchants: None, from: day(0), to: day(29), repair: false }
}

async fn consolidated(store: &Arc<dyn ConsolidationStore>, merchant: MerchantId) -> BTreeMap<BusinessDate, DayTotals> {
    store.days(merchant, day(0), day(29)).await.unwrap().1
}

fn drifting_days(report: &Report) -> Vec<BusinessDate> {
    report.findings.iter().map(|f| f.drift.date).collect()
}

// ---------------------------------------------------------------------------------------------
// Specifications
// ---------------------------------------------------------------------------------------------

async fn reconcile_finds_exactly_the_injected_drift_and_repair_makes_every_report_equal_the_ledger(h: Harness) {
    // Given a merchant whose five days of entries were all consolidated
    let ledger = Arc::new(FakeLedger::default());
    let cache: Arc<dyn ReportCache> = Arc::new(MemoryCache::default());
    let reconciler = Reconciler::new(h.store.clone(), cache, ledger.clone());
    let merchant = MerchantId::new();
    h.store.apply(&[registered(merchant)]).await.unwrap();
    let mut events = BTreeMap::new();
    for d in 0..5 {
        let credit = ledger.record(merchant, day(d), EntryType::Credit, 10_000 + i64::from(d));
        let debit = ledger.record(merchant, day(d), EntryType::Debit, 2_500);
        events.insert(d, (credit, debit));
    }
    let dropped = ledger.record(merchant, day(3), EntryType::Credit, 777);
    let delivered: Vec<Event> = events.values().flat_map(|(c, d)| [c.clone(), d.clone()]).collect();
    h.store.apply(&delivered).await.unwrap();
    let clean = reconciler.run(&Scope { merchants: Some(vec![merchant]), ..every_day() }, &|_, _| {}).await.unwrap();
    assert_eq!(drifting_days(&clean), vec![day(3)], "only the dropped event's day drifts before tampering");

    // When a total is altered in the database (day 1), a marker is deleted and its event
    // redelivered (day 2), and an event was dropped from the queue (day 3, above)
    h.tamper(
        "UPDATE {t}daily_totals SET total_credits = total_credits + 1 WHERE merchant_id = $m AND business_date = $d",
        merchant,
        day(1),
        None,
    )
    .await;
    let redelivered = events[&2].1.clone();
    h.tamper("DELETE FROM {t}processed_events WHERE event_id = $e", merchant, day(2), Some(&redelivered)).await;
    let summary = h.store.apply(std::slice::from_ref(&redelivered)).await.unwrap();
    assert_eq!(summary.applied, vec![redelivered.event_id], "without its marker the event counts twice");

    // Then reconcile finds exactly those three days, expected (ledger) against found
    let report = reconciler.run(&Scope { merchants: Some(vec![merchant]), ..every_day() }, &|_, _| {}).await.unwrap();
    assert_eq!(drifting_days(&report), vec![day(1), day(2), day(3)]);
    let by_day: BTreeMap<_, _> = report.findings.iter().map(|f| (f.drift.date, &f.drift)).collect();
    assert_eq!(by_day[&day(1)].found.total_credits.minor(), by_day[&day(1)].expected.total_credits.minor() + 1);
    assert_eq!(by_day[&day(2)].found.total_debits.minor(), 5_000);
    assert_eq!(by_day[&day(2)].expected.total_debits.minor(), 2_500);
    assert_eq!(by_day[&day(3)].found.entry_count + 1, by_day[&day(3)].expected.entry_count);
    assert!(report.drifts());
    assert!(report.findings.iter().all(|f| f.repaired.is_none()), "no repair without --repair");

    // When it repairs them
    let repaired = reconciler
        .run(&Scope { merchants: Some(vec![merchant]), repair: true, ..every_day() }, &|_, _| {})
        .await
        .unwrap();
    assert_eq!(drifting_days(&repaired), vec![day(1), day(2), day(3)]);
    assert!(repaired.findings.iter().all(|f| f.repaired == Some(true)));
    assert!(!repaired.drifts());

    // Then every report equals the ledger, and stays so when the in-flight events arrive
    assert_eq!(consolidated(&h.store, merchant).await, ledger.totals(merchant));
    let late = h.store.apply(&[dropped.clone(), redelivered.clone()]).await.unwrap();
    assert_eq!(late.duplicates, vec![dropped.event_id, redelivered.event_id], "the rebuild recorded them as applied");
    assert_eq!(consolidated(&h.store, merchant).await, ledger.totals(merchant));

    // And a second run finds nothing
    let again = reconciler.run(&every_day(), &|_, _| {}).await.unwrap();
    assert!(again.findings.is_empty(), "{:?}", again.findings);
    assert_eq!(again.days_checked, 5);
}

async fn a_day_that_moved_since_it_was_read_is_not_rebuilt(h: Harness) {
    // Given a consolidated day
    let ledger = FakeLedger::default();
    let merchant = MerchantId::new();
    let first = ledger.record(merchant, day(0), EntryType::Credit, 100);
    h.store.apply(std::slice::from_ref(&first)).await.unwrap();
    let found = consolidated(&h.store, merchant).await[&day(0)];
    // When a consumer applies another event of the day after reconciliation read it
    let second = ledger.record(merchant, day(0), EntryType::Credit, 50);
    h.store.apply(std::slice::from_ref(&second)).await.unwrap();
    let entries = ledger.day_entries(merchant, day(0)).await.unwrap();
    let stale = DayRebuild { merchant, currency: Currency::BRL, date: day(0), found, entries: entries[..1].to_vec() };
    // Then the rebuild writes nothing
    assert_eq!(h.store.rebuild_day(&stale).await.unwrap(), RebuildOutcome::Moved);
    assert_eq!(consolidated(&h.store, merchant).await[&day(0)].total_credits.minor(), 150);
}

async fn a_day_the_ledger_does_not_have_is_removed_by_its_repair(h: Harness) {
    // Given a consolidated day with a total the ledger never had
    let ledger = Arc::new(FakeLedger::default());
    let merchant = MerchantId::new();
    h.store.apply(&[registered(merchant), ledger.record(merchant, day(0), EntryType::Credit, 100)]).await.unwrap();
    h.tamper(
        "INSERT INTO {t}daily_totals (merchant_id, business_date, total_credits, total_debits, entry_count)
         VALUES ($m, $d, 5, 0, 1)",
        merchant,
        day(4),
        None,
    )
    .await;
    let reconciler = Reconciler::new(h.store.clone(), Arc::new(MemoryCache::default()), ledger.clone());
    // When it is reconciled with repair
    let report = reconciler.run(&Scope { repair: true, ..every_day() }, &|_, _| {}).await.unwrap();
    // Then the day is reported and removed
    assert_eq!(drifting_days(&report), vec![day(4)]);
    assert_eq!(report.findings[0].drift.expected, DayTotals::default());
    assert_eq!(consolidated(&h.store, merchant).await, ledger.totals(merchant));
}

/// What becomes of one entry's event.
#[derive(Debug, Clone, Copy)]
enum Delivery {
    Dropped,
    Once,
    Twice,
    /// Still in flight: arrives after the first repair.
    Late,
}

fn delivery() -> impl Strategy<Value = Delivery> {
    prop_oneof![Just(Delivery::Dropped), Just(Delivery::Once), Just(Delivery::Twice), Just(Delivery::Late)]
}

async fn any_entries_duplicates_drops_and_repairs_end_with_reports_equal_to_the_ledger(h: Harness) {
    let cases = if matches!(h.db, Db::Sqlite(..)) { 24 } else { 8 };
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let strategy = (prop::collection::vec((0u32..6, any::<bool>(), 1i64..1_000_000, delivery()), 1..30), any::<bool>());
    let store = h.store.clone();
    let handle = tokio::runtime::Handle::current();
    let result = runner.run(&strategy, |(entries, repair_midway)| {
        let store = store.clone();
        let outcome = std::thread::scope(|s| {
            s.spawn(|| {
                handle.block_on(async {
                    // A merchant per case: the cases share the database.
                    let merchant = MerchantId::new();
                    let ledger = Arc::new(FakeLedger::default());
                    let reconciler = Reconciler::new(store.clone(), Arc::new(MemoryCache::default()), ledger.clone());
                    let scope = Scope { merchants: Some(vec![merchant]), repair: true, ..every_day() };
                    let mut late = Vec::new();
                    for (d, credit, minor, delivery) in entries {
                        let kind = if credit { EntryType::Credit } else { EntryType::Debit };
                        let event = ledger.record(merchant, day(d), kind, minor);
                        match delivery {
                            Delivery::Dropped => {}
                            Delivery::Once => drop(store.apply(&[event]).await.unwrap()),
                            Delivery::Twice => drop(store.apply(&[event.clone(), event]).await.unwrap()),
                            Delivery::Late => late.push(event),
                        }
                        if repair_midway && d == 0 {
                            reconciler.run(&scope, &|_, _| {}).await.unwrap();
                        }
                    }
                    reconciler.run(&scope, &|_, _| {}).await.unwrap();
                    store.apply(&late).await.unwrap();
                    store.apply(&late).await.unwrap();
                    let second = reconciler.run(&scope, &|_, _| {}).await.unwrap();
                    (consolidated(&store, merchant).await == ledger.totals(merchant), second.findings.is_empty())
                })
            })
            .join()
            .unwrap()
        });
        prop_assert_eq!(outcome, (true, true), "reports equal the ledger and a second run finds nothing");
        Ok(())
    });
    result.unwrap();
}
