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
    // And the 24th's report shows which part of it adjusts the 22nd; the 22nd has none
    assert_eq!(
        day24["adjustments"],
        json!([{"adjusts_date": "2026-11-22", "total_credits": "25.00", "total_debits": "0.00", "entry_count": 1}])
    );
    assert_eq!(day22["adjustments"], json!([]));
    let range = app.get("/v1/balances/daily?from=2026-11-22&to=2026-11-24").await.json();
    assert_eq!(range["days"][2]["adjustments"], day24["adjustments"]);
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
    let day24 = app.balance("2026-11-24").await;
    assert_eq!(day24["closing_balance"], "0.00");
    assert_eq!(day24["adjustments"][0]["adjusts_date"], "2026-11-20");
    assert_eq!(day24["adjustments"][0]["total_debits"], "40.00");
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

#[tokio::test]
async fn a_reopen_moves_the_books_back_and_the_list_shows_who_closed_and_reopened_when_and_why() {
    // Given the books closed through the 23rd with cash counted
    let app = TestApp::spawn().await;
    app.record("credit", "150.00", "2026-11-23T10:00:00-03:00").await;
    let close =
        app.day("2026-11-23", "close", Some(json!({"counted_cash": "150.00", "note": "fim do expediente"}))).await;
    assert_eq!(close.status, StatusCode::CREATED, "{}", close.text);

    // When the 22nd is reopened with a reason
    let r = app.day("2026-11-22", "reopen", Some(json!({"reason": "venda de sábado no dia errado"}))).await;

    // Then the answer is the audit row, the 22nd takes entries again and the 21st does not
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let reopen = r.json();
    assert_eq!(reopen["action"], "reopen");
    assert_eq!(
        (reopen["closed_through_before"].as_str(), reopen["closed_through_after"].as_str()),
        (Some("2026-11-23"), Some("2026-11-21"))
    );
    assert_eq!(reopen["reason"], "venda de sábado no dia errado");
    assert_eq!(reopen["by"], "scoped-client");
    app.record("credit", "10.00", "2026-11-22T10:00:00-03:00").await;
    app.post_entry(
        json!({"type": "credit", "amount": "1.00", "description": "x", "occurred_at": "2026-11-21T10:00:00-03:00"}),
    )
    .await
    .assert_problem(StatusCode::CONFLICT, "day-closed");

    // And the list of the month has the close record, the watermark and both audit rows
    let days = app.get("/v1/days?from=2026-11-01&to=2026-11-30").await;
    assert_eq!(days.status, StatusCode::OK, "{}", days.text);
    let days = days.json();
    assert_eq!(days["closed_through"], "2026-11-21");
    assert_eq!(days["closes"].as_array().unwrap().len(), 1);
    assert_eq!(
        (days["closes"][0]["counted_cash"].as_str(), days["closes"][0]["difference"].as_str()),
        (Some("150.00"), Some("0.00"))
    );
    let actions: Vec<(&str, &str)> = days["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), a["date"].as_str().unwrap()))
        .collect();
    assert_eq!(actions, vec![("close", "2026-11-23"), ("reopen", "2026-11-22")]);
    assert_eq!(days["audit"][0]["reason"], "fim do expediente");
}

#[tokio::test]
async fn reopening_an_open_day_is_a_409_and_a_reopen_needs_its_scope_and_a_reason() {
    // Given the books closed through the 23rd
    let app = TestApp::spawn().await;
    assert_eq!(app.day("2026-11-23", "close", None).await.status, StatusCode::CREATED);

    // Then reopening the 24th (open) is a 409 naming the watermark
    let open = app.day("2026-11-24", "reopen", Some(json!({"reason": "engano"}))).await;
    open.assert_problem(StatusCode::CONFLICT, "day-not-closed");
    assert!(open.json()["detail"].as_str().unwrap().contains("2026-11-23"), "{}", open.text);

    // And a reopen without reason, with a blank one or an unknown field is a 400 problem
    for body in [json!({}), json!({"reason": "  "}), json!({"reason": "x", "extra": 1})] {
        let r = app.day("2026-11-23", "reopen", Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
    }
    app.day("2026-11-23", "reopen", None)
        .await
        .assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");

    // And a token that may close but not reopen gets a 403
    let token = app.token_with(&[Scope::DaysClose]);
    let r = app.call(Method::POST, "/v1/days/2026-11-23/reopen", Some(&token), Some(json!({"reason": "x"}))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);

    // And nothing moved
    assert_eq!(app.get("/v1/days?from=2026-11-01&to=2026-11-30").await.json()["closed_through"], "2026-11-23");
}

#[tokio::test]
async fn the_days_list_needs_a_valid_bounded_range_and_reports_read() {
    let app = TestApp::spawn().await;
    for query in ["", "?from=2026-11-30&to=2026-11-01", "?from=2025-01-01&to=2026-11-30", "?from=x&to=2026-11-01"] {
        let r = app.get(&format!("/v1/days{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.text);
    }
    let token = app.token_with(&[Scope::EntriesWrite]);
    let r = app.call(Method::GET, "/v1/days?from=2026-11-01&to=2026-11-30", Some(&token), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let empty = app.get("/v1/days?from=2026-11-01&to=2026-11-30").await.json();
    assert_eq!(empty, json!({"closed_through": null, "closes": [], "audit": []}));
}

impl TestApp {
    /// `GET /v1/balances/daily/{date}` with optional `If-None-Match`.
    async fn daily_report(&self, date: &str, if_none_match: Option<&str>) -> crate::helpers::TestResponse {
        let mut request = axum::http::Request::builder()
            .uri(format!("/v1/balances/daily/{date}"))
            .header(axum::http::header::AUTHORIZATION, format!("Bearer {}", self.token));
        if let Some(tag) = if_none_match {
            request = request.header(axum::http::header::IF_NONE_MATCH, tag);
        }
        self.send(request.body(axum::body::Body::empty()).unwrap()).await
    }
}

#[tokio::test]
async fn a_closed_days_report_says_so_and_is_served_with_an_etag_that_a_reopen_changes() {
    closed_day_reports_and_their_etags(TestApp::spawn().await).await;
}

#[tokio::test]
#[cfg_attr(not(redis_tests), ignore = "set CASHFLOW_TEST_REDIS_URL to cache the reports in Redis")]
async fn a_closed_days_report_cached_in_redis_turns_open_on_a_reopen_and_its_etag_changes() {
    let url = std::env::var("CASHFLOW_TEST_REDIS_URL").expect("CASHFLOW_TEST_REDIS_URL");
    closed_day_reports_and_their_etags(TestApp::spawn_with_cache(Some(&url)).await).await;
}

/// The closed-day report rules, whichever cache holds the reports (each read below after a
/// change is a cache entry the consumer had to invalidate).
async fn closed_day_reports_and_their_etags(app: TestApp) {
    // Given sales on the 22nd and 23rd, the 23rd's report read (and cached) while open
    app.record("credit", "100.00", "2026-11-22T10:00:00-03:00").await;
    app.record("credit", "150.00", "2026-11-23T10:00:00-03:00").await;
    app.consolidate().await;
    let open = app.daily_report("2026-11-23", None).await;
    assert_eq!((open.json()["closed"].as_bool(), open.json()["closed_at"].as_str()), (Some(false), None));
    assert!(open.headers.get("etag").is_none(), "an open day's report has no ETag");

    // When the 23rd is closed with 240.00 counted and consolidation hears of it
    let close = app.day("2026-11-23", "close", Some(json!({"counted_cash": "240.00"}))).await;
    assert_eq!(close.status, StatusCode::CREATED, "{}", close.text);
    app.consolidate().await;

    // Then its report is closed, with the close's time, the counted cash and the difference,
    // an ETag and a long private Cache-Control; the 22nd (closed with it) has no count
    let closed = app.daily_report("2026-11-23", None).await;
    assert_eq!(closed.status, StatusCode::OK);
    let report = closed.json();
    assert_eq!(report["closed"], true);
    assert_eq!(report["closed_at"], close.json()["closed_at"]);
    assert_eq!((report["counted_cash"].as_str(), report["difference"].as_str()), (Some("240.00"), Some("-10.00")));
    assert_eq!(closed.headers["cache-control"], "private, max-age=86400");
    let etag = closed.headers["etag"].to_str().unwrap().to_owned();
    let day22 = app.balance("2026-11-22").await;
    assert_eq!((day22["closed"].as_bool(), day22["counted_cash"].as_str()), (Some(true), None));

    // And If-None-Match with that tag is a 304 without a body, from the cache as from the store
    for _ in 0..2 {
        let again = app.daily_report("2026-11-23", Some(&etag)).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED);
        assert_eq!((again.headers["etag"].to_str().unwrap(), again.text.as_str()), (etag.as_str(), ""));
    }
    assert_eq!(app.daily_report("2026-11-23", Some("\"other\"")).await.status, StatusCode::OK);

    // When the 23rd is reopened, Then the report is open again and the old tag no longer matches
    let reopen = app.day("2026-11-23", "reopen", Some(json!({"reason": "recontagem"}))).await;
    assert_eq!(reopen.status, StatusCode::OK, "{}", reopen.text);
    app.consolidate().await;
    let reopened = app.daily_report("2026-11-23", Some(&etag)).await;
    assert_eq!(reopened.status, StatusCode::OK);
    assert_eq!((reopened.json()["closed"].as_bool(), reopened.json()["counted_cash"].as_str()), (Some(false), None));
    assert!(reopened.headers.get("etag").is_none());
    assert_eq!(app.balance("2026-11-22").await["closed"], true, "the 22nd stays closed");

    // And closing it again gives a new tag
    assert_eq!(app.day("2026-11-23", "close", None).await.status, StatusCode::CREATED);
    app.consolidate().await;
    let reclosed = app.daily_report("2026-11-23", None).await;
    assert_ne!(reclosed.headers["etag"].to_str().unwrap(), etag);
    assert_eq!(reclosed.json()["counted_cash"], Value::Null);
}

#[tokio::test]
async fn the_range_report_and_its_csv_carry_the_close_columns() {
    // Given the 21st closed with cash counted
    let app = TestApp::spawn().await;
    app.record("credit", "10.00", "2026-11-21T10:00:00-03:00").await;
    assert_eq!(
        app.day("2026-11-21", "close", Some(json!({"counted_cash": "10.00"}))).await.status,
        StatusCode::CREATED
    );
    app.consolidate().await;

    // When the 21st and 22nd are read as JSON and as CSV
    let range = app.get("/v1/balances/daily?from=2026-11-21&to=2026-11-22").await.json();
    let request = axum::http::Request::builder()
        .uri("/v1/balances/daily?from=2026-11-21&to=2026-11-22")
        .header(axum::http::header::AUTHORIZATION, format!("Bearer {}", app.token))
        .header(axum::http::header::ACCEPT, "text/csv")
        .body(axum::body::Body::empty())
        .unwrap();
    let csv = app.send(request).await.text;

    // Then the 21st is closed with its count and the 22nd is open, in both
    assert_eq!(
        (range["days"][0]["closed"].as_bool(), range["days"][0]["difference"].as_str()),
        (Some(true), Some("0.00"))
    );
    assert_eq!((range["days"][1]["closed"].as_bool(), range["days"][1]["closed_at"].as_str()), (Some(false), None));
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].ends_with(",closed,closed_at,counted_cash,difference"), "{}", lines[0]);
    let closed_at = range["days"][0]["closed_at"].as_str().unwrap();
    assert_eq!(lines[1], format!("2026-11-21,BRL,0.00,10.00,0.00,10.00,10.00,1,true,{closed_at},10.00,0.00"));
    assert_eq!(lines[2], "2026-11-22,BRL,10.00,0.00,0.00,0.00,10.00,0,false,,,");
}

#[tokio::test]
async fn the_openapi_document_describes_closing_reopening_listing_and_closed_day_reports() {
    let doc = TestApp::spawn().await.get("/openapi.json").await.json();
    let paths = &doc["paths"];
    assert!(paths["/v1/days/{date}/close"]["post"].is_object());
    let reopen = &paths["/v1/days/{date}/reopen"]["post"];
    for status in ["200", "400", "403", "409", "415"] {
        assert!(reopen["responses"][status].is_object(), "reopen {status}");
    }
    assert_eq!(reopen["security"][0]["bearer"], json!(["days:reopen"]));
    assert_eq!(paths["/v1/days"]["get"]["security"][0]["bearer"], json!(["reports:read"]));
    let daily = &paths["/v1/balances/daily/{date}"]["get"]["responses"];
    assert!(daily["304"].is_object());
    assert!(daily["200"]["headers"]["ETag"].is_object());
    let schemas = &doc["components"]["schemas"];
    for field in ["closed", "closed_at", "counted_cash", "difference", "adjustments"] {
        assert!(schemas["DailyBalanceResponse"]["properties"][field].is_object(), "report field {field}");
    }
    assert!(schemas["CreateEntryRequest"]["properties"]["adjust_into_open_day"].is_object());
    assert!(schemas["EntryResponse"]["properties"]["adjusts_date"].is_object());
    assert!(schemas["DaysResponse"]["properties"]["audit"].is_object());
}

#[tokio::test]
async fn an_adjustment_sent_again_with_its_idempotency_key_is_replayed_not_recorded_twice() {
    // Given the books closed through the 23rd and an adjustment of the 22nd sent with a key
    let app = TestApp::spawn().await;
    assert_eq!(app.day("2026-11-23", "close", None).await.status, StatusCode::CREATED);
    let body = json!({"type": "credit", "amount": "25.00", "description": "Venda esquecida",
                      "occurred_at": "2026-11-22T15:00:00-03:00", "adjust_into_open_day": true});
    let first = app.post_with_key("esquecida-1", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);

    // When it is sent again with the same key
    let again = app.post_with_key("esquecida-1", body).await;

    // Then it is the same entry, replayed, and the 24th holds it once
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.json(), first.json());
    assert_eq!(app.get("/v1/entries?date=2026-11-24").await.json()["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_empty_drawer_closes_the_day_with_the_whole_balance_as_the_difference() {
    // Given a day with 12.50 of sales
    let app = TestApp::spawn().await;
    let token = app.token.clone();
    let sale = json!({"type": "credit", "amount": "12.50", "description": "venda", "occurred_at": "2026-11-23T10:00:00-03:00"});
    assert_eq!(app.call(Method::POST, "/v1/entries", Some(&token), Some(sale)).await.status, StatusCode::CREATED);

    // When the till is closed with nothing counted in it
    let close = app.day("2026-11-23", "close", Some(json!({"counted_cash": "0.00"}))).await;

    // Then the close records a count of zero and the whole balance missing
    assert_eq!(close.status, StatusCode::CREATED, "{}", close.text);
    let record = close.json();
    assert_eq!((record["counted_cash"].as_str(), record["difference"].as_str()), (Some("0.00"), Some("-12.50")));
}
