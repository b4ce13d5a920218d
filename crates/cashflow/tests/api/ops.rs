//! Health and the API description.

use axum::http::StatusCode;
use cashflow_http::ProblemType;
use serde_json::Value;

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
        "/oauth2/token",
        "/.well-known/jwks.json",
    ] {
        assert!(doc["paths"][path].is_object(), "missing {path}");
    }
    assert!(doc["components"]["schemas"]["CreateEntryRequest"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn every_protected_operation_documents_the_answers_its_guards_give_as_problems() {
    let app = TestApp::spawn().await;
    let doc = app.get("/openapi.json").await.json();
    let mut protected = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(security) = operation["security"].as_array() else { continue };
            protected += 1;
            let scopes: Vec<&Value> = security.iter().filter_map(|s| s["bearer"].as_array()).flatten().collect();
            let mut expected = vec!["401", "500", "503"];
            if !scopes.is_empty() {
                expected.push("403");
            }
            if operation.get("requestBody").is_some() {
                expected.extend(["400", "413", "415"]);
            }
            for status in expected {
                let schema = &operation["responses"][status]["content"]["application/problem+json"]["schema"];
                assert_eq!(schema["$ref"], "#/components/schemas/Problem", "{method} {path}: {status} undocumented");
            }
        }
    }
    assert!(protected >= 7, "only {protected} protected operations");
    let date = &doc["paths"]["/v1/balances/daily/{date}"]["get"]["parameters"][0]["schema"];
    assert_eq!(date["format"], "date", "dates are typed, so clients and fuzzers send real ones");
    assert_eq!(doc["components"]["schemas"]["CreateEntryRequest"]["additionalProperties"], false);
}

#[tokio::test]
async fn the_problem_schema_lists_every_problem_type_and_no_other() {
    // Given the served document
    let app = TestApp::spawn().await;
    let doc = app.get("/openapi.json").await.json();

    // Then the problem body's `type` is exactly the catalogue, each type described
    let kind = &doc["components"]["schemas"]["Problem"]["properties"]["type"];
    let listed: Vec<&str> =
        kind["enum"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let catalogue: Vec<String> = ProblemType::ALL.iter().map(|k| k.uri()).collect();
    assert_eq!(listed, catalogue);
    let description = kind["description"].as_str().unwrap_or_default();
    for k in ProblemType::ALL {
        assert!(description.contains(&format!("`{}`: {}", k.slug(), k.description())), "{k} undescribed");
    }

    // And the token endpoint's errors are problems of the same schema
    let token_error = &doc["components"]["schemas"]["TokenError"]["allOf"][0]["$ref"];
    assert_eq!(token_error, "#/components/schemas/Problem");
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

#[tokio::test]
async fn metrics_count_requests_per_route_and_track_consolidation() {
    let text = scrape_after_a_consolidated_write_and_two_reads().await;
    for needle in [
        r#"cashflow_http_requests_total{method="POST",route="/v1/entries",status="201"}"#,
        r#"route="/v1/balances/daily/{date}""#,
        "cashflow_http_request_duration_seconds_bucket",
        "cashflow_events_published_total",
        "cashflow_events_applied_total",
        "cashflow_consolidation_lag_seconds_bucket",
        "cashflow_report_cache_hits_total",
        "cashflow_report_cache_misses_total",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}

#[tokio::test]
async fn every_metric_on_metrics_has_help_text() {
    // Given a process that served writes and reads and consolidated them, when Prometheus scrapes it
    let text = scrape_after_a_consolidated_write_and_two_reads().await;

    // Then every series family it exposes says what it measures
    let families: Vec<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    assert!(!families.is_empty(), "{text}");
    for family in families {
        assert!(text.contains(&format!("# HELP {family} ")), "no HELP for {family} in:\n{text}");
    }
}

#[tokio::test]
async fn the_consolidation_lag_histogram_has_a_bucket_at_the_one_second_objective() {
    let text = scrape_after_a_consolidated_write_and_two_reads().await;
    let bounds: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("cashflow_consolidation_lag_seconds_bucket{"))
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next()?.parse().ok())
        .collect();
    assert!(bounds.contains(&1.0), "no le=\"1\" bucket: {bounds:?}");
    assert!(bounds.iter().filter(|b| **b < 1.0).count() >= 8, "too coarse below 1 s: {bounds:?}");
    // Near the objective too: a lag creeping towards 1 s shows before it crosses it.
    assert!(bounds.iter().any(|b| (0.5..1.0).contains(b) && *b > 0.5), "nothing between 0.5 s and 1 s: {bounds:?}");
}

#[tokio::test]
async fn each_readiness_dependency_is_a_gauge_on_metrics() {
    // Given a process whose dependencies are all up, when Prometheus scrapes it
    let app = TestApp::spawn().await;
    let text = app.get("/metrics").await.text;
    // Then each dependency the readiness probe checks is reported up
    for dependency in ["ledger_db", "consolidation_db", "queue", "identity_db", "cache"] {
        let series = format!("cashflow_dependency_up{{dependency=\"{dependency}\"}} 1");
        assert!(text.contains(&series), "missing {series} in:\n{text}");
    }
}

/// `/metrics` of a fresh app after one entry, its consolidation, and two reads of its day (a
/// cache miss, then a hit).
async fn scrape_after_a_consolidated_write_and_two_reads() -> String {
    let app = TestApp::spawn().await;
    app.record("credit", "5.00", "2026-11-20T10:00:00-03:00").await;
    app.consolidate().await;
    app.balance("2026-11-20").await;
    app.balance("2026-11-20").await;
    let r = app.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    r.text
}
