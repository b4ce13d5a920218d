//! Recording, reading, listing and reversing entries.

use axum::http::{header, Method, StatusCode};
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn a_recorded_entry_is_returned_with_its_business_date_and_location() {
    let app = TestApp::spawn().await;
    let r = app
        .post_entry(json!({
            "type": "credit", "amount": "150.00", "description": "Venda balcão",
            "occurred_at": "2026-11-23T22:30:00-03:00", "category": "sales"
        }))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let entry = r.json();
    assert_eq!(entry["type"], "credit");
    assert_eq!(entry["amount"], "150.00");
    assert_eq!(entry["currency"], "BRL");
    assert_eq!(entry["category"], "sales");
    assert_eq!(entry["business_date"], "2026-11-23", "22:30 in São Paulo is still the 23rd");
    assert_eq!(entry["occurred_at"], "2026-11-23T22:30:00-03:00");
    assert_eq!(entry["reversal_of"], serde_json::Value::Null);
    let id = entry["id"].as_str().unwrap();
    assert_eq!(r.headers[header::LOCATION], format!("/v1/entries/{id}"));

    let fetched = app.get(&format!("/v1/entries/{id}")).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.json(), entry, "reading back gives exactly what the write returned");
}

#[tokio::test]
async fn occurred_at_defaults_to_now() {
    let app = TestApp::spawn().await;
    let r = app.post_entry(json!({"type": "debit", "amount": "10", "description": "Troco"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let today = chrono::Utc::now().with_timezone(&chrono_tz::America::Sao_Paulo).date_naive().to_string();
    assert_eq!(r.json()["business_date"], today);
    assert_eq!(r.json()["amount"], "10.00");
}

#[tokio::test]
async fn the_same_idempotency_key_and_body_returns_the_original_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let body = json!({"type": "credit", "amount": "99.90", "description": "Pedido 42", "occurred_at": "2026-11-20T10:00:00-03:00"});
    let first = app.post_with_key("order-42", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = app.post_with_key("order-42", body.clone()).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.json(), first.json());

    let different = app.post_with_key("order-42", json!({"type": "credit", "amount": "100.00", "description": "Pedido 42", "occurred_at": "2026-11-20T10:00:00-03:00"})).await;
    different.assert_problem(StatusCode::CONFLICT, "idempotency-key-reused");

    let listed = app.get("/v1/entries?date=2026-11-20").await.json();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "one entry, however often it was sent");
    app.consolidate().await;
    assert_eq!(app.balance("2026-11-20").await["total_credits"], "99.90");
}

#[tokio::test]
async fn a_reversal_records_the_opposite_entry_once() {
    let app = TestApp::spawn().await;
    let original = app.record("credit", "50.00", "2026-11-20T10:00:00-03:00").await;
    let id = original["id"].as_str().unwrap();
    let path = format!("/v1/entries/{id}/reversal");
    let token = app.token.clone();
    let r = app.call(Method::POST, &path, Some(&token), Some(json!({"description": "Cliente devolveu"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let reversal = r.json();
    assert_eq!(reversal["type"], "debit");
    assert_eq!(reversal["amount"], "50.00");
    assert_eq!(reversal["reversal_of"], id);
    assert_eq!(reversal["description"], "Cliente devolveu");

    let twice = app.call(Method::POST, &path, Some(&token), None).await;
    twice.assert_problem(StatusCode::CONFLICT, "already-reversed");
    let reversal_path = format!("/v1/entries/{}/reversal", reversal["id"].as_str().unwrap());
    let of_reversal = app.call(Method::POST, &reversal_path, Some(&token), None).await;
    of_reversal.assert_problem(StatusCode::CONFLICT, "cannot-reverse-a-reversal");

    // The original is untouched.
    assert_eq!(app.get(&format!("/v1/entries/{id}")).await.json(), original);
    // The books net to zero from the reversal's day on.
    app.consolidate().await;
    let today = reversal["business_date"].as_str().unwrap();
    assert_eq!(app.balance(today).await["closing_balance"], "0.00");
}

#[tokio::test]
async fn listing_pages_through_every_entry_of_a_range_exactly_once() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for day in 20..=22 {
        for hour in 10..14 {
            let e = app.record("credit", "1.00", &format!("2026-11-{day}T{hour}:00:00-03:00")).await;
            ids.push(e["id"].as_str().unwrap().to_owned());
        }
    }
    app.record("credit", "1.00", "2026-11-19T10:00:00-03:00").await; // outside the range
    let mut seen = Vec::new();
    let mut path = "/v1/entries?from=2026-11-20&to=2026-11-22&limit=5".to_owned();
    loop {
        let page = app.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        let page = page.json();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 5);
        seen.extend(items.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/entries?from=2026-11-20&to=2026-11-22&limit=5&cursor={cursor}"),
            None => break,
        }
    }
    ids.sort();
    let mut sorted_seen = seen.clone();
    sorted_seen.sort();
    assert_eq!(sorted_seen, ids, "every entry once, none from outside the range");

    let one_day = app.get("/v1/entries?date=2026-11-21").await.json();
    assert_eq!(one_day["items"].as_array().unwrap().len(), 4);
    assert_eq!(one_day["next_cursor"], serde_json::Value::Null);
}

#[tokio::test]
async fn a_merchant_can_neither_read_nor_reverse_another_merchants_entries() {
    let app = TestApp::spawn().await;
    let theirs = app.record("credit", "75.00", "2026-11-20T10:00:00-03:00").await;
    let id = theirs["id"].as_str().unwrap();
    let (_, intruder) = app.another_merchant().await;

    let read = app.call(Method::GET, &format!("/v1/entries/{id}"), Some(&intruder), None).await;
    read.assert_problem(StatusCode::NOT_FOUND, "not-found");
    let reverse = app.call(Method::POST, &format!("/v1/entries/{id}/reversal"), Some(&intruder), None).await;
    reverse.assert_problem(StatusCode::NOT_FOUND, "not-found");
    let list = app.call(Method::GET, "/v1/entries?date=2026-11-20", Some(&intruder), None).await;
    assert_eq!(list.json()["items"].as_array().unwrap().len(), 0);
    app.consolidate().await;
    let report = app.call(Method::GET, "/v1/balances/daily/2026-11-20", Some(&intruder), None).await;
    assert_eq!(report.json()["total_credits"], "0.00");
    assert_eq!(app.balance("2026-11-20").await["total_credits"], "75.00");
}

#[tokio::test]
async fn the_callers_trace_context_follows_the_entry_to_the_queue() {
    let app = TestApp::spawn().await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/v1/entries")
        .header(header::AUTHORIZATION, format!("Bearer {}", app.token))
        .header(header::CONTENT_TYPE, "application/json")
        .header("traceparent", incoming)
        .body(axum::body::Body::from(json!({"type": "credit", "amount": "1.00", "description": "traced"}).to_string()))
        .unwrap();
    let r = app.send(request).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let echoed = r.headers["traceparent"].to_str().unwrap();
    assert!(echoed.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "same trace, our own span: {echoed}");
    assert_ne!(echoed, incoming);

    // The event on the queue carries it, for the consolidator (and SQS message attributes).
    app.app.relay().drain().await.unwrap();
    let deliveries = app.app.queue.source.receive(10, std::time::Duration::ZERO).await.unwrap();
    let traces: Vec<_> = deliveries.iter().filter_map(|d| cashflow_events::Event::trace_of(&d.body)).collect();
    assert_eq!(traces, [echoed.to_owned()]);
}

#[tokio::test]
async fn a_request_without_trace_context_starts_one_from_its_request_id() {
    let app = TestApp::spawn().await;
    let r = app.post_entry(json!({"type": "credit", "amount": "1.00", "description": "untraced"})).await;
    let traceparent = r.headers["traceparent"].to_str().unwrap();
    let request_id = r.headers["x-request-id"].to_str().unwrap().replace('-', "");
    assert!(cashflow_http::context::is_valid(traceparent), "{traceparent}");
    assert_eq!(cashflow_http::context::trace_id(traceparent), Some(request_id.as_str()));
}

#[tokio::test]
async fn the_merchant_endpoint_gives_the_tokens_merchant_currency_and_time_zone() {
    let app = TestApp::spawn().await;
    let r = app.get("/v1/merchant").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let merchant = r.json();
    assert_eq!(merchant["currency"], "BRL");
    assert_eq!(merchant["minor_digits"], 2);
    assert_eq!(merchant["time_zone"], "America/Sao_Paulo");

    let anonymous = app.call(Method::GET, "/v1/merchant", None, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}
