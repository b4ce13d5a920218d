#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The contract of [`ConsolidationStore`], written once and run against every backend: each
//! store reports the direct sum of its entries and, under any delivery, what the domain's
//! reference model (`MerchantDays`) reports and decides for each event.
//!
//! Each test body below is an `async fn` taking the store; `contract!` instantiates it as
//! `sqlite::<name>` (a temporary file, always run) and `postgres::<name>` (a fresh database per
//! test on the server named by `CASHFLOW_TEST_POSTGRES_URL`; ignored when that variable is
//! unset, see `build.rs`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use cashflow_consolidation::dedup::{prune_expired, DedupWindow};
use cashflow_consolidation::store::{closed_day, ApplySummary, ClosedDay, MerchantBooks};
use cashflow_consolidation::{ConsolidationStore, PostgresConsolidationStore, SqliteConsolidationStore};
use cashflow_db::TestDatabase;
use cashflow_domain::{
    daily_balances, Amount, ApplyOutcome, Balance, BusinessDate, Currency, EntryId, EntryType, EventId, MerchantDays,
    MerchantId, Posting,
};
use cashflow_events::{DayClosed, DayReopened, EntryRecorded, Event, EventBody, MerchantRegistered};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A store on a fresh database, and what keeps that database alive.
struct Harness {
    store: Arc<dyn ConsolidationStore>,
    /// Deleted (the file) or dropped (the database) with the harness, even on panic.
    _guard: Guard,
}

enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(#[allow(dead_code)] TestDatabase),
}

impl Harness {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("consolidation.db").display());
        let store = Arc::new(SqliteConsolidationStore::open(&url).await.unwrap());
        Self { store, _guard: Guard::Sqlite(dir) }
    }

    async fn postgres() -> Self {
        let admin = std::env::var("CASHFLOW_TEST_POSTGRES_URL")
            .expect("CASHFLOW_TEST_POSTGRES_URL (an admin URL such as postgres://postgres@127.0.0.1:5432/postgres)");
        let db = TestDatabase::create(&admin).await.unwrap();
        let store = Arc::new(PostgresConsolidationStore::open(db.url()).await.unwrap());
        Self { store, _guard: Guard::Postgres(db) }
    }
}

/// Instantiates each body (an `async fn(Arc<dyn ConsolidationStore>)`) for both backends.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let harness = super::Harness::sqlite().await;
                    super::$name(harness.store.clone()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[cfg_attr(not(postgres_tests), ignore = "set CASHFLOW_TEST_POSTGRES_URL to run against Postgres")]
                async fn $name() {
                    let harness = super::Harness::postgres().await;
                    super::$name(harness.store.clone()).await;
                }
            )*
        }
    };
}

contract! {
    any_delivery_order_with_duplicates_reports_the_direct_sum,
    each_event_of_a_batch_is_reported_once,
    changed_from_is_the_earliest_applied_day_of_each_merchant,
    opening_balances_carry_every_earlier_day,
    as_of_only_moves_forward,
    an_event_that_would_overflow_a_day_is_rejected_and_the_rest_applies,
    concurrent_consumers_on_one_hot_day_count_every_event_once,
    a_healthy_store_answers_pings,
    closes_and_reopens_in_any_order_and_twice_leave_the_newest_watermark,
    adjustments_are_summed_per_day_and_closed_day_once_each,
    markers_past_the_window_are_pruned_and_those_inside_still_absorb_redeliveries,
    markers_stay_flat_in_a_soak_that_runs_past_the_window,
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

fn day_after(base: BusinessDate, offset: u8) -> BusinessDate {
    (0..offset).fold(base, |d, _| d.succ().unwrap())
}

fn registration(merchant: MerchantId, occurred_at: DateTime<Utc>) -> Event {
    Event::new(
        occurred_at,
        EventBody::MerchantRegistered(MerchantRegistered {
            merchant_id: merchant,
            currency: Currency::BRL,
            time_zone: cashflow_domain::MerchantTimeZone::parse("America/Sao_Paulo").unwrap(),
        }),
    )
}

fn posting_at(
    merchant: MerchantId,
    day: BusinessDate,
    kind: EntryType,
    minor: i64,
    recorded_at: DateTime<Utc>,
) -> Event {
    Event::new(
        recorded_at,
        EventBody::EntryRecorded(EntryRecorded {
            merchant_id: merchant,
            entry_id: EntryId::new(),
            business_date: day,
            kind,
            amount: Amount::from_minor(minor).unwrap(),
            currency: Currency::BRL,
            recorded_at,
            reversal_of: None,
            adjusts_date: None,
        }),
    )
}

fn posting(merchant: MerchantId, day: &str, kind: EntryType, minor: i64) -> Event {
    posting_at(merchant, date(day), kind, minor, Utc::now().trunc_subsecs(6))
}

fn posting_of(entry: &EntryRecorded) -> Posting {
    Posting { entry_id: entry.entry_id, business_date: entry.business_date, kind: entry.kind, amount: entry.amount }
}

fn entry_of(event: &Event) -> Option<&EntryRecorded> {
    match &event.body {
        EventBody::EntryRecorded(e) => Some(e),
        _ => None,
    }
}

/// Shuffles in place with a xorshift generator: reproducible from the seed.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed | 1;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, usize::try_from(state % (i as u64 + 1)).unwrap());
    }
}

fn sorted<T: Ord + Clone>(items: &[T]) -> Vec<T> {
    let mut items = items.to_vec();
    items.sort();
    items
}

/// Checks the store's report of `from..=to` against the direct sum of every distinct entry
/// event of `merchant`.
async fn assert_report_is_the_direct_sum(
    store: &Arc<dyn ConsolidationStore>,
    merchant: MerchantId,
    events: &[Event],
    from: BusinessDate,
    to: BusinessDate,
) {
    let (opening, days) = store.days(merchant, from, to).await.unwrap();
    let report = daily_balances(opening, from, to, &days).unwrap();
    let entries: Vec<&EntryRecorded> =
        events.iter().filter_map(entry_of).filter(|e| e.merchant_id == merchant).collect();
    let sum = |pred: &dyn Fn(&EntryRecorded) -> bool, kind: EntryType| -> i128 {
        entries.iter().filter(|e| pred(e) && e.kind == kind).map(|e| i128::from(e.amount.minor())).sum()
    };
    let mut running =
        sum(&|e| e.business_date < from, EntryType::Credit) - sum(&|e| e.business_date < from, EntryType::Debit);
    for day in &report {
        let on_day = |e: &EntryRecorded| e.business_date == day.date;
        let credits = sum(&on_day, EntryType::Credit);
        let debits = sum(&on_day, EntryType::Debit);
        assert_eq!(i128::from(day.opening_balance.minor()), running, "opening of {}", day.date);
        assert_eq!(i128::from(day.total_credits.minor()), credits, "credits of {}", day.date);
        assert_eq!(i128::from(day.total_debits.minor()), debits, "debits of {}", day.date);
        assert_eq!(day.entry_count as usize, entries.iter().filter(|e| on_day(e)).count(), "count of {}", day.date);
        running += credits - debits;
        assert_eq!(i128::from(day.closing_balance.minor()), running, "closing of {}", day.date);
    }
}

// ---------------------------------------------------------------------------------------------
// The contract
// ---------------------------------------------------------------------------------------------

/// A generated entry: day offset, credit or debit, minor units, and the day of its reversal.
fn generated_entries() -> impl Strategy<Value = Vec<(u8, bool, i64, Option<u8>)>> {
    prop::collection::vec((0u8..10, any::<bool>(), 1i64..=Amount::MAX_MINOR, prop::option::of(0u8..10)), 0..30)
}

async fn any_delivery_order_with_duplicates_reports_the_direct_sum(store: Arc<dyn ConsolidationStore>) {
    let strategy = (generated_entries(), any::<u64>(), 1usize..5, 1usize..8);
    let mut runner = TestRunner::new(Config { cases: 16, failure_persistence: None, ..Config::default() });
    let runtime = tokio::runtime::Handle::current();
    let result = runner.run(&strategy, |(entries, order_seed, duplicate_every, batch_size)| {
        // Given any entries and reversals of a new merchant, on any days, as events
        let merchant = MerchantId::new();
        let base = date("2026-01-01");
        let recorded_at = Utc::now().trunc_subsecs(6);
        let mut events = vec![registration(merchant, recorded_at)];
        for (offset, is_credit, minor, reversal_day) in &entries {
            let kind = if *is_credit { EntryType::Credit } else { EntryType::Debit };
            events.push(posting_at(merchant, day_after(base, *offset), kind, *minor, recorded_at));
            if let Some(r) = reversal_day {
                events.push(posting_at(merchant, day_after(base, *r), kind.opposite(), *minor, recorded_at));
            }
        }
        // When they are delivered shuffled, with duplicates, in batches
        let mut deliveries = events.clone();
        deliveries.extend(events.iter().step_by(duplicate_every).cloned());
        shuffle(&mut deliveries, order_seed);
        let store = store.clone();
        tokio::task::block_in_place(|| {
            runtime.block_on(async {
                let mut applied = 0;
                let mut duplicates = 0;
                let mut model = MerchantDays::default();
                for batch in deliveries.chunks(batch_size) {
                    let summary = store.apply(batch).await.unwrap();
                    assert!(summary.rejected.is_empty(), "{summary:?}");
                    applied += summary.applied.len();
                    duplicates += summary.duplicates.len();
                    // And each entry event's outcome is the reference model's, in delivery order
                    let (mut model_applied, mut model_duplicates) = (Vec::new(), Vec::new());
                    for (event, entry) in batch.iter().filter_map(|e| entry_of(e).map(|entry| (e, entry))) {
                        match model.apply(event.event_id, posting_of(entry)) {
                            ApplyOutcome::Applied => model_applied.push(event.event_id),
                            ApplyOutcome::Duplicate => model_duplicates.push(event.event_id),
                            ApplyOutcome::Rejected => panic!("the model rejected {event:?}"),
                        }
                    }
                    let is_entry = |id: &EventId| batch.iter().any(|e| e.event_id == *id && entry_of(e).is_some());
                    assert_eq!(summary.applied.iter().copied().filter(is_entry).collect::<Vec<_>>(), model_applied);
                    assert_eq!(
                        summary.duplicates.iter().copied().filter(is_entry).collect::<Vec<_>>(),
                        model_duplicates
                    );
                }
                // Then each event counted once, and every report is the direct sum and the model's
                assert_eq!(applied, events.len());
                assert_eq!(duplicates, deliveries.len() - events.len());
                assert_report_is_the_direct_sum(&store, merchant, &events, base, day_after(base, 12)).await;
                assert_report_is_the_direct_sum(&store, merchant, &events, day_after(base, 5), day_after(base, 7))
                    .await;
                for (from, to) in [(base, day_after(base, 12)), (day_after(base, 5), day_after(base, 7))] {
                    let (opening, days) = store.days(merchant, from, to).await.unwrap();
                    assert_eq!(daily_balances(opening, from, to, &days).unwrap(), model.balances(from, to).unwrap());
                }
            });
        });
        Ok(())
    });
    result.unwrap();
}

async fn each_event_of_a_batch_is_reported_once(store: Arc<dyn ConsolidationStore>) {
    let m = MerchantId::new();
    let a = posting(m, "2026-11-23", EntryType::Credit, 100);
    let b = posting(m, "2026-11-23", EntryType::Debit, 40);
    let c = posting(m, "2026-11-24", EntryType::Credit, 7);

    // An empty batch changes nothing
    assert_eq!(store.apply(&[]).await.unwrap(), ApplySummary::default());

    // A batch carrying an event twice applies it once
    let first = store.apply(&[a.clone(), b.clone(), a.clone()]).await.unwrap();
    assert_eq!(sorted(&first.applied), sorted(&[a.event_id, b.event_id]));
    assert_eq!(first.duplicates, [a.event_id]);
    assert!(first.rejected.is_empty());

    // A redelivery is a duplicate, next to a new event
    let second = store.apply(&[a.clone(), c.clone()]).await.unwrap();
    assert_eq!(second.applied, [c.event_id]);
    assert_eq!(second.duplicates, [a.event_id]);

    assert_report_is_the_direct_sum(&store, m, &[a, b, c], date("2026-11-22"), date("2026-11-25")).await;
}

async fn changed_from_is_the_earliest_applied_day_of_each_merchant(store: Arc<dyn ConsolidationStore>) {
    // Given a batch touching several days of two merchants
    let (m1, m2) = (MerchantId::new(), MerchantId::new());
    let early = posting(m1, "2026-11-20", EntryType::Debit, 5);
    let batch = [
        posting(m1, "2026-11-23", EntryType::Credit, 10),
        early.clone(),
        posting(m1, "2026-11-25", EntryType::Credit, 10),
        posting(m2, "2026-11-22", EntryType::Credit, 10),
    ];

    // Then each merchant changed from its earliest day
    let summary = store.apply(&batch).await.unwrap();
    assert_eq!(summary.changed_from, BTreeMap::from([(m1, date("2026-11-20")), (m2, date("2026-11-22"))]));

    // And a redelivered event changes nothing, so it moves nothing back
    let summary = store.apply(&[early.clone(), posting(m1, "2026-11-24", EntryType::Credit, 1)]).await.unwrap();
    assert_eq!(summary.changed_from, BTreeMap::from([(m1, date("2026-11-24"))]));
    let summary = store.apply(&[early]).await.unwrap();
    assert!(summary.changed_from.is_empty(), "{summary:?}");
}

async fn opening_balances_carry_every_earlier_day(store: Arc<dyn ConsolidationStore>) {
    // Given entries on a few days
    let m = MerchantId::new();
    store
        .apply(&[
            posting(m, "2026-11-20", EntryType::Credit, 100),
            posting(m, "2026-11-20", EntryType::Debit, 30),
            posting(m, "2026-11-22", EntryType::Debit, 50),
            posting(m, "2026-11-25", EntryType::Credit, 1_000),
            posting(MerchantId::new(), "2026-11-19", EntryType::Credit, 999),
        ])
        .await
        .unwrap();

    // Then a range opens with every earlier net and lists only its days with entries
    let (opening, days) = store.days(m, date("2026-11-21"), date("2026-11-24")).await.unwrap();
    assert_eq!(opening, Balance::from_minor(70));
    assert_eq!(days.keys().copied().collect::<Vec<_>>(), [date("2026-11-22")]);
    let day = days[&date("2026-11-22")];
    assert_eq!((day.total_credits, day.total_debits, day.entry_count), (Balance::ZERO, Balance::from_minor(50), 1));

    let (opening, days) = store.days(m, date("2026-11-26"), date("2026-11-30")).await.unwrap();
    assert_eq!((opening, days.len()), (Balance::from_minor(1_020), 0));
    let (opening, days) = store.days(m, date("2026-11-01"), date("2026-11-19")).await.unwrap();
    assert_eq!((opening, days.len()), (Balance::ZERO, 0));
    let (opening, days) = store.days(MerchantId::new(), date("2026-11-01"), date("2026-11-30")).await.unwrap();
    assert_eq!((opening, days.len()), (Balance::ZERO, 0));

    // And a backdated entry moves every later opening
    store.apply(&[posting(m, "2026-11-01", EntryType::Debit, 20)]).await.unwrap();
    let (opening, _) = store.days(m, date("2026-11-26"), date("2026-11-30")).await.unwrap();
    assert_eq!(opening, Balance::from_minor(1_000));
}

async fn as_of_only_moves_forward(store: Arc<dyn ConsolidationStore>) {
    let m = MerchantId::new();
    let t0 = at("2026-11-23T10:00:00.000001Z");
    let t1 = at("2026-11-23T10:00:01.123456Z");
    let t2 = at("2026-11-23T10:00:02.999999Z");
    let day = date("2026-11-23");

    // Unknown until its first event
    assert_eq!(store.merchant(m).await.unwrap(), None);

    // Registered: its currency, as of the registration
    store.apply(&[registration(m, t0)]).await.unwrap();
    assert_eq!(store.merchant(m).await.unwrap(), Some(MerchantBooks { currency: Currency::BRL, as_of: t0 }));

    // A newer entry moves as_of forward, exactly to the microsecond
    store.apply(&[posting_at(m, day, EntryType::Credit, 1, t2)]).await.unwrap();
    assert_eq!(store.merchant(m).await.unwrap().map(|b| b.as_of), Some(t2));

    // A late older one does not move it back, alone or in a batch
    store.apply(&[posting_at(m, day, EntryType::Credit, 1, t1)]).await.unwrap();
    store
        .apply(&[posting_at(m, day, EntryType::Credit, 1, t1), posting_at(m, day, EntryType::Credit, 1, t0)])
        .await
        .unwrap();
    assert_eq!(store.merchant(m).await.unwrap().map(|b| b.as_of), Some(t2));

    // An entry arriving before its merchant's registration makes the merchant known
    let early = MerchantId::new();
    store.apply(&[posting_at(early, day, EntryType::Debit, 1, t1)]).await.unwrap();
    assert_eq!(store.merchant(early).await.unwrap(), Some(MerchantBooks { currency: Currency::BRL, as_of: t1 }));
    store.apply(&[registration(early, t0)]).await.unwrap();
    assert_eq!(store.merchant(early).await.unwrap().map(|b| b.as_of), Some(t1));
}

async fn an_event_that_would_overflow_a_day_is_rejected_and_the_rest_applies(store: Arc<dyn ConsolidationStore>) {
    // Given a day filled to the brim: 9 223 maximal credits fit in an i64, one more does not
    let m = MerchantId::new();
    let full = date("2026-11-23");
    let fill: Vec<Event> =
        (0..9_224).map(|_| posting_at(m, full, EntryType::Credit, Amount::MAX_MINOR, Utc::now())).collect();
    let summary = store.apply(&fill).await.unwrap();
    assert_eq!((summary.applied.len(), summary.duplicates.len(), summary.rejected.len()), (9_223, 0, 1));
    let first_rejected = summary.rejected[0];

    // When a batch brings one more maximal credit and two harmless entries
    let too_much = posting_at(m, full, EntryType::Credit, Amount::MAX_MINOR, Utc::now());
    let debit = posting_at(m, full, EntryType::Debit, 5, Utc::now());
    let next_day = posting_at(m, full.succ().unwrap(), EntryType::Credit, 1, Utc::now());
    let summary = store.apply(&[too_much.clone(), debit.clone(), next_day.clone()]).await.unwrap();

    // Then only the overflowing one is rejected
    assert_eq!(summary.rejected, [too_much.event_id]);
    assert_eq!(sorted(&summary.applied), sorted(&[debit.event_id, next_day.event_id]));
    assert_eq!(summary.changed_from, BTreeMap::from([(m, full)]));
    let (_, days) = store.days(m, full, full.succ().unwrap()).await.unwrap();
    assert_eq!(days[&full].total_credits, Balance::from_minor(9_223 * Amount::MAX_MINOR));
    assert_eq!(days[&full].total_debits, Balance::from_minor(5));
    assert_eq!(days[&full].entry_count, 9_224);
    assert_eq!(days[&full.succ().unwrap()].total_credits, Balance::from_minor(1));

    // And a rejected event is not remembered as processed: a redelivery is rejected again
    let rejected_again = fill.iter().find(|e| e.event_id == first_rejected).unwrap().clone();
    let summary = store.apply(&[too_much.clone(), rejected_again]).await.unwrap();
    assert_eq!(sorted(&summary.rejected), sorted(&[too_much.event_id, first_rejected]));
    assert!(summary.duplicates.is_empty() && summary.applied.is_empty(), "{summary:?}");
}

async fn concurrent_consumers_on_one_hot_day_count_every_event_once(store: Arc<dyn ConsolidationStore>) {
    // Three rounds, each on fresh merchants: lock-order bugs show up as deadlocks only sometimes.
    for round in 0..3u64 {
        hot_day_round(&store, round).await;
    }
}

async fn hot_day_round(store: &Arc<dyn ConsolidationStore>, round: u64) {
    // Given 200 entries on one hot merchant-day, and some on other days and merchants
    let hot = MerchantId::new();
    let other = MerchantId::new();
    let day = date("2026-11-23");
    let start = Utc::now().trunc_subsecs(6);
    let mut events = vec![registration(hot, start), registration(other, start)];
    for i in 0..200i64 {
        let kind = if i % 3 == 0 { EntryType::Debit } else { EntryType::Credit };
        events.push(posting_at(hot, day, kind, 1 + i * 1_000, start + Duration::microseconds(i)));
    }
    for i in 0..40i64 {
        let (merchant, offset) = if i % 2 == 0 { (hot, i % 4) } else { (other, i % 3) };
        let d = (0..offset).fold(day, |d, _| d.pred().unwrap());
        events.push(posting_at(merchant, d, EntryType::Credit, 7 + i, start + Duration::microseconds(i)));
    }

    // When 8 consumers apply overlapping batches at once: each delivers every event, in its own
    // order, some twice
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut consumers = tokio::task::JoinSet::new();
    for consumer in 0..8u64 {
        let (store, barrier) = (store.clone(), barrier.clone());
        let mut deliveries = events.clone();
        deliveries.extend(events.iter().skip(usize::try_from(consumer).unwrap()).step_by(5).cloned());
        shuffle(&mut deliveries, 0x9e37_79b9_7f4a_7c15 ^ (round << 8) ^ consumer);
        consumers.spawn(async move {
            barrier.wait().await;
            let mut summaries = Vec::new();
            for batch in deliveries.chunks(25) {
                summaries.push(store.apply(batch).await.unwrap());
            }
            summaries
        });
    }
    let summaries: Vec<ApplySummary> = consumers.join_all().await.into_iter().flatten().collect();

    // Then every event was applied exactly once overall, none failed, and the totals are exact
    let applied: Vec<_> = summaries.iter().flat_map(|s| s.applied.iter().copied()).collect();
    let distinct: HashSet<_> = applied.iter().copied().collect();
    assert_eq!((applied.len(), distinct.len()), (events.len(), events.len()));
    assert!(summaries.iter().all(|s| s.rejected.is_empty()));
    let delivered: usize = summaries.iter().map(|s| s.applied.len() + s.duplicates.len()).sum();
    assert_eq!(delivered, 8 * events.len() + (0..8).map(|c| events.iter().skip(c).step_by(5).count()).sum::<usize>());
    for merchant in [hot, other] {
        assert_report_is_the_direct_sum(store, merchant, &events, date("2026-11-18"), date("2026-11-24")).await;
    }
    let newest = start + Duration::microseconds(199);
    assert_eq!(store.merchant(hot).await.unwrap().map(|b| b.as_of), Some(newest));
}

async fn a_healthy_store_answers_pings(store: Arc<dyn ConsolidationStore>) {
    store.ping().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The deduplication window
// ---------------------------------------------------------------------------------------------

/// A one-second window (for a queue that keeps nothing): what the tests can wait past.
fn one_second_window() -> DedupWindow {
    DedupWindow::new(std::time::Duration::from_secs(1), std::time::Duration::ZERO).unwrap()
}

fn outcomes(summary: &ApplySummary) -> (usize, usize) {
    (summary.applied.len(), summary.duplicates.len())
}

async fn markers_past_the_window_are_pruned_and_those_inside_still_absorb_redeliveries(
    store: Arc<dyn ConsolidationStore>,
) {
    // Given 30 events applied, then (past a one-second window) 20 more
    let merchant = MerchantId::new();
    let (from, to) = (date("2026-11-20"), date("2026-11-24"));
    let day = |i: u8| day_after(from, i % 5).to_string();
    let old: Vec<Event> = (0..30).map(|i| posting(merchant, &day(i), EntryType::Credit, 100 + i64::from(i))).collect();
    let recent: Vec<Event> = (0..20).map(|i| posting(merchant, &day(i), EntryType::Debit, 10 + i64::from(i))).collect();
    assert_eq!(outcomes(&store.apply(&old).await.unwrap()), (30, 0));
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    assert_eq!(outcomes(&store.apply(&recent).await.unwrap()), (20, 0));
    let every: Vec<Event> = old.iter().chain(&recent).cloned().collect();
    let before = store.days(merchant, from, to).await.unwrap();

    // When the markers past the window are pruned (in batches of 7, then nothing is left to do)
    let mut removed = 0;
    loop {
        let n = store.prune_processed(Utc::now() - Duration::seconds(1), 7).await.unwrap();
        assert!(n <= 7, "a batch removes at most its limit: {n}");
        removed += n;
        if n == 0 {
            break;
        }
    }
    assert_eq!(prune_expired(&*store, one_second_window(), Utc::now() - Duration::milliseconds(800)).await.unwrap(), 0);

    // Then exactly the 30 old markers went, and the totals did not move
    assert_eq!(removed, 30);
    assert_eq!(store.days(merchant, from, to).await.unwrap(), before);
    assert_report_is_the_direct_sum(&store, merchant, &every, from, to).await;

    // and a redelivery inside the window is still absorbed: no double count
    let mut redelivered = recent.clone();
    shuffle(&mut redelivered, 17);
    assert_eq!(outcomes(&store.apply(&redelivered).await.unwrap()), (0, 20));
    assert_eq!(store.days(merchant, from, to).await.unwrap(), before);

    // while a forgotten event is news again (what the window must make impossible)
    assert_eq!(outcomes(&store.apply(&old[..1]).await.unwrap()), (1, 0));
    assert_ne!(store.days(merchant, from, to).await.unwrap(), before);
}

async fn markers_stay_flat_in_a_soak_that_runs_past_the_window(store: Arc<dyn ConsolidationStore>) {
    // Given a consumer applying 100 events every 250 ms for 3 s, with a one-second window pruned
    // after each batch
    let merchant = MerchantId::new();
    let (mut applied, mut pruned, mut kept) = (0_u64, 0_u64, Vec::new());
    let mut events = Vec::new();
    for round in 0..12 {
        let batch: Vec<Event> =
            (0..100).map(|i| posting(merchant, "2026-11-23", EntryType::Credit, 1 + i64::from(i))).collect();
        applied += store.apply(&batch).await.unwrap().applied.len() as u64;
        pruned += prune_expired(&*store, one_second_window(), Utc::now()).await.unwrap();
        kept.push(applied - pruned);
        events.extend(batch);
        if round < 11 {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    // Then the markers kept stop growing once the soak is past the window: the last batches keep
    // what one window holds (at most 6 batches here), while the applied events grew to 1,200
    assert_eq!(applied, 1_200);
    let late = &kept[6..];
    assert!(late.iter().all(|&k| k <= 600), "markers kept per round: {kept:?}");
    assert!(late.iter().max() <= kept[..6].iter().max(), "markers kept per round: {kept:?}");
    // and every event still counts once
    let day = date("2026-11-23");
    assert_report_is_the_direct_sum(&store, merchant, &events, day, day).await;
}

fn closed(merchant: MerchantId, day: &str, previous: Option<&str>, counted: Option<i64>, seq: i64) -> Event {
    let closed_at = at("2026-11-24T21:00:00Z") + Duration::seconds(seq);
    Event::new(
        closed_at,
        EventBody::DayClosed(DayClosed {
            merchant_id: merchant,
            date: date(day),
            previous_closed_through: previous.map(date),
            closed_at,
            counted_cash: counted,
            difference: counted.map(|c| c - 1_000),
            seq,
        }),
    )
}

fn reopened(merchant: MerchantId, day: &str, previous: &str, seq: i64) -> Event {
    let at = at("2026-11-24T21:00:00Z") + Duration::seconds(seq);
    Event::new(
        at,
        EventBody::DayReopened(DayReopened {
            merchant_id: merchant,
            date: date(day),
            previous_closed_through: date(previous),
            closed_through: date(day).pred(),
            reopened_at: at,
            seq,
        }),
    )
}

async fn closes_and_reopens_in_any_order_and_twice_leave_the_newest_watermark(store: Arc<dyn ConsolidationStore>) {
    // Given a merchant that closed the 20th (cash counted), closed the 23rd, reopened from the
    // 22nd and closed the 25th, in that order (seq 1 to 4)
    let merchant = MerchantId::new();
    store.apply(&[registration(merchant, at("2026-11-01T12:00:00Z"))]).await.unwrap();
    let marks = [
        closed(merchant, "2026-11-20", None, Some(1_500), 1),
        closed(merchant, "2026-11-23", Some("2026-11-20"), None, 2),
        reopened(merchant, "2026-11-22", "2026-11-23", 3),
        closed(merchant, "2026-11-25", Some("2026-11-21"), Some(900), 4),
    ];

    // When consolidation receives them newest first, each twice
    let mut delivery: Vec<Event> = marks.iter().rev().cloned().collect();
    delivery.extend(marks.iter().cloned());
    let first = store.apply(&delivery[..4]).await.unwrap();
    let second = store.apply(&delivery[4..]).await.unwrap();

    // Then each is applied once, reports are invalidated from the first day each changed, and
    // every day through the 25th reads closed by the close that covers it now: the 20th by the
    // first (with its count), the 21st by the second, the 22nd to the 25th by the fourth
    assert_eq!(first.applied.len(), 4);
    assert_eq!(second.duplicates.len(), 4);
    assert_eq!(first.changed_from.get(&merchant), Some(&BusinessDate::MIN), "the first close closes every earlier day");
    let (from, to) = (date("2026-11-19"), date("2026-11-26"));
    let known = store.day_marks(merchant, from, to).await.unwrap();
    let closed_at = |seq: i64| at("2026-11-24T21:00:00Z") + Duration::seconds(seq);
    let expected = |day: &str| -> Option<ClosedDay> {
        match day {
            "2026-11-19" => Some(ClosedDay { closed_at: closed_at(1), counted_cash: None, difference: None }),
            "2026-11-20" => {
                Some(ClosedDay { closed_at: closed_at(1), counted_cash: Some(1_500), difference: Some(500) })
            }
            "2026-11-21" => Some(ClosedDay { closed_at: closed_at(2), counted_cash: None, difference: None }),
            "2026-11-25" => {
                Some(ClosedDay { closed_at: closed_at(4), counted_cash: Some(900), difference: Some(-100) })
            }
            "2026-11-26" => None,
            _ => Some(ClosedDay { closed_at: closed_at(4), counted_cash: None, difference: None }),
        }
    };
    let mut day = from;
    while day <= to {
        assert_eq!(closed_day(&known, day), expected(&day.to_string()), "{day}");
        day = day.succ().unwrap();
    }

    // And a reopen the ledger committed before those closes, delivered only now, undoes none
    let stale = reopened(merchant, "2026-11-10", "2026-11-12", 0);
    assert_eq!(store.apply(&[stale]).await.unwrap().applied.len(), 1);
    let known = store.day_marks(merchant, from, to).await.unwrap();
    assert!(closed_day(&known, date("2026-11-24")).is_some());
}

async fn adjustments_are_summed_per_day_and_closed_day_once_each(store: Arc<dyn ConsolidationStore>) {
    // Given a merchant, an ordinary sale of the 24th and three adjustments counted on the 24th
    // (two for the 20th, one reversal for the 22nd)
    let merchant = MerchantId::new();
    store.apply(&[registration(merchant, at("2026-11-01T12:00:00Z"))]).await.unwrap();
    let adjusting = |meant_for: &str, kind: EntryType, minor: i64| {
        let mut event = posting(merchant, "2026-11-24", kind, minor);
        if let EventBody::EntryRecorded(e) = &mut event.body {
            e.adjusts_date = Some(date(meant_for));
        }
        event
    };
    let events = vec![
        posting(merchant, "2026-11-24", EntryType::Credit, 10_000),
        adjusting("2026-11-20", EntryType::Credit, 2_500),
        adjusting("2026-11-20", EntryType::Debit, 500),
        adjusting("2026-11-22", EntryType::Debit, 4_000),
    ];

    // When they are applied, and then all delivered again
    store.apply(&events).await.unwrap();
    let again = store.apply(&events).await.unwrap();

    // Then the day counts all four once, and its adjustments are the three, per closed day
    assert_eq!(again.duplicates.len(), 4);
    let (_, days) = store.days(merchant, date("2026-11-24"), date("2026-11-24")).await.unwrap();
    assert_eq!(days[&date("2026-11-24")].entry_count, 4);
    let adjustments = store.adjustments(merchant, date("2026-11-01"), date("2026-11-30")).await.unwrap();
    let summary: Vec<_> = adjustments
        .iter()
        .map(|((day, meant_for), t)| (*day, *meant_for, t.total_credits.minor(), t.total_debits.minor(), t.entry_count))
        .collect();
    assert_eq!(
        summary,
        vec![
            (date("2026-11-24"), date("2026-11-20"), 2_500, 500, 2),
            (date("2026-11-24"), date("2026-11-22"), 0, 4_000, 1),
        ]
    );
    assert!(store.adjustments(merchant, date("2026-11-25"), date("2026-11-30")).await.unwrap().is_empty());
}
