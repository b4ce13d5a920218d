//! Every kind of bad input gets a clear 4xx problem, writes nothing, and leaves the server
//! serving.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::json;

use crate::helpers::TestApp;

fn raw_post(token: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri("/v1/entries")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap()
}

async fn assert_nothing_written(app: &TestApp) {
    let all = app.get("/v1/entries?from=1970-01-01&to=9999-12-31").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    assert_eq!(all.json()["items"].as_array().unwrap().len(), 0, "{}", all.text);
    assert_eq!(app.get("/health/live").await.status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_bodies_are_rejected() {
    let app = TestApp::spawn().await;
    let t = app.token.clone();
    app.send(raw_post(&t, "application/json", "{\"type\": \"credit\","))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "malformed-json");
    app.send(raw_post(&t, "text/plain", "hello"))
        .await
        .assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
    app.send(raw_post(&t, "application/json", "[]")).await.assert_problem(StatusCode::BAD_REQUEST, "invalid-body");
    let huge = json!({"type": "credit", "amount": "1.00", "description": "x".repeat(20_000)}).to_string();
    app.send(raw_post(&t, "application/json", huge))
        .await
        .assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn invalid_fields_are_rejected_with_their_name() {
    let app = TestApp::spawn().await;
    let base = json!({"type": "credit", "amount": "10.00", "description": "ok"});
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("type", json!("refund"), "invalid-type"),
        ("amount", json!("0.00"), "invalid-amount"),
        ("amount", json!("-5.00"), "invalid-amount"),
        ("amount", json!("1.234"), "invalid-amount"),
        ("amount", json!("1e3"), "invalid-amount"),
        ("amount", json!("99999999999999999999999"), "amount-too-large"),
        ("amount", json!("10000000000000.00"), "amount-too-large"),
        ("description", json!(""), "invalid-description"),
        ("description", json!("é".repeat(281)), "invalid-description"),
        ("category", json!("c".repeat(65)), "invalid-category"),
        ("occurred_at", json!("2026-13-01T00:00:00Z"), "invalid-occurred-at"),
        ("occurred_at", json!("2026-11-23T10:00:00"), "invalid-occurred-at"),
        ("occurred_at", json!("yesterday"), "invalid-occurred-at"),
        ("occurred_at", json!(future), "invalid-occurred-at"),
        ("occurred_at", json!("1969-12-31T23:59:59Z"), "invalid-occurred-at"),
    ];
    for (field, value, slug) in cases {
        let mut body = base.clone();
        body[field] = value.clone();
        let r = app.post_entry(body).await;
        r.assert_problem(StatusCode::BAD_REQUEST, slug);
        assert_eq!(r.json()["field"], field, "{field}={value}: {}", r.text);
    }
    // Wrong JSON types and unknown or missing fields are shape errors.
    for body in [
        json!({"type": "credit", "amount": 10.0, "description": "float"}),
        json!({"type": "credit", "amount": "10.00", "description": "x", "ammount": "1"}),
        json!({"type": "credit", "description": "no amount"}),
    ] {
        app.post_entry(body).await.assert_problem(StatusCode::BAD_REQUEST, "invalid-body");
    }
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn a_bad_idempotency_key_is_rejected() {
    let app = TestApp::spawn().await;
    let mut request = raw_post(
        &app.token,
        "application/json",
        json!({"type": "credit", "amount": "1.00", "description": "x"}).to_string(),
    );
    request.headers_mut().insert("idempotency-key", header::HeaderValue::from_str(&"k".repeat(300)).unwrap());
    app.send(request).await.assert_problem(StatusCode::BAD_REQUEST, "invalid-idempotency-key");
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn bad_queries_and_paths_are_rejected() {
    let app = TestApp::spawn().await;
    let cases = [
        ("/v1/entries", StatusCode::BAD_REQUEST, "invalid-query"),
        ("/v1/entries?date=2026-02-30", StatusCode::BAD_REQUEST, "invalid-date"),
        ("/v1/entries?from=2026-11-23&to=2026-11-01", StatusCode::BAD_REQUEST, "invalid-date-range"),
        ("/v1/entries?date=2026-11-23&limit=0", StatusCode::BAD_REQUEST, "invalid-limit"),
        ("/v1/entries?date=2026-11-23&limit=100000", StatusCode::BAD_REQUEST, "invalid-limit"),
        ("/v1/entries?date=2026-11-23&limit=-1", StatusCode::BAD_REQUEST, "invalid-query"),
        ("/v1/entries?date=2026-11-23&cursor=bm90LWEtY3Vyc29y", StatusCode::BAD_REQUEST, "invalid-cursor"),
        ("/v1/entries/not-a-uuid", StatusCode::BAD_REQUEST, "invalid-id"),
        ("/v1/entries/0192f5a0-0000-7000-8000-000000000000", StatusCode::NOT_FOUND, "not-found"),
        ("/v1/balances/daily/2026-11-31", StatusCode::BAD_REQUEST, "invalid-date"),
        ("/v1/balances/daily/today", StatusCode::BAD_REQUEST, "invalid-date"),
        ("/v1/balances/daily?from=2026-11-01", StatusCode::BAD_REQUEST, "invalid-query"),
        ("/v1/balances/daily?from=2026-11-02&to=2026-11-01", StatusCode::BAD_REQUEST, "invalid-date-range"),
        ("/v1/balances/daily?from=2020-01-01&to=2026-01-01", StatusCode::BAD_REQUEST, "date-range-too-long"),
    ];
    for (path, status, slug) in cases {
        let r = app.get(path).await;
        assert_eq!(r.status, status, "{path}: {}", r.text);
        r.assert_problem(status, slug);
    }
    let token = app.token.clone();
    app.call(Method::POST, "/v1/entries/not-a-uuid/reversal", Some(&token), None)
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid-id");
    assert_nothing_written(&app).await;
}
