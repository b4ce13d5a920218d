#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Each function's handler invoked in-process with the payloads AWS sends (fixtures under
//! `tests/fixtures`), over the embedded backends in a temporary directory.

use std::time::Duration;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use serde_json::{json, Value};

use cashflow::app::{AppConfig, Parts};
use cashflow_auth::Scopes;
use cashflow_consolidation::dedup::PruneSchedule;
use cashflow_domain::MerchantId;
use cashflow_events::{Event, EventBody};
use cashflow_lambda::http::{Api, HttpFunction};
use cashflow_lambda::{admin, consumer, sweep};
use common::merchant_and_token;

mod common;

const POISON_ID: &str = "2e1424d4-f796-459a-8184-9c92662be6da";
const EVENT_ID: &str = "059f36b4-87a3-44ab-83d2-661975830a7d";

fn parts(dir: &tempfile::TempDir) -> Parts {
    Parts::new(AppConfig::embedded(dir.path(), "http://cashflow.test", Duration::from_secs(600)))
}

fn post_entry(merchant: MerchantId, token: &str) -> lambda_http::Request {
    let text = include_str!("fixtures/http-api-v2-post-entry.json")
        .replace("{{TOKEN}}", token)
        .replace("{{MERCHANT}}", &merchant.to_string());
    lambda_http::request::from_str(&text).unwrap()
}

/// The fixture's batch with `events` in place of its one good message (the first keeps the
/// fixture's id, the others get ids of their own), and its poison message.
fn sqs_batch(events: &[String]) -> SqsEvent {
    let mut batch: Value = serde_json::from_str(include_str!("fixtures/sqs-batch.json")).unwrap();
    let records = batch["Records"].as_array_mut().unwrap();
    let (good, poison) = (records[0].clone(), records[1].clone());
    records.clear();
    for (i, event) in events.iter().enumerate() {
        let mut record = good.clone();
        record["body"] = Value::String(event.clone());
        if i > 0 {
            record["messageId"] = Value::String(format!("{EVENT_ID}-{i}"));
        }
        records.push(record);
    }
    records.push(poison);
    serde_json::from_value(batch).unwrap()
}

fn is_entry_recorded(body: &str) -> bool {
    matches!(Event::from_json(body).unwrap().body, EventBody::EntryRecorded(_))
}

fn scheduled() -> EventBridgeEvent {
    serde_json::from_str(include_str!("fixtures/eventbridge-scheduled.json")).unwrap()
}

async fn queued(parts: &Parts) -> Vec<String> {
    let deliveries = parts.queue().await.unwrap().source.receive(10, Duration::ZERO).await.unwrap();
    deliveries.into_iter().map(|d| d.body).collect()
}

/// A `ledger-api` over `dir` that recorded one entry, and the events it queued.
async fn ledger_api_with_one_entry_queued(dir: &tempfile::TempDir) -> (HttpFunction, Vec<String>) {
    let function = HttpFunction::new(Api::Ledger, parts(dir));
    let (merchant, token) = merchant_and_token(function.parts()).await;
    assert_eq!(function.handle(post_entry(merchant, &token)).await.unwrap().status(), 201);
    let events = queued(function.parts()).await;
    (function, events)
}

#[tokio::test]
async fn ledger_api_records_an_entry_and_publishes_its_event_before_answering() {
    let dir = tempfile::tempdir().unwrap();
    let function = HttpFunction::new(Api::Ledger, parts(&dir));
    let (merchant, token) = merchant_and_token(function.parts()).await;

    let response = function.handle(post_entry(merchant, &token)).await.unwrap();

    assert_eq!(response.status(), 201, "{:?}", response.body());
    let events = queued(function.parts()).await;
    assert_eq!(
        events.iter().filter(|e| is_entry_recorded(e)).count(),
        1,
        "the entry's event is on the queue when the function answers"
    );
}

#[tokio::test]
async fn ledger_api_publishes_only_the_events_its_own_request_committed() {
    // Given events other requests left in the outbox: the merchant's registration and an entry
    // recorded without the inline publish (the bare ledger router)
    let dir = tempfile::tempdir().unwrap();
    let function = HttpFunction::new(Api::Ledger, parts(&dir));
    let (merchant, token) = merchant_and_token(function.parts()).await;
    let ledger = function.parts().ledger_api().await.unwrap();
    let other = post_entry(merchant, &token).map(|body| axum::body::Body::from(body.to_vec()));
    assert_eq!(tower::ServiceExt::oneshot(ledger, other).await.unwrap().status(), 201);

    // When ledger-api records another entry
    let mut request = post_entry(merchant, &token);
    request.headers_mut().insert("idempotency-key", http::HeaderValue::from_static("a-second-sale"));
    let response = function.handle(request).await.unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.body());
    let lambda_http::Body::Text(recorded) = response.body() else { panic!("a JSON body") };
    let id = serde_json::from_str::<Value>(recorded).unwrap()["id"].as_str().unwrap().to_owned();

    // Then the queue holds its event alone; the others are left to the sweep
    let events = queued(function.parts()).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let EventBody::EntryRecorded(published) = Event::from_json(&events[0]).unwrap().body else {
        panic!("an entry's event: {}", events[0])
    };
    assert_eq!(published.entry_id.to_string(), id);
    assert_eq!(sweep::handle(function.parts(), scheduled()).await.unwrap(), sweep::Swept { published: 2 });
}

#[tokio::test]
async fn ledger_api_publishes_a_days_close_whose_event_the_store_makes() {
    // Given a merchant, and its owner's token, which may close days
    let dir = tempfile::tempdir().unwrap();
    let function = HttpFunction::new(Api::Ledger, parts(&dir));
    let (merchant, _) = merchant_and_token(function.parts()).await;
    let closing = Scopes::parse_list("days:close").unwrap();
    let token = function.parts().auth().await.unwrap().0.mint("maria", merchant, closing).unwrap().0;

    // When ledger-api closes one of its days
    let mut event: Value = serde_json::from_str(
        &include_str!("fixtures/http-api-v2-post-entry.json")
            .replace("{{TOKEN}}", &token)
            .replace("{{MERCHANT}}", &merchant.to_string()),
    )
    .unwrap();
    let path = "/v1/days/2026-11-23/close";
    event["routeKey"] = json!("POST /v1/days/{date}/close");
    event["rawPath"] = json!(path);
    event["requestContext"]["http"]["path"] = json!(path);
    event["body"] = json!(r#"{"counted_cash":"0.00"}"#);
    let response = function.handle(lambda_http::request::from_str(&event.to_string()).unwrap()).await.unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.body());

    // Then its event is on the queue when the function answers, though the ledger cannot name
    // it (the store makes it in the close's transaction): the function publishes the outbox
    let events = queued(function.parts()).await;
    assert!(events.iter().any(|e| matches!(Event::from_json(e).unwrap().body, EventBody::DayClosed(_))), "{events:?}");
}

#[tokio::test]
async fn ledger_api_refuses_a_request_whose_token_it_cannot_verify() {
    let dir = tempfile::tempdir().unwrap();
    let function = HttpFunction::new(Api::Ledger, parts(&dir));
    let (merchant, _) = merchant_and_token(function.parts()).await;

    let response = function.handle(post_entry(merchant, "not.a.jwt")).await.unwrap();

    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert!(queued(function.parts()).await.is_empty());
}

#[tokio::test]
async fn consumer_applies_the_batch_and_reports_only_the_poison_message() {
    let dir = tempfile::tempdir().unwrap();
    let (function, events) = ledger_api_with_one_entry_queued(&dir).await;

    let answer = consumer::handle(function.parts(), sqs_batch(&events)).await;

    let failed: Vec<_> = answer.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, [POISON_ID]);
    let wire = serde_json::to_value(&answer).unwrap();
    assert_eq!(wire, json!({ "batchItemFailures": [{ "itemIdentifier": POISON_ID }] }));

    let again = consumer::handle(function.parts(), sqs_batch(&events)).await;
    let failed: Vec<_> = again.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, [POISON_ID], "a redelivered event is a duplicate, applied once, not a failure");
    assert!(!failed.contains(&EVENT_ID));
}

#[tokio::test]
async fn consumer_prunes_deduplication_markers_past_the_window_after_its_batch() {
    // Given markers of events applied 20 days ago (past the 15-day window) and one of 10 days ago
    let dir = tempfile::tempdir().unwrap();
    let (function, events) = ledger_api_with_one_entry_queued(&dir).await;
    function.parts().consolidation_store().await.unwrap();
    let db = cashflow_db::open_sqlite(&format!("sqlite://{}", dir.path().join("consolidation.db").display()), 1)
        .await
        .unwrap();
    let days_ago = |days: i64| (chrono::Utc::now() - chrono::Duration::days(days)).timestamp_micros();
    for age in [20, 20, 20, 10] {
        sqlx::query("INSERT INTO processed_events (event_id, applied_at) VALUES (?1, ?2)")
            .bind(uuid::Uuid::new_v4().as_bytes().to_vec())
            .bind(days_ago(age))
            .execute(&db)
            .await
            .unwrap();
    }
    let markers = |older_than_days: i64| {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM processed_events WHERE applied_at < ?1")
            .bind(days_ago(older_than_days))
            .fetch_one(&db)
    };

    // When the consumer function applies a batch, its first invocation in this environment
    let pruning = PruneSchedule::new(Duration::from_secs(60));
    let answer = consumer::handle_with(function.parts(), &pruning, sqs_batch(&events)).await;
    assert_eq!(answer.batch_item_failures.len(), 1, "only the poison message fails");

    // Then the markers past the window are gone, and those inside it (the batch's own) stay
    assert_eq!(markers(15).await.unwrap(), 0);
    assert_eq!(markers(5).await.unwrap(), 1, "the marker of 10 days ago is inside the window");
    assert_eq!(markers(-1).await.unwrap(), 1 + events.len() as i64);
}

#[tokio::test]
async fn reports_api_shows_the_day_the_consumer_consolidated() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = HttpFunction::new(Api::Ledger, parts(&dir));
    let (merchant, token) = merchant_and_token(ledger.parts()).await;
    let recorded = ledger.handle(post_entry(merchant, &token)).await.unwrap();
    let lambda_http::Body::Text(recorded) = recorded.body() else { panic!("a JSON body") };
    let day = serde_json::from_str::<Value>(recorded).unwrap()["business_date"].as_str().unwrap().to_owned();
    let events = queued(ledger.parts()).await;
    consumer::handle(ledger.parts(), sqs_batch(&events)).await;
    let reports = HttpFunction::new(Api::Reports, parts(&dir));

    let mut request: Value = serde_json::from_str(
        &include_str!("fixtures/http-api-v2-post-entry.json")
            .replace("{{TOKEN}}", &token)
            .replace("{{MERCHANT}}", &merchant.to_string()),
    )
    .unwrap();
    request["routeKey"] = json!("GET /v1/balances/daily/{date}");
    request["rawPath"] = json!(format!("/v1/balances/daily/{day}"));
    request["requestContext"]["http"]["method"] = json!("GET");
    request["requestContext"]["http"]["path"] = json!(format!("/v1/balances/daily/{day}"));
    request.as_object_mut().unwrap().remove("body");
    let response = reports.handle(lambda_http::request::from_str(&request.to_string()).unwrap()).await.unwrap();

    assert_eq!(response.status(), 200, "{:?}", response.body());
    let lambda_http::Body::Text(body) = response.body() else { panic!("a JSON body") };
    assert!(body.contains("150.00") || body.contains("15000"), "{body}");
}

#[tokio::test]
async fn outbox_sweep_publishes_the_events_the_inline_publish_missed() {
    let dir = tempfile::tempdir().unwrap();
    let parts = parts(&dir);
    let (merchant, token) = merchant_and_token(&parts).await;
    // Given an entry committed without the inline publish (the bare ledger router).
    let router = parts.ledger_api().await.unwrap();
    let request = post_entry(merchant, &token).map(|body| axum::body::Body::from(body.to_vec()));
    let response = tower::ServiceExt::oneshot(router, request).await.unwrap();
    assert_eq!(response.status(), 201);
    assert!(queued(&parts).await.is_empty());

    let swept = sweep::handle(&parts, scheduled()).await.unwrap();

    // The merchant's event and the entry's.
    assert_eq!(swept, sweep::Swept { published: 2 });
    assert_eq!(queued(&parts).await.iter().filter(|e| is_entry_recorded(e)).count(), 1);
    assert_eq!(sweep::handle(&parts, scheduled()).await.unwrap(), sweep::Swept { published: 0 });
}

#[tokio::test]
async fn admin_migrates_and_creates_a_merchant_and_a_client() {
    let dir = tempfile::tempdir().unwrap();
    let parts = parts(&dir);

    let migrated = admin::handle(&parts, json!({ "command": "migrate" })).await.unwrap();
    assert_eq!(migrated, json!({ "migrated": ["ledger", "consolidation", "identity"] }));

    let merchant = admin::handle(&parts, json!({ "command": "merchant-create", "name": "Padaria" })).await.unwrap();
    let merchant = merchant["merchant_id"].as_str().unwrap().to_owned();

    let client = admin::handle(
        &parts,
        json!({ "command": "client-create", "merchant": merchant, "scopes": ["entries:write", "reports:read"] }),
    )
    .await
    .unwrap();
    assert!(client["client_id"].is_string() && client["client_secret"].is_string(), "{client}");
}

#[tokio::test]
async fn admin_refuses_bad_payloads_with_invalid_payload() {
    let dir = tempfile::tempdir().unwrap();
    let parts = parts(&dir);
    for payload in [
        json!({ "command": "drop-everything" }),
        json!({ "command": "migrate", "force": true }),
        json!({ "command": "merchant-create" }),
        json!({ "command": "merchant-create", "name": "Padaria", "currency": "XXX!" }),
        json!({ "command": "merchant-create", "name": "Padaria", "timezone": "Mars/Olympus" }),
        json!({ "command": "client-create", "merchant": "nope", "scopes": ["entries:write"] }),
    ] {
        let error = admin::handle(&parts, payload.clone()).await.unwrap_err();
        let diagnostic = lambda_runtime::Diagnostic::from(error);
        assert_eq!(diagnostic.error_type, "invalid_payload", "{payload}: {}", diagnostic.error_message);
    }
}

#[test]
fn the_database_secret_completes_the_database_url() {
    let url = cashflow_lambda::env::with_credentials(
        "postgres://cashflow@proxy.example:5432/cashflow?sslmode=verify-full",
        "cashflow",
        "p@ss/w:rd",
    )
    .unwrap();
    assert_eq!(url, "postgres://cashflow:p%40ss%2Fw%3Ard@proxy.example:5432/cashflow?sslmode=verify-full");
}

#[tokio::test]
async fn admin_links_a_subject_or_client_to_a_merchant_lists_and_unlinks_it() {
    // Given a merchant
    let dir = tempfile::tempdir().unwrap();
    let parts = parts(&dir);
    let merchant = admin::handle(&parts, json!({ "command": "merchant-create", "name": "Padaria" })).await.unwrap();
    let merchant = merchant["merchant_id"].as_str().unwrap().to_owned();

    // When a Cognito subject is linked with a scope cap, and a machine client without one
    let sub = "3f1c2a9e-8d4b-4c1e-9a7f-0b6e5d4c3b2a";
    let linked = admin::handle(
        &parts,
        json!({ "command": "identity-link", "merchant": merchant, "subject": sub, "scopes": ["reports:read"] }),
    )
    .await
    .unwrap();
    let client = json!({ "command": "identity-link", "merchant": merchant, "client_id": "5p8n3q1f0aq2l6dq9q7a3c1b0e" });
    admin::handle(&parts, client).await.unwrap();

    // Then the answers and the list are the CLI's `identity … --json`
    assert_eq!(
        (&linked["kind"], &linked["external_id"], &linked["merchant_id"]),
        (&json!("subject"), &json!(sub), &json!(merchant))
    );
    assert_eq!(linked["scopes"], "reports:read");
    let listed = admin::handle(&parts, json!({ "command": "identity-list" })).await.unwrap();
    let kinds: Vec<_> = listed.as_array().unwrap().iter().map(|l| (l["kind"].clone(), l["scopes"].clone())).collect();
    assert_eq!(kinds, vec![(json!("subject"), json!("reports:read")), (json!("client"), Value::Null)]);

    // And linking the subject again, to any merchant, is the payload's fault
    let again = json!({ "command": "identity-link", "merchant": merchant, "subject": sub });
    let error = admin::handle(&parts, again).await.unwrap_err();
    assert_eq!(error.error_type(), "invalid_payload", "{error}");

    // When it is unlinked, it is gone, and unlinking again is refused
    let unlinked = admin::handle(&parts, json!({ "command": "identity-unlink", "subject": sub })).await.unwrap();
    assert_eq!(unlinked["unlinked"], true);
    let error = admin::handle(&parts, json!({ "command": "identity-unlink", "subject": sub })).await.unwrap_err();
    assert_eq!(error.error_type(), "invalid_payload", "{error}");
    let listed = admin::handle(&parts, json!({ "command": "identity-list" })).await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
}

#[tokio::test]
async fn admin_refuses_identity_links_naming_no_one_both_or_an_unknown_merchant() {
    let dir = tempfile::tempdir().unwrap();
    let parts = parts(&dir);
    let merchant = admin::handle(&parts, json!({ "command": "merchant-create", "name": "Padaria" })).await.unwrap();
    let merchant = merchant["merchant_id"].as_str().unwrap().to_owned();
    for payload in [
        json!({ "command": "identity-link", "merchant": merchant }),
        json!({ "command": "identity-link", "merchant": merchant, "subject": "a", "client_id": "b" }),
        json!({ "command": "identity-link", "merchant": MerchantId::new().to_string(), "subject": "a" }),
        json!({ "command": "identity-link", "merchant": merchant, "subject": "a", "scopes": ["root"] }),
        json!({ "command": "identity-link", "merchant": merchant, "subject": " padded " }),
    ] {
        let error = admin::handle(&parts, payload.clone()).await.unwrap_err();
        assert_eq!(error.error_type(), "invalid_payload", "{payload}: {error}");
    }
}

#[tokio::test]
async fn a_warm_ledger_api_refuses_a_disabled_users_token_within_the_refresh_interval() {
    // Given a warm ledger-api that accepted maria's token
    let dir = tempfile::tempdir().unwrap();
    let parts = parts(&dir);
    let (merchant, token) = merchant_and_token(&parts).await;
    let identity = parts.identity().await.unwrap();
    let password = secrecy::SecretString::from("a long passphrase".to_owned());
    identity.create_user("maria", &password, merchant, Scopes::all()).await.unwrap();
    let function = HttpFunction::new(Api::Ledger, parts);
    assert_eq!(function.handle(post_entry(merchant, &token)).await.unwrap().status(), 201);

    // When an operator disables her (no background worker runs in the function)
    assert!(identity.set_user_disabled("maria", true).await.unwrap());
    let disabled_at = std::time::Instant::now();

    // Then a request after the interval reloads the revocations and is refused
    loop {
        let status = function.handle(post_entry(merchant, &token)).await.unwrap().status();
        if status == 401 {
            break;
        }
        assert!(disabled_at.elapsed() < cashflow_auth::REFRESH_INTERVAL + Duration::from_secs(1), "still {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An API Gateway HTTP API (v2) request for the web app: `method path`, the session cookie (in
/// the event's `cookies`, as API Gateway sends them) and `headers`, no authorizer context.
fn web_request(method: &str, path: &str, session: Option<&str>, headers: &[(&str, &str)]) -> lambda_http::Request {
    let mut event: Value =
        serde_json::from_str(&include_str!("fixtures/http-api-v2-post-entry.json").replace("{{TOKEN}}", "unused"))
            .unwrap();
    event["routeKey"] = json!(if path == "/" { "GET /" } else { "ANY /{proxy+}" });
    event["rawPath"] = json!(path);
    event["requestContext"]["http"]["method"] = json!(method);
    event["requestContext"]["http"]["path"] = json!(path);
    event["requestContext"].as_object_mut().unwrap().remove("authorizer");
    let map = event["headers"].as_object_mut().unwrap();
    map.remove("authorization");
    map.remove("content-type");
    map.remove("idempotency-key");
    for (name, value) in headers {
        map.insert((*name).to_owned(), json!(value));
    }
    if let Some(token) = session {
        event["cookies"] = json!([format!("cf_session={token}"), "cf_lang=pt-BR"]);
    }
    event.as_object_mut().unwrap().remove("body");
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

fn text(response: &lambda_http::Response<lambda_http::Body>) -> &str {
    match response.body() {
        lambda_http::Body::Text(text) => text,
        other => panic!("a text body, not {other:?}"),
    }
}

#[tokio::test]
async fn the_web_function_serves_the_app_and_its_live_panel_is_polled_with_etags() {
    // Given the web function and a signed-in merchant (the session cookie is the token)
    let dir = tempfile::tempdir().unwrap();
    let web = HttpFunction::new(Api::Web, parts(&dir));
    let (merchant, token) = merchant_and_token(web.parts()).await;

    // When `/` is requested through API Gateway with the session cookie
    let page = web.handle(web_request("GET", "/", Some(&token), &[])).await.unwrap();

    // Then it is the app's HTML page, its live panel polled (no event stream through API Gateway)
    assert_eq!(page.status(), 200, "{:?}", page.body());
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.headers().contains_key("content-security-policy"));
    let html = text(&page);
    assert!(html.contains(r#"data-live="/today/panel""#), "{html}");
    let poll_ms = cashflow_lambda::http::WEB_POLL_INTERVAL.as_millis().to_string();
    assert!(html.contains(&format!(r#"data-poll="{poll_ms}""#)), "{html}");

    // And the panel carries an ETag, and the same panel again is a 304 without a body
    let panel = web.handle(web_request("GET", "/today/panel", Some(&token), &[])).await.unwrap();
    assert_eq!(panel.status(), 200);
    let etag = panel.headers()["etag"].to_str().unwrap().to_owned();
    let unchanged =
        web.handle(web_request("GET", "/today/panel", Some(&token), &[("if-none-match", &etag)])).await.unwrap();
    assert_eq!(unchanged.status(), 304);
    assert!(matches!(unchanged.body(), lambda_http::Body::Empty), "{:?}", unchanged.body());

    // When an entry is recorded and consolidated, the panel changes: a new ETag, a full answer
    // (through the same parts: the embedded cache is the function's own memory)
    let ledger = web.parts().ledger_api().await.unwrap();
    let request = post_entry(merchant, &token).map(|body| axum::body::Body::from(body.to_vec()));
    assert_eq!(tower::ServiceExt::oneshot(ledger, request).await.unwrap().status(), 201);
    sweep::handle(web.parts(), scheduled()).await.unwrap();
    consumer::handle(web.parts(), sqs_batch(&queued(web.parts()).await)).await;
    let changed =
        web.handle(web_request("GET", "/today/panel", Some(&token), &[("if-none-match", &etag)])).await.unwrap();
    assert_eq!(changed.status(), 200);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
    assert!(text(&changed).contains("150,00"), "{}", text(&changed));

    // And without a session, `/` sends the user to sign in
    let anonymous = web.handle(web_request("GET", "/", None, &[])).await.unwrap();
    assert!(anonymous.status().is_redirection(), "{}", anonymous.status());
    assert!(anonymous.headers()["location"].to_str().unwrap().starts_with("/signin"));
}
