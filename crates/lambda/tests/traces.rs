#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The consumer function's spans, checked in memory: each event's `consolidation.apply` span
//! continues the trace of the request that recorded it, through the event (what the ledger
//! writes) or, for a body without one, through the message's `AWSTraceHeader`. The spans go
//! through the same layer, ids and batch as a function's with OTLP, into an in-memory exporter
//! (one subscriber for this test binary).

use std::sync::OnceLock;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use opentelemetry::trace::{SpanId, TraceId};
use serde_json::{json, Value};
use tracing_subscriber::EnvFilter;

use cashflow::app::{AppConfig, Parts};
use cashflow::otel::{BatchSettings, InMemory, Pipeline, SpanRecord as SpanData, TraceConfig};
use cashflow::telemetry::{self, LogFormat};
use cashflow_lambda::consumer;
use cashflow_lambda::http::{Api, HttpFunction};

mod common;

fn exporter() -> &'static (InMemory, Pipeline) {
    static EXPORTER: OnceLock<(InMemory, Pipeline)> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemory::default();
        let config = TraceConfig::default();
        let pipeline = Pipeline::new(exporter.clone(), BatchSettings::default()).unwrap();
        assert!(telemetry::with_traces(EnvFilter::new("warn"), LogFormat::Json, &pipeline, &config));
        (exporter, pipeline)
    })
}

fn spans_of(trace: TraceId) -> Vec<SpanData> {
    let (exporter, pipeline) = exporter();
    assert!(pipeline.flush(Duration::from_secs(5)));
    exporter.spans().into_iter().filter(|s| s.trace_id() == trace).collect()
}

fn parts(dir: &tempfile::TempDir) -> Parts {
    Parts::new(AppConfig::embedded(dir.path(), "http://cashflow.test", Duration::from_secs(600)))
}

/// An entry recorded through `ledger-api` with the request's `traceparent`; the queued
/// message bodies.
async fn recorded_with(function: &HttpFunction, traceparent: &str) -> Vec<String> {
    let parts = function.parts();
    let (merchant, token) = common::merchant_and_token(parts).await;
    let mut event: Value = serde_json::from_str(
        &include_str!("fixtures/http-api-v2-post-entry.json")
            .replace("{{TOKEN}}", &token)
            .replace("{{MERCHANT}}", &merchant.to_string()),
    )
    .unwrap();
    event["headers"]["traceparent"] = json!(traceparent);
    let response = function.handle(lambda_http::request::from_str(&event.to_string()).unwrap()).await.unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.body());
    let deliveries = parts.queue().await.unwrap().source.receive(10, Duration::ZERO).await.unwrap();
    deliveries.into_iter().map(|d| d.body).collect()
}

fn batch(bodies: &[String], aws_trace_header: Option<&str>) -> SqsEvent {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let mut attributes = json!({ "ApproximateReceiveCount": "1" });
            if let Some(header) = aws_trace_header {
                attributes["AWSTraceHeader"] = json!(header);
            }
            json!({
                "messageId": format!("m-{i}"), "receiptHandle": format!("r-{i}"), "body": body,
                "attributes": attributes, "messageAttributes": {},
                "eventSource": "aws:sqs", "awsRegion": "sa-east-1",
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

fn entry_recorded(bodies: Vec<String>) -> Vec<String> {
    bodies.into_iter().filter(|b| b.contains("entry_recorded")).collect()
}

#[tokio::test]
async fn the_consumers_span_of_an_event_continues_the_trace_of_the_request_that_recorded_it() {
    exporter();
    let dir = tempfile::tempdir().unwrap();
    let function = HttpFunction::new(Api::Ledger, parts(&dir));
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let bodies = entry_recorded(recorded_with(&function, &format!("00-{trace}-00f067aa0ba902b7-01")).await);
    assert_eq!(bodies.len(), 1);

    let answer = consumer::handle(function.parts(), batch(&bodies, None)).await;

    assert!(answer.batch_item_failures.is_empty(), "{answer:?}");
    let spans = spans_of(TraceId::from_hex(trace).unwrap());
    let names: Vec<_> = spans.iter().map(|s| s.name()).collect();
    let apply = spans.iter().find(|s| s.name() == "consolidation.apply").unwrap_or_else(|| panic!("{names:?}"));
    let http = spans.iter().find(|s| s.name() == "POST /v1/entries").unwrap_or_else(|| panic!("{names:?}"));
    assert_ne!(apply.parent_span_id(), SpanId::INVALID);
    assert!(
        spans.iter().any(|s| s.span_id() == apply.parent_span_id()),
        "the apply span's parent is a span of the request's trace: {names:?}"
    );
    assert_eq!(
        http.parent_span_id(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        "the request continued the caller"
    );
}

#[tokio::test]
async fn an_event_without_its_trace_continues_the_messages_aws_trace_header() {
    exporter();
    let dir = tempfile::tempdir().unwrap();
    let function = HttpFunction::new(Api::Ledger, parts(&dir));
    let bodies =
        entry_recorded(recorded_with(&function, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").await);
    // A producer that writes no trace into the event, only X-Ray's header on the message.
    let stripped: Vec<String> = bodies
        .iter()
        .map(|b| {
            let mut event: Value = serde_json::from_str(b).unwrap();
            event.as_object_mut().unwrap().remove("trace");
            event.to_string()
        })
        .collect();
    let header = "Root=1-674cf0a0-6d7e0c3b2a1f4e5d6c7b8a90;Parent=53995c3f42cd8ad8;Sampled=1";

    let answer = consumer::handle(function.parts(), batch(&stripped, Some(header))).await;

    assert!(answer.batch_item_failures.is_empty(), "{answer:?}");
    let spans = spans_of(TraceId::from_hex("674cf0a06d7e0c3b2a1f4e5d6c7b8a90").unwrap());
    let apply: Vec<_> = spans.iter().filter(|s| s.name() == "consolidation.apply").collect();
    assert_eq!(apply.len(), 1, "{spans:?}");
    assert_eq!(apply[0].parent_span_id(), SpanId::from_hex("53995c3f42cd8ad8").unwrap(), "X-Ray's Parent");
}
