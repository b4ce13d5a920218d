//! The ledger does not depend on consolidation being up, and consolidation applies each
//! event exactly once in effect whatever the queue does.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use chrono::Utc;

use cashflow_domain::{Amount, BusinessDate, Currency, EntryId, EntryType};
use cashflow_events::{EntryRecorded, Event, EventBody, EventSource, OutboundMessage};

use crate::helpers::TestApp;

#[tokio::test]
async fn ledger_accepts_entries_while_consolidation_is_down() {
    let app = TestApp::spawn().await;
    // Consolidation is down: nobody consumes the queue. The relay still moves events.
    let mut expected_net = 0i64;
    for i in 1..=60i64 {
        let (kind, sign) = if i % 3 == 0 { ("debit", -1) } else { ("credit", 1) };
        let r = app
            .post_entry(serde_json::json!({
                "type": kind, "amount": format!("{i}.25"), "description": "while down",
                "occurred_at": format!("2026-11-{:02}T12:00:00-03:00", 10 + i % 5)
            }))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "write {i} failed while consolidation was down: {}", r.text);
        expected_net += sign * (i * 100 + 25);
    }
    app.app.relay().drain().await.unwrap();
    let stale = app.balance("2026-11-14").await;
    assert_eq!(stale["closing_balance"], "0.00", "nothing consolidated yet");

    // Consolidation comes back and catches up.
    let applied = app.app.consumer().drain().await.unwrap();
    assert_eq!(applied, 60);
    let closing = app.balance("2026-11-14").await["closing_balance"].as_str().unwrap().to_owned();
    assert_eq!(closing, Currency::BRL.format_minor(expected_net));
    let mut total = 0;
    for d in 10..=14 {
        total += app.balance(&format!("2026-11-{d}")).await["entry_count"].as_u64().unwrap();
    }
    assert_eq!(total, 60, "every entry counted exactly once");
}

fn entry_event(app: &TestApp, date: &str, kind: EntryType, minor: i64) -> Event {
    Event::new(
        Utc::now(),
        EventBody::EntryRecorded(EntryRecorded {
            merchant_id: app.merchant,
            entry_id: EntryId::new(),
            business_date: BusinessDate::parse(date).unwrap(),
            kind,
            amount: Amount::from_minor(minor).unwrap(),
            currency: Currency::BRL,
            recorded_at: Utc::now(),
            reversal_of: None,
            adjusts_date: None,
        }),
    )
}

fn message(e: &Event) -> OutboundMessage {
    OutboundMessage { event_id: e.event_id, body: e.to_json() }
}

#[tokio::test]
async fn redelivered_and_reordered_events_are_applied_once() {
    let app = TestApp::spawn().await;
    let queue = app.app.queue.publisher.clone();
    let events = [
        entry_event(&app, "2026-11-21", EntryType::Credit, 1_000),
        entry_event(&app, "2026-11-20", EntryType::Debit, 300),
        entry_event(&app, "2026-11-21", EntryType::Credit, 50),
    ];
    // Out of order...
    queue.publish(&[message(&events[2]), message(&events[0])]).await.unwrap();
    app.app.consumer().drain().await.unwrap();
    queue.publish(&[message(&events[1])]).await.unwrap();
    app.app.consumer().drain().await.unwrap();
    // ...then every event again, twice.
    for _ in 0..2 {
        queue.publish(&events.iter().map(message).collect::<Vec<_>>()).await.unwrap();
        app.app.consumer().drain().await.unwrap();
    }
    let day = app.balance("2026-11-21").await;
    assert_eq!(day["opening_balance"], "-3.00");
    assert_eq!(day["total_credits"], "10.50");
    assert_eq!(day["entry_count"], 2);
    assert_eq!(day["closing_balance"], "7.50");
}

#[tokio::test]
async fn a_poison_message_is_left_behind_and_the_rest_of_its_batch_applied() {
    let app = TestApp::spawn().await;
    let queue = app.app.queue.publisher.clone();
    let good = entry_event(&app, "2026-11-21", EntryType::Credit, 700);
    let poison = OutboundMessage { event_id: cashflow_domain::EventId::new(), body: "{\"not\":\"an event\"}".into() };
    queue.publish(&[poison, message(&good)]).await.unwrap();
    let acked = app.app.consumer().poll_once(Duration::ZERO).await.unwrap();
    assert_eq!(acked, 1);
    assert_eq!(app.balance("2026-11-21").await["total_credits"], "7.00");
    let source: Arc<dyn EventSource> = app.app.queue.source.clone();
    assert_eq!(source.depth().await.unwrap(), Some(1), "the poison message waits for redelivery or the DLQ");
}

#[tokio::test]
async fn a_redelivery_after_a_crash_before_invalidation_refreshes_the_cached_report() {
    let app = TestApp::spawn().await;
    let first = entry_event(&app, "2026-11-21", EntryType::Credit, 1_000);
    app.app.queue.publisher.publish(&[message(&first)]).await.unwrap();
    app.app.consumer().drain().await.unwrap();
    assert_eq!(app.balance("2026-11-21").await["total_credits"], "10.00"); // now cached

    // A consumer commits the second event, then dies before invalidating the cache or acking.
    let second = entry_event(&app, "2026-11-21", EntryType::Credit, 500);
    app.app.consolidation_store.apply(std::slice::from_ref(&second)).await.unwrap();
    assert_eq!(app.balance("2026-11-21").await["total_credits"], "10.00", "the crash window: stale cache");

    // The unacknowledged message is redelivered: a duplicate, but it still invalidates.
    app.app.queue.publisher.publish(&[message(&second)]).await.unwrap();
    app.app.consumer().drain().await.unwrap();
    assert_eq!(app.balance("2026-11-21").await["total_credits"], "15.00");
}
