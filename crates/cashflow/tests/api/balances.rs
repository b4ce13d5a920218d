//! Daily balances: totals, carry-over, backdating, ranges and CSV.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};

use crate::helpers::TestApp;

#[tokio::test]
async fn the_daily_balance_sums_the_days_entries() {
    let app = TestApp::spawn().await;
    app.record("credit", "150.00", "2026-11-23T09:00:00-03:00").await;
    app.record("credit", "49.90", "2026-11-23T12:00:00-03:00").await;
    app.record("debit", "30.00", "2026-11-23T18:00:00-03:00").await;
    app.consolidate().await;
    let day = app.balance("2026-11-23").await;
    assert_eq!(day["date"], "2026-11-23");
    assert_eq!(day["currency"], "BRL");
    assert_eq!(day["opening_balance"], "0.00");
    assert_eq!(day["total_credits"], "199.90");
    assert_eq!(day["total_debits"], "30.00");
    assert_eq!(day["net"], "169.90");
    assert_eq!(day["closing_balance"], "169.90");
    assert_eq!(day["entry_count"], 3);
    assert!(day["as_of"].as_str().unwrap().ends_with('Z'), "{day}");
}

#[tokio::test]
async fn a_day_without_entries_carries_the_previous_closing() {
    let app = TestApp::spawn().await;
    app.record("credit", "80.00", "2026-11-20T10:00:00-03:00").await;
    app.consolidate().await;
    let quiet = app.balance("2026-11-22").await;
    assert_eq!(quiet["opening_balance"], "80.00");
    assert_eq!(quiet["closing_balance"], "80.00");
    assert_eq!(quiet["total_credits"], "0.00");
    assert_eq!(quiet["entry_count"], 0);
}

#[tokio::test]
async fn a_backdated_entry_changes_its_day_and_every_later_day() {
    let app = TestApp::spawn().await;
    app.record("credit", "100.00", "2026-11-22T10:00:00-03:00").await;
    app.consolidate().await;
    // Read (and cache) the later days first.
    assert_eq!(app.balance("2026-11-22").await["closing_balance"], "100.00");
    assert_eq!(app.balance("2026-11-23").await["opening_balance"], "100.00");

    app.record("debit", "40.00", "2026-11-10T10:00:00-03:00").await;
    app.consolidate().await;
    assert_eq!(app.balance("2026-11-10").await["closing_balance"], "-40.00");
    let later = app.balance("2026-11-22").await;
    assert_eq!(later["opening_balance"], "-40.00", "the cached report was invalidated: {later}");
    assert_eq!(later["closing_balance"], "60.00");
    assert_eq!(app.balance("2026-11-23").await["closing_balance"], "60.00");
}

#[tokio::test]
async fn a_range_report_lists_every_day_with_running_balances() {
    let app = TestApp::spawn().await;
    app.record("credit", "10.00", "2026-11-20T10:00:00-03:00").await;
    app.record("debit", "3.00", "2026-11-22T10:00:00-03:00").await;
    app.consolidate().await;
    let r = app.get("/v1/balances/daily?from=2026-11-19&to=2026-11-23").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let report = r.json();
    assert_eq!(report["currency"], "BRL");
    let days = report["days"].as_array().unwrap();
    let closings: Vec<_> = days.iter().map(|d| d["closing_balance"].as_str().unwrap()).collect();
    assert_eq!(closings, ["0.00", "10.00", "10.00", "7.00", "7.00"]);
    assert_eq!(days[0]["date"], "2026-11-19");
    assert_eq!(days[4]["date"], "2026-11-23");
}

#[tokio::test]
async fn a_range_report_is_available_as_csv() {
    let app = TestApp::spawn().await;
    app.record("credit", "10.00", "2026-11-20T10:00:00-03:00").await;
    app.consolidate().await;
    let request = Request::builder()
        .method(Method::GET)
        .uri("/v1/balances/daily?from=2026-11-20&to=2026-11-21")
        .header(header::AUTHORIZATION, format!("Bearer {}", app.token))
        .header(header::ACCEPT, "text/csv")
        .body(Body::empty())
        .unwrap();
    let r = app.send(request).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/csv"));
    let lines: Vec<_> = r.text.lines().collect();
    assert_eq!(
        lines,
        [
            "date,currency,opening_balance,total_credits,total_debits,net,closing_balance,entry_count,closed,closed_at,counted_cash,difference",
            "2026-11-20,BRL,0.00,10.00,0.00,10.00,10.00,1,false,,,",
            "2026-11-21,BRL,10.00,0.00,0.00,0.00,10.00,0,false,,,",
        ]
    );
}

#[tokio::test]
async fn as_of_tells_which_ledger_commit_the_report_reflects() {
    let app = TestApp::spawn().await;
    let entry = app.record("credit", "1.00", "2026-11-20T10:00:00-03:00").await;
    app.consolidate().await;
    let as_of = app.balance("2026-11-20").await["as_of"].as_str().unwrap().to_owned();
    let recorded = chrono::DateTime::parse_from_rfc3339(entry["recorded_at"].as_str().unwrap()).unwrap();
    assert_eq!(chrono::DateTime::parse_from_rfc3339(&as_of).unwrap(), recorded);
}
