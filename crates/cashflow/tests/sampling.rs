//! Sampling decided at the request's root: a request sampled out builds no exported span (here
//! or in the consumer) while its log lines and its `traceparent` keep its trace id; a caller's
//! decision is followed whatever the ratio. The process samples new traces at 50 % by the last
//! 56 bits of their id, and a trace started here takes the request id's hex, so each test picks
//! its outcome by the request id it sends.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly, by design

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use opentelemetry::trace::{SpanId, TraceId};
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use cashflow::otel::{
    self, BatchSettings, InMemory, Pipeline, Sampling, SpanRecord as SpanData, TraceConfig, TraceFormat,
};
use helpers::TestApp;

/// A request id whose trace the 50 % ratio samples (its last 56 bits are 1).
const SAMPLED_IN: &str = "0a37b320-6160-403c-8a00-000000000001";
/// A request id whose trace the 50 % ratio leaves out (its last 56 bits are all ones).
const SAMPLED_OUT: &str = "0a37b320-6160-403c-8aff-ffffffffffff";

/// The middleware's request lines (at debug) and every warning.
const LOG_FILTER: &str = "warn,cashflow_http=debug";

/// The log lines written so far (JSON, one per line).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap()).lines().map(str::to_owned).collect()
    }
}

struct Telemetry {
    exporter: InMemory,
    pipeline: Pipeline,
    /// The lines of the logs.
    logs: Logs,
}

/// The process's subscriber, as `serve`'s: one filter, JSON logs (the middleware's request
/// lines at debug) into [`Logs`], and the exporting layer at 50 %, parent-based, into memory.
/// Installed once.
fn telemetry() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        let exporter = InMemory::default();
        let config =
            TraceConfig { format: TraceFormat::W3c, sampling: Sampling::ParentBased(Box::new(Sampling::Ratio(0.5))) };
        let pipeline = Pipeline::new(exporter.clone(), BatchSettings::default()).unwrap();
        let logs = Logs::default();
        let writer = logs.clone();
        let log_layer = tracing_subscriber::fmt::layer().json().flatten_event(true).with_writer(move || writer.clone());
        tracing_subscriber::registry()
            .with(otel::LogsOrExported::new(EnvFilter::new(LOG_FILTER)))
            .with(log_layer)
            .with(otel::layer(&pipeline, &config))
            .try_init()
            .unwrap();
        Telemetry { exporter, pipeline, logs }
    })
}

/// The finished spans of one trace.
fn spans_of(trace: &str) -> Vec<SpanData> {
    let trace = TraceId::from_hex(trace).unwrap();
    exported().into_iter().filter(|s| s.trace_id() == trace).collect()
}

/// Every span exported so far.
fn exported() -> Vec<SpanData> {
    let t = telemetry();
    assert!(t.pipeline.flush(std::time::Duration::from_secs(5)));
    t.exporter.spans()
}

fn names(spans: &[SpanData]) -> Vec<&str> {
    spans.iter().map(|s| s.name()).collect()
}

/// `POST /v1/entries` with `token` and `headers`.
fn entry_request(token: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/v1/entries")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body =
        json!({"type": "credit", "amount": "10.00", "description": "sampled?", "occurred_at": "2026-11-20T12:00:00Z"});
    request.body(Body::from(body.to_string())).unwrap()
}

/// `POST /v1/entries` with `headers`, then consolidation; the response's `traceparent`.
async fn record_entry(app: &TestApp, headers: &[(&str, &str)]) -> String {
    let response = app.send(entry_request(&app.token, headers)).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    app.consolidate().await;
    response.headers["traceparent"].to_str().unwrap().to_owned()
}

fn trace_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap()
}

fn flags_of(traceparent: &str) -> &str {
    traceparent.rsplit('-').next().unwrap()
}

#[tokio::test]
async fn a_request_sampled_out_exports_no_span_while_its_log_lines_carry_its_trace_id() {
    // Given spans exported at 50 %
    telemetry();
    let app = TestApp::spawn().await;

    // When an entry is recorded by a request whose new trace the ratio leaves out, and consolidated
    let traceparent = record_entry(&app, &[("x-request-id", SAMPLED_OUT)]).await;

    // Then the response names the trace (the request id's hex) and says it is not sampled
    let trace = SAMPLED_OUT.replace('-', "");
    assert_eq!(trace_of(&traceparent), trace);
    assert_eq!(flags_of(&traceparent), "00", "{traceparent}");
    // And no span of it was exported: not the request's, its children's, nor the consumer's
    let spans = spans_of(&trace);
    assert!(spans.is_empty(), "exported: {:?}", names(&spans));
    // (nor, detached from the request's span, as roots of traces of their own)
    let t = telemetry();
    let orphans: Vec<_> = exported()
        .into_iter()
        .filter(|s| s.parent_span_id() == SpanId::INVALID && s.name() != "POST /v1/entries")
        .filter(|s| ["auth.verify_token", "ledger.record", "ledger.group_commit", "record"].contains(&s.name()))
        .map(|s| s.name().to_owned())
        .collect();
    assert!(orphans.is_empty(), "spans of a request exported without it: {orphans:?}");
    // And its log line carries its request id, trace id and span id all the same
    let served = t
        .logs
        .lines()
        .into_iter()
        .find(|l| l.contains("request served") && l.contains(SAMPLED_OUT))
        .unwrap_or_else(|| panic!("no log line of the request in {:#?}", t.logs.lines()));
    assert!(served.contains(&format!("\"trace_id\":\"{trace}\"")), "{served}");
    assert!(served.contains(&format!("\"span_id\":\"{}\"", traceparent.split('-').nth(2).unwrap())), "{served}");
}

#[tokio::test]
async fn a_request_the_ratio_samples_is_one_trace_from_the_request_to_the_consumer() {
    // Given spans exported at 50 %
    telemetry();
    let app = TestApp::spawn().await;

    // When an entry is recorded by a request whose new trace the ratio samples, and consolidated
    let traceparent = record_entry(&app, &[("x-request-id", SAMPLED_IN)]).await;

    // Then the response says it is sampled, and its spans are exported, the consumer's too
    assert_eq!(flags_of(&traceparent), "01", "{traceparent}");
    let spans = spans_of(trace_of(&traceparent));
    let names = names(&spans);
    for name in ["POST /v1/entries", "auth.verify_token", "ledger.record", "consolidation.apply"] {
        assert!(names.contains(&name), "{name} not among {names:?}");
    }
    // And its log line was written as any other's
    let t = telemetry();
    assert!(t.logs.lines().iter().any(|l| l.contains("request served") && l.contains(SAMPLED_IN)));
}

#[tokio::test]
async fn a_callers_decision_is_followed_whatever_the_ratio_would_say() {
    // Given spans exported at 50 %
    telemetry();
    let app = TestApp::spawn().await;

    // When a caller that sampled its trace sends one the ratio alone would leave out
    let sampled = "00-4bf92f3577b34da6a3ffffffffffffff-00f067aa0ba902b7-01";
    let traceparent = record_entry(&app, &[("traceparent", sampled)]).await;
    // Then the request and the consumer's apply are exported, under the caller's span
    assert_eq!(flags_of(&traceparent), "01");
    let spans = spans_of(trace_of(sampled));
    let http = spans.iter().find(|s| s.name() == "POST /v1/entries").expect("the request's span");
    assert_eq!(http.parent_span_id().to_string(), "00f067aa0ba902b7");
    assert!(names(&spans).contains(&"consolidation.apply"), "{:?}", names(&spans));

    // When a caller that sampled its trace out sends one the ratio alone would sample
    let unsampled = "00-5bf92f3577b34da6a300000000000001-00f067aa0ba902b7-00";
    let traceparent = record_entry(&app, &[("traceparent", unsampled)]).await;
    // Then nothing of it is exported, and the flag stays clear for whoever comes next
    assert_eq!(trace_of(&traceparent), trace_of(unsampled));
    assert_eq!(flags_of(&traceparent), "00");
    let spans = spans_of(trace_of(unsampled));
    assert!(spans.is_empty(), "exported: {:?}", names(&spans));

    // When API Gateway's X-Ray header says Sampled=0, then Sampled=1
    let xray = |trace: &str, sampled: u8| {
        format!("Root=1-{}-{};Parent=53995c3f42cd8ad8;Sampled={sampled}", &trace[..8], &trace[8..])
    };
    let out = "6759e988bd862e3fe1000000000000ff";
    let traceparent = record_entry(&app, &[("x-amzn-trace-id", &xray(out, 0))]).await;
    assert_eq!((trace_of(&traceparent), flags_of(&traceparent)), (out, "00"));
    assert!(spans_of(out).is_empty());
    let kept = "7759e988bd862e3fe1ffffffffffffff";
    let traceparent = record_entry(&app, &[("x-amzn-trace-id", &xray(kept, 1))]).await;
    assert_eq!((trace_of(&traceparent), flags_of(&traceparent)), (kept, "01"));
    assert!(names(&spans_of(kept)).contains(&"POST /v1/entries"));
}

#[test]
fn a_span_that_ends_on_another_thread_closes_its_parent_in_the_one_subscriber() {
    // Given the process's subscriber, and a span with a child, as a request's span and the
    // span of a query that SQLite's worker thread holds until it has answered
    telemetry();
    // (made while a sampled request's span is current, so whatever the ratio says of new traces)
    let export = cashflow_http::context::span_export().unwrap();
    let traceparent = "00-6bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = export.start_request(&cashflow_http::context::RequestSpan {
        method: "GET",
        route: "/test",
        parent: None,
        traceparent,
    });
    let mut spans = None;
    request.in_scope(&mut || {
        let parent = tracing::debug_span!(target: "cashflow_test", "outer");
        let child = tracing::debug_span!(target: "cashflow_test", parent: &parent, "inner");
        spans = Some((parent, child));
    });
    let (parent, child) = spans.unwrap();

    // When the parent's handle is dropped here and the child's last one on another thread
    drop(parent);
    std::thread::spawn(move || drop(child)).join().expect("the other thread closed the child");

    // Then both spans ended, in one trace, the child under its parent (with a second
    // subscriber for some of the spans, the registry closed the parent through the other
    // thread's default and panicked: tokio-rs/tracing#1656)
    let spans: Vec<_> = exported().into_iter().filter(|s| s.name() == "outer" || s.name() == "inner").collect();
    let [outer, inner] = ["outer", "inner"].map(|n| spans.iter().find(|s| s.name() == n).expect(n));
    assert_eq!((inner.trace_id(), inner.parent_span_id()), (outer.trace_id(), outer.span_id()));
}
