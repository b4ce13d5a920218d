//! Health and the API description.

use axum::http::StatusCode;

use crate::helpers::TestApp;

#[tokio::test]
async fn liveness_and_readiness_report_every_dependency() {
    let app = TestApp::spawn().await;
    let live = app.get("/health/live").await;
    assert_eq!(live.status, StatusCode::OK);
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    let checks = &ready.json()["checks"];
    for dependency in ["ledger_db", "consolidation_db", "queue", "identity_db"] {
        assert_eq!(checks[dependency], "up", "{}", ready.text);
    }
}

#[tokio::test]
async fn the_openapi_document_describes_the_v1_api() {
    let app = TestApp::spawn().await;
    let doc = app.get("/openapi.json").await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/entries",
        "/v1/entries/{id}",
        "/v1/entries/{id}/reversal",
        "/v1/balances/daily/{date}",
        "/v1/balances/daily",
    ] {
        assert!(doc["paths"][path].is_object(), "missing {path}");
    }
    assert!(doc["components"]["schemas"]["CreateEntryRequest"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = TestApp::spawn().await;
    app.get("/v2/nothing").await.assert_problem(StatusCode::NOT_FOUND, "not-found");
    let token = app.token.clone();
    app.call(axum::http::Method::DELETE, "/v1/entries", Some(&token), None)
        .await
        .assert_problem(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed");
}
