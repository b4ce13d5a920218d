#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Closing the day, at the store: the close record's totals come from the stored entries, the
//! watermark refuses entries on or before it, and no entry committed concurrently with a close
//! slips into a closed day. Run against both backends by `contract!` (Postgres when
//! `CASHFLOW_TEST_POSTGRES_URL` is set).

#[macro_use]
mod fixtures;

use std::sync::Arc;
use std::time::Duration;

use cashflow_ledger::store::{CloseDay, DayAction, DayClose, Recorded, ReopenDay};
use cashflow_ledger::{LedgerStore, StoreError};
use fixtures::*;

contract! {
    store: [
        a_close_records_the_days_totals_and_the_balance_through_it,
        after_a_close_entries_on_or_before_it_are_refused_naming_the_first_open_day,
        a_retry_of_a_request_recorded_before_the_close_replays_and_a_new_key_is_refused,
        a_day_cannot_be_closed_twice_nor_behind_the_watermark,
        no_entry_slips_past_a_close_racing_many_backdating_writers,
        an_adjustment_is_stored_on_the_open_day_carrying_the_day_it_was_meant_for,
        a_reopen_moves_the_watermark_back_to_the_day_before_and_those_days_take_entries_again,
        only_a_closed_day_can_be_reopened,
        closes_and_reopens_leave_an_audit_trail_and_ordered_events_for_consolidation,
    ],
    harness: [],
}

fn date(s: &str) -> BusinessDate {
    BusinessDate::parse(s).unwrap()
}

fn entry_on(m: &Merchant, day: &str, kind: EntryType, minor: i64) -> Entry {
    Entry { kind, business_date: date(day), ..sale(m, minor) }
}

async fn record(store: &Arc<dyn LedgerStore>, e: &Entry) -> Result<Recorded, StoreError> {
    store.record(e, None, &recorded_event(e)).await
}

fn close_of(m: &Merchant, day: &str, counted_cash_minor: Option<i64>) -> CloseDay {
    CloseDay {
        merchant_id: m.id,
        date: date(day),
        closed_at: now(),
        closed_by: "operator@padaria".to_owned(),
        counted_cash_minor,
        note: Some("fim do expediente".to_owned()),
    }
}

/// Credits minus debits of `entries`.
fn balance(entries: &[Entry]) -> i64 {
    entries.iter().map(|e| if e.kind == EntryType::Credit { e.amount.minor() } else { -e.amount.minor() }).sum()
}

async fn a_close_records_the_days_totals_and_the_balance_through_it(store: Arc<dyn LedgerStore>) {
    // Given a merchant with entries the day before, on and after the day to close
    let m = given_a_merchant(&store).await;
    for e in [
        entry_on(&m, "2026-11-22", EntryType::Credit, 10_000),
        entry_on(&m, "2026-11-23", EntryType::Credit, 5_000),
        entry_on(&m, "2026-11-23", EntryType::Debit, 1_500),
        entry_on(&m, "2026-11-24", EntryType::Credit, 700),
    ] {
        record(&store, &e).await.unwrap();
    }

    // When the 23rd is closed with 135.00 counted in the drawer
    let close = store.close_day(&close_of(&m, "2026-11-23", Some(13_500))).await.unwrap();

    // Then the record holds the 23rd's totals, the balance of everything through the 23rd, and
    // the difference against what was counted; the watermark is the 23rd and the record lists
    assert_eq!((close.credits_minor, close.debits_minor, close.entry_count), (5_000, 1_500, 2));
    assert_eq!(close.expected_balance_minor, 13_500);
    assert_eq!(close.difference_minor(), Some(0));
    assert_eq!(store.closed_through(m.id).await.unwrap(), Some(date("2026-11-23")));
    let listed: Vec<DayClose> = store.day_closes(m.id, date("2026-11-01"), date("2026-11-30")).await.unwrap();
    assert_eq!(listed, vec![close]);
}

async fn after_a_close_entries_on_or_before_it_are_refused_naming_the_first_open_day(store: Arc<dyn LedgerStore>) {
    // Given a merchant whose books are closed through the 23rd
    let m = given_a_merchant(&store).await;
    store.close_day(&close_of(&m, "2026-11-23", None)).await.unwrap();

    // When entries are recorded on the 23rd, on an earlier day and on the 24th
    let on_closed = record(&store, &entry_on(&m, "2026-11-23", EntryType::Credit, 100)).await;
    let before = record(&store, &entry_on(&m, "2026-10-01", EntryType::Debit, 100)).await;
    let open = entry_on(&m, "2026-11-24", EntryType::Credit, 100);

    // Then the first two are refused naming the 24th, the third is recorded, and nothing
    // else was written
    for refused in [on_closed, before] {
        assert!(
            matches!(refused, Err(StoreError::DayClosed { first_open }) if first_open == date("2026-11-24")),
            "{refused:?}"
        );
    }
    assert_eq!(record(&store, &open).await.unwrap(), Recorded::Created(open.clone()));
    assert_eq!(entries_of(&store, &m).await, vec![open]);
}

async fn a_retry_of_a_request_recorded_before_the_close_replays_and_a_new_key_is_refused(store: Arc<dyn LedgerStore>) {
    // Given a sale of the 23rd recorded with an idempotency key (a phone that lost the answer),
    // and then the 23rd closed
    let m = given_a_merchant(&store).await;
    let sale = entry_on(&m, "2026-11-23", EntryType::Credit, 4_200);
    let idem = key("phone-7f3a", "hash-of-the-request");
    assert_eq!(
        store.record(&sale, Some(&idem), &recorded_event(&sale)).await.unwrap(),
        Recorded::Created(sale.clone())
    );
    store.close_day(&close_of(&m, "2026-11-23", None)).await.unwrap();

    // When the phone retries the same request (a new entry id minted for it, as the service does)
    let retry = entry_on(&m, "2026-11-23", EntryType::Credit, 4_200);
    let replayed = store.record(&retry, Some(&idem), &recorded_event(&retry)).await;

    // Then it is answered with the entry recorded before the close, not refused: the client
    // must not take a recorded sale for a lost one
    assert_eq!(replayed.unwrap(), Recorded::Replayed(sale.clone()));
    // And the same key with another body is a conflict, a new key is refused, nothing is added
    let other = store.record(&retry, Some(&key("phone-7f3a", "another-request")), &recorded_event(&retry)).await;
    assert!(matches!(other, Err(StoreError::IdempotencyConflict)), "{other:?}");
    let fresh = store.record(&retry, Some(&key("phone-9b1c", "h")), &recorded_event(&retry)).await;
    assert!(
        matches!(fresh, Err(StoreError::DayClosed { first_open }) if first_open == date("2026-11-24")),
        "{fresh:?}"
    );
    assert_eq!(entries_of(&store, &m).await, vec![sale]);
}

async fn a_day_cannot_be_closed_twice_nor_behind_the_watermark(store: Arc<dyn LedgerStore>) {
    // Given a merchant whose books are closed through the 23rd
    let m = given_a_merchant(&store).await;
    store.close_day(&close_of(&m, "2026-11-23", None)).await.unwrap();

    // When the 23rd or the 20th is closed again, Then both are refused naming the watermark
    for day in ["2026-11-23", "2026-11-20"] {
        let again = store.close_day(&close_of(&m, day, None)).await;
        assert!(
            matches!(again, Err(StoreError::AlreadyClosed { through }) if through == date("2026-11-23")),
            "{again:?}"
        );
    }
    // And a later day can still be closed, moving the watermark forward
    store.close_day(&close_of(&m, "2026-11-25", None)).await.unwrap();
    assert_eq!(store.closed_through(m.id).await.unwrap(), Some(date("2026-11-25")));
    assert_eq!(store.day_closes(m.id, date("2026-11-01"), date("2026-11-30")).await.unwrap().len(), 2);
}

async fn an_adjustment_is_stored_on_the_open_day_carrying_the_day_it_was_meant_for(store: Arc<dyn LedgerStore>) {
    // Given a merchant whose books are closed through the 23rd
    let m = given_a_merchant(&store).await;
    store.close_day(&close_of(&m, "2026-11-23", None)).await.unwrap();

    // When a sale of the 20th is recorded as an adjustment on the 24th
    let adjustment =
        entry_on(&m, "2026-11-20", EntryType::Credit, 2_500).adjusted_into(date("2026-11-24"), date("2026-11-20"));
    let recorded = record(&store, &adjustment).await.unwrap();

    // Then it is stored on the 24th carrying the 20th, read back whole by id and in the 24th's
    // page, and the closed 20th holds nothing
    assert_eq!(recorded, Recorded::Created(adjustment.clone()));
    assert_eq!(store.entry(m.id, adjustment.id).await.unwrap(), Some(adjustment.clone()));
    assert_eq!(entries_of(&store, &m).await, vec![adjustment.clone()]);
    assert_eq!(adjustment.adjusts_date, Some(date("2026-11-20")));
    let totals = store.day_totals(m.id, date("2026-11-20"), date("2026-11-24")).await.unwrap();
    assert_eq!(totals.iter().map(|(d, _)| *d).collect::<Vec<_>>(), vec![date("2026-11-24")]);
}

fn reopen_of(m: &Merchant, day: &str) -> ReopenDay {
    ReopenDay {
        merchant_id: m.id,
        date: date(day),
        reopened_at: now(),
        reopened_by: "gerente@padaria".to_owned(),
        reason: "venda lançada no dia errado".to_owned(),
    }
}

async fn a_reopen_moves_the_watermark_back_to_the_day_before_and_those_days_take_entries_again(
    store: Arc<dyn LedgerStore>,
) {
    // Given a merchant whose books are closed through the 23rd
    let m = given_a_merchant(&store).await;
    store.close_day(&close_of(&m, "2026-11-23", None)).await.unwrap();

    // When the books are reopened from the 21st
    let audit = store.reopen_day(&reopen_of(&m, "2026-11-21")).await.unwrap();

    // Then the watermark is the 20th, an entry of the 21st is taken, one of the 20th is still
    // refused naming the 21st, and the reopen says how the watermark moved
    assert_eq!(store.closed_through(m.id).await.unwrap(), Some(date("2026-11-20")));
    assert_eq!(
        (audit.action, audit.closed_through_before, audit.closed_through_after),
        (DayAction::Reopen, Some(date("2026-11-23")), Some(date("2026-11-20")))
    );
    assert_eq!(audit.reason.as_deref(), Some("venda lançada no dia errado"));
    record(&store, &entry_on(&m, "2026-11-21", EntryType::Credit, 100)).await.unwrap();
    let refused = record(&store, &entry_on(&m, "2026-11-20", EntryType::Credit, 100)).await;
    assert!(matches!(refused, Err(StoreError::DayClosed { first_open }) if first_open == date("2026-11-21")));
    // And the 21st can be closed again
    store.close_day(&close_of(&m, "2026-11-21", None)).await.unwrap();
}

async fn only_a_closed_day_can_be_reopened(store: Arc<dyn LedgerStore>) {
    // Given a merchant that never closed a day, When it reopens one, Then it is refused
    let m = given_a_merchant(&store).await;
    let never = store.reopen_day(&reopen_of(&m, "2026-11-23")).await;
    assert!(matches!(never, Err(StoreError::NotClosed { closed_through: None })), "{never:?}");

    // Given the books closed through the 23rd, When the 24th is reopened, Then it is refused
    // naming the watermark, which did not move
    store.close_day(&close_of(&m, "2026-11-23", None)).await.unwrap();
    let open = store.reopen_day(&reopen_of(&m, "2026-11-24")).await;
    assert!(
        matches!(open, Err(StoreError::NotClosed { closed_through: Some(d) }) if d == date("2026-11-23")),
        "{open:?}"
    );
    assert_eq!(store.closed_through(m.id).await.unwrap(), Some(date("2026-11-23")));
}

async fn closes_and_reopens_leave_an_audit_trail_and_ordered_events_for_consolidation(store: Arc<dyn LedgerStore>) {
    // Given a merchant
    let m = given_a_merchant(&store).await;
    let registered = store.outbox_batch(100).await.unwrap().len();

    // When it closes the 20th, closes the 23rd, reopens from the 22nd and closes the 25th
    store.close_day(&close_of(&m, "2026-11-20", Some(0))).await.unwrap();
    store.close_day(&close_of(&m, "2026-11-23", None)).await.unwrap();
    store.reopen_day(&reopen_of(&m, "2026-11-22")).await.unwrap();
    store.close_day(&close_of(&m, "2026-11-25", None)).await.unwrap();

    // Then the audit trail holds the four, in order, with how each moved the watermark
    let audit = store.day_audit(m.id, date("2026-11-01"), date("2026-11-30")).await.unwrap();
    let trail: Vec<_> = audit
        .iter()
        .map(|a| (a.action, a.date, a.closed_through_before, a.closed_through_after, a.by.as_str()))
        .collect();
    let d = |s| Some(date(s));
    assert_eq!(
        trail,
        vec![
            (DayAction::Close, date("2026-11-20"), None, d("2026-11-20"), "operator@padaria"),
            (DayAction::Close, date("2026-11-23"), d("2026-11-20"), d("2026-11-23"), "operator@padaria"),
            (DayAction::Reopen, date("2026-11-22"), d("2026-11-23"), d("2026-11-21"), "gerente@padaria"),
            (DayAction::Close, date("2026-11-25"), d("2026-11-21"), d("2026-11-25"), "operator@padaria"),
        ]
    );
    assert!(audit.windows(2).all(|w| w[0].seq < w[1].seq), "seq orders them");
    // And a range sees only its days' rows
    assert_eq!(store.day_audit(m.id, date("2026-11-21"), date("2026-11-23")).await.unwrap().len(), 2);

    // And one event per close or reopen went to the outbox, carrying the audit seq
    let events: Vec<Event> = store.outbox_batch(100).await.unwrap()[registered..]
        .iter()
        .map(|r| Event::from_json(&r.body).unwrap())
        .collect();
    let seqs: Vec<i64> = events
        .iter()
        .map(|e| match &e.body {
            EventBody::DayClosed(c) => c.seq,
            EventBody::DayReopened(r) => r.seq,
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(seqs, audit.iter().map(|a| a.seq).collect::<Vec<_>>());
    let EventBody::DayClosed(first) = &events[0].body else { panic!("a close") };
    assert_eq!((first.counted_cash, first.difference, first.previous_closed_through), (Some(0), Some(0), None));
    let EventBody::DayReopened(reopen) = &events[2].body else { panic!("a reopen") };
    assert_eq!((reopen.previous_closed_through, reopen.closed_through), (date("2026-11-23"), d("2026-11-21")));
}

/// How many writers race the close, each writing until it is refused.
const WRITERS: usize = 32;

async fn no_entry_slips_past_a_close_racing_many_backdating_writers(store: Arc<dyn LedgerStore>) {
    // Given a merchant with entries on the day to close, and writers recording more entries on
    // that day and the day before as fast as they can, each until it is refused
    let m = given_a_merchant(&store).await;
    record(&store, &entry_on(&m, "2026-11-23", EntryType::Credit, 1_000)).await.unwrap();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, m) = (store.clone(), m.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..100_000_i64 {
                    let day = if (w + i as usize).is_multiple_of(2) { "2026-11-23" } else { "2026-11-22" };
                    let kind = if i % 3 == 0 { EntryType::Debit } else { EntryType::Credit };
                    let e = entry_on(&m, day, kind, 1 + (w as i64 * 7 + i) % 500);
                    match record(&store, &e).await {
                        Ok(Recorded::Created(e)) => acknowledged.push(e),
                        Err(StoreError::DayClosed { first_open }) => return (acknowledged, Some(first_open)),
                        other => panic!("unexpected answer {other:?}"),
                    }
                }
                (acknowledged, None)
            })
        })
        .collect();

    // When the 23rd is closed while they write
    tokio::time::sleep(Duration::from_millis(50)).await;
    let close = store.close_day(&close_of(&m, "2026-11-23", None)).await.unwrap();
    let mut acknowledged = Vec::new();
    for writer in writers {
        let (entries, refused) = writer.await.unwrap();
        // (every writer was still writing when the close came: the race did happen)
        assert_eq!(refused, Some(date("2026-11-24")));
        acknowledged.extend(entries);
    }

    // Then every acknowledged entry is in the close's totals, and the close's totals are what
    // the stored entries say now: nothing was committed into a closed day after its snapshot
    let stored = entries_of_all(&store, &m).await;
    assert_eq!(stored.len(), acknowledged.len() + 1, "every acknowledged entry is stored, nothing else");
    let on_day: Vec<Entry> = stored.iter().filter(|e| e.business_date == date("2026-11-23")).cloned().collect();
    let credits: i64 = on_day.iter().filter(|e| e.kind == EntryType::Credit).map(|e| e.amount.minor()).sum();
    let debits: i64 = on_day.iter().filter(|e| e.kind == EntryType::Debit).map(|e| e.amount.minor()).sum();
    assert_eq!((close.credits_minor, close.debits_minor), (credits, debits));
    assert_eq!(close.entry_count, on_day.len() as u64);
    assert_eq!(close.expected_balance_minor, balance(&stored));
    assert_eq!(close.expected_balance_minor, balance(&acknowledged) + 1_000);
    eprintln!("{} entries acknowledged before the close, {WRITERS} writers refused after it", acknowledged.len());
}

/// Every entry of the merchant, however many.
async fn entries_of_all(store: &Arc<dyn LedgerStore>, m: &Merchant) -> Vec<Entry> {
    use cashflow_ledger::store::EntryQuery;
    let (from, to) = (date("2000-01-01"), date("2099-12-31"));
    let mut all: Vec<Entry> = Vec::new();
    loop {
        let after = all.last().map(|e| (e.business_date, e.id));
        let page = store.entries(m.id, &EntryQuery { from, to, after, limit: 500 }).await.unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}
