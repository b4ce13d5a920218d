//! Exported traces, checked in memory: the application's spans go through the same layer, ids
//! and batch as `serve`'s with OTLP, into an in-memory exporter ([`otel::InMemory`]), and each test
//! follows the trace of its own request (the tests share the process's one subscriber).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly, by design

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use opentelemetry::trace::{SpanId, TraceId};
use serde_json::json;
use tracing_subscriber::EnvFilter;

use cashflow::otel::{self, BatchSettings, InMemory, Pipeline, SpanRecord as SpanData, TraceConfig};
use cashflow::telemetry::{self, LogFormat};
use helpers::TestApp;

/// The process's exporter and pipeline, installed once.
fn exporter() -> &'static (InMemory, Pipeline) {
    static EXPORTER: OnceLock<(InMemory, Pipeline)> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemory::default();
        let config = TraceConfig::default();
        let pipeline = Pipeline::new(exporter.clone(), BatchSettings::default()).unwrap();
        assert!(telemetry::with_traces(EnvFilter::new("warn"), LogFormat::Text, &pipeline, &config));
        (exporter, pipeline)
    })
}

/// Every span exported so far.
fn exported() -> Vec<SpanData> {
    let (exporter, pipeline) = exporter();
    assert!(pipeline.flush(std::time::Duration::from_secs(5)));
    exporter.spans()
}

/// The finished spans of one trace, once the spans named `expected` have all ended (waiting up
/// to 5 s).
///
/// A span can end a little after its request's response: sqlx's SQLite worker thread holds
/// the span of the query it ran until it has handed over the result, and the report read's
/// span ends only after that query's. The request's own span does not wait for its children.
fn spans_of(trace: TraceId, expected: &[&str]) -> Vec<SpanData> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let spans: Vec<SpanData> = exported().into_iter().filter(|s| s.trace_id() == trace).collect();
        let ended = |name: &&str| spans.iter().any(|s| s.name() == *name);
        if expected.iter().all(ended) || std::time::Instant::now() > deadline {
            return spans;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The one span named `name` in `spans`.
fn one<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<_> = spans.iter().filter(|s| s.name() == name).collect();
    let names: Vec<_> = spans.iter().map(|s| (s.name(), s.span_id(), s.parent_span_id())).collect();
    assert_eq!(found.len(), 1, "one {name} span expected among {names:?}");
    found[0]
}

/// Whether `span` is a descendant of the span `ancestor` in `spans`.
fn descends(spans: &[SpanData], span: &SpanData, ancestor: SpanId) -> bool {
    let mut parent = span.parent_span_id();
    while parent != SpanId::INVALID {
        if parent == ancestor {
            return true;
        }
        parent = spans.iter().find(|s| s.span_id() == parent).map_or(SpanId::INVALID, |s| s.parent_span_id());
    }
    false
}

fn ids(traceparent: &str) -> (TraceId, SpanId) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    (TraceId::from_hex(parts[1]).unwrap(), SpanId::from_hex(parts[2]).unwrap())
}

fn post_entry(app: &TestApp, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/v1/entries")
        .header(header::AUTHORIZATION, format!("Bearer {}", app.token))
        .header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body =
        json!({"type": "credit", "amount": "10.00", "description": "traced", "occurred_at": "2026-11-20T12:00:00Z"});
    request.body(Body::from(body.to_string())).unwrap()
}

#[tokio::test]
async fn a_recorded_entry_is_one_trace_from_the_request_to_the_consumers_apply() {
    // Given an application whose spans are exported
    exporter();
    let app = TestApp::spawn().await;

    // When an entry is recorded without a caller's trace, and consolidated
    let response = app.send(post_entry(&app, &[])).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    app.consolidate().await;

    // Then the response's traceparent names the request's span, in a trace whose id is the
    // request id's hex
    let traceparent = response.headers["traceparent"].to_str().unwrap();
    let (trace, request_span) = ids(traceparent);
    let request_id = response.headers["x-request-id"].to_str().unwrap().replace('-', "");
    assert_eq!(trace.to_string(), request_id);
    let spans = spans_of(
        trace,
        &["POST /v1/entries", "auth.verify_token", "ledger.record", "ledger.group_commit", "consolidation.apply"],
    );
    let http = one(&spans, "POST /v1/entries");
    assert_eq!(http.span_id(), request_span);
    assert_eq!(http.parent_span_id(), SpanId::INVALID, "a trace started here");
    assert_eq!(http.kind(), otel::Kind::Server);
    let attribute = |key: &str| http.attribute(key);
    assert_eq!(attribute("http.response.status_code").as_deref(), Some("201"));
    assert_eq!(attribute("http.route").as_deref(), Some("/v1/entries"));
    assert_eq!(attribute("http.request.method").as_deref(), Some("POST"));
    // And the token check and the ledger's write are its children, the group-commit wait the write's
    assert_eq!(one(&spans, "auth.verify_token").parent_span_id(), request_span);
    let record = one(&spans, "ledger.record");
    assert_eq!(record.parent_span_id(), request_span);
    let wait = one(&spans, "ledger.group_commit");
    assert!(descends(&spans, wait, record.span_id()), "the wait is inside the write");
    // And the consumer's apply of that entry continues the trace, as a child of the request's span
    let apply = one(&spans, "consolidation.apply");
    assert_eq!(apply.parent_span_id(), request_span);
    assert!(apply.parent_is_remote(), "its parent came through the outbox and the queue");
    // And the batch it belongs to is a span of the consumer's own, which the apply follows
    let batch_link = apply.links();
    assert_eq!(batch_link.len(), 1, "{batch_link:?}");
    let all = exported();
    let batch = all.iter().find(|s| (s.trace_id(), s.span_id()) == batch_link[0]).expect("the batch span");
    assert_eq!(batch.name(), "consolidation.batch");
    let children: Vec<_> = all.iter().filter(|s| s.parent_span_id() == batch.span_id()).map(|s| s.name()).collect();
    for step in ["consolidation.store_apply", "cache.invalidate", "queue.ack"] {
        assert!(children.contains(&step), "{step} not in the batch: {children:?}");
    }
    // And the relay's publish links to the request's span
    let publish = all
        .iter()
        .filter(|s| s.name() == "relay.publish")
        .find(|s| s.links().iter().any(|l| l.0 == trace))
        .expect("a publish linked to the request's trace");
    assert!(publish.links().iter().any(|l| l.1 == request_span));
}

#[tokio::test]
async fn a_request_continues_the_callers_traceparent_to_the_consumer() {
    // Given an application whose spans are exported
    exporter();
    let app = TestApp::spawn().await;

    // When a caller in trace 4bf9… (its span 00f0…) records an entry, which is consolidated
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = app.send(post_entry(&app, &[("traceparent", caller)])).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    app.consolidate().await;

    // Then the request's span is the caller's child, in the caller's trace
    let (trace, caller_span) = ids(caller);
    let (answered_trace, request_span) = ids(response.headers["traceparent"].to_str().unwrap());
    assert_eq!(answered_trace, trace);
    assert_ne!(request_span, caller_span);
    let spans = spans_of(trace, &["POST /v1/entries", "consolidation.apply"]);
    let http = one(&spans, "POST /v1/entries");
    assert_eq!((http.span_id(), http.parent_span_id()), (request_span, caller_span));
    assert!(http.parent_is_remote());
    // And the consumer's apply is the request span's child
    assert_eq!(one(&spans, "consolidation.apply").parent_span_id(), request_span);
}

#[tokio::test]
async fn an_xray_trace_header_is_continued_when_no_traceparent_came() {
    // Given an application whose spans are exported
    exporter();
    let app = TestApp::spawn().await;

    // When API Gateway's X-Ray header comes with a request
    let xray = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
    let response = app.send(post_entry(&app, &[("x-amzn-trace-id", xray)])).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);

    // Then the request's span is in that trace, a child of that segment
    let trace = TraceId::from_hex("5759e988bd862e3fe1be46a994272793").unwrap();
    let spans = spans_of(trace, &["POST /v1/entries"]);
    assert_eq!(one(&spans, "POST /v1/entries").parent_span_id(), SpanId::from_hex("53995c3f42cd8ad8").unwrap());
}

#[tokio::test]
async fn a_report_read_says_whether_the_cache_answered() {
    // Given an application whose spans are exported, with a consolidated entry
    exporter();
    let app = TestApp::spawn().await;
    app.record("credit", "5.00", "2026-11-20T12:00:00Z").await;
    app.consolidate().await;

    // When the day's report is read twice
    let mut traces = Vec::new();
    for _ in 0..2 {
        let response = app.get("/v1/balances/daily/2026-11-20").await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text);
        traces.push(ids(response.headers["traceparent"].to_str().unwrap()).0);
    }

    // Then the first read missed the cache and the second hit it
    let cache = |trace| {
        let spans = spans_of(trace, &["report.read"]);
        let read = one(&spans, "report.read");
        read.attribute("cache")
    };
    assert_eq!(cache(traces[0]).as_deref(), Some("miss"));
    assert_eq!(cache(traces[1]).as_deref(), Some("hit"));
}
