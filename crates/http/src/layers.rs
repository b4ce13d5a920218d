//! Middleware every service shares: a request id on every request and response (and inside
//! every problem body), a panic turned into a 500 problem instead of a dropped connection, a
//! tracing span per request, the W3C trace context, request count and latency metrics per
//! route and status, a body-size limit, and problem bodies for unknown routes.
//!
//! All of that is one middleware ([`around`]) rather than a stack of tower layers. A layer
//! added with `Router::layer` wraps every route in one more boxed service, which is cloned and
//! called on every request; on a cached report read six such layers cost as much as the
//! handler. One function also makes the span once, with every field known (the request id and
//! the trace id come first), instead of formatting it and then recording the trace id into it.
//! For the same reason the metric handles of each (route, method, status) are looked up once
//! and kept ([`RouteMetrics`]), instead of building and hashing their label set twice per
//! request. When spans are exported ([`crate::context::SpanExport`] installed) the exporter
//! decides first whether the request's trace is sampled; a sampled request also gets the
//! exporter's own span ([`RequestSpans`]), which records the response status. A request sampled
//! out, or served without an exporter, gets the logs' span alone (and without an exporter that
//! choice costs one load), which the exporting layer ignores.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::FutureExt;
use http_body_util::BodyExt;
use metrics::{Counter, Histogram};
use tracing::Instrument;

use crate::context::{ExportedRequest, RequestSpan, SpanExport};
use crate::problem::PROBLEM_JSON;
use crate::{Problem, ProblemType};

/// The request id header, set by us when the client (or the API gateway) did not.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The W3C trace context header.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Largest request body accepted. An entry is a few hundred bytes; 16 KiB leaves room for
/// long descriptions in any script and still stops abuse early.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Wraps a service router with the shared middleware and problem fallbacks.
pub fn common(router: Router) -> Router {
    router
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, ProblemType::NotFound, "No such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ProblemType::MethodNotAllowed,
                "Method not allowed for this route",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(Arc::new(RouteMetrics::default()), around))
}

/// Everything the service does around each request:
/// - keeps the caller's `x-request-id` or makes one (a UUID), and echoes it in the response
///   and in problem bodies;
/// - continues the caller's trace or starts one ([`crate::context`]) for the handler, the
///   outbox and the response;
/// - runs the handler inside an `http` span carrying the method, route, request id, trace id
///   and span id, so every log line of the request can be found by any of them, and inside
///   the exported span when the request is sampled ([`RequestSpans`]);
/// - logs its status and latency (an error for a 5xx, debug otherwise);
/// - turns a panic into a 500 problem;
/// - counts the request and records its latency.
async fn around(State(metrics): State<Arc<RouteMetrics>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = match req.headers().get(&REQUEST_ID) {
        Some(id) => id.clone(),
        None => {
            let id = new_request_id();
            req.headers_mut().insert(REQUEST_ID, id.clone());
            id
        }
    };
    let incoming = crate::context::incoming(req.headers());
    let export = crate::context::span_export();
    let trace = crate::context::for_request(incoming.as_deref(), &request_id, export);
    let traceparent = trace.traceparent;
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let exported = export.filter(|_| trace.exported);
    let request_id_str = request_id.to_str().unwrap_or_default();
    let spans = RequestSpans::new(&method, route, request_id_str, &traceparent, incoming.as_deref(), exported);
    let handled = spans
        .serve(crate::context::with_traceparent(traceparent.clone(), AssertUnwindSafe(next.run(req)).catch_unwind()))
        .await;
    let mut response = handled.unwrap_or_else(|panic| spans.logs.in_scope(|| panic_problem(panic)));
    if is_problem(&response) {
        response = with_request_id(response, &request_id).await;
    }
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID, request_id);
    if let Ok(value) = HeaderValue::from_str(&traceparent) {
        headers.insert(TRACEPARENT, value);
    }
    let (status, elapsed) = (response.status(), started.elapsed());
    spans.finish(status);
    // The span is entered for the closing line only when the line may be logged: entering and
    // leaving it cost every request the subscriber's bookkeeping, and a line the level filters
    // out would pay it for nothing. Entered, not named as the line's parent: a filter that
    // names the request's span (`[http{route=…}]=debug`, `EnvFilter`) judges a line by the
    // spans it was logged in.
    if status.is_server_error() {
        spans.logs.in_scope(|| {
            tracing::error!(status = status.as_u16(), latency_ms = elapsed.as_millis(), "request failed");
        });
    } else if tracing::level_enabled!(tracing::Level::DEBUG) {
        // One line per request at debug, so a request with nothing else to say is still found
        // by its ids.
        spans.logs.in_scope(|| {
            tracing::debug!(status = status.as_u16(), latency_ms = elapsed.as_millis(), "request served");
        });
    }
    let (count, latency) = metrics.handles(route, &method, status);
    count.increment(1);
    latency.record(elapsed.as_secs_f64());
    response
}

/// The spans of one request: the logs' span, and the exported one when the request is
/// exported (an exporter is installed and the request's trace is sampled).
///
/// The logs' span carries the method, route, request id, trace id and span id, so every log
/// line of the request can be found by any of them; it is the same whether or not the request
/// is exported, and the exporting layer never takes it (its target says so). The exported
/// span is the exporter's own ([`SpanExport::start_request`]): a server span named after the
/// route, as OpenTelemetry's HTTP conventions name it, with the request's own trace and span
/// ids (so the outbox event names it as its parent), its method and route, and the response
/// status once known (the request id is in the logs, and a trace started here takes its hex as
/// its id). It is not a `tracing` span: as one, its ten fields went through the logs' formatter
/// and through `tracing-opentelemetry` (then the exporter), each making a string of every one,
/// and a traced read cost 1.4 µs more (`cashflow-bench tracing`'s span floor, BENCHMARKS.md,
/// session 25). The spans the handler starts while it runs inside it ([`Self::serve`]) are its
/// children.
///
/// Public for the benchmark that measures what exporting a request costs (`cashflow-bench
/// tracing`).
pub struct RequestSpans {
    /// The logs' span.
    pub logs: tracing::Span,
    exported: Option<Box<dyn ExportedRequest>>,
}

impl RequestSpans {
    /// The spans of a request; `traceparent` is its own, `parent` the caller's (a valid one),
    /// and `export` the exporter when the request is exported.
    pub fn new(
        method: &Method,
        route: &str,
        request_id: &str,
        traceparent: &str,
        parent: Option<&str>,
        export: Option<&dyn SpanExport>,
    ) -> Self {
        let logs = tracing::info_span!(
            target: "cashflow_http::unexported",
            "http",
            method = %method,
            route = %route,
            request_id = %request_id,
            trace_id = %crate::context::trace_id(traceparent).unwrap_or_default(),
            span_id = %crate::context::span_id(traceparent).unwrap_or_default(),
        );
        let exported = export
            .map(|export| export.start_request(&RequestSpan { method: method.as_str(), route, parent, traceparent }));
        Self { logs, exported }
    }

    /// Runs `handler` inside the request's spans.
    pub async fn serve<F: Future>(&self, handler: F) -> F::Output {
        let handler = handler.instrument(self.logs.clone());
        let Some(exported) = &self.exported else { return handler.await };
        crate::context::each_poll_in(|f| exported.in_scope(f), handler).await
    }

    /// Ends the exported span with the response's `status`.
    pub fn finish(&self, status: StatusCode) {
        if let Some(exported) = &self.exported {
            exported.end(status.as_u16());
        }
    }
}

/// A fresh request id: a random UUID, hyphenated.
fn new_request_id() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("00000000-0000-0000-0000-000000000000"))
}

/// `cashflow_http_requests_total` and `cashflow_http_request_duration_seconds`, labelled by
/// method, route template (never the raw path: ids would explode the label set) and status,
/// with each label set's handles registered once.
#[derive(Default)]
struct RouteMetrics {
    by_route: RwLock<HashMap<String, Vec<Handles>>>,
}

/// The metric handles of one method and status of a route.
type Handles = (Method, StatusCode, Counter, Histogram);

impl RouteMetrics {
    fn handles(&self, route: &str, method: &Method, status: StatusCode) -> (Counter, Histogram) {
        let find = |known: &HashMap<String, Vec<Handles>>| {
            known
                .get(route)?
                .iter()
                .find(|(m, s, _, _)| m == method && *s == status)
                .map(|(_, _, c, h)| (c.clone(), h.clone()))
        };
        if let Some(found) = self.by_route.read().ok().as_deref().and_then(find) {
            return found;
        }
        let labels = [
            ("method", method.as_str().to_owned()),
            ("route", route.to_owned()),
            ("status", status.as_u16().to_string()),
        ];
        let handles = (
            metrics::counter!("cashflow_http_requests_total", &labels),
            metrics::histogram!("cashflow_http_request_duration_seconds", &labels),
        );
        if let Ok(mut known) = self.by_route.write() {
            known.entry(route.to_owned()).or_default().push((
                method.clone(),
                status,
                handles.0.clone(),
                handles.1.clone(),
            ));
        }
        handles
    }
}

fn panic_problem(_err: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    Problem::internal().into_response()
}

fn is_problem(response: &Response) -> bool {
    response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes())
}

/// Adds `request_id` to a problem body. Only error responses pay for the rewrite.
async fn with_request_id(response: Response, request_id: &HeaderValue) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if let (Some(obj), Ok(id)) = (value.as_object_mut(), request_id.to_str()) {
        obj.insert("request_id".into(), id.into());
    }
    let body = value.to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Ok(len) = HeaderValue::from_str(&body.len().to_string()) {
        parts.headers.insert(header::CONTENT_LENGTH, len);
    }
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    fn app() -> Router {
        common(
            Router::new()
                .route("/ok", get(|| async { "ok" }))
                .route("/boom", get(|| async { panic!("a bug") as &'static str }))
                .route(
                    "/conflict",
                    get(|| async { Problem::new(StatusCode::CONFLICT, ProblemType::DayClosed, "Closed") }),
                ),
        )
    }

    async fn call(path: &str, headers: &[(&str, &str)]) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let mut request = Request::builder().uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = app().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn every_response_carries_a_request_id_and_a_trace_started_from_it() {
        let (status, headers, _) = call("/ok", &[]).await;
        assert_eq!(status, StatusCode::OK);
        let id = headers[&REQUEST_ID].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        let traceparent = headers[&TRACEPARENT].to_str().unwrap();
        assert_eq!(crate::context::trace_id(traceparent), Some(id.replace('-', "").as_str()));
    }

    #[tokio::test]
    async fn the_callers_request_id_is_kept_and_put_in_problem_bodies() {
        let (status, headers, body) = call("/conflict", &[("x-request-id", "gateway-42")]).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(headers[&REQUEST_ID], "gateway-42");
        assert_eq!(body["request_id"], "gateway-42");
        assert_eq!(body["type"], "/problems/day-closed", "{body}");
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_a_500_problem_and_the_service_lives_on() {
        let (status, headers, body) = call("/boom", &[]).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(body["request_id"], headers[&REQUEST_ID].to_str().unwrap());
        assert_eq!(call("/ok", &[]).await.0, StatusCode::OK);
    }

    /// What a subscriber writes, kept for the test to read.
    #[derive(Clone, Default)]
    struct Written(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Written {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_filter_that_names_the_request_span_gets_its_closing_line() {
        // Given logs filtered by the request's span alone, as docs/observability.md shows
        let written = Written::default();
        let writer = written.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("warn,[http{route=/ok}]=debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _logs = tracing::subscriber::set_default(subscriber);

        // When a request of that route and one of another are served
        assert_eq!(call("/ok", &[("x-request-id", "named-route-1")]).await.0, StatusCode::OK);
        assert_eq!(call("/conflict", &[("x-request-id", "other-route-2")]).await.0, StatusCode::CONFLICT);

        // Then the first one's closing line is logged in its span, and the other's is not
        let logs = String::from_utf8(written.0.lock().unwrap().clone()).unwrap();
        let served: Vec<&str> = logs.lines().filter(|l| l.contains("request served")).collect();
        assert_eq!(served.len(), 1, "{logs}");
        assert!(served[0].contains("http{") && served[0].contains("request_id=named-route-1"), "{logs}");
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_are_problems() {
        let (status, _, body) = call("/nowhere", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["request_id"].is_string(), "{body}");
        let response = app()
            .oneshot(Request::builder().method(Method::DELETE).uri("/ok").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
