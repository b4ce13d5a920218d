//! Closing the day through the API: adjustments into the first open day, reversals of a
//! closed day's entries, reopening, the list of closes with their audit trail, and the reports
//! of closed days.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use cashflow_auth::Scope;

use crate::helpers::TestApp;

impl TestApp {
    /// `POST /v1/days/{date}/{action}` with a token that may close and reopen days.
    pub async fn day(&self, date: &str, action: &str, body: Option<Value>) -> crate::helpers::TestResponse {
        let token = self.token_with(&[Scope::DaysClose, Scope::DaysReopen]);
        self.call(Method::POST, &format!("/v1/days/{date}/{action}"), Some(&token), body).await
    }
}

#[tokio::test]
async fn an_entry_for_a_closed_day_is_adjusted_into_the_first_open_day_when_asked() {
    // Given a merchant with a sale on the 22nd whose books are closed through the 23rd
    let app = TestApp::spawn().await;
    app.record("credit", "100.00", "2026-11-22T10:00:00-03:00").await;
    let closed = app.day("2026-11-23", "close", None).await;
    assert_eq!(closed.status, StatusCode::CREATED, "{}", closed.text);
    let forgotten = json!({"type": "credit", "amount": "25.00", "description": "Venda esquecida",
                           "occurred_at": "2026-11-22T15:00:00-03:00"});

    // When a forgotten sale of the 22nd is sent as is, Then it is refused naming the 24th
    let refused = app.post_entry(forgotten.clone()).await;
    refused.assert_problem(StatusCode::CONFLICT, "day-closed");
    assert!(refused.json()["detail"].as_str().unwrap().contains("2026-11-24"), "{}", refused.text);

    // When it is sent with adjust_into_open_day
    let mut adjusting = forgotten.clone();
    adjusting["adjust_into_open_day"] = json!(true);
    let r = app.post_entry(adjusting).await;

    // Then it is recorded on the 24th carrying the 22nd, the same when read back and listed
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let entry = r.json();
    assert_eq!(
        (entry["business_date"].as_str(), entry["adjusts_date"].as_str()),
        (Some("2026-11-24"), Some("2026-11-22"))
    );
    assert_eq!(entry["occurred_at"], "2026-11-22T15:00:00-03:00", "it still says when it happened");
    let id = entry["id"].as_str().unwrap();
    assert_eq!(app.get(&format!("/v1/entries/{id}")).await.json(), entry);
    assert_eq!(app.get("/v1/entries?date=2026-11-24").await.json()["items"], json!([entry]));
    assert_eq!(app.get("/v1/entries?date=2026-11-22").await.json()["items"].as_array().unwrap().len(), 1);

    // And the reports keep the closed 22nd as it was closed, the 24th counts the adjustment,
    // so the running balance is right from the 24th on
    app.consolidate().await;
    let (day22, day24) = (app.balance("2026-11-22").await, app.balance("2026-11-24").await);
    assert_eq!((day22["total_credits"].as_str(), day22["closing_balance"].as_str()), (Some("100.00"), Some("100.00")));
    assert_eq!((day24["total_credits"].as_str(), day24["closing_balance"].as_str()), (Some("25.00"), Some("125.00")));
}

#[tokio::test]
async fn adjusting_an_open_day_changes_nothing() {
    // Given a merchant whose books are closed through the 23rd
    let app = TestApp::spawn().await;
    assert_eq!(app.day("2026-11-23", "close", None).await.status, StatusCode::CREATED);

    // When an entry of the (open) 25th asks to be adjusted
    let r = app
        .post_entry(json!({"type": "debit", "amount": "5.00", "description": "Troco",
                           "occurred_at": "2026-11-25T09:00:00-03:00", "adjust_into_open_day": true}))
        .await;

    // Then it is an ordinary entry of the 25th
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!((r.json()["business_date"].as_str(), r.json()["adjusts_date"].as_str()), (Some("2026-11-25"), None));
}

#[tokio::test]
async fn the_reversal_of_a_closed_days_entry_is_dated_on_the_first_open_day() {
    // Given a sale of the 20th, and the books closed through the 23rd
    let app = TestApp::spawn().await;
    let sale = app.record("credit", "40.00", "2026-11-20T10:00:00-03:00").await;
    assert_eq!(app.day("2026-11-23", "close", None).await.status, StatusCode::CREATED);

    // When the sale is reversed
    let token = app.token.clone();
    let path = format!("/v1/entries/{}/reversal", sale["id"].as_str().unwrap());
    let r = app.call(Method::POST, &path, Some(&token), None).await;

    // Then the reversal counts on the 24th, adjusting the 20th, and the 20th's report is as closed
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let reversal = r.json();
    assert_eq!(
        (reversal["business_date"].as_str(), reversal["adjusts_date"].as_str()),
        (Some("2026-11-24"), Some("2026-11-20"))
    );
    assert_eq!(reversal["reversal_of"], sale["id"]);
    app.consolidate().await;
    assert_eq!(app.balance("2026-11-20").await["closing_balance"], "40.00");
    assert_eq!(app.balance("2026-11-24").await["closing_balance"], "0.00");
}

#[tokio::test]
async fn adjust_into_open_day_must_be_a_boolean() {
    let app = TestApp::spawn().await;
    let r = app
        .post_entry(json!({"type": "credit", "amount": "1.00", "description": "x", "adjust_into_open_day": "yes"}))
        .await;
    assert_eq!(r.status.as_u16() / 100, 4, "{}", r.text);
    assert_eq!(app.get("/v1/entries?from=2000-01-01&to=2099-12-31").await.json()["items"], json!([]));
}
