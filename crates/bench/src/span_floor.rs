//! The floor under issue 14's target for traces sampled at 100 % (a traced cached read at
//! 85 % of the untraced rate): what three spans cost through the code that exports them
//! (`tracing`, our span layer, batch and OTLP/HTTP exporter, `cashflow::otel`), measured in
//! this process with nothing around them: no HTTP, no handler, no database. Two shapes, each
//! with a pipeline of its own exporting to the run's sink:
//! - *bare*: three spans with names only, under a subscriber with the exporting layer alone (set
//!   up as `serve` sets it);
//! - *as served*: the spans a cached read makes (the request's two, the logs' and the exported
//!   one, made by the middleware's own [`cashflow_http::layers::RequestSpans`], the token
//!   check's and the report read's with its `cache` field) and the request's debug line, under
//!   the subscriber `serve` installs when it exports: the logs (to nowhere) beside
//!   [`cashflow::otel::layer`].
//!
//! The CPU counted is this thread's and the exporter's threads' (the exporting thread's and the
//! blocking HTTP client's), from `/proc`, until a flush has sent every span; the sink's is not.
//! The batch queue is made large enough that no span is dropped, so every span is paid for.

use std::future::Future;
use std::io;
use std::path::Path;

use std::time::Duration;

use cashflow::otel::{BatchSettings, OtlpExporter, OtlpSettings, Pipeline};
use tracing_subscriber::layer::SubscriberExt;

/// CPU per request of each shape, in µs.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Floor {
    pub bare_us: f64,
    pub served_us: f64,
    pub requests: u64,
}

/// Measures both shapes over `requests` requests each, exporting to `endpoint` (an OTLP/HTTP
/// base URL). Runs on a thread of its own, away from the caller's runtime.
pub async fn measure(endpoint: &str, requests: u64) -> anyhow::Result<Floor> {
    let endpoint = format!("{endpoint}/v1/traces");
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("span-floor".into()).spawn(move || {
        let floor = (|| {
            let bare_us = per_request(&endpoint, requests, Shape::Bare)?;
            let served_us = per_request(&endpoint, requests, Shape::Served)?;
            anyhow::Ok(Floor { bare_us, served_us, requests })
        })();
        let _ = done.send(floor);
    })?;
    result.await?
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    Bare,
    Served,
}

/// One shape's CPU per request, in µs.
fn per_request(endpoint: &str, requests: u64, shape: Shape) -> anyhow::Result<f64> {
    let mut otlp = OtlpSettings::from_vars(|_| None).map_err(anyhow::Error::msg)?;
    otlp.endpoint = endpoint.to_owned();
    // Room for every span of the run: a dropped span would cost nothing.
    let batch = BatchSettings { max_queue: (requests * 3 + 1024) as usize, ..BatchSettings::default() };
    let config = cashflow::otel::TraceConfig::default();
    let pipeline = Pipeline::new(OtlpExporter::new(otlp), batch)?;
    let dispatch: tracing::Dispatch = match shape {
        Shape::Bare => tracing_subscriber::registry().with(cashflow::otel::unfiltered_layer(&pipeline, &config)).into(),
        Shape::Served => {
            let filter = cashflow::otel::LogsOrExported::new(tracing_subscriber::EnvFilter::new("info"));
            let logs = tracing_subscriber::fmt::layer().with_ansi(false).with_writer(io::sink);
            tracing_subscriber::registry()
                .with(filter)
                .with(logs)
                .with(cashflow::otel::layer(&pipeline, &config))
                .into()
        }
    };
    let before = exporting_cpu_ticks();
    tracing::dispatcher::with_default(&dispatch, || {
        for _ in 0..requests {
            match shape {
                Shape::Bare => bare_request(),
                Shape::Served => served_request(),
            }
        }
    });
    anyhow::ensure!(pipeline.flush(Duration::from_secs(60)), "the spans were not all exported within 60 s");
    let ticks = exporting_cpu_ticks().saturating_sub(before);
    pipeline.shutdown(Duration::from_secs(5));
    Ok(ticks as f64 * 10_000.0 / requests as f64)
}

/// Three spans, nothing else.
fn bare_request() {
    let request = tracing::debug_span!("request");
    let _in = request.enter();
    tracing::debug_span!("verify").in_scope(|| ());
    tracing::debug_span!("read").in_scope(|| ());
}

/// The spans of a cached read: the request's as the middleware makes them, and the token
/// check's and the report read's as the handlers make them, inside it.
fn served_request() {
    let id = uuid::Uuid::new_v4();
    let request_id = id.hyphenated().to_string();
    let trace_id = id.simple().to_string();
    let traceparent = format!("00-{trace_id}-{}-01", &trace_id[..16]);
    let spans = cashflow_http::layers::RequestSpans::new(
        &reqwest::Method::GET,
        "/v1/balances/daily/{date}",
        &request_id,
        &traceparent,
        None,
        cashflow_http::context::span_export(),
    );
    let handler = std::pin::pin!(spans.serve(async {
        let verify = cashflow_http::context::request_span("auth.verify_token", || {
            tracing::debug_span!(target: "cashflow_auth::principal", "auth.verify_token")
        });
        verify.run(async {}).await;
        let read = cashflow_http::context::request_span("report.read", || {
            tracing::debug_span!(target: "cashflow_consolidation::api", "report.read", cache = tracing::field::Empty)
        });
        read.set("cache", "hit");
        read.run(async {}).await;
    }));
    // Nothing in it waits: one poll runs it through.
    let _ = handler.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
    spans.finish(reqwest::StatusCode::OK);
    spans.logs.in_scope(
        || tracing::debug!(target: "cashflow_http::layers", status = 200_u16, latency_ms = 0_u64, "request served"),
    );
}

/// CPU ticks (1/100 s) of this thread and of the exporter's threads.
fn exporting_cpu_ticks() -> u64 {
    let mut ticks = crate::tls::own_ticks_path(Path::new("/proc/thread-self/stat")).unwrap_or(0);
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            // Truncated to 15 bytes: "reqwest-internal-sync-runtime".
            if comm.starts_with("otel-export") || comm.starts_with("reqwest-interna") {
                ticks += crate::tls::own_ticks_path(&task.path().join("stat")).unwrap_or(0);
            }
        }
    }
    ticks
}
